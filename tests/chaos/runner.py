"""Runs faults one by one against one environment and collects their verdicts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.environment import Environment, es_copies
from tests.chaos.faults import Fault, FaultRun, Skip
from tests.chaos.ledger import Ledger, Outcome, Verdict, check
from tests.chaos.load import LoadConfig, run_load
from tests.harness import deep_merge


@dataclass
class Result:
    fault: Fault
    verdict: Verdict | None = None
    skipped: str = ""
    error: str = ""
    recovered: bool | None = None
    seconds: float = 0.0
    heard: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    # The daemons' log events of this fault, written out when it fails (`write_results`).
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def violations(self) -> int:
        """What fails the suite: loss or duplicates (losses only where promised), errors."""
        if self.skipped:
            return 0
        if self.error or self.verdict is None or self.recovered is False:
            return 1
        if self.notes.get("daemon_exceptions"):
            return 1  # an exception nobody handled is a bug, even if nothing was lost
        v = self.verdict
        if self.fault.promise:
            return v.violations
        return v.duplicated + v.stored_though_refused

    @property
    def status(self) -> str:
        if self.skipped:
            return "SKIP"
        return "PASS" if self.violations == 0 else "FAIL"

    def as_dict(self) -> dict[str, Any]:
        return {
            "fault": self.fault.name,
            "what": self.fault.what,
            "promise": self.fault.promise,
            "status": self.status,
            "skipped": self.skipped,
            "error": self.error,
            "recovered": self.recovered,
            "seconds": round(self.seconds, 1),
            "daemon_exit_code": self.exit_code,
            "verdict": self.verdict.as_dict() if self.verdict else None,
            "heard": self.heard,
            "notes": self.notes,
        }


async def run_fault(
    env: Environment, fault: Fault, *, duration_s: float, load: LoadConfig
) -> Result:
    """Load -> warm up -> inject (and heal) -> recover -> drain -> read back -> verdict."""
    began = time.monotonic()
    result = Result(fault)
    ledger = Ledger(run_id=f"{env.run_id}-{fault.name}")
    load = LoadConfig(**{**load.__dict__, "skewed": fault.skewed})
    run = FaultRun(env, ledger, duration_s, load, overrides=dict(fault.config))
    env.daemons.clear()
    env.exceptions.clear()
    try:
        if fault.prepare is not None:
            await fault.prepare(run)
            run.overrides = deep_merge(fault.config, run.overrides)
        await env.start_daemon(run.overrides)
        stop = asyncio.Event()
        load_task = asyncio.create_task(
            run_load(
                ledger, grpc_port=env.grpc_port, http_port=env.http_port, config=load, stop=stop
            )
        )
        try:
            await _wait_acks(ledger, _acked(ledger), timeout_s=60)
            await fault.inject(run)
            # Recovery: every signal has new requests acknowledged after the fault was healed
            # (logs flowing to Elasticsearch must not hide traces stuck on PostgreSQL).
            result.recovered = await _wait_acks(ledger, _acked(ledger), timeout_s=90)
        finally:
            stop.set()
            await load_task
        result.exit_code = await env.stop_daemon()
        stored = await asyncio.to_thread(env.stored, ledger.run_id, dsn=run.dsn, es_url=run.es_url)
        result.verdict = check(ledger, stored)
        # Log records' seqs start with "l" (load.py names its clients by signal and transport).
        dups = [seq for seq in result.verdict.duplicate_seqs if seq.startswith("l")]
        if dups:
            result.notes["duplicate_copies"] = await asyncio.to_thread(
                es_copies, run.es_url or env.stack.es_url, ledger.run_id, dups
            )
        result.heard = dict(ledger.heard().most_common())
        result.notes["gave_up"] = [
            f"{r.signal}/{r.transport} after {r.attempts} attempts: {' '.join(r.heard[-8:])}"
            for r in ledger.requests
            if r.outcome is Outcome.GAVE_UP
        ][:6]
    except Skip as exc:
        result.skipped = str(exc)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.notes["traceback"] = traceback.format_exc()[-3000:]
    finally:
        with contextlib.suppress(Exception):
            await env.stop_daemon(kill=True)
        if fault.cleanup is not None:
            try:
                await fault.cleanup(run)
            except Exception as exc:
                result.notes["cleanup_error"] = repr(exc)
        result.notes.update(run.notes)
        result.notes["daemon_warnings"] = env.warnings()
        result.events = [event for daemon in env.daemons for event in list(daemon.events)]
        if env.exceptions:
            result.notes["daemon_exceptions"] = list(env.exceptions)
        result.seconds = time.monotonic() - began
    return result


def _acked(ledger: Ledger) -> Counter[str]:
    """Acknowledged requests per signal so far."""
    return Counter(r.signal.value for r in ledger.requests if r.outcome is Outcome.OK)


async def _wait_acks(ledger: Ledger, since: Counter[str], *, timeout_s: float) -> bool:
    """Wait until each signal has two more acknowledged requests than in *since*."""
    deadline = time.monotonic() + timeout_s
    signals = {r.signal.value for r in ledger.requests} or {"traces", "metrics", "logs"}
    while time.monotonic() < deadline:
        now = _acked(ledger)
        if all(now[s] >= since[s] + 2 for s in signals):
            return True
        await asyncio.sleep(0.1)
    return False


def table(results: list[Result]) -> str:
    """Faults x verdicts, one line each."""
    head = (
        "fault",
        "status",
        "requests",
        "acked",
        "gave up",
        "refused",
        "records",
        "lost",
        "dup",
        "stored/refused",
        "stored/gave-up",
        "recovered",
        "s",
    )
    rows = [head]
    for r in results:
        v = r.verdict
        if v is None:
            rows.append((r.fault.name, r.status, *("-",) * 10, f"{r.seconds:.0f}"))
            continue
        rows.append(
            (
                r.fault.name + ("" if r.fault.promise else " *"),
                r.status,
                str(v.requests),
                str(v.acked_requests),
                str(v.gave_up_requests),
                str(v.rejected_requests),
                str(v.records),
                str(v.missing),
                str(v.duplicated),
                str(v.stored_though_refused),
                str(v.stored_after_give_up),
                {True: "yes", False: "NO", None: "-"}[r.recovered],
                f"{r.seconds:.0f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(results: list[Result], out: Path, meta: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    data = {**meta, "results": [r.as_dict() for r in results]}
    path = out / f"run-{stamp}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    (out / "last.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (out / "last.txt").write_text(table(results) + "\n")
    for r in results:
        if r.violations:
            lines = (json.dumps(event, default=str) for event in r.events)
            (out / f"run-{stamp}-{r.fault.name}.daemon.jsonl").write_text("\n".join(lines) + "\n")
    return path
