"""Registered applications own their telemetry: a request carrying an application's ingest key
is stored under that application's id, over gRPC and HTTP, for traces, metrics and logs; a
revoked key stops working on every replica within seconds."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
import pytest
import yaml
from elasticsearch import Elasticsearch
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from ingestd import applications, config
from ingestd.convert.identity import application_id_of
from ingestd.convert.logs import application_namespace
from ingestd.daemon import Daemon
from ingestd.schema.elasticsearch import apply_templates
from tests.harness import Running, free_port, query, running
from tests.integration.conftest import Stack
from tests.integration.logs_support import post, search
from tests.samples import RESOURCE, metric_request, set_attributes, span_request

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Fixed ids: each registered application's logs go to a data stream of its own namespace,
# and the dev stack's Elasticsearch cannot delete data streams (conftest): keep them few.
ALPHA, BETA = "de_alpha", "de_beta"
LOGS_INDEX = "logs-*-de_*"


def config_doc(dsn: str, stack: Stack, redis_prefix: str) -> dict[str, Any]:
    return {
        "receivers": {
            "grpc": {"endpoint": f"127.0.0.1:{free_port()}"},
            "http": {"endpoint": f"127.0.0.1:{free_port()}"},
        },
        "auth": {
            "enabled": True,
            "application_keys": {
                "enabled": True,
                "refresh_s": 0.2,
                "redis_ttl_s": 1.0,
                "unknown_ttl_s": 1.0,
            },
        },
        "redis": {"url": stack.redis_url, "key_prefix": redis_prefix},
        "ingest": {"ack_timeout_s": 20},
        "sinks": {
            "timescale": {"dsn": dsn, "batch": {"flush_interval_s": 0.05}},
            "elasticsearch": {"urls": [stack.es_url], "batch": {"flush_interval_s": 0.05}},
        },
    }


def make_config(doc: dict[str, Any]) -> config.Config:
    return config.parse(yaml.safe_dump(doc), environ={})


@contextlib.asynccontextmanager
async def replica(doc: dict[str, Any]) -> AsyncIterator[Daemon]:
    """One in-process ingestd on its own ports (a new pair each call)."""
    doc = {
        **doc,
        "receivers": {
            "grpc": {"endpoint": f"127.0.0.1:{free_port()}"},
            "http": {"endpoint": f"127.0.0.1:{free_port()}"},
        },
    }
    async with running(make_config(doc)) as run:
        yield run.daemon


def ports(daemon: Daemon) -> tuple[int, int]:
    run = Running(daemon)
    return run.port, run.http_port


def logs_request(run_id: str, namespace: str, n: int) -> ExportLogsServiceRequest:
    """*n* log records whose resource claims the sample service and routes to *namespace*."""
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    set_attributes(rl.resource.attributes, {**RESOURCE, "data_stream.namespace": namespace})
    scope = rl.scope_logs.add()
    for i in range(n):
        record = scope.log_records.add()
        record.time_unix_nano = time.time_ns()
        record.body.string_value = f"line {i}"
        set_attributes(record.attributes, {"run_id": run_id, "data_stream.namespace": namespace})
    return request


async def send_all(daemon: Daemon, token: str, run_id: str, namespace: str) -> None:
    """Spans, metrics and logs over gRPC, then the same over HTTP, all with *token*."""
    grpc_port, http_port = ports(daemon)
    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        await trace_service_pb2_grpc.TraceServiceStub(channel).Export(
            span_request(3, tag=run_id), metadata=metadata, timeout=30
        )
        await metrics_service_pb2_grpc.MetricsServiceStub(channel).Export(
            metric_request(2, tag=run_id), metadata=metadata, timeout=30
        )
        await logs_service_pb2_grpc.LogsServiceStub(channel).Export(
            logs_request(run_id, namespace, 3), metadata=metadata, timeout=30
        )
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-protobuf"}
    base = f"http://127.0.0.1:{http_port}"
    for path, message in (
        ("/v1/traces", span_request(3, tag=run_id)),
        ("/v1/metrics", metric_request(2, tag=run_id)),
        ("/v1/logs", logs_request(run_id, namespace, 3)),
    ):
        status, body = await post(base + path, message.SerializeToString(), headers)
        assert status == 200, (path, body)


async def search_logs(es: Elasticsearch, run_id: str) -> list[dict[str, Any]]:
    query = {"term": {"attributes.run_id": run_id}}
    found = await search(es, query, size=100, index=LOGS_INDEX)
    return [{**hit["_source"], "_index": hit["_index"]} for hit in found["hits"]["hits"]]


@pytest.fixture
async def keyed(timescale_db: str, stack: Stack, es: Elasticsearch, redis_prefix: str) -> Any:
    """A schema'd database with two registered applications and their keys; the config doc."""
    doc = config_doc(timescale_db, stack, redis_prefix)
    cfg = make_config(doc)
    await apply_templates(cfg.sinks.elasticsearch)
    alpha = await applications.add(cfg, "alpha-app", application_id=ALPHA)
    beta = await applications.add(cfg, "beta-app", application_id=BETA)
    return doc, alpha.token, beta.token


