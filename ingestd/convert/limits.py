"""Per-request structural limits, checked on the wire before a request is parsed. Pure, no I/O.

`receiver -> check_structure(body) -> parse -> convert(limits)`

Parsing costs memory per message, not per byte: an empty `ResourceSpans` is 2 wire bytes and
~32 bytes once parsed, so 64 MiB of them take ~1 GiB and ~2 minutes of conversion while
carrying no record at all. `check_structure` walks the protobuf wire format of an export
request (tags and lengths only, nothing is allocated) and counts resources, scopes and records
(spans, log records, metric data points); it stops and raises `PayloadTooLarge` as soon as a
count passes its cap, so its own cost is bounded by the caps, not by the body. The converters
receive the same `RequestLimits` and refuse, per data point, histograms with more buckets,
bounds or quantiles than `max_buckets_per_point` (reason `too_many_buckets`).

Both codecs (this Python reference and the native one) apply these same limits: the receivers
call `check_structure` on the bytes before either codec sees them, and each converter gets the
`RequestLimits` object. A body the walk cannot follow (malformed) is left to the parser, which
refuses it with its own error.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ingestd.errors import PayloadTooLarge

if TYPE_CHECKING:
    from ingestd.config import IngestConfig

# Wire types (protobuf encoding): 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
# Metric's data oneof: gauge 5, sum 7, histogram 9, exponential_histogram 10, summary 11;
# each holds `repeated ... data_points = 1`.
_METRIC_DATA_FIELDS = frozenset((5, 7, 9, 10, 11))
# Field 2, length-delimited: the records of a scope (spans, log records, metrics).
_RECORD_TAG = 2 << 3 | _LEN


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What one export request may hold; every count is per request, whatever its signal."""

    # ResourceSpans / ResourceMetrics / ResourceLogs entries.
    max_resources: int = 16_384
    # ScopeSpans / ScopeMetrics / ScopeLogs entries, over all resources.
    max_scopes: int = 65_536
    # Spans, log records or metric data points, over all scopes.
    max_items: int = 262_144
    # Per histogram data point: explicit bounds, bucket counts, each exponential histogram
    # side's bucket counts, summary quantiles.
    max_buckets_per_point: int = 16_384


DEFAULT_LIMITS = RequestLimits()


def request_limits(ingest: IngestConfig) -> RequestLimits:
    """The structural caps of the `ingest` section, as the object both codecs receive."""
    return RequestLimits(
        max_resources=ingest.max_resources_per_request,
        max_scopes=ingest.max_scopes_per_request,
        max_items=ingest.max_items_per_request,
        max_buckets_per_point=ingest.max_buckets_per_point,
    )


@dataclass(frozen=True, slots=True)
class Shape:
    """What a request holds, counted on the wire: resources, scopes, records (items)."""

    resources: int = 0
    scopes: int = 0
    items: int = 0

    @property
    def messages(self) -> int:
        """Structure and records together, what parsing allocates one message for."""
        return self.resources + self.scopes + self.items


def shape_of(signal: str, request: Any) -> Shape:
    """The Shape of a request already parsed (OTLP/JSON), counted from its lists."""
    resources = getattr(request, _RESOURCES[signal])
    scopes = items = 0
    for resource in resources:
        for scope in getattr(resource, _SCOPES[signal]):
            scopes += 1
            if signal == "metrics":
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    items += len(getattr(metric, kind).data_points) if kind else 0
            else:
                items += len(getattr(scope, _RECORDS[signal]))
    return Shape(len(resources), scopes, items)


def check_shape(shape: Shape, limits: RequestLimits) -> None:
    """PayloadTooLarge when *shape* passes a cap of *limits*."""
    for count, limit, what, key in (
        (shape.resources, limits.max_resources, "resources", "max_resources_per_request"),
        (shape.scopes, limits.max_scopes, "scopes", "max_scopes_per_request"),
        (shape.items, limits.max_items, "records", "max_items_per_request"),
    ):
        if count > limit:
            raise _too_many(limit, what, key)


def _too_many(limit: int, what: str, key: str) -> PayloadTooLarge:
    return PayloadTooLarge(f"request holds more than {limit} {what} (ingest.{key}); split it")


_RESOURCES = {"traces": "resource_spans", "metrics": "resource_metrics", "logs": "resource_logs"}
_SCOPES = {"traces": "scope_spans", "metrics": "scope_metrics", "logs": "scope_logs"}
_RECORDS = {"traces": "spans", "logs": "log_records"}


class _Malformed(Exception):
    """The walk cannot follow the bytes; the parser will say why."""


