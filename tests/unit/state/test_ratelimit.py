"""Token-bucket arithmetic, limit resolution per tenant, and the local fallback limiter."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingestd.config import LimitsConfig, TenantLimitConfig
from ingestd.errors import RateLimited
from ingestd.state.ratelimit import Rate, RateLimiter, TokenBucket, limited, resolve
from tests.fakes import FakeClock


def spans_request(n: int, service: str = "checkout") -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", service
    scope = rs.scope_spans.add()
    for _ in range(n):
        scope.spans.add(name="s")
    return request


def test_bucket_starts_full_and_refills_at_its_rate() -> None:
    """A new bucket allows its capacity at once, then refills rate tokens per second."""
    bucket = TokenBucket(Rate(per_s=100, capacity=50), now=0.0)
    assert bucket.wait_s(50, now=0.0) == 0.0
    bucket.take(50)
    assert bucket.wait_s(10, now=0.0) == pytest.approx(0.1)
    assert bucket.wait_s(10, now=0.1) == 0.0


def test_bucket_never_holds_more_than_its_capacity() -> None:
    """A long quiet spell refills to the capacity, not beyond."""
    bucket = TokenBucket(Rate(per_s=100, capacity=50), now=0.0)
    bucket.take(50)
    bucket.wait_s(0, now=1000.0)
    assert bucket.tokens == 50


def test_cost_above_capacity_passes_when_full_and_leaves_debt() -> None:
    """A request larger than the burst is slowed (debt), never refused forever."""
    bucket = TokenBucket(Rate(per_s=100, capacity=50), now=0.0)
    assert bucket.wait_s(120, now=0.0) == 0.0
    bucket.take(120)
    assert bucket.tokens == -70
    # The next one waits for the debt and its own tokens: (70 + 10) / 100 s.
    assert bucket.wait_s(10, now=0.0) == pytest.approx(0.8)


def test_tenant_entry_overrides_only_the_keys_it_sets() -> None:
    """Keys a tenant entry leaves out come from the default; null there means unlimited."""
    config = LimitsConfig(
        default=TenantLimitConfig(items_per_s=1000, bytes_per_s=1_000_000, burst_s=2),
        tenants={
            "acme": TenantLimitConfig(items_per_s=10),
            "free": TenantLimitConfig(items_per_s=None),
        },
    )
    acme, free, other = (resolve(config, t) for t in ("acme", "free", "other"))
    assert acme.items == Rate(10, 20)
    assert acme.nbytes == Rate(1_000_000, 2_000_000)
    assert free.items is None
    assert free.nbytes is not None
    assert other.items == Rate(1000, 2000)


def test_no_limit_configured_means_inactive() -> None:
    """Without any rate anywhere, the limiter does not even count items."""
    assert not limited(LimitsConfig())
    assert limited(LimitsConfig(tenants={"a": TenantLimitConfig(bytes_per_s=10)}))


async def test_local_fallback_enforces_a_share_per_replica() -> None:
    """Without Redis, each of 3 replicas allows a third of the tenant's limit."""
    clock = FakeClock()
    config = LimitsConfig(default=TenantLimitConfig(items_per_s=300, burst_s=1))
    limiter = RateLimiter(config, None, replicas=lambda: 3, clock=clock)
    request = spans_request(10)
    accepted = 0
    for _ in range(1000):  # 10 s of fake time, one request every 10 ms
        try:
            await limiter.charge("traces", request, "", 100)
            accepted += 10
        except RateLimited:
            pass
        clock.t += 0.01
    # 100 items/s for 10 s plus the initial burst of 100.
    assert 1000 <= accepted <= 1100 + 10


async def test_refusal_carries_the_time_until_enough_tokens() -> None:
    """RateLimited's retry hint is how long until the request's items are available."""
    clock = FakeClock()
    config = LimitsConfig(default=TenantLimitConfig(items_per_s=100, burst_s=0.5))
    limiter = RateLimiter(config, None, clock=clock)
    await limiter.charge("traces", spans_request(50), "t", 10)
    with pytest.raises(RateLimited) as info:
        await limiter.charge("traces", spans_request(20), "t", 10)
    assert info.value.retry_after_s == pytest.approx(0.2)


async def test_without_auth_each_application_has_its_own_bucket() -> None:
    """Two applications in one cluster do not share a limit when the tenant is the app."""
    clock = FakeClock()
    config = LimitsConfig(default=TenantLimitConfig(items_per_s=10, burst_s=1))
    limiter = RateLimiter(config, None, clock=clock)
    await limiter.charge("traces", spans_request(10, "a"), "", 10)
    await limiter.charge("traces", spans_request(10, "b"), "", 10)
    with pytest.raises(RateLimited):
        await limiter.charge("traces", spans_request(1, "a"), "", 10)


async def test_reload_applies_new_limits() -> None:
    """update() replaces the limits: a tenant unlimited before is limited after."""
    clock = FakeClock()
    limiter = RateLimiter(LimitsConfig(), None, clock=clock)
    await limiter.charge("traces", spans_request(100), "t", 10)
    limiter.update(LimitsConfig(tenants={"t": TenantLimitConfig(items_per_s=10, burst_s=1)}))
    await limiter.charge("traces", spans_request(100), "t", 10)  # a full bucket, into debt
    with pytest.raises(RateLimited):
        await limiter.charge("traces", spans_request(1), "t", 10)
