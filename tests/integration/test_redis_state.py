"""Redis access never stops ingest: every call bounded by the timeout, the breaker, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
import redis

from ingestd.errors import StateUnavailable
from ingestd.observe.health import Health, State
from ingestd.state.redis import BreakerState, RedisState, Script
from tests.integration.conftest import Stack
from tests.integration.redis_helpers import redis_state, silent_server

TIMEOUT_MS = 25
# asyncio wakes a timed-out call on a later loop iteration; allow that much scheduling.
SLACK_S = 0.010


class LoopLag:
    """How late the event loop ran a 1 ms sleep at worst: the machine's share of a latency."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            began = time.monotonic()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, time.monotonic() - began - 0.001)

    def stop(self) -> float:
        self._task.cancel()
        return self.worst


def report(what: str, latencies: list[float], lag_s: float) -> None:
    worst, calls = max(latencies) * 1e3, len(latencies)
    print(f"\n{what}: {calls} calls, max {worst:.1f} ms, loop lag {lag_s * 1e3:.1f} ms")


def bound_s(lag_s: float) -> float:
    """The most a call may take: the timeout, scheduling slack, and the loop's own lateness."""
    return TIMEOUT_MS / 1000 + SLACK_S + lag_s


async def hammer(state: RedisState, stop: asyncio.Event, latencies: list[float]) -> None:
    """Call PING like a stream of requests would (each then works ~5 ms), timing every call."""
    while not stop.is_set():
        began = time.monotonic()
        with contextlib.suppress(StateUnavailable):  # a request fails open and goes on
            await state.command("ping", "PING")
        latencies.append(time.monotonic() - began)
        await asyncio.sleep(0.005)


async def test_calls_to_a_hung_server_are_bounded_and_open_the_breaker() -> None:
    """A server that never answers costs each call at most the timeout; the breaker opens."""
    async with silent_server() as url, redis_state(url, "t:", timeout_ms=TIMEOUT_MS) as state:
        stop, latencies, lag = asyncio.Event(), [], LoopLag()
        workers = [asyncio.create_task(hammer(state, stop, latencies)) for _ in range(20)]
        await asyncio.sleep(0.6)
        opened = state.breaker.state
        stop.set()
        await asyncio.gather(*workers)
        worst_lag = lag.stop()
    report("hung server", latencies, worst_lag)
    assert opened is not BreakerState.CLOSED
    assert max(latencies) <= bound_s(worst_lag)
    # Once open, calls return at once instead of waiting for the timeout.
    assert sum(1 for lat in latencies if lat < 0.005) > len(latencies) / 2


async def test_stopped_redis_opens_breaker_degrades_and_recovers(
    stack: Stack, redis_client: redis.Redis, redis_prefix: str
) -> None:
    """Redis stopped: calls fail fast, breaker opens, health DEGRADED; restarted: OK again."""
    health = Health()
    async with redis_state(stack.redis_url, redis_prefix, health=health, open_s=0.3) as state:
        await state.probe()
        stop, latencies = asyncio.Event(), []
        workers = [asyncio.create_task(hammer(state, stop, latencies)) for _ in range(10)]
        seen: set[BreakerState] = set()
        await asyncio.sleep(0.3)
        latencies.clear()  # measure from a warm pool: the stop, not 10 connections opening
        lag = LoopLag()
        try:
            await asyncio.to_thread(stack.stop, "redis")
            for _ in range(50):
                seen.add(state.breaker.state)
                await asyncio.sleep(0.01)
            degraded = health.get("redis").state
        finally:
            await asyncio.to_thread(stack.start, "redis")
        for _ in range(200):  # the breaker's half-open probe closes it within open_s
            if state.breaker.state is BreakerState.CLOSED:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*workers)
        worst_lag = lag.stop()
        recovered = state.breaker.state
        await state.probe()
    report("redis stopped", latencies, worst_lag)
    assert BreakerState.OPEN in seen
    assert degraded is State.DEGRADED
    assert recovered is BreakerState.CLOSED
    assert health.get("redis").state is State.OK
    assert max(latencies) <= bound_s(worst_lag)


async def test_breaker_open_raises_without_calling(redis_prefix: str) -> None:
    """While open, a call raises StateUnavailable at once (counted, nothing sent)."""
    async with redis_state("redis://127.0.0.1:1/0", redis_prefix, failures_to_open=1) as state:
        with pytest.raises(StateUnavailable):
            await state.probe()
        assert state.breaker.state is BreakerState.OPEN
        began = time.monotonic()
        with pytest.raises(StateUnavailable, match="breaker open"):
            await state.probe()
        assert time.monotonic() - began < 0.005


async def test_script_is_loaded_again_after_redis_lost_its_cache(
    stack: Stack, redis_client: redis.Redis, redis_prefix: str
) -> None:
    """After a restart (here: SCRIPT FLUSH) EVALSHA's NOSCRIPT is answered by loading it again."""
    script = Script("return tonumber(ARGV[1]) + 1")
    async with redis_state(stack.redis_url, redis_prefix) as state:
        assert await state.run_script("test", script, [], [1]) == 2
        redis_client.script_flush()
        assert await state.run_script("test", script, [], [41]) == 42
        assert state.breaker.failures == 0


async def test_concurrent_commands_share_round_trips(stack: Stack, redis_prefix: str) -> None:
    """Commands issued together all get their own answers (pipelined, in order)."""
    async with redis_state(stack.redis_url, redis_prefix, timeout_ms=500) as state:
        keys = [f"{redis_prefix}k{i}".encode() for i in range(50)]
        await asyncio.gather(*(state.command("set", "SET", k, k) for k in keys))
        values = await asyncio.gather(*(state.command("get", "GET", k) for k in keys))
    assert values == keys
