"""SDK-shaped OTLP requests for tests and benchmarks: realistic attributes, unique ids."""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

_counter = itertools.count()

RESOURCE = {
    "service.name": "checkout",
    "service.namespace": "shop",
    "deployment.environment": "test",
    "service.version": "1.4.2",
    "telemetry.sdk.language": "python",
    "telemetry.sdk.name": "opentelemetry",
    "telemetry.sdk.version": "1.25.0",
    "host.name": "checkout-7d9f",
    "process.pid": 4242,
}


def set_value(target: AnyValue, value: Any) -> None:
    """Fill an AnyValue from a Python value (bool, int, float, str, bytes, list, dict, None)."""
    if value is None:
        return
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bytes):
        target.bytes_value = value
    elif isinstance(value, list):
        target.array_value.SetInParent()
        for item in value:
            set_value(target.array_value.values.add(), item)
    elif isinstance(value, dict):
        target.kvlist_value.SetInParent()
        for key, item in value.items():
            set_value(add_kv(target.kvlist_value.values, key), item)
    else:
        raise TypeError(type(value))


def add_kv(kvs: Any, key: str) -> AnyValue:
    kv: KeyValue = kvs.add()
    kv.key = key
    value: AnyValue = kv.value
    return value


def set_attributes(kvs: Any, attributes: dict[str, Any]) -> None:
    for key, value in attributes.items():
        set_value(add_kv(kvs, key), value)


def bare_spans_request(n: int) -> ExportTraceServiceRequest:
    """*n* spans with a name and nothing else: for code that only counts items."""
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for i in range(n):
        scope.spans.add(name=f"s{i}")
    return request


def histogram_request(name: str, buckets: int) -> ExportMetricsServiceRequest:
    """One cumulative histogram point with *buckets* bucket counts (all zero): the huge ones
    are what the hostile-input tests and benchmark send."""
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name=name)
    metric.histogram.aggregation_temporality = 2
    metric.histogram.data_points.add(
        time_unix_nano=time.time_ns(), count=1, bucket_counts=[0] * buckets
    )
    return request


def span_request(
    spans: int = 512, *, tag: str = "", start_ns: int | None = None
) -> ExportTraceServiceRequest:
    """An SDK-like request: one resource, one scope, *spans* HTTP server spans."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    set_attributes(rs.resource.attributes, RESOURCE)
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.flask"
    ss.scope.version = "0.46b0"
    base = start_ns or time.time_ns() - 10_000_000_000
    for i in range(spans):
        n = next(_counter)
        span = ss.spans.add()
        span.trace_id = os.urandom(16)
        span.span_id = os.urandom(8)
        if i % 4:
            span.parent_span_id = os.urandom(8)
        span.name = f"GET /api/items/{{id}}{tag}"
        span.kind = Span.SPAN_KIND_SERVER
        span.start_time_unix_nano = base + i * 1000
        span.end_time_unix_nano = base + i * 1000 + 1_234_567
        span.flags = 0x100
        set_attributes(
            span.attributes,
            {
                "http.method": "GET",
                "http.route": "/api/items/{id}",
                "http.target": f"/api/items/{n % 1000}",
                "http.scheme": "http",
                "http.status_code": 200,
                "net.host.name": "checkout",
                "net.peer.ip": "10.0.3.17",
                "http.user_agent": "python-requests/2.31",
                "http.flavor": "1.1",
                "ingestd.test.tag": tag,
            },
        )
        span.status.code = 1 if i % 10 else 2
        if i % 16 == 0:
            event = span.events.add()
            event.time_unix_nano = base + i * 1000 + 500
            event.name = "exception"
            set_attributes(event.attributes, {"exception.type": "ValueError"})
    return request


def metric_request(
    series: int = 64, *, tag: str = "", time_ns: int | None = None
) -> ExportMetricsServiceRequest:
    """An SDK-like request: *series* sum points, *series* gauge points, a few histograms."""
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    set_attributes(rm.resource.attributes, RESOURCE)
    sm = rm.scope_metrics.add()
    sm.scope.name = "app.metrics"
    now = time_ns or time.time_ns()
    counter = sm.metrics.add()
    counter.name, counter.unit = "http.server.requests", "1"
    counter.sum.aggregation_temporality = 2
    counter.sum.is_monotonic = True
    gauge = sm.metrics.add()
    gauge.name, gauge.unit = "process.memory.usage", "By"
    histogram = sm.metrics.add()
    histogram.name, histogram.unit = "http.server.duration", "ms"
    histogram.histogram.aggregation_temporality = 2
    for i in range(series):
        attrs = {"http.route": f"/api/r{i}", "http.method": "GET", "tag": tag}
        point = counter.sum.data_points.add()
        point.time_unix_nano, point.start_time_unix_nano = now, now - 60_000_000_000
        point.as_int = 1000 + i
        set_attributes(point.attributes, attrs)
        g = gauge.gauge.data_points.add()
        g.time_unix_nano = now
        g.as_double = 1.5 * i
        set_attributes(g.attributes, attrs)
        if i % 8 == 0:
            h = histogram.histogram.data_points.add()
            h.time_unix_nano, h.start_time_unix_nano = now, now - 60_000_000_000
            h.count, h.sum = 10, 123.5
            h.explicit_bounds.extend([5, 10, 25, 50, 100, 250, 500, 1000])
            h.bucket_counts.extend([1, 2, 3, 0, 0, 4, 0, 0, 0])
            set_attributes(h.attributes, attrs)
    return request
