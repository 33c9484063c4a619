"""Idle cost: the CPU an ingestd with no requests spends per second, per process.

Background loops (process sampler, memory guard, health probes, the shared-state publisher,
batcher timers, the supervisor's probes) cost CPU whether or not a request arrives; issue 16's
CPU target counts the whole process. `receive` in `tests/bench/sections.py` records the figure
before its load starts; standalone, this module starts its own ingestd with discarding sinks:

    set -a; . .stack/env; set +a
    .venv/bin/python -m tests.bench.idle_cost --seconds 20 --workers 1 --workers 2

With `workers: N > 1` the root process is the supervisor and its children are the workers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from tests.bench.subjects import Meter, Ports, ingestd_config, running_ingestd

# Loops that run every few seconds (process sampler 5 s, prober 2 s) need a window of several
# of their periods to be counted fairly; 10 s is the least that says something.
DEFAULT_SECONDS = 10.0
QUICK_SECONDS = 3.0
# After "ready", start-up work (pool connects, the first samples) is still settling.
SETTLE_S = 3.0


def _cpu_s(proc: psutil.Process) -> float:
    """CPU seconds of *proc*'s threads: nanoseconds from schedstat (psutil's times are in
    10 ms ticks, too coarse for a process that uses a few ms a second)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{proc.pid}/task"):
            with open(f"/proc/{proc.pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
    except FileNotFoundError:  # a thread that just ended: fall back to the ticks
        times = proc.cpu_times()
        return times.user + times.system
    return total / 1e9


def _cpu_by_pid(processes: list[psutil.Process]) -> dict[int, float]:
    out: dict[int, float] = {}
    for proc in processes:
        try:
            out[proc.pid] = _cpu_s(proc)
        except (psutil.NoSuchProcess, ProcessLookupError):
            continue
    return out


def idle_cpu(meter: Meter, seconds: float = DEFAULT_SECONDS) -> dict[str, Any]:
    """CPU milliseconds per second of each process of *meter*'s tree over *seconds* of idling.

    The root is "supervisor" when it has children (workers: N > 1), else "process"; workers
    are "worker <pid>". The caller must send nothing meanwhile.
    """
    processes = meter.processes()
    before = _cpu_by_pid(processes)
    began = time.monotonic()
    time.sleep(seconds)
    after = _cpu_by_pid(processes)
    elapsed = time.monotonic() - began
    root = meter.root.pid
    per_process: dict[str, float] = {}
    for pid, cpu in after.items():
        if pid not in before:
            continue
        if pid == root:
            name = "supervisor" if len(processes) > 1 else "process"
        else:
            name = f"worker {pid}"
        per_process[name] = round((cpu - before[pid]) * 1000 / elapsed, 2)
    workers = [v for k, v in per_process.items() if k.startswith("worker")]
    return {
        "seconds": round(elapsed, 1),
        "total_ms_per_s": round(sum(per_process.values()), 2),
        "per_worker_ms_per_s": round(sum(workers) / len(workers), 2) if workers else None,
        "per_process": per_process,
    }


def before_load(meter: Meter, *, quick: bool = False) -> dict[str, Any]:
    """The bench's figure (`receive`, before its load): settle, then measure idle CPU."""
    time.sleep(SETTLE_S)
    result = idle_cpu(meter, QUICK_SECONDS if quick else DEFAULT_SECONDS)
    return {"idle_cpu_ms_per_s": result["total_ms_per_s"], **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.idle_cost", description=__doc__)
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--workers", type=int, action="append", help="repeatable; 1")
    parser.add_argument(
        "--sinks",
        choices=["discard", "real"],
        default="discard",
        help="real: PostgreSQL and Elasticsearch probed too (needs the schema in INGESTD_PG_DSN)",
    )
    args = parser.parse_args(argv)
    env = os.environ
    missing = [v for v in ("INGESTD_PG_DSN", "INGESTD_ES_URL", "INGESTD_REDIS_URL") if v not in env]
    if missing:
        print(f"missing {', '.join(missing)}: load .stack/env first", file=sys.stderr)
        return 2
    for workers in args.workers or [1]:
        config = ingestd_config(
            Ports.pick(),
            pg_dsn=env["INGESTD_PG_DSN"],
            es_url=env["INGESTD_ES_URL"],
            redis_url=env["INGESTD_REDIS_URL"],
            redis_prefix=f"idle{uuid.uuid4().hex[:8]}:",
            es_namespace="idle",
            discard=args.sinks == "discard",
            workers=workers,
        )
        with (
            tempfile.TemporaryDirectory(prefix="ingestd-idle-") as workdir,
            running_ingestd(config, Path(workdir)) as subject,
        ):
            time.sleep(SETTLE_S)
            result = idle_cpu(subject.meter, args.seconds)
        print(f"workers={workers} sinks={args.sinks}: {result}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
