"""Logs end to end on the real Elasticsearch: OTLP SDK exporters and published examples in,
documents read back; templates, mapping conflicts, compression and retention.

Every test writes to the shared `ingestdtest` namespace and finds its own records by a run id
(data streams cannot be deleted on the dev stack's Elasticsearch).
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from elasticsearch import BadRequestError, Elasticsearch
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from ingestd.config import Config
from ingestd.convert.identity import application_id_of
from ingestd.convert.logs import LogsConverter
from ingestd.model import Signal
from ingestd.receiver.otlp_json import parse_json
from ingestd.schema.elasticsearch import apply_templates, enforce_retention
from tests.harness import http_url, logs_config, running
from tests.integration.conftest import Stack
from tests.integration.logs_support import post, search, sources

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parents[1] / "data" / "otlp-examples"
PROTOBUF = {"Content-Type": "application/x-protobuf"}


@pytest.fixture(scope="session")
async def templates(es: Elasticsearch, stack: Stack) -> list[str]:
    """The logs templates, applied once per session (idempotent)."""
    return await apply_templates(logs_config(stack.es_url, "ingestdtest").sinks.elasticsearch)


@pytest.fixture
def config(stack: Stack, es_namespace: str, templates: list[str]) -> Config:
    return logs_config(stack.es_url, es_namespace)


@pytest.fixture
async def ingestd(config: Config) -> AsyncIterator[Any]:
    async with running(config) as run:
        yield run.daemon


def emit_sdk_logs(
    exporter: Any, run_id: str, count: int, *, service: str = "checkout"
) -> list[dict[str, Any]]:
    """Log *count* records through the SDK's batch processor and exporter; return what was sent."""
    provider = LoggerProvider(
        resource=Resource.create(
            {
                "service.name": service,
                "service.namespace": "shop",
                "deployment.environment": "test",
                "run.id": run_id,
            }
        )
    )
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, max_export_batch_size=512))
    logger = provider.get_logger("ingestd.tests", "1.0.0")
    sent = []
    base = time.time_ns()
    for i in range(count):
        trace_id, span_id = 0x5B8EFFF798038103D269B633813FC600 + i, 0xEEE19B7EC3C1B100 + i
        context = trace.set_span_in_context(
            NonRecordingSpan(SpanContext(trace_id, span_id, False, TraceFlags(1)))
        )
        record = {
            "timestamp": base + i * 1001,  # nanoseconds that a millisecond clock would lose
            "observed_timestamp": base + i * 1001 + 7,
            "severity_number": SeverityNumber.WARN,
            "severity_text": "WARN",
            "body": f"order {i} shipped via zebra{run_id}",
            "attributes": {"run_id": run_id, "seq": i, "ratio": i / 4, "ok": i % 2 == 0},
        }
        logger.emit(context=context, **record)
        sent.append({**record, "trace_id": f"{trace_id:032x}", "span_id": f"{span_id:016x}"})
    assert provider.force_flush(30_000)
    provider.shutdown()
    return sent


def iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def assert_stored_as_sent(
    stored: list[dict[str, Any]], sent: list[dict[str, Any]], run_id: str
) -> None:
    by_seq = {doc["attributes"]["seq"]: doc for doc in stored}
    assert sorted(by_seq) == list(range(len(sent)))
    app = application_id_of("shop", "checkout", "test")
    for i, record in enumerate(sent):
        doc = by_seq[i]
        assert doc["@timestamp"] == iso(record["timestamp"])
        assert doc["observed_timestamp"] == iso(record["observed_timestamp"])
        assert doc["severity_number"] == 13
        assert doc["severity_text"] == "WARN"
        assert doc["body"] == {"text": record["body"]}
        assert doc["attributes"] == record["attributes"]
        assert doc["trace_id"] == record["trace_id"]
        assert doc["span_id"] == record["span_id"]
        assert doc["flags"] == 1
        assert doc["scope"] == {"name": "ingestd.tests", "version": "1.0.0"}
        assert doc["resource"]["attributes"]["run.id"] == run_id
        assert doc["application_id"] == app
        assert doc["data_stream"] == {
            "type": "logs",
            "dataset": "generic.otel",
            "namespace": "ingestdtest",
        }


