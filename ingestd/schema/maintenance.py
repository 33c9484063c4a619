"""The maintenance job: one run enforces what `ingestd.policies` says, on one replica at a time.

A run holds a session advisory lock (`pg_try_advisory_lock(maintenance.lock_key)`) on its own
connection and does everything on that connection, so if the process or the connection dies
the lock goes with it and no other replica can be acting meanwhile. Replicas that find the
lock taken, or a successful run newer than the interval, skip. What a run does by tier:

| step       | full             | apache           | postgres                           |
|------------|------------------|------------------|------------------------------------|
| ledger     | prune old keys   | same             | same                               |
| retention  | TimescaleDB jobs | drop_chunks      | drop partitions, clean DEFAULT     |
| partitions | -                | -                | create ahead, adopt DEFAULT's rows |
| rollups    | TimescaleDB jobs | refresh when due | refresh when due                   |

Run by hand (`ingestd schema maintain`), rollups refresh even when not due, and on the full
tier the TimescaleDB policy jobs are run at once (`CALL run_job`). Scheduled runs on the full
tier report the policy jobs TimescaleDB's scheduler fails and run the due ones themselves
(`ingestd.schema.timescaledb_jobs`). Each step's failure is
recorded and counted and the other steps still run. `ingestd.jobs.maintenance` schedules runs
in the daemon.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
import structlog
from psycopg.errors import LockNotAvailable

from ingestd.config import MaintenanceConfig
from ingestd.observe import metrics
from ingestd.schema import partitions, rollups, timescaledb_jobs
from ingestd.schema.db import Connection, connect
from ingestd.schema.tiers import Tier, recorded_tier

log = structlog.get_logger("ingestd.schema.maintenance")

Trigger = Literal["schedule", "manual"]
# Runs recorded in ingestd.maintenance_runs are kept this long (status, retention view).
RUN_HISTORY = timedelta(days=7)


@dataclass(frozen=True)
class Policy:
    schema: str
    table: str
    time_column: str
    chunk_interval: timedelta | None
    drop_after: timedelta
    partitions_ahead: timedelta | None
    enforced_by: str


@dataclass
class MaintenanceReport:
    """What one run did (or why it did nothing: skipped = locked | recent | no_schema)."""

    acted: bool
    skipped: str | None = None
    tier: Tier | None = None
    ledger_pruned: int = 0
    chunks_dropped: dict[str, int] = field(default_factory=dict)
    partitions_dropped: dict[str, int] = field(default_factory=dict)
    partitions_created: dict[str, int] = field(default_factory=dict)
    rows_moved: dict[str, int] = field(default_factory=dict)
    expired_rows: dict[str, int] = field(default_factory=dict)
    rollup_rows: dict[str, int] = field(default_factory=dict)
    rollup_pruned: dict[str, int] = field(default_factory=dict)
    watermarks: dict[str, str] = field(default_factory=dict)
    jobs_run: list[str] = field(default_factory=list)
    # Full tier: policy jobs TimescaleDB's scheduler fails (timescaledb_jobs.describe), and the
    # ids of those this run ran itself because they were due.
    timescaledb_jobs_failing: list[dict[str, Any]] = field(default_factory=list)
    timescaledb_jobs_run: list[int] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    ms: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> dict[str, Any]:
        """The counts, for the log event and ingestd.maintenance_runs.summary (no zeros)."""
        keys = (
            "ledger_pruned",
            "chunks_dropped",
            "partitions_dropped",
            "partitions_created",
            "rows_moved",
            "expired_rows",
            "rollup_rows",
            "rollup_pruned",
            "watermarks",
            "jobs_run",
            "timescaledb_jobs_failing",
            "timescaledb_jobs_run",
            "errors",
        )
        out: dict[str, Any] = {"tier": str(self.tier) if self.tier else None, "ms": self.ms}
        out.update({k: getattr(self, k) for k in keys if getattr(self, k)})
        return out

    def lines(self) -> list[str]:
        """What `schema maintain` prints, one line per thing done."""
        if not self.acted:
            return [f"skipped: {_SKIP_REASONS.get(self.skipped or '', self.skipped)}"]
        out = [f"tier {self.tier}", f"ingestd.ledger: pruned {self.ledger_pruned} keys"]
        for table, n in self.chunks_dropped.items():
            out.append(f"{table}: dropped {n} chunk(s) past retention")
        for table, n in self.partitions_dropped.items():
            out.append(f"{table}: dropped {n} partition(s) past retention")
        for table, n in self.expired_rows.items():
            out.append(f"{table}: deleted {n} row(s) past retention from the DEFAULT partition")
        for table, n in self.partitions_created.items():
            moved = self.rows_moved.get(table, 0)
            out.append(f"{table}: created {n} partition(s), moved {moved} row(s) from DEFAULT")
        for name, n in self.rollup_rows.items():
            mark = self.watermarks.get(name, "?")
            out.append(f"{name}: {n} rollup row(s) written, materialized up to {mark}")
        for name, n in self.rollup_pruned.items():
            out.append(f"{name}: deleted {n} rollup row(s) past retention")
        out.extend(
            f"TimescaleDB job {j['job']}: {j['state']} ({j['failures']} failures"
            + (f", last error: {j['error']}" if j.get("error") else "")
            + ")"
            for j in self.timescaledb_jobs_failing
        )
        out.extend(f"ran TimescaleDB job {job}" for job in self.jobs_run)
        out.extend(f"error in {step}: {message}" for step, message in self.errors.items())
        out.append(f"done in {self.ms} ms" + ("" if self.ok else " with errors"))
        return out


_SKIP_REASONS = {
    "locked": "another ingestd holds the maintenance lock (a run is in progress elsewhere)",
    "recent": "a run finished within the interval (another replica did it)",
    "no_schema": "the schema is not applied here (run `ingestd schema apply`)",
}


def holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def maintain_once(
    dsn: str, config: MaintenanceConfig, *, trigger: Trigger = "manual"
) -> MaintenanceReport:
    """One maintenance run against *dsn*. Raises only when the database cannot be reached or
    the run cannot be recorded; a failing step is reported in `errors`."""
    began = time.monotonic()
    conn = await connect(dsn, purpose="maintenance", statement_timeout_s=config.statement_timeout_s)
    try:
        report = await _locked_run(conn, config, trigger)
    finally:
        await conn.close()
    report.ms = round((time.monotonic() - began) * 1000)
    _count(report)
    return report


async def _locked_run(
    conn: Connection, config: MaintenanceConfig, trigger: Trigger
) -> MaintenanceReport:
    if not await _scalar(conn, "SELECT to_regclass('ingestd.policies') IS NOT NULL"):
        return MaintenanceReport(acted=False, skipped="no_schema")
    if not await _scalar(conn, "SELECT pg_try_advisory_lock(%s)", (config.lock_key,)):
        return MaintenanceReport(acted=False, skipped="locked")
    try:
        if trigger == "schedule" and await _recent(conn, config.interval_s):
            return MaintenanceReport(acted=False, skipped="recent")
        return await _run(conn, config, trigger)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (config.lock_key,))


async def _recent(conn: Connection, interval_s: float) -> bool:
    # 0.9: a replica whose timer fires slightly early must not skip a due run.
    return bool(
        await _scalar(
            conn,
            "SELECT EXISTS (SELECT FROM ingestd.maintenance_runs WHERE status = 'ok'"
            " AND finishedAt > now() - make_interval(secs => %s))",
            (interval_s * 0.9,),
        )
    )


async def _run(conn: Connection, config: MaintenanceConfig, trigger: Trigger) -> MaintenanceReport:
    began = time.monotonic()
    # We hold the lock, so a run still marked running died with its process.
    await conn.execute(
        "UPDATE ingestd.maintenance_runs SET status = 'abandoned', finishedAt = now()"
        " WHERE status = 'running'"
    )
    cur = await conn.execute(
        "INSERT INTO ingestd.maintenance_runs (holder, trigger, scheduleIntervalS, status)"
        " VALUES (%s, %s, %s, 'running') RETURNING id, startedAt",
        (holder(), trigger, config.interval_s if trigger == "schedule" else None),
    )
    row = await cur.fetchone()
    assert row is not None
    run_id, now = row
    report = MaintenanceReport(acted=True, tier=await recorded_tier(conn))
    run = _Run(conn, config, trigger, await read_policies(conn), now, report)
    steps: list[tuple[str, Callable[[_Run], Awaitable[None]]]] = [("ledger", _prune_ledger)]
    if report.tier is Tier.APACHE:
        steps.append(("retention", _drop_chunks))
    if report.tier is Tier.POSTGRES:
        steps.append(("retention", _drop_partitions))
        steps.append(("partitions", _make_partitions))
    if report.tier in (Tier.APACHE, Tier.POSTGRES):
        steps.append(("rollups", _refresh))
    if report.tier is Tier.FULL and trigger == "manual":
        steps.append(("timescaledb_jobs", _run_jobs))
    elif report.tier is Tier.FULL:
        steps.append(("timescaledb_jobs", _run_failing_jobs))
    for step, action in steps:
        try:
            await action(run)
        except Exception as exc:  # noqa: BLE001 - a failing step is recorded; the others run
            report.errors[step] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    await conn.execute(
        "DELETE FROM ingestd.maintenance_runs WHERE startedAt < %s", (now - RUN_HISTORY,)
    )
    report.ms = round((time.monotonic() - began) * 1000)
    await conn.execute(
        "UPDATE ingestd.maintenance_runs SET status = %s, finishedAt = now(), summary = %s,"
        " error = %s WHERE id = %s",
        (
            "ok" if report.ok else "error",
            orjson.dumps(report.summary()).decode(),
            "; ".join(f"{k}: {v}" for k, v in report.errors.items()) or None,
            run_id,
        ),
    )
    return report


async def read_policies(conn: Connection) -> dict[str, Policy]:
    cur = await conn.execute(
        "SELECT schemaName, tableName, timeColumn, chunkInterval, dropAfter, partitionsAhead,"
        " enforcedBy FROM ingestd.policies"
    )
    found = [Policy(*row) for row in await cur.fetchall()]
    return {p.table if p.schema == "public" else f"{p.schema}.{p.table}": p for p in found}


@dataclass
class _Run:
    """What the steps of one maintenance run share."""

    conn: Connection
    config: MaintenanceConfig
    trigger: Trigger
    policies: dict[str, Policy]
    now: datetime
    report: MaintenanceReport


async def _prune_ledger(run: _Run) -> None:
    policy = run.policies.get("ingestd.ledger")
    if policy is None:
        return
    cur = await run.conn.execute(
        "DELETE FROM ingestd.ledger WHERE committedAt < %s", (run.now - policy.drop_after,)
    )
    run.report.ledger_pruned = max(cur.rowcount, 0)


async def _drop_chunks(run: _Run) -> None:
    conn, report = run.conn, run.report
    for table in ("metrics", "traces"):
        async with conn.transaction():
            await _lock_timeout(conn, run.config.lock_timeout_s)
            cur = await conn.execute(
                "SELECT count(*) FROM drop_chunks(%s::regclass, older_than => %s::timestamptz)",
                (table, run.now - run.policies[table].drop_after),
            )
            row = await cur.fetchone()
        if row and row[0]:
            report.chunks_dropped[table] = row[0]
    await _prune_rollups(run)


async def _drop_partitions(run: _Run) -> None:
    report = run.report
    for table in ("metrics", "traces"):
        policy = run.policies[table]
        work = await partitions.enforce_retention(
            run.conn,
            table,
            policy.time_column,
            run.now - policy.drop_after,
            run.config.lock_timeout_s,
        )
        if work.dropped:
            report.partitions_dropped[table] = work.dropped
        if work.expired_rows:
            report.expired_rows[table] = work.expired_rows
    await _prune_rollups(run)


async def _make_partitions(run: _Run) -> None:
    for table in ("metrics", "traces"):
        work = await ensure_partitions(
            run.conn, run.policies[table], run.now, run.config.lock_timeout_s
        )
        if work.created:
            run.report.partitions_created[table] = work.created
            run.report.rows_moved[table] = work.moved_rows


async def ensure_partitions(
    conn: Connection, policy: Policy, now: datetime, lock_timeout_s: float
) -> partitions.PartitionWork:
    """Partitions ahead and for DEFAULT's rows, per the stored policy (also used by apply)."""
    assert policy.chunk_interval is not None
    assert policy.partitions_ahead is not None
    return await partitions.ensure_partitions(
        conn,
        policy.table,
        policy.time_column,
        policy.chunk_interval,
        now,
        policy.partitions_ahead,
        lock_timeout_s,
    )


