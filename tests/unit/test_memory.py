"""The memory guard (RSS bound), the process-wide buffer cap, and how batchers share it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

import pytest

from ingestd.batching import Batcher
from ingestd.config import BatchConfig, BufferConfig, MemoryConfig, RetryConfig
from ingestd.errors import MemoryPressure, Overloaded
from ingestd.memory import IDLE_INTERVAL_S, MemoryBudget, MemoryGuard, rss_limit_bytes
from ingestd.model import Part
from tests.fakes import FakeClock, FakeRss, RecordingWriter

MiB = 1024 * 1024


def test_rss_over_the_bound_refuses_and_under_admits() -> None:
    """Over max_rss_mib new requests get MemoryPressure (retryable, with a hint); under, none."""
    rss, clock = FakeRss(100 * MiB), FakeClock()
    guard = MemoryGuard(MemoryConfig(max_rss_mib=200), read_rss=rss, clock=clock)
    guard.sample()
    assert guard.refusal() is None
    rss.value = 300 * MiB
    guard.sample()
    error = guard.refusal()
    assert isinstance(error, MemoryPressure)
    assert error.retryable
    assert error.retry_after_s is not None
    assert error.retry_after_s > 0
    assert guard.status()["shedding"] == ["rss"]
    rss.value = 150 * MiB
    guard.sample()
    assert guard.refusal() is None
    assert guard.status()["shedding"] == ["rss"]  # one episode until a quiet second passed
    clock.t += 1.5
    guard.sample()
    assert guard.status()["shedding"] == []


def test_auto_bound_shares_the_container_limit_among_workers() -> None:
    """auto: 70 % of the cgroup limit divided by the workers; no limit, no guard; 0 is off."""
    gib = 1024 * MiB
    assert rss_limit_bytes(MemoryConfig(), workers=2, limit=gib) == int(gib * 0.70 / 2)
    assert rss_limit_bytes(MemoryConfig(), workers=1, limit=0) == 0
    assert rss_limit_bytes(MemoryConfig(max_rss_mib=0), workers=1, limit=gib) == 0
    assert rss_limit_bytes(MemoryConfig(max_rss_mib=300), workers=4, limit=gib) == 300 * MiB


def test_held_bytes_at_the_cap_refuse_new_requests() -> None:
    """Buffered plus decoding bytes at max_buffered_bytes refuse; below, they admit."""
    guard = MemoryGuard(MemoryConfig(max_buffered_bytes=1000, max_rss_mib=0), read_rss=FakeRss(1))
    guard.budget.hold(600)
    assert guard.refusal() is None
    with guard.budget.decoding_body(400):
        assert isinstance(guard.refusal(), MemoryPressure)
    assert guard.refusal() is None
    guard.budget.release(600)
    assert guard.budget.buffered == 0


def _batcher(name: str, budget: MemoryBudget, writer: RecordingWriter) -> Batcher:
    return Batcher(
        name,
        writer,
        batch=BatchConfig(max_rows=1000, flush_interval_s=10),
        buffer=BufferConfig(max_items=10_000, max_bytes=10_000),
        writers=1,
        retry=RetryConfig(),
        clock=FakeClock(),
        budget=budget,
    )


async def test_batchers_share_the_process_wide_cap() -> None:
    """A second sink's batcher waits, then refuses (memory_full), when the first holds the cap."""
    budget = MemoryBudget(1000)
    writer = RecordingWriter()
    first, second = _batcher("a", budget, writer), _batcher("b", budget, writer)
    await first.submit(Part(payload=[1], items=1, nbytes=800), timeout_s=0)
    with pytest.raises(Overloaded, match="max_buffered_bytes"):
        await second.submit(Part(payload=[2], items=1, nbytes=300), timeout_s=0)
    assert second.status()["refused_memory_full"] == 1
    small = await second.submit(Part(payload=[3], items=1, nbytes=200), timeout_s=0)
    assert small.items == 1
    assert budget.buffered == 1000


async def test_stop_gives_its_bytes_back_to_the_shared_cap() -> None:
    """A stopped batcher's unwritten bytes leave the budget, so the other sinks get the room."""
    budget = MemoryBudget(1000)
    writer = RecordingWriter()
    first = _batcher("a", budget, writer)
    await first.submit(Part(payload=[1], items=1, nbytes=700), timeout_s=0)
    await first.stop(time.monotonic())
    assert budget.buffered == 0


async def test_guard_stops_without_start_and_twice() -> None:
    """The memory guard's stop() is fine before start() and idempotent after it."""
    guard = MemoryGuard(MemoryConfig(), read_rss=FakeRss(MiB))
    await guard.stop(time.monotonic() + 1)
    async with asyncio.TaskGroup() as tasks:
        await guard.start(tasks)
        assert guard.rss == MiB
        await guard.stop(time.monotonic() + 1)
        await guard.stop(time.monotonic() + 1)