async def test_a_keyed_application_owns_its_spans_metrics_and_logs(
    keyed: Any, es: Elasticsearch
) -> None:
    """With alpha's key, every record is stored under alpha's id over gRPC and HTTP; beta's key
    cannot write into alpha's data even when its resource and routing attributes say alpha."""
    doc, alpha_key, beta_key = keyed
    dsn = doc["sinks"]["timescale"]["dsn"]
    run_alpha, run_beta = uuid.uuid4().hex, uuid.uuid4().hex
    async with replica(doc) as daemon:
        await send_all(daemon, alpha_key, run_alpha, "default")
        # beta's requests claim the same service and route their logs into alpha's namespace
        await send_all(daemon, beta_key, run_beta, application_namespace(ALPHA))
        status = daemon.pipeline.status_sources()["applications"]()

    spans = dict(query(dsn, "SELECT applicationId, count(*) FROM traces GROUP BY 1"))
    assert spans == {ALPHA: 6, BETA: 6}
    # 2 sum + 2 gauge + 1 histogram points per request, two requests each
    points = dict(query(dsn, "SELECT applicationId, count(*) FROM metrics GROUP BY 1"))
    assert points == {ALPHA: 10, BETA: 10}
    names = dict(query(dsn, "SELECT id, name FROM applications"))
    assert names == {ALPHA: "alpha-app", BETA: "beta-app"}  # no derived row, no overwrite

    alpha_logs = await search_logs(es, run_alpha)
    beta_logs = await search_logs(es, run_beta)
    assert len(alpha_logs) == 6
    assert len(beta_logs) == 6
    assert {d["application_id"] for d in alpha_logs} == {ALPHA}
    assert {d["application_id"] for d in beta_logs} == {BETA}
    assert {d["data_stream"]["namespace"] for d in alpha_logs} == {"de_alpha"}
    assert {d["data_stream"]["namespace"] for d in beta_logs} == {"de_beta"}
    assert all(d["_index"].startswith(".ds-logs-generic.otel-de_beta-") for d in beta_logs)

    assert status["accepted_items"][ALPHA] == {"traces": 6, "metrics": 10, "logs": 6}
    assert status["accepted_items"][BETA] == {"traces": 6, "metrics": 10, "logs": 6}
    shown = orjson.dumps(status).decode()
    assert alpha_key not in shown
    assert alpha_key[12:24] not in shown


async def _refused_within(daemons: list[Daemon], token: str, timeout_s: float) -> float:
    """Seconds until every daemon answers UNAUTHENTICATED to *token*; fails past *timeout_s*."""
    began = time.monotonic()
    pending = list(daemons)
    while pending:
        assert time.monotonic() - began < timeout_s, "a revoked key still works"
        for daemon in list(pending):
            code = await _export_code(daemon, token)
            assert code in (None, grpc.StatusCode.UNAUTHENTICATED), code
            if code is grpc.StatusCode.UNAUTHENTICATED:
                pending.remove(daemon)
        await asyncio.sleep(0.1)
    return time.monotonic() - began


