"""On a full-tier server (INGESTD_PG_FULL_DSN), the maintenance job reports the policy jobs
TimescaleDB's scheduler fails and runs the due ones itself with CALL run_job.

Seen with TimescaleDB 2.28.3 built against PostgreSQL 15.20: the scheduler fails every policy
job with `cannot drop portal "" while it is being set up`. On a server whose scheduler works,
the test checks that nothing is reported and nothing is run instead.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import pytest

from ingestd.observe import metrics
from ingestd.schema import command, maintenance
from tests.integration.conftest import FULL_DSN_ENV, TierDatabase
from tests.integration.schema_support import apply, make_config, rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def full_db(make_full_database: Callable[[], str]) -> TierDatabase:
    if not os.environ.get(FULL_DSN_ENV):
        pytest.skip(f"{FULL_DSN_ENV} is not set: no full-tier server (the tier is optional)")
    return TierDatabase("full", make_full_database())


def scheduler_verdicts(dsn: str) -> dict[int, str | None]:
    found = rows(
        dsn,
        "SELECT s.job_id, s.last_run_status FROM timescaledb_information.job_stats AS s"
        " JOIN timescaledb_information.jobs AS j USING (job_id)"
        " WHERE j.proc_name LIKE 'policy_%%' AND j.hypertable_name IS NOT NULL",
    )
    return dict(found)


async def test_failing_policy_jobs_are_reported_and_run(full_db: TierDatabase) -> None:
    """After the scheduler's first attempts, a scheduled maintenance run lists each failing
    job (summary, gauge, schema status) and runs it; the next run does not rerun it."""
    cfg = make_config(full_db)
    await apply(cfg)
    rows(
        full_db.dsn,
        "SELECT alter_job(job_id, next_start => now()) FROM timescaledb_information.jobs"
        " WHERE proc_name LIKE 'policy_%%' AND hypertable_name IS NOT NULL",
    )
    # Each database needs one of the server's `timescaledb.max_background_workers` for its
    # scheduler: a test session that holds many databases open needs a server with enough.
    deadline = time.monotonic() + 120
    while None in (verdicts := scheduler_verdicts(full_db.dsn)).values():
        assert time.monotonic() < deadline, (
            f"the scheduler never ran the jobs: {verdicts} (is timescaledb.max_background_workers"
            " large enough for every database of this session?)"
        )
        await asyncio.sleep(0.5)
    failing = {job for job, status in verdicts.items() if status == "Failed"}
    print(f"scheduler: {len(failing)} of {len(verdicts)} policy jobs failed")

    report = await maintenance.maintain_once(full_db.dsn, cfg.maintenance, trigger="schedule")
    assert report.ok, report.errors
    reported = {int(j["job"].split("[")[1].split("]")[0]) for j in report.timescaledb_jobs_failing}
    assert reported == failing
    assert set(report.timescaledb_jobs_run) == failing
    assert metrics.TIMESCALEDB_JOBS_FAILING._value.get() == len(failing)
    lines: list[str] = []
    await command.show_status(cfg, lines.append)
    summary = next(line for line in lines if line.startswith("timescaledb jobs"))
    if failing:
        assert f"{len(failing)} of {len(verdicts)} failing" in summary
        assert "CALL run_job" in summary
    else:
        assert "none failing" in summary

    await asyncio.sleep(1.1)
    again = await maintenance.maintain_once(
        full_db.dsn, cfg.maintenance.model_copy(update={"interval_s": 1.0}), trigger="schedule"
    )
    assert again.acted
    assert again.timescaledb_jobs_run == []  # ran within their schedule interval: not due
    assert len(again.timescaledb_jobs_failing) == len(failing)
