"""The codec choice, and the compiled codec (`ingestd_native`, built from native/) behind the
converter interface of the Python reference.

`ingest.codec` (`native`, `python` or `auto`; the environment variable `INGESTD_CODEC`
overrides it) picks who turns a request into its sink payload. `auto` is `native` when the
module imports, else `python` with a warning; `native` without the module is a startup error.
Both codecs produce the same bytes (tests/unit/native holds them byte-identical), so the choice
changes CPU cost only. The native converters take the request's decompressed protobuf bytes
(`takes_bytes`); given a decoded message (OTLP/JSON requests) they serialize it first.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal

from ingestd.convert.bulk import BulkItems
from ingestd.convert.copy_binary import CopyRows, offsets_of
from ingestd.convert.logs import LogsConverter
from ingestd.errors import BadRequest, ConfigError
from ingestd.ingest import Converted, Signal

_native: ModuleType | None
try:
    import ingestd_native as _native
except ImportError as _exc:  # the daemon installs and runs without Rust (codec python)
    _native = None
    IMPORT_ERROR = str(_exc)
else:
    IMPORT_ERROR = ""

Codec = Literal["native", "python"]
CODEC_ENV = "INGESTD_CODEC"
_CHOICES = ("native", "python", "auto")


def available() -> bool:
    """Whether the compiled codec imports."""
    return _native is not None


def native_version() -> str | None:
    return None if _native is None else str(_native.__version__)


def resolve(setting: str) -> tuple[Codec, str]:
    """(the codec to use, why) for the configured *setting*; `INGESTD_CODEC` overrides it.

    Raises ConfigError for an unknown name, or `native` when the module is missing.
    """
    requested = os.environ.get(CODEC_ENV) or setting
    source = CODEC_ENV if os.environ.get(CODEC_ENV) else "ingest.codec"
    if requested not in _CHOICES:
        raise ConfigError([f"{source}: must be one of {', '.join(_CHOICES)} (got {requested!r})"])
    if requested == "python":
        return "python", f"{source}=python"
    if available():
        return "native", f"{source}={requested}"
    if requested == "native":
        raise ConfigError(
            [
                f"{source}: native codec requested but ingestd_native does not import "
                f"({IMPORT_ERROR}); build it with `make venv` (needs a Rust toolchain: "
                "https://rustup.rs) or set the codec to python"
            ]
        )
    return "python", f"{source}=auto, ingestd_native missing ({IMPORT_ERROR})"


def describe() -> str:
    """One line for `ingestd --version`: the codec `auto` resolves to here."""
    try:
        codec, why = resolve("auto")
    except ConfigError as exc:
        return f"codec: error ({exc})"
    version = native_version()
    return f"codec: {codec} ({why}; ingestd_native {version or 'not installed'})"


def json_as_protobuf(signal: Signal, body: bytes) -> bytes | None:
    """An OTLP/JSON request as protobuf bytes (the native transcoder), or None when the Python
    decoder must read it: the module is missing, or the input is invalid or unusual."""
    if _native is None:
        return None
    out: bytes | None = _native.json_to_protobuf(str(signal), body)
    return out


def _message(example: tuple[str, str | None, str] | None) -> str:
    # The native side sends (prefix, name, suffix): repr() follows Python's Unicode tables.
    if example is None:
        return ""
    prefix, name, suffix = example
    return f"{prefix}{suffix}" if name is None else f"{prefix}{name!r}{suffix}"


class _NativeConverter:
    """A route's native codec: same payload, rejects and counts as the Python reference.

    Thread-safe (no state but the clock; the conversion releases the GIL), so `Ingest` runs
    big requests on its conversion threads.
    """

    takes_bytes = True
    thread_safe = True
    signal: Signal
    function: str

    def __init__(
        self, *, max_future_skew_s: float, clock_ns: Callable[[], int] = time.time_ns
    ) -> None:
        if _native is None:
            raise ConfigError([f"ingestd_native does not import: {IMPORT_ERROR}"])
        self._convert = getattr(_native, self.function)
        self._decode_error = _native.DecodeError
        self._skew_ns = int(max_future_skew_s * 1e9)
        self._clock_ns = clock_ns

    def __call__(self, request: Any, *, application_id: str | None = None) -> Converted:
        body = request if isinstance(request, bytes) else request.SerializeToString()
        try:
            out = self._convert(
                body,
                max_time_unix_nano=self._clock_ns() + self._skew_ns,
                application_id=application_id,
            )
        except self._decode_error as exc:
            raise BadRequest(f"not a valid OTLP {self.signal} export request: {exc}") from exc
        return _converted(out)


class NativeTraceConverter(_NativeConverter):
    """`traces.TraceConverter`, compiled."""

    signal = Signal.TRACES
    function = "convert_traces"


class NativeMetricConverter(_NativeConverter):
    """`metrics.MetricConverter`, compiled."""

    signal = Signal.METRICS
    function = "convert_metrics"


class NativeLogsConverter:
    """`logs.LogsConverter`, compiled: the same bulk items, ids, routing and rejects.

    Thread-safe for bytes (the only input `Ingest` hands to its conversion threads).
    """

    takes_bytes = True
    thread_safe = True

    def __init__(self, reference: LogsConverter, now_ns: Callable[[], int] = time.time_ns) -> None:
        if _native is None:
            raise ConfigError([f"ingestd_native does not import: {IMPORT_ERROR}"])
        self._convert = _native.convert_logs
        self._decode_error = _native.DecodeError
        self._reference = reference
        self._now_ns = now_ns

    def __call__(self, request: Any, *, application_id: str | None = None) -> Converted:
        if not isinstance(request, bytes):
            # OTLP/JSON arrives decoded: the reference converts it (its limits differ).
            return self._reference(request, application_id=application_id)
        dataset, namespace = self._reference.route
        now = self._now_ns()
        try:
            data, offsets, items, rejected, reasons, example = self._convert(
                request,
                max_time_unix_nano=now + self._reference.max_future_skew_ns,
                now_unix_nano=now,
                dataset=dataset,
                namespace=namespace,
                application_id=application_id,
            )
        except self._decode_error as exc:
            raise BadRequest(f"not a valid OTLP {Signal.LOGS} export request: {exc}") from exc
        return Converted(
            payload=BulkItems(data, offsets_of(offsets)),
            items=items,
            nbytes=len(data),
            rejected=rejected,
            reject_reasons=Counter(reasons),
            reject_example=_message(example),
        )


NATIVE_CONVERTERS: dict[Signal, type[_NativeConverter]] = {
    Signal.TRACES: NativeTraceConverter,
    Signal.METRICS: NativeMetricConverter,
}
NATIVE_SIGNALS = (Signal.TRACES, Signal.METRICS, Signal.LOGS)


def _converted(out: tuple[Any, ...]) -> Converted:
    (data, offsets, items, rejected, reasons, example, nul, resources, scopes, apps, descs) = out
    payload = CopyRows(data, offsets_of(offsets), resources, scopes, apps, descs)
    return Converted(
        payload=payload,
        items=items,
        nbytes=len(data),
        rejected=rejected,
        reject_reasons=Counter(reasons),
        reject_example=_message(example),
        nul_replaced=nul,
    )
