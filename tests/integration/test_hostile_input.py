"""Hostile and malformed input against a real `ingestd run`: a documented status, nothing else lost.

Hand-made cases the fuzzers do not reach (sizes, transports, time): attribute bombs, huge
strings, deep nesting, invalid UTF-8, NaN and infinities, zero timestamps, duplicate span ids,
empty resources, unknown fields, a gzip bomb, slow clients, many idle connections, and names
that look like SQL or Elasticsearch query syntax (stored as plain data, read back equal).
After each case the daemon still serves a normal request (`assert_still_serving`).
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import psycopg
import pytest
from elasticsearch import Elasticsearch
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.harness import IngestdProcess, RawClients, base_config, create_design_tables, deep_merge
from tests.integration.conftest import ES_TEST_NAMESPACE, Stack
from tests.wire import varint

pytestmark = [pytest.mark.integration]

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOGS_INDEX = f"logs-*-{ES_TEST_NAMESPACE}"


class Target(RawClients):
    """The daemon under test: its ports and database, and small clients for both transports."""

    def __init__(self, proc: IngestdProcess, dsn: str) -> None:
        super().__init__(proc)
        self.dsn = dsn

    def grpc_traces(self, body: bytes) -> tuple[grpc.StatusCode, bytes]:
        code, answer, _ = self.grpc(TRACES, body)
        return code, answer

    def http(
        self,
        signal: str,
        body: bytes,
        *,
        content_type: str = "application/x-protobuf",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        status, _, answer = self.request(
            "POST", f"/v1/{signal}", body, {"Content-Type": content_type, **(headers or {})}
        )
        return status, answer

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def assert_still_serving(self) -> None:
        """A normal request is still stored: the hostile one broke nothing else.

        Retried like an exporter for up to 10 s on UNAVAILABLE (a busy shared machine).
        """
        span = good_span()
        body = traces(span).SerializeToString()
        for _ in range(20):
            code, detail = self.grpc_traces(body)
            if code is not grpc.StatusCode.UNAVAILABLE:
                break
            time.sleep(0.5)
        assert code is grpc.StatusCode.OK, detail
        assert self.rows("SELECT count(*) FROM traces WHERE spanid = %s", span.span_id) == [(1,)]


@pytest.fixture(scope="module")
def target(
    make_database: Callable[[], str], stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    dsn = make_database()
    create_design_tables(dsn, stack.pg_admin_dsn)
    config = deep_merge(
        base_config(dsn, stack.es_url, stack.redis_url),
        {
            "receivers": {
                "http": {
                    "read_header_timeout_s": 2,
                    "read_body_timeout_s": 3,
                    "idle_timeout_s": 5,
                    "max_request_body_bytes": 8 * 1024 * 1024,
                    "max_decompressed_bytes": 32 * 1024 * 1024,
                },
            },
            "sinks": {"elasticsearch": {"logs_namespace": ES_TEST_NAMESPACE}},
            "maintenance": {"enabled": False},
        },
    )
    proc = IngestdProcess(config, tmp_path_factory.mktemp("hostile"))
    try:
        proc.wait_ready()
        yield Target(proc, dsn)
    finally:
        proc.terminate()


def now_ns() -> int:
    return time.time_ns()


def good_span(**fields: Any) -> Span:
    t = now_ns()
    span = Span(
        trace_id=os.urandom(16),
        span_id=os.urandom(8),
        name="op",
        start_time_unix_nano=t - 1000,
        end_time_unix_nano=t,
    )
    for key, value in fields.items():
        setattr(span, key, value)
    return span


def traces(*spans: Span, resource: list[KeyValue] | None = None) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(
        resource or [KeyValue(key="service.name", value=AnyValue(string_value="hostile"))]
    )
    rs.scope_spans.add().spans.extend(spans)
    return request


def kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


# -- sizes and nesting ---------------------------------------------------------------------------


def test_attribute_bomb_of_100k_attributes_is_stored(target: Target) -> None:
    """A span with 100 000 attributes (2.4 MB) is stored whole, and the daemon stays healthy."""
    span = good_span()
    span.attributes.extend(kv(f"k{i}", AnyValue(int_value=i)) for i in range(100_000))
    code, _ = target.grpc_traces(traces(span).SerializeToString())
    assert code is grpc.StatusCode.OK
    keys = target.rows(
        "SELECT count(*) FROM traces, jsonb_object_keys(attributes) WHERE spanid = %s",
        span.span_id,
    )
    assert keys == [(100_000,)]
    target.assert_still_serving()


def test_10_mb_string_is_stored_over_grpc_and_413_over_a_smaller_http_limit(
    target: Target,
) -> None:
    """A 10 MB attribute value fits gRPC's 16 MiB limit and is stored; HTTP's 8 MiB says 413."""
    span = good_span()
    span.attributes.append(kv("big", AnyValue(string_value="x" * 10_000_000)))
    body = traces(span).SerializeToString()
    code, _ = target.grpc_traces(body)
    assert code is grpc.StatusCode.OK
    assert target.rows(
        "SELECT length(attributes->>'big') FROM traces WHERE spanid = %s", span.span_id
    ) == [(10_000_000,)]
    status, _ = target.http("traces", body)
    assert status == 413
    target.assert_still_serving()


def test_over_the_grpc_message_limit_is_resource_exhausted(target: Target) -> None:
    """A 20 MB request is over gRPC's 16 MiB receive limit: RESOURCE_EXHAUSTED, not a crash."""
    span = good_span()
    span.attributes.append(kv("big", AnyValue(string_value="x" * 20_000_000)))
    code, _ = target.grpc_traces(traces(span).SerializeToString())
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    target.assert_still_serving()