async def _prune_rollups(run: _Run) -> None:
    for name in (rollups.HOURLY, rollups.DAILY):
        pruned = await rollups.prune(run.conn, name, run.now - run.policies[name].drop_after)
        if pruned:
            run.report.rollup_pruned[name] = pruned


async def _refresh(run: _Run) -> None:
    states = await rollups.read_states(run.conn)
    # Daily is built from hourly: refresh both when hourly is due, so they move together.
    if run.trigger == "schedule" and not any(rollups.due(s, run.now) for s in states):
        return
    for state in states:
        work = await rollups.refresh(run.conn, state, run.now)
        run.report.rollup_rows[state.name] = work.rows
        run.report.watermarks[state.name] = f"{work.watermark:%Y-%m-%d %H:%M}Z"


# Order matters: drop before refreshing (nothing refreshed only to be dropped), hourly
# before daily (daily reads hourly's materialized rows), compression last.
_JOB_ORDER = """
SELECT j.job_id, j.proc_name, coalesce(c.view_name, j.hypertable_name)
FROM timescaledb_information.jobs AS j
LEFT JOIN timescaledb_information.continuous_aggregates AS c
    ON c.materialization_hypertable_schema = j.hypertable_schema
   AND c.materialization_hypertable_name = j.hypertable_name
WHERE j.proc_name IN ('policy_retention', 'policy_refresh_continuous_aggregate',
                      'policy_compression')
ORDER BY array_position(ARRAY['policy_retention', 'policy_refresh_continuous_aggregate',
                              'policy_compression']::name[], j.proc_name),
         c.view_name = 'metrics_daily', j.job_id
"""


