"""The policies `schema apply` sets from the config: chunk widths, retention, compression, refresh.

They are stored in `ingestd.policies` / `ingestd.rollups` on every tier (what the maintenance
job enforces and `schema status` shows) and, on the full tier, also set as TimescaleDB's own
policy jobs. Each is compared with what the database has and changed only when it differs,
so a second apply reports nothing to do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import LiteralString

from ingestd.config import SchemaConfig, TableRetentionConfig
from ingestd.schema.db import Connection, human
from ingestd.schema.tiers import Tier

HOUR, DAY = timedelta(hours=1), timedelta(days=1)


@dataclass(frozen=True)
class TablePolicy:
    schema: str
    table: str
    time_column: str
    chunk_interval: timedelta | None
    drop_after: timedelta
    compress_after: timedelta | None
    partitions_ahead: timedelta | None
    enforced_by: str  # 'timescaledb' (a TimescaleDB job) or 'ingestd' (the maintenance job)

    @property
    def qualified(self) -> str:
        return self.table if self.schema == "public" else f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class RefreshPolicy:
    """How one rollup is kept: re-aggregation window and schedule (and the cagg window)."""

    name: str
    bucket: timedelta
    late_window: timedelta
    refresh_interval: timedelta
    retention: timedelta
    # Continuous aggregate policy window (full tier). TimescaleDB refreshes only buckets that
    # lie wholly inside [now - start_offset, now - end_offset]: one bucket more than the late
    # window covers the bucket the window starts in; end_offset 0 materializes every complete
    # bucket and leaves the current one to real-time aggregation.
    start_offset: timedelta
    end_offset: timedelta


def table_policies(config: SchemaConfig, tier: Tier) -> list[TablePolicy]:
    """The desired policy of every table with a retention, for *tier*."""
    enforcer = "timescaledb" if tier is Tier.FULL else "ingestd"
    ahead = timedelta(hours=config.partitions_ahead_hours) if tier is Tier.POSTGRES else None

    def series(table: str, column: str, cfg: TableRetentionConfig) -> TablePolicy:
        return TablePolicy(
            schema="public",
            table=table,
            time_column=column,
            chunk_interval=timedelta(hours=cfg.chunk_interval_hours),
            drop_after=timedelta(days=cfg.retention_days),
            compress_after=timedelta(days=cfg.compress_after_days) if tier is Tier.FULL else None,
            partitions_ahead=ahead,
            enforced_by=enforcer,
        )

    rollup_retention = timedelta(days=config.rollups.retention_days)
    return [
        series("metrics", "timestamp", config.metrics),
        series("traces", "starttime", config.traces),
        *(
            TablePolicy("public", name, "bucket", None, rollup_retention, None, None, enforcer)
            for name in ("metrics_hourly", "metrics_daily")
        ),
        TablePolicy(
            "ingestd",
            "ledger",
            "committedat",
            None,
            timedelta(seconds=config.ledger_retention_s),
            None,
            None,
            "ingestd",
        ),
    ]


def refresh_policies(config: SchemaConfig) -> list[RefreshPolicy]:
    late = timedelta(hours=config.rollups.late_window_hours)
    every = timedelta(minutes=config.rollups.refresh_interval_minutes)
    keep = timedelta(days=config.rollups.retention_days)
    # A daily cagg window must span two whole days at least (TimescaleDB refuses less).
    daily_start = DAY * (math.ceil((late + HOUR) / DAY) + 1)
    return [
        RefreshPolicy("metrics_hourly", HOUR, late, every, keep, late + HOUR, timedelta(0)),
        RefreshPolicy("metrics_daily", DAY, late, every, keep, daily_start, timedelta(0)),
    ]


async def reconcile(
    conn: Connection, config: SchemaConfig, tier: Tier, out: Callable[[str], None]
) -> int:
    """Make the database's policies match the config; print and return how many changed."""
    changes = 0
    for policy in table_policies(config, tier):
        if await _store(conn, policy):
            changes += 1
            out(f"policy {policy.qualified}: {describe(policy)}")
        if tier.timescaledb and policy.chunk_interval is not None:
            changes += await _chunk_interval(conn, policy, out)
        if tier is Tier.FULL and policy.schema == "public":
            changes += await _timescaledb_policies(conn, policy, out)
    for rollup in refresh_policies(config):
        if tier is Tier.FULL:
            changes += await _cagg_policy(conn, rollup, out)
        else:
            changes += await _rollup_settings(conn, rollup, out)
    if not changes:
        out("policies: unchanged")
    return changes


