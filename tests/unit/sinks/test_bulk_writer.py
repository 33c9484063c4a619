"""The bulk writer: per-document outcomes, item retries, bulk errors, 413 splits, gzip.

Elasticsearch is replaced by a scripted client that reads the real NDJSON body and answers
per document the way `_bulk` does, so the writer's bookkeeping can be checked exactly.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import ApiError, ConnectionError

from ingestd.batching import Batch
from ingestd.config import ElasticsearchSinkConfig, RetryConfig
from ingestd.errors import SinkUnavailable
from ingestd.model import Part
from ingestd.observe.metrics import ES_REJECTED_DOCS
from ingestd.sinks.elasticsearch import BulkWriter
from tests.fakes import FakeClock, settle

# An answer for one document: (status, error type); or an exception for the whole bulk.
Script = Callable[[int, dict[str, Any]], tuple[int, str]]


def item(doc_id: str) -> bytes:
    action = {"create": {"_index": "logs-test.otel-default", "_id": doc_id}}
    return orjson.dumps(action) + b"\n" + orjson.dumps({"id": doc_id}) + b"\n"


def meta(status: int) -> ApiResponseMeta:
    return ApiResponseMeta(
        status=status,
        http_version="1.1",
        headers=HttpHeaders(),
        duration=0.0,
        node=NodeConfig("http", "localhost", 9200),
    )


@dataclass
class Response:
    body: dict[str, Any]


@dataclass
class FakeClient:
    """Answers `_bulk` per document from *script*; remembers every body it was sent."""

    script: Script = lambda n, doc: (201, "")
    bulk_error: list[BaseException] = field(default_factory=list)
    max_docs: int | None = None  # more documents than this in one bulk: 413
    sent: list[list[str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)

    # The documents each backing index holds, and what a search sees: what they held at the
    # last `_refresh`.
    stored_in: dict[str, set[str]] = field(default_factory=dict)
    searchable: dict[str, set[str]] = field(default_factory=dict)
    refresh_error: int | None = None
    refreshes: int = 0
    search_shards_failed: int = 0

    # Bulk tasks running at each `_tasks` look, in order (the last one stays); the documents
    # of a task are stored (in `stored_in`) once it is no longer listed.
    tasks: list[set[str]] = field(default_factory=list)
    stored_when_done: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    tasks_error: int | None = None
    task_looks: int = 0

    async def perform_request(
        self, method: str, path: str, *, headers: dict[str, str], body: bytes | None = None
    ) -> Response:
        if path.startswith("/_tasks"):
            self.task_looks += 1
            if self.tasks_error is not None:
                raise ApiError("forbidden", meta(self.tasks_error), body={})
            running = self.tasks.pop(0) if len(self.tasks) > 1 else next(iter(self.tasks), set())
            for task_id in list(self.stored_when_done):
                if task_id not in running:
                    for index, ids in self.stored_when_done.pop(task_id).items():
                        self.stored_in.setdefault(index, set()).update(ids)
            tasks = {t: {"action": "indices:data/write/bulk"} for t in running}
            return Response({"nodes": {"n": {"tasks": tasks}}})
        if "/_refresh" in path:
            if self.refresh_error is not None:
                raise ApiError("forbidden", meta(self.refresh_error), body={})
            self.refreshes += 1
            self.searchable = {index: set(ids) for index, ids in self.stored_in.items()}
            return Response({"_shards": {}})
        if "/_search" in path:
            assert body is not None
            asked = set(orjson.loads(body)["query"]["ids"]["values"])
            hits = [
                {"_id": doc_id}
                for ids in self.searchable.values()
                for doc_id in sorted(ids & asked)
            ]
            answer: dict[str, Any] = {"hits": {"hits": hits}} if hits else {}
            if self.search_shards_failed:
                answer["_shards"] = {"failed": self.search_shards_failed}
            return Response(answer)
        assert body is not None
        assert (method, path.split("?")[0]) == ("POST", "/_bulk")
        self.headers.append(headers)
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        lines = body.split(b"\n")
        assert lines[-1] == b""
        docs = [orjson.loads(d) for d in lines[1:-1:2]]
        self.sent.append([d["id"] for d in docs])
        if self.bulk_error:
            raise self.bulk_error.pop(0)
        if self.max_docs is not None and len(docs) > self.max_docs:
            raise ApiError("too large", meta(413), body="")
        items = []
        for doc in docs:
            n = self.seen.get(doc["id"], 0)
            self.seen[doc["id"]] = n + 1
            status, error_type = self.script(n, doc)
            result: dict[str, Any] = {"status": status}
            if status >= 300:
                result["error"] = {"type": error_type, "reason": f"{error_type} for {doc['id']}"}
            items.append({"create": result})
        return Response(
            {"errors": any(i["create"]["status"] >= 300 for i in items), "items": items}
        )


@dataclass
class FakeSink:
    config: ElasticsearchSinkConfig
    client: FakeClient


def writer(client: FakeClient, **config: Any) -> tuple[BulkWriter, FakeClock]:
    clock = FakeClock()
    settings = ElasticsearchSinkConfig(
        retry=RetryConfig(initial_backoff_s=0.1, max_backoff_s=1.0), **config
    )
    return BulkWriter(FakeSink(settings, client), clock=clock), clock  # type: ignore[arg-type]


def batch(*parts: list[str]) -> Batch:
    made = [Part(payload=[item(i) for i in ids], items=len(ids), nbytes=0) for ids in parts]
    return Batch(parts=made, items=sum(p.items for p in made), nbytes=0, reason="test")


async def run(w: BulkWriter, clock: FakeClock, b: Batch) -> Any:
    """write_batch while advancing the fake clock through its backoff sleeps."""
    import asyncio

    task = asyncio.ensure_future(w.write_batch(b))
    while not task.done():
        await clock.advance(1.0)
    await settle()
    return task.result()


async def test_all_created() -> None:
    """Every document 201: one bulk, nothing rejected, no part a duplicate."""
    client = FakeClient()
    w, clock = writer(client)
    results = await run(w, clock, batch(["a", "b"], ["c"]))
    assert client.sent == [["a", "b", "c"]]
    assert [(r.rejected, r.duplicate) for r in results] == [(0, False), (0, False)]


async def test_conflict_409_is_an_already_stored_success() -> None:
    """create + deterministic _id: a 409 means stored before; a part all 409 is a duplicate."""
    client = FakeClient(
        script=lambda n, doc: (409 if doc["id"] in "ab" else 201, "version_conflict")
    )
    w, clock = writer(client)
    results = await run(w, clock, batch(["a", "b"], ["c", "a"]))
    assert [(r.rejected, r.duplicate) for r in results] == [(0, True), (0, False)]


async def test_permanent_errors_are_rejected_per_part_and_counted_by_type() -> None:
    """A mapping error rejects that document alone, in its own part, counted by error.type."""
    before = ES_REJECTED_DOCS.labels(error_type="document_parsing_exception")._value.get()
    client = FakeClient(
        script=lambda n, doc: (
            (400, "document_parsing_exception") if doc["id"] == "bad" else (201, "")
        )
    )
    w, clock = writer(client)
    results = await run(w, clock, batch(["ok1"], ["bad", "ok2"]))
    assert client.sent == [["ok1", "bad", "ok2"]]  # never resent
    assert results[0].rejected == 0
    assert results[1].rejected == 1
    assert "document_parsing_exception" in results[1].message
    after = ES_REJECTED_DOCS.labels(error_type="document_parsing_exception")._value.get()
    assert after - before == 1


async def test_429_documents_alone_are_resent_after_backoff() -> None:
    """Documents answered 429 are resent, only they, after a jittered sleep; then stored."""
    client = FakeClient(
        script=lambda n, doc: (
            (429, "es_rejected_execution") if doc["id"] == "b" and n < 2 else (201, "")
        )
    )
    w, clock = writer(client)
    began = clock.now()
    results = await run(w, clock, batch(["a", "b", "c"]))
    assert client.sent == [["a", "b", "c"], ["b"], ["b"]]
    assert results[0].rejected == 0
    assert clock.now() > began


async def test_persistent_429_hands_the_batch_back_and_the_retry_sends_only_the_rest() -> None:
    """After item_retries the batch fails retryably; the batcher's retry skips stored ones."""
    busy = {"on": True}
    client = FakeClient(
        script=lambda n, doc: (
            (503, "unavailable_shards") if doc["id"] == "b" and busy["on"] else (201, "")
        )
    )
    w, clock = writer(client, item_retries=2)
    b = batch(["a"], ["b", "c"])
    with pytest.raises(SinkUnavailable, match="503 unavailable_shards"):
        await run(w, clock, b)
    assert client.sent == [["a", "b", "c"], ["b"], ["b"]]
    busy["on"] = False
    results = await run(w, clock, b)
    assert client.sent[-1] == ["b"]
    assert [r.rejected for r in results] == [0, 0]
    assert client.seen == {"a": 1, "b": 4, "c": 1}  # nothing stored was ever sent again


