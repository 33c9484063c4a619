"""Per-tenant rate limits on the real Redis: one bucket shared by every replica."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ingestd.config import LimitsConfig, TenantLimitConfig
from ingestd.errors import RateLimited
from ingestd.state.ratelimit import RateLimiter
from tests.integration.conftest import Stack
from tests.integration.redis_helpers import redis_state
from tests.samples import bare_spans_request

ITEMS_PER_REQUEST = 50


async def replica(
    url: str, prefix: str, config: LimitsConfig, until: float, accepted: list[int]
) -> None:
    """One replica sending the tenant's requests as fast as its limiter lets them through."""
    request = bare_spans_request(ITEMS_PER_REQUEST)
    async with redis_state(url, prefix, timeout_ms=200) as state:
        limiter = RateLimiter(config, state)
        while time.monotonic() < until:
            try:
                await limiter.charge("traces", request, "acme", 1000)
                accepted.append(ITEMS_PER_REQUEST)
            except RateLimited as exc:
                await asyncio.sleep(min(exc.retry_after_s or 0.01, 0.02))


def test_limit_holds_across_three_replicas(stack: Stack, redis_prefix: str) -> None:
    """Three limiters in three threads (own loops, own connections) share N items/s within 10 %."""
    rate, seconds, burst_s = 3000.0, 4.0, 0.2
    config = LimitsConfig(tenants={"acme": TenantLimitConfig(items_per_s=rate, burst_s=burst_s)})
    began = time.monotonic()
    until = began + seconds
    counts: list[list[int]] = [[], [], []]
    threads = [
        threading.Thread(
            target=asyncio.run, args=(replica(stack.redis_url, redis_prefix, config, until, c),)
        )
        for c in counts
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    total = sum(sum(c) for c in counts)
    expected = rate * elapsed + rate * burst_s
    per_replica = [sum(c) for c in counts]
    print(f"\n{total} items in {elapsed:.2f}s; expected {expected:.0f}; per replica {per_replica}")
    assert abs(total - expected) <= 0.10 * expected
    assert all(n > 0 for n in per_replica)


async def test_refusal_says_when_tokens_are_back(stack: Stack, redis_prefix: str) -> None:
    """Over the limit: RateLimited with the wait until the request's items are available."""
    config = LimitsConfig(default=TenantLimitConfig(items_per_s=100, burst_s=1))
    async with redis_state(stack.redis_url, redis_prefix, timeout_ms=200) as state:
        limiter = RateLimiter(config, state)
        await limiter.charge("traces", bare_spans_request(100), "t", 10)
        with pytest.raises(RateLimited) as info:
            await limiter.charge("traces", bare_spans_request(50), "t", 10)
    assert info.value.retry_after_s == pytest.approx(0.5, abs=0.05)


async def test_bytes_limit_is_enforced_alongside_items(stack: Stack, redis_prefix: str) -> None:
    """A tenant under its items limit is still refused when over its bytes limit."""
    config = LimitsConfig(
        default=TenantLimitConfig(items_per_s=1_000_000, bytes_per_s=1000, burst_s=1)
    )
    async with redis_state(stack.redis_url, redis_prefix, timeout_ms=200) as state:
        limiter = RateLimiter(config, state)
        await limiter.charge("traces", bare_spans_request(1), "t", 900)
        with pytest.raises(RateLimited):
            await limiter.charge("traces", bare_spans_request(1), "t", 900)


async def test_refused_request_takes_no_tokens(stack: Stack, redis_prefix: str) -> None:
    """All or nothing: a request refused on one bucket leaves the other bucket untouched."""
    config = LimitsConfig(default=TenantLimitConfig(items_per_s=100, bytes_per_s=100, burst_s=1))
    async with redis_state(stack.redis_url, redis_prefix, timeout_ms=200) as state:
        limiter = RateLimiter(config, state)
        await limiter.charge("traces", bare_spans_request(10), "t", 100)  # bytes now empty
        for _ in range(5):
            with pytest.raises(RateLimited):
                await limiter.charge("traces", bare_spans_request(10), "t", 100)
        # Items were not taken by the refused requests: 90 are left for a bytes-free tenant.
        limiter.update(LimitsConfig(default=TenantLimitConfig(items_per_s=100, burst_s=1)))
        await limiter.charge("traces", bare_spans_request(90), "t", 100)


async def test_limits_fall_back_to_local_share_when_redis_is_down(redis_prefix: str) -> None:
    """Without Redis the limiter still answers, at once, with its share of the limit."""
    config = LimitsConfig(default=TenantLimitConfig(items_per_s=100, burst_s=1))
    async with redis_state("redis://127.0.0.1:1/0", redis_prefix, failures_to_open=1) as state:
        limiter = RateLimiter(config, state, replicas=lambda: 2)
        await limiter.charge("traces", bare_spans_request(50), "t", 10)
        began = time.monotonic()
        with pytest.raises(RateLimited):
            await limiter.charge("traces", bare_spans_request(10), "t", 10)
        assert time.monotonic() - began < 0.005