def describe(policy: TablePolicy) -> str:
    parts = []
    if policy.chunk_interval is not None:
        parts.append(f"chunk interval {human(policy.chunk_interval)}")
    parts.append(f"retention {human(policy.drop_after)}")
    if policy.compress_after is not None:
        parts.append(f"compression after {human(policy.compress_after)}")
    if policy.partitions_ahead is not None:
        parts.append(f"partitions {human(policy.partitions_ahead)} ahead")
    parts.append(f"enforced by {policy.enforced_by}")
    return ", ".join(parts)


async def _store(conn: Connection, policy: TablePolicy) -> bool:
    cur = await conn.execute(
        """
        INSERT INTO ingestd.policies AS p (schemaName, tableName, timeColumn, chunkInterval,
            dropAfter, compressAfter, partitionsAhead, enforcedBy)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (schemaName, tableName) DO UPDATE SET
            timeColumn = excluded.timeColumn, chunkInterval = excluded.chunkInterval,
            dropAfter = excluded.dropAfter, compressAfter = excluded.compressAfter,
            partitionsAhead = excluded.partitionsAhead, enforcedBy = excluded.enforcedBy,
            updatedAt = now()
        WHERE (p.timeColumn, p.chunkInterval, p.dropAfter, p.compressAfter, p.partitionsAhead,
               p.enforcedBy)
              IS DISTINCT FROM
              (excluded.timeColumn, excluded.chunkInterval, excluded.dropAfter,
               excluded.compressAfter, excluded.partitionsAhead, excluded.enforcedBy)
        RETURNING 1
        """,
        (
            policy.schema,
            policy.table,
            policy.time_column,
            policy.chunk_interval,
            policy.drop_after,
            policy.compress_after,
            policy.partitions_ahead,
            policy.enforced_by,
        ),
    )
    return await cur.fetchone() is not None


async def _chunk_interval(conn: Connection, policy: TablePolicy, out: Callable[[str], None]) -> int:
    cur = await conn.execute(
        "SELECT time_interval FROM timescaledb_information.dimensions"
        " WHERE hypertable_schema = current_schema() AND hypertable_name = %s"
        " AND column_name = %s",
        (policy.table, policy.time_column),
    )
    row = await cur.fetchone()
    if row is None or row[0] == policy.chunk_interval:
        return 0
    await conn.execute(
        "SELECT set_chunk_time_interval(%s::regclass, %s::interval)",
        (policy.table, policy.chunk_interval),
    )
    out(f"{policy.table}: chunk interval {human(row[0])} -> {human(policy.chunk_interval)}")
    return 1


# TimescaleDB policy jobs by kind: (proc_name, remove call, add call); %s are the relation
# and the job's settings in order. Only called on the full tier (TSL functions).
_JOBS: dict[str, tuple[str, LiteralString, LiteralString]] = {
    "retention": (
        "policy_retention",
        "SELECT remove_retention_policy(%s::regclass, if_exists => true)",
        "SELECT add_retention_policy(%s::regclass, drop_after => %s::interval)",
    ),
    "compression": (
        "policy_compression",
        "SELECT remove_compression_policy(%s::regclass, if_exists => true)",
        "SELECT add_compression_policy(%s::regclass, compress_after => %s::interval)",
    ),
    "refresh": (
        "policy_refresh_continuous_aggregate",
        "SELECT remove_continuous_aggregate_policy(%s::regclass, if_exists => true)",
        "SELECT add_continuous_aggregate_policy(%s::regclass, start_offset => %s::interval,"
        " end_offset => %s::interval, schedule_interval => %s::interval)",
    ),
}
# The config keys each kind's job stores, in the order its add call takes them.
_JOB_KEYS = {
    "retention": ("drop_after",),
    "compression": ("compress_after",),
    "refresh": ("start_offset", "end_offset"),
}


