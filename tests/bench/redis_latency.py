"""Added latency per request of the Redis round trips: dedup begin + rate limit (+ finish).

Simulates N requests against the dev stack's Redis (loopback) the way Ingest makes the calls,
sequentially and with C requests in flight, and prints p50/p99/max per step. Run:

    set -a; . .stack/env; set +a; .venv/bin/python -m tests.bench.redis_latency [-n 10000] [-c 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

import uvloop
from prometheus_client import REGISTRY

from ingestd.config import DedupConfig, LimitsConfig, RedisConfig, TenantLimitConfig
from ingestd.pipeline import deadline_in
from ingestd.state.dedup import Outcome, RedisDedup
from ingestd.state.ratelimit import RateLimiter
from ingestd.state.redis import RedisState
from tests.samples import bare_spans_request

STEPS = ("begin", "charge", "path", "finish", "total")


async def one(
    dedup: RedisDedup, limiter: RateLimiter, request: object, out: dict[str, list[float]]
) -> None:
    t0 = time.perf_counter()
    claim = await dedup.begin(os.urandom(16))
    t1 = time.perf_counter()
    await limiter.charge("traces", request, "bench", 4096)
    t2 = time.perf_counter()
    # Ingest finishes in the background after the commit; awaited here to time its trip.
    claim.settled = True
    await dedup._finish(claim.key, Outcome())
    t3 = time.perf_counter()
    for step, value in zip(STEPS, (t1 - t0, t2 - t1, t2 - t0, t3 - t2, t3 - t0), strict=True):
        out[step].append(value)


def summary(name: str, out: dict[str, list[float]]) -> None:
    print(f"\n{name}: {len(out['total'])} requests")
    print(f"  {'step':<8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for step in STEPS:
        values = sorted(out[step])
        p50 = statistics.median(values)
        p99 = values[int(len(values) * 0.99)]
        print(f"  {step:<8}{p50 * 1e3:>9.3f}{p99 * 1e3:>9.3f}{values[-1] * 1e3:>9.3f}")


async def main(n: int, concurrency: int) -> None:
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    state = RedisState(RedisConfig(url=os.environ["INGESTD_REDIS_URL"], key_prefix=prefix))
    async with asyncio.TaskGroup() as tasks:
        await state.start(tasks)
    dedup = RedisDedup(DedupConfig(ttl_s=60), state, in_flight_ttl_s=35)
    # A limit far above the load: every request pays the script's round trip, none is refused.
    limits = LimitsConfig(default=TenantLimitConfig(items_per_s=1e9, bytes_per_s=10**12))
    limiter = RateLimiter(limits, state)
    request = bare_spans_request(512)
    for _ in range(200):  # warm: connections, script cache
        await one(dedup, limiter, request, {s: [] for s in STEPS})

    sequential: dict[str, list[float]] = {s: [] for s in STEPS}
    cpu = time.process_time()
    for _ in range(n):
        await one(dedup, limiter, request, sequential)
    summary("sequential (1 request at a time)", sequential)
    print(f"  ingestd-side CPU per request: {(time.process_time() - cpu) / n * 1e3:.3f} ms")

    concurrent: dict[str, list[float]] = {s: [] for s in STEPS}
    began, cpu = time.perf_counter(), time.process_time()
    for _ in range(n // concurrency):
        await asyncio.gather(
            *(one(dedup, limiter, request, concurrent) for _ in range(concurrency))
        )
    elapsed = time.perf_counter() - began
    done = len(concurrent["total"])
    summary(f"{concurrency} requests in flight ({done / elapsed:.0f} req/s)", concurrent)
    print(f"  ingestd-side CPU per request: {(time.process_time() - cpu) / done * 1e3:.3f} ms")

    calls = {
        f"{s.labels['op']}/{s.labels['outcome']}": int(s.value)
        for m in REGISTRY.collect()
        if m.name == "ingestd_redis_calls"
        for s in m.samples
        if s.name.endswith("_total")
    }
    print(f"\nRedis calls by op/outcome: {calls}")
    client = state._client
    assert client is not None
    keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
    for i in range(0, len(keys), 1000):
        await client.delete(*keys[i : i + 1000])
    await dedup.stop(deadline_in(1))
    await state.stop(deadline_in(1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="requests per run")
    parser.add_argument("-c", type=int, default=16, help="requests in flight in the second run")
    args = parser.parse_args()
    uvloop.run(main(args.n, args.c))
