"""Per-tenant ingest limits (items/s, bytes/s), enforced cluster-wide by a token bucket in Redis.

One EVALSHA per request takes the request's items and bytes from every bucket it charges (its
tenant's, or each application's without auth), all or nothing, with Redis's own clock so that
replicas with skewed clocks share one bucket fairly. Over the limit, the request is refused
with `RateLimited` and the time until enough tokens are back (RetryInfo / Retry-After).

While Redis does not answer, each replica enforces `limit / live replicas` with local buckets
(the replica count is the last cluster view's): the cluster-wide total stays near the limit
when the load balancer spreads a tenant's traffic, and nothing waits for Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from ingestd.config import LimitsConfig, TenantLimitConfig
from ingestd.errors import RateLimited, StateUnavailable
from ingestd.model import Signal
from ingestd.observe.metrics import RATELIMIT_LIMITED_ITEMS, RATELIMIT_REQUESTS
from ingestd.retry import SYSTEM_CLOCK, Clock
from ingestd.state.redis import RedisState, Script
from ingestd.tenants import Charge, charges

log = structlog.get_logger("ingestd.state.ratelimit")

# Tenants (applications, without auth) whose rates and local buckets are kept; past it they are
# forgotten. Names are at most `tenants.MAX_NAME_CHARS` long, so this bounds the bytes too.
_MAX_TENANTS = 10_000


@dataclass(frozen=True, slots=True)
class Rate:
    """One bucket's refill rate and size (size = rate x burst_s)."""

    per_s: float
    capacity: float


class TokenBucket:
    """The bucket arithmetic, shared by the local fallback and (in Lua) by Redis.

    A cost above the capacity passes when the bucket is full and leaves it in debt, so a
    request larger than the burst is slowed, never refused forever.
    """

    __slots__ = ("rate", "tokens", "updated_at")

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self.tokens = rate.capacity
        self.updated_at = now

    def wait_s(self, cost: float, now: float) -> float:
        """Seconds until *cost* can be taken (0: now). Refills; takes nothing."""
        elapsed = max(0.0, now - self.updated_at)
        self.tokens = min(self.rate.capacity, self.tokens + elapsed * self.rate.per_s)
        self.updated_at = now
        need = min(cost, self.rate.capacity)
        return 0.0 if self.tokens >= need else (need - self.tokens) / self.rate.per_s

    def take(self, cost: float) -> None:
        self.tokens -= cost


# KEYS: the buckets; ARGV: rate, capacity, cost per bucket. Returns {1, "0"} when every
# bucket had enough (and all were charged), else {0, "<seconds to wait>"} and none charged.
_TAKE = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens, wait = {}, 0
for i = 1, #KEYS do
  local rate, cap, cost = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  local b = redis.call('HMGET', KEYS[i], 'tk', 'ts')
  local tk, ts = tonumber(b[1]), tonumber(b[2])
  if tk == nil or ts == nil then tk, ts = cap, now end
  tk = math.min(cap, tk + math.max(0, now - ts) * rate)
  tokens[i] = tk
  local need = math.min(cost, cap)
  if tk < need then wait = math.max(wait, (need - tk) / rate) end
end
if wait > 0 then return {0, string.format('%.6f', wait)} end
for i = 1, #KEYS do
  local rate, cap, cost = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  local left = tokens[i] - cost
  redis.call('HSET', KEYS[i], 'tk', string.format('%.6f', left), 'ts', string.format('%.6f', now))
  redis.call('PEXPIRE', KEYS[i], math.ceil((cap - left) / rate * 1000) + 1000)
end
return {1, '0'}
"""
)


@dataclass(frozen=True, slots=True)
class TenantRates:
    items: Rate | None
    nbytes: Rate | None


def resolve(config: LimitsConfig, tenant: str) -> TenantRates:
    """A tenant's rates: its own entry's keys, the default's for keys it leaves out."""
    own = config.tenants.get(tenant)
    merged = config.default
    if own is not None:
        merged = config.default.model_copy(
            update={k: getattr(own, k) for k in own.model_fields_set}
        )
    return TenantRates(
        items=_rate(merged.items_per_s, merged),
        nbytes=_rate(float(merged.bytes_per_s) if merged.bytes_per_s else None, merged),
    )


def _rate(per_s: float | None, limits: TenantLimitConfig) -> Rate | None:
    return None if per_s is None else Rate(per_s, per_s * limits.burst_s)


