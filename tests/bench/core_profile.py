"""Profile the core path in-process: OTLP/gRPC -> ingestd pipeline -> TimescaleDB, with cProfile.

The end-to-end numbers come from `python -m tests.bench` (docs/reports/benchmarks-*.md); this runs
the pipeline inside its own process so that cProfile sees call counts, and py-spy line samples.

Not a test: it prints numbers. Needs the dev stack (`set -a; . .stack/env; set +a`).

    python -m tests.bench.core_profile              # traces then metrics, 10 s each
    python -m tests.bench.core_profile --signal traces --seconds 20 --profile py-spy

What it does, per signal:
1. a fresh database with the design tables;
2. ingestd's real pipeline (daemon.build) in this process, on uvloop, ack: committed;
3. client processes (spawned before gRPC starts here) that pre-generate distinct requests
   (512 spans, or ~510 metric points, per request, SDK-like attributes), then export them with
   N requests in flight each; every send carries a unique unknown field, so no two requests
   share a key (the ledger would skip a repeat) even when a client cycles its bodies;
4. stored rows/s = rows committed by the writers during the window (after a warm-up);
   CPU-seconds of ingestd and of all PostgreSQL processes over the same window;
5. the baseline: the same converted rows COPYed raw (binary, same types, the same number of
   parallel connections and rows per transaction, no ledger, no receiver) into the same table;
6. with --profile, a cProfile of ingestd's process over a second window (slower under the
   profiler: its rates are not the ones reported above).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import multiprocessing as mp
import os
import pstats
import struct
import sys
import time
import uuid
from typing import Any

import psutil
import psycopg

# -- client processes ---------------------------------------------------------------------------


def _client_main(
    signal: str, target: str, distinct: int, inflight: int, go: Any, stop: Any, out: Any
) -> None:
    import grpc

    from tests.samples import metric_request, span_request

    bodies = []
    for i in range(distinct):
        tag = f"{os.getpid()}-{i}"
        if signal == "traces":
            bodies.append(span_request(512, tag=tag).SerializeToString())
        else:
            bodies.append(metric_request(240, tag=tag).SerializeToString())
    method = (
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        if signal == "traces"
        else "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
    )
    out.put(("ready", os.getpid()))
    go.wait()

    async def run() -> tuple[int, int]:
        ok = failed = 0
        sent = 0
        async with grpc.aio.insecure_channel(
            target, options=[("grpc.max_send_message_length", 64 << 20)]
        ) as channel:
            export = channel.unary_unary(
                method, request_serializer=None, response_deserializer=None
            )

            async def worker(w: int) -> None:
                nonlocal ok, failed, sent
                while not stop.is_set():
                    n = sent
                    sent += 1
                    # Field 1023, length-delimited, 8 bytes: unknown to the parser, unique per send.
                    body = (
                        bodies[n % len(bodies)] + b"\xfa\x3f\x08" + struct.pack(">Q", n + (w << 48))
                    )
                    try:
                        await export(body, timeout=30)
                        ok += 1
                    except grpc.aio.AioRpcError:
                        failed += 1
                        await asyncio.sleep(0.05)

            await asyncio.gather(*(worker(w) for w in range(inflight)))
        return ok, failed

    ok, failed = asyncio.run(run())
    out.put(("done", ok, failed))


# -- measurement ----------------------------------------------------------------------------------


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def _backend_pids(admin_dsn: str, dbname: str) -> list[int]:
    """The server processes of every session connected to *dbname* (ours only)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (dbname,)
        ).fetchall()
    return [pid for (pid,) in rows]


def create_database(admin_dsn: str, pg_dsn: str) -> tuple[str, str]:
    """A new database with the design tables, owned by ingestd: (its name, its DSN)."""
    from tests.harness import create_design_tables

    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER ingestd')
    dsn = psycopg.conninfo.make_conninfo(pg_dsn, dbname=name)
    create_design_tables(dsn, admin_dsn)
    return name, dsn