def test_requests_admitted_since_the_last_sample_count_towards_the_bound() -> None:
    """Between two samples each admitted request counts 6x the typical body toward RSS, so a
    crowd of large requests cannot all slip in before the next sample."""
    clock = FakeClock()
    guard = MemoryGuard(MemoryConfig(max_rss_mib=200), read_rss=FakeRss(150 * MiB), clock=clock)
    guard.sample()
    with guard.budget.decoding_body(5 * MiB):  # the typical body grows toward 5 MiB
        pass
    typical = guard.budget.typical_body
    guard.sample()
    admitted = 0
    while guard.refusal() is None:
        admitted += 1
    # Each request is checked against those admitted before it, not its own share.
    assert admitted == int(50 * MiB / (6 * typical)) + 1
    guard.sample()  # the new sample holds whatever they really took
    assert guard.refusal() is None


def test_a_late_sample_is_taken_by_the_next_request() -> None:
    """When the sampling task is late (a busy event loop), the next request reads RSS itself."""
    rss, clock = FakeRss(100 * MiB), FakeClock()
    guard = MemoryGuard(
        MemoryConfig(max_rss_mib=200, check_interval_ms=100), read_rss=rss, clock=clock
    )
    guard.sample()
    rss.value = 300 * MiB
    clock.t += 0.05
    assert guard.refusal() is None  # the sample is fresh: no read
    clock.t += 0.1
    assert isinstance(guard.refusal(), MemoryPressure)
    assert guard.rss == 300 * MiB


def test_idle_after_a_load_hands_freed_memory_back_once() -> None:
    """Nothing buffered and nothing admitted since the last sample, with RSS grown since the
    last trim: malloc_trim runs once, and not again until RSS grows again."""
    rss, clock = FakeRss(100 * MiB), FakeClock()
    guard = MemoryGuard(MemoryConfig(max_rss_mib=0), read_rss=rss, clock=clock)
    trims: list[int] = []

    def trim(pad: int) -> int:
        trims.append(pad)
        rss.value = 104 * MiB  # what the load left behind, minus what malloc hands back
        return 1

    guard._malloc_trim = trim
    rss.value = 160 * MiB
    assert guard.refusal() is None  # a request admitted: not idle at the next sample
    guard.sample()
    assert trims == []
    guard.sample()  # idle now
    assert trims == [0]
    assert guard.rss == 104 * MiB
    guard.sample()
    assert trims == [0]  # no growth since the trim


def test_the_sampling_task_slows_down_only_while_quiet() -> None:
    """Nothing admitted, buffered or shed since the last reading: the task reads every
    IDLE_INTERVAL_S; a request, held bytes or shedding bring back check_interval_ms, and a
    request arriving after a quiet spell reads RSS itself."""
    rss, clock = FakeRss(100 * MiB), FakeClock()
    config = MemoryConfig(max_rss_mib=200, check_interval_ms=200)
    guard = MemoryGuard(config, read_rss=rss, clock=clock)
    assert guard.next_sample_in_s() == 0.2  # before any reading
    guard.sample()
    assert guard.next_sample_in_s() == IDLE_INTERVAL_S
    clock.t += 1.0  # the task is asleep; a request arrives with a reading 1 s old
    rss.value = 300 * MiB
    assert isinstance(guard.refusal(), MemoryPressure)  # it read RSS itself
    assert guard.next_sample_in_s() == 0.2  # shedding
    rss.value = 100 * MiB
    clock.t += 1.5
    guard.sample()
    assert guard.status()["shedding"] == []
    assert guard.refusal() is None  # admitted since the reading
    guard.sample()
    assert guard.next_sample_in_s() == 0.2
    guard.budget.hold(10)
    guard.sample()
    assert guard.next_sample_in_s() == 0.2  # bytes held
    guard.budget.release(10)
    guard.sample()
    assert guard.next_sample_in_s() == IDLE_INTERVAL_S


_FREED_BLOCK = textwrap.dedent("""
    import sys
    from ingestd.memory import pin_mmap_threshold

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    if sys.argv[1] == "pin":
        assert pin_mmap_threshold()
    big = bytearray(16 << 20)
    del big  # left to itself, glibc raises its mmap threshold to 16 MiB here
    before = rss()
    block = bytearray(8 << 20)  # zero-filled: every page touched
    del block
    print(rss() - before)
""")


@pytest.mark.parametrize(("mode", "resident"), [("pin", False), ("dynamic", True)])
def test_a_freed_large_block_leaves_the_process_only_with_the_threshold_pinned(
    mode: str, resident: bool
) -> None:
    """After a 16 MiB block is freed, an 8 MiB block freed later stays resident under glibc's
    dynamic threshold and is given back with `pin_mmap_threshold` (fresh process each)."""
    out = subprocess.run(
        [sys.executable, "-c", _FREED_BLOCK, mode], capture_output=True, text=True, check=True
    )
    left = int(out.stdout)
    assert (left > 4 << 20) is resident, f"{left} bytes left resident ({mode})"