def _nested(depth: int) -> AnyValue:
    value = AnyValue(string_value="leaf")
    for _ in range(depth):
        value = AnyValue(kvlist_value={"values": [KeyValue(key="k", value=value)]})
    return value


def _nested_bytes(depth: int) -> bytes:
    """A KeyValue nested *depth* kvlists deep, serialized by hand (upb refuses to build it)."""
    value = AnyValue(string_value="leaf").SerializeToString()
    for _ in range(depth):
        key_value = b"\x0a\x01k" + b"\x12" + varint(len(value)) + value
        kvlist = b"\x0a" + varint(len(key_value)) + key_value
        value = b"\x32" + varint(len(kvlist)) + kvlist
    return b"\x0a\x04deep\x12" + varint(len(value)) + value


def test_attribute_nested_1000_deep_is_refused_alone(target: Target) -> None:
    """A span attribute nested 1 000 deep is refused as partial success; its neighbour is stored."""
    bad, good = good_span(), good_span()
    request = traces(bad, good)
    raw = request.SerializeToString()
    # Splice the deep attribute into the first span by hand: Span field 9 is attributes.
    deep = _nested_bytes(1000)
    span_bytes = bad.SerializeToString() + b"\x4a" + varint(len(deep)) + deep
    request.resource_spans[0].scope_spans[0].ClearField("spans")
    scope = request.resource_spans[0].scope_spans[0]
    scope.spans.add().CopyFrom(good)
    raw = request.SerializeToString()
    # Append the bad span as an extra repeated `spans` element (ScopeSpans field 2).
    scope_bytes = scope.SerializeToString() + b"\x12" + varint(len(span_bytes)) + span_bytes
    resource = request.resource_spans[0]
    resource_bytes = (
        b"\x0a"
        + varint(len(resource.resource.SerializeToString()))
        + resource.resource.SerializeToString()
        + b"\x12"
        + varint(len(scope_bytes))
        + scope_bytes
    )
    raw = b"\x0a" + varint(len(resource_bytes)) + resource_bytes
    code, answer = target.grpc_traces(raw)
    assert code is grpc.StatusCode.OK
    response = ExportTraceServiceResponse.FromString(answer)
    assert response.partial_success.rejected_spans == 1
    assert target.rows("SELECT count(*) FROM traces WHERE spanid = %s", good.span_id) == [(1,)]
    assert target.rows("SELECT count(*) FROM traces WHERE spanid = %s", bad.span_id) == [(0,)]


def test_resource_nested_1000_deep_is_400_on_both_transports(target: Target) -> None:
    """A resource nested past protobuf's depth limit is 400 / INVALID_ARGUMENT, not retryable."""
    deep = _nested_bytes(1000)
    resource = b"\x0a" + varint(len(deep)) + deep
    resource_spans = b"\x0a" + varint(len(resource)) + resource
    body = b"\x0a" + varint(len(resource_spans)) + resource_spans
    code, _ = target.grpc_traces(body)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    status, _ = target.http("traces", body)
    assert status == 400
    document = {
        "resourceSpans": [
            {"resource": {"attributes": [{"key": "deep", "value": json.loads(_json_nested(150))}]}}
        ]
    }
    status, _ = target.http(
        "traces", json.dumps(document).encode(), content_type="application/json"
    )
    assert status == 400
    target.assert_still_serving()


