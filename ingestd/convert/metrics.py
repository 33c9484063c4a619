"""OTLP metrics -> rows of the `metrics` table (docs/design.md), one per data point. Pure, no I/O.

Every point kind is kept whole: gauge and sum values (ints exact in `intValue`), histogram and
exponential histogram buckets, summary quantiles, exemplars, flags and start times. Resource,
scope and metric-level fields are converted once per metric, not per point. A point that cannot
be stored (time missing, out of range or too far ahead; a uint64 count beyond bigint) and a
metric with no data are rejected alone, counted by reason.

`exemplars` is a jsonb array of `{"timeUnixNano", "value", "spanId" hex, "traceId" hex,
"filteredAttributes"}` (value: a number, or a tagged `{"$double": ...}` for NaN/±Infinity).
Array columns are sent in PostgreSQL's binary array form (`float8_array`, `int8_array`).
"""

from __future__ import annotations

import functools
import itertools
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ingestd.convert import copy_binary, wire
from ingestd.convert.common import (
    INT16_MAX,
    INT16_MIN,
    INT32_MAX,
    INT64_MAX,
    PG_EPOCH_US,
    AttributeEncoder,
    BadAttribute,
    Rows,
    RowsConverter,
    add_resource,
    add_scope,
    clean_text,
    int4_bits,
    jsonb,
    time_problem,
)
from ingestd.convert.limits import DEFAULT_LIMITS, RequestLimits
from ingestd.convert.values import double_value, kv_dict
from ingestd.model import Converted

TABLE = "metrics"

# (column, binary COPY wire type); timestamptz, jsonb and arrays travel in their binary forms.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("timestamp", "int8"),
    ("applicationid", "text"),
    ("name", "text"),
    ("type", "text"),
    ("value", "float8"),
    ("intvalue", "int8"),
    ("unit", "text"),
    ("attributes", "bytea"),
    ("timeunixnano", "int8"),
    ("starttimeunixnano", "int8"),
    ("temporality", "int2"),
    ("ismonotonic", "bool"),
    ("flags", "int4"),
    ("count", "int8"),
    ("sum", "float8"),
    ("min", "float8"),
    ("max", "float8"),
    ("explicitbounds", "bytea"),
    ("bucketcounts", "bytea"),
    ("scale", "int4"),
    ("zerocount", "int8"),
    ("zerothreshold", "float8"),
    ("positiveoffset", "int4"),
    ("positivebucketcounts", "bytea"),
    ("negativeoffset", "int4"),
    ("negativebucketcounts", "bytea"),
    ("quantiles", "bytea"),
    ("quantilevalues", "bytea"),
    ("exemplars", "bytea"),
    ("resourceid", "int8"),
    ("scopeid", "int8"),
)

_FLOAT8_OID = 701
_INT8_OID = 20


TYPES = tuple(wire_type for _, wire_type in COLUMNS)


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class _Metric:
    """The per-metric context shared by its points (slots: built once per metric)."""

    name: str
    unit: str
    app_id: str
    resource_id: int
    scope_id: int
    attributes: AttributeEncoder
    max_time: int
    max_buckets: int


