"""`make bench`: ingestd end to end, beside the sinks' own limits and the OpenTelemetry Collector.

    make bench                                  # everything, peers included (~15 min)
    make bench ARGS="--quick --no-peers"        # the CI smoke run (< 2 min)
    make bench ARGS="--signal logs --only throughput --only baselines"
    make bench ARGS="--only latency --mode rate --rate 20000 --signal traces"

Needs the dev stack (`make bench` loads .stack/env). Sections (see tests/bench/sections.py):
throughput (ingestd into the real sinks), baselines (raw COPY, raw _bulk), receive (sinks that
discard), latency (fixed offered rates; `ack: committed` and `ack: accepted`, every signal),
memory (RSS at 10k spans/s), workers (2 vs 1), parse_memory (peak RSS growth per large request,
both codecs, in subprocesses), telemetrygen and collector (peers, built once under
/var/cache/ingestd/peers).
Results: a Markdown table on stdout and .bench/results-<timestamp>.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from tests.bench import report, sections, stores
from tests.bench.load import ClientPool
from tests.bench.sections import (
    PEER_SECTIONS,
    SECTIONS,
    SIGNALS,
    WORKERS_CLIENTS,
    Bench,
    Options,
    Stack,
)

RESULTS_DIR = Path(".bench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--signal", action="append", choices=SIGNALS, help="repeatable; all")
    parser.add_argument("--only", action="append", choices=SECTIONS, help="repeatable; all")
    parser.add_argument("--duration", type=float, help="measured seconds per run (20; quick 2)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds first (5; quick 0.5)")
    parser.add_argument("--clients", type=int, help="client processes (4; quick 2)")
    parser.add_argument("--inflight", type=int, help="requests in flight per client, max mode (16)")
    parser.add_argument(
        "--mode",
        choices=["max", "rate"],
        default="max",
        help="rate: use --rate as the maximum the latency runs take 50 %% and 80 %% of",
    )
    parser.add_argument("--rate", type=float, default=0.0, help="items/s (with --mode rate)")
    parser.add_argument(
        "--transport",
        choices=["default", "grpc", "http"],
        default="default",
        help="default: gRPC for traces and metrics, HTTP for logs",
    )
    parser.add_argument("--receive-rate", type=float, help="fixed spans/s for CPU and RSS (10000)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run everything N times; targets use medians"
    )
    parser.add_argument(
        "--flush-when-idle",
        choices=["default", "on", "off"],
        default="default",
        help="sinks.*.batch.flush_when_idle for every ingestd run",
    )
    parser.add_argument("--quick", action="store_true", help="small numbers: the harness works")
    parser.add_argument("--no-peers", action="store_true", help="skip telemetrygen, Collector")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the throughput and receive windows"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (.bench)")
    return parser.parse_args(argv)


def options(args: argparse.Namespace) -> Options:
    quick = args.quick
    transport = {"traces": "grpc", "metrics": "grpc", "logs": "http"}
    if args.transport != "default":
        transport = dict.fromkeys(SIGNALS, args.transport)
    return Options(
        signals=tuple(s for s in SIGNALS if s in (args.signal or SIGNALS)),
        sections=tuple(s for s in SECTIONS if s in (args.only or SECTIONS)),
        duration_s=args.duration or (2.0 if quick else 20.0),
        warmup_s=args.warmup if args.warmup is not None else (0.5 if quick else 5.0),
        clients=args.clients or (2 if quick else 4),
        inflight=args.inflight or 16,
        mode=args.mode,
        rate=args.rate,
        transport=transport,
        peers=not args.no_peers,
        # Quick mode never builds a peer (minutes); it uses them when they are cached.
        build_peers=not quick,
        receive_rate=args.receive_rate or (2000.0 if quick else 10_000.0),
        telemetrygen_rate=1000.0 if quick else 5000.0,
        memory_settle_s=2.0 if quick else 10.0,
        loads=(0.5,) if quick else (0.5, 0.8),
        templates=2 if quick else 6,
        quick=quick,
        profile=args.profile,
        repeat=max(1, args.repeat),
        flush_when_idle={"default": None, "on": True, "off": False}[args.flush_when_idle],
    )


def stack_from_env() -> Stack:
    missing = [
        name
        for name in (
            "INGESTD_PG_DSN",
            "INGESTD_PG_ADMIN_DSN",
            "INGESTD_ES_URL",
            "INGESTD_REDIS_URL",
        )
        if not os.environ.get(name)
    ]
    if missing:
        sys.exit(f"bench: {', '.join(missing)} not set: run `make bench` (it loads .stack/env)")
    return Stack(
        pg_dsn=os.environ["INGESTD_PG_DSN"],
        pg_admin_dsn=os.environ["INGESTD_PG_ADMIN_DSN"],
        es_url=os.environ["INGESTD_ES_URL"],
        redis_url=os.environ["INGESTD_REDIS_URL"],
    )


RUNNERS = {
    "throughput": sections.throughput,
    "baselines": sections.baseline_runs,
    "receive": sections.receive,
    "latency": sections.latency,
    "memory": sections.memory,
    "workers": sections.workers,
    "parse_memory": sections.parse_memory_section,
    "telemetrygen": sections.telemetrygen,
    "collector": sections.collector,
}


def run(opts: Options, stack: Stack, out_dir: Path) -> tuple[dict[str, Any], Path, Path]:
    """Run the selected sections --repeat times; write the report after every section."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = out_dir / f"run-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "started": stamp,
        "machine": report.machine(),
        "codec": report.codec(),
    }
    repetitions: list[dict[str, Any]] = []
    # One pool for every repetition: item ids keep counting up, so they never repeat.
    # The workers section drives at least WORKERS_CLIENTS connections, so SO_REUSEPORT spreads them.
    pool = ClientPool(
        max(opts.clients, WORKERS_CLIENTS) if "workers" in opts.sections else opts.clients
    )
    try:
        for rep in range(opts.repeat):
            bench = Bench(opts, stack, workdir / f"rep{rep + 1}", uuid.uuid4().hex[:8], pool=pool)
            meta.setdefault("versions", report.versions(stack.pg_admin_dsn, bench.streams.es))
            results: dict[str, Any] = {"section_seconds": {}}
            repetitions.append(results)
            try:
                _sections(bench, results, lambda: _write(meta, opts, repetitions, out_dir, stamp))
            finally:
                _close(bench)
                results.update(bench.results, notes=bench.notes)
    finally:
        pool.close()
    meta["load_average_end"] = os.getloadavg()
    result, md_path, json_path = _write(meta, opts, repetitions, out_dir, stamp)
    return result, md_path, json_path


