"""The batcher: triggers, bounds, retries, acknowledgement and its stop contract."""

from __future__ import annotations

import asyncio

import pytest

from ingestd.batching import Batcher
from ingestd.config import BatchConfig, BufferConfig, RetryConfig
from ingestd.errors import Overloaded, PayloadTooLarge, Rejected, SinkUnavailable, StageClosed
from ingestd.model import Part
from tests.fakes import FakeClock, RecordingWriter, settle

RETRY = RetryConfig(initial_backoff_s=0.1, max_backoff_s=1.0, max_elapsed_s=5.0)


def make(
    writer: RecordingWriter,
    clock: FakeClock,
    *,
    max_rows: int = 100,
    max_bytes: int = 10_000,
    flush_s: float = 0.2,
    max_items: int = 1000,
    buf_bytes: int = 100_000,
    writers: int = 1,
    retry_until_stopped: bool = False,
    flush_when_idle: bool = False,
) -> Batcher:
    return Batcher(
        "test",
        writer,
        batch=BatchConfig(
            max_rows=max_rows,
            max_bytes=max_bytes,
            flush_interval_s=flush_s,
            flush_when_idle=flush_when_idle,
        ),
        buffer=BufferConfig(max_items=max_items, max_bytes=buf_bytes),
        writers=writers,
        retry=RETRY,
        retry_until_stopped=retry_until_stopped,
        clock=clock,
    )


def part(n: int, tag: str = "r", nbytes: int = 10) -> Part:
    return Part(payload=[f"{tag}{i}" for i in range(n)], items=n, nbytes=n * nbytes)


async def started(batcher: Batcher) -> asyncio.TaskGroup:
    group = asyncio.TaskGroup()
    await group.__aenter__()
    await batcher.start(group)
    return group


async def held(
    *, max_rows: int, max_items: int = 1000
) -> tuple[FakeClock, RecordingWriter, Batcher, asyncio.TaskGroup]:
    """A started batcher whose writer holds every write until `writer.gate` is set."""
    clock, writer = FakeClock(), RecordingWriter()
    writer.gate = asyncio.Event()
    batcher = make(writer, clock, max_rows=max_rows, max_items=max_items)
    return clock, writer, batcher, await started(batcher)


async def finish(batcher: Batcher, group: asyncio.TaskGroup, clock: FakeClock) -> None:
    await batcher.stop(clock.now() + 0.5)
    await group.__aexit__(None, None, None)


async def test_flushes_when_max_rows_reached() -> None:
    """A batch is cut as soon as buffered rows reach max_rows, without waiting for age."""
    clock, writer = FakeClock(), RecordingWriter()
    batcher = make(writer, clock, max_rows=10)
    group = await started(batcher)
    parts = [await batcher.submit(part(5, f"p{i}-"), timeout_s=1) for i in range(2)]
    await settle()
    assert [b.reason for b in writer.batches] == ["size"]
    assert all(p.done.done() for p in parts)
    await finish(batcher, group, clock)


async def test_flushes_by_bytes() -> None:
    """Buffered bytes reaching max_bytes cut a batch."""
    clock, writer = FakeClock(), RecordingWriter()
    batcher = make(writer, clock, max_bytes=100)
    group = await started(batcher)
    await batcher.submit(part(2, nbytes=60), timeout_s=1)
    await settle()
    assert [b.reason for b in writer.batches] == ["bytes"]
    await finish(batcher, group, clock)


async def test_flushes_by_age_of_oldest_row() -> None:
    """A small batch waits until its oldest row is flush_interval_s old, not longer."""
    clock, writer = FakeClock(), RecordingWriter()
    batcher = make(writer, clock, flush_s=0.2)
    group = await started(batcher)
    first = await batcher.submit(part(1, "a"), timeout_s=1)
    await clock.advance(0.15)
    await batcher.submit(part(1, "b"), timeout_s=1)
    await settle()
    assert writer.batches == []
    await clock.advance(0.06)
    assert [b.reason for b in writer.batches] == ["age"]
    assert writer.items == ["a0", "b0"]
    assert first.done.result().rejected == 0
    await finish(batcher, group, clock)


async def test_an_idle_writer_takes_a_part_at_once() -> None:
    """With flush_when_idle, a part reaching an idle writer is written without waiting for age."""
    clock, writer = FakeClock(), RecordingWriter()
    batcher = make(writer, clock, flush_s=0.2, flush_when_idle=True)
    group = await started(batcher)
    first = await batcher.submit(part(1, "a"), timeout_s=1)
    await settle()
    assert [b.reason for b in writer.batches] == ["idle"]
    assert first.done.done()
    await finish(batcher, group, clock)


