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
from typing import TYPE_CHECKING, Any, Literal

from ingestd.convert.bulk import BulkItems
from ingestd.convert.common import RowsConverter
from ingestd.convert.copy_binary import CopyRows, offsets_of
from ingestd.convert.limits import DEFAULT_LIMITS, RequestLimits
from ingestd.convert.logs import LogsConverter, application_namespace
from ingestd.errors import BadRequest, ConfigError
from ingestd.model import Converted, Converter, Signal

if TYPE_CHECKING:
    from ingestd.config import Config
    from ingestd.convert.logs import RoutePolicy
    from ingestd.signals import SignalSpec

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
# Refused routes a native logs converter remembers: each request hands them to Rust (~1 us
# each). Past that it forgets them all, and pays a second conversion per request that meets
# a refused route until it has learned them again.
_REFUSED_KEPT = 64


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
    big requests on its conversion threads. *limits*: the per-record caps (buckets per point).
    """

    takes_bytes = True
    thread_safe = True
    signal: Signal
    function: str

    def __init__(
        self,
        *,
        max_future_skew_s: float,
        limits: RequestLimits = DEFAULT_LIMITS,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if _native is None:
            raise ConfigError([f"ingestd_native does not import: {IMPORT_ERROR}"])
        self._convert = getattr(_native, self.function)
        self._decode_error = _native.DecodeError
        self._skew_ns = int(max_future_skew_s * 1e9)
        self._clock_ns = clock_ns
        self.limits = limits

    def __call__(self, request: Any, application_id: str = "") -> Converted:
        """*application_id*: a registered application's; it replaces the derived one and no
        applications row is written for it (as `common.add_resource(override=)`)."""
        body = request if isinstance(request, bytes) else request.SerializeToString()
        try:
            out = self._convert(
                body,
                max_time_unix_nano=self._clock_ns() + self._skew_ns,
                application_id=application_id or None,
                max_buckets_per_point=self.limits.max_buckets_per_point,
            )
        except self._decode_error as exc:
            raise BadRequest(f"not a valid OTLP {self.signal} export request: {exc}") from exc
        return _converted(out)


class NativeTraceConverter(_NativeConverter):
    """`traces.TraceConverter`, compiled."""

    signal = Signal.TRACES
    function = "convert_traces"


class NativeMetricConverter(_NativeConverter):
    """`metrics.MetricConverter`, compiled (the `too_many_buckets` cap included)."""

    signal = Signal.METRICS
    function = "convert_metrics"


class NativeLogsConverter:
    """`logs.LogsConverter`, compiled: the same bulk items, ids and rejects, routing included.

    The routes stay the reference's `RoutePolicy` decision (one place: allowlists, the cap of
    data streams, the fallback, `refused`): the Rust side routes each record by its
    `data_stream.*` attributes, sends each route where the policy sent it last time (itself
    when new), and lists the routes it asked, in the order and number the reference calls
    `RoutePolicy.admit` (once per distinct route of a scope, never for the fallback, none for
    an invalid request). They are admitted here with the GIL held; where the policy answers
    otherwise than assumed (a route refused for the first time) the request is converted
    again with those answers. A refusal is kept (a policy never takes back a refusal: its
    patterns are fixed and its routes only grow), so a client that keeps sending a refused
    route costs one conversion per request, not two. A registered application's requests keep
    its namespace (`application_namespace`): only the dataset is admitted, as the reference's
    `_route_bytes` does when locked. Decoded messages (OTLP/JSON the transcoder left to
    Python) go to *reference*. Thread-safe for bytes, as the policy is.
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
        # Routes the policy refused, and where it sent them: the first pass assumes the same.
        self._refused: dict[tuple[str, str], tuple[str, str]] = {}

    def __call__(self, request: Any, application_id: str = "") -> Converted:
        if isinstance(request, bytes):
            return self.compiled(request, application_id)
        return self._reference(request, application_id)

    def compiled(self, body: bytes, application_id: str = "") -> Converted:
        """The Rust conversion of *body*; *application_id*: a registered application's."""
        reference = self._reference
        policy = reference.routes
        dataset, namespace = reference.route
        locked = application_namespace(application_id) if application_id else None
        now = self._now_ns()
        refused = self._refused

        def convert(routes: list[tuple[str, str]] | None = None) -> tuple[Any, ...]:
            out: tuple[Any, ...] = self._convert(
                body,
                max_time_unix_nano=now + reference.max_future_skew_ns,
                now_unix_nano=now,
                dataset=dataset,
                namespace=namespace,
                application_id=application_id or None,
                from_attributes=policy.from_attributes,
                locked_namespace=locked,
                expected=refused or None,
                routes=routes,
            )
            return out

        try:
            out = convert()
            if asked := out[6]:
                if locked is None:
                    answers = [policy.admit(d, n) for d, n in asked]
                else:
                    answers = [(policy.admit(d, n)[0], n) for d, n in asked]
                if answers != out[7]:
                    self._remember(asked, answers)
                    out = convert(answers)
        except self._decode_error as exc:
            raise BadRequest(f"not a valid OTLP {Signal.LOGS} export request: {exc}") from exc
        data, offsets, items, rejected, reasons, example, _, _ = out
        return Converted(
            payload=BulkItems(data, offsets_of(offsets)),
            items=items,
            nbytes=len(data),
            rejected=rejected,
            reject_reasons=Counter(reasons),
            reject_example=_message(example),
        )

    def _remember(self, asked: list[tuple[str, str]], answers: list[tuple[str, str]]) -> None:
        if len(self._refused) > _REFUSED_KEPT:  # routes come from clients: stay bounded
            self._refused = {}
        for route, answer in zip(asked, answers, strict=True):
            if answer != route:
                self._refused[route] = answer
            else:
                self._refused.pop(route, None)


NATIVE_CONVERTERS: dict[Signal, type[_NativeConverter]] = {
    Signal.TRACES: NativeTraceConverter,
    Signal.METRICS: NativeMetricConverter,
}
NATIVE_SIGNALS = (Signal.TRACES, Signal.METRICS, Signal.LOGS)


def native_signals(config: Config) -> list[Signal]:
    """The signals the native codec converts under *config* (/status): all three when the
    codec is native (logs routing included), none when it is python."""
    if resolve(config.ingest.codec)[0] != "native":
        return []
    return list(NATIVE_SIGNALS)


def converters(
    spec: SignalSpec, config: Config, policy: RoutePolicy
) -> tuple[Converter, Converter]:
    """(convert, convert_large) of *spec*'s route: the Python reference's two instances (caches
    of their own), or one native converter for both (thread-safe) when the codec is native."""
    reference = spec.converter(config, policy)
    if spec.signal not in native_signals(config):
        return reference, spec.converter(config, policy, large=True)
    if spec.signal is Signal.LOGS:
        assert isinstance(reference, LogsConverter)
        compiled: Converter = NativeLogsConverter(reference)
    else:
        assert isinstance(reference, RowsConverter)
        compiled = NATIVE_CONVERTERS[spec.signal](
            max_future_skew_s=config.ingest.max_future_skew_s, limits=reference.limits
        )
    return compiled, compiled


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