def _sections(bench: Bench, results: dict[str, Any], checkpoint: Any) -> None:
    for name in bench.options.sections:
        if name in PEER_SECTIONS and not bench.options.peers:
            bench.results[name] = sections.skipped("--no-peers")
            continue
        began = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            stack = bench.stack
            waited = stores.wait_for_servers(stack.pg_admin_dsn, stack.es_url, stack.redis_url)
            if waited > 1:
                bench.notes.append(f"{name}: waited {waited:.0f} s for the dev stack to answer")
            RUNNERS[name](bench)
        except Exception as exc:  # one failed section (a server restarted by others) is reported
            bench.results[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            print(f"bench: {name} failed: {exc}", file=sys.stderr, flush=True)
        results["section_seconds"][name] = round(time.monotonic() - began, 1)
        results.update(bench.results)
        checkpoint()
    try:
        bench.results["duplicates"] = sections.check_duplicates(bench)
    except Exception as exc:  # the servers may be gone at the end; the numbers stand
        bench.notes.append(f"duplicate check failed: {exc}")


def _close(bench: Bench) -> None:
    try:
        bench.close()
    except Exception as exc:  # cleanup must not lose the report
        bench.notes.append(f"cleanup failed ({exc}); leftover databases: {bench.dbs.created}")


def _write(
    meta: dict[str, Any],
    opts: Options,
    repetitions: list[dict[str, Any]],
    out_dir: Path,
    stamp: str,
) -> tuple[dict[str, Any], Path, Path]:
    result = report.combine(meta, _options_dict(opts), repetitions)
    md_path, json_path = report.write(result, out_dir, stamp)
    return result, md_path, json_path


def _options_dict(opts: Options) -> dict[str, Any]:
    return {**vars(opts), "sections": list(opts.sections), "signals": list(opts.signals)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result, md_path, json_path = run(options(args), stack_from_env(), args.out)
    print(report.markdown(result))
    print(f"written: {md_path} and {json_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