def _json_nested(depth: int) -> str:
    text = '{"stringValue":"leaf"}'
    for _ in range(depth):
        text = '{"kvlistValue":{"values":[{"key":"k","value":' + text + "}]}}"
    return text


# -- values --------------------------------------------------------------------------------------


def test_invalid_utf8_in_a_span_name_is_400(target: Target) -> None:
    """upb refuses invalid UTF-8 in a string field: the whole request is INVALID_ARGUMENT / 400."""
    span = good_span(name="NAME")
    body = traces(span).SerializeToString().replace(b"NAME", b"N\xffME")
    code, _ = target.grpc_traces(body)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert target.http("traces", body)[0] == 400


def test_invalid_utf8_in_an_attribute_refuses_only_its_span(target: Target) -> None:
    """Span attributes are decoded lazily: invalid UTF-8 there refuses that span alone."""
    bad, good = good_span(), good_span()
    bad.attributes.append(kv("KEYX", AnyValue(string_value="v")))
    body = traces(bad, good).SerializeToString().replace(b"KEYX", b"K\xffYX")
    code, answer = target.grpc_traces(body)
    assert code is grpc.StatusCode.OK
    assert ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans == 1
    assert target.rows("SELECT count(*) FROM traces WHERE spanid = %s", good.span_id) == [(1,)]


def test_nan_and_infinities_are_stored_tagged_in_attributes_and_raw_in_values(
    target: Target,
) -> None:
    """NaN/±Infinity attributes become {"$double": ...}; a NaN gauge value is a float8 NaN."""
    span = good_span()
    for name, value in (("nan", float("nan")), ("inf", float("inf")), ("ninf", float("-inf"))):
        span.attributes.append(kv(name, AnyValue(double_value=value)))
    assert target.grpc_traces(traces(span).SerializeToString())[0] is grpc.StatusCode.OK
    ((attrs,),) = target.rows("SELECT attributes FROM traces WHERE spanid = %s", span.span_id)
    assert attrs == {
        "nan": {"$double": "NaN"},
        "inf": {"$double": "Infinity"},
        "ninf": {"$double": "-Infinity"},
    }
    request = ExportMetricsServiceRequest()
    metric = (
        request.resource_metrics.add()
        .scope_metrics.add()
        .metrics.add(name=f"nan.{uuid.uuid4().hex}")
    )
    for value in (float("nan"), float("inf"), float("-inf")):
        metric.gauge.data_points.add(time_unix_nano=now_ns(), as_double=value)
    assert target.http("metrics", request.SerializeToString())[0] == 200
    values = target.rows("SELECT value::text FROM metrics WHERE name = %s ORDER BY 1", metric.name)
    assert values == [("-Infinity",), ("Infinity",), ("NaN",)]


def test_zero_timestamps_are_refused_for_spans_and_points_and_defaulted_for_logs(
    target: Target, es: Elasticsearch
) -> None:
    """time 0: a span and a data point are refused (partial success); a log record gets now."""
    zero = good_span(start_time_unix_nano=0, end_time_unix_nano=0)
    code, answer = target.grpc_traces(traces(zero).SerializeToString())
    assert code is grpc.StatusCode.OK
    assert ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans == 1
    request = ExportMetricsServiceRequest()
    request.resource_metrics.add().scope_metrics.add().metrics.add(
        name="zero"
    ).gauge.data_points.add(time_unix_nano=0, as_int=1)
    status, body = target.http("metrics", request.SerializeToString())
    assert status == 200
    answer_metrics = ExportMetricsServiceResponse.FromString(body).partial_success
    assert answer_metrics.rejected_data_points == 1
    assert "time_unix_nano 0" in answer_metrics.error_message
    run = uuid.uuid4().hex
    logs = ExportLogsServiceRequest()
    record = logs.resource_logs.add().scope_logs.add().log_records.add(time_unix_nano=0)
    record.attributes.append(kv("run_id", AnyValue(string_value=run)))
    assert target.http("logs", logs.SerializeToString())[0] == 200
    es.indices.refresh(index=LOGS_INDEX)
    hits = es.search(index=LOGS_INDEX, query={"term": {"attributes.run_id": run}})["hits"]
    assert hits["total"]["value"] == 1


