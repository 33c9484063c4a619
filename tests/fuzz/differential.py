"""Both codecs on the same request bytes: the payloads, rejects and counts must be identical.

Shared by the differential unit tests (tests/unit/native) and the `make fuzz` target
`native` (`DifferentialTarget`).
"""

from __future__ import annotations

from typing import Any

from ingestd.convert import native
from ingestd.convert.bulk import BulkItems
from ingestd.convert.limits import RequestLimits
from ingestd.convert.logs import LogsConverter, RoutePolicy
from ingestd.convert.metrics import MetricConverter
from ingestd.convert.traces import TraceConverter
from ingestd.errors import BadRequest
from ingestd.model import Converted, Signal
from ingestd.receiver.decode import parse_protobuf
from ingestd.receiver.otlp_json import parse_json
from ingestd.signals import SIGNALS

NOW_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
# Small enough that generated histograms and summaries cross it (`too_many_buckets`).
LIMITS = RequestLimits(max_buckets_per_point=8)


def _clock() -> int:
    return NOW_NS


def _python(signal: Signal, body: bytes, application_id: str, routed: bool) -> Converted | str:
    try:
        request = parse_protobuf(signal, body)
    except BadRequest:
        return "BadRequest"
    if signal is Signal.LOGS:
        return _logs_reference(routed)(request, application_id)
    reference = TraceConverter if signal is Signal.TRACES else MetricConverter
    converter = reference(max_future_skew_s=3600, clock_ns=_clock, limits=LIMITS)
    return converter(request, application_id)


def _logs_reference(routed: bool) -> LogsConverter:
    return LogsConverter(
        dataset="app",
        namespace="Prod",
        max_future_skew_s=3600,
        routes=RoutePolicy(from_attributes=routed),
        now_ns=_clock,
    )


def _native(signal: Signal, body: bytes, application_id: str, routed: bool) -> Converted | str:
    try:
        if signal is Signal.LOGS:
            logs = native.NativeLogsConverter(_logs_reference(routed), now_ns=_clock)
            if application_id:
                # Production: a registered application's logs go to the reference.
                return logs(body, application_id)
            # Routing by attributes without a RoutePolicy: the reference's fresh policy
            # admits every route (fewer than its cap), so the Rust side must match it.
            return logs.compiled(body, from_attributes=routed)
        converter = native.NATIVE_CONVERTERS[signal](
            max_future_skew_s=3600, clock_ns=_clock, limits=LIMITS
        )
        return converter(body, application_id)
    except BadRequest:
        return "BadRequest"


def summary(converted: Converted | str) -> Any:
    """Everything a sink or a client sees of a conversion, comparable with ==."""
    if isinstance(converted, str):
        return converted
    payload = converted.payload
    if isinstance(payload, BulkItems):
        return {
            "data": payload.data,
            "offsets": list(payload.offsets),
            "items": converted.items,
            "nbytes": converted.nbytes,
            "rejected": converted.rejected,
            "reasons": dict(converted.reject_reasons),
            "example": converted.reject_example,
            "nul": converted.nul_replaced,
        }
    return {
        "data": payload.data,
        "offsets": list(payload.offsets),
        "resources": payload.resources,
        "scopes": payload.scopes,
        "applications": payload.applications,
        "descriptions": payload.descriptions,
        "items": converted.items,
        "nbytes": converted.nbytes,
        "rejected": converted.rejected,
        "reasons": dict(converted.reject_reasons),
        "example": converted.reject_example,
        "nul": converted.nul_replaced,
    }


def compare(signal: Signal, body: bytes, application_id: str = "", *, routed: bool = True) -> Any:
    """Run both codecs on *body*; raise AssertionError naming the first field that differs.

    *application_id*: a registered application's (the override); *routed*: logs routed by
    their `data_stream.*` attributes (`routing.from_attributes`).
    """
    expected = summary(_python(signal, body, application_id, routed))
    got = summary(_native(signal, body, application_id, routed))
    if expected != got:
        if isinstance(expected, dict) and isinstance(got, dict):
            for key in expected:
                if expected[key] != got[key]:
                    raise AssertionError(
                        f"{signal} codecs differ in {key}:\n python {expected[key]!r}\n"
                        f" native {got[key]!r}\n body {body.hex()}"
                    )
        raise AssertionError(
            f"{signal} codecs differ: python {expected!r} native {got!r}\n body {body.hex()}"
        )
    return expected


class DifferentialTarget:
    """The fuzz target `native`: both codecs on each input, any difference is a finding."""

    signals = native.NATIVE_SIGNALS

    def protobuf(self, signal: Signal, body: bytes, encoding: str = "") -> Any:
        from tests.fuzz.targets import Finding, Outcome

        try:
            out = compare(signal, body)
        except AssertionError as exc:
            raise Finding(str(exc)) from exc
        if isinstance(out, str):
            return Outcome(400)
        return Outcome(200, out["items"], out["rejected"])

    def json(self, signal: Signal, body: bytes, encoding: str = "") -> Any:
        """An OTLP/JSON input: where the native transcoder answers, its protobuf must decode to
        Python's message, and both codecs must convert it the same."""
        from tests.fuzz.targets import Finding, Outcome

        proto = native.json_as_protobuf(signal, body)
        if proto is None:
            return Outcome(0)
        try:
            expected = parse_json(signal, body)
        except BadRequest as exc:
            raise Finding(f"transcoded an input Python refuses: {exc}") from exc
        if SIGNALS[signal].request_type.FromString(proto) != expected:
            raise Finding(f"transcoded {signal} request differs from Python's")
        return self.protobuf(signal, proto)