async def test_a_part_for_an_idle_writer_is_cut_in_submit() -> None:
    """A part that finds a writer idle is a batch when submit returns (no flush-loop wake)."""
    clock, writer = FakeClock(), RecordingWriter()
    batcher = make(writer, clock, flush_s=60, writers=2, flush_when_idle=True)
    group = await started(batcher)
    await settle()
    first = await batcher.submit(part(2, "a"), timeout_s=1)
    assert batcher.status()["pending_items"] == 0
    assert batcher.status()["batches"] == 1
    await settle()
    assert [(b.reason, b.items) for b in writer.batches] == [("idle", 2)]
    assert first.done.result().rejected == 0
    await finish(batcher, group, clock)


async def test_parts_accumulate_while_the_writers_are_busy() -> None:
    """With flush_when_idle, parts arriving during a write share the next batch."""
    clock, writer = FakeClock(), RecordingWriter()
    batcher = make(writer, clock, flush_s=60, writers=1, flush_when_idle=True)
    group = await started(batcher)
    writer.gate = asyncio.Event()  # the first write holds the only writer
    await batcher.submit(part(2, "a"), timeout_s=1)
    await settle()
    later = [await batcher.submit(part(3, f"b{i}-"), timeout_s=1) for i in range(3)]
    await settle()
    assert not any(p.done.done() for p in later)
    writer.gate.set()
    await settle()
    assert [[p.items for p in b.parts] for b in writer.batches] == [[2], [3, 3, 3]]
    assert [b.reason for b in writer.batches] == ["idle", "idle"]
    assert all(p.done.done() for p in later)
    await finish(batcher, group, clock)


async def test_parts_are_never_split_across_batches() -> None:
    """Whole parts go into a batch; a part larger than max_rows is a batch of its own."""
    clock, writer = FakeClock(), RecordingWriter()
    batcher = make(writer, clock, max_rows=10, writers=1)
    group = await started(batcher)
    writer.gate = asyncio.Event()  # hold the writer so several parts queue up
    for n in (4, 4, 25, 3):
        await batcher.submit(part(n), timeout_s=1)
    await settle()
    writer.gate.set()
    await clock.advance(1.0)
    await settle()
    assert [[p.items for p in b.parts] for b in writer.batches] == [[4, 4], [25], [3]]
    await finish(batcher, group, clock)


async def test_full_buffer_refuses_with_retry_hint() -> None:
    """When items would exceed the buffer, submit waits then raises Overloaded with a hint."""
    clock, writer, batcher, group = await held(max_items=10, max_rows=100)
    await batcher.submit(part(8), timeout_s=1)
    with pytest.raises(Overloaded) as info:
        await batcher.submit(part(5), timeout_s=0)
    assert info.value.retry_after_s is not None
    assert info.value.retry_after_s >= 1.0
    writer.gate.set()
    await finish(batcher, group, clock)


async def test_waiting_request_is_admitted_when_room_frees() -> None:
    """A request waiting for room gets in once a batch completes and releases its items."""
    clock, writer, batcher, group = await held(max_items=10, max_rows=8)
    await batcher.submit(part(8, "a"), timeout_s=1)
    waiting = asyncio.create_task(batcher.submit(part(5, "b"), timeout_s=30))
    await settle()
    assert not waiting.done()
    writer.gate.set()
    await settle()
    admitted = await waiting
    await clock.advance(0.3)
    assert admitted.done.done()
    assert writer.items == [f"a{i}" for i in range(8)] + [f"b{i}" for i in range(5)]
    await finish(batcher, group, clock)


async def test_a_part_larger_than_the_buffer_is_refused_at_once() -> None:
    """A part that could never fit is refused permanently instead of waiting forever."""
    clock, writer = FakeClock(), RecordingWriter()
    batcher = make(writer, clock, max_items=10)
    group = await started(batcher)
    with pytest.raises(PayloadTooLarge):
        await batcher.submit(part(11), timeout_s=5)
    await finish(batcher, group, clock)


async def test_transient_errors_are_retried_with_backoff() -> None:
    """SinkUnavailable is retried on the clock; the part completes once a write succeeds."""
    clock, writer = FakeClock(), RecordingWriter()
    writer.failures = [SinkUnavailable("down"), SinkUnavailable("still down")]
    batcher = make(writer, clock, max_rows=1)
    group = await started(batcher)
    p = await batcher.submit(part(1), timeout_s=1)
    await settle()
    assert writer.calls == 1
    await clock.advance(0.2)
    await clock.advance(0.5)
    assert p.done.done()
    assert writer.calls == 3
    assert writer.batches[0].attempt == 3
    await finish(batcher, group, clock)


