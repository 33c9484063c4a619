"""Ingest with the shared-state steps on the real Redis and a recording sink: no double writes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingestd.batching import Batcher
from ingestd.config import (
    BatchConfig,
    BufferConfig,
    DedupConfig,
    IngestConfig,
    LimitsConfig,
    PressureConfig,
    RetryConfig,
    TenantLimitConfig,
)
from ingestd.errors import RateLimited, Rejected, SinkUnavailable
from ingestd.ingest import Ingest, Route
from ingestd.model import Converted, ExportResult, RequestContext, Signal
from ingestd.observe.health import Health, State
from ingestd.pipeline import deadline_in
from ingestd.state.dedup import RedisDedup
from ingestd.state.pressure import ClusterPressure
from ingestd.state.ratelimit import RateLimiter
from tests.fakes import RecordingWriter
from tests.integration.conftest import Stack
from tests.integration.redis_helpers import redis_state
from tests.samples import bare_spans_request

CTX = RequestContext("grpc", "acme")


def convert(request: ExportTraceServiceRequest) -> Converted:
    rows = [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    return Converted(payload=rows, items=len(rows), nbytes=10 * len(rows))


@dataclass
class Replica:
    ingest: Ingest
    writer: RecordingWriter
    health: Health
    pressure: ClusterPressure
    dedup: RedisDedup


@contextlib.asynccontextmanager
async def replica(
    url: str, prefix: str, *, limits: LimitsConfig | None = None
) -> AsyncIterator[Replica]:
    """One ingestd replica's request side: Redis, dedup, pressure, limits, a traces batcher."""
    writer, health = RecordingWriter(), Health()
    health.register("timescale")
    health.set("timescale", State.OK)
    async with redis_state(url, prefix, timeout_ms=200) as state, asyncio.TaskGroup() as tasks:
        batcher = Batcher(
            "traces",
            writer,
            batch=BatchConfig(flush_interval_s=0.01),
            buffer=BufferConfig(),
            writers=1,
            retry=RetryConfig(max_elapsed_s=0.5),
        )
        await batcher.start(tasks)
        dedup = RedisDedup(DedupConfig(wait_in_flight_s=3), state, in_flight_ttl_s=10)
        pressure = ClusterPressure(PressureConfig(reopen_s=0), state, health)
        # Ingest watches the traces batcher and its sink ("timescale") with the pressure.
        ingest = Ingest(
            IngestConfig(ack_timeout_s=5),
            {Signal.TRACES: Route(convert, batcher)},
            dedup=dedup,
            pressure=pressure,
            limits=RateLimiter(limits or LimitsConfig(), state),
        )
        try:
            yield Replica(ingest, writer, health, pressure, dedup)
        finally:
            await dedup.stop(deadline_in(1))
            await batcher.stop(deadline_in(1))


@contextlib.asynccontextmanager
async def two_replicas(stack: Stack, prefix: str) -> AsyncIterator[tuple[Replica, Replica]]:
    """Replicas A and B sharing the dev stack's Redis under `prefix`."""
    async with replica(stack.redis_url, prefix) as a, replica(stack.redis_url, prefix) as b:
        yield a, b


async def export(r: Replica, request: ExportTraceServiceRequest, key: bytes) -> ExportResult:
    return await r.ingest.export(Signal.TRACES, request, key=key, ctx=CTX, wire_bytes=100)


async def test_retry_on_another_replica_is_answered_without_writing(
    stack: Stack, redis_prefix: str
) -> None:
    """The answer to A was lost; the client retries on B: B answers success, writes nothing."""
    request, key = bare_spans_request(5), os.urandom(16)
    async with two_replicas(stack, redis_prefix) as (a, b):
        first = await export(a, request, key)
        await a.dedup.stop(deadline_in(1))  # the done marker is written in the background
        retried = await export(b, request, key)
    assert first == retried == ExportResult()
    assert len(a.writer.items) == 5
    assert b.writer.calls == 0


async def test_retry_while_in_flight_elsewhere_waits_and_writes_once(
    stack: Stack, redis_prefix: str
) -> None:
    """B's retry arrives while A's write hangs; it waits and answers A's outcome."""
    request, key = bare_spans_request(3), os.urandom(16)
    async with two_replicas(stack, redis_prefix) as (a, b):
        a.writer.gate = asyncio.Event()
        first = asyncio.create_task(export(a, request, key))
        await asyncio.sleep(0.2)
        retried = asyncio.create_task(export(b, request, key))
        await asyncio.sleep(0.3)
        assert not retried.done()
        a.writer.gate.set()
        results = await asyncio.gather(first, retried)
    assert results == [ExportResult(), ExportResult()]
    assert len(a.writer.items) == 3
    assert b.writer.calls == 0


async def test_failed_request_can_be_retried_elsewhere(stack: Stack, redis_prefix: str) -> None:
    """A's write is rejected: its claim is released, and B's retry stores the request."""
    request, key = bare_spans_request(2), os.urandom(16)
    async with two_replicas(stack, redis_prefix) as (a, b):
        a.writer.failures.append(Rejected("mapping conflict"))
        with pytest.raises(Rejected):
            await export(a, request, key)
        await a.dedup.stop(deadline_in(1))
        assert await export(b, request, key) == ExportResult()
    assert len(b.writer.items) == 2


async def test_rate_limited_request_is_not_written_and_may_be_retried(
    stack: Stack, redis_prefix: str
) -> None:
    """Over the tenant limit: refused before converting, claim released for a later retry."""
    limits = LimitsConfig(tenants={"acme": TenantLimitConfig(items_per_s=10, burst_s=1)})
    async with replica(stack.redis_url, redis_prefix, limits=limits) as a:
        await export(a, bare_spans_request(10), os.urandom(16))
        key = os.urandom(16)
        with pytest.raises(RateLimited) as info:
            await export(a, bare_spans_request(5), key)
        await a.dedup.stop(deadline_in(1))
        await asyncio.sleep(info.value.retry_after_s or 0)
        assert await export(a, bare_spans_request(5), key) == ExportResult()
    assert len(a.writer.items) == 15


async def test_failing_sink_refuses_at_once_with_a_hint(stack: Stack, redis_prefix: str) -> None:
    """While the sink is unavailable, requests are refused immediately, not after timeouts."""
    async with replica(stack.redis_url, redis_prefix) as a:
        a.health.set("timescale", State.UNAVAILABLE, "connection refused")
        await a.pressure.tick()
        began = time.monotonic()
        with pytest.raises(SinkUnavailable) as info:
            await export(a, bare_spans_request(1), os.urandom(16))
        refused_in = time.monotonic() - began
    assert refused_in < 0.1
    assert info.value.retry_after_s is not None
    assert a.writer.calls == 0
