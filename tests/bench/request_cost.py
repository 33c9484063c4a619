"""CPU per request on the receive path, in-process: idle cost, then a fixed rate of gRPC requests.

`make bench` measures the daemon from outside (its `receive` section gives CPU ms per request at
10,000 spans/s); this runs ingestd's real pipeline (daemon.build, discard sinks, Redis dedup on,
the bench's config) inside this process so that the idle cost and the cost per request can be
told apart, and a cProfile of the loaded window counts calls per request (tasks, futures, metric
lookups): what to cut.

Not a test: it prints numbers. Needs the dev stack (`set -a; . .stack/env; set +a`).

    python -m tests.bench.request_cost                       # 10,000 spans/s, 15 s, no profile
    python -m tests.bench.request_cost --profile cprofile    # + calls per request, own time
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import pstats
import time
import uuid
from typing import Any

from tests.bench.load import ClientPool, RunSpec, answered_requests
from tests.bench.payloads import ITEMS_PER_REQUEST
from tests.bench.subjects import Ports, ingestd_config


def _config(args: argparse.Namespace) -> Any:
    from ingestd import config

    raw = ingestd_config(
        Ports.pick(),
        pg_dsn=os.environ["INGESTD_PG_DSN"],
        es_url=os.environ["INGESTD_ES_URL"],
        redis_url=os.environ["INGESTD_REDIS_URL"],
        redis_prefix=f"reqcost{uuid.uuid4().hex[:8]}:",
        es_namespace="reqcost",
        discard=True,
        ack=args.ack,
    )
    raw["telemetry"]["log_level"] = "warning"
    if args.no_redis:
        raw["redis"] = {"enabled": False}
    return config.parse(json.dumps(raw))


async def _measure(args: argparse.Namespace, pool: ClientPool) -> dict[str, Any]:
    from ingestd.daemon import build
    from ingestd.observe.telemetry import setup_logging
    from ingestd.pipeline import deadline_in

    cfg = _config(args)
    setup_logging(cfg.telemetry)
    daemon = build(cfg)
    target = cfg.receivers.grpc.endpoint
    out: dict[str, Any] = {}
    async with asyncio.TaskGroup() as tasks:
        await daemon.pipeline.start(tasks)
        await asyncio.sleep(2.0)  # startup work (first probes, connections) settles
        cpu0, t0 = time.process_time(), time.monotonic()
        await asyncio.sleep(args.idle)
        out["idle_ms_per_s"] = (time.process_time() - cpu0) / (time.monotonic() - t0) * 1e3

        n = args.clients
        specs = [
            RunSpec(
                signal="traces",
                target=target,
                transport="grpc",
                mode="rate",
                duration_s=args.warmup + args.seconds * (2 if args.profile else 1),
                inflight=16,
                rate=args.rate / n,
                phase=i / n,
            )
            for i in range(n)
        ]
        await asyncio.to_thread(pool.prepare, specs)
        start = pool.go()
        await _sleep_until(start + args.warmup)
        collections = _GcTimer()
        threads0 = _thread_cpu()
        cpu0, w0 = time.process_time(), time.time()
        with collections:
            await _sleep_until(start + args.warmup + args.seconds)
        cpu1, w1 = time.process_time(), time.time()
        threads1 = _thread_cpu()
        if args.profile:
            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
            p0 = time.time()
            await _sleep_until(start + args.warmup + 2 * args.seconds)
            profiler.disable()
            p1 = time.time()
        results = await asyncio.to_thread(pool.collect, 120)
        requests = answered_requests(results, w0, w1)
        cpu_ms = (cpu1 - cpu0) * 1e3
        out |= {
            "offered_spans_per_s": args.rate,
            "window_s": w1 - w0,
            "requests": requests,
            "failed": sum(r.failed_requests for r in results),
            "loaded_ms_per_s": cpu_ms / (w1 - w0),
            "cpu_ms_per_request": cpu_ms / max(1, requests),
            "above_idle_ms_per_request": (cpu_ms - out["idle_ms_per_s"] * (w1 - w0))
            / max(1, requests),
            "cpu_s_per_million_spans": (cpu1 - cpu0) / max(1, requests * ITEMS_PER_REQUEST) * 1e6,
            "gc_ms_per_request": collections.cpu_s * 1e3 / max(1, requests),
            "gc_collections": dict(collections.counts),
            "thread_ms_per_request": {
                name: round((threads1[name] - threads0.get(name, 0.0)) * 1e3 / max(1, requests), 3)
                for name in threads1
                if threads1[name] - threads0.get(name, 0.0) > 0
            },
        }
        if args.profile:
            out["profile"] = _profile_text(profiler, answered_requests(results, p0, p1))
            if args.profile_out:
                profiler.dump_stats(args.profile_out)
        await daemon.pipeline.stop(deadline_in(20))
    return out


def _profile_text(profiler: cProfile.Profile, requests: int) -> str:
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(40)
    per_request = [
        (calls / max(1, requests), total / max(1, requests) * 1e3, f"{file}:{line}({name})")
        for (file, line, name), (_, calls, _, total, _) in stats.stats.items()  # type: ignore[attr-defined]
    ]
    per_request.sort(key=lambda row: -row[1])
    lines = [f"cProfile over {requests} requests (the profiler inflates small calls)"]
    lines.append("calls/request  cumulative ms/request  function")
    lines += [f"{c:13.1f}  {ms:21.3f}  {where[-110:]}" for c, ms, where in per_request[:60]]
    return "\n".join(lines) + "\n\n" + text.getvalue()[-8000:]


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads, summed by thread name (/proc, Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


class _GcTimer:
    """CPU time spent in the cyclic garbage collector while the block runs, by generation."""

    def __init__(self) -> None:
        self.cpu_s = 0.0
        self.counts: dict[int, int] = {}
        self._began = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.process_time()
            return
        self.cpu_s += time.process_time() - self._began
        self.counts[info["generation"]] = self.counts.get(info["generation"], 0) + 1

    def __enter__(self) -> None:
        gc.callbacks.append(self._callback)

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


async def _sleep_until(when: float) -> None:
    await asyncio.sleep(max(0.0, when - time.time()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10_000.0, help="spans/s (512 a request)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--idle", type=float, default=5.0, help="idle window first")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--ack", choices=["committed", "accepted"], default="committed")
    parser.add_argument("--profile", action="store_true", help="cProfile a second window")
    parser.add_argument("--profile-out", help="write the cProfile stats to this file")
    parser.add_argument("--no-redis", action="store_true", help="no Redis: no dedup calls")
    args = parser.parse_args()
    import uvloop

    pool = ClientPool(args.clients)  # spawned before grpc starts in this process
    try:
        out = uvloop.run(_measure(args, pool))
    finally:
        pool.close()
    profile = out.pop("profile", None)
    for key, value in out.items():
        print(f"{key:28} {value:,.3f}" if isinstance(value, float) else f"{key:28} {value}")
    if profile:
        print()
        print(profile)


if __name__ == "__main__":
    main()