async def test_missing_template_404_is_retried_not_rejected() -> None:
    """require_data_stream 404 (templates not applied) keeps the data: retryable."""
    client = FakeClient(script=lambda n, doc: (404, "index_not_found_exception"))
    w, clock = writer(client, item_retries=0)
    with pytest.raises(SinkUnavailable, match="index_not_found_exception"):
        await run(w, clock, batch(["a"]))


@pytest.mark.parametrize(
    "error",
    [
        ApiError("busy", meta(429), body={"error": {"type": "es_rejected_execution_exception"}}),
        ApiError("down", meta(503), body={"error": {"type": "cluster_block_exception"}}),
        ApiError("odd", meta(400), body={"error": {"type": "illegal_argument_exception"}}),
        ConnectionError("refused"),
    ],
)
async def test_bulk_level_failures_are_retryable(error: BaseException) -> None:
    """Connection errors and bulk-level 4xx/5xx raise SinkUnavailable; the retry is whole."""
    client = FakeClient(bulk_error=[error])
    w, clock = writer(client)
    b = batch(["a", "b"])
    with pytest.raises(SinkUnavailable):
        await run(w, clock, b)
    results = await run(w, clock, b)
    assert client.sent == [["a", "b"], ["a", "b"]]
    assert results[0].rejected == 0


