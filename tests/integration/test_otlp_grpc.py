"""OTLP/gRPC into TimescaleDB with real clients: what is sent is what is stored, field by field.

The official OpenTelemetry Python SDK exporters send; the request they send is rebuilt with the
SDK's own encoder and compared, point by point, with the rows read back.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tests.harness import config_text, query, retry_delay_s, running, stubs
from tests.integration import oracle
from tests.samples import metric_request, set_attributes, span_request

pytestmark = pytest.mark.integration

EVERY_KIND: dict[str, Any] = {
    "str": "text é ✓",
    "bool": True,
    "int": 2**62 + 1,
    "int.min": -(2**63),
    "double": 0.1,
    "double.whole": 2.0,
    "double.nan": math.nan,
    "double.inf": math.inf,
    "double.ninf": -math.inf,
    "bytes": bytes(range(256)),
    "array.int": [1, 2, 3],
    "array.str": ["a", "b"],
    "map": {"nested": {"list": [1.5, True, "x"]}, "n": 7},
    "nul": "a\x00b",
}


def sdk_spans(tag: str) -> list[ReadableSpan]:
    """Spans made by the SDK: server parent with events and status, a client child with a link."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": "sdk-test", "service.namespace": "it", "deployment.environment": "ci"}
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer(
        "tests.sdk", "9.9", schema_url="https://opentelemetry.io/schemas/1.21.0"
    )
    with tracer.start_as_current_span("linked", attributes={"tag": tag}) as linked:
        pass
    with tracer.start_as_current_span(
        f"parent {tag}", kind=SpanKind.SERVER, attributes=EVERY_KIND
    ) as parent:
        parent.add_event("exception", {"exception.type": "ValueError", "n": 2**60})
        parent.add_event("plain")
        parent.set_status(Status(StatusCode.ERROR, "boom"))
        with tracer.start_as_current_span(
            "child",
            kind=SpanKind.CLIENT,
            links=[Link(linked.get_span_context(), {"link.attr": [True, False]})],
        ):
            pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def export_spans(target: str, spans: list[ReadableSpan], **options: Any) -> SpanExportResult:
    exporter = OTLPSpanExporter(endpoint=target, insecure=True, timeout=20, **options)
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


TRACE_COLUMNS = (
    "traceid, spanid, parentspanid, tracestate, flags, name, kind, statuscode, statusmessage, "
    "starttime, endtime, starttimeunixnano, durationnano, attributes, events, links, "
    "droppedattributescount, droppedeventscount, droppedlinkscount, applicationid, resourceid, "
    "scopeid"
)


def assert_span_stored(dsn: str, span: Any) -> None:
    """The one row for *span* holds every field of it (per docs/design.md)."""
    rows = query(dsn, f"SELECT {TRACE_COLUMNS} FROM traces WHERE spanid = %s", span.span_id)
    assert len(rows) == 1, f"span {span.name!r} stored {len(rows)} times"
    row = dict(zip([c.strip() for c in TRACE_COLUMNS.split(",")], rows[0], strict=True))
    assert (row["traceid"], row["spanid"]) == (span.trace_id, span.span_id)
    assert row["parentspanid"] == (span.parent_span_id or None)
    assert (row["tracestate"], row["flags"]) == (span.trace_state, span.flags)
    assert (row["name"], row["kind"]) == (span.name.replace("\x00", "\ufffd"), span.kind)
    assert (row["statuscode"], row["statusmessage"]) == (span.status.code, span.status.message)
    assert row["starttimeunixnano"] == span.start_time_unix_nano
    assert row["durationnano"] == span.end_time_unix_nano - span.start_time_unix_nano
    assert oracle.micros(row["starttime"]) == span.start_time_unix_nano // 1000
    assert oracle.micros(row["endtime"]) == span.end_time_unix_nano // 1000
    expected = oracle.attributes(span.attributes)
    if "nul" in expected:
        expected["nul"] = expected["nul"].replace("\x00", "\ufffd")
    assert row["attributes"] == expected
    events = [
        {
            "timeUnixNano": e.time_unix_nano,
            "name": e.name,
            "attributes": oracle.attributes(e.attributes),
            "droppedAttributesCount": e.dropped_attributes_count,
        }
        for e in span.events
    ]
    assert row["events"] == (events or None)
    links = [
        {
            "traceId": link.trace_id.hex(),
            "spanId": link.span_id.hex(),
            "traceState": link.trace_state,
            "flags": link.flags,
            "attributes": oracle.attributes(link.attributes),
            "droppedAttributesCount": link.dropped_attributes_count,
        }
        for link in span.links
    ]
    assert row["links"] == (links or None)
    assert (
        row["droppedattributescount"],
        row["droppedeventscount"],
        row["droppedlinkscount"],
    ) == (span.dropped_attributes_count, span.dropped_events_count, span.dropped_links_count)


