"""`python -m tests.chaos [--only NAME,...] [--duration S] [--short] [--list]`.

Runs each fault under steady load from six OTLP clients (traces, metrics, logs over gRPC and
HTTP), prints the ledger's verdict per fault and a table at the end, writes `.chaos/` results,
and exits 1 on any acknowledged loss, duplicate, record stored though refused, fault that did
not recover, exception ingestd logged without handling it, or fault that broke.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from tests.chaos.environment import StackAddresses, environment
from tests.chaos.faults import FAULTS, Fault
from tests.chaos.load import LoadConfig
from tests.chaos.runner import Result, run_fault, table, write_results


def select(only: str | None, short: bool) -> list[Fault]:
    faults = [f for f in FAULTS if f.short] if short else list(FAULTS)
    if only:
        names = [n.strip() for n in only.split(",") if n.strip()]
        unknown = [n for n in names if n not in {f.name for f in FAULTS}]
        if unknown:
            raise SystemExit(f"chaos: unknown fault(s) {unknown}; see --list")
        faults = [f for f in FAULTS if f.name in names]
    return faults


async def run_all(faults: list[Fault], duration_s: float, load: LoadConfig) -> list[Result]:
    results: list[Result] = []
    async with environment(StackAddresses.from_env()) as env:
        print(f"chaos run {env.run_id}: {len(faults)} fault(s), {duration_s:g} s each", flush=True)
        for fault in faults:
            print(f"-- {fault.name}: {fault.what}", flush=True)
            result = await run_fault(env, fault, duration_s=duration_s, load=load)
            results.append(result)
            _print_result(result)
    return results


def _print_result(result: Result) -> None:
    if result.skipped:
        print(f"   SKIP: {result.skipped}", flush=True)
        return
    if result.error:
        print(f"   ERROR: {result.error}", flush=True)
    v = result.verdict
    if v is not None:
        print(
            f"   {result.status}: {v.requests} requests ({v.acked_requests} acked, "
            f"{v.gave_up_requests} gave up, {v.rejected_requests} refused), {v.records} records; "
            f"lost={v.missing} duplicated={v.duplicated} stored-though-refused="
            f"{v.stored_though_refused} stored-after-give-up={v.stored_after_give_up} "
            f"recovered={result.recovered} ({result.seconds:.0f} s)",
            flush=True,
        )
        print(f"   heard: {json.dumps(result.heard)}", flush=True)
        for example in v.examples[:5]:
            print(f"   ! {example}", flush=True)
    for text in result.notes.get("daemon_exceptions", []):
        print(f"   ! ingestd logged an exception: {text[:600]}", flush=True)
    notes = {k: v for k, v in result.notes.items() if k not in ("traceback", "daemon_exceptions")}
    if notes:
        print(f"   notes: {json.dumps(notes, default=str)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--only", help="comma-separated fault names (see --list)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds each fault lasts")
    parser.add_argument("--short", action="store_true", help="the reduced set `make test` runs")
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    parser.add_argument("--out", type=Path, default=Path(".chaos"))
    args = parser.parse_args(argv)
    if args.list:
        for fault in FAULTS:
            print(f"{fault.name:22} {'short ' if fault.short else '      '}{fault.what}")
        return 0
    faults = select(args.only, args.short)
    began = time.time()
    results = asyncio.run(run_all(faults, args.duration, LoadConfig()))
    print()
    print(table(results))
    path = write_results(
        results, args.out, {"duration_s": args.duration, "seconds": round(time.time() - began)}
    )
    failed = [r.fault.name for r in results if r.violations]
    print(f"\nresults: {path}; {'FAILED: ' + ', '.join(failed) if failed else 'no violation'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