def _drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _measure_ingest(
    args: argparse.Namespace, signal: str, dsn: str, admin_dsn: str
) -> dict[str, Any]:
    from ingestd import config
    from ingestd.daemon import build
    from ingestd.observe.telemetry import setup_logging
    from ingestd.pipeline import deadline_in
    from tests.harness import free_port

    ctx = mp.get_context("spawn")
    go, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    # Clients are spawned first; they connect once the server below is listening.
    grpc_port = free_port()
    target = f"127.0.0.1:{grpc_port}"
    clients = [
        ctx.Process(
            target=_client_main,
            args=(signal, target, args.distinct, args.inflight, go, stop, out),
        )
        for _ in range(args.clients)
    ]
    for p in clients:
        p.start()
    for _ in clients:
        assert out.get(timeout=600)[0] == "ready"

    cfg = config.parse(
        f"""
receivers: {{grpc: {{endpoint: "{target}", max_recv_msg_size_mib: 64}}, http: {{enabled: false}}}}
redis: {{enabled: false}}
telemetry: {{log_level: warning}}
sinks:
  elasticsearch: {{enabled: false}}
  timescale: {{dsn: "{dsn}", writers: {args.writers}}}
"""
    )
    setup_logging(cfg.telemetry)
    daemon = build(cfg)
    writer_stats = daemon.pipeline.status_sources()[f"batcher.{signal}"]
    result: dict[str, Any] = {}
    async with asyncio.TaskGroup() as tasks:
        await daemon.pipeline.start(tasks)
        go.set()
        await asyncio.sleep(args.warmup)
        me = psutil.Process()
        dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        backends = await asyncio.to_thread(_backend_pids, admin_dsn, dbname)
        rows0, cpu0, t0 = writer_stats()["rows"], _cpu(me), time.monotonic()
        pg0 = _cpu_seconds(backends)
        await asyncio.sleep(args.seconds)
        rows1, cpu1, t1 = writer_stats()["rows"], _cpu(me), time.monotonic()
        pg1 = _cpu_seconds(backends)
        result = {
            "rows_per_s": (rows1 - rows0) / (t1 - t0),
            "ingestd_cpu_per_mrows": (cpu1 - cpu0) / max(1, rows1 - rows0) * 1e6,
            "pg_cpu_per_mrows": (pg1 - pg0) / max(1, rows1 - rows0) * 1e6,
            "ingestd_cores": (cpu1 - cpu0) / (t1 - t0),
            "pg_cores": (pg1 - pg0) / (t1 - t0),
        }
        if args.profile == "cprofile":
            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
            await asyncio.sleep(args.seconds)
            profiler.disable()
            result["profile"] = _cprofile_text(profiler)
        elif args.profile == "py-spy":
            result["profile"] = await _py_spy(args.seconds)
        stop.set()
        # Clients finish their in-flight requests before the pipeline drains.
        done = [await asyncio.to_thread(out.get, True, 60) for _ in clients]
        await daemon.pipeline.stop(deadline_in(20))
    for p in clients:
        p.join(timeout=30)
    result["client_ok"] = sum(d[1] for d in done)
    result["client_failed"] = sum(d[2] for d in done)
    result["batch"] = writer_stats()
    return result


def _cprofile_text(profiler: cProfile.Profile) -> str:
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
    return (
        "cProfile, CPU time, top 25 by own time (the profiler inflates small calls)\n"
        + (text.getvalue()[-6000:])
    )


