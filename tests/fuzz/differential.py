"""Both codecs on the same request bytes: the payloads, rejects and counts must be identical.

Shared by the differential unit tests (tests/unit/native) and the `make fuzz` target
`native` (`DifferentialTarget`).
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Routing:
    """The `RoutePolicy` settings of a logs comparison: each codec gets its own policy built
    from them, and both policies must end in the same state."""

    from_attributes: bool = True
    allowed_datasets: tuple[str, ...] = ()
    allowed_namespaces: tuple[str, ...] = ()
    max_routes: int = 256
    # Routes the process took before this request (they count towards max_routes).
    taken: tuple[tuple[str, str], ...] = ()

    def converter(self) -> LogsConverter:
        """A reference converter with a fresh policy of these settings."""
        policy = RoutePolicy(
            from_attributes=self.from_attributes,
            allowed_datasets=self.allowed_datasets,
            allowed_namespaces=self.allowed_namespaces,
            max_routes=self.max_routes,
        )
        converter = LogsConverter(
            dataset="app", namespace="Prod", max_future_skew_s=3600, routes=policy, now_ns=_clock
        )
        for dataset, namespace in self.taken:
            policy.admit(dataset, namespace)
        return converter


ROUTED = Routing()
NOT_ROUTED = Routing(from_attributes=False)
# Tight policies for the fuzz target and the hypothesis tests: allowlists with fnmatch
# classes and wildcards, a cap that generated requests reach, one already partly used.
POLICIES = (
    ROUTED,
    Routing(allowed_datasets=("a*", "[b-d]?.otel", "web_shop_.otel"), max_routes=3),
    Routing(allowed_namespaces=("prod", "team_?", "x*"), max_routes=2, taken=(("t.otel", "x"),)),
    Routing(max_routes=1),
    NOT_ROUTED,
)


def policy_state(converter: LogsConverter) -> Any:
    """What a conversion leaves in the policy: the routes taken and the refusals counted."""
    policy = converter.routes
    return {"routes": sorted(policy._known), "status": policy.status()}


def _python(
    signal: Signal, body: bytes, application_id: str, routing: Routing
) -> tuple[Converted | str, Any]:
    if signal is Signal.LOGS:
        converter = routing.converter()
        try:
            request = parse_protobuf(signal, body)
        except BadRequest:
            return "BadRequest", policy_state(converter)
        return converter(request, application_id), policy_state(converter)
    try:
        request = parse_protobuf(signal, body)
    except BadRequest:
        return "BadRequest", None
    reference = TraceConverter if signal is Signal.TRACES else MetricConverter
    converter = reference(max_future_skew_s=3600, clock_ns=_clock, limits=LIMITS)
    return converter(request, application_id), None


def _native(
    signal: Signal, body: bytes, application_id: str, routing: Routing
) -> tuple[Converted | str, Any]:
    if signal is Signal.LOGS:
        reference = routing.converter()
        logs = native.NativeLogsConverter(reference, now_ns=_clock)
        try:
            return logs(body, application_id), policy_state(reference)
        except BadRequest:
            return "BadRequest", policy_state(reference)
    converter = native.NATIVE_CONVERTERS[signal](
        max_future_skew_s=3600, clock_ns=_clock, limits=LIMITS
    )
    try:
        return converter(body, application_id), None
    except BadRequest:
        return "BadRequest", None


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


def compare(
    signal: Signal, body: bytes, application_id: str = "", *, routing: Routing = ROUTED
) -> Any:
    """Run both codecs on *body*; raise AssertionError naming the first field that differs.

    *application_id*: a registered application's (the override); *routing*: the logs'
    `RoutePolicy` settings (each codec its own policy; their state after is compared too, as
    the summary's `policy`).
    """
    python, python_policy = _python(signal, body, application_id, routing)
    compiled, native_policy = _native(signal, body, application_id, routing)
    expected = summary(python)
    got = summary(compiled)
    if python_policy is not None:
        if isinstance(expected, dict):
            expected["policy"] = python_policy
        if isinstance(got, dict):
            got["policy"] = native_policy
        if python_policy != native_policy:
            raise AssertionError(
                f"{signal} policies differ:\n python {python_policy!r}\n"
                f" native {native_policy!r}\n body {body.hex()}"
            )
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


# Registered application ids: plain, two that sanitize to the same name (the hash suffix
# keeps them apart), one whose namespace is the fallback's, unicode, one that sanitizes away.
APPLICATIONS = ("", "app-1", "app_1", "prod", "\u00dcnicode App", "***")


class DifferentialTarget:
    """The fuzz target `native`: both codecs on each input, any difference is a finding. Logs
    inputs take turns through the `POLICIES` and the registered `APPLICATIONS`."""

    signals = native.NATIVE_SIGNALS

    def __init__(self) -> None:
        self._turn = 0

    def protobuf(self, signal: Signal, body: bytes, encoding: str = "") -> Any:
        from tests.fuzz.targets import Finding, Outcome

        application_id, routing = "", ROUTED
        if signal is Signal.LOGS:
            self._turn += 1
            routing = POLICIES[self._turn % len(POLICIES)]
            application_id = APPLICATIONS[self._turn // len(POLICIES) % len(APPLICATIONS)]
        try:
            out = compare(signal, body, application_id, routing=routing)
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
