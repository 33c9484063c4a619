"""Three real ingestd processes sharing one Redis, driven through OTLP/HTTP and OTLP/gRPC.

The shared-state end-to-end tests: dedup, cluster pressure and rate limits across replicas.
The receivers authenticate (`Authenticator.identify`) before decoding and log a `*listening`
event naming their endpoint (like `admin_listening`), which is how these tests find the ports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.harness import IngestdProcess, base_config, deep_merge
from tests.integration.conftest import Stack

TOKEN = "cluster-test-token-acme-0001"
REDIS_TIMEOUT_MS = 25


def spans_body(run_id: str, n: int, tag: str) -> bytes:
    """An OTLP traces request of *n* spans tagged with the test's run id (to count rows)."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "cluster-test"
    scope = rs.scope_spans.add()
    for i in range(n):
        span = scope.spans.add(name=f"{tag}-{i}", trace_id=os.urandom(16), span_id=os.urandom(8))
        span.start_time_unix_nano = time.time_ns()
        span.end_time_unix_nano = span.start_time_unix_nano + 1000
        attr = span.attributes.add()
        attr.key, attr.value.string_value = "test.run", run_id
    return bytes(request.SerializeToString())


def http_port(proc: IngestdProcess) -> int:
    event = proc.wait_for_event(
        lambda e: (
            "listening" in str(e.get("event", ""))
            and "http" in (str(e.get("event", "")) + str(e.get("transport", ""))).lower()
            and "admin" not in str(e.get("event", ""))
        )
    )
    return int(str(event["endpoint"]).rpartition(":")[2])


def grpc_port(proc: IngestdProcess) -> int:
    event = proc.wait_for_event(
        lambda e: (
            "listening" in str(e.get("event", ""))
            and "grpc" in (str(e.get("event", "")) + str(e.get("transport", ""))).lower()
        )
    )
    return int(str(event["endpoint"]).rpartition(":")[2])


def post(port: int, body: bytes, token: str | None = TOKEN) -> tuple[int, dict[str, str], float]:
    """POST /v1/traces; (status, headers, seconds)."""
    headers = {"Content-Type": "application/x-protobuf"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/traces", data=body, headers=headers, method="POST"
    )
    began = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            resp.read()
            return resp.status, dict(resp.headers), time.monotonic() - began
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code, dict(exc.headers), time.monotonic() - began


def stored_spans(dsn: str, run_id: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM traces WHERE attributes->>'test.run' = %s", (run_id,)
        ).fetchone()
    return int(row[0]) if row else 0


def cluster_config(stack: Stack, dsn: str, prefix: str, extra: dict[str, Any]) -> dict[str, Any]:
    config = deep_merge(
        base_config(dsn, stack.es_url, stack.redis_url),
        {
            "redis": {"key_prefix": prefix, "timeout_ms": REDIS_TIMEOUT_MS},
            "auth": {"enabled": True, "tokens": [{"token": TOKEN, "tenant": "acme"}]},
            "pressure": {"publish_interval_s": 0.5, "stale_after_s": 2.0, "reopen_s": 2.0},
            "ingest": {"ack_timeout_s": 10},
        },
    )
    return deep_merge(config, extra)


def apply_schema(config: dict[str, Any], workdir: Path) -> None:
    path = workdir / "schema.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "ingestd", "schema", "apply", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"ingestd schema apply failed: {result.stderr[-2000:]}"


@pytest.fixture
def cluster_factory(
    stack: Stack, database: str, redis_prefix: str, tmp_path: Path
) -> Iterator[Any]:
    """Start three ingestd processes on one database and one Redis prefix."""
    procs: list[IngestdProcess] = []

    def start(extra: dict[str, Any] | None = None) -> list[IngestdProcess]:
        config = cluster_config(stack, database, redis_prefix, extra or {})
        apply_schema(config, tmp_path)
        for i in range(3):
            workdir = tmp_path / f"p{i}"
            workdir.mkdir()
            procs.append(IngestdProcess(config, workdir))
        for proc in procs:
            proc.wait_ready(200)
        return procs

    yield start
    for proc in procs:
        proc.kill()


def test_retry_against_another_process_is_stored_once(
    cluster_factory: Any, database: str, run_id: str
) -> None:
    """The same request sent to process 1, then to 2 and 3 (answers 'lost'), is stored once."""
    procs = cluster_factory()
    ports = [http_port(p) for p in procs]
    body = spans_body(run_id, 20, "retry")
    statuses = [post(port, body)[0] for port in ports]
    assert statuses == [200, 200, 200]
    assert stored_spans(database, run_id) == 20


def test_concurrent_duplicates_on_three_processes_are_stored_once(
    cluster_factory: Any, database: str, run_id: str
) -> None:
    """The same request arriving at all three at once is stored once; all three answer 200."""
    procs = cluster_factory()
    ports = [http_port(p) for p in procs]
    body = spans_body(run_id, 50, "concurrent")
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda p=port: results.append(post(p, body)[0])) for port in ports
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 200, 200]
    assert stored_spans(database, run_id) == 50