def check_structure(
    signal: str, body: bytes, limits: RequestLimits, *, count_records: bool | None = None
) -> Shape:
    """Count *body*'s resources, scopes and records; PayloadTooLarge past a cap.

    *signal* is "traces", "metrics" or "logs". Records are counted only when the body could
    hold more than `max_items` of them (a record takes at least 2 bytes), unless
    *count_records* says otherwise; uncounted, `Shape.items` is 0. So an SDK-sized request
    costs the walk of its resources and scopes (microseconds), and a large one a few hundred
    ns per record, never more records than the cap.
    """
    if count_records is None:
        count_records = len(body) > 2 * limits.max_items
    counter = _Counter(signal, limits, count_records)
    with contextlib.suppress(_Malformed):
        counter.request(body)
    return Shape(counter.resources, counter.scopes, counter.items)


class _Counter:
    __slots__ = ("count_records", "items", "limits", "metrics", "resources", "scopes")

    def __init__(self, signal: str, limits: RequestLimits, count_records: bool) -> None:
        self.limits = limits
        self.count_records = count_records
        self.metrics = signal == "metrics"
        self.resources = 0
        self.scopes = 0
        self.items = 0

    def request(self, data: bytes) -> None:
        limit = self.limits.max_resources
        for field, start, end in _fields(data, 0, len(data)):
            if field == 1:
                self.resources += 1
                if self.resources > limit:
                    raise _too_many(limit, "resources", "max_resources_per_request")
                self.resource(data, start, end)

    def resource(self, data: bytes, start: int, end: int) -> None:
        limit = self.limits.max_scopes
        for field, s, e in _fields(data, start, end):
            if field == 2:
                self.scopes += 1
                if self.scopes > limit:
                    raise _too_many(limit, "scopes", "max_scopes_per_request")
                if self.count_records:
                    self.scope(data, s, e)

    def scope(self, data: bytes, start: int, end: int) -> None:
        # ScopeSpans.spans, ScopeLogs.log_records and ScopeMetrics.metrics are all field 2.
        if self.metrics:
            for field, s, e in _fields(data, start, end):
                if field == 2:
                    self.metric(data, s, e)
            return
        # The hot loop of the walk (one pass per record), inlined: ~0.1 us per record.
        room = self.limits.max_items - self.items
        n = 0
        pos = start
        while pos < end:
            if data[pos] == _RECORD_TAG:
                size, pos = _varint(data, pos + 1, end)
                pos += size
                n += 1
                if n > room:
                    break
                continue
            for field, _, e in _FieldIter(data, pos, end):
                n += field == 2
                pos = e
                break
            else:
                break
        if pos > end:
            raise _Malformed
        self._count(n)

    def metric(self, data: bytes, start: int, end: int) -> None:
        for field, s, e in _fields(data, start, end):
            if field in _METRIC_DATA_FIELDS:
                points = sum(1 for f, _, _ in _fields(data, s, e) if f == 1)
                self._count(points)

    def _count(self, n: int) -> None:
        self.items += n
        if self.items > self.limits.max_items:
            raise _too_many(self.limits.max_items, "records", "max_items_per_request")


def _fields(data: bytes, pos: int, end: int) -> _FieldIter:
    return _FieldIter(data, pos, end)


class _FieldIter:
    """(field number, start, end) of each length-delimited field in data[pos:end]; other wire
    types are skipped. _Malformed when a tag or length runs past *end*."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data = data
        self.pos = pos
        self.end = end

    def __iter__(self) -> _FieldIter:
        return self

    def __next__(self) -> tuple[int, int, int]:
        data, end = self.data, self.end
        while True:
            pos = self.pos
            if pos >= end:
                raise StopIteration
            tag = data[pos]
            pos += 1
            if tag & 0x80:
                tag, pos = _varint(data, pos - 1, end)
            wire = tag & 7
            if wire == _LEN:
                size = data[pos] if pos < end else 0x80
                if size & 0x80:
                    size, pos = _varint(data, pos, end)
                else:
                    pos += 1
                stop = pos + size
                if stop > end:
                    raise _Malformed
                self.pos = stop
                return tag >> 3, pos, stop
            if wire == _VARINT:
                _, pos = _varint(data, pos, end)
            elif wire == _I64:
                pos += 8
            elif wire == _I32:
                pos += 4
            else:
                raise _Malformed  # groups (3, 4) are not used by OTLP
            if pos > end:
                raise _Malformed
            self.pos = pos


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos < end:
        byte = data[pos]
        if not byte & 0x80:
            return byte, pos + 1
    value = shift = 0
    while pos < end and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise _Malformed