def limited(config: LimitsConfig) -> bool:
    """Whether any tenant has a limit at all (if not, requests are not even counted)."""
    entries = [config.default, *config.tenants.values()]
    return any(e.items_per_s is not None or e.bytes_per_s is not None for e in entries)


class RateLimiter:
    """Charges requests to tenant buckets: in Redis when it answers, locally when not."""

    name = "limits"

    def __init__(
        self,
        config: LimitsConfig,
        redis: RedisState | None,
        *,
        replicas: Callable[[], int] = lambda: 1,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._redis = redis
        self._replicas = replicas
        self._clock = clock
        self._local: dict[tuple[str, str], TokenBucket] = {}
        self._local_share = 1
        self.update(config)

    def update(self, config: LimitsConfig) -> None:
        """Use *config* from now on (a reload); buckets keep their tokens in Redis."""
        self.config = config
        self.active = limited(config)
        self._rates: dict[str, TenantRates] = {}
        self._local.clear()

    async def charge(
        self, signal: Signal, request: Any, tenant: str, wire_bytes: int, *, shared: bool = True
    ) -> None:
        """Take *request*'s items and bytes from its tenants' buckets, or raise RateLimited.

        *shared* False skips Redis (it just failed for this request) and uses local buckets.
        """
        if not self.active:
            return
        owed = charges(signal, request, tenant, wire_bytes)
        buckets = self._buckets(owed)
        if not buckets:
            return
        scope, wait_s = "local", 0.0
        if shared and self._redis is not None:
            try:
                wait_s = await self._take_shared(self._redis, buckets)
                scope = "cluster"
            except StateUnavailable:
                wait_s = self._take_local(buckets)
        else:
            wait_s = self._take_local(buckets)
        if wait_s > 0:
            RATELIMIT_REQUESTS.labels(scope=scope, outcome="limited").inc()
            RATELIMIT_LIMITED_ITEMS.inc(sum(c.items for c in owed))
            who = ", ".join(sorted({c.tenant for c in owed}))[:200]
            raise RateLimited(
                f"over the ingest limit of {who}; retry in {wait_s:.1f}s",
                retry_after_s=max(0.1, round(wait_s, 3)),
            )
        RATELIMIT_REQUESTS.labels(scope=scope, outcome="allowed").inc()

    def _buckets(self, owed: Sequence[Charge]) -> list[tuple[tuple[str, str], Rate, float]]:
        """(tenant, "i" | "b"), rate, cost for every limited bucket *owed* touches."""
        out: list[tuple[tuple[str, str], Rate, float]] = []
        for charge in owed:
            rates = self._rates.get(charge.tenant)
            if rates is None:
                if len(self._rates) >= _MAX_TENANTS:
                    self._rates.clear()
                rates = self._rates[charge.tenant] = resolve(self.config, charge.tenant)
            if rates.items is not None:
                out.append(((charge.tenant, "i"), rates.items, float(charge.items)))
            if rates.nbytes is not None:
                out.append(((charge.tenant, "b"), rates.nbytes, float(charge.nbytes)))
        return out

    async def _take_shared(
        self, redis: RedisState, buckets: list[tuple[tuple[str, str], Rate, float]]
    ) -> float:
        keys = [
            redis.key(b"rl:", tenant.encode(), b":", kind.encode())
            for (tenant, kind), _, _ in buckets
        ]
        args: list[str] = []
        for _, rate, cost in buckets:
            args += [repr(rate.per_s), repr(rate.capacity), repr(cost)]
        allowed, wait = await redis.run_script("ratelimit", _TAKE, keys, args)
        return 0.0 if int(allowed) else float(wait)

    def _take_local(self, buckets: list[tuple[tuple[str, str], Rate, float]]) -> float:
        share = max(1, self._replicas())
        if share != self._local_share:
            self._local.clear()
            self._local_share = share
        now = self._clock.now()
        local: list[tuple[TokenBucket, float]] = []
        wait = 0.0
        for key, rate, cost in buckets:
            bucket = self._local.get(key)
            if bucket is None:
                if len(self._local) >= _MAX_TENANTS:
                    # Application names come from clients: a forgotten bucket starts full again.
                    self._local.clear()
                shared_rate = Rate(rate.per_s / share, rate.capacity / share)
                bucket = self._local[key] = TokenBucket(shared_rate, now)
            wait = max(wait, bucket.wait_s(cost, now))
            local.append((bucket, cost))
        if wait == 0.0:
            for bucket, cost in local:
                bucket.take(cost)
        return wait