def convert(
    request: Any,
    attributes: AttributeEncoder,
    *,
    max_time_unix_nano: int,
    application_id: str = "",
    limits: RequestLimits = DEFAULT_LIMITS,
) -> Converted:
    """One ExportMetricsServiceRequest -> Converted whose payload is `Rows` for `metrics`.

    A histogram or summary point with more than `limits.max_buckets_per_point` bounds, bucket
    counts (per side) or quantiles is refused alone (`too_many_buckets`).
    """
    request = wire.as_fast(wire.METRICS_REQUEST, request)
    out = Rows()
    converted = Converted(payload=out, items=0, nbytes=0)
    nul = 0
    nul_before = attributes.nul_replaced
    for resource_metrics in request.resource_metrics:
        resource, n = add_resource(
            out, resource_metrics.resource, resource_metrics.schema_url, override=application_id
        )
        nul += n
        for scope_metrics in resource_metrics.scope_metrics:
            scope_id, n = add_scope(out, scope_metrics.scope, scope_metrics.schema_url)
            nul += n
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                name, n1 = clean_text(metric.name)
                if kind is None:
                    converted.reject("no_data", f"metric {name!r}: no data points type set")
                    continue
                unit, n2 = clean_text(metric.unit)
                description, n3 = clean_text(metric.description)
                nul += n1 + n2 + n3
                app_id = resource.application_id
                out.descriptions[(app_id, name)] = (kind, unit, description)
                context = _Metric(
                    name,
                    unit,
                    app_id,
                    resource.resource_id,
                    scope_id,
                    attributes,
                    max_time_unix_nano,
                    limits.max_buckets_per_point,
                )
                _KINDS[kind](getattr(metric, kind), context, out.rows, converted)
    converted.items = len(out.rows)
    converted.nul_replaced = nul + attributes.nul_replaced - nul_before
    return converted


def _checked_times(point: Any, m: _Metric) -> tuple[int, int | None]:
    t = point.time_unix_nano
    problem = time_problem(t, m.max_time)
    if problem is not None:
        raise _Reject(problem, f"time_unix_nano {t}")
    start = point.start_time_unix_nano
    if start > INT64_MAX:
        raise _Reject("timestamp_out_of_range", f"start_time_unix_nano {start}")
    return t, start or None


def _count(value: int, what: str) -> int:
    if value > INT64_MAX:
        raise _Reject("count_out_of_range", f"{what} {value} exceeds bigint")
    return value


def _counts(values: Sequence[int], what: str) -> bytes:
    if values and max(values) > INT64_MAX:
        raise _Reject("count_out_of_range", f"{what} holds a value beyond bigint")
    return int8_array(values)


def _points(
    points: Any, m: _Metric, rows: list[tuple[Any, ...]], converted: Converted, row: Any
) -> None:
    """Append row(point) for each point, rejecting the ones that cannot be stored."""
    for point in points:
        try:
            rows.append(row(point, m))
        except _Reject as exc:
            converted.reject(exc.reason, f"metric {m.name!r}: {exc.detail}")
        except BadAttribute as exc:
            converted.reject("bad_attribute", f"metric {m.name!r}: {exc}")


def _gauge(data: Any, m: _Metric, rows: list[tuple[Any, ...]], converted: Converted) -> None:
    _number_points(data.data_points, m, rows, converted, "gauge", None, None)


def _temporality_refused(data: Any, m: _Metric, converted: Converted) -> bool:
    """Refuse every point of a metric whose temporality does not fit smallint."""
    temporality = data.aggregation_temporality
    if INT16_MIN <= temporality <= INT16_MAX:
        return False
    for _ in data.data_points:
        converted.reject(
            "enum_out_of_range", f"metric {m.name!r}: aggregation_temporality {temporality}"
        )
    return True


def _sum(data: Any, m: _Metric, rows: list[tuple[Any, ...]], converted: Converted) -> None:
    if _temporality_refused(data, m, converted):
        return
    temporality, monotonic = data.aggregation_temporality, data.is_monotonic
    _number_points(data.data_points, m, rows, converted, "sum", temporality, monotonic)