async def _timescaledb_policies(
    conn: Connection, policy: TablePolicy, out: Callable[[str], None]
) -> int:
    changes = await _ensure_job(conn, "retention", policy.table, (policy.drop_after,), None, out)
    if policy.compress_after is not None:
        changes += await _ensure_job(
            conn, "compression", policy.table, (policy.compress_after,), None, out
        )
    return changes


async def _cagg_policy(conn: Connection, rollup: RefreshPolicy, out: Callable[[str], None]) -> int:
    offsets = (rollup.start_offset, rollup.end_offset)
    return await _ensure_job(conn, "refresh", rollup.name, offsets, rollup.refresh_interval, out)


async def _ensure_job(
    conn: Connection,
    kind: str,
    relation: str,
    settings: tuple[timedelta, ...],
    schedule: timedelta | None,
    out: Callable[[str], None],
) -> int:
    """Add the TimescaleDB policy job, or replace it when its settings differ. 1 if changed."""
    proc, remove_sql, add_sql = _JOBS[kind]
    current = await job_settings(conn, proc, relation, _JOB_KEYS[kind])
    if current is not None:
        have, have_schedule = current
        if have == settings and (schedule is None or have_schedule == schedule):
            return 0
    async with conn.transaction():
        await conn.execute(remove_sql, (relation,))
        extra = (schedule,) if schedule is not None else ()
        await conn.execute(add_sql, (relation, *settings, *extra))
    shown = ", ".join(f"{k} {human(v)}" for k, v in zip(_JOB_KEYS[kind], settings, strict=True))
    if schedule is not None:
        shown += f", every {human(schedule)}"
    verb = "added" if current is None else "replaced"
    out(f"{relation}: {verb} TimescaleDB {kind} policy ({shown})")
    return 1


async def job_settings(
    conn: Connection, proc: str, relation: str, keys: tuple[str, ...]
) -> tuple[tuple[timedelta, ...], timedelta] | None:
    """The settings *keys* and schedule of the *proc* job on *relation* (a cagg or hypertable)."""
    cur = await conn.execute(
        """
        SELECT j.config, j.schedule_interval
        FROM timescaledb_information.jobs AS j
        LEFT JOIN timescaledb_information.continuous_aggregates AS c
            ON c.materialization_hypertable_schema = j.hypertable_schema
           AND c.materialization_hypertable_name = j.hypertable_name
        WHERE j.proc_name = %s
          AND coalesce(c.view_schema, j.hypertable_schema) = current_schema()
          AND coalesce(c.view_name, j.hypertable_name) = %s
        """,
        (proc, relation),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    config, schedule = row
    values = []
    for key in keys:
        text = config.get(key)
        if text is None:
            values.append(timedelta(0))
            continue
        parsed = await conn.execute("SELECT %s::interval", (text,))
        value = await parsed.fetchone()
        assert value is not None
        values.append(value[0])
    return tuple(values), schedule


async def _rollup_settings(
    conn: Connection, rollup: RefreshPolicy, out: Callable[[str], None]
) -> int:
    cur = await conn.execute(
        """
        UPDATE ingestd.rollups SET lateWindow = %s, refreshInterval = %s
        WHERE name = %s AND (lateWindow, refreshInterval) IS DISTINCT FROM (%s, %s)
        RETURNING 1
        """,
        (
            rollup.late_window,
            rollup.refresh_interval,
            rollup.name,
            rollup.late_window,
            rollup.refresh_interval,
        ),
    )
    if await cur.fetchone() is None:
        return 0
    out(
        f"{rollup.name}: late window {human(rollup.late_window)}, "
        f"refreshed every {human(rollup.refresh_interval)} (ingestd maintenance)"
    )
    return 1
