"""Native vs Python metrics codec: byte-identical COPY payloads, rejects and dimension rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

from ingestd.model import Signal
from ingestd.receiver.otlp_json import parse_json
from tests.fuzz import strategies
from tests.fuzz.differential import NOW_NS, compare
from tests.wire import mutated

EXAMPLES = Path(__file__).parents[2] / "data" / "otlp-examples"
T = NOW_NS - 10**9


def _kv(key: str, **value: object) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(**value))


def _body(*metrics: metrics_pb2.Metric) -> bytes:
    request = metrics_service_pb2.ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.append(_kv("service.name", string_value="api"))
    sm = rm.scope_metrics.add(schema_url="u")
    sm.scope.name = "meter"
    sm.metrics.extend(metrics)
    return request.SerializeToString()


def test_example_file_is_identical() -> None:
    """The opentelemetry-proto metrics example converts to the same bytes in both codecs."""
    request = parse_json(Signal.METRICS, (EXAMPLES / "metrics.json").read_bytes())
    out = compare(Signal.METRICS, request.SerializeToString())
    assert out["items"] >= 4


EXEMPLAR = metrics_pb2.Exemplar(
    time_unix_nano=T,
    as_double=float("nan"),
    span_id=b"\x01" * 8,
    filtered_attributes=[_kv("k\x00", string_value="\x00")],
)
HOSTILE = {
    "gauge values": metrics_pb2.Metric(
        name="g\x00",
        unit="1",
        gauge=metrics_pb2.Gauge(
            data_points=[
                metrics_pb2.NumberDataPoint(time_unix_nano=T, as_int=-(2**63)),
                metrics_pb2.NumberDataPoint(
                    time_unix_nano=T, as_double=float("-inf"), flags=2**32 - 1
                ),
                metrics_pb2.NumberDataPoint(time_unix_nano=T, exemplars=[EXEMPLAR]),
                metrics_pb2.NumberDataPoint(time_unix_nano=0),
                metrics_pb2.NumberDataPoint(time_unix_nano=T, start_time_unix_nano=2**63),
                metrics_pb2.NumberDataPoint(time_unix_nano=NOW_NS + 10**15, as_int=1),
            ]
        ),
    ),
    "sum": metrics_pb2.Metric(
        name="s",
        sum=metrics_pb2.Sum(
            aggregation_temporality=2,
            is_monotonic=True,
            data_points=[
                metrics_pb2.NumberDataPoint(
                    time_unix_nano=T,
                    start_time_unix_nano=T - 5,
                    as_int=7,
                    attributes=[_kv("a", double_value=1e16)],
                )
            ],
        ),
    ),
    "sum temporality overflow": metrics_pb2.Metric(
        name="s2",
        sum=metrics_pb2.Sum(
            aggregation_temporality=40000,
            data_points=[metrics_pb2.NumberDataPoint(time_unix_nano=T)] * 2,
        ),
    ),
    "histogram": metrics_pb2.Metric(
        name="h",
        histogram=metrics_pb2.Histogram(
            aggregation_temporality=1,
            data_points=[
                metrics_pb2.HistogramDataPoint(
                    time_unix_nano=T,
                    count=3,
                    sum=1.5,
                    min=0.0,
                    bucket_counts=[1, 2],
                    explicit_bounds=[0.5],
                    exemplars=[EXEMPLAR],
                ),
                metrics_pb2.HistogramDataPoint(time_unix_nano=T, count=2**63),
                metrics_pb2.HistogramDataPoint(time_unix_nano=T, bucket_counts=[2**64 - 1]),
                metrics_pb2.HistogramDataPoint(time_unix_nano=T),
            ],
        ),
    ),
    "exponential": metrics_pb2.Metric(
        name="e",
        exponential_histogram=metrics_pb2.ExponentialHistogram(
            aggregation_temporality=2,
            data_points=[
                metrics_pb2.ExponentialHistogramDataPoint(
                    time_unix_nano=T,
                    count=4,
                    scale=-3,
                    zero_count=1,
                    zero_threshold=1e-9,
                    positive=metrics_pb2.ExponentialHistogramDataPoint.Buckets(
                        offset=-2, bucket_counts=[1, 2]
                    ),
                    negative=metrics_pb2.ExponentialHistogramDataPoint.Buckets(offset=3),
                    max=9.0,
                ),
                metrics_pb2.ExponentialHistogramDataPoint(time_unix_nano=T, zero_count=2**64 - 1),
                metrics_pb2.ExponentialHistogramDataPoint(
                    time_unix_nano=T,
                    negative=metrics_pb2.ExponentialHistogramDataPoint.Buckets(
                        bucket_counts=[2**63]
                    ),
                ),
            ],
        ),
    ),
    "summary": metrics_pb2.Metric(
        name="q",
        summary=metrics_pb2.Summary(
            data_points=[
                metrics_pb2.SummaryDataPoint(
                    time_unix_nano=T,
                    count=2,
                    sum=3.0,
                    quantile_values=[
                        metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=1.0)
                    ],
                ),
                metrics_pb2.SummaryDataPoint(time_unix_nano=T),
            ]
        ),
    ),
    "no data": metrics_pb2.Metric(name="n\x00", unit="x"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_metric_is_identical(case: str) -> None:
    """Each hostile metric gets the same rows and rejects from both codecs."""
    compare(Signal.METRICS, _body(HOSTILE[case], HOSTILE["sum"]))


def test_all_metrics_together_are_identical() -> None:
    """Every hostile metric in one request, with an application id override."""
    compare(Signal.METRICS, _body(*HOSTILE.values()), application_id="feedfacefeedface")


def test_merged_and_switched_data_are_identical() -> None:
    """A data field sent twice merges; a different kind after it replaces it."""
    gauge = metrics_pb2.Metric(
        name="m",
        gauge=metrics_pb2.Gauge(data_points=[metrics_pb2.NumberDataPoint(time_unix_nano=T)]),
    )
    twice = gauge.SerializeToString() + metrics_pb2.Metric(gauge=gauge.gauge).SerializeToString()
    switched = twice + metrics_pb2.Metric(summary=metrics_pb2.Summary()).SerializeToString()
    for raw in (twice, switched):
        scope_metrics = b"\x12" + bytes([len(raw)]) + raw
        resource_metrics = b"\x12" + bytes([len(scope_metrics)]) + scope_metrics
        out = compare(Signal.METRICS, b"\x0a" + bytes([len(resource_metrics)]) + resource_metrics)
        assert out["items"] + out["rejected"] == (2 if raw is twice else 0)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(strategies.METRICS)
def test_generated_requests_are_identical(
    request: metrics_service_pb2.ExportMetricsServiceRequest,
) -> None:
    """Hypothesis-built requests (tests/fuzz/strategies.py) convert identically."""
    compare(Signal.METRICS, request.SerializeToString())


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(strategies.METRICS, st.data())
def test_mutated_requests_are_identical(
    request: metrics_service_pb2.ExportMetricsServiceRequest, data: st.DataObject
) -> None:
    """Generated requests with bytes flipped, cut or inserted: same verdict and same output."""
    compare(Signal.METRICS, mutated(request.SerializeToString(), data))