def test_negative_timestamp_in_json_is_400(target: Target) -> None:
    """A negative time in OTLP/JSON cannot be a fixed64: 400 with the field's path."""
    document = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "01" * 16,
                                "spanId": "02" * 8,
                                "name": "neg",
                                "startTimeUnixNano": "-5",
                                "endTimeUnixNano": "10",
                            }
                        ]
                    }
                ]
            }
        ]
    }
    status, body = target.http(
        "traces", json.dumps(document).encode(), content_type="application/json"
    )
    assert status == 400
    assert b"startTimeUnixNano" in body


def test_duplicate_span_ids_in_one_request_are_both_stored(target: Target) -> None:
    """Two spans sharing trace and span id are two records as sent: both rows are stored."""
    first = good_span(name="first")
    second = good_span(name="second")
    second.trace_id, second.span_id = first.trace_id, first.span_id
    assert target.grpc_traces(traces(first, second).SerializeToString())[0] is grpc.StatusCode.OK
    names = target.rows("SELECT name FROM traces WHERE spanid = %s ORDER BY 1", first.span_id)
    assert names == [("first",), ("second",)]


def test_empty_resources_and_scopes_are_ok_and_store_nothing(target: Target) -> None:
    """ResourceSpans without resource, scopes or spans: 200 with nothing refused."""
    request = ExportTraceServiceRequest()
    request.resource_spans.add()
    request.resource_spans.add().scope_spans.add()
    code, answer = target.grpc_traces(request.SerializeToString())
    assert code is grpc.StatusCode.OK
    assert not ExportTraceServiceResponse.FromString(answer).HasField("partial_success")


