"""Exactly once for logs across a rollover: a bulk whose answer is lost, a rollover of its data
stream, then the retry. Real Elasticsearch behind the test proxy (which loses the answer)."""

from __future__ import annotations

import asyncio
import time
import uuid
from urllib.parse import urlsplit

import pytest
from elasticsearch import Elasticsearch
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from ingestd.batching import Batch, Part
from ingestd.config import ElasticsearchSinkConfig
from ingestd.convert.logs import LogsConverter
from ingestd.errors import SinkUnavailable
from ingestd.schema.elasticsearch import apply_templates
from ingestd.sinks.elasticsearch import ElasticsearchSink
from tests.integration.conftest import ES_TEST_NAMESPACE, Stack
from tests.proxy import Proxy

pytestmark = [pytest.mark.integration]

# A data stream of its own: rolling over the shared one would make tests that post fixed
# documents find them twice. Its old backing indices are deleted afterwards.
DATASET = "rollover"
STREAM = f"logs-{DATASET}.otel-{ES_TEST_NAMESPACE}"
# Each chunk through the proxy waits this long: the bulk reaches Elasticsearch after it, and
# its answer is held as long again, which leaves time to roll over and cut before it arrives.
LATENCY_S = 1.5


def _records(run: str, n: int) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    for i in range(n):
        record = scope.log_records.add(time_unix_nano=time.time_ns())
        record.body.string_value = f"rollover {i}"
        record.attributes.add(key="run_id").value.string_value = run
        record.attributes.add(key="data_stream.dataset").value.string_value = DATASET
    return request


@pytest.mark.parametrize("rollovers", [1, 3])
async def test_a_retry_after_a_rollover_stores_each_record_once(
    es: Elasticsearch, stack: Stack, rollovers: int
) -> None:
    """The first bulk is stored but its answer lost; the stream rolls over (once, or three
    times: the records are then three indices behind the write index); the retry (which would
    land in the new write index) finds the records in the old one: each stored once."""
    section = ElasticsearchSinkConfig(urls=[stack.es_url], logs_namespace=ES_TEST_NAMESPACE)
    await apply_templates(section)
    run = uuid.uuid4().hex
    converted = LogsConverter(namespace=ES_TEST_NAMESPACE)(_records(run, 20))
    upstream = urlsplit(stack.es_url)
    async with Proxy(
        upstream.hostname or "127.0.0.1", upstream.port or 9200, postgres=False
    ) as proxy:
        sink = ElasticsearchSink(
            section.model_copy(update={"urls": [f"http://127.0.0.1:{proxy.port}"]})
        )
        async with asyncio.TaskGroup() as tasks:
            await sink.start(tasks)
        try:
            writer = sink.bulk_writer()
            part = Part(payload=converted.payload, items=converted.items, nbytes=converted.nbytes)
            batch = Batch(parts=[part], items=part.items, nbytes=part.nbytes, reason="test")
            proxy.latency_s = LATENCY_S
            batch.attempt = 1
            first = asyncio.create_task(writer.write_batch(batch))
            await asyncio.sleep(LATENCY_S + 0.3)  # stored; the answer is held in the proxy
            await asyncio.to_thread(es.indices.rollover, alias=STREAM)
            assert not first.done(), "the answer must still be on its way"
            await proxy.cut_all()
            with pytest.raises(SinkUnavailable):
                await first
            for _ in range(rollovers - 1):
                await asyncio.to_thread(es.indices.rollover, alias=STREAM)
            proxy.latency_s = 0.0
            batch.attempt = 2
            results = await writer.write_batch(batch)
        finally:
            await sink.stop(time.monotonic() + 5)
    assert results[0].rejected == 0
    es.indices.refresh(index=STREAM)
    found = es.count(index=STREAM, query={"term": {"attributes.run_id": run}})["count"]
    backing = es.indices.resolve_index(name=STREAM)["data_streams"][0]["backing_indices"]
    for index in backing[:-1]:
        es.indices.delete(index=index)
    print(f"20 records, answer lost, {rollovers} rollover(s), retry: {found} stored")
    assert found == 20
