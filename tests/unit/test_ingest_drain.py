"""Ingest's side of a drain and of memory shedding: refuse new requests, answer waiting ones."""

from __future__ import annotations

import asyncio
import time

import pytest

from ingestd.batching import Batcher
from ingestd.config import BatchConfig, BufferConfig, IngestConfig, MemoryConfig, RetryConfig
from ingestd.convert.traces import TraceConverter
from ingestd.errors import MemoryPressure, StageClosed
from ingestd.ingest import Ingest, Route, answer_deadline
from ingestd.memory import MemoryGuard
from ingestd.model import RequestContext, Signal
from tests.fakes import FakeClock, RecordingWriter, settle
from tests.samples import span_request


def make(memory: MemoryGuard | None = None) -> tuple[Ingest, Batcher, FakeClock]:
    clock = FakeClock()
    batcher = Batcher(
        "traces",
        RecordingWriter(),
        batch=BatchConfig(max_rows=100_000, flush_interval_s=10, flush_when_idle=False),
        buffer=BufferConfig(),
        writers=1,
        retry=RetryConfig(),
        clock=clock,
    )
    converter = TraceConverter(max_future_skew_s=3600)
    ingest = Ingest(IngestConfig(), {Signal.TRACES: Route(converter, batcher)}, memory=memory)
    return ingest, batcher, clock


async def export(ingest: Ingest, tag: str) -> object:
    request = span_request(3, tag=tag)
    return await ingest.export(
        Signal.TRACES,
        request,
        key=tag.encode(),
        ctx=RequestContext("grpc"),
        wire_bytes=request.ByteSize(),
    )


async def test_drain_refuses_new_requests_and_answers_waiting_ones_by_the_deadline() -> None:
    """After begin_drain new requests are refused; one still waiting at the deadline gets
    StageClosed (UNAVAILABLE + RetryInfo), not silence."""
    ingest, batcher, _ = make()
    async with asyncio.TaskGroup() as tasks:
        await batcher.start(tasks)
        assert ingest.admission_error() is None
        waiting = asyncio.ensure_future(export(ingest, "a"))
        await settle()
        assert not waiting.done()  # buffered, its batch not cut yet (FakeClock does not move)
        ingest.begin_drain(time.monotonic())
        refusal = ingest.admission_error()
        assert isinstance(refusal, StageClosed)
        assert refusal.retry_after_s == 1.0
        await asyncio.sleep(0)  # the deadline's call_later(0) runs
        await settle()
        with pytest.raises(StageClosed, match="not stored before shutdown"):
            await waiting
        await batcher.stop(time.monotonic())


async def test_answer_deadline_leaves_time_before_the_stop_deadline() -> None:
    """Waiting requests are answered 10 % of the time left (at most 2 s) before the end."""
    now = time.monotonic()
    assert answer_deadline(now + 10) == pytest.approx(now + 9, abs=0.05)
    assert answer_deadline(now + 60) == pytest.approx(now + 58, abs=0.05)


async def test_memory_over_the_bound_is_an_admission_error() -> None:
    """With the RSS guard on, admission_error returns MemoryPressure before any decoding."""
    guard = MemoryGuard(MemoryConfig(max_rss_mib=1), read_rss=lambda: 2 * 1024 * 1024)
    guard.sample()
    ingest, _, _ = make(guard)
    assert isinstance(ingest.admission_error(), MemoryPressure)
