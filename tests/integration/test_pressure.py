"""Shared backpressure on the real Redis: a failing sink closes a signal on every replica."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import pytest

from ingestd.batching import Batcher
from ingestd.config import BatchConfig, BufferConfig, PressureConfig, RetryConfig
from ingestd.errors import SinkUnavailable
from ingestd.model import Signal
from ingestd.observe.health import Health, State
from ingestd.state.pressure import ClusterPressure
from tests.fakes import RecordingWriter
from tests.integration.conftest import Stack
from tests.integration.redis_helpers import redis_state

CONFIG = PressureConfig(publish_interval_s=0.1, stale_after_s=0.5, reopen_s=0)


@contextlib.asynccontextmanager
async def replicas(
    url: str, prefix: str, n: int
) -> AsyncIterator[list[tuple[ClusterPressure, Health]]]:
    """n replicas, each with its own Redis connection, health board and traces batcher."""
    async with contextlib.AsyncExitStack() as stack:
        out = []
        for _ in range(n):
            health = Health()
            health.register("timescale")
            health.set("timescale", State.OK)
            state = await stack.enter_async_context(redis_state(url, prefix, timeout_ms=200))
            pressure = ClusterPressure(CONFIG, state, health, rng=random.Random(1))
            batcher = Batcher(
                "traces",
                RecordingWriter(),
                batch=BatchConfig(),
                buffer=BufferConfig(max_items=100, max_bytes=10_000),
                writers=1,
                retry=RetryConfig(),
            )
            pressure.watch(Signal.TRACES, batcher, "timescale")
            out.append((pressure, health))
        yield out


async def tick(group: list[tuple[ClusterPressure, Health]]) -> None:
    for pressure, _ in group:
        await pressure.tick()
    for pressure, _ in group:  # a second round: everyone has read everyone's latest entry
        await pressure.tick()


async def test_sink_failing_on_a_quorum_closes_every_replica(
    stack: Stack, redis_prefix: str
) -> None:
    """2 of 3 replicas see PostgreSQL down: the third refuses traces too, with a retry hint."""
    async with replicas(stack.redis_url, redis_prefix, 3) as group:
        for _, health in group[:2]:
            health.set("timescale", State.UNAVAILABLE, "connection refused")
        await tick(group)
        healthy = group[2][0]
        with pytest.raises(SinkUnavailable) as info:
            healthy.admit(Signal.TRACES)
        assert info.value.retry_after_s is not None
        assert healthy.live_replicas() == 3
        for _, health in group[:2]:
            health.set("timescale", State.OK)
        await tick(group)
        healthy.admit(Signal.TRACES)


async def test_one_broken_replica_does_not_close_the_others(
    stack: Stack, redis_prefix: str
) -> None:
    """1 of 3 failing is below the quorum: it refuses its own requests, the others admit."""
    async with replicas(stack.redis_url, redis_prefix, 3) as group:
        group[0][1].set("timescale", State.UNAVAILABLE, "no route to host")
        await tick(group)
        with pytest.raises(SinkUnavailable):
            group[0][0].admit(Signal.TRACES)
        group[1][0].admit(Signal.TRACES)
        group[2][0].admit(Signal.TRACES)


async def test_dead_replica_fades_out(stack: Stack, redis_prefix: str) -> None:
    """A replica that stops publishing is no longer counted after stale_after_s."""
    async with replicas(stack.redis_url, redis_prefix, 2) as group:
        await tick(group)
        survivor = group[1][0]
        assert survivor.live_replicas() == 2
        await asyncio.sleep(CONFIG.stale_after_s + 0.1)  # replica 0 is silent from now on
        await survivor.tick()
        assert survivor.live_replicas() == 1