def test_tenant_rate_limit_holds_across_three_processes(
    cluster_factory: Any, database: str, run_id: str
) -> None:
    """N items/s for one tenant, clients on three processes: accepted within 10 % of N."""
    # Two clients per process: a committed-mode client waits ~flush_interval per request, so
    # the offered load (up to ~6x N here) must come from several clients to exceed the limit.
    rate, seconds, per_request, clients = 2000.0, 6.0, 200, 6
    procs = cluster_factory(
        {"limits": {"tenants": {"acme": {"items_per_s": rate, "burst_s": 0.2}}}}
    )
    ports = [http_port(p) for p in procs]
    accepted = [0] * clients
    began = time.monotonic()
    until = began + seconds

    def client(i: int) -> None:
        n = 0
        while time.monotonic() < until:
            port = ports[i % len(ports)]
            status, headers, _ = post(port, spans_body(run_id, per_request, f"c{i}-{n}"))
            n += 1
            if status == 200:
                accepted[i] += per_request
            else:
                assert status == 429, status
                assert "Retry-After" in headers
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    expected = rate * elapsed + rate * 0.2
    print(f"\naccepted {sum(accepted)} items in {elapsed:.1f}s, expected {expected:.0f}")
    assert abs(sum(accepted) - expected) <= 0.10 * expected
    assert stored_spans(database, run_id) == sum(accepted)


def test_postgres_stopped_every_process_refuses_quickly(
    cluster_factory: Any, stack: Stack, run_id: str
) -> None:
    """PostgreSQL down: all three answer 503 + Retry-After within 100 ms, buffers stay bounded."""
    procs = cluster_factory()
    ports = [http_port(p) for p in procs]
    stack.stop("postgres")
    try:
        time.sleep(5)  # probes (0.5 s) notice, the pressure view (0.5 s) spreads it
        answers = [post(port, spans_body(run_id, 10, f"pg-{i}")) for i, port in enumerate(ports)]
        metrics = [p.get("/metrics")[1].decode() for p in procs]
    finally:
        stack.start("postgres")
    for status, headers, seconds in answers:
        assert status == 503
        assert int(headers["Retry-After"]) >= 1
        assert seconds < 0.1
    for text in metrics:
        for line in text.splitlines():
            if line.startswith("ingestd_batcher_buffered_items{"):
                assert float(line.rsplit(" ", 1)[1]) <= 262_144


def test_redis_restart_under_load_loses_nothing_and_dedup_resumes(
    cluster_factory: Any,
    stack: Stack,
    database: str,
    run_id: str,
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    """Redis stopped and started under load: latency stays within the Redis timeout of normal,
    every request is answered 200 and stored once, and dedup works again afterwards."""
    procs = cluster_factory()
    ports = [http_port(p) for p in procs]
    latencies: dict[str, list[float]] = {"before": [], "outage": [], "after": []}
    phase = ["before"]
    sent = [0]
    failures: list[int] = []
    stop = threading.Event()

    def client(i: int) -> None:
        n = 0
        while not stop.is_set():
            status, _, seconds = post(ports[i], spans_body(run_id, 10, f"load{i}-{n}"))
            n += 1
            if status != 200:
                failures.append(status)
                continue
            sent[0] += 10
            latencies[phase[0]].append(seconds)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(2)
    phase[0] = "outage"
    stack.stop("redis")
    try:
        time.sleep(2)
    finally:
        stack.start("redis")
        phase[0] = "after"
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join()

    def p99(values: list[float]) -> float:
        return sorted(values)[int(len(values) * 0.99)] if values else 0.0

    print({k: (len(v), round(p99(v) * 1e3, 1)) for k, v in latencies.items()})
    assert not failures
    assert p99(latencies["outage"]) <= p99(latencies["before"]) + REDIS_TIMEOUT_MS / 1000 + 0.05
    assert stored_spans(database, run_id) == sent[0]

    retried = uuid.uuid4().hex
    body = spans_body(retried, 7, "after-restart")
    assert [post(port, body)[0] for port in ports] == [200, 200, 200]
    assert stored_spans(database, retried) == 7
    assert any(redis_client.scan_iter(match=f"{redis_prefix}d:*", count=1000))


def test_wrong_or_missing_token_is_refused_before_decoding(cluster_factory: Any) -> None:
    """Garbage body + bad token answers 401/UNAUTHENTICATED (not 400): auth comes first."""
    import grpc

    procs = cluster_factory()
    port = http_port(procs[0])
    garbage = b"\xff\x00 this is not protobuf"
    assert post(port, garbage, token=None)[0] == 401
    assert post(port, garbage, token="wrong-token-wrong-token")[0] == 401
    assert post(port, garbage)[0] == 400  # with the right token the body is decoded: bad
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port(procs[0])}")
    export = channel.unary_unary(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        request_serializer=None,
        response_deserializer=None,
    )
    for metadata in ([], [("authorization", "Bearer wrong-token-wrong-token")]):
        with pytest.raises(grpc.RpcError) as info:
            export(garbage, metadata=metadata, timeout=10)
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    channel.close()