async def test_templates_apply_idempotently(templates: list[str], stack: Stack) -> None:
    """apply_templates installs component and index templates; a second run changes nothing."""
    assert any("index template ingestd-logs" in line for line in templates)
    again = await apply_templates(logs_config(stack.es_url, "x").sinks.elasticsearch)
    assert [line for line in again if "template" in line and not line.endswith("unchanged")] == []


async def test_sdk_http_exporter_documents_read_back_equal_what_was_sent(
    ingestd: Any, es: Elasticsearch, run_id: str
) -> None:
    """The OTel SDK's OTLP/HTTP log exporter -> ingestd -> Elasticsearch, field by field."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    exporter = OTLPLogExporter(endpoint=http_url(ingestd), timeout=30)
    sent = await asyncio.to_thread(emit_sdk_logs, exporter, run_id, 700)
    result = await search(es, {"term": {"attributes.run_id": run_id}}, size=1000)
    assert result["hits"]["total"]["value"] == 700
    assert_stored_as_sent(sources(result), sent, run_id)


async def test_sdk_grpc_exporter_documents_read_back_equal_what_was_sent(
    stack: Stack, es: Elasticsearch, run_id: str, templates: list[str]
) -> None:
    """The OTel SDK's OTLP/gRPC log exporter -> ingestd -> Elasticsearch (needs the gRPC stage)."""
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    config = logs_config(stack.es_url, "ingestdtest", grpc=True)
    async with running(config):
        endpoint = config.receivers.grpc.endpoint
        exporter = OTLPLogExporter(endpoint=endpoint, insecure=True, timeout=30)
        sent = await asyncio.to_thread(emit_sdk_logs, exporter, run_id, 300)
    result = await search(es, {"term": {"attributes.run_id": run_id}})
    assert result["hits"]["total"]["value"] == 300
    assert_stored_as_sent(sources(result), sent, run_id)


async def test_full_text_query_finds_a_word_of_the_body(
    ingestd: Any, es: Elasticsearch, run_id: str
) -> None:
    """A match query on one word of the body (body.text, or its alias `message`) finds it."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    await asyncio.to_thread(emit_sdk_logs, OTLPLogExporter(endpoint=http_url(ingestd)), run_id, 3)
    for field in ("body.text", "message"):
        result = await search(es, {"match": {field: f"zebra{run_id}"}})
        assert result["hits"]["total"]["value"] == 3, field
    result = await search(es, {"match_phrase": {"body.text": f"order 1 shipped via zebra{run_id}"}})
    assert [doc["attributes"]["seq"] for doc in sources(result)] == [1]


async def test_a_traces_logs_are_found_by_its_id_and_sorted_by_observed_time(
    ingestd: Any, es: Elasticsearch, es_namespace: str, run_id: str
) -> None:
    """trace_id (and trace.id) and span_id answer term queries, observed_timestamp ranges and
    sorts from doc values; aggregating on a trace id is refused (it has no doc values)."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    # A backing index made from the templates as they are now (other sessions sharing the
    # stack may have written with an older mapping into the current one).
    await asyncio.to_thread(es.indices.rollover, alias=f"logs-generic.otel-{es_namespace}")
    sent = await asyncio.to_thread(
        emit_sdk_logs, OTLPLogExporter(endpoint=http_url(ingestd)), run_id, 3
    )
    mine = {"term": {"attributes.run_id": run_id}}
    for field in ("trace_id", "trace.id"):
        query = {"bool": {"filter": [mine, {"term": {field: sent[1]["trace_id"]}}]}}
        assert [d["attributes"]["seq"] for d in sources(await search(es, query))] == [1], field
    query = {"bool": {"filter": [mine, {"term": {"span_id": sent[2]["span_id"]}}]}}
    assert [d["attributes"]["seq"] for d in sources(await search(es, query))] == [2]
    since = iso(sent[1]["observed_timestamp"])
    query = {"bool": {"filter": [mine, {"range": {"observed_timestamp": {"gte": since}}}]}}
    result = await search(es, query, sort=[{"observed_timestamp": "desc"}])
    assert [d["attributes"]["seq"] for d in sources(result)] == [2, 1]
    # The backing index these records went to (older ones may predate the mapping).
    backing = result["hits"]["hits"][0]["_index"]
    with pytest.raises(BadRequestError, match=r"doc values|fielddata"):
        await search(es, mine, index=backing, size=0, aggs={"t": {"terms": {"field": "trace_id"}}})