async def _run_jobs(run: _Run) -> None:
    conn, report = run.conn, run.report
    health = timescaledb_jobs.assess(await timescaledb_jobs.read_jobs(conn), _utcnow(), {})
    report.timescaledb_jobs_failing = timescaledb_jobs.describe(health)
    cur = await conn.execute(_JOB_ORDER)
    for job_id, proc, relation in await cur.fetchall():
        try:
            await conn.execute("CALL run_job(%s)", (job_id,))
        except LockNotAvailable:
            # TimescaleDB's own scheduler is running the same job right now: it is being done.
            report.jobs_run.append(f"{job_id} {proc} on {relation}: running concurrently")
            continue
        report.jobs_run.append(f"{job_id} {proc} on {relation}")
        report.timescaledb_jobs_run.append(job_id)


async def _run_failing_jobs(run: _Run) -> None:
    """Report the policy jobs the scheduler fails; run the due ones (timescaledb_jobs)."""
    conn, report = run.conn, run.report
    health = timescaledb_jobs.assess(
        await timescaledb_jobs.read_jobs(conn),
        run.now,
        await timescaledb_jobs.read_ran_by_ingestd(conn),
    )
    report.timescaledb_jobs_failing = timescaledb_jobs.describe(health)
    if report.timescaledb_jobs_failing:
        log.warning("timescaledb_jobs_failing", jobs=report.timescaledb_jobs_failing)
    for job in health:
        if not job.due:
            continue
        try:
            await conn.execute("CALL run_job(%s)", (job.job.job_id,))
        except LockNotAvailable:
            # The scheduler is running it right now (a concurrent refresh): not a failure.
            continue
        except Exception as exc:  # noqa: BLE001 - the next job still runs; this one is reported
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            report.errors[f"timescaledb_job {job.job.job_id}"] = f"{type(exc).__name__}: {first}"
            continue
        report.jobs_run.append(f"{job.job.job_id} {job.job.proc_name} on {job.job.relation}")
        report.timescaledb_jobs_run.append(job.job.job_id)


