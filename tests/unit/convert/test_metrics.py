"""OTLP metric points -> `metrics` rows, every point kind field by field, and the rejects."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from ingestd.convert import metrics
from ingestd.convert.common import PG_EPOCH_US, AttributeEncoder
from ingestd.convert.identity import application_id_of
from ingestd.model import Converted
from tests.samples import set_attributes

NOW = 1_700_000_000_123_456_789
START = NOW - 60_000_000_000
COLUMN = {name: i for i, (name, _) in enumerate(metrics.COLUMNS)}
DISTRIBUTION_ONLY = [
    "count", "sum", "min", "max", "explicitbounds", "bucketcounts", "scale", "zerocount",
    "zerothreshold", "positiveoffset", "positivebucketcounts", "negativeoffset",
    "negativebucketcounts", "quantiles", "quantilevalues",
]  # fmt: skip


def request(*metric_list: Metric) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    set_attributes(rm.resource.attributes, {"service.name": "api", "service.namespace": "ns"})
    sm = rm.scope_metrics.add()
    sm.scope.name = "meter"
    sm.metrics.extend(metric_list)
    return req


def convert(req: Any, *, max_time: int = NOW + 10**12) -> Converted:
    return metrics.convert(req, AttributeEncoder(), max_time_unix_nano=max_time)


def rows_of(converted: Converted) -> list[dict[str, Any]]:
    return [dict(zip(COLUMN, row, strict=True)) for row in converted.payload.rows]


def parse_array(data: bytes) -> list[Any]:
    """Decode PostgreSQL's binary one-dimensional array form (as array_recv reads it)."""
    ndim, has_null, oid = struct.unpack_from(">iiI", data)
    assert has_null == 0
    if ndim == 0:
        assert len(data) == 12
        return []
    assert ndim == 1
    length, lower = struct.unpack_from(">ii", data, 12)
    assert lower == 1
    code = {701: "d", 20: "q"}[oid]
    out, offset = [], 20
    for _ in range(length):
        (size,) = struct.unpack_from(">i", data, offset)
        assert size == 8
        out.append(struct.unpack_from(">" + code, data, offset + 4)[0])
        offset += 12
    assert offset == len(data)
    return out


def gauge(*values: float | int, **point_fields: Any) -> Metric:
    m = Metric(name="temp", unit="Cel", description="room temperature")
    for v in values:
        p = m.gauge.data_points.add(time_unix_nano=NOW, **point_fields)
        if isinstance(v, int):
            p.as_int = v
        else:
            p.as_double = v
        set_attributes(p.attributes, {"room": "a", "floor": 2})
    return m


def test_gauge_double_point_fills_every_column() -> None:
    """A double gauge point: value, NULL intValue, attributes, times, flags, ids; no extras."""
    m = gauge(21.5, flags=1, start_time_unix_nano=START)
    converted = convert(request(m))
    (row,) = rows_of(converted)
    assert row["timestamp"] == NOW // 1000 - PG_EPOCH_US
    assert row["applicationid"] == application_id_of("ns", "api", "")
    assert (row["name"], row["type"], row["unit"]) == ("temp", "gauge", "Cel")
    assert (row["value"], row["intvalue"]) == (21.5, None)
    assert json.loads(row["attributes"][1:]) == {"room": "a", "floor": 2}
    assert (row["timeunixnano"], row["starttimeunixnano"], row["flags"]) == (NOW, START, 1)
    assert (row["temporality"], row["ismonotonic"], row["exemplars"]) == (None, None, None)
    assert all(row[c] is None for c in DISTRIBUTION_ONLY)
    assert row["resourceid"] in converted.payload.resources
    assert row["scopeid"] in converted.payload.scopes
    assert converted.payload.descriptions == {
        (row["applicationid"], "temp"): ("gauge", "Cel", "room temperature")
    }


def test_int_point_keeps_the_exact_int() -> None:
    """An int point: intValue exact beyond 2^53, value the same number as a double."""
    (row,) = rows_of(convert(request(gauge(2**62 + 1))))
    assert row["intvalue"] == 2**62 + 1
    assert row["value"] == float(2**62 + 1)


def test_point_without_value_has_null_values() -> None:
    """A number point with neither as_int nor as_double stores NULL value and intValue."""
    m = Metric(name="empty")
    m.gauge.data_points.add(time_unix_nano=NOW)
    (row,) = rows_of(convert(request(m)))
    assert (row["value"], row["intvalue"]) == (None, None)


