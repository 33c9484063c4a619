"""The Elasticsearch sink: the client to the cluster that holds the logs data streams, and the
bulk writer that the logs batcher drives.

`Batcher(logs) -> BulkWriter.write_batch -> POST /_bulk -> logs-<dataset>-<namespace>`

Every document carries a deterministic `_id` and is written with `create` (convert/logs.py), so
whatever is sent twice is stored once: a 409 means "already stored" and counts as success. That
makes every retry safe, at the bulk level (connection lost, 429, 5xx) and per document, within
one backing index. Across a rollover (the data stream got a new write index between a bulk
whose answer was lost and its retry), the retry first looks its documents up by id in all the
stream's backing indices (`BulkWriter._settle`). What stays open: a replica that dies after its
bulk was stored and before it answered, when the client's retry (on another replica) comes after
a rollover (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import collections
import gzip
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from elasticsearch import ApiError, AsyncElasticsearch, SerializationError, TransportError
from elasticsearch.serializer import OrjsonSerializer

from ingestd.batching import Batch
from ingestd.config import ElasticsearchSinkConfig
from ingestd.errors import SinkUnavailable
from ingestd.model import PartResult
from ingestd.observe.metrics import (
    ES_BULK_BYTES,
    ES_BULK_REQUESTS,
    ES_BULK_SECONDS,
    ES_DOCS,
    ES_REJECTED_DOCS,
)
from ingestd.retry import SYSTEM_CLOCK, Clock, backoff_delays

log = structlog.get_logger("ingestd.sinks.elasticsearch")

# Only what the writer reads: a 10k-document answer shrinks from ~2 MB to ~200 kB of JSON.
# require_data_stream: without our index template a document would land in a plain index with
# guessed mappings (and block the data stream's name); Elasticsearch answers 404 instead.
_BULK_PATH = (
    "/_bulk?require_data_stream=true"
    "&filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason"
)
_NDJSON = {"content-type": "application/x-ndjson", "accept": "application/json"}
_NDJSON_GZIP = {**_NDJSON, "content-encoding": "gzip"}

# Per-document statuses worth sending again: the node was busy (429, rejected execution) or a
# shard unavailable (503); 404 is a missing index template (`ingestd schema apply` fixes it).
_RETRY_ITEM = frozenset({404, 429, 503})
# A bulk too large for the server (its http.max_content_length, or a proxy's limit) is split in
# halves until it fits; a single document still too large is rejected. A 413 is never retried
# as it is (the Collector retries it forever, reference 5.2). Any other bulk-level error is
# retryable: our NDJSON is well-formed, so a 400 there is a server or version problem that no
# split fixes, and a retry is safe (create + _id).
_TOO_LARGE = 413

_STORED, _DUPLICATE, _REJECTED, _RETRY = 1, 2, 3, 4
# States of batches the batcher may hand back after a SinkUnavailable; an evicted one is
# simply sent whole again (the 409s make that safe).
_KEEP_STATES = 64


def make_client(config: ElasticsearchSinkConfig) -> AsyncElasticsearch:
    """One place that turns the config section into a client (used by the sink and `schema`)."""
    auth: dict[str, Any] = {}
    if config.api_key:
        auth["api_key"] = config.api_key
    elif config.username:
        auth["basic_auth"] = (config.username, config.password or "")
    # Compression is the bulk writer's job (level 1, off the event loop); the client's own
    # http_compress would gzip at level 9 on the loop.
    return AsyncElasticsearch(
        config.urls,
        # A 10k-document bulk answer parses ~30% faster than with the stdlib json.
        serializer=OrjsonSerializer(),
        request_timeout=config.request_timeout_s,
        retry_on_timeout=False,
        max_retries=0,
        **auth,
    )


class ElasticsearchSink:
    name = "elasticsearch"

    def __init__(self, config: ElasticsearchSinkConfig) -> None:
        self.config = config
        self._client: AsyncElasticsearch | None = None
        self._probe_client: AsyncElasticsearch | None = None

    @property
    def client(self) -> AsyncElasticsearch:
        if self._client is None:
            raise RuntimeError("ElasticsearchSink used before start()")
        return self._client

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        self._client = make_client(self.config)
        # Built once: options() constructs a whole client, a third of an idle probe's CPU.
        self._probe_client = self._client.options(request_timeout=2.0)

    async def stop(self, deadline: float) -> None:
        self._probe_client = None
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def probe(self) -> None:
        """Return when the cluster answers with a green or yellow health; raise otherwise."""
        if self._probe_client is None:
            raise RuntimeError("ElasticsearchSink used before start()")
        health = await self._probe_client.cluster.health()
        if health["status"] == "red":
            raise RuntimeError("cluster health is red")

    def bulk_writer(self, *, clock: Clock = SYSTEM_CLOCK) -> BulkWriter:
        """The logs batcher's writer; it uses this sink's client (start the sink first)."""
        return BulkWriter(self, clock=clock)


@dataclass(eq=False, slots=True)
class _BatchState:
    """One batch's documents and what Elasticsearch said about each, kept across retries."""

    items: list[bytes]
    part_of: list[int]
    outcome: list[int]
    error: list[str | None]
    reason_example: str = ""
    rejected_types: collections.Counter[str] = field(default_factory=collections.Counter)
    # Documents whose last bulk got no answer (connection lost, 5xx): maybe stored.
    uncertain: set[int] = field(default_factory=set)

    def unfinished(self) -> list[int]:
        return [i for i, o in enumerate(self.outcome) if o == 0 or o == _RETRY]


