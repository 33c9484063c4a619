"""The TimescaleDB version check of `schema apply`, and the assessment of policy jobs from
job_stats rows as recorded on a 2.28.3 full-tier server whose scheduler fails every job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ingestd.errors import SchemaError
from ingestd.schema.tiers import Tier
from ingestd.schema.timescaledb_jobs import (
    JobStat,
    assess,
    check_version,
    describe,
    parse_version,
)

NOW = datetime(2026, 12, 4, 22, 0, tzinfo=UTC)
PORTAL = 'cannot drop portal "" while it is being set up'


def job(job_id: int, proc: str, relation: str, **fields: object) -> JobStat:
    """A job_stats row; the defaults are a healthy job that ran 10 minutes ago."""
    values: dict[str, object] = {
        "schedule_interval": timedelta(hours=1),
        "scheduled": True,
        "last_run_status": "Success",
        "last_run_started_at": NOW - timedelta(minutes=10),
        "last_successful_finish": NOW - timedelta(minutes=10),
        "next_start": NOW + timedelta(minutes=50),
        "total_failures": 0,
        "error": None,
    }
    values.update(fields)
    return JobStat(job_id, proc, relation, **values)  # type: ignore[arg-type]


# What the scheduler leaves behind on 2.28.3 / PostgreSQL 15.20: every run failed, never a
# success, next_start pushed back by the retry backoff.
FAILING: dict[str, object] = {
    "last_run_status": "Failed",
    "last_successful_finish": None,
    "next_start": NOW + timedelta(minutes=5),
    "total_failures": 7,
    "error": PORTAL,
}


@pytest.mark.parametrize(
    ("tier", "version", "refused"),
    [
        (Tier.APACHE, "2.12.2", True),
        (Tier.APACHE, "2.13.0", False),
        (Tier.FULL, "2.14.2", True),
        (Tier.FULL, "2.15.0", False),
        (Tier.FULL, "2.28.3", False),
        (Tier.POSTGRES, None, False),
        (Tier.APACHE, "2.19.3", False),
    ],
)
def test_version_check(tier: Tier, version: str | None, refused: bool) -> None:
    """by_range needs 2.13 (apache); the full tier's status needs 2.15; one line refuses."""
    if not refused:
        check_version(tier, version)
        return
    with pytest.raises(SchemaError) as info:
        check_version(tier, version)
    message = str(info.value)
    assert "\n" not in message
    assert f"TimescaleDB {version} is too old for tier {tier}" in message


def test_parse_version() -> None:
    """Release, dev and two-part versions read; garbage says so."""
    assert parse_version("2.28.3") == (2, 28, 3)
    assert parse_version("2.15.0-dev") == (2, 15, 0)
    assert parse_version("2.13") == (2, 13, 0)
    with pytest.raises(ValueError, match="not a TimescaleDB version"):
        parse_version("latest")


def test_failing_jobs_are_due_and_ordered() -> None:
    """Every failing job is due; retention runs first, hourly before daily, compression last."""
    rows = [
        job(1003, "policy_compression", "metrics", **FAILING),
        job(1005, "policy_refresh_continuous_aggregate", "metrics_daily", **FAILING),
        job(1004, "policy_refresh_continuous_aggregate", "metrics_hourly", **FAILING),
        job(1001, "policy_retention", "traces", **FAILING),
    ]
    health = assess(rows, NOW, {})
    assert [h.job.job_id for h in health] == [1001, 1004, 1005, 1003]
    assert all(h.state == "failing" and h.due for h in health)
    assert describe(health)[0] == {
        "job": "retention [1001] on traces",
        "state": "failing",
        "failures": 7,
        "error": PORTAL,
    }


def test_a_job_ingestd_ran_recently_is_not_due_again() -> None:
    """Run by ingestd 20 minutes ago with a 1-hour schedule: still failing, not due."""
    rows = [job(1001, "policy_retention", "traces", **FAILING)]
    (health,) = assess(rows, NOW, {1001: NOW - timedelta(minutes=20)})
    assert health.state == "failing"
    assert not health.due
    (later,) = assess(rows, NOW, {1001: NOW - timedelta(minutes=61)})
    assert later.due


def test_healthy_overdue_and_paused_jobs() -> None:
    """A healthy job is left alone; one two intervals past next_start is overdue and due; an
    unscheduled (paused) one is not watched."""
    rows = [
        job(1, "policy_retention", "metrics"),
        job(
            2,
            "policy_retention",
            "traces",
            next_start=NOW - timedelta(hours=3),
            last_successful_finish=NOW - timedelta(hours=4),
        ),
        job(3, "policy_compression", "traces", scheduled=False, **FAILING),
    ]
    health = {h.job.job_id: h for h in assess(rows, NOW, {})}
    assert set(health) == {1, 2}
    assert (health[1].state, health[1].due) == ("ok", False)
    assert (health[2].state, health[2].due) == ("overdue", True)
    assert describe(list(health.values())) == [
        {"job": "retention [2] on traces", "state": "overdue", "failures": 0}
    ]
