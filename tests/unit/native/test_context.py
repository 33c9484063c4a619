"""Native vs Python on the inputs main's reference added: the application identity's edge
cases (all three signals), registered application ids (the override), the bucket cap, and
logs not routed by attributes."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

from ingestd.convert.identity import service_identity
from ingestd.model import Signal
from tests.fuzz.differential import LIMITS, NOT_ROUTED, NOW_NS, compare

T = NOW_NS - 10**9
CAP = LIMITS.max_buckets_per_point


def _kv(key: str, **value: object) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(**value))


# Each resource's attributes; tests/unit/convert/test_identity.py holds the rules.
IDENTITIES: dict[str, list[common_pb2.KeyValue]] = {
    "missing": [],
    "empty name": [_kv("service.name", string_value="")],
    "unset name": [_kv("service.name")],
    "int name": [_kv("service.name", int_value=42)],
    "bool name": [_kv("service.name", bool_value=True)],
    "double name": [_kv("service.name", double_value=1.5)],
    "array name": [
        _kv(
            "service.name",
            array_value=common_pb2.ArrayValue(values=[common_pb2.AnyValue(string_value="a")]),
        )
    ],
    "kvlist name": [
        _kv(
            "service.name",
            kvlist_value=common_pb2.KeyValueList(values=[_kv("k", int_value=1)]),
        )
    ],
    "bytes name": [_kv("service.name", bytes_value=b"\x00\xff")],
    "unicode": [
        _kv("service.name", string_value="caf\u00e9-\U0001f600"),
        _kv("service.namespace", string_value="\u00fc"),
    ],
    "repeated key": [_kv("service.name", string_value="a"), _kv("service.name", string_value="b")],
    "empty environment falls back": [
        _kv("service.name", string_value="s"),
        _kv("deployment.environment", string_value=""),
        _kv("deployment.environment.name", string_value="prod"),
    ],
    "old environment wins": [
        _kv("deployment.environment", string_value="old"),
        _kv("deployment.environment.name", string_value="new"),
    ],
    "empty namespace": [_kv("service.namespace", string_value="")],
    "NUL": [_kv("service.name", string_value="a\x00b")],
}


def _request(signal: Signal, attributes: list[common_pb2.KeyValue]) -> bytes:
    if signal is Signal.TRACES:
        traces = trace_service_pb2.ExportTraceServiceRequest()
        rs = traces.resource_spans.add()
        rs.resource.attributes.extend(attributes)
        span = rs.scope_spans.add().spans.add(name="s", start_time_unix_nano=T)
        span.trace_id, span.span_id, span.end_time_unix_nano = b"\x01" * 16, b"\x02" * 8, T + 1
        return traces.SerializeToString()
    if signal is Signal.METRICS:
        metrics = metrics_service_pb2.ExportMetricsServiceRequest()
        rm = metrics.resource_metrics.add()
        rm.resource.attributes.extend(attributes)
        gauge = rm.scope_metrics.add().metrics.add(name="g", description="d")
        gauge.gauge.data_points.add(time_unix_nano=T, as_int=1)
        return metrics.SerializeToString()
    logs = logs_service_pb2.ExportLogsServiceRequest()
    rl = logs.resource_logs.add()
    rl.resource.attributes.extend(attributes)
    rl.scope_logs.add().log_records.add(time_unix_nano=T)
    return logs.SerializeToString()


@pytest.mark.parametrize("signal", list(Signal))
@pytest.mark.parametrize("case", sorted(IDENTITIES))
def test_identity_edge_case_is_identical(signal: Signal, case: str) -> None:
    """Every identity edge case gives the same application id (and row) in both codecs."""
    out = compare(signal, _request(signal, IDENTITIES[case]))
    assert out["items"] == 1
    if signal is not Signal.LOGS:
        identity = service_identity(IDENTITIES[case])
        assert list(out["applications"]) == [identity.application_id]


@pytest.mark.parametrize("signal", [Signal.TRACES, Signal.METRICS])
@pytest.mark.parametrize("app", ["0123456789abcdef", "de_alpha", "\u00fcnicode-app"])
def test_registered_application_id_is_identical(signal: Signal, app: str) -> None:
    """An override id: on every row, no applications row; metric descriptions keyed by it."""
    out = compare(signal, _request(signal, IDENTITIES["unicode"]), application_id=app)
    assert out["applications"] == {}
    assert out["items"] == 1
    if signal is Signal.METRICS:
        assert list(out["descriptions"]) == [(app, "g")]


def test_registered_application_logs_are_identical() -> None:
    """A registered application's logs: the same documents from both codecs, in the
    application's namespace."""
    out = compare(Signal.LOGS, _request(Signal.LOGS, IDENTITIES["unicode"]), application_id="a1")
    assert b'"application_id":"a1"' in out["data"]
    assert b'"_index":"logs-app.otel-a1"' in out["data"]


@pytest.mark.parametrize("case", sorted(IDENTITIES))
def test_logs_not_routed_by_attributes_are_identical(case: str) -> None:
    """routing.from_attributes off: the native logs path production uses, data_stream.*
    attributes kept as plain attributes in both codecs."""
    attributes = [*IDENTITIES[case], _kv("data_stream.namespace", string_value="other")]
    out = compare(Signal.LOGS, _request(Signal.LOGS, attributes), routing=NOT_ROUTED)
    assert b"logs-app.otel-prod" in out["data"]
    assert b'"data_stream.namespace"' in out["data"]


def _metric(kind: str, n: int) -> metrics_pb2.Metric:
    metric = metrics_pb2.Metric(name=f"{kind}-{n}")
    if kind == "histogram":
        metric.histogram.aggregation_temporality = 2
        metric.histogram.data_points.add(
            time_unix_nano=T,
            count=n,
            explicit_bounds=[float(i) for i in range(max(n - 1, 0))],
            bucket_counts=[1] * n,
        )
    elif kind == "bounds":
        metric.histogram.aggregation_temporality = 2
        metric.histogram.data_points.add(
            time_unix_nano=T, explicit_bounds=[float(i) for i in range(n)], bucket_counts=[0]
        )
    elif kind in ("positive", "negative"):
        metric.exponential_histogram.aggregation_temporality = 1
        point = metric.exponential_histogram.data_points.add(time_unix_nano=T, count=n)
        getattr(point, kind).bucket_counts.extend([1] * n)
    else:
        metric.summary.data_points.add(
            time_unix_nano=T,
            quantile_values=[
                metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=i / max(n, 1), value=i)
                for i in range(n)
            ],
        )
    return metric


@pytest.mark.parametrize("kind", ["histogram", "bounds", "positive", "negative", "summary"])
def test_bucket_cap_is_identical(kind: str) -> None:
    """At the cap a point is stored, one over it is refused alone (too_many_buckets), with the
    same example message, in both codecs."""
    request = metrics_service_pb2.ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.scope_metrics.add().metrics.extend(
        [_metric(kind, CAP), _metric(kind, CAP + 1), _metric(kind, 0)]
    )
    out = compare(Signal.METRICS, request.SerializeToString())
    assert (out["items"], out["rejected"]) == (2, 1)
    assert out["reasons"] == {"too_many_buckets": 1}
    assert "ingest.max_buckets_per_point" in out["example"]
