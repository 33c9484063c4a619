"""One fuzz input through inflate -> decode -> convert, with the oracle every input must pass.

The oracle, per input:
- decoding raises only `BadRequest` (or a subclass), which the status table maps to 400/413/415;
- a decoded request converts without raising: bad records are the converter's partial rejects;
- every row fits its column as PostgreSQL will store it (integer ranges, no NUL in text, jsonb
  that parses, has no \\u0000 and nests less than PostgreSQL's limit), every bulk item is an
  action line and a document line of valid JSON with an `_id`;
- accepted + rejected records add up to the records in the request.
A broken oracle raises `Finding`; anything else escaping is a finding too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ingestd.convert import copy_binary, metrics, traces
from ingestd.convert.logs import LogsConverter
from ingestd.errors import BadRequest, IngestdError
from ingestd.model import Converted, Signal
from ingestd.receiver.decode import parse_protobuf
from ingestd.receiver.otlp_http import inflater
from ingestd.receiver.otlp_json import parse_json
from ingestd.receiver.status import status_for

# A fixed clock: the converters compare timestamps with "now + skew".
NOW_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
SKEW_S = 3600.0

_RANGES = {
    "int2": (-(2**15), 2**15 - 1),
    "int4": (-(2**31), 2**31 - 1),
    "int8": (-(2**63), 2**63 - 1),
}
# timestamptz binary value (microseconds since 2000-01-01) for 1970 .. 294276 AD.
_TIMESTAMPTZ = (-946_684_800_000_000, 9_224_318_015_999_999)
_TIMESTAMP_COLUMNS = frozenset({"starttime", "endtime", "timestamp"})
_JSONB_COLUMNS = frozenset({"attributes", "events", "links", "exemplars"})
# The only bytea columns that carry arrays (PostgreSQL's binary array form), not jsonb or ids.
_ARRAY_COLUMNS = frozenset(
    {
        "explicitbounds",
        "bucketcounts",
        "positivebucketcounts",
        "negativebucketcounts",
        "quantiles",
        "quantilevalues",
    }
)
# PostgreSQL refuses jsonb nested deeper than this (its stack depth check; ~6000 levels at the
# default max_stack_depth 2 MB; the limit that bites first is orjson's 255 on the way out).
_MAX_JSON_DEPTH = 255


class Finding(AssertionError):
    """The oracle failed for one input."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the receiver would answer: an HTTP status and, on 200, the record counts."""

    http_status: int
    items: int = 0
    rejected: int = 0


def converters() -> dict[Signal, Any]:
    clock = lambda: NOW_NS  # noqa: E731 - a constant clock for every converter
    return {
        Signal.TRACES: traces.TraceConverter(max_future_skew_s=SKEW_S, clock_ns=clock),
        Signal.METRICS: metrics.MetricConverter(max_future_skew_s=SKEW_S, clock_ns=clock),
        Signal.LOGS: LogsConverter(max_future_skew_s=SKEW_S, now_ns=clock),
    }


class Target:
    """Runs inputs the way the receivers do and checks the oracle; one per fuzz process."""

    def __init__(self) -> None:
        self._convert = converters()

    def protobuf(self, signal: Signal, body: bytes, encoding: str = "") -> Outcome:
        return self._run(signal, body, encoding, json=False)

    def json(self, signal: Signal, body: bytes, encoding: str = "") -> Outcome:
        return self._run(signal, body, encoding, json=True)

    def _run(self, signal: Signal, body: bytes, encoding: str, *, json: bool) -> Outcome:
        try:
            inflate = inflater(encoding)
            if inflate is not None:
                body = inflate(body, 8 * 1024 * 1024)
            request = parse_json(signal, body) if json else parse_protobuf(signal, body)
            # A converter refuses records one by one; a request it cannot take at all (too
            # deep for its protobuf form) is a BadRequest, as decoding would have been.
            converted = self._convert[signal](request)
        except BadRequest as exc:
            return Outcome(_documented(exc))
        check_converted(signal, request, converted)
        return Outcome(200, converted.items, converted.rejected)


def _documented(exc: IngestdError) -> int:
    status = status_for(exc)
    if status.http_status not in (400, 413, 415):
        raise Finding(f"decode error answered {status.http_status}: {exc!r}")
    return status.http_status


def record_count(signal: Signal, request: Any) -> int:
    """How many records (spans, data points, log records) a decoded request holds."""
    if signal is Signal.TRACES:
        return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    if signal is Signal.LOGS:
        return sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
    total = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                total += len(getattr(metric, kind).data_points) if kind else 0
    return total


def check_converted(signal: Signal, request: Any, converted: Converted) -> None:
    """The oracle for a converter's output (see the module docstring)."""
    if signal is Signal.METRICS:
        # A metric without data, or with no points, counts as one refused record at most.
        records = record_count(signal, request)
        if converted.items + converted.rejected < records:
            raise Finding(
                f"{records} points in, {converted.items} stored + {converted.rejected} rejected out"
            )
    else:
        records = record_count(signal, request)
        if converted.items + converted.rejected != records:
            raise Finding(
                f"{records} records in, {converted.items} stored + "
                f"{converted.rejected} rejected out"
            )
    if converted.rejected and not converted.reject_example:
        raise Finding("records rejected without a message for the client")
    if signal is Signal.LOGS:
        _check_bulk(converted.payload)
    else:
        columns = traces.COLUMNS if signal is Signal.TRACES else metrics.COLUMNS
        _check_rows(converted.payload, columns)