async def test_one_applications_logs_of_the_last_hour(
    ingestd: Any, es: Elasticsearch, run_id: str
) -> None:
    """application_id + a time range selects one service's recent logs and nothing else."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    url = http_url(ingestd)
    await asyncio.to_thread(
        emit_sdk_logs, OTLPLogExporter(endpoint=url), run_id, 5, service="billing"
    )
    await asyncio.to_thread(
        emit_sdk_logs, OTLPLogExporter(endpoint=url), run_id, 4, service="search"
    )
    app = application_id_of("shop", "billing", "test")
    query = {
        "bool": {
            "filter": [
                {"term": {"application_id": app}},
                {"range": {"@timestamp": {"gte": "now-1h"}}},
                {"term": {"resource.attributes.run.id": run_id}},
            ]
        }
    }
    result = await search(es, query, sort=[{"@timestamp": "desc"}])
    docs = sources(result)
    assert len(docs) == 5
    assert {d["resource"]["attributes"]["service.name"] for d in docs} == {"billing"}
    assert [d["attributes"]["seq"] for d in docs] == [4, 3, 2, 1, 0]


@pytest.mark.parametrize("name", ["logs.json", "events.json"])
async def test_published_json_examples_are_stored(
    ingestd: Any, es: Elasticsearch, config: Config, name: str
) -> None:
    """opentelemetry-proto's example OTLP/JSON bodies, posted as JSON, are stored exactly."""
    body = (EXAMPLES / name).read_bytes()
    status, answer = await post(http_url(ingestd), body, {"Content-Type": "application/json"})
    assert status == 200, answer
    assert orjson.loads(answer) == {}
    # The examples carry no run id: find their documents by the ids ingestd derives.
    expected = LogsConverter(
        dataset=config.sinks.elasticsearch.logs_dataset,
        namespace=config.sinks.elasticsearch.logs_namespace,
    )(parse_json(Signal.LOGS, body))
    ids = [orjson.loads(item.split(b"\n")[0])["create"]["_id"] for item in expected.payload]
    result = await search(es, {"ids": {"values": ids}})
    # Every run posts the same records with the same ids: one copy per backing index the shared
    # stream has had since (a create is checked against the write index only), all identical.
    copies = sources(result)
    assert copies
    assert all(copy == copies[0] for copy in copies)
    stored = copies[0]
    assert stored == orjson.loads(expected.payload[0].split(b"\n")[1])
    if name == "logs.json":
        assert stored["body"] == {"text": "Example log record"}
        assert stored["trace_id"] == "5b8efff798038103d269b633813fc60c"
        assert stored["attributes"]["map.attribute"] == {"some.map.key": "some value"}
        assert stored["@timestamp"] == "2018-12-13T14:51:00.300000000Z"
    else:
        assert stored["event_name"] == "browser.page_view"
        assert stored["body"]["structured"]["title"] == "Free Online GUID Generator"