# Bulk tasks (coordinating and per shard) that `_bulks_in_flight_done` waits for.
_BULK_ACTIONS = "indices:data/write/bulk*"
_IN_FLIGHT_WAIT_S = 30.0
_IN_FLIGHT_POLL_S = 0.1
# Ids per search of `_stored_ids`: twice this many hits stays within max_result_window (10,000).
_LOOKUP_IDS = 5_000


class _TooLarge(Exception):
    def __init__(self, status: int, error_type: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.error_type = error_type
        self.reason = reason


class BulkWriter:
    """Writes each batch of logs parts (lists of bulk items) as `_bulk` requests.

    Implements batching.BatchWriter. Concurrent calls are fine (the batcher runs `writers` of
    them); each works on its own batch.
    """

    name = "elasticsearch"

    def __init__(self, sink: ElasticsearchSink, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._sink = sink
        self._config = sink.config
        self._clock = clock
        self._states: collections.OrderedDict[bytes, _BatchState] = collections.OrderedDict()

    async def write_batch(self, batch: Batch) -> Sequence[PartResult]:
        """Store *batch*; return per part how many documents Elasticsearch refused for good.

        Documents answered 429/503 are resent alone, `item_retries` times with jittered
        backoff; if some are still refused after that, or the bulk as a whole fails
        (connection, 429, 5xx), raises SinkUnavailable and remembers what is already stored,
        so the batcher's retry sends only the rest.
        """
        state = self._states.pop(batch.id, None)
        if state is None:
            state = _new_state(batch)
            if batch.attempt > 1:
                # A retry whose state was evicted: any of it may have been stored.
                state.uncertain.update(range(len(state.items)))
        try:
            if state.uncertain:
                await self._settle(state)
            await self._write(state)
        except SinkUnavailable:
            self._remember(batch.id, state)
            raise
        return self._results(batch, state)

    async def _write(self, state: _BatchState) -> None:
        delays = backoff_delays(self._config.retry)
        todo = state.unfinished()
        for rounds in range(self._config.item_retries + 1):
            if rounds:
                ES_DOCS.labels(outcome="retried").inc(len(todo))
                delay = next(delays)
                if rounds == 1:
                    log.warning(
                        "bulk_documents_retry",
                        documents=len(todo),
                        of=len(state.items),
                        errors=_retry_summary(state, todo),
                        retry_in_s=round(delay, 3),
                    )
                await self._clock.sleep(delay)
            await self._send(state, todo)
            todo = [i for i in todo if state.outcome[i] == _RETRY]
            if not todo:
                return
        raise SinkUnavailable(
            f"elasticsearch: {len(todo)} documents still refused "
            f"({_retry_summary(state, todo)}) after {self._config.item_retries + 1} attempts",
            retry_after_s=2.0,
        )

    def _remember(self, batch_id: bytes, state: _BatchState) -> None:
        self._states[batch_id] = state
        while len(self._states) > _KEEP_STATES:
            self._states.popitem(last=False)

    async def _send(self, state: _BatchState, indices: list[int]) -> None:
        """One `_bulk` of the documents at *indices*; split in halves on 413."""
        if not indices:
            return
        try:
            response = await self._post(b"".join([state.items[i] for i in indices]))
        except SinkUnavailable as exc:
            if not _refused_unread(exc):
                state.uncertain.update(indices)
            raise
        except _TooLarge as exc:
            if len(indices) == 1:
                self._reject(state, indices[0], exc.error_type, exc.reason)
                return
            half = len(indices) // 2
            log.warning(
                "bulk_split",
                status=exc.status,
                documents=len(indices),
                error=f"{exc.error_type}: {exc.reason}"[:300],
            )
            await self._send(state, indices[:half])
            await self._send(state, indices[half:])
            return
        self._read_items(state, indices, response)

    async def _post(self, body: bytes) -> dict[str, Any]:
        ES_BULK_BYTES.labels(kind="uncompressed").inc(len(body))
        headers = _NDJSON
        if self._config.gzip:
            # Level 1: ~10x smaller NDJSON at a fraction of level 9's CPU, in a thread so the
            # event loop keeps serving requests meanwhile.
            body = await asyncio.to_thread(gzip.compress, body, 1, mtime=0)
            headers = _NDJSON_GZIP
        ES_BULK_BYTES.labels(kind="sent").inc(len(body))
        began = time.monotonic()
        outcome = "connection"
        try:
            response = await self._sink.client.perform_request(
                "POST", _BULK_PATH, headers=headers, body=body
            )
            answer: dict[str, Any] = response.body
            outcome = "partial" if answer.get("errors") else "ok"
            return answer
        except ApiError as exc:
            outcome = _bulk_outcome(exc.meta.status)
            error_type, reason = _api_error(exc)
            if exc.meta.status == _TOO_LARGE:
                raise _TooLarge(exc.meta.status, error_type, reason) from exc
            retry_after = _retry_after(exc)
            raise SinkUnavailable(
                f"elasticsearch: bulk answered {exc.meta.status} {error_type}: {reason}"[:500],
                retry_after_s=retry_after,
            ) from exc
        except (TransportError, SerializationError) as exc:
            raise SinkUnavailable(
                f"elasticsearch: {type(exc).__name__}: {exc}"[:500], retry_after_s=2.0
            ) from exc
        finally:
            ES_BULK_REQUESTS.labels(outcome=outcome).inc()
            ES_BULK_SECONDS.labels(outcome=outcome).observe(time.monotonic() - began)

    async def _settle(self, state: _BatchState) -> None:
        """Find the uncertain documents that an unanswered bulk stored.

        A document's `_id` makes a retry a 409 only within one backing index: if the stream
        rolled over between the lost answer and this retry (once or many times: each retry may
        lose its answer too), the retry would land in a newer write index and store the record
        twice. So the uncertain documents are looked up by id in every backing index of their
        stream (`_stored_ids`); those found count as stored. Costs a refresh and a search per
        stream, only after a bulk went unanswered. Raises SinkUnavailable (and stays
        uncertain) when Elasticsearch cannot say.
        """
        by_stream: dict[str, list[tuple[int, str]]] = {}
        for i in sorted(state.uncertain):
            if state.outcome[i] in (0, _RETRY):
                stream, doc_id = _target(state.items[i])
                by_stream.setdefault(stream, []).append((i, doc_id))
        try:
            await self._bulks_in_flight_done()
            found = 0
            for stream, docs in by_stream.items():
                stored = await self._stored_ids(stream, [doc_id for _, doc_id in docs])
                for i, doc_id in docs:
                    if doc_id in stored:
                        state.outcome[i] = _DUPLICATE
                        found += 1
        except (ApiError, TransportError, SerializationError) as exc:
            raise SinkUnavailable(
                f"elasticsearch: cannot check documents of an unanswered bulk: {exc}"[:500],
                retry_after_s=2.0,
            ) from exc
        if found:
            ES_DOCS.labels(outcome="duplicate").inc(found)
            log.warning("bulk_retry_found_stored", documents=found)
        state.uncertain.clear()

    async def _bulks_in_flight_done(self) -> None:
        """Wait until the bulks Elasticsearch is running now have finished.

        A bulk whose answer was lost may still be indexing into the old write index: looked up
        before it is done, its documents are not found, the retry lands in the new write index
        and they are stored twice (seen in the chaos suite's rollover fault on a loaded
        machine). Ours, sent before its answer was lost, is among the bulk tasks running at the
        first look, so waiting for those (not for bulks started later) is enough. Bounded by
        `_IN_FLIGHT_WAIT_S`: after it, SinkUnavailable and the batch stays uncertain. Without
        the `monitor` privilege to list tasks (403), the lookup goes ahead as before.
        """
        waiting: set[str] | None = None
        deadline = self._clock.now() + _IN_FLIGHT_WAIT_S
        while True:
            try:
                response = await self._sink.client.perform_request(
                    "GET",
                    f"/_tasks?actions={_BULK_ACTIONS}&filter_path=nodes.*.tasks.*.id",
                    headers={"accept": "application/json"},
                )
            except ApiError as exc:
                if exc.meta.status in (401, 403):
                    log.warning("bulk_tasks_not_visible", status=exc.meta.status)
                    return
                raise
            running = {
                task_id
                for node in (response.body.get("nodes") or {}).values()
                for task_id in (node.get("tasks") or {})
            }
            waiting = running if waiting is None else waiting & running
            if not waiting:
                return
            if self._clock.now() >= deadline:
                raise SinkUnavailable(
                    f"elasticsearch: {len(waiting)} bulks running since a bulk's answer was "
                    f"lost are not done after {_IN_FLIGHT_WAIT_S:g} s",
                    retry_after_s=2.0,
                )
            await self._clock.sleep(_IN_FLIGHT_POLL_S)

    async def _stored_ids(self, stream: str, ids: list[str]) -> set[str]:
        """Which of *ids* are stored in any backing index of *stream*.

        A refresh first (the lost bulk is done, `_bulks_in_flight_done`, but its documents are
        searchable only after one: `templates.refresh_interval_s` is 5 s), then an `ids`
        search over the stream, `_LOOKUP_IDS` at a time. Without the `maintenance` privilege
        to refresh (401/403), it waits one refresh interval instead. A realtime `_mget` needs
        the concrete backing index, and which ones were the write index since the answer was
        lost is not known: the stream may have rolled over any number of times meanwhile.
        """
        client = self._sink.client
        missing = "ignore_unavailable=true&allow_no_indices=true"
        try:
            await client.perform_request(
                "POST", f"/{stream}/_refresh?{missing}", headers={"accept": "application/json"}
            )
        except ApiError as exc:
            if exc.meta.status not in (401, 403):
                raise
            log.warning("bulk_lookup_refresh_not_allowed", status=exc.meta.status)
            await self._clock.sleep(self._config.templates.refresh_interval_s + 1.0)
        found: set[str] = set()
        for start in range(0, len(ids), _LOOKUP_IDS):
            chunk = ids[start : start + _LOOKUP_IDS]
            query = {
                "query": {"ids": {"values": chunk}},
                # Room for two copies of each (stored twice before this lookup existed).
                "size": 2 * len(chunk),
                "_source": False,
                "track_total_hits": False,
            }
            response = await client.perform_request(
                "POST",
                f"/{stream}/_search?{missing}&filter_path=hits.hits._id,_shards.failed,timed_out",
                headers={"content-type": "application/json", "accept": "application/json"},
                body=orjson.dumps(query),
            )
            answer = response.body
            failed = (answer.get("_shards") or {}).get("failed") or 0
            if failed or answer.get("timed_out"):
                # A shard that did not answer may hold them: not found is not "not stored".
                raise SinkUnavailable(
                    f"elasticsearch: looking up an unanswered bulk's documents in {stream}: "
                    f"{failed} shards failed{', timed out' if answer.get('timed_out') else ''}",
                    retry_after_s=2.0,
                )
            found.update(hit["_id"] for hit in (answer.get("hits") or {}).get("hits") or ())
        return found

    def _read_items(self, state: _BatchState, indices: list[int], answer: dict[str, Any]) -> None:
        outcome = state.outcome
        if not answer.get("errors"):
            for i in indices:
                outcome[i] = _STORED
            ES_DOCS.labels(outcome="stored").inc(len(indices))
            return
        items = answer.get("items", ())
        if len(items) != len(indices):
            raise SinkUnavailable(
                f"elasticsearch: bulk answered {len(items)} items for {len(indices)} documents"
            )
        stored = duplicate = 0
        for i, item in zip(indices, items, strict=True):
            result = next(iter(item.values()))
            status = result.get("status", 0)
            if status < 300:
                outcome[i] = _STORED
                stored += 1
            elif status == 409:
                outcome[i] = _DUPLICATE
                duplicate += 1
            else:
                error = result.get("error") or {}
                error_type = error.get("type", f"http_{status}")
                if status in _RETRY_ITEM:
                    outcome[i] = _RETRY
                    state.error[i] = f"{status} {error_type}"
                else:
                    self._reject(state, i, error_type, error.get("reason", ""))
        ES_DOCS.labels(outcome="stored").inc(stored)
        ES_DOCS.labels(outcome="duplicate").inc(duplicate)

    def _reject(self, state: _BatchState, i: int, error_type: str, reason: str) -> None:
        state.outcome[i] = _REJECTED
        state.error[i] = error_type
        state.rejected_types[error_type] += 1
        if not state.reason_example:
            state.reason_example = f"{error_type}: {reason}"[:500]
        ES_DOCS.labels(outcome="rejected").inc()
        ES_REJECTED_DOCS.labels(error_type=error_type).inc()

    def _results(self, batch: Batch, state: _BatchState) -> list[PartResult]:
        parts = len(batch.parts)
        rejected = [0] * parts
        stored = [0] * parts
        first_error: list[str] = [""] * parts
        for i, p in enumerate(state.part_of):
            o = state.outcome[i]
            if o == _REJECTED:
                rejected[p] += 1
                if not first_error[p]:
                    first_error[p] = state.error[i] or ""
            elif o == _STORED:
                stored[p] += 1
        if state.rejected_types:
            log.warning(
                "bulk_documents_rejected",
                documents=sum(rejected),
                of=len(state.items),
                error_types=dict(state.rejected_types),
                example=state.reason_example,
            )
        results = []
        for p, part in enumerate(batch.parts):
            message = ""
            if rejected[p]:
                # Only the error type of this part's own first refused record: the reason
                # text quotes values, and the batch's example may be another client's record.
                message = (
                    f"{rejected[p]} log records refused by Elasticsearch ({first_error[p]})"
                )[:1000]
            results.append(
                PartResult(
                    rejected=rejected[p],
                    message=message,
                    duplicate=part.items > 0 and stored[p] == 0 and rejected[p] == 0,
                )
            )
        return results


def _target(item: bytes) -> tuple[str, str]:
    """(data stream, _id) of one bulk item, from its action line."""
    action = orjson.loads(item[: item.index(b"\n")])["create"]
    return str(action["_index"]), str(action["_id"])


def _refused_unread(exc: SinkUnavailable) -> bool:
    """Whether Elasticsearch answered that it did not take the bulk (429: nothing indexed)."""
    cause = exc.__cause__
    return isinstance(cause, ApiError) and cause.meta.status == 429


def _new_state(batch: Batch) -> _BatchState:
    items: list[bytes] = []
    part_of: list[int] = []
    for p, part in enumerate(batch.parts):
        items.extend(part.payload)
        part_of.extend([p] * len(part.payload))
    n = len(items)
    return _BatchState(items=items, part_of=part_of, outcome=[0] * n, error=[None] * n)


def _retry_summary(state: _BatchState, todo: list[int]) -> str:
    counts = collections.Counter(state.error[i] for i in todo)
    return ", ".join(f"{n} x {error}" for error, n in counts.most_common(3))


def _bulk_outcome(status: int) -> str:
    if status == 429:
        return "too_many"
    if status == 413:
        return "too_large"
    if status >= 500:
        return "unavailable"
    return "client_error"


def _api_error(exc: ApiError) -> tuple[str, str]:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return str(error.get("type", "")), str(error.get("reason", ""))
    if exc.meta.status == _TOO_LARGE:
        return "request_entity_too_large", str(exc.message)  # often a proxy's, without JSON
    return f"http_{exc.meta.status}", str(exc.message)


def _retry_after(exc: ApiError) -> float:
    value = (exc.meta.headers.get("retry-after") if exc.meta.headers else None) or ""
    try:
        return max(1.0, float(value))
    except ValueError:
        return 2.0