async def _lock_timeout(conn: Connection, seconds: float) -> None:
    await conn.execute(f"SET LOCAL lock_timeout = {round(seconds * 1000)}")


async def _scalar(conn: Connection, query: Any, params: tuple[Any, ...] = ()) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return row[0] if row else None


def _count(report: MaintenanceReport) -> None:
    if not report.acted:
        metrics.MAINTENANCE_RUNS.labels(outcome=report.skipped or "skipped").inc()
        return
    metrics.MAINTENANCE_RUNS.labels(outcome="ok" if report.ok else "error").inc()
    if report.tier is Tier.FULL:
        metrics.TIMESCALEDB_JOBS_FAILING.set(len(report.timescaledb_jobs_failing))
        metrics.TIMESCALEDB_JOBS_RUN.inc(len(report.timescaledb_jobs_run))
    metrics.MAINTENANCE_RUN_SECONDS.observe(report.ms / 1000)
    metrics.MAINTENANCE_LEDGER_PRUNED.inc(report.ledger_pruned)
    for table, n in report.chunks_dropped.items():
        metrics.MAINTENANCE_DROPPED_CHUNKS.labels(table=table, kind="chunk").inc(n)
    for table, n in report.partitions_dropped.items():
        metrics.MAINTENANCE_DROPPED_CHUNKS.labels(table=table, kind="partition").inc(n)
    for table, n in report.partitions_created.items():
        metrics.MAINTENANCE_CREATED_PARTITIONS.labels(table=table).inc(n)
    for name, n in report.rollup_rows.items():
        metrics.MAINTENANCE_ROLLUP_ROWS.labels(rollup=name).inc(n)
    for step in report.errors:
        metrics.MAINTENANCE_ERRORS.labels(step=step).inc()
    if report.ok:
        metrics.MAINTENANCE_LAST_SUCCESS.set(time.time())


def _utcnow() -> datetime:
    return datetime.now(UTC)