async def test_retries_stop_after_max_elapsed() -> None:
    """After retry.max_elapsed_s the waiting request is failed with a retryable error."""
    clock, writer = FakeClock(), RecordingWriter()
    writer.failures = [SinkUnavailable("down")] * 100
    batcher = make(writer, clock, max_rows=1)
    group = await started(batcher)
    p = await batcher.submit(part(1), timeout_s=1)
    for _ in range(20):
        await clock.advance(1.0)
    assert isinstance(p.done.exception(), SinkUnavailable)
    assert batcher.held_items == 0
    await finish(batcher, group, clock)


async def test_accepted_mode_retries_until_stopped() -> None:
    """With retry_until_stopped the batch is kept past max_elapsed_s (it was acknowledged)."""
    clock, writer = FakeClock(), RecordingWriter()
    writer.failures = [SinkUnavailable("down")] * 30
    batcher = make(writer, clock, max_rows=1, retry_until_stopped=True)
    group = await started(batcher)
    p = await batcher.submit(part(1), timeout_s=1)
    for _ in range(40):
        await clock.advance(1.0)
    assert p.done.done()
    assert p.done.exception() is None
    await finish(batcher, group, clock)


async def test_permanent_rejection_fails_the_parts() -> None:
    """Rejected from the writer fails the batch's parts at once, without retries."""
    clock, writer = FakeClock(), RecordingWriter()
    writer.failures = [Rejected("mapping conflict")]
    batcher = make(writer, clock, max_rows=1)
    group = await started(batcher)
    p = await batcher.submit(part(1), timeout_s=1)
    await settle()
    assert isinstance(p.done.exception(), Rejected)
    assert writer.calls == 1
    await finish(batcher, group, clock)


async def test_per_part_rejects_are_reported() -> None:
    """A writer's per-part reject counts reach each part's result."""
    clock, writer = FakeClock(), RecordingWriter()
    batcher = make(writer, clock, max_rows=4)
    group = await started(batcher)
    good, bad = part(2, "g"), part(2, "b")
    writer.reject_items[id(bad)] = (1, "value out of range")
    await batcher.submit(good, timeout_s=1)
    await batcher.submit(bad, timeout_s=1)
    await settle()
    assert good.done.result().rejected == 0
    assert bad.done.result().rejected == 1
    assert bad.done.result().message == "value out of range"
    await finish(batcher, group, clock)


# -- the lifecycle battery ---------------------------------------------------------------------


async def test_stop_without_start_is_fine() -> None:
    """stop() on a batcher that never started returns at once."""
    clock = FakeClock()
    batcher = make(RecordingWriter(), clock)
    await batcher.stop(clock.now() + 1)
    with pytest.raises(StageClosed):
        await batcher.submit(part(1), timeout_s=1)


async def test_stop_twice_is_idempotent() -> None:
    """A second stop() returns without error."""
    clock, writer = FakeClock(), RecordingWriter()
    batcher = make(writer, clock)
    group = await started(batcher)
    await batcher.stop(clock.now() + 1)
    await batcher.stop(clock.now() + 1)
    await group.__aexit__(None, None, None)


async def test_stop_flushes_everything_buffered() -> None:
    """start -> consume -> stop delivers every buffered item, cut with reason drain."""
    clock, writer = FakeClock(), RecordingWriter()
    batcher = make(writer, clock, max_rows=1000, flush_s=60)
    group = await started(batcher)
    parts = [await batcher.submit(part(3, f"x{i}-"), timeout_s=1) for i in range(5)]
    await batcher.stop(asyncio.get_running_loop().time() + 5)
    await group.__aexit__(None, None, None)
    assert len(writer.items) == 15
    assert {b.reason for b in writer.batches} == {"drain"}
    assert all(p.done.result().rejected == 0 for p in parts)


async def test_stop_against_clogged_sink_returns_by_deadline() -> None:
    """With a writer that never returns, stop() gives up at the deadline and fails the parts."""
    _, _, batcher, group = await held(max_rows=1)  # the gate is never set
    p = await batcher.submit(part(1), timeout_s=1)
    await settle()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await batcher.stop(loop.time() + 0.2)
    assert loop.time() - began < 1.0
    await group.__aexit__(None, None, None)
    assert isinstance(p.done.exception(), SinkUnavailable)
