"""Elasticsearch stopped under load and started again: every acknowledged record is stored
exactly once (the bulk writer's retries plus create + deterministic _id)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from elasticsearch import Elasticsearch
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from ingestd.schema.elasticsearch import apply_templates
from tests.harness import http_url, logs_config, running
from tests.integration.conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENTS = 4
REQUESTS_PER_CLIENT = 15
RECORDS_PER_REQUEST = 100


def request_body(run_id: str, first_seq: int) -> bytes:
    req = logs_service_pb2.ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "outage-test"
    records = rl.scope_logs.add().log_records
    for seq in range(first_seq, first_seq + RECORDS_PER_REQUEST):
        rec = records.add(time_unix_nano=time.time_ns(), severity_number=9)
        rec.body.string_value = f"record {seq}"
        rec.attributes.add(key="run_id").value.string_value = run_id
        rec.attributes.add(key="seq").value.int_value = seq
    return req.SerializeToString()


async def client(
    url: str, run_id: str, number: int, acked: list[int], flowing: asyncio.Event
) -> None:
    """Send requests one after another; retry each like an OTLP SDK until it is acknowledged."""
    headers = {"Content-Type": "application/x-protobuf"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=40)) as session:
        for r in range(REQUESTS_PER_CLIENT):
            first = (number * REQUESTS_PER_CLIENT + r) * RECORDS_PER_REQUEST
            body = request_body(run_id, first)
            while True:
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                if status == 200:
                    acked.append(first)
                    if len(acked) >= 8:
                        flowing.set()
                    break
                assert status in (0, 503), status  # retryable only; never a permanent error
                await asyncio.sleep(0.5)


async def test_elasticsearch_outage_under_load_stores_every_acked_record_once(
    stack: Stack, es: Elasticsearch, es_namespace: str, run_id: str
) -> None:
    """Stop Elasticsearch mid-load, start it again: acked records are all stored, none twice."""
    config = logs_config(stack.es_url, es_namespace)
    await apply_templates(config.sinks.elasticsearch)
    acked: list[int] = []
    flowing = asyncio.Event()
    async with running(config) as run:
        url = http_url(run.daemon)
        clients = [
            asyncio.create_task(client(url, run_id, n, acked, flowing)) for n in range(CLIENTS)
        ]
        try:
            await flowing.wait()
            await asyncio.to_thread(stack.stop, "elasticsearch")
            stopped_with = len(acked)
            await asyncio.sleep(3)
        finally:
            await asyncio.to_thread(stack.start, "elasticsearch")
        async with asyncio.timeout(180):
            await asyncio.gather(*clients)

    total = CLIENTS * REQUESTS_PER_CLIENT
    assert len(acked) == total
    assert stopped_with < total  # the outage happened under load, not after it
    seqs = await asyncio.to_thread(_stored_seqs, es, run_id)
    assert len(seqs) == total * RECORDS_PER_REQUEST  # every record, no duplicate document
    assert sorted(seqs) == list(range(total * RECORDS_PER_REQUEST))


def _stored_seqs(es: Elasticsearch, run_id: str) -> list[int]:
    es.indices.refresh(index="logs-*-ingestdtest")
    seqs: list[int] = []
    query: dict[str, Any] = {"term": {"attributes.run_id": run_id}}
    result = es.search(
        index="logs-*-ingestdtest",
        query=query,
        size=10_000,
        source_includes=["attributes.seq"],
        track_total_hits=True,
    )
    seqs.extend(hit["_source"]["attributes"]["seq"] for hit in result["hits"]["hits"])
    assert result["hits"]["total"]["value"] == len(seqs)
    return seqs
