"""`ingestd schema status`: the tier, every time-partitioned relation with its policies, and jobs.

Read-only; everything comes from the database (what is enforced), not from the config file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import sql

from ingestd.schema import timescaledb_jobs
from ingestd.schema.db import Connection, human
from ingestd.schema.tiers import Tier, describe, read_facts, recorded_tier

_HEADERS = (
    "relation",
    "kind",
    "time column",
    "chunk",
    "chunks",
    "compression",
    "retention",
    "refresh",
)
_JOB_HEADERS = ("job", "on", "schedule", "last run", "status", "next run")


@dataclass(frozen=True)
class Status:
    header: list[tuple[str, str]]
    relations: list[tuple[str, ...]]
    jobs: list[tuple[str, ...]]

    def lines(self) -> list[str]:
        width = max(len(k) for k, _ in self.header)
        out = [f"{k.ljust(width)}  {v}" for k, v in self.header]
        if self.relations:
            out += ["", *render(_HEADERS, self.relations)]
        if self.jobs:
            out += ["", *render(_JOB_HEADERS, self.jobs)]
        return out


def render(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A plain-text table: left-aligned columns two spaces apart, a rule under the header."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def when(t: datetime | None) -> str:
    return "-" if t is None else f"{t:%Y-%m-%d %H:%M:%S}Z"


async def gather(conn: Connection) -> Status:
    tier = await recorded_tier(conn)
    facts = await read_facts(conn)
    info = conn.info
    header = [("database", f"{info.host}:{info.port}/{info.dbname}")]
    if tier is None:
        header.append(("tier", "none: the schema is not applied (run `ingestd schema apply`)"))
        return Status(header, [], [])
    header.append(("tier", f"{tier} ({describe(facts, tier)})"))
    cur = await conn.execute("SELECT count(*), max(name), max(appliedAt) FROM ingestd.migrations")
    count, last, at = await _one(cur)
    header.append(("migrations", f"{count} applied, last {last} at {when(at)}"))
    policies = await _policies(conn)
    wanted = ("metrics", "traces", "metrics_hourly", "metrics_daily", "ingestd.ledger")
    if missing := [name for name in wanted if name not in policies]:
        header.append(("incomplete", f"no policy for {', '.join(missing)}: run `schema apply`"))
        return Status(header, [], [])
    relations = [await _series_row(conn, tier, t, policies[t]) for t in ("metrics", "traces")]
    relations += await _rollup_rows(conn, tier, policies)
    cur = await conn.execute("SELECT count(*) FROM ingestd.ledger")
    (keys,) = await _one(cur)
    relations.append(
        (
            "ingestd.ledger",
            "table",
            "committedat",
            "-",
            f"{keys} keys",
            "-",
            _retention(policies["ingestd.ledger"]),
            "-",
        )
    )
    jobs = await _maintenance_jobs(conn)
    if tier is Tier.FULL:
        jobs += await _timescaledb_jobs(conn)
        header.append(("timescaledb jobs", await _failing_jobs(conn)))
    return Status(header, relations, jobs)


async def _policies(conn: Connection) -> dict[str, dict[str, Any]]:
    cur = await conn.execute(
        "SELECT schemaName, tableName, timeColumn, chunkInterval, dropAfter, compressAfter,"
        " partitionsAhead, enforcedBy FROM ingestd.policies"
    )
    keys = ("schema", "table", "column", "chunk", "drop", "compress", "ahead", "by")
    out = {}
    for row in await cur.fetchall():
        policy = dict(zip(keys, row, strict=True))
        name = row[1] if row[0] == "public" else f"{row[0]}.{row[1]}"
        out[name] = policy
    return out


def _retention(policy: dict[str, Any]) -> str:
    return f"{human(policy['drop'])} ({policy['by']})"


async def _series_row(
    conn: Connection, tier: Tier, table: str, policy: dict[str, Any]
) -> tuple[str, ...]:
    if tier is Tier.POSTGRES:
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'),"
            " max(c.relname) FILTER (WHERE pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT')"
            " FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass",
            (table,),
        )
        parts, default = await _one(cur)
        waiting = 0
        if default:
            query = sql.SQL("SELECT count(*) FROM ONLY {}").format(sql.Identifier(default))
            cur = await conn.execute(query)
            (waiting,) = await _one(cur)
        chunks = f"{parts} partitions, {waiting} rows in DEFAULT"
        return (
            table,
            "partitioned table",
            policy["column"],
            human(policy["chunk"]),
            chunks,
            "unavailable (no TimescaleDB)",
            _retention(policy),
            f"partitions {human(policy['ahead'])} ahead",
        )
    cur = await conn.execute(
        "SELECT d.time_interval, h.num_chunks, h.compression_enabled"
        " FROM timescaledb_information.hypertables AS h"
        " JOIN timescaledb_information.dimensions AS d USING (hypertable_schema, hypertable_name)"
        " WHERE h.hypertable_schema = current_schema() AND h.hypertable_name = %s",
        (table,),
    )
    interval, chunks, compressed = await _one(cur)
    compression = "unavailable (apache license)"
    if tier is Tier.FULL:
        compression = await _compression(conn, table, policy) if compressed else "off"
    return (
        table,
        "hypertable",
        policy["column"],
        human(interval),
        f"{chunks} chunks",
        compression,
        _retention(policy),
        "-",
    )


async def _compression(conn: Connection, table: str, policy: dict[str, Any]) -> str:
    cur = await conn.execute(
        "SELECT segmentby, orderby FROM timescaledb_information.hypertable_compression_settings"
        " WHERE hypertable = %s::regclass",
        (table,),
    )
    segmentby, orderby = await _one(cur)
    cur = await conn.execute(
        "SELECT count(*) FILTER (WHERE is_compressed) FROM timescaledb_information.chunks"
        " WHERE hypertable_schema = current_schema() AND hypertable_name = %s",
        (table,),
    )
    (done,) = await _one(cur)
    return (
        f"segmentby {segmentby}; orderby {orderby}; after {human(policy['compress'])}; "
        f"{done} compressed"
    )


async def _rollup_rows(
    conn: Connection, tier: Tier, policies: dict[str, dict[str, Any]]
) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    if tier is Tier.FULL:
        cur = await conn.execute(
            """
            SELECT c.view_name, c.materialized_only,
                   CASE WHEN w.mark > '1000-01-01' THEN w.mark END,
                   j.schedule_interval, (j.config ->> 'start_offset')::interval,
                   (j.config ->> 'end_offset')::interval
            FROM timescaledb_information.continuous_aggregates AS c
            JOIN _timescaledb_catalog.hypertable AS h
                ON h.schema_name = c.materialization_hypertable_schema
               AND h.table_name = c.materialization_hypertable_name
            -- before the first refresh the watermark is the lowest timestamp (4714 BC)
            CROSS JOIN LATERAL (SELECT _timescaledb_functions.to_timestamp(
                _timescaledb_functions.cagg_watermark(h.id)) AS mark) AS w
            LEFT JOIN timescaledb_information.jobs AS j
                ON j.hypertable_schema = c.materialization_hypertable_schema
               AND j.hypertable_name = c.materialization_hypertable_name
               AND j.proc_name = 'policy_refresh_continuous_aggregate'
            WHERE c.view_schema = current_schema() ORDER BY c.view_name DESC
            """
        )
        for name, mat_only, mark, every, start, end in await cur.fetchall():
            kind = "continuous aggregate" + ("" if mat_only else " (real-time)")
            refresh = (
                f"materialized up to {_mark(mark)}; policy every {human(every)}, "
                f"window now-{human(start)} .. now-{human(end)}"
            )
            rows.append(
                (name, kind, "bucket", _width(name), "-", "-", _retention(policies[name]), refresh)
            )
        return rows
    cur = await conn.execute(
        "SELECT name, lateWindow, refreshInterval, watermark, lastRefreshAt, lastRefreshRows"
        " FROM ingestd.rollups ORDER BY bucketWidth"
    )
    for name, late, every, mark, last, count in await cur.fetchall():
        refresh = (
            f"materialized up to {_mark(mark)}; every {human(every)}, late window "
            f"{human(late)}; last refresh {when(last)} ({count if count is not None else 0} rows)"
        )
        rows.append(
            (
                name,
                "rollup view (real-time)",
                "bucket",
                _width(name),
                "-",
                "-",
                _retention(policies[name]),
                refresh,
            )
        )
    return rows


def _width(name: str) -> str:
    return "1 hour" if name.endswith("hourly") else "1 day"


def _mark(mark: datetime | None) -> str:
    if mark is None or mark.year < 1000:
        return "nothing yet"
    return when(mark)


async def _maintenance_jobs(conn: Connection) -> list[tuple[str, ...]]:
    cur = await conn.execute(
        """
        SELECT r.startedAt, r.finishedAt, r.status, r.holder, r.trigger, r.error,
               (SELECT scheduleIntervalS FROM ingestd.maintenance_runs
                WHERE trigger = 'schedule' ORDER BY id DESC LIMIT 1)
        FROM ingestd.maintenance_runs AS r ORDER BY r.id DESC LIMIT 1
        """
    )
    row = await cur.fetchone()
    if row is None:
        return [("ingestd maintenance", "all tiers", "-", "never", "-", "-")]
    started, finished, status, by, trigger, error, every = row
    schedule = human(timedelta(seconds=every)) if every else "-"
    took = f", {(finished - started).total_seconds():.1f} s" if finished else ""
    state = f"{status}{took}, {trigger} by {by}" + (f": {error}" if error else "")
    upcoming = when(started + timedelta(seconds=every)) if every else "-"
    return [("ingestd maintenance", "all tiers", schedule, when(started), state, upcoming)]


async def _timescaledb_jobs(conn: Connection) -> list[tuple[str, ...]]:
    jobs = sorted(await timescaledb_jobs.read_jobs(conn), key=lambda j: j.job_id)
    return [
        (
            f"{j.proc_name.removeprefix('policy_')} [{j.job_id}]",
            j.relation,
            human(j.schedule_interval),
            when(j.last_run_started_at) if j.last_run_started_at else "never",
            _job_status(j),
            when(j.next_start),
        )
        for j in jobs
    ]


def _job_status(job: timescaledb_jobs.JobStat) -> str:
    if job.last_run_status is None:
        return "-"
    return job.last_run_status + (f": {job.error}" if job.error else "")


async def _failing_jobs(conn: Connection) -> str:
    """'all ok', or the policy jobs TimescaleDB's scheduler fails and what ingestd does."""
    health = timescaledb_jobs.assess(
        await timescaledb_jobs.read_jobs(conn),
        await _now(conn),
        await timescaledb_jobs.read_ran_by_ingestd(conn),
    )
    failing = [h for h in health if h.state != "ok"]
    if not failing:
        return f"{len(health)} policy jobs, none failing"
    names = ", ".join(f"{h.name} ({h.state})" for h in failing)
    return (
        f"{len(failing)} of {len(health)} failing in TimescaleDB's scheduler: {names}; "
        f"ingestd's maintenance job runs them (CALL run_job) when due"
    )


async def _now(conn: Connection) -> datetime:
    cur = await conn.execute("SELECT now()")
    (now,) = await _one(cur)
    value: datetime = now
    return value


async def _one(cur: Any) -> Any:
    row = await cur.fetchone()
    assert row is not None
    return row