def _number_points(
    points: Any,
    m: _Metric,
    rows: list[tuple[Any, ...]],
    converted: Converted,
    kind: str,
    temporality: int | None,
    monotonic: bool | None,
) -> None:
    """The hot loop of gauges and sums (most points): one row per point, checks inlined."""
    append = rows.append
    attributes = m.attributes
    memo = attributes.jsonb_memo
    app_id, name, unit, resource_id, scope_id = m.app_id, m.name, m.unit, m.resource_id, m.scope_id
    max_time = min(m.max_time, INT64_MAX)
    for p in points:
        t = p.time_unix_nano
        start = p.start_time_unix_nano
        if not 0 < t <= max_time or start > INT64_MAX:
            try:
                _checked_times(p, m)
            except _Reject as exc:
                converted.reject(exc.reason, f"metric {name!r}: {exc.detail}")
            continue
        which = p.WhichOneof("value")
        if which == "as_double":
            value, int_value = p.as_double, None
        elif which == "as_int":
            int_value = p.as_int
            value = float(int_value)
        else:
            value = int_value = None
        try:
            attrs = memo(p.attributes[:])
        except BadAttribute as exc:
            converted.reject("bad_attribute", f"metric {name!r}: {exc}")
            continue
        exemplars = p.exemplars[:]
        flags = p.flags
        if flags > INT32_MAX:
            flags = int4_bits(flags)
        # fmt: off
        append((
            t // 1000 - PG_EPOCH_US, app_id, name, kind, value, int_value, unit, attrs, t,
            start or None, temporality, monotonic, flags,
            None, None, None, None, None, None, None, None, None, None, None, None, None, None,
            None, _exemplars(exemplars, attributes) if exemplars else None, resource_id, scope_id,
        ))
        # fmt: on


def _histogram(data: Any, m: _Metric, rows: list[tuple[Any, ...]], converted: Converted) -> None:
    if _temporality_refused(data, m, converted):
        return
    row = functools.partial(_histogram_row, data.aggregation_temporality)
    _points(data.data_points, m, rows, converted, row)


def _buckets(m: _Metric, **lists: Sequence[Any]) -> None:
    for what, values in lists.items():
        if len(values) > m.max_buckets:
            raise _Reject(
                "too_many_buckets",
                f"{len(values)} {what}, over {m.max_buckets} (ingest.max_buckets_per_point)",
            )


def _histogram_row(temporality: int, p: Any, m: _Metric) -> tuple[Any, ...]:
    t, start = _checked_times(p, m)
    _buckets(m, explicit_bounds=p.explicit_bounds, bucket_counts=p.bucket_counts)
    # fmt: off
    return (
        t // 1000 - PG_EPOCH_US, m.app_id, m.name, "histogram", None, None, m.unit,
        m.attributes.jsonb_memo(p.attributes[:]), t, start, temporality, None, int4_bits(p.flags),
        _count(p.count, "count"),
        p.sum if p.HasField("sum") else None,
        p.min if p.HasField("min") else None,
        p.max if p.HasField("max") else None,
        float8_array(p.explicit_bounds), _counts(p.bucket_counts, "bucket_counts"),
        None, None, None, None, None, None, None, None, None,
        _exemplars(p.exemplars[:], m.attributes), m.resource_id, m.scope_id,
    )
    # fmt: on


def _exponential(data: Any, m: _Metric, rows: list[tuple[Any, ...]], converted: Converted) -> None:
    if _temporality_refused(data, m, converted):
        return
    row = functools.partial(_exponential_row, data.aggregation_temporality)
    _points(data.data_points, m, rows, converted, row)


def _exponential_row(temporality: int, p: Any, m: _Metric) -> tuple[Any, ...]:
    t, start = _checked_times(p, m)
    positive, negative = p.positive, p.negative
    _buckets(
        m,
        positive_bucket_counts=positive.bucket_counts,
        negative_bucket_counts=negative.bucket_counts,
    )
    # fmt: off
    return (
        t // 1000 - PG_EPOCH_US, m.app_id, m.name, "exponential_histogram", None, None, m.unit,
        m.attributes.jsonb_memo(p.attributes[:]), t, start, temporality, None, int4_bits(p.flags),
        _count(p.count, "count"),
        p.sum if p.HasField("sum") else None,
        p.min if p.HasField("min") else None,
        p.max if p.HasField("max") else None,
        None, None,
        p.scale, _count(p.zero_count, "zero_count"), p.zero_threshold,
        positive.offset, _counts(positive.bucket_counts, "positive.bucket_counts"),
        negative.offset, _counts(negative.bucket_counts, "negative.bucket_counts"),
        None, None,
        _exemplars(p.exemplars[:], m.attributes), m.resource_id, m.scope_id,
    )
    # fmt: on


