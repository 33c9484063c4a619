"""Denial of service from small requests, against a real `ingestd run` (docs/reliability.md).

Each case is a request of a few kilobytes (or a few idle connections) that used to cost a
worker minutes of CPU, gigabytes, or a slot forever: empty-structure bombs on both transports,
histograms of distinct huge lengths, megabyte routing names, slow bodies beyond the concurrency
caps, a declared body larger than the memory left, connections that never speak HTTP/2, data
stream routing by attributes, and a worker shedding for memory while its probes said healthy.
Each prints what it cost (time, RSS) for the reliability page.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import os
import socket
import struct
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import psycopg
import pytest
import zstandard
from elasticsearch import Elasticsearch
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.harness import (
    IngestdProcess,
    PeakRss,
    RawClients,
    base_config,
    create_design_tables,
    deep_merge,
)
from tests.integration.conftest import ES_TEST_NAMESPACE, Stack
from tests.samples import histogram_request
from tests.wire import field

pytestmark = [pytest.mark.integration]

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
MiB = 1024 * 1024
EMPTY_RESOURCE = b"\x0a\x00"  # ExportTraceServiceRequest.resource_spans = {} (2 bytes)


class Daemon(RawClients):
    """A running ingestd: its ports, its database, RSS and small clients for both transports."""

    def __init__(self, proc: IngestdProcess, dsn: str) -> None:
        super().__init__(proc)
        self.dsn = dsn
        self.admin = proc.admin_url

    def http(
        self, signal: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        """POST *body* as protobuf to /v1/*signal*: (status, answer, headers by lower-case name)."""
        status, reply_headers, answer = self.request(
            "POST",
            f"/v1/{signal}",
            body,
            {"Content-Type": "application/x-protobuf", **(headers or {})},
        )
        return status, answer, reply_headers

    def settled_rss_mib(self) -> float:
        """RSS once the memory guard had a quiet moment to hand freed memory back."""
        time.sleep(1.5)
        return self.proc.rss_mib()

    def admin_get(self, path: str, timeout_s: float = 10) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.admin + path, timeout=timeout_s) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def assert_still_serving(self) -> None:
        """A normal span is still stored after the hostile request."""
        span = good_span()
        for _ in range(20):
            code, detail, _ = self.grpc(TRACES, traces(span).SerializeToString())
            if code is not grpc.StatusCode.UNAVAILABLE:
                break
            time.sleep(0.5)
        assert code is grpc.StatusCode.OK, detail
        with psycopg.connect(self.dsn) as conn:
            found = conn.execute("SELECT count(*) FROM traces WHERE spanid = %s", (span.span_id,))
            assert found.fetchall() == [(1,)]


def _start(
    make_database: Callable[[], str],
    stack: Stack,
    workdir: Path,
    override: dict[str, Any],
    *,
    ready_status: int = 200,
) -> Iterator[Daemon]:
    dsn = make_database()
    create_design_tables(dsn, stack.pg_admin_dsn)
    config = deep_merge(
        base_config(dsn, stack.es_url, stack.redis_url),
        deep_merge(
            {
                "sinks": {"elasticsearch": {"logs_namespace": ES_TEST_NAMESPACE}},
                "maintenance": {"enabled": False},
                "redis": {"key_prefix": f"t{uuid.uuid4().hex[:10]}:"},
            },
            override,
        ),
    )
    proc = IngestdProcess(config, workdir)
    try:
        proc.wait_ready(want=ready_status)
        yield Daemon(proc, dsn)
    finally:
        proc.terminate()


@pytest.fixture(scope="module")
def daemon(
    make_database: Callable[[], str], stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    """ingestd with its default limits (64 MiB inflated, 16 MiB gRPC, 20 MiB bodies)."""
    yield from _start(make_database, stack, tmp_path_factory.mktemp("dos"), {})


@pytest.fixture(scope="module")
def tight(
    make_database: Callable[[], str], stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    """ingestd with small concurrency and memory caps, short gRPC timers and a route allowlist."""
    yield from _start(
        make_database,
        stack,
        tmp_path_factory.mktemp("tight"),
        {
            "receivers": {
                "grpc": {
                    "max_concurrent_requests": 2,
                    "handshake_timeout_s": 1,
                    "keepalive": {"server_parameters": {"max_connection_idle_s": 2.5}},
                },
                "http": {"max_concurrent_requests": 2, "read_body_timeout_s": 8},
            },
            "memory": {"max_buffered_bytes": 24 * MiB, "max_rss_mib": 0},
            "sinks": {"elasticsearch": {"routing": {"allowed_namespaces": [ES_TEST_NAMESPACE]}}},
        },
    )


def good_span() -> Span:
    t = time.time_ns()
    return Span(
        trace_id=os.urandom(16),
        span_id=os.urandom(8),
        name="op",
        start_time_unix_nano=t - 1000,
        end_time_unix_nano=t,
    )


def traces(*spans: Span) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "dos"
    rs.scope_spans.add().spans.extend(spans)
    return request


def _measured(daemon: Daemon, send: Callable[[], Any]) -> tuple[Any, float, float, float]:
    """(send()'s result, seconds, CPU seconds of the daemon, RSS growth in MiB at its peak)."""
    cpu = daemon.proc.cpu_s()
    began = time.monotonic()
    with PeakRss(daemon.proc, interval_s=0.02) as peak:
        result = send()
        took = time.monotonic() - began
    return result, took, daemon.proc.cpu_s() - cpu, peak.mib - peak.before


def _refused_at_once_over_grpc(daemon: Daemon, method: str, body: bytes, what: str) -> None:
    """`body` of empty *what* is RESOURCE_EXHAUSTED (naming *what*) in under a second, with
    under 64 MiB of extra RSS."""
    (code, detail, _), took, cpu, grown = _measured(daemon, lambda: daemon.grpc(method, body))
    print(
        f"grpc {len(body)} B of empty {what}: {code.name} in {took:.3f} s, "
        f"daemon CPU {cpu:.2f} s, peak RSS +{grown:.1f} MiB: {detail[:120]!r}"
    )
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert what.encode() in detail
    assert took < 1.0
    assert grown < 64


# -- empty-structure amplification ---------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_64_mib_of_empty_resources_in_a_small_http_body_is_refused_at_once(
    daemon: Daemon, encoding: str
) -> None:
    """64 MiB of empty ResourceSpans (65 KB gzip, 6 KB zstd) is a 413 in well under a second,
    with under 64 MiB of extra RSS (it used to take ~2 GiB and ~2 minutes)."""
    inflated = EMPTY_RESOURCE * (32 * MiB - 1)
    if encoding == "gzip":
        body = gzip.compress(inflated, compresslevel=9)
    else:
        body = zstandard.ZstdCompressor(level=19).compress(inflated)
    (status, answer, _), took, cpu, grown = _measured(
        daemon, lambda: daemon.http("traces", body, {"Content-Encoding": encoding})
    )
    print(
        f"{encoding} {len(body)} B -> {len(inflated)} B of empty resources: {status} in "
        f"{took:.3f} s, daemon CPU {cpu:.2f} s, peak RSS +{grown:.1f} MiB: {answer[:120]!r}"
    )
    assert status == 413
    assert took < 1.0
    assert grown < 64
    daemon.assert_still_serving()


def test_16_mib_of_empty_resources_over_grpc_is_refused_at_once(daemon: Daemon) -> None:
    """A 16 MiB gRPC message of empty ResourceSpans is RESOURCE_EXHAUSTED after counting the
    first 16,385 of them, not parsed (it used to take ~0.5 GiB and ~30 s)."""
    _refused_at_once_over_grpc(daemon, TRACES, EMPTY_RESOURCE * (8 * MiB - 8), "resources")
    daemon.assert_still_serving()


def test_8_million_empty_log_records_over_grpc_are_refused_at_once(daemon: Daemon) -> None:
    """16 MiB of empty log records in one scope stop at max_items_per_request (262,144)."""
    records = b"\x12\x00" * (8 * MiB - 16)
    _refused_at_once_over_grpc(daemon, LOGS, field(1, field(2, records)), "records")


def test_empty_structure_under_the_caps_is_answered_quickly(daemon: Daemon) -> None:
    """16,384 empty resources (32 KB, exactly the cap) are accepted and cost little."""
    body = EMPTY_RESOURCE * 16_384
    (code, _, _), took, cpu, grown = _measured(daemon, lambda: daemon.grpc(TRACES, body))
    print(f"16,384 empty resources: {code.name} in {took:.3f} s, CPU {cpu:.2f} s, +{grown:.1f}")
    assert code is grpc.StatusCode.OK
    assert took < 1.0


def test_a_large_request_does_not_hold_the_event_loop(daemon: Daemon) -> None:
    """While a 12 MB request of 60,000 log records converts, /livez keeps answering: its
    slowest answer is a small part of the request's own time (a loop held for the whole
    conversion would make the two alike), whatever else the machine is doing."""
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    run = uuid.uuid4().hex
    for i in range(60_000):
        record = scope.log_records.add(time_unix_nano=time.time_ns())
        record.body.string_value = f"line {i} " + "x" * 120
        record.attributes.append(KeyValue(key="run_id", value=AnyValue(string_value=run)))
    body = request.SerializeToString()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        sent = pool.submit(daemon.grpc, LOGS, body)
        worst = 0.0
        while not sent.done():
            began = time.monotonic()
            status, _ = daemon.admin_get("/livez")
            worst = max(worst, time.monotonic() - began)
            assert status == 200
            time.sleep(0.02)
        code = sent.result()[0]
        elapsed = time.monotonic() - started
    print(
        f"{len(body)} B of logs: {code.name} in {elapsed * 1000:.0f} ms;"
        f" slowest /livez meanwhile {worst * 1000:.0f} ms"
    )
    assert code is grpc.StatusCode.OK
    assert worst < max(0.5, 0.25 * elapsed)


# -- histograms and client strings ---------------------------------------------------------------


def test_huge_histograms_are_refused_alone_and_pin_no_memory(daemon: Daemon) -> None:
    """10 histograms of distinct 131,072+ bucket counts are refused (too_many_buckets) and
    leave RSS flat once idle (a packer per length used to keep ~8 MiB each)."""
    before = daemon.settled_rss_mib()
    for i in range(10):
        request = histogram_request(f"h{i}", 131_072 + i)
        status, answer, _ = daemon.http("metrics", request.SerializeToString())
        assert status == 200
        partial = ExportMetricsServiceResponse.FromString(answer).partial_success
        assert partial.rejected_data_points == 1
        assert "ingest.max_buckets_per_point" in partial.error_message
    grown = daemon.settled_rss_mib() - before
    print(f"10 histograms of 131,072+ buckets: RSS after idle +{grown:.1f} MiB")
    assert grown < 16


def test_megabyte_namespaces_are_not_kept(daemon: Daemon, es: Elasticsearch) -> None:
    """100 records with distinct 1 MB data_stream.namespace values leave RSS flat (the name
    cache keyed the raw values: +156 MiB); all route to one existing stream."""
    run = uuid.uuid4().hex
    before = daemon.settled_rss_mib()
    for i in range(100):
        request = ExportLogsServiceRequest()
        record = request.resource_logs.add().scope_logs.add().log_records.add()
        record.time_unix_nano = time.time_ns()
        # Sanitized, this is the test namespace itself: the trailing dots are stripped.
        namespace = ES_TEST_NAMESPACE + "." * (MiB - 12) + str(i)
        record.attributes.append(
            KeyValue(key="data_stream.namespace", value=AnyValue(string_value=namespace))
        )
        record.attributes.append(KeyValue(key="run_id", value=AnyValue(string_value=run)))
        assert daemon.http("logs", request.SerializeToString())[0] == 200
    grown = daemon.settled_rss_mib() - before
    print(f"100 records with 1 MB namespaces: RSS after idle +{grown:.1f} MiB")
    assert grown < 32
    es.indices.refresh(index=f"logs-*-{ES_TEST_NAMESPACE}")
    found = es.count(
        index=f"logs-*-{ES_TEST_NAMESPACE}", query={"term": {"attributes.run_id": run}}
    )
    assert found["count"] == 100


# -- concurrency and admission -------------------------------------------------------------------


def _held_http_request(port: int, declared: int) -> socket.socket:
    """A connection that sent a request head declaring *declared* body bytes, and no body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        + f"Content-Length: {declared}\r\n\r\n".encode()
    )
    return sock


def _answer_within(sock: socket.socket, seconds: float) -> bytes:
    sock.settimeout(seconds)
    try:
        return sock.recv(4096)
    except TimeoutError:
        return b""


def test_http_beyond_max_concurrent_requests_is_503_with_retry_after(tight: Daemon) -> None:
    """With 2 slow bodies in flight, a third request is answered 503 + Retry-After at once."""
    held = [_held_http_request(tight.http_port, 1000) for _ in range(2)]
    try:
        time.sleep(0.3)
        span = good_span()
        status, body, headers = tight.http("traces", traces(span).SerializeToString())
        print(f"third concurrent HTTP request: {status} {headers.get('retry-after')}")
        assert status == 503
        assert headers.get("retry-after") == "1"
        assert b"max_concurrent_requests" in body
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    tight.assert_still_serving()


def test_grpc_beyond_max_concurrent_requests_is_unavailable_with_retry_info(
    tight: Daemon,
) -> None:
    """With 2 RPCs waiting for a locked table, a third is UNAVAILABLE with RetryInfo at once."""
    with psycopg.connect(tight.dsn) as lock:
        lock.execute("LOCK TABLE traces IN ACCESS EXCLUSIVE MODE")
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            waiting = [
                pool.submit(tight.grpc, TRACES, traces(good_span()).SerializeToString())
                for _ in range(2)
            ]
            time.sleep(1.0)
            began = time.monotonic()
            code, detail, error = tight.grpc(
                TRACES, traces(good_span()).SerializeToString(), timeout_s=5
            )
            took = time.monotonic() - began
            lock.rollback()
            results = [w.result()[0] for w in waiting]
    print(f"third concurrent RPC: {code.name} in {took:.3f} s: {detail!r}")
    assert code is grpc.StatusCode.UNAVAILABLE
    assert took < 1.0
    status = rpc_status.from_call(error)
    assert status is not None
    delays = []
    for entry in status.details:
        info = error_details_pb2.RetryInfo()
        if entry.Unpack(info):
            delays.append(info.retry_delay.seconds)
    assert delays == [1]
    assert results == [grpc.StatusCode.OK, grpc.StatusCode.OK]


def test_a_declared_body_beyond_the_memory_left_is_refused_before_it_is_sent(
    tight: Daemon,
) -> None:
    """A 20 MiB Content-Length is reserved at admission: with one such body in flight and a
    24 MiB budget, a second is answered 503 before any of its bytes arrive."""
    first = _held_http_request(tight.http_port, 20 * MiB)
    try:
        time.sleep(0.3)
        second = _held_http_request(tight.http_port, 20 * MiB)
        try:
            answer = _answer_within(second, 3.0)
        finally:
            second.close()
    finally:
        first.close()
    print(f"second 20 MiB declared body: {answer[:60]!r}")
    assert answer.startswith(b"HTTP/1.1 503")
    assert b"Retry-After" in answer


def _h2_frames(sock: socket.socket, seconds: float) -> list[int]:
    """The HTTP/2 frame types the server sends within *seconds* (until it closes)."""
    types: list[int] = []
    data = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            types.append(-1)  # closed
            break
        data += chunk
        while len(data) >= 9:
            length = int.from_bytes(data[:3], "big")
            if len(data) < 9 + length:
                break
            types.append(data[3])
            data = data[9 + length :]
    return types


def test_grpc_connection_without_preface_is_closed_at_the_handshake_timeout(
    tight: Daemon,
) -> None:
    """A TCP connection that never sends the HTTP/2 preface is closed after
    handshake_timeout_s (1 s here; grpc's own default keeps it 120 s)."""
    with socket.create_connection(("127.0.0.1", tight.grpc_port), timeout=10) as sock:
        began = time.monotonic()
        frames = _h2_frames(sock, 6.0)
        took = time.monotonic() - began
    print(f"preface-less connection: frames {frames}, closed after {took:.2f} s")
    assert frames[-1:] == [-1], "closed by the server"
    assert 0.5 < took < 4.0


def test_idle_grpc_connection_gets_goaway_after_max_connection_idle(tight: Daemon) -> None:
    """A connection that completed the HTTP/2 handshake and sent no RPC gets GOAWAY after
    max_connection_idle_s (2.5 s here; past the 1 s handshake timeout, so it is the idle one)."""
    settings = b"\x00\x00\x00\x04\x00" + struct.pack(">I", 0)
    settings_ack = b"\x00\x00\x00\x04\x01" + struct.pack(">I", 0)
    with socket.create_connection(("127.0.0.1", tight.grpc_port), timeout=10) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + settings)
        began = time.monotonic()
        assert _h2_frames(sock, 0.3)[:1] == [4], "the server's SETTINGS"
        sock.sendall(settings_ack)
        frames = _h2_frames(sock, 6.0)
        took = time.monotonic() - began
    print(f"idle connection: frames {frames} within {took:.2f} s")
    assert 7 in frames, "GOAWAY"
    assert 2.0 < took < 5.0


# -- data streams --------------------------------------------------------------------------------


def test_routes_outside_the_allowlist_land_in_the_configured_stream(
    tight: Daemon, es: Elasticsearch
) -> None:
    """A record asking for an unlisted namespace is stored in logs_namespace's stream, and no
    data stream is created for it."""
    run = uuid.uuid4().hex
    wanted = f"explode{run[:8]}"
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.time_unix_nano = time.time_ns()
    record.attributes.append(
        KeyValue(key="data_stream.namespace", value=AnyValue(string_value=wanted))
    )
    record.attributes.append(KeyValue(key="run_id", value=AnyValue(string_value=run)))
    assert tight.http("logs", request.SerializeToString())[0] == 200
    es.indices.refresh(index=f"logs-*-{ES_TEST_NAMESPACE}")
    hits = es.search(
        index=f"logs-*-{ES_TEST_NAMESPACE}", query={"term": {"attributes.run_id": run}}
    )["hits"]["hits"]
    assert [hit["_source"]["data_stream"]["namespace"] for hit in hits] == [ES_TEST_NAMESPACE]
    assert not es.indices.exists(index=f"logs-generic.otel-{wanted}")
    status = orjson.loads(tight.admin_get("/status")[1])
    assert status["logs_routing"]["refused"] >= 1


# -- probes while shedding -----------------------------------------------------------------------


def test_a_worker_shedding_for_long_turns_unready_but_stays_live(
    make_database: Callable[[], str], stack: Stack, tmp_path: Path
) -> None:
    """Over its RSS bound for unready_after_shedding_s (1 s), /readyz is 503 naming memory,
    /livez stays 200, requests are refused 503; nothing else is wrong with the worker."""
    for shedding in _start(
        make_database,
        stack,
        tmp_path,
        {"memory": {"max_rss_mib": 1, "unready_after_shedding_s": 1}},
        ready_status=503,
    ):
        deadline = time.monotonic() + 10
        status, body = shedding.admin_get("/readyz")
        while b'"unavailable"' not in body and time.monotonic() < deadline:
            time.sleep(0.2)
            status, body = shedding.admin_get("/readyz")
        print(f"/readyz while shedding: {status} {body[:200]!r}")
        assert status == 503
        assert orjson.loads(body)["components"]["memory"]["state"] == "unavailable"
        assert shedding.admin_get("/livez")[0] == 200
        assert shedding.http("traces", traces(good_span()).SerializeToString())[0] == 503