async def _export_code(daemon: Daemon, token: str) -> grpc.StatusCode | None:
    """The status of one span export with *token*; None when it was accepted."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ports(daemon)[0]}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        try:
            await stub.Export(
                span_request(1), metadata=(("authorization", f"Bearer {token}"),), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return None


async def test_revocation_reaches_every_replica_within_seconds(keyed: Any) -> None:
    """Two replicas accept alpha's and beta's keys; `applications revoke` (Redis entries
    deleted) stops alpha's on both within 2 s, and Deep Eyes' UPDATE of revokedAt alone
    stops beta's within refresh_s + redis_ttl_s (+ slack)."""
    doc, alpha_key, beta_key = keyed
    cfg = make_config(doc)
    async with replica(doc) as one, replica(doc) as two:
        for daemon in (one, two):
            for token in (alpha_key, beta_key):
                await send_all(daemon, token, uuid.uuid4().hex, "default")
        assert await applications.revoke(cfg, ALPHA) == 1
        took = await _refused_within([one, two], alpha_key, timeout_s=2.0)
        query(
            doc["sinks"]["timescale"]["dsn"],
            "UPDATE application_keys SET revokedAt = now() WHERE applicationId = %s",
            BETA,
        )
        took_db = await _refused_within([one, two], beta_key, timeout_s=4.0)
    print(
        f"revoked via CLI: refused on both replicas after {took:.2f} s; in the DB: {took_db:.2f} s"
    )


async def test_rate_limits_are_keyed_by_the_application(keyed: Any) -> None:
    """A limit on alpha's id refuses alpha's requests (RESOURCE_EXHAUSTED) and not beta's."""
    doc, alpha_key, beta_key = keyed
    limited = {**doc, "limits": {"tenants": {ALPHA: {"items_per_s": 1, "burst_s": 1}}}}
    async with replica(limited) as daemon:
        assert await _export_code(daemon, beta_key) is None
        codes = {await _export_code(daemon, alpha_key) for _ in range(3)}
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes


async def test_ingest_never_changes_a_registered_row(keyed: Any) -> None:
    """A registered application whose id is the one ingest would derive keeps its row as
    registered (name, lastSeenAt) when spans arrive without its key (a tenant token)."""
    doc, _, _ = keyed
    dsn = doc["sinks"]["timescale"]["dsn"]
    derived = application_id_of(
        RESOURCE["service.namespace"], RESOURCE["service.name"], RESOURCE["deployment.environment"]
    )
    await applications.add(make_config(doc), "registered by hand", application_id=derived)
    query(dsn, "UPDATE applications SET lastSeenAt = '2026-01-01' WHERE id = %s", derived)
    token = "a-tenant-token-of-the-config-file"
    with_token = {**doc, "auth": {**doc["auth"], "tokens": [{"token": token, "tenant": "t1"}]}}
    async with replica(with_token) as daemon:
        assert await _export_code(daemon, token) is None
    ((name, seen, spans),) = query(
        dsn,
        "SELECT a.name, a.lastSeenAt::date::text,"
        " (SELECT count(*) FROM traces WHERE applicationId = a.id)"
        " FROM applications AS a WHERE a.id = %s",
        derived,
    )
    assert (name, seen, spans) == ("registered by hand", "2026-01-01", 1)


async def test_without_redis_keys_are_checked_against_the_database(keyed: Any) -> None:
    """Redis unreachable (a closed port): keys still work, checked against the database, and a
    revocation there is seen within about refresh_s; an unknown key is still refused."""
    doc, alpha_key, _ = keyed
    no_redis = {**doc, "redis": {"url": f"redis://127.0.0.1:{free_port()}/0"}}
    async with replica(no_redis) as daemon:
        assert await _export_code(daemon, alpha_key) is None
        assert await _export_code(daemon, "ik_" + "x" * 43) is grpc.StatusCode.UNAUTHENTICATED
        query(
            doc["sinks"]["timescale"]["dsn"],
            "UPDATE application_keys SET revokedAt = now() WHERE applicationId = %s",
            ALPHA,
        )
        took = await _refused_within([daemon], alpha_key, timeout_s=3.0)
        status = daemon.pipeline.status_sources()["applications"]()
    assert status["checks"].get("redis", 0) == 0
    print(f"without Redis, revocation in the DB refused after {took:.2f} s")