def _summary(data: Any, m: _Metric, rows: list[tuple[Any, ...]], converted: Converted) -> None:
    _points(data.data_points, m, rows, converted, _summary_row)


def _summary_row(p: Any, m: _Metric) -> tuple[Any, ...]:
    t, start = _checked_times(p, m)
    quantiles = p.quantile_values
    _buckets(m, quantile_values=quantiles)
    # fmt: off
    return (
        t // 1000 - PG_EPOCH_US, m.app_id, m.name, "summary", None, None, m.unit,
        m.attributes.jsonb_memo(p.attributes[:]), t, start, None, None, int4_bits(p.flags),
        _count(p.count, "count"), p.sum, None, None,
        None, None, None, None, None, None, None, None, None,
        float8_array([q.quantile for q in quantiles]), float8_array([q.value for q in quantiles]),
        None, m.resource_id, m.scope_id,
    )
    # fmt: on


_KINDS: dict[str, Callable[[Any, _Metric, list[tuple[Any, ...]], Converted], None]] = {
    "gauge": _gauge,
    "sum": _sum,
    "histogram": _histogram,
    "exponential_histogram": _exponential,
    "summary": _summary,
}


def _exemplars(exemplars: list[Any], attributes: AttributeEncoder) -> bytes | None:
    """The exemplars column: NULL when there are none."""
    if not exemplars:
        return None
    items = []
    for e in exemplars:
        which = e.WhichOneof("value")
        value: Any = e.as_int if which == "as_int" else e.as_double
        if which == "as_double":
            value = double_value(value)
        items.append(
            {
                "timeUnixNano": e.time_unix_nano,
                "value": value if which else None,
                "spanId": e.span_id.hex(),
                "traceId": e.trace_id.hex(),
                "filteredAttributes": kv_dict(e.filtered_attributes),
            }
        )
    data, nul = jsonb(items)
    attributes.nul_replaced += nul
    return data


# -- PostgreSQL binary arrays ---------------------------------------------------------------------
# One dimension, no NULLs: ndim, has-null flag, element type, length, lower bound 1, then each
# element as (int32 length, value).


# Packers for arrays up to this long are kept (each a few KiB; SDK histograms have 16 bounds,
# exponential ones up to 160 buckets); a longer array gets a packer for that call only, so a
# client sending many distinct lengths pins nothing (a cache per length kept 8 MiB for one
# length of 131,072).
_CACHED_ARRAY_LENGTH = 256


@functools.cache
def _array_struct(code: str, n: int) -> struct.Struct:
    return struct.Struct(">iiIii" + ("i" + code) * n)


def _array(code: str, oid: int, values: Sequence[Any]) -> bytes:
    n = len(values)
    if n == 0:
        return struct.pack(">iiI", 0, 0, oid)
    pairs = itertools.chain.from_iterable(zip(itertools.repeat(8), values))
    packer = (
        _array_struct(code, n)
        if n <= _CACHED_ARRAY_LENGTH
        else struct.Struct(">iiIii" + ("i" + code) * n)
    )
    return packer.pack(1, 0, oid, n, 1, *pairs)


def float8_array(values: Sequence[float]) -> bytes:
    """The binary form of a `double precision[]`."""
    return _array("d", _FLOAT8_OID, values)


def int8_array(values: Sequence[int]) -> bytes:
    """The binary form of a `bigint[]` (values must fit in int64)."""
    return _array("q", _INT8_OID, values)


class MetricConverter(RowsConverter):
    """The metrics route's converter: `convert` with the process's attribute cache and clock."""

    convert_request = staticmethod(convert)

    def __call__(self, request: Any, application_id: str = "") -> Converted:
        """The rows encoded for binary COPY (`copy_binary.CopyRows`), as the native codec's."""
        converted = super().__call__(request, application_id)
        payload = copy_binary.from_rows(converted.payload, TYPES)
        converted.payload = payload
        converted.nbytes = len(payload.data)
        return converted