def test_unknown_fields_are_ignored(target: Target) -> None:
    """Unknown protobuf fields (a newer OTLP) and unknown JSON keys are skipped; data is stored."""
    span = good_span()
    body = traces(span).SerializeToString() + b"\xfa\x3f\x03abc"  # field 1023, bytes
    assert target.grpc_traces(body)[0] is grpc.StatusCode.OK
    assert target.rows("SELECT count(*) FROM traces WHERE spanid = %s", span.span_id) == [(1,)]
    document = {
        "resourceSpans": [
            {
                "futureField": {"x": 1},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": os.urandom(16).hex(),
                                "spanId": (sid := os.urandom(8)).hex(),
                                "name": "u",
                                "startTimeUnixNano": str(now_ns() - 10),
                                "endTimeUnixNano": str(now_ns()),
                                "newThing": [1, 2],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    status, _ = target.http(
        "traces", json.dumps(document).encode(), content_type="application/json"
    )
    assert status == 200
    assert target.rows("SELECT count(*) FROM traces WHERE spanid = %s", sid) == [(1,)]


def test_sql_and_query_syntax_is_stored_as_plain_data(target: Target, es: Elasticsearch) -> None:
    """Names and values that look like SQL or ES queries are stored and read back unchanged."""
    hostile = [
        "'; DROP TABLE traces; --",
        "1' OR '1'='1",
        "$$; SELECT pg_sleep(10); $$",
        '{"query":{"match_all":{}}}',
        "*:* OR _id:* AND NOT x",
        "logs-*,-logs-x/_delete_by_query",
        "\\u0000 \\x00 %s %(x)s {0}",
    ]
    span = good_span(name=hostile[0])
    span.attributes.extend(kv(h, AnyValue(string_value=h)) for h in hostile)
    assert target.grpc_traces(traces(span).SerializeToString())[0] is grpc.StatusCode.OK
    ((name, attrs),) = target.rows(
        "SELECT name, attributes FROM traces WHERE spanid = %s", span.span_id
    )
    assert name == hostile[0]
    assert attrs == {h: h for h in hostile}
    run = uuid.uuid4().hex
    logs = ExportLogsServiceRequest()
    record = logs.resource_logs.add().scope_logs.add().log_records.add(time_unix_nano=now_ns())
    record.body.string_value = hostile[3]
    record.attributes.append(kv("run_id", AnyValue(string_value=run)))
    record.attributes.extend(kv(f"h{i}", AnyValue(string_value=h)) for i, h in enumerate(hostile))
    assert target.http("logs", logs.SerializeToString())[0] == 200
    es.indices.refresh(index=LOGS_INDEX)
    (hit,) = es.search(index=LOGS_INDEX, query={"term": {"attributes.run_id": run}})["hits"]["hits"]
    assert hit["_source"]["body"] == {"text": hostile[3]}
    assert [hit["_source"]["attributes"][f"h{i}"] for i in range(len(hostile))] == hostile


# -- compression and slow or idle clients --------------------------------------------------------


def test_gzip_bomb_is_413_after_inflating_at_most_the_limit(target: Target) -> None:
    """1 GiB of zeros gzipped (~1 MB) is refused with 413; the daemon's memory barely moves."""
    bomb = gzip.compress(bytes(1024 * 1024 * 1024), compresslevel=9)
    before = target.proc.rss_mib()
    began = time.monotonic()
    status, _ = target.http("traces", bomb, headers={"Content-Encoding": "gzip"})
    took = time.monotonic() - began
    assert status == 413
    grown_mb = target.proc.rss_mib() - before
    print(f"gzip bomb: {len(bomb)} bytes -> 413 in {took:.2f} s, RSS +{grown_mb:.0f} MB")
    assert grown_mb < 200, "inflating stops at max_decompressed_bytes (32 MB) plus one step"
    target.assert_still_serving()


def test_slowloris_headers_are_cut_after_the_header_timeout(target: Target) -> None:
    """A client sending its request head one byte a second is disconnected (2 s timeout)."""
    head = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
    with socket.create_connection(("127.0.0.1", target.http_port), timeout=10) as sock:
        began = time.monotonic()
        closed_after = None
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
                time.sleep(0.25)
                sock.setblocking(False)
                try:
                    if sock.recv(1) == b"":
                        closed_after = time.monotonic() - began
                        break
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
            except OSError:
                closed_after = time.monotonic() - began
                break
    print(f"slowloris head: closed after {closed_after} s")
    assert closed_after is not None
    assert closed_after < 6


def test_trickled_body_is_answered_400_after_the_body_timeout(target: Target) -> None:
    """A body trickling one byte a second is cut at read_body_timeout_s (3 s) with a 400."""
    body = traces(good_span()).SerializeToString()
    with socket.create_connection(("127.0.0.1", target.http_port), timeout=15) as sock:
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        began = time.monotonic()
        answer = b""
        for byte in body:
            sock.sendall(bytes([byte]))
            sock.settimeout(1.0)
            try:
                answer = sock.recv(4096)
            except TimeoutError:
                continue
            if answer:
                break
    took = time.monotonic() - began
    print(f"trickled body: answered after {took:.1f} s: {answer[:40]!r}")
    assert answer.startswith(b"HTTP/1.1 400")
    assert took < 8


def test_trickling_grpc_client_is_cut_and_does_not_block_others(target: Target) -> None:
    """A gRPC (HTTP/2) connection trickling its preface holds nothing: others are served."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    with socket.create_connection(("127.0.0.1", target.grpc_port), timeout=10) as sock:
        for byte in preface[:10]:
            sock.sendall(bytes([byte]))
            time.sleep(0.3)
        target.assert_still_serving()


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_thousands_of_idle_connections_do_not_stop_service(target: Target) -> None:
    """2 000 idle TCP connections cost little memory, requests succeed, HTTP closes its own."""
    before = target.proc.rss_mib()
    sockets: list[socket.socket] = []
    try:
        sockets.extend(
            socket.create_connection(("127.0.0.1", port), timeout=10)
            for port in (target.http_port, target.grpc_port)
            for _ in range(1000)
        )
        time.sleep(1.0)
        target.assert_still_serving()
        grown_mb = target.proc.rss_mib() - before
        print(f"2000 idle connections: RSS +{grown_mb:.1f} MB")
        assert grown_mb < 300
        time.sleep(7)  # past receivers.http.idle_timeout_s (5 s here)
        closed = {
            port: sum(_closed(s) for s in sockets if s.getpeername()[1] == port)
            for port in (target.http_port, target.grpc_port)
        }
        print(f"closed by the server after 7 s: {closed}")
        # HTTP closes them at idle_timeout_s. grpc core keeps a connection that never sends its
        # preface (none of server_handshake_timeout_ms, http2.settings_timeout,
        # max_connection_idle_ms closes it in grpcio 1.85): bounded by the fd limit only.
        assert closed[target.http_port] == 1000
    finally:
        for sock in sockets:
            sock.close()