async def test_413_splits_until_the_bulk_fits() -> None:
    """Too large: halves are sent until they fit; every document stored once, none lost."""
    client = FakeClient(max_docs=2)
    w, clock = writer(client)
    results = await run(w, clock, batch(["a", "b", "c"], ["d", "e"]))
    assert client.seen == dict.fromkeys("abcde", 1)
    assert [r.rejected for r in results] == [0, 0]
    assert client.sent[0] == ["a", "b", "c", "d", "e"]


async def test_a_single_document_too_large_is_rejected_alone() -> None:
    """A document that alone exceeds the server's limit is a permanent reject, not a loop."""
    client = FakeClient(max_docs=0)
    w, clock = writer(client)
    results = await run(w, clock, batch(["a", "b"]))
    assert results[0].rejected == 2
    assert "request_entity_too_large" in results[0].message
    assert len(client.sent) == 3  # [a, b], [a], [b]


async def test_gzip_bodies() -> None:
    """With gzip on, the body is gzip and says so in Content-Encoding."""
    client = FakeClient()
    w, clock = writer(client, gzip=True)
    await run(w, clock, batch(["a"]))
    assert client.headers[0]["content-encoding"] == "gzip"
    assert client.sent == [["a"]]


async def test_mismatched_answer_is_retryable() -> None:
    """An answer with the wrong number of items is not trusted."""

    class Short(FakeClient):
        async def perform_request(self, *args: Any, **kwargs: Any) -> Response:
            answer = await super().perform_request(*args, **kwargs)
            answer.body["errors"] = True
            answer.body["items"].pop()
            return answer

    w, clock = writer(Short())
    with pytest.raises(SinkUnavailable, match="items"):
        await run(w, clock, batch(["a", "b"]))


async def test_each_part_hears_only_about_its_own_records() -> None:
    """A part's partial-success message names its own error type, never another part's values."""
    client = FakeClient(
        script=lambda n, doc: (
            (400, "document_parsing_exception")
            if doc["id"] == "secret-of-a"
            else ((400, "illegal_argument_exception") if doc["id"] == "b-bad" else (201, ""))
        )
    )
    w, clock = writer(client)
    results = await run(w, clock, batch(["secret-of-a"], ["b-ok", "b-bad"], ["c"]))
    assert [r.rejected for r in results] == [1, 1, 0]
    assert (
        results[0].message == "1 log records refused by Elasticsearch (document_parsing_exception)"
    )
    assert (
        results[1].message == "1 log records refused by Elasticsearch (illegal_argument_exception)"
    )
    assert results[2].message == ""
    # The fake's reason quotes the document ("... for secret-of-a"): no part reads it.
    assert not any("secret-of-a" in r.message for r in results)


async def _lost_then_rolled_over(client: FakeClient) -> tuple[BulkWriter, FakeClock, Batch]:
    """A batch of `a`, `b` whose bulk answer is lost (the client's first bulk error); the
    stream then rolls over (w1 was its write index): the writer, its clock and the batch."""
    w, clock = writer(client)
    b = batch(["a", "b"])
    with pytest.raises(SinkUnavailable):
        await run(w, clock, b)
    return w, clock, b


async def test_a_retry_after_a_lost_answer_and_a_rollover_skips_what_was_stored() -> None:
    """The bulk's answer is lost, the stream rolls over, the retry refreshes, finds `a` by id
    in the stream's backing indices and sends only `b`: nothing is stored twice."""
    client = FakeClient(bulk_error=[ConnectionError("reset")])
    w, clock, b = await _lost_then_rolled_over(client)
    client.stored_in = {"w1": {"a"}, "w2": set()}
    results = await run(w, clock, b)
    assert client.sent == [["a", "b"], ["b"]]
    assert client.refreshes == 1
    assert results[0].rejected == 0