def _check_rows(payload: Any, columns: tuple[tuple[str, str], ...]) -> None:
    try:
        rows = copy_binary.decode(payload, [kind for _, kind in columns])
    except ValueError as exc:
        raise Finding(f"COPY payload does not parse back: {exc}") from exc
    for row in rows:
        if len(row) != len(columns):
            raise Finding(f"row of {len(row)} values for {len(columns)} columns")
        for (name, kind), value in zip(columns, row, strict=True):
            if value is not None:
                _check_value(name, kind, value)
    for rid, (attrs, dropped, url) in payload.resources.items():
        _check_value("resources.id", "int8", rid)
        _check_value("resources.attributes", "bytea", attrs, jsonb=True)
        _check_value("resources.droppedattributescount", "int4", dropped)
        _check_value("resources.schemaurl", "text", url)
    for sid, (name, version, attrs, dropped, url) in payload.scopes.items():
        _check_value("scopes.id", "int8", sid)
        _check_value("scopes.name", "text", name)
        _check_value("scopes.version", "text", version)
        _check_value("scopes.attributes", "bytea", attrs, jsonb=True)
        _check_value("scopes.droppedattributescount", "int4", dropped)
        _check_value("scopes.schemaurl", "text", url)
    for app, parts in payload.applications.items():
        for text in (app, *parts):
            _check_value("applications", "text", text)
    for (app, name), parts in payload.descriptions.items():
        for text in (app, name, *parts):
            _check_value("metric_descriptions", "text", text)


def _check_value(name: str, kind: str, value: Any, *, jsonb: bool = False) -> None:
    if kind in _RANGES:
        low, high = _TIMESTAMPTZ if name in _TIMESTAMP_COLUMNS else _RANGES[kind]
        if type(value) is not int or not low <= value <= high:
            raise Finding(f"{name} ({kind}) cannot hold {value!r}")
    elif kind == "text":
        if type(value) is not str or "\x00" in value:
            raise Finding(f"{name} (text) cannot hold {value!r:.200}")
        _utf8(name, value)
    elif kind == "float8":
        if type(value) is not float:
            raise Finding(f"{name} (float8) got {type(value).__name__}")
    elif kind == "bool":
        if type(value) is not bool:
            raise Finding(f"{name} (bool) got {type(value).__name__}")
    elif kind == "bytea":
        if type(value) is not bytes:
            raise Finding(f"{name} (bytea) got {type(value).__name__}")
        if jsonb or name in _JSONB_COLUMNS:
            _check_jsonb(name, value)
        elif name in _ARRAY_COLUMNS and len(value) < 12:
            raise Finding(f"{name}: {len(value)} bytes is no binary array")


def _utf8(name: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Finding(f"{name}: not encodable as UTF-8: {exc}") from exc


def _check_jsonb(name: str, value: bytes) -> None:
    if value[:1] != b"\x01":
        raise Finding(f"{name}: jsonb without its version byte: {value[:40]!r}")
    text = value[1:]
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise Finding(f"{name}: jsonb is not JSON: {exc}: {text[:200]!r}") from exc
    depth, nul = _walk(parsed)
    if nul:
        raise Finding(f"{name}: jsonb holds a NUL character, which PostgreSQL refuses")
    if depth > _MAX_JSON_DEPTH:
        raise Finding(f"{name}: jsonb nested deeper than {_MAX_JSON_DEPTH}")


def _walk(value: Any) -> tuple[int, bool]:
    """(nesting depth, whether a key or string holds NUL) of a parsed JSON value."""
    deepest, nul, stack = 0, False, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            nul = nul or any("\x00" in k for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            nul = nul or "\x00" in item
    return deepest, nul


def _check_bulk(items: list[bytes]) -> None:
    for item in items:
        if not item.endswith(b"\n"):
            raise Finding(f"bulk item without its final newline: {item[-100:]!r}")
        lines = item[:-1].split(b"\n")
        if len(lines) != 2:
            raise Finding(f"bulk item of {len(lines)} lines: {item[:200]!r}")
        try:
            action, doc = orjson.loads(lines[0]), orjson.loads(lines[1])
        except orjson.JSONDecodeError as exc:
            raise Finding(f"bulk item is not JSON: {exc}: {item[:300]!r}") from exc
        create = action.get("create") if isinstance(action, dict) else None
        if not isinstance(create, dict) or not create.get("_id") or not create.get("_index"):
            raise Finding(f"bulk action without _index/_id: {lines[0][:200]!r}")
        index = create["_index"]
        if index != index.lower() or any(c in index for c in ' \\/*?"<>|,#:'):
            raise Finding(f"bulk action names an invalid index {index!r}")
        if not isinstance(doc, dict) or "@timestamp" not in doc:
            raise Finding(f"document without @timestamp: {lines[1][:200]!r}")
