"""/metrics after a known load: the counters equal what was sent, refused and stored.

One ingestd (and one with two workers, whose /metrics adds up both) gets OK requests over gRPC
and HTTP, some with refused records (partial success), a request too large for the buffer, and
undecodable bodies; every counter is compared with what the clients heard and the rows stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from tests.harness import IngestdProcess, base_config, deep_merge, query
from tests.integration.conftest import Stack
from tests.integration.ops_support import (
    OWN_CONNECTION,
    Exporter,
    scrape,
    status_json,
    value,
)

pytestmark = pytest.mark.integration

SPANS = 20
BAD_EVERY = 4  # every 4th request carries 2 spans with a malformed id


@pytest.fixture(params=[1, 2], ids=["workers=1", "workers=2"])
def ingestd(
    request: pytest.FixtureRequest, stack: Stack, timescale_db: str, tmp_path: Path
) -> Iterator[IngestdProcess]:
    config = deep_merge(
        base_config(timescale_db, stack.es_url, stack.redis_url),
        {
            "workers": request.param,
            "sinks": {
                "elasticsearch": {"enabled": False},
                # A request of more than 100 spans can never fit: refused as too large.
                "timescale": {"buffer": {"max_items": 100}, "batch": {"flush_interval_s": 0.05}},
            },
        },
    )
    proc = IngestdProcess(config, tmp_path)
    yield proc
    proc.kill()


async def send_known_load(proc: IngestdProcess) -> Exporter:
    grpc_port, http_port = proc.port_of("grpc_listening"), proc.port_of("http_receiver_listening")
    target = f"127.0.0.1:{grpc_port}"
    exporter = Exporter(target, f"http://127.0.0.1:{http_port}")

    async def one_connection() -> None:
        async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
            for i in range(8):
                request = exporter.request(SPANS, bad_span_ids=2 if i % BAD_EVERY == 0 else 0)
                ids = [s.span_id for s in request.resource_spans[0].scope_spans[0].spans]
                await exporter.grpc_once(channel, request.SerializeToString(), ids)

    await asyncio.gather(*(one_connection() for _ in range(4)))
    async with aiohttp.ClientSession() as session:
        for i in range(6):
            request = exporter.request(SPANS, bad_span_ids=2 if i % 3 == 0 else 0)
            ids = [s.span_id for s in request.resource_spans[0].scope_spans[0].spans]
            await exporter.http_once(session, request.SerializeToString(), ids)
        await exporter.http_once(session, b"\xff\xff\xff not protobuf", [])
    async with grpc.aio.insecure_channel(target) as channel:
        big = exporter.request(150)
        ids = [s.span_id for s in big.resource_spans[0].scope_spans[0].spans]
        await exporter.grpc_once(channel, big.SerializeToString(), ids)
        await exporter.grpc_once(channel, b"\xff\xff\xff not protobuf", [])
    return exporter


async def test_counters_equal_what_was_sent_refused_and_stored(
    ingestd: IngestdProcess, timescale_db: str
) -> None:
    """Accepted, refused (by reason), partial-success and batch counters match the clients'
    answers, and accepted items equal the rows in the database."""
    ingestd.wait_ready()
    ex = await send_known_load(ingestd)
    m = scrape(ingestd)

    ok = [a for a in ex.answers if a.ok]
    errors = {(a.transport, a.code) for a in ex.answers if not a.ok}
    assert len(ok) == 32 + 6, [a.code for a in ex.answers if not a.ok]
    assert errors == {("grpc", "RESOURCE_EXHAUSTED"), ("grpc", "INVALID_ARGUMENT"), ("http", "400")}

    stored = query(timescale_db, "SELECT count(*) FROM traces")[0][0]
    grpc_items, http_items = ex.items_ok("grpc"), ex.items_ok("http")
    assert stored == grpc_items + http_items == 38 * SPANS - 2 * (8 + 2)
    accepted = "ingestd_receiver_accepted_items_total"
    assert value(m, accepted, signal="traces", transport="grpc") == grpc_items
    assert value(m, accepted, signal="traces", transport="http") == http_items

    rejected = sum(a.rejected for a in ok)
    assert rejected == 2 * (8 + 2)
    assert value(m, "ingestd_receiver_rejected_items_total", reason="bad_span_id") == rejected
    assert value(m, "ingestd_receiver_rejected_items_total") == rejected

    refused = "ingestd_receiver_refused_items_total"
    assert value(m, refused, signal="traces", transport="grpc", reason="PayloadTooLarge") == 150
    assert value(m, refused) == 150
    assert value(m, "ingestd_batcher_refused_items_total", sink="traces", reason="too_large") == 150
    requests_refused = "ingestd_receiver_refused_requests_total"
    assert value(m, requests_refused, transport="grpc", reason="BadRequest") == 1
    assert value(m, requests_refused, transport="http", reason="BadRequest") == 1
    assert value(m, requests_refused, transport="grpc", reason="PayloadTooLarge") == 1
    assert value(m, requests_refused) == 3

    requests = "ingestd_receiver_requests_total"
    grpc_ok = sum(1 for a in ok if a.transport == "grpc")
    grpc_partial = sum(1 for a in ok if a.transport == "grpc" and a.rejected)
    assert value(m, requests, transport="grpc", status="partial") == grpc_partial
    assert value(m, requests, transport="grpc", status="ok") == grpc_ok - grpc_partial
    assert value(m, requests, transport="http", status="400") == 1
    assert value(m, requests, transport="grpc", status="RESOURCE_EXHAUSTED") == 1

    # Every answered request that reached Ingest was timed; batches hold exactly the rows.
    latency = "ingestd_ack_latency_seconds_count"
    assert value(m, latency, outcome="ok") + value(m, latency, outcome="partial") == len(ok)
    assert value(m, latency, outcome="PayloadTooLarge") == 1
    assert value(m, "ingestd_batch_items_sum", sink="traces") == stored
    batches = value(m, "ingestd_batcher_flushes_total", sink="traces")
    assert batches > 0
    assert value(m, "ingestd_sink_write_seconds_count", sink="traces", outcome="ok") == batches
    assert value(m, "ingestd_batcher_buffered_items", sink="traces") == 0
    assert value(m, "ingestd_process_cpu_seconds_total") > 0


def test_status_shows_each_stage_and_its_counters(ingestd: IngestdProcess) -> None:
    """/status holds each stage's state and counters (per worker under a supervisor)."""
    ingestd.wait_ready()
    status = status_json(ingestd)
    processes = list(status["workers"].values()) if "workers" in status else [status]
    for one in processes:
        assert one["health"]["ready"] is True
        assert one["receiver.grpc"]["listening"] is True
        assert one["receiver.http"]["closing"] is False
        assert one["batcher.traces"]["held_items"] == 0
        assert one["batcher.traces"]["max_items"] == 100
        assert one["memory"]["max_buffered_bytes"] == 256 * 1024 * 1024
        assert one["memory"]["rss_bytes"] > 0
        assert one["timescale"]["pool"]["max"] == 4
        assert set(one["process"]["tcp_connections"]) >= {"grpc", "http", "postgresql", "redis"}
        assert {"redis", "pressure", "maintenance"} <= set(one)
    if "workers" in status:
        assert [w["running"] for w in status["supervisor"]["workers"]] == [True, True]