@pytest.mark.parametrize("special", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_kept(special: float) -> None:
    """NaN and infinities are stored as such in the double precision column."""
    (row,) = rows_of(convert(request(gauge(special))))
    assert row["value"] == special or (math.isnan(special) and math.isnan(row["value"]))


def test_zero_start_time_is_null() -> None:
    """start_time_unix_nano 0 (unset) becomes NULL."""
    (row,) = rows_of(convert(request(gauge(1.0))))
    assert row["starttimeunixnano"] is None


def test_sum_point_has_temporality_and_monotonic() -> None:
    """A sum point: temporality (1 delta, 2 cumulative) and isMonotonic."""
    m = Metric(name="requests", unit="1")
    m.sum.aggregation_temporality, m.sum.is_monotonic = 1, True
    m.sum.data_points.add(time_unix_nano=NOW, start_time_unix_nano=START, as_int=7)
    (row,) = rows_of(convert(request(m)))
    assert (row["type"], row["temporality"], row["ismonotonic"]) == ("sum", 1, True)
    assert (row["value"], row["intvalue"]) == (7.0, 7)


def test_histogram_point_fills_its_columns() -> None:
    """A histogram point: count, sum, min, max, bounds and bucket counts, no value."""
    m = Metric(name="latency", unit="ms")
    m.histogram.aggregation_temporality = 2
    p = m.histogram.data_points.add(time_unix_nano=NOW, start_time_unix_nano=START, count=6)
    p.sum, p.min, p.max = 12.5, 0.5, 9.0
    p.explicit_bounds.extend([1.0, 5.0])
    p.bucket_counts.extend([1, 2, 2**62])
    (row,) = rows_of(convert(request(m)))
    assert (row["type"], row["temporality"], row["value"], row["intvalue"]) == (
        "histogram",
        2,
        None,
        None,
    )
    assert (row["count"], row["sum"], row["min"], row["max"]) == (6, 12.5, 0.5, 9.0)
    assert parse_array(row["explicitbounds"]) == [1.0, 5.0]
    assert parse_array(row["bucketcounts"]) == [1, 2, 2**62]
    assert row["scale"] is None
    assert row["quantiles"] is None


def test_histogram_without_optional_fields() -> None:
    """Unset sum/min/max are NULL; no bounds and no buckets are empty arrays."""
    m = Metric(name="h")
    m.histogram.data_points.add(time_unix_nano=NOW, count=0)
    (row,) = rows_of(convert(request(m)))
    assert (row["sum"], row["min"], row["max"]) == (None, None, None)
    assert parse_array(row["explicitbounds"]) == []
    assert parse_array(row["bucketcounts"]) == []


def test_exponential_histogram_point_fills_its_columns() -> None:
    """An exponential histogram point: scale, zero bucket, both bucket ranges, count/sum/min/max."""
    m = Metric(name="exp", unit="s")
    m.exponential_histogram.aggregation_temporality = 1
    p = m.exponential_histogram.data_points.add(
        time_unix_nano=NOW, count=10, scale=-3, zero_count=2, zero_threshold=1e-9
    )
    p.sum, p.min, p.max = 4.5, -1.0, 2.0
    p.positive.offset = 5
    p.positive.bucket_counts.extend([1, 2, 3])
    p.negative.offset = -2
    p.negative.bucket_counts.extend([4])
    (row,) = rows_of(convert(request(m)))
    assert (row["type"], row["temporality"]) == ("exponential_histogram", 1)
    assert (row["count"], row["sum"], row["min"], row["max"]) == (10, 4.5, -1.0, 2.0)
    assert (row["scale"], row["zerocount"], row["zerothreshold"]) == (-3, 2, 1e-9)
    assert (row["positiveoffset"], parse_array(row["positivebucketcounts"])) == (5, [1, 2, 3])
    assert (row["negativeoffset"], parse_array(row["negativebucketcounts"])) == (-2, [4])
    assert row["explicitbounds"] is None


def test_summary_point_fills_its_columns() -> None:
    """A summary point: count, sum and the quantile/value pairs in order."""
    m = Metric(name="rpc", unit="ms")
    p = m.summary.data_points.add(time_unix_nano=NOW, count=100, sum=2500.0)
    for q, v in ((0.0, 1.0), (0.5, 20.0), (0.99, 95.5), (1.0, 120.0)):
        p.quantile_values.add(quantile=q, value=v)
    (row,) = rows_of(convert(request(m)))
    assert (row["type"], row["count"], row["sum"], row["temporality"]) == (
        "summary",
        100,
        2500.0,
        None,
    )
    assert parse_array(row["quantiles"]) == [0.0, 0.5, 0.99, 1.0]
    assert parse_array(row["quantilevalues"]) == [1.0, 20.0, 95.5, 120.0]


def test_exemplars_are_stored_as_json() -> None:
    """Exemplars: time, value (int exact, NaN tagged), hex ids and filtered attributes."""
    m = gauge(1.0)
    point = m.gauge.data_points[0]
    e1 = point.exemplars.add(time_unix_nano=NOW - 5, as_int=2**60, span_id=b"\x01" * 8)
    e1.trace_id = b"\x02" * 16
    set_attributes(e1.filtered_attributes, {"user": "u1"})
    point.exemplars.add(time_unix_nano=NOW - 4, as_double=math.nan)
    (row,) = rows_of(convert(request(m)))
    assert json.loads(row["exemplars"][1:]) == [
        {
            "timeUnixNano": NOW - 5,
            "value": 2**60,
            "spanId": "01" * 8,
            "traceId": "02" * 16,
            "filteredAttributes": {"user": "u1"},
        },
        {
            "timeUnixNano": NOW - 4,
            "value": {"$double": "NaN"},
            "spanId": "",
            "traceId": "",
            "filteredAttributes": {},
        },
    ]


def test_metric_without_data_is_rejected_alone() -> None:
    """A metric with no data points type set is rejected (reason no_data); others are kept."""
    converted = convert(request(Metric(name="nothing"), gauge(1.0)))
    assert converted.items == 1
    assert converted.reject_reasons == {"no_data": 1}
    assert "'nothing'" in converted.reject_example


@pytest.mark.parametrize(
    ("time_unix_nano", "start", "reason"),
    [
        (0, 0, "timestamp_missing"),
        (NOW + 10**13, 0, "timestamp_in_future"),
        (2**64 - 1, 0, "timestamp_out_of_range"),
        (NOW, 2**63, "timestamp_out_of_range"),
    ],
)
def test_points_with_bad_times_are_rejected(time_unix_nano: int, start: int, reason: str) -> None:
    """A point with a missing, out-of-range or future time is rejected alone."""
    m = gauge(1.0, 2.0)
    m.gauge.data_points[1].time_unix_nano = time_unix_nano
    m.gauge.data_points[1].start_time_unix_nano = start
    converted = convert(request(m))
    assert [r["value"] for r in rows_of(converted)] == [1.0]
    assert converted.reject_reasons == {reason: 1}


@pytest.mark.parametrize(
    "make",
    [
        lambda p: setattr(p, "count", 2**63),
        lambda p: p.bucket_counts.extend([1, 2**64 - 1]),
    ],
)
def test_uint64_counts_beyond_bigint_are_rejected(make: Any) -> None:
    """Counts that do not fit a bigint reject their point only."""
    m = Metric(name="h")
    good = m.histogram.data_points.add(time_unix_nano=NOW, count=1)
    good.bucket_counts.append(1)
    make(m.histogram.data_points.add(time_unix_nano=NOW))
    converted = convert(request(m))
    assert converted.items == 1
    assert converted.reject_reasons == {"count_out_of_range": 1}


def test_exponential_zero_count_beyond_bigint_is_rejected() -> None:
    """An exponential histogram zero_count beyond bigint rejects the point."""
    m = Metric(name="e")
    m.exponential_histogram.data_points.add(time_unix_nano=NOW, zero_count=2**63)
    converted = convert(request(m))
    assert (converted.items, converted.reject_reasons) == (0, {"count_out_of_range": 1})


def test_series_attributes_are_cached_across_requests() -> None:
    """The same series in two requests yields identical attribute bytes (the memo is correct)."""
    encoder = AttributeEncoder()
    first = metrics.convert(request(gauge(1.0)), encoder, max_time_unix_nano=NOW + 1)
    second = metrics.convert(request(gauge(2.0)), encoder, max_time_unix_nano=NOW + 1)
    attributes = COLUMN["attributes"]
    assert first.payload.rows[0][attributes] == second.payload.rows[0][attributes]
    assert json.loads(second.payload.rows[0][attributes][1:]) == {"room": "a", "floor": 2}


def test_nul_in_metric_name_is_replaced() -> None:
    """NUL in the metric name, unit and description becomes U+FFFD and is counted."""
    m = gauge(1.0)
    m.name, m.unit, m.description = "a\x00", "\x00", "d\x00"
    converted = convert(request(m))
    (row,) = rows_of(converted)
    assert (row["name"], row["unit"]) == ("a\ufffd", "\ufffd")
    assert converted.nul_replaced == 3
