"""The maintenance stage: schedule, failures, the lifecycle contract; and what a report says."""

from __future__ import annotations

import asyncio

from ingestd.config import MaintenanceConfig
from ingestd.errors import SinkUnavailable
from ingestd.jobs.maintenance import MaintenanceJob
from ingestd.observe import metrics
from ingestd.schema.maintenance import MaintenanceReport
from ingestd.schema.tiers import Tier
from tests.fakes import FakeClock, settle

CONFIG = MaintenanceConfig(interval_s=60)


class FakeRuns:
    """Stands in for maintain_once: counts calls, can fail or hang."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> MaintenanceReport:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return MaintenanceReport(acted=True, tier=Tier.APACHE, ledger_pruned=3)


async def started(job: MaintenanceJob) -> asyncio.TaskGroup:
    group = asyncio.TaskGroup()
    await group.__aenter__()
    await job.start(group)
    await settle()
    return group


async def finish(job: MaintenanceJob, group: asyncio.TaskGroup) -> None:
    await job.stop(asyncio.get_running_loop().time() + 1.0)
    await group.__aexit__(None, None, None)


def make(runs: FakeRuns, clock: FakeClock) -> MaintenanceJob:
    return MaintenanceJob("unused", CONFIG, run=runs, clock=clock, first_delay_s=5)


async def test_runs_after_the_first_delay_then_every_interval() -> None:
    """First run 5 s after start, then one per interval_s."""
    clock, runs = FakeClock(), FakeRuns()
    job = make(runs, clock)
    group = await started(job)
    await clock.advance(4)
    assert runs.calls == 0
    await clock.advance(1)
    assert runs.calls == 1
    await clock.advance(60)
    assert runs.calls == 2
    assert job.last is not None
    assert job.last.ledger_pruned == 3
    await finish(job, group)


async def test_a_failed_run_is_counted_and_the_schedule_goes_on() -> None:
    """An exception from a run does not stop the loop; it counts an error."""
    clock, runs = FakeClock(), FakeRuns()
    runs.fail = SinkUnavailable("connection refused")
    before = metrics.MAINTENANCE_ERRORS.labels(step="run")._value.get()
    job = make(runs, clock)
    group = await started(job)
    await clock.advance(5)
    await clock.advance(60)
    assert runs.calls == 2
    assert metrics.MAINTENANCE_ERRORS.labels(step="run")._value.get() == before + 2
    await finish(job, group)


async def test_stop_without_start_and_twice_is_fine() -> None:
    """stop() before start() and a second stop() return quietly."""
    job = make(FakeRuns(), FakeClock())
    await job.stop(0.0)
    group = await started(job)
    await finish(job, group)
    await job.stop(0.0)


async def test_stop_abandons_a_hung_run_by_its_deadline() -> None:
    """A run stuck on the database is cancelled; stop returns and the task group exits."""
    clock, runs = FakeClock(), FakeRuns()
    runs.gate = asyncio.Event()
    job = make(runs, clock)
    group = await started(job)
    await clock.advance(5)
    assert runs.calls == 1
    await asyncio.wait_for(finish(job, group), timeout=2)


async def test_snapshot_shows_the_last_run() -> None:
    """/status shows nothing before a run and the last summary after one."""
    clock, runs = FakeClock(), FakeRuns()
    job = make(runs, clock)
    assert job.status() == {"last_run": None}
    group = await started(job)
    await clock.advance(5)
    await settle()
    assert job.status()["ledger_pruned"] == 3
    await finish(job, group)


def test_report_lines_say_what_was_done() -> None:
    """The by-hand output names each table and count, and errors by step."""
    report = MaintenanceReport(
        acted=True,
        tier=Tier.POSTGRES,
        ledger_pruned=7,
        partitions_dropped={"metrics": 2},
        partitions_created={"traces": 4},
        rows_moved={"traces": 10},
        errors={"rollups": "QueryCanceled: statement timeout"},
    )
    text = "\n".join(report.lines())
    assert "pruned 7 keys" in text
    assert "metrics: dropped 2 partition(s)" in text
    assert "traces: created 4 partition(s), moved 10 row(s)" in text
    assert "error in rollups: QueryCanceled" in text
    assert text.endswith("with errors")


def test_skipped_report_says_why() -> None:
    """A run that found the lock taken says another ingestd holds it."""
    lines = MaintenanceReport(acted=False, skipped="locked").lines()
    assert lines == [
        "skipped: another ingestd holds the maintenance lock (a run is in progress elsewhere)"
    ]


def test_summary_leaves_out_zeros() -> None:
    """The logged summary holds only what happened, plus tier and duration."""
    summary = MaintenanceReport(acted=True, tier=Tier.FULL, ms=12, jobs_run=["1 x"]).summary()
    assert summary == {"tier": "full", "ms": 12, "jobs_run": ["1 x"]}


async def test_stop_lets_a_run_about_to_finish_complete() -> None:
    """A run that ends within the stop grace is recorded, not cut short."""
    clock, runs = FakeClock(), FakeRuns()
    runs.gate = asyncio.Event()
    job = make(runs, clock)
    group = await started(job)
    await clock.advance(5)
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, runs.gate.set)
    await finish(job, group)
    assert job.last is not None
    assert job.last.ledger_pruned == 3
