"""Refreshing `metrics_hourly` / `metrics_daily` on the apache and postgres tiers.

The relations are views: materialized rows before a watermark, live aggregation after it
(schema/postgres/030_rollups.apache+postgres.sql). A refresh re-aggregates the complete
buckets from min(watermark, now - late window) up to the current bucket, upserts them
(rewriting only rows whose values changed), and moves the watermark to the current bucket.
The first refresh starts at the oldest raw row; a refresh after downtime catches up from
the old watermark, slice by slice, so no transaction grows without bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import LiteralString

from ingestd.schema.db import Connection
from ingestd.schema.partitions import Range, floor

HOURLY, DAILY = "metrics_hourly", "metrics_daily"

# Raw rows (hourly) or hourly rows (daily) aggregated per transaction while catching up.
_SLICE = {HOURLY: timedelta(days=1), DAILY: timedelta(days=31)}

_UPSERT: dict[str, LiteralString] = {
    name: f"""
        INSERT INTO ingestd.{name}_rollup AS r
            (bucket, applicationId, name, avgValue, minValue, maxValue, sumValue, countValue)
        SELECT * FROM ingestd.aggregate_{name}(%s, %s)
        ON CONFLICT (bucket, applicationId, name) DO UPDATE SET
            avgValue = excluded.avgValue, minValue = excluded.minValue,
            maxValue = excluded.maxValue, sumValue = excluded.sumValue,
            countValue = excluded.countValue
        WHERE (r.avgValue, r.minValue, r.maxValue, r.sumValue, r.countValue)
              IS DISTINCT FROM
              (excluded.avgValue, excluded.minValue, excluded.maxValue, excluded.sumValue,
               excluded.countValue)
    """
    for name in (HOURLY, DAILY)
}
_EARLIEST: dict[str, LiteralString] = {
    HOURLY: "SELECT min(timestamp) FROM metrics",
    DAILY: "SELECT min(bucket) FROM ingestd.metrics_hourly_rollup",
}


@dataclass(frozen=True)
class RollupState:
    name: str
    bucket: timedelta
    late_window: timedelta
    refresh_interval: timedelta
    watermark: datetime | None
    last_refresh_at: datetime | None


@dataclass(frozen=True)
class RollupWork:
    name: str
    rows: int  # rollup rows inserted or changed
    window: Range
    watermark: datetime


def due(state: RollupState, now: datetime) -> bool:
    return state.last_refresh_at is None or now - state.last_refresh_at >= state.refresh_interval


def window(state: RollupState, now: datetime, earliest: datetime | None) -> Range:
    """The buckets to re-aggregate: complete ones only, from the late window (or the watermark,
    if older; or the oldest row, the first time) up to the start of the current bucket."""
    hi = floor(now, state.bucket)
    if state.watermark is None:
        lo = hi if earliest is None else floor(earliest, state.bucket)
    else:
        lo = floor(min(state.watermark, now - state.late_window), state.bucket)
    return Range(min(lo, hi), hi)


def slices(rng: Range, size: timedelta) -> list[Range]:
    out, lo = [], rng.lo
    while lo < rng.hi:
        out.append(Range(lo, min(lo + size, rng.hi)))
        lo += size
    return out


async def read_states(conn: Connection) -> list[RollupState]:
    """Hourly before daily: the daily rollup is built from the hourly one."""
    cur = await conn.execute(
        "SELECT name, bucketWidth, lateWindow, refreshInterval, watermark, lastRefreshAt"
        " FROM ingestd.rollups ORDER BY bucketWidth"
    )
    return [RollupState(*row) for row in await cur.fetchall()]


async def refresh(conn: Connection, state: RollupState, now: datetime) -> RollupWork:
    """Re-aggregate *state*'s window slice by slice, moving the watermark after each slice."""
    cur = await conn.execute(_EARLIEST[state.name])
    row = await cur.fetchone()
    rng = window(state, now, row[0] if row else None)
    rows = 0
    for part in slices(rng, _SLICE[state.name]):
        async with conn.transaction():
            cur = await conn.execute(_UPSERT[state.name], (part.lo, part.hi))
            rows += max(cur.rowcount, 0)
            # Never backwards: buckets between this slice and an older watermark are
            # materialized already.
            await conn.execute(
                "UPDATE ingestd.rollups SET watermark = greatest(watermark, %s) WHERE name = %s",
                (part.hi, state.name),
            )
    cur = await conn.execute(
        """
        UPDATE ingestd.rollups
        SET watermark = greatest(watermark, %s), lastRefreshAt = %s, lastRefreshFrom = %s,
            lastRefreshRows = %s
        WHERE name = %s RETURNING watermark
        """,
        (rng.hi, now, rng.lo, rows, state.name),
    )
    mark = await cur.fetchone()
    assert mark is not None
    return RollupWork(state.name, rows, rng, mark[0])


async def prune(conn: Connection, name: str, cutoff: datetime) -> int:
    """Delete rollup rows of buckets before *cutoff*; return how many."""
    table: LiteralString = (
        "ingestd.metrics_hourly_rollup" if name == HOURLY else ("ingestd.metrics_daily_rollup")
    )
    cur = await conn.execute(f"DELETE FROM {table} WHERE bucket < %s", (cutoff,))
    return max(cur.rowcount, 0)
