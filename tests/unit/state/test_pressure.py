"""Admission from the pressure view: closing on a failing sink, reopening gradually, hints."""

from __future__ import annotations

import asyncio
import random

import pytest

from ingestd.batching import Batcher
from ingestd.config import BatchConfig, BufferConfig, PressureConfig, RetryConfig
from ingestd.errors import SinkUnavailable
from ingestd.model import Part, Signal
from ingestd.observe.health import Health, State
from ingestd.state.pressure import Admission, ClusterPressure, Gate
from tests.fakes import FakeClock, RecordingWriter

CONFIG = PressureConfig(reopen_s=10.0, max_retry_hint_s=10.0)


def test_gate_closes_on_failure_and_reopens_over_reopen_s() -> None:
    """Closed while failing; then 10 % admitted, growing linearly to all after reopen_s."""
    admission = Admission(CONFIG, random.Random(1))
    assert admission.update(True, now=0.0) is Gate.CLOSED
    assert admission.fraction(1.0) == 0.0
    assert not admission.admit(1.0)
    assert admission.update(False, now=5.0) is Gate.REOPENING
    assert admission.fraction(5.0) == pytest.approx(0.1)
    assert admission.fraction(10.0) == pytest.approx(0.55)
    assert admission.update(False, now=15.0) is Gate.OPEN
    assert admission.admit(15.0)


def test_reopening_admits_about_the_fraction() -> None:
    """Half-way through reopening about 55 % of requests pass."""
    admission = Admission(CONFIG, random.Random(7))
    admission.update(True, now=0.0)
    admission.update(False, now=1.0)
    admitted = sum(admission.admit(6.0) for _ in range(10_000))
    assert 5200 < admitted < 5800


def test_failure_while_reopening_closes_again() -> None:
    """A relapse during reopening closes the gate at once."""
    admission = Admission(CONFIG, random.Random(1))
    admission.update(True, now=0.0)
    admission.update(False, now=1.0)
    assert admission.update(True, now=2.0) is Gate.CLOSED


def test_hint_grows_with_the_outage_and_is_capped() -> None:
    """1 s at first, longer as the outage lasts, never above max_retry_hint_s."""
    admission = Admission(CONFIG, random.Random(1))
    admission.update(True, now=0.0)
    hints = [admission.hint_s(t) for t in (0.0, 4.0, 100.0)]
    assert hints == [1.0, 3.0, 10.0]


def batcher(clock: FakeClock, name: str = "traces") -> Batcher:
    return Batcher(
        name,
        RecordingWriter(),
        batch=BatchConfig(),
        buffer=BufferConfig(max_items=100, max_bytes=10_000),
        writers=1,
        retry=RetryConfig(),
        clock=clock,
    )


async def test_local_view_closes_when_own_sink_is_unavailable() -> None:
    """Without Redis, this replica refuses a signal at once while its sink is unavailable."""
    clock, health = FakeClock(), Health()
    health.register("timescale")
    pressure = ClusterPressure(CONFIG, None, health, clock=clock, rng=random.Random(1))
    pressure.watch(Signal.TRACES, batcher(clock), "timescale")
    health.set("timescale", State.UNAVAILABLE, "connection refused")
    await pressure.tick()
    with pytest.raises(SinkUnavailable) as info:
        pressure.admit(Signal.TRACES)
    assert info.value.retry_after_s == 1.0
    health.set("timescale", State.OK)
    await pressure.tick()
    assert pressure.status()["signals"]["traces"]["gate"] == "reopening"


async def test_cluster_fill_feeds_the_batcher_retry_hint() -> None:
    """The batcher's retry hint grows with the fill the pressure view measured."""
    clock = FakeClock()
    pressure = ClusterPressure(CONFIG, None, None, clock=clock)
    traces = batcher(clock)
    pressure.watch(Signal.TRACES, traces)
    empty_hint = pressure.hint_s(Signal.TRACES)
    await traces.submit(Part(payload=[], items=90, nbytes=100), timeout_s=0)
    await pressure.tick()
    assert pressure.status()["signals"]["traces"]["cluster_fill"] == pytest.approx(0.9)
    assert pressure.hint_s(Signal.TRACES) > empty_hint


async def test_retrying_batcher_closes_and_a_given_up_batch_reopens() -> None:
    """Writes retried for two ticks close the signal; once no batch is retrying, it reopens."""
    clock = FakeClock()
    writer = RecordingWriter()
    writer.failures = [SinkUnavailable("connection refused")] * 1000
    traces = Batcher(
        "traces",
        writer,
        batch=BatchConfig(flush_interval_s=0.1),
        buffer=BufferConfig(max_items=100, max_bytes=10_000),
        writers=1,
        retry=RetryConfig(initial_backoff_s=0.1, max_backoff_s=0.2, max_elapsed_s=3.0),
        clock=clock,
    )
    pressure = ClusterPressure(CONFIG, None, None, clock=clock, rng=random.Random(1))
    pressure.watch(Signal.TRACES, traces)
    async with asyncio.TaskGroup() as tasks:
        await traces.start(tasks)
        await traces.submit(Part(payload=["x"], items=1, nbytes=10), timeout_s=0)
        for _ in range(3):
            await clock.advance(0.5)
            await pressure.tick()
        gate_while_retrying = pressure.status()["signals"]["traces"]["gate"]
        for _ in range(20):  # past retry.max_elapsed_s: the batch is given up
            await clock.advance(0.5)
        await pressure.tick()
        gate_after = pressure.status()["signals"]["traces"]["gate"]
        await traces.stop(clock.now() + 0.1)
    assert gate_while_retrying == "closed"
    assert gate_after == "reopening"
