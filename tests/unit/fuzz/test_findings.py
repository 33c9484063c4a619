"""Regression tests: one per bug the fuzzers and the hand-made hostile inputs found.

Each runs the input through `tests.fuzz.targets.Target` (inflate, decode, convert, and the
oracle that rows fit their PostgreSQL columns) and checks the documented outcome.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from ingestd.convert import copy_binary, metrics, traces
from ingestd.convert.common import INT32_MAX
from ingestd.model import Signal
from tests.fuzz.targets import NOW_NS, Outcome, Target, converters

TRACE_ID = bytes(range(1, 17))
SPAN_ID = bytes(range(21, 29))
SPAN_COLUMN = {name: i for i, (name, _) in enumerate(traces.COLUMNS)}
METRIC_COLUMN = {name: i for i, (name, _) in enumerate(metrics.COLUMNS)}


def trace_request(span: Span, resource: Resource | None = None) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=[span])])]
    )


def good_span(**fields: Any) -> Span:
    return Span(
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        name="op",
        start_time_unix_nano=NOW_NS - 10**9,
        end_time_unix_nano=NOW_NS,
        **fields,
    )


def span_row(span: Span, resource: Resource | None = None) -> tuple[Any, ...]:
    converted = converters()[Signal.TRACES](trace_request(span, resource))
    assert converted.items == 1, converted.reject_example
    row: tuple[Any, ...] = copy_binary.decode(converted.payload, traces.TYPES)[0]
    return row


@pytest.mark.parametrize(
    "fields",
    [{"kind": 2**15}, {"kind": -(2**15) - 1}, {"status": Status(code=70_000)}],
    ids=["kind-above-int16", "kind-below-int16", "status-code-above-int16"],
)
def test_span_enum_beyond_smallint_is_rejected_not_truncated(fields: dict[str, Any]) -> None:
    """A span kind or status code beyond smallint is refused alone (psycopg would truncate it)."""
    body = trace_request(good_span(**fields)).SerializeToString()
    assert Target().protobuf(Signal.TRACES, body) == Outcome(200, items=0, rejected=1)


def test_span_enum_at_smallint_edge_is_stored() -> None:
    """Kind 32767 still fits smallint and is stored as sent."""
    assert span_row(good_span(kind=2**15 - 1))[SPAN_COLUMN["kind"]] == 2**15 - 1


def test_uint32_dropped_counts_saturate_at_int4_max() -> None:
    """Dropped counts beyond integer are stored as 2^31-1, never wrapped to a negative number."""
    row = span_row(
        good_span(
            dropped_attributes_count=2**32 - 1,
            dropped_events_count=2**31,
            dropped_links_count=7,
        )
    )
    assert row[SPAN_COLUMN["droppedattributescount"]] == INT32_MAX
    assert row[SPAN_COLUMN["droppedeventscount"]] == INT32_MAX
    assert row[SPAN_COLUMN["droppedlinkscount"]] == 7


def test_resource_dropped_count_saturates_at_int4_max() -> None:
    """A resource's dropped_attributes_count beyond integer is stored as 2^31-1."""
    resource = Resource(dropped_attributes_count=2**32 - 1)
    converted = converters()[Signal.TRACES](trace_request(good_span(), resource))
    ((_attrs, dropped, _url),) = converted.payload.resources.values()
    assert dropped == INT32_MAX


def test_uint32_flags_keep_their_bits_as_signed_int4() -> None:
    """Span flags with the top bit set are stored as the same 32 bits read as int4."""
    row = span_row(good_span(flags=0xFFFF_FFFF))
    assert row[SPAN_COLUMN["flags"]] == -1
    assert row[SPAN_COLUMN["flags"]] & 0xFFFF_FFFF == 0xFFFF_FFFF


def test_metric_temporality_beyond_smallint_rejects_its_points() -> None:
    """A sum whose temporality does not fit smallint refuses each of its points alone."""
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="m")
    metric.sum.aggregation_temporality = 40_000  # type: ignore[assignment]
    for _ in range(3):
        metric.sum.data_points.add(time_unix_nano=NOW_NS - 1, as_int=1)
    good = request.resource_metrics[0].scope_metrics[0].metrics.add(name="g")
    good.gauge.data_points.add(time_unix_nano=NOW_NS - 1, as_int=2, flags=2**31)
    converted = converters()[Signal.METRICS](request)
    assert (converted.items, converted.rejected) == (1, 3)
    assert converted.reject_reasons == {"enum_out_of_range": 3}
    row = copy_binary.decode(converted.payload, metrics.TYPES)[0]
    assert row[METRIC_COLUMN["flags"]] == -(2**31)


def _nested_json(depth: int, kind: str) -> dict[str, Any]:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(depth):
        if kind == "kvlist":
            value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
        else:
            value = {"arrayValue": {"values": [value]}}
    return value


def _dumps_deep(document: dict[str, Any]) -> bytes:
    # The stdlib encoder recurses once per level; orjson (used elsewhere) stops at 255.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)
    try:
        return json.dumps(document).encode()
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.parametrize("signal", [Signal.TRACES, Signal.METRICS])
def test_json_resource_deeper_than_protobuf_allows_is_400(signal: Signal) -> None:
    """OTLP/JSON nested past protobuf's 100 levels is a 400, not an internal error (503)."""
    resource = {"attributes": [{"key": "deep", "value": _nested_json(60, "kvlist")}]}
    if signal is Signal.TRACES:
        document: dict[str, Any] = {"resourceSpans": [{"resource": resource}]}
    else:
        document = {"resourceMetrics": [{"resource": resource}]}
    assert Target().json(signal, _dumps_deep(document)).http_status == 400


def test_logs_resource_deeper_than_json_encoder_refuses_its_records() -> None:
    """Logs whose resource nests past orjson's 254 levels are refused as partial success."""
    resource = {"attributes": [{"key": "deep", "value": _nested_json(300, "array")}]}
    record = {"timeUnixNano": str(NOW_NS - 1), "body": {"stringValue": "x"}}
    document = {
        "resourceLogs": [
            {"resource": resource, "scopeLogs": [{"logRecords": [record, record]}]},
            {"scopeLogs": [{"logRecords": [record]}]},
        ]
    }
    assert Target().json(Signal.LOGS, _dumps_deep(document)) == Outcome(200, items=1, rejected=2)


def test_attribute_with_sql_and_es_syntax_is_plain_data() -> None:
    """Keys and values that look like SQL or query syntax are encoded as plain JSON strings."""
    span = good_span(
        attributes=[
            KeyValue(key="'; DROP TABLE traces; --", value={"string_value": "*:* OR _id:*"})
        ]
    )
    attrs = span_row(span)[SPAN_COLUMN["attributes"]]
    assert json.loads(attrs[1:]) == {"'; DROP TABLE traces; --": "*:* OR _id:*"}