async def _py_spy(seconds: float) -> str:
    """Sample this process with py-spy (if installed) and sum samples per line."""
    import shutil
    import tempfile

    exe = shutil.which("py-spy", path=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
    if exe is None:
        return "py-spy is not installed (pip install py-spy); use --profile cprofile"
    with tempfile.NamedTemporaryFile(suffix=".txt") as raw:
        process = await asyncio.create_subprocess_exec(
            exe, "record", "--pid", str(os.getpid()), "--duration", str(int(seconds)),
            "--rate", "200", "--nonblocking", "--format", "raw", "-o", raw.name,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await process.wait()
        lines = raw.read().decode().splitlines()
    from tests.bench.profile import summarize

    summary = summarize(lines, top=30)
    samples = summary["samples"]
    out = [f"py-spy, {samples} samples of the event loop thread (C time counts to its caller)"]
    out.append("own time:")
    out += [f"  {share:6.1%}  {frame[:140]}" for share, frame in summary["own"][:22]]
    out.append("inclusive time:")
    out += [f"  {share:6.1%}  {frame[:140]}" for share, frame in summary["inclusive"]]
    return "\n".join(out)


def _cpu(process: psutil.Process) -> float:
    t = process.cpu_times()
    return t.user + t.system


async def _measure_raw_copy(args: argparse.Namespace, signal: str, dsn: str) -> dict[str, Any]:
    """The same rows, COPYed raw: binary, same wire types, same batch size and parallelism."""
    from psycopg.adapt import PyFormat
    from psycopg.sql import SQL, Identifier

    from ingestd.convert import metrics, traces
    from tests.samples import metric_request, span_request

    module: Any = traces if signal == "traces" else metrics
    convert = (
        traces.TraceConverter(max_future_skew_s=86400)
        if signal == "traces"
        else metrics.MetricConverter(max_future_skew_s=86400)
    )
    rows: list[tuple[Any, ...]] = []
    for i in range(max(8, args.distinct // 4)):
        request = span_request(512, tag=f"raw{i}") if signal == "traces" else metric_request(240)
        rows.extend(convert(request).payload.rows)
    batch_rows = 8192
    batches = [rows[i : i + batch_rows] for i in range(0, len(rows), batch_rows)]
    copy_sql = SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        Identifier(module.TABLE), SQL(", ").join(Identifier(c) for c, _ in module.COLUMNS)
    )
    types = [t for _, t in module.COLUMNS]
    written = 0
    backend_cpu = 0.0
    deadline = time.monotonic() + args.seconds

    async def copier() -> None:
        nonlocal written, backend_cpu
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            conn.adapters.register_dumper(bytes, conn.adapters.get_dumper(bytes, PyFormat.BINARY))
            backend = [conn.info.backend_pid]
            before = _cpu_seconds(backend)
            i = 0
            while time.monotonic() < deadline:
                batch = batches[i % len(batches)]
                i += 1
                async with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as copy:
                    copy.set_types(types)
                    for row in batch:
                        await copy.write_row(row)
                written += len(batch)
            backend_cpu += _cpu_seconds(backend) - before

    me = psutil.Process()
    cpu0, t0 = _cpu(me), time.monotonic()
    await asyncio.gather(*(copier() for _ in range(args.writers)))
    cpu1, t1 = _cpu(me), time.monotonic()
    return {
        "rows_per_s": written / (t1 - t0),
        "client_cores": (cpu1 - cpu0) / (t1 - t0),
        "pg_cores": backend_cpu / (t1 - t0),
        "pg_cpu_per_mrows": backend_cpu / max(1, written) * 1e6,
    }


def _report(
    signal: str, ingest: dict[str, Any], raw: dict[str, Any], args: argparse.Namespace
) -> None:
    unit = "spans" if signal == "traces" else "metric points"
    print(
        f"\n== {signal}: {args.clients} client processes x {args.inflight} in flight, "
        f"{args.writers} writers, {args.seconds:.0f} s window after {args.warmup:.0f} s warm-up"
    )
    print(f"ingestd stored         {ingest['rows_per_s']:>10,.0f} {unit}/s")
    print(
        f"  ingestd CPU          {ingest['ingestd_cores']:>10.2f} cores "
        f"({ingest['ingestd_cpu_per_mrows']:.1f} CPU-s per million)"
    )
    print(
        f"  its PG backends      {ingest['pg_cores']:>10.2f} cores "
        f"({ingest['pg_cpu_per_mrows']:.1f} CPU-s per million)"
    )
    print(f"  client answers       {ingest['client_ok']} ok, {ingest['client_failed']} failed")
    print(
        f"raw binary COPY        {raw['rows_per_s']:>10,.0f} rows/s "
        f"(client {raw['client_cores']:.2f} cores, its backends {raw['pg_cores']:.2f} cores, "
        f"{raw['pg_cpu_per_mrows']:.1f} CPU-s per million)"
    )
    print(f"ratio ingestd / raw    {ingest['rows_per_s'] / raw['rows_per_s']:>10.2f}")
    if "profile" in ingest:
        print(f"\n-- profile of ingestd, {signal}, over a second window")
        print(ingest["profile"])


async def _main(args: argparse.Namespace) -> None:
    admin_dsn = os.environ["INGESTD_PG_ADMIN_DSN"]
    pg_dsn = os.environ["INGESTD_PG_DSN"]
    for signal in ("traces", "metrics") if args.signal == "both" else (args.signal,):
        name, dsn = create_database(admin_dsn, pg_dsn)
        try:
            ingest = await _measure_ingest(args, signal, dsn, admin_dsn)
            raw = await _measure_raw_copy(args, signal, dsn)
        finally:
            _drop_database(admin_dsn, name)
        _report(signal, ingest, raw, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signal", choices=["traces", "metrics", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--inflight", type=int, default=8)
    parser.add_argument("--distinct", type=int, default=150, help="distinct bodies per client")
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--profile", choices=["cprofile", "py-spy"], default=None)
    args = parser.parse_args()
    import uvloop

    uvloop.run(_main(args))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
