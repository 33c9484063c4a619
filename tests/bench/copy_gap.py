"""Where the gap between ingestd's stored rows/s and a raw binary COPY comes from (issue 16).

Not a test: it prints numbers. Needs the dev stack (`set -a; . .stack/env; set +a`).

    python -m tests.bench.copy_gap --signal traces --seconds 8
    python -m tests.bench.copy_gap --signal metrics --modes raw_unique,sink

No receiver, no batcher: the rows of distinct benchmark requests (tests/bench/payloads.py, the
native codec) are converted before the clock starts, and *writers* tasks on one event loop
write them, 16 requests (8,192 rows) per transaction, into a fresh database per mode:
- raw_repeat: COPY only, each writer cycling over the rows of its first 32 requests (what
  `tests/bench/baselines.py` does: the same ids and times again and again);
- raw_unique: COPY only, every request once (distinct ids and times, as ingestd receives them);
- sink: `TimescaleWriter.write_batch` of the real sink (ledger read, dimension upserts, COPY,
  ledger insert, commit, pool checkout with its check).
Per mode: rows/s, the CPU of the database's server processes per 1,000 rows, the client's
CPU, and (sink) the wall time of each step of a batch. `--loop-busy 0.3` holds the writers'
event loop 30 % of the time (as a receiver converting requests on it would). Findings of
2026-12-05: docs/design.md, "Stored rows/s against a raw COPY".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import psutil
import psycopg
import xxhash

from tests.bench import stores
from tests.bench.core_profile import create_database

PARTS_PER_BATCH = 16


def _convert(signal: str, writers: int, requests: int) -> list[list[Any]]:
    """Per writer, *requests* converted payloads (CopyRows) with distinct ids and keys."""
    from ingestd.convert.native import NativeMetricConverter, NativeTraceConverter
    from tests.bench import payloads

    converter: Any = (NativeTraceConverter if signal == "traces" else NativeMetricConverter)(
        max_future_skew_s=86400
    )
    out = []
    for w in range(writers):
        templates = [payloads.build(signal, 900_000 + w * 1000 + t) for t in range(4)]
        mine = []
        for seq in range(requests):
            body = templates[seq % len(templates)].stamp(200 + w, seq)
            mine.append((xxhash.xxh3_128_digest(body), converter(body).payload))
        out.append(mine)
    return out


async def _raw(
    dsn: str,
    signal: str,
    batches: Iterator[tuple[bytes, int]],
    deadline: float,
    progress: list[int],
) -> int:
    from psycopg.sql import SQL, Identifier

    from ingestd.convert import metrics, traces

    module: Any = traces if signal == "traces" else metrics
    copy_sql = SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        Identifier(module.TABLE), SQL(", ").join(Identifier(c) for c, _ in module.COLUMNS)
    )
    written = 0
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for data, rows in batches:
            if time.monotonic() >= deadline:
                break
            async with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as copy:
                await copy.write(data)
            written += rows
            progress[0] += rows
    return written


def _raw_batches(payloads: list[Any], repeat: bool, total: int) -> Iterator[tuple[bytes, int]]:
    """*total* COPY bodies of 16 requests each (joined one at a time: the prepared rows are
    not held twice), cycling over the first 32 requests if *repeat*."""
    from ingestd.convert.copy_binary import COPY_HEADER, COPY_TRAILER

    source = payloads[:32] if repeat else payloads
    for n in range(total):
        i = n * PARTS_PER_BATCH
        group = [source[(i + k) % len(source)][1] for k in range(PARTS_PER_BATCH)]
        data = COPY_HEADER + b"".join(p.data for p in group) + COPY_TRAILER
        yield data, sum(p.rows for p in group)


async def _sink(
    dsn: str,
    signal: str,
    per_writer: list[list[Any]],
    deadline: float,
    writers: int,
    progress: list[int],
) -> tuple[int, dict[str, float], int]:
    from ingestd.batching import Batch
    from ingestd.config import parse
    from ingestd.convert import metrics, traces
    from ingestd.model import Part
    from ingestd.sinks import timescale

    module: Any = traces if signal == "traces" else metrics
    cfg = parse(
        f'sinks: {{timescale: {{dsn: "{dsn}", writers: {writers}}}, '
        "elasticsearch: {enabled: false}}",
        environ={},
    ).sinks.timescale
    sink = timescale.TimescaleSink(cfg)
    spent: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    originals = {
        name: getattr(timescale.TimescaleWriter, name)
        for name in ("_read_ledger", "_copy_rows", "_insert_ledger")
    }
    original_upsert = timescale._upsert

    def timed(name: str, fn: Any) -> Any:
        async def wrapper(*args: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*args)
            finally:
                spent[name] += time.perf_counter() - t0
                counts[name] += 1

        return wrapper

    for name, fn in originals.items():
        setattr(timescale.TimescaleWriter, name, timed(name, fn))
    timescale._upsert = timed("_upsert", original_upsert)
    written = 0
    async with asyncio.TaskGroup() as tasks:
        await sink.start(tasks)
        await sink.pool.wait()

        async def writer(payloads: list[Any]) -> None:
            nonlocal written
            w = timescale.TimescaleWriter(
                sink, table=module.TABLE, columns=module.COLUMNS, signal=signal
            )
            for i in range(0, len(payloads), PARTS_PER_BATCH):
                if time.monotonic() >= deadline:
                    return
                parts = [
                    Part(payload=p, items=p.rows, nbytes=len(p.data), key=key)
                    for key, p in payloads[i : i + PARTS_PER_BATCH]
                ]
                batch = Batch(parts, sum(p.items for p in parts), 0, "size")
                t0 = time.perf_counter()
                await w.write_batch(batch)
                spent["write_batch"] += time.perf_counter() - t0
                counts["write_batch"] += 1
                written += batch.items
                progress[0] += batch.items

        await asyncio.gather(*(writer(p) for p in per_writer))
        await sink.stop(time.monotonic() + 5)
    for name, fn in originals.items():
        setattr(timescale.TimescaleWriter, name, fn)
    timescale._upsert = original_upsert
    per_batch = {k: spent[k] / max(1, counts[k]) * 1e3 for k in spent}
    return written, per_batch, counts["_upsert"]


async def _run_mode(args: argparse.Namespace, mode: str, per_writer: list[list[Any]]) -> None:
    name, dsn = create_database(os.environ["INGESTD_PG_ADMIN_DSN"], os.environ["INGESTD_PG_DSN"])
    try:
        me = psutil.Process()
        admin = os.environ["INGESTD_PG_ADMIN_DSN"]
        total = len(per_writer[0]) // PARTS_PER_BATCH
        if mode.startswith("raw"):
            batches = [_raw_batches(p, mode == "raw_repeat", total) for p in per_writer]
        progress = [0]
        # (monotonic time, rows written so far, the server processes' CPU-seconds so far)
        samples: list[tuple[float, int, dict[int, tuple[float, float]]]] = []

        async def sample_server(until: float) -> None:
            # Once every session is open (the sink's pool connects in the background), and at
            # the deadline: the server processes seen both times, over that span.
            for at in (time.monotonic() + 1.0, until):
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                samples.append((time.monotonic(), progress[0], stores.server_cpu(admin, dsn)))

        t0 = time.monotonic()
        deadline = t0 + args.seconds
        cpu0 = me.cpu_times()
        sampler = asyncio.ensure_future(sample_server(deadline))
        busy = asyncio.ensure_future(_busy_loop(args.loop_busy, args.loop_slice_ms / 1e3))
        # The writers go on past the last sample, so that their sessions are still open then.
        deadline += 1.0
        per_batch: dict[str, float] = {}
        upserts = 0
        if mode.startswith("raw"):
            await asyncio.gather(*(_raw(dsn, args.signal, b, deadline, progress) for b in batches))
        else:
            _, per_batch, upserts = await _sink(
                dsn, args.signal, per_writer, deadline, args.writers, progress
            )
        t1 = time.monotonic()
        busy.cancel()
        await sampler
        cpu1 = me.cpu_times()
        (s0, r0, c0), (s1, r1, c1) = samples
        if r1 == progress[0]:
            raise SystemExit(f"{mode}: the prepared rows ran out before the window ended: --rate")
        backend_cpu = stores.cpu_between(c0, c1)
        waited = stores.cpu_between(c0, c1, 1)
        client = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (t1 - t0)
        print(
            f"{args.signal} {mode} (loop busy {args.loop_busy:.0%}): "
            f"{(r1 - r0) / (s1 - s0):,.0f} rows/s, "
            f"server {len(c1)} processes {backend_cpu / max(1, r1 - r0) * 1e6:.2f} "
            f"CPU-ms/1000 rows ({backend_cpu / (s1 - s0):.2f} cores, waiting for a CPU "
            f"{waited / (s1 - s0):.2f}), client {client:.2f} cores"
            + (
                ", per batch ms: "
                + ", ".join(f"{k} {v:.1f}" for k, v in sorted(per_batch.items()))
                + f", upserts {upserts}"
                if per_batch
                else ""
            ),
            flush=True,
        )
    finally:
        with psycopg.connect(os.environ["INGESTD_PG_ADMIN_DSN"], autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _busy_loop(fraction: float, slice_s: float) -> None:
    """Hold the event loop *fraction* of the time, in slices of *slice_s* (as requests being
    received and converted on ingestd's loop do), while the writers write."""
    if fraction <= 0:
        return
    while True:
        until = time.perf_counter() + slice_s
        while time.perf_counter() < until:
            pass
        await asyncio.sleep(slice_s * (1 - fraction) / fraction)


MODES = ("raw_repeat", "raw_unique", "sink")


async def _main(args: argparse.Namespace) -> None:
    unknown = [m for m in args.modes.split(",") if m not in MODES]
    if unknown:
        raise SystemExit(f"unknown mode(s) {unknown}: choose from {', '.join(MODES)}")
    # Enough for the window, the second before it and the one after it at --rate.
    requests = int(args.rate * (args.seconds + 2) / 512 / args.writers) + PARTS_PER_BATCH
    per_writer = _convert(args.signal, args.writers, requests)
    for mode in args.modes.split(","):
        await _run_mode(args, mode, per_writer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signal", choices=("traces", "metrics"), default="traces")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--modes", default="raw_repeat,raw_unique,sink")
    parser.add_argument("--rate", type=float, default=200_000, help="rows/s to prepare for")
    parser.add_argument(
        "--loop-busy", type=float, default=0.0, help="share of the event loop held by a busy task"
    )
    parser.add_argument("--loop-slice-ms", type=float, default=2.0, help="its slices (2 ms)")
    args = parser.parse_args()
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