async def test_lookups_that_fail_while_the_stream_rolls_over_again_still_find_it() -> None:
    """The lost bulk stored `a` in w1; the first two lookups fail (connections cut) while the
    stream rolls over three times: the third finds `a` in w1, three indices behind the write
    index (the chaos suite's rollover fault stored such records twice when only the two
    indices before the write index were looked in)."""
    client = FakeClient(bulk_error=[ConnectionError("reset")])
    w, clock, b = await _lost_then_rolled_over(client)
    client.stored_in = {"w1": {"a"}}
    client.refresh_error = 503
    for _ in range(2):
        with pytest.raises(SinkUnavailable, match="cannot check"):
            await run(w, clock, b)
    client.refresh_error = None
    client.stored_in.update({"w2": set(), "w3": set(), "w4": set()})
    await run(w, clock, b)
    assert client.sent == [["a", "b"], ["b"]]


async def test_a_lookup_with_failed_shards_leaves_the_batch_uncertain() -> None:
    """A shard that did not answer the search may hold the documents: SinkUnavailable, nothing
    resent; the next lookup, with every shard answering, finds `a` and sends only `b`."""
    client = FakeClient(bulk_error=[ConnectionError("reset")])
    w, clock, b = await _lost_then_rolled_over(client)
    client.stored_in = {"w1": {"a"}}
    client.search_shards_failed = 1
    with pytest.raises(SinkUnavailable, match="1 shards failed"):
        await run(w, clock, b)
    assert client.sent == [["a", "b"]]
    client.search_shards_failed = 0
    await run(w, clock, b)
    assert client.sent == [["a", "b"], ["b"]]


async def test_without_the_refresh_privilege_the_lookup_waits_a_refresh_interval() -> None:
    """`_refresh` answered 403 (no `maintenance` privilege): the lookup waits one refresh
    interval (the stream's own refresh makes the lost bulk searchable), then searches."""
    client = FakeClient(bulk_error=[ConnectionError("reset")])
    w, clock, b = await _lost_then_rolled_over(client)
    client.stored_in = {"w1": {"a"}}
    client.searchable = {"w1": {"a"}}  # what the index's own refresh will have made visible
    client.refresh_error = 403
    before = clock.now()
    await run(w, clock, b)
    assert client.sent == [["a", "b"], ["b"]]
    assert clock.now() - before >= ElasticsearchSinkConfig().templates.refresh_interval_s


async def test_the_lookup_waits_for_the_bulks_running_when_the_answer_was_lost() -> None:
    """The lost bulk is still indexing `a` into the old write index when the retry comes: the
    lookup waits until the bulk tasks running at its first look are done (not for one started
    later), then finds `a` and sends only `b`."""
    client = FakeClient(bulk_error=[ConnectionError("reset")])
    w, clock, b = await _lost_then_rolled_over(client)
    client.tasks = [{"lost"}, {"lost", "later"}, {"later"}]
    client.stored_when_done = {"lost": {"w1": {"a"}}}
    await run(w, clock, b)
    assert client.sent == [["a", "b"], ["b"]]
    assert client.task_looks == 3


async def test_bulks_that_do_not_finish_leave_the_batch_uncertain() -> None:
    """A bulk task still running after the wait's bound: SinkUnavailable, nothing resent; once
    it is done, the retry looks up again and sends only what was not stored."""
    client = FakeClient(bulk_error=[ConnectionError("reset")])
    w, clock, b = await _lost_then_rolled_over(client)
    client.tasks = [{"lost"}]
    client.stored_when_done = {"lost": {"w1": {"a"}}}
    with pytest.raises(SinkUnavailable, match="not done after"):
        await run(w, clock, b)
    assert client.sent == [["a", "b"]]
    client.tasks = [set()]
    await run(w, clock, b)
    assert client.sent == [["a", "b"], ["b"]]


async def test_without_the_monitor_privilege_the_lookup_goes_ahead() -> None:
    """`_tasks` answered 403 (no `monitor` privilege): no wait, the lookup runs as before."""
    client = FakeClient(bulk_error=[ConnectionError("reset")], tasks_error=403)
    w, clock, b = await _lost_then_rolled_over(client)
    client.stored_in = {"w1": {"a"}}
    await run(w, clock, b)
    assert client.sent == [["a", "b"], ["b"]]
    assert client.task_looks == 1


async def test_a_refused_bulk_is_not_looked_up() -> None:
    """A 429 for the whole bulk means nothing was indexed: the retry sends it whole, no lookup."""
    client = FakeClient(bulk_error=[ApiError("busy", meta(429), body={})])
    w, clock = writer(client)
    b = batch(["a"])
    with pytest.raises(SinkUnavailable):
        await run(w, clock, b)
    client.stored_in = {"w1": {"a"}}
    await run(w, clock, b)
    assert client.sent == [["a"], ["a"]]
    assert client.refreshes == 0
