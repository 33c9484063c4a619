"""The full tier's TimescaleDB policy jobs, watched by the maintenance job, and run by it while
TimescaleDB's own scheduler fails them.

With TimescaleDB 2.28.3 built against PostgreSQL 15.20, the background scheduler fails every
policy job with `cannot drop portal "" while it is being set up`, while `CALL run_job(id)`
from a normal session works: compression, retention and rollup refreshes would silently never
happen and the disk would fill. So every maintenance run on the full tier reads
`timescaledb_information.job_stats`:
- a job is *failing* when its last run failed, *overdue* when it has not started for two
  schedule intervals past its next start (no scheduler running at all);
- a failing or overdue job is *due* when neither TimescaleDB nor ingestd ran it successfully
  within its schedule interval; ingestd then runs it with `CALL run_job` (ordered: retention
  first, hourly before daily, compression last) and records the ids it ran in the run's
  summary (`timescaledb_jobs_run`), so that replicas do not run it again before it is due.
The failing jobs are reported in /status (the run's summary), the gauge
`ingestd_timescaledb_jobs_failing`, a `timescaledb_jobs_failing` log event and
`ingestd schema status`. `assess` is pure, so it is tested on recorded job_stats rows.

`check_version` is `schema apply`'s refusal of a TimescaleDB too old for the SQL it runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ingestd.errors import SchemaError
from ingestd.schema.db import Connection
from ingestd.schema.tiers import Tier

# create_hypertable(..., by_range(...)) appeared in 2.13; `schema status` on the full tier reads
# timescaledb_information.hypertable_compression_settings, which appeared in 2.15.
MIN_VERSION = {Tier.APACHE: (2, 13), Tier.FULL: (2, 15)}
_WHY = {
    Tier.APACHE: "hypertables are created with by_range()",
    Tier.FULL: "by_range() and hypertable_compression_settings",
}
# The scheduler starts a job within seconds of next_start; two intervals late means none runs.
OVERDUE_INTERVALS = 2
_ORDER = ("policy_retention", "policy_refresh_continuous_aggregate", "policy_compression")


def parse_version(text: str) -> tuple[int, int, int]:
    """'2.28.3' -> (2, 28, 3); '2.15.0-dev' -> (2, 15, 0). ValueError when unreadable."""
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        raise ValueError(f"not a TimescaleDB version: {text!r}")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def check_version(tier: Tier, installed: str | None) -> None:
    """SchemaError (one line) when *installed* is older than what *tier*'s SQL needs."""
    needed = MIN_VERSION.get(tier)
    if needed is None or installed is None:
        return
    if parse_version(installed)[:2] < needed:
        raise SchemaError(
            f"TimescaleDB {installed} is too old for tier {tier}: ingestd needs "
            f"{needed[0]}.{needed[1]} or newer ({_WHY[tier]}); install a newer release and "
            f"run ALTER EXTENSION timescaledb UPDATE"
        )


@dataclass(frozen=True)
class JobStat:
    """One row of timescaledb_information.jobs joined with job_stats."""

    job_id: int
    proc_name: str
    relation: str
    schedule_interval: timedelta
    scheduled: bool
    last_run_status: str | None  # 'Success' | 'Failed' | None (never ran)
    last_run_started_at: datetime | None
    last_successful_finish: datetime | None
    next_start: datetime | None
    total_failures: int
    error: str | None  # the newest job_errors message of a failed last run


@dataclass(frozen=True)
class JobHealth:
    job: JobStat
    state: str  # 'ok' | 'failing' | 'overdue'
    due: bool  # ingestd should run it now

    @property
    def name(self) -> str:
        job = self.job
        return f"{job.proc_name.removeprefix('policy_')} [{job.job_id}] on {job.relation}"


def assess(
    jobs: list[JobStat], now: datetime, ran_by_ingestd: dict[int, datetime]
) -> list[JobHealth]:
    """The health of each scheduled policy job, in the order they should run.

    *ran_by_ingestd*: job id -> when a maintenance run last ran it successfully.
    """
    out = []
    for job in sorted(jobs, key=_order):
        if not job.scheduled:
            continue
        if job.last_run_status == "Failed":
            state = "failing"
        elif (
            job.next_start is not None
            and now - job.next_start > OVERDUE_INTERVALS * job.schedule_interval
        ):
            state = "overdue"
        else:
            state = "ok"
        finishes = [t for t in (job.last_successful_finish, ran_by_ingestd.get(job.job_id)) if t]
        fresh = bool(finishes) and now - max(finishes) < job.schedule_interval
        out.append(JobHealth(job, state, due=state != "ok" and not fresh))
    return out


def _order(job: JobStat) -> tuple[int, bool, int]:
    rank = _ORDER.index(job.proc_name) if job.proc_name in _ORDER else len(_ORDER)
    return rank, job.relation == "metrics_daily", job.job_id


_JOBS = """
SELECT j.job_id, j.proc_name::text, coalesce(c.view_name, j.hypertable_name)::text,
       j.schedule_interval, j.scheduled, s.last_run_status,
       CASE WHEN isfinite(s.last_run_started_at) THEN s.last_run_started_at END,
       CASE WHEN isfinite(s.last_successful_finish) THEN s.last_successful_finish END,
       CASE WHEN isfinite(s.next_start) THEN s.next_start END,
       coalesce(s.total_failures, 0),
       e.err_message
FROM timescaledb_information.jobs AS j
LEFT JOIN timescaledb_information.job_stats AS s ON s.job_id = j.job_id
LEFT JOIN timescaledb_information.continuous_aggregates AS c
    ON c.materialization_hypertable_schema = j.hypertable_schema
   AND c.materialization_hypertable_name = j.hypertable_name
LEFT JOIN LATERAL (
    SELECT err_message FROM timescaledb_information.job_errors AS x
    WHERE x.job_id = j.job_id AND s.last_run_status = 'Failed'
    ORDER BY x.start_time DESC LIMIT 1
) AS e ON true
WHERE j.proc_name LIKE 'policy_%%' AND j.hypertable_name IS NOT NULL
"""
# Jobs the maintenance job ran itself, from the summaries it keeps for 7 days.
_RAN = """
SELECT ran.job_id::int, max(r.finishedAt)
FROM ingestd.maintenance_runs AS r,
     jsonb_array_elements_text(r.summary -> 'timescaledb_jobs_run') AS ran(job_id)
WHERE r.finishedAt IS NOT NULL
GROUP BY 1
"""


async def read_jobs(conn: Connection) -> list[JobStat]:
    cur = await conn.execute(_JOBS)
    return [JobStat(*row) for row in await cur.fetchall()]


async def read_ran_by_ingestd(conn: Connection) -> dict[int, datetime]:
    cur = await conn.execute(_RAN)
    return {int(job_id): at for job_id, at in await cur.fetchall()}


def describe(health: list[JobHealth]) -> list[dict[str, Any]]:
    """The unhealthy jobs, for the run's summary and the log event (no zeros)."""
    return [
        {
            "job": h.name,
            "state": h.state,
            "failures": h.job.total_failures,
            **({"error": h.job.error[:200]} if h.job.error else {}),
        }
        for h in health
        if h.state != "ok"
    ]