def sdk_like_request(
    run_id: str, n: int, **attributes: Any
) -> logs_service_pb2.ExportLogsServiceRequest:
    req = logs_service_pb2.ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    kv = rl.resource.attributes.add(key="service.name")
    kv.value.string_value = "ingestd-tests"
    records = rl.scope_logs.add().log_records
    for i in range(n):
        rec = records.add(time_unix_nano=time.time_ns(), severity_number=9)
        rec.body.string_value = f"line {i} of {run_id}"
        for key, value in {"run_id": run_id, "seq": i, **attributes}.items():
            attr = rec.attributes.add(key=key)
            if isinstance(value, str):
                attr.value.string_value = value
            else:
                attr.value.int_value = value
    return req


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("zstd", lambda b: zstandard.ZstdCompressor().compress(b))],
)
async def test_compressed_requests_are_stored(
    ingestd: Any, es: Elasticsearch, run_id: str, encoding: str, compress: Any
) -> None:
    """gzip and zstd request bodies reach Elasticsearch intact."""
    body = compress(sdk_like_request(run_id, 50).SerializeToString())
    status, _ = await post(http_url(ingestd), body, {**PROTOBUF, "Content-Encoding": encoding})
    assert status == 200
    result = await search(es, {"term": {"attributes.run_id": run_id}})
    assert result["hits"]["total"]["value"] == 50


async def test_mapping_conflict_is_partial_success_and_the_rest_is_stored(
    ingestd: Any, es: Elasticsearch, run_id: str
) -> None:
    """A document the index's mapping refuses is counted in partial_success; the others stay."""
    conflict = "logs-conflict.otel-ingestdtest"
    # A strict field, as an operator might map one (ignore_malformed off): ingestd's own
    # mapping keeps every document, so the conflict is made on purpose.
    status, _ = await post(
        http_url(ingestd),
        sdk_like_request(run_id, 1, **{"data_stream.dataset": "conflict"}).SerializeToString(),
        PROTOBUF,
    )
    assert status == 200
    await asyncio.to_thread(
        es.indices.put_mapping,
        index=conflict,
        properties={
            "attributes": {
                "type": "passthrough",
                "dynamic": True,
                "priority": 20,
                "properties": {"strict_number": {"type": "long", "ignore_malformed": False}},
            }
        },
    )
    req = sdk_like_request(run_id, 0)
    good = sdk_like_request(run_id, 3, strict_number=7, **{"data_stream.dataset": "conflict"})
    bad = sdk_like_request(
        run_id, 1, strict_number="not a number", **{"data_stream.dataset": "conflict"}
    )
    records = req.resource_logs[0].scope_logs[0].log_records
    records.extend(good.resource_logs[0].scope_logs[0].log_records)
    bad_record = bad.resource_logs[0].scope_logs[0].log_records[0]
    bad_record.attributes[1].value.int_value = 99  # its own seq
    records.append(bad_record)

    status, answer = await post(http_url(ingestd), req.SerializeToString(), PROTOBUF)
    assert status == 200
    reply = logs_service_pb2.ExportLogsServiceResponse.FromString(answer)
    assert reply.partial_success.rejected_log_records == 1
    assert "document_parsing_exception" in reply.partial_success.error_message
    # Elasticsearch's reason (it quotes the refused value) stays in the log.
    assert "not a number" not in reply.partial_success.error_message
    assert "strict_number" not in reply.partial_success.error_message
    result = await search(es, {"term": {"attributes.run_id": run_id}})
    seqs = sorted(d["attributes"]["seq"] for d in sources(result))
    assert seqs == [0, 0, 1, 2]  # the first probe record and the three good ones