async def test_sdk_spans_are_stored_field_by_field(timescale_db: str) -> None:
    """SDK spans with events, links and every attribute kind read back exactly as sent."""
    spans = sdk_spans("fields")
    sent = encode_spans(spans)
    async with running(config_text(timescale_db)) as ingestd:
        result = await asyncio.to_thread(export_spans, ingestd.target, spans)
    assert result is SpanExportResult.SUCCESS
    sent_spans = [s for rs in sent.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(sent_spans) == 3
    for span in sent_spans:
        assert_span_stored(timescale_db, span)
    (resource,) = sent.resource_spans
    (app,) = query(timescale_db, "SELECT id, name, namespace, environment FROM applications")
    assert app[1:] == ("sdk-test", "it", "ci")
    assert {r[0] for r in query(timescale_db, "SELECT applicationid FROM traces")} == {app[0]}
    (stored_resource,) = query(timescale_db, "SELECT attributes, schemaurl FROM resources")
    assert stored_resource == (oracle.attributes(resource.resource.attributes), resource.schema_url)
    (scope,) = query(timescale_db, "SELECT name, version, schemaurl FROM scopes")
    assert scope == ("tests.sdk", "9.9", "https://opentelemetry.io/schemas/1.21.0")
    nan_text = query(timescale_db, "SELECT attributes->>'int' FROM traces WHERE kind = 2")
    assert nan_text == [(str(2**62 + 1),)], "int64 beyond 2^53 is exact inside jsonb"


def sdk_metrics(tag: str) -> Any:
    """Every metric kind the SDK makes: sums (monotonic, not), gauges, histograms (both)."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        resource=Resource.create({"service.name": "sdk-metrics", "run": tag}),
        metric_readers=[reader],
        views=[View(instrument_name="it.exp", aggregation=ExponentialBucketHistogramAggregation())],
    )
    meter = provider.get_meter("tests.sdk.meter", "1.0")
    counter = meter.create_counter("it.requests", unit="1", description="requests served")
    counter.add(5, {"route": "/a", "tag": tag})
    counter.add(2**40, {"route": "/b", "tag": tag})
    meter.create_up_down_counter("it.queue").add(-3, {"tag": tag})
    meter.create_gauge("it.temperature", unit="Cel").set(21.5, {"room": "x", "tag": tag})
    meter.create_observable_gauge(
        "it.observed", callbacks=[lambda _options: [_observation(7, tag)]]
    )
    histogram = meter.create_histogram("it.latency", unit="ms")
    exponential = meter.create_histogram("it.exp", unit="s")
    tracer = TracerProvider().get_tracer("exemplars")
    with tracer.start_as_current_span("with-exemplar"):
        for v in (0.5, 3.0, 42.0, 1200.0):
            histogram.record(v, {"tag": tag})
            exponential.record(v, {"tag": tag})
        exponential.record(0.0, {"tag": tag})
    data = reader.get_metrics_data()
    provider.shutdown()
    return data


def _observation(value: int, tag: str) -> Any:
    from opentelemetry.metrics import Observation

    return Observation(value, {"tag": tag})


METRIC_COLUMNS = (
    "name, type, unit, value, intvalue, attributes, timestamp, timeunixnano, starttimeunixnano, "
    "temporality, ismonotonic, flags, count, sum, min, max, explicitbounds, bucketcounts, scale, "
    "zerocount, zerothreshold, positiveoffset, positivebucketcounts, negativeoffset, "
    "negativebucketcounts, quantiles, quantilevalues, exemplars, applicationid"
)


def stored_points(dsn: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Rows of `metrics` by (name, sorted attributes), failing on any duplicate."""
    names = [c.strip() for c in METRIC_COLUMNS.split(",")]
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for values in query(dsn, f"SELECT {METRIC_COLUMNS} FROM metrics"):
        row = dict(zip(names, values, strict=True))
        key = (row["name"], repr(sorted(row["attributes"].items())))
        assert key not in out, f"point stored twice: {key}"
        out[key] = row
    return out


def expected_row(metric: Metric, point: Any, kind: str) -> dict[str, Any]:
    """What design.md says the row of *point* holds."""
    row: dict[str, Any] = {
        "name": metric.name,
        "type": kind,
        "unit": metric.unit,
        "timeunixnano": point.time_unix_nano,
        "starttimeunixnano": point.start_time_unix_nano or None,
        "flags": point.flags,
        "attributes": oracle.attributes(point.attributes),
    }
    data = getattr(metric, kind)
    if kind in ("gauge", "sum"):
        which = point.WhichOneof("value")
        row["intvalue"] = point.as_int if which == "as_int" else None
        row["value"] = float(getattr(point, which))
    if kind in ("sum", "histogram", "exponential_histogram"):
        row["temporality"] = data.aggregation_temporality
    if kind == "sum":
        row["ismonotonic"] = data.is_monotonic
    if kind in ("histogram", "exponential_histogram"):
        row |= {
            "count": point.count,
            "sum": point.sum if point.HasField("sum") else None,
            "min": point.min if point.HasField("min") else None,
            "max": point.max if point.HasField("max") else None,
        }
    if kind == "histogram":
        row |= {
            "explicitbounds": list(point.explicit_bounds),
            "bucketcounts": list(point.bucket_counts),
        }
    if kind == "exponential_histogram":
        row |= {
            "scale": point.scale,
            "zerocount": point.zero_count,
            "zerothreshold": point.zero_threshold,
            "positiveoffset": point.positive.offset,
            "positivebucketcounts": list(point.positive.bucket_counts),
            "negativeoffset": point.negative.offset,
            "negativebucketcounts": list(point.negative.bucket_counts),
        }
    if kind == "summary":
        row |= {
            "count": point.count,
            "sum": point.sum,
            "quantiles": [q.quantile for q in point.quantile_values],
            "quantilevalues": [q.value for q in point.quantile_values],
        }
    if kind != "summary":
        exemplars = [
            {
                "timeUnixNano": e.time_unix_nano,
                "value": e.as_int if e.WhichOneof("value") == "as_int" else e.as_double,
                "spanId": e.span_id.hex(),
                "traceId": e.trace_id.hex(),
                "filteredAttributes": oracle.attributes(e.filtered_attributes),
            }
            for e in point.exemplars
        ]
        row["exemplars"] = exemplars or None
    return row


def assert_points_stored(dsn: str, request: ExportMetricsServiceRequest) -> int:
    """Every point of *request* is stored once with every field; returns the point count."""
    stored = stored_points(dsn)
    checked = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                for point in getattr(metric, kind).data_points:
                    expected = expected_row(metric, point, kind)
                    key = (metric.name, repr(sorted(expected["attributes"].items())))
                    row = stored.pop(key)
                    for column, value in expected.items():
                        assert row[column] == value, (metric.name, column)
                    assert oracle.micros(row["timestamp"]) == point.time_unix_nano // 1000
                    checked += 1
    assert not stored, f"rows that were not sent: {list(stored)}"
    return checked


async def test_sdk_metrics_of_every_type_are_stored_field_by_field(timescale_db: str) -> None:
    """SDK sums, gauges, histograms and exponential histograms read back exactly as sent."""
    data = sdk_metrics("fields")
    sent = encode_metrics(data)
    kinds = {
        m.WhichOneof("data")
        for rm in sent.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert kinds == {"sum", "gauge", "histogram", "exponential_histogram"}
    async with running(config_text(timescale_db)) as ingestd:
        exporter = OTLPMetricExporter(endpoint=ingestd.target, insecure=True, timeout=20)
        result = await asyncio.to_thread(exporter.export, data)
        exporter.shutdown()
    assert result is MetricExportResult.SUCCESS
    assert assert_points_stored(timescale_db, sent) == 7
    exemplars = query(timescale_db, "SELECT exemplars FROM metrics WHERE name = 'it.latency'")
    assert exemplars[0][0], "the SDK's exemplars are kept"
    assert len(exemplars[0][0][0]["traceId"]) == 32
    descriptions = query(
        timescale_db,
        "SELECT type, unit, description FROM metric_descriptions WHERE name = 'it.requests'",
    )
    assert descriptions == [("sum", "1", "requests served")]


def summary_request(tag: str) -> ExportMetricsServiceRequest:
    """A summary (the Python SDK cannot make one) built by hand, with NaN and large counts."""
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    set_attributes(rm.resource.attributes, {"service.name": "legacy", "tag": tag})
    metric = rm.scope_metrics.add().metrics.add(name="rpc.duration", unit="ms", description="d")
    now = 1_700_000_000_000_000_123
    point = metric.summary.data_points.add(
        time_unix_nano=now, start_time_unix_nano=now - 10**9, count=2**62, sum=12.5, flags=1
    )
    for q, v in ((0.0, 0.5), (0.5, 3.0), (0.99, math.nan), (1.0, math.inf)):
        point.quantile_values.add(quantile=q, value=v)
    set_attributes(point.attributes, {"method": "Get", "tag": tag})
    return request


async def test_hand_built_summary_is_stored(timescale_db: str) -> None:
    """A summary point sent through a raw gRPC stub is stored with its quantiles."""
    request = summary_request("summary")
    async with running(config_text(timescale_db)) as ingestd, stubs(ingestd.target) as (_, metrics):
        response = await metrics.Export(request)
    assert not response.HasField("partial_success")
    (row,) = stored_points(timescale_db).values()
    metric = request.resource_metrics[0].scope_metrics[0].metrics[0]
    expected = expected_row(metric, metric.summary.data_points[0], "summary")
    nan_safe = {k: v for k, v in expected.items() if k != "quantilevalues"}
    for column, value in nan_safe.items():
        assert row[column] == value, column
    assert row["quantilevalues"][:2] == [0.5, 3.0]
    assert math.isnan(row["quantilevalues"][2])
    assert row["quantilevalues"][3] == math.inf


async def test_gzip_requests_are_accepted(timescale_db: str) -> None:
    """gzip-compressed requests, from the SDK exporter and from a raw stub, are stored."""
    spans = sdk_spans("gzip")
    async with running(config_text(timescale_db)) as ingestd:
        result = await asyncio.to_thread(
            export_spans, ingestd.target, spans, compression=grpc.Compression.Gzip
        )
        async with stubs(ingestd.target) as (_, metrics):
            await metrics.Export(metric_request(8, tag="gz"), compression=grpc.Compression.Gzip)
    assert result is SpanExportResult.SUCCESS
    assert query(timescale_db, "SELECT count(*) FROM traces") == [(3,)]
    assert query(timescale_db, "SELECT count(*) FROM metrics") == [(17,)]


async def test_oversize_request_is_resource_exhausted(timescale_db: str) -> None:
    """A request over max_recv_msg_size_mib answers RESOURCE_EXHAUSTED and stores nothing."""
    text = config_text(timescale_db, receivers={"grpc": {"max_recv_msg_size_mib": 1}})
    big = span_request(4000, tag="x" * 200)
    assert big.ByteSize() > 1024 * 1024
    async with running(text) as ingestd, stubs(ingestd.target) as (traces, _):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await traces.Export(big)
        small = await traces.Export(span_request(3))
    assert failure.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert not small.HasField("partial_success")
    assert query(timescale_db, "SELECT count(*) FROM traces") == [(3,)]


async def test_undecodable_bytes_are_invalid_argument(timescale_db: str) -> None:
    """Bytes that are not an OTLP request answer INVALID_ARGUMENT without RetryInfo."""
    async with (
        running(config_text(timescale_db)) as ingestd,
        grpc.aio.insecure_channel(ingestd.target) as channel,
    ):
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await export(b"\x0a\xff\xff\xff\xff\x0f")
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert retry_delay_s(failure.value) is None
    assert query(timescale_db, "SELECT count(*) FROM ingestd.ledger") == [(0,)]


async def test_empty_request_succeeds_without_touching_the_pipeline(timescale_db: str) -> None:
    """An empty request (no bytes, or no records) answers OK and writes nothing."""
    async with (
        running(config_text(timescale_db)) as ingestd,
        stubs(ingestd.target) as (traces, metrics),
    ):
        await traces.Export(span_request(0))
        await metrics.Export(ExportMetricsServiceRequest())
        batches = ingestd.status("traces").get("batches", 0)
    assert batches == 0
    assert query(timescale_db, "SELECT count(*) FROM ingestd.ledger") == [(0,)]


async def test_logs_without_a_route_are_unimplemented(timescale_db: str) -> None:
    """LogsService/Export answers UNIMPLEMENTED while no logs route is configured."""
    async with (
        running(config_text(timescale_db)) as ingestd,
        grpc.aio.insecure_channel(ingestd.target) as channel,
    ):
        logs = logs_service_pb2_grpc.LogsServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await logs.Export(logs_service_pb2.ExportLogsServiceRequest())
    assert failure.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_mixed_request_is_partial_success(timescale_db: str) -> None:
    """Bad spans and points are refused with a count and a message; the good ones are stored."""
    spans = span_request(10, tag="mixed")
    batch = spans.resource_spans[0].scope_spans[0].spans
    batch[2].trace_id = b"short"
    batch[5].span_id = bytes(8)
    batch[7].start_time_unix_nano = 0
    points = metric_request(4, tag="mixed")
    points.resource_metrics[0].scope_metrics[0].metrics.add(name="no.data")
    async with (
        running(config_text(timescale_db)) as ingestd,
        stubs(ingestd.target) as (traces, metrics),
    ):
        trace_answer = await traces.Export(spans)
        metric_answer = await metrics.Export(points)
    assert trace_answer.partial_success.rejected_spans == 3
    assert "trace_id" in trace_answer.partial_success.error_message
    assert metric_answer.partial_success.rejected_data_points == 1
    assert "no.data" in metric_answer.partial_success.error_message
    stored = {r[0] for r in query(timescale_db, "SELECT spanid FROM traces")}
    assert stored == {s.span_id for i, s in enumerate(batch) if i not in (2, 5, 7)}
    assert query(timescale_db, "SELECT count(*) FROM metrics") == [(9,)]


async def test_rows_refused_by_postgres_are_partial_success(timescale_db: str) -> None:
    """Rows PostgreSQL refuses (class 23) are rejected one by one; the rest commits."""
    query(timescale_db, "ALTER TABLE traces ADD CONSTRAINT no_poison CHECK (name <> 'poison')")
    request = span_request(20, tag="db")
    batch = request.resource_spans[0].scope_spans[0].spans
    for i in (3, 11, 19):
        batch[i].name = "poison"
    async with running(config_text(timescale_db)) as ingestd, stubs(ingestd.target) as (traces, _):
        answer = await traces.Export(request)
        again = await traces.Export(request)
        stats = ingestd.status("traces")
    assert answer.partial_success.rejected_spans == 3
    # The SQLSTATE, never PostgreSQL's text (it may quote names and values).
    assert "SQLSTATE 23514" in answer.partial_success.error_message
    assert "constraint" not in answer.partial_success.error_message
    assert again.partial_success.rejected_spans == 3, "a retry hears the same answer"
    assert query(timescale_db, "SELECT count(*) FROM traces") == [(17,)]
    assert stats["duplicate_parts"] == 1
    (ledger,) = query(timescale_db, "SELECT items, rejected FROM ingestd.ledger")
    assert ledger == (20, 3)


async def test_a_retried_request_is_stored_once(timescale_db: str) -> None:
    """The same request sent twice (a client retry) is answered OK twice and stored once."""
    request = span_request(50, tag="retry")
    async with running(config_text(timescale_db)) as ingestd, stubs(ingestd.target) as (traces, _):
        await traces.Export(request)
        await traces.Export(request)
        concurrent = span_request(30, tag="concurrent")
        await asyncio.gather(*(traces.Export(concurrent) for _ in range(5)))
    assert query(timescale_db, "SELECT count(*) FROM traces") == [(80,)]
    assert query(timescale_db, "SELECT count(*) FROM ingestd.ledger") == [(2,)]


async def test_missing_tables_answer_unavailable_with_retry_info(database: str) -> None:
    """Without the schema, exports answer UNAVAILABLE with RetryInfo (nothing is lost)."""
    text = config_text(database, ingest={"ack_timeout_s": 1.5})
    async with running(text) as ingestd, stubs(ingestd.target) as (traces, _):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await traces.Export(span_request(5))
        last_error = ingestd.status("traces")["last_error"]
    assert failure.value.code() is grpc.StatusCode.UNAVAILABLE
    delay = retry_delay_s(failure.value)
    assert delay is not None
    assert delay > 0
    assert "schema apply" in last_error


@pytest.mark.parametrize("ack", ["committed", "accepted"])
async def test_many_concurrent_clients_share_batches(timescale_db: str, ack: str) -> None:
    """Concurrent requests share COPYs and each is stored exactly once, in both ack modes."""
    requests = [span_request(64, tag=f"c{i}") for i in range(24)]
    async with running(config_text(timescale_db, ingest={"ack": ack})) as ingestd:
        async with stubs(ingestd.target) as (traces, _):
            await asyncio.gather(*(traces.Export(r) for r in requests))
        batches = ingestd.status("traces")["batches"]
    expected = {s.span_id for r in requests for s in r.resource_spans[0].scope_spans[0].spans}
    rows = query(timescale_db, "SELECT spanid FROM traces")
    assert len(rows) == 24 * 64
    assert {r[0] for r in rows} == expected
    assert batches < len(requests), "parts of concurrent requests were batched together"


async def test_two_replicas_store_a_request_once(timescale_db: str) -> None:
    """The same request sent to two replicas at once: both answer OK, it is stored once."""
    text = config_text(timescale_db)
    requests = [span_request(200, tag=f"replicas-{i}") for i in range(6)]
    async with (
        running(text) as first,
        running(text) as second,
        stubs(first.target) as (traces_a, _),
        stubs(second.target) as (traces_b, _),
    ):
        for request in requests:
            await asyncio.gather(traces_a.Export(request), traces_b.Export(request))
        duplicates = first.status("traces")["duplicate_parts"]
        duplicates += second.status("traces")["duplicate_parts"]
    counts = dict(query(timescale_db, "SELECT spanid, count(*) FROM traces GROUP BY 1"))
    sent = [s.span_id for r in requests for s in r.resource_spans[0].scope_spans[0].spans]
    assert [counts.get(span_id) for span_id in sent] == [1] * len(sent)
    assert duplicates == len(requests), "each request was found in the ledger by one replica"
