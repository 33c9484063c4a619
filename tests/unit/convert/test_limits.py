"""Structural caps on the wire (convert.limits) and the per-point bucket cap of metrics."""

from __future__ import annotations

import gzip
import time

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingestd.convert import metrics
from ingestd.convert.common import AttributeEncoder
from ingestd.convert.limits import RequestLimits, Shape, check_shape, check_structure, shape_of
from ingestd.errors import PayloadTooLarge

SMALL = RequestLimits(max_resources=3, max_scopes=5, max_items=10, max_buckets_per_point=4)
NOW = 1_700_000_000_000_000_000


def _len(payload: bytes) -> bytes:
    """A length-delimited field 1/2 prefix is built by protobuf itself; this is its varint."""
    out = bytearray()
    n = len(payload)
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_counts_match_the_parsed_request_for_every_signal() -> None:
    """The wire walk counts what parsing would hold: resources, scopes and records."""
    traces = ExportTraceServiceRequest()
    for r in range(2):
        rs = traces.resource_spans.add(schema_url="u")
        rs.resource.attributes.add(key="service.name").value.string_value = f"s{r}"
        for _ in range(2):
            ss = rs.scope_spans.add()
            ss.scope.name = "lib"
            for i in range(3):
                ss.spans.add(name="x" * (200 * i), trace_id=bytes(16), start_time_unix_nano=1)
    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "hi"
    logs.resource_logs.add()
    points = ExportMetricsServiceRequest()
    sm = points.resource_metrics.add().scope_metrics.add()
    sm.metrics.add(name="g").gauge.data_points.add(as_int=1)
    hist = sm.metrics.add(name="h").histogram
    hist.data_points.add(count=1, bucket_counts=[1, 0], explicit_bounds=[1.0])
    hist.data_points.add(count=2)
    sm.metrics.add(name="empty")
    for signal, request in (("traces", traces), ("logs", logs), ("metrics", points)):
        body = request.SerializeToString()
        wire = check_structure(signal, body, RequestLimits(), count_records=True)
        assert wire == shape_of(signal, request)
    body = traces.SerializeToString()
    assert check_structure("traces", body, RequestLimits(), count_records=True) == Shape(2, 4, 12)
    assert check_structure("traces", body, RequestLimits()) == Shape(2, 4, 0), "too small"
    body = points.SerializeToString()
    assert check_structure("metrics", body, RequestLimits(), count_records=True) == Shape(1, 1, 3)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"\x0a\x00" * 4, "more than 3 resources"),
        (b"\x0a\x06" + b"\x12\x00" * 3 + b"\x0a\x06" + b"\x12\x00" * 3, "more than 5 scopes"),
        (b"\x0a\x18\x12\x16" + b"\x12\x00" * 11, "more than 10 records"),
    ],
)
def test_each_cap_refuses_with_its_key(body: bytes, words: str) -> None:
    """Past a cap the request is PayloadTooLarge (413 / RESOURCE_EXHAUSTED), naming the key."""
    with pytest.raises(PayloadTooLarge, match=words):
        check_structure("logs", body, SMALL)


def test_a_64_mib_request_of_empty_resources_is_refused_after_walking_the_cap() -> None:
    """64 MiB of empty ResourceSpans (65 KB gzipped) stop the walk at 16,385 resources."""
    body = b"\x0a\x00" * (32 * 1024 * 1024)
    assert len(gzip.compress(body, compresslevel=9)) < 70_000
    began = time.perf_counter()
    with pytest.raises(PayloadTooLarge, match="16384 resources"):
        check_structure("traces", body, RequestLimits())
    print(f"refused in {(time.perf_counter() - began) * 1000:.1f} ms")


def test_records_in_one_huge_scope_stop_at_the_items_cap() -> None:
    """Millions of empty log records in one scope are refused once the count passes the cap."""
    records = b"\x12\x00" * 40
    scope = b"\x12" + _len(records) + records
    body = b"\x0a" + _len(scope) + scope
    with pytest.raises(PayloadTooLarge, match="more than 10 records"):
        check_structure("logs", body, SMALL)


def test_malformed_bytes_are_left_to_the_parser() -> None:
    """A length running past the end stops the walk without an error; the parser refuses it."""
    assert check_structure("traces", b"\x0a\x7f\x12", RequestLimits()) == Shape(0, 0, 0)
    assert check_structure("traces", b"\xff\xff\xff", RequestLimits()) == Shape()


def test_check_shape_applies_the_same_caps_to_a_parsed_request() -> None:
    """OTLP/JSON requests are counted once parsed, against the same caps."""
    with pytest.raises(PayloadTooLarge, match="more than 10 records"):
        check_shape(Shape(1, 1, 11), SMALL)
    check_shape(Shape(3, 5, 10), SMALL)


def test_histogram_over_the_bucket_cap_is_refused_alone() -> None:
    """A histogram point with more buckets than max_buckets_per_point is rejected by itself."""
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="h")
    metric.histogram.aggregation_temporality = 2
    metric.histogram.data_points.add(time_unix_nano=NOW, count=1, bucket_counts=[1] * 5)
    metric.histogram.data_points.add(time_unix_nano=NOW, count=1, bucket_counts=[1] * 4)
    summary = request.resource_metrics[0].scope_metrics[0].metrics.add(name="s").summary
    point = summary.data_points.add(time_unix_nano=NOW, count=1)
    for q in range(5):
        point.quantile_values.add(quantile=q / 5, value=1.0)
    converted = metrics.convert(
        request,
        AttributeEncoder(),
        max_time_unix_nano=NOW + 1,
        limits=RequestLimits(max_buckets_per_point=4),
    )
    assert converted.items == 1
    assert converted.reject_reasons == {"too_many_buckets": 2}
    assert "5 bucket_counts, over 4" in converted.reject_example


def test_large_arrays_pin_no_packer() -> None:
    """Arrays of many distinct large lengths leave no packer behind (small ones are cached)."""
    metrics._array_struct.cache_clear()
    for n in range(20_000, 20_010):
        assert len(metrics.int8_array([1] * n)) == 20 + 12 * n
    metrics.float8_array([1.0] * 16)
    assert metrics._array_struct.cache_info().currsize == 1