async def test_conflicting_attribute_types_keep_every_document(
    ingestd: Any, es: Elasticsearch, run_id: str
) -> None:
    """Number, then string, then map, then mixed array under one key: all four are stored."""
    # Its own data stream, rolled over first so that the key is new to the write index and
    # the first type decides its mapping (a per-run key would grow the shared mapping forever).
    stream, key = "logs-typeconflict.otel-ingestdtest", "x_conflict"
    fresh_write_index(es, stream)
    bodies = []
    for value in (5, "abc", {"k": "v"}, [1, "a"]):
        data = {
            "resourceLogs": [
                {
                    "scopeLogs": [
                        {
                            "logRecords": [
                                {
                                    "timeUnixNano": str(time.time_ns()),
                                    "attributes": [
                                        {"key": "run_id", "value": {"stringValue": run_id}},
                                        {"key": key, "value": json_value(value)},
                                        {"key": "dotted.key.name", "value": {"stringValue": "d"}},
                                        {
                                            "key": "data_stream.dataset",
                                            "value": {"stringValue": "typeconflict"},
                                        },
                                    ],
                                }
                            ]
                        }
                    ]
                }
            ]
        }
        bodies.append(orjson.dumps(data))
    for body in bodies:  # one request each: the mapping is settled between them
        status, answer = await post(http_url(ingestd), body, {"Content-Type": "application/json"})
        assert status == 200
        assert orjson.loads(answer) == {}
    result = await search(es, {"term": {"attributes.run_id": run_id}})
    stored = sources(result)
    assert len(stored) == 4
    values = [d["attributes"][key] for d in stored]
    assert sorted(map(str, values)) == sorted(map(str, [5, "abc", {"k": "v"}, ["1", "a"]]))
    ignored = [hit.get("_ignored", []) for hit in result["hits"]["hits"]]
    assert [f"attributes.{key}"] in ignored  # kept in _source, just not indexed
    by_dotted = await search(
        es,
        {"term": {"attributes.dotted.key.name": "d"}},
        post_filter={"term": {"attributes.run_id": run_id}},
    )
    assert by_dotted["hits"]["total"]["value"] >= 4


def fresh_write_index(es: Elasticsearch, stream: str) -> None:
    """Roll *stream* over (if it exists) and delete its older backing indices."""
    if not es.indices.exists(index=stream):
        return
    es.indices.rollover(alias=stream)
    backing = es.indices.get(index=stream, expand_wildcards="all")
    write = max(backing, key=lambda name: int(name.rsplit("-", 1)[1]))
    for index in backing:
        if index != write:
            es.indices.delete(index=index)


def json_value(value: Any) -> dict[str, Any]:
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, dict):
        return {
            "kvlistValue": {
                "values": [{"key": k, "value": json_value(v)} for k, v in value.items()]
            }
        }
    return {"arrayValue": {"values": [json_value(v) for v in value]}}


async def test_enforce_retention_rolls_over_and_deletes_only_expired_indices(
    ingestd: Any, es: Elasticsearch, config: Config, run_id: str
) -> None:
    """Without a lifecycle service: old write indices roll over, expired non-write ones go."""
    stream = "logs-retention.otel-ingestdtest"
    client = ingestd.stages["elasticsearch"].client
    sink = config.sinks.elasticsearch

    def backing() -> list[str]:
        resolved = es.indices.resolve_index(name=stream, expand_wildcards="all")
        return sorted(resolved["data_streams"][0]["backing_indices"])

    body = sdk_like_request(run_id, 1, **{"data_stream.dataset": "retention"}).SerializeToString()
    assert (await post(http_url(ingestd), body, PROTOBUF))[0] == 200
    # Now nothing is past retention (earlier runs left only a write index, maybe a day old).
    result = await enforce_retention(sink, client, pattern=stream)
    assert result["deleted"] == []
    assert (await post(http_url(ingestd), body.replace(b"line", b"LINE"), PROTOBUF))[0] == 200
    before = await asyncio.to_thread(backing)
    await asyncio.to_thread(es.indices.refresh, index=stream)  # docs.count counts refreshed ones
    # Two days later the write index (it holds a document) is rolled over...
    later = time.time() + 2 * 86400
    result = await enforce_retention(sink, client, pattern=stream, now_s=later)
    assert result["rolled_over"] == [stream]
    after_rollover = await asyncio.to_thread(backing)
    assert len(after_rollover) == len(before) + 1
    # ...and past retention every backing index but the write index is deleted.
    much_later = time.time() + (sink.templates.retention_days + 1) * 86400
    result = await enforce_retention(sink, client, pattern=stream, now_s=much_later)
    remaining = await asyncio.to_thread(backing)
    assert remaining == after_rollover[-1:]
    assert sorted(result["deleted"]) == sorted(after_rollover[:-1])
