"""Dedup of retried requests on the real Redis, with two RedisStates standing for two replicas."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis

from ingestd.config import DedupConfig
from ingestd.errors import InFlightElsewhere
from ingestd.pipeline import deadline_in
from ingestd.state.dedup import Outcome, RedisDedup
from ingestd.state.redis import RedisState
from tests.integration.conftest import Stack
from tests.integration.redis_helpers import redis_state

# Generous: these tests are about dedup outcomes, not timeouts (a loaded CI machine stalls).
TIMEOUT_MS = 200


def dedup(state: RedisState, *, wait_s: float = 2.0, in_flight_ttl_s: float = 35.0) -> RedisDedup:
    config = DedupConfig(ttl_s=60, wait_in_flight_s=wait_s)
    return RedisDedup(config, state, in_flight_ttl_s=in_flight_ttl_s)


@asynccontextmanager
async def two_replicas(stack: Stack, prefix: str) -> AsyncIterator[tuple[RedisState, RedisState]]:
    """Two RedisStates on the same Redis and key prefix, standing for replicas A and B."""
    async with (
        redis_state(stack.redis_url, prefix, timeout_ms=TIMEOUT_MS) as ra,
        redis_state(stack.redis_url, prefix, timeout_ms=TIMEOUT_MS) as rb,
    ):
        yield ra, rb


async def settled(*dedups: RedisDedup) -> None:
    """Wait until background finish/release calls are done."""
    for d in dedups:
        await d.stop(deadline_in(2.0))


async def test_done_request_is_answered_from_another_replica(
    stack: Stack, redis_prefix: str
) -> None:
    """A request finished on replica A is DONE on replica B, with A's stored outcome."""
    key = os.urandom(16)
    async with two_replicas(stack, redis_prefix) as (ra, rb):
        a, b = dedup(ra), dedup(rb, wait_s=0)
        claim = await a.begin(key)
        assert claim.owned
        with pytest.raises(InFlightElsewhere):
            await b.begin(key)
        a.finish(claim, Outcome(2, "bad timestamp"))
        await settled(a)
        again = await b.begin(key)
    assert again.stored == Outcome(2, "bad timestamp")
    assert not again.owned


async def test_retry_waits_for_the_outcome_in_flight_elsewhere(
    stack: Stack, redis_prefix: str
) -> None:
    """B's retry waits while A stores the request, then answers A's outcome without owning it."""
    key = os.urandom(16)
    async with two_replicas(stack, redis_prefix) as (ra, rb):
        a, b = dedup(ra), dedup(rb, wait_s=2.0)
        claim = await a.begin(key)
        waiting = asyncio.create_task(b.begin(key))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        finished_at = time.monotonic()
        a.finish(claim, Outcome())
        result = await waiting
        lag_ms = (time.monotonic() - finished_at) * 1e3
    print(f"\nwaiter learned the outcome {lag_ms:.1f} ms after finish")
    assert result.stored == Outcome()
    assert not result.owned


async def test_released_request_is_taken_over_by_the_waiting_retry(
    stack: Stack, redis_prefix: str
) -> None:
    """When A's attempt fails and releases the key, B's waiting retry owns it and may store it."""
    key = os.urandom(16)
    async with two_replicas(stack, redis_prefix) as (ra, rb):
        a, b = dedup(ra), dedup(rb)
        claim = await a.begin(key)
        waiting = asyncio.create_task(b.begin(key))
        await asyncio.sleep(0.1)
        a.release(claim)
        result = await waiting
    assert result.owned
    assert result.stored is None


async def test_dead_replicas_marker_expires(stack: Stack, redis_prefix: str) -> None:
    """A replica that dies holding a key blocks retries only until its marker's TTL."""
    key = os.urandom(16)
    async with two_replicas(stack, redis_prefix) as (ra, rb):
        claim = await dedup(ra, in_flight_ttl_s=0.4).begin(key)
        assert claim.owned  # ... and replica A is never heard of again
        began = time.monotonic()
        result = await dedup(rb, wait_s=2.0).begin(key)
        waited = time.monotonic() - began
    assert result.owned
    assert 0.2 < waited < 1.0


async def test_release_does_not_delete_a_marker_taken_over_since(
    stack: Stack, redis_prefix: str, redis_client: redis.Redis
) -> None:
    """A late release from a replica whose marker expired leaves the new owner's marker alone."""
    key = os.urandom(16)
    async with two_replicas(stack, redis_prefix) as (ra, rb):
        a = dedup(ra, in_flight_ttl_s=0.1)
        old = await a.begin(key)
        await asyncio.sleep(0.2)
        new = await dedup(rb).begin(key)
        a.release(old)
        await settled(a)
        holder = redis_client.get(f"{redis_prefix}d:".encode() + key)
    assert new.owned
    assert holder == b"F" + rb.replica_id.encode()


async def test_dedup_fails_open_and_resumes_after_redis_restart(
    stack: Stack, redis_prefix: str
) -> None:
    """Redis down: begin answers at once without a claim; back up: dedup works again."""
    async with (
        redis_state(stack.redis_url, redis_prefix, timeout_ms=TIMEOUT_MS, open_s=0.2) as ra,
        redis_state(stack.redis_url, redis_prefix, timeout_ms=TIMEOUT_MS, open_s=0.2) as rb,
    ):
        a, b = dedup(ra), dedup(rb, wait_s=0)
        try:
            await asyncio.to_thread(stack.stop, "redis")
            began = time.monotonic()
            during = await a.begin(os.urandom(16))
            failed_open_ms = (time.monotonic() - began) * 1e3
        finally:
            await asyncio.to_thread(stack.start, "redis")
        key = os.urandom(16)
        for _ in range(100):  # the breaker probes again after open_s
            claim = await a.begin(key)
            if claim.owned:
                break
            await asyncio.sleep(0.05)
        a.finish(claim, Outcome())
        await settled(a)
        after = await b.begin(key)
    print(f"\nbegin with Redis stopped answered in {failed_open_ms:.1f} ms")
    assert not during.owned
    assert not during.redis_ok
    assert claim.owned
    assert after.stored == Outcome()
