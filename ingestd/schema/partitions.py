"""Native range partitions of `metrics` and `traces` on the postgres tier (no TimescaleDB).

Partitions are aligned like TimescaleDB chunks (multiples of the width since the Unix epoch,
UTC) and named `<table>_pYYYYMMDD_HHMM` after their lower bound. The maintenance job keeps
them `partitionsAhead` ahead of now, drops those wholly past retention, and empties the
DEFAULT partition: rows there (no partition of their own when written) get one created and
are moved into it in the same transaction; rows past retention are deleted.

A new partition is built apart and then ATTACHed, which takes only SHARE UPDATE EXCLUSIVE on
the parent, so the writers' COPYs go on meanwhile (CREATE TABLE ... PARTITION OF would take
ACCESS EXCLUSIVE). DROP TABLE of a partition does take ACCESS EXCLUSIVE on the parent, once
per expired partition, bounded by `maintenance.lock_timeout_s`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from psycopg import sql

from ingestd.schema.db import Connection

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BOUND = re.compile(r"FOR VALUES FROM \('([^']+)'\) TO \('([^']+)'\)")


@dataclass(frozen=True, order=True)
class Range:
    lo: datetime
    hi: datetime


@dataclass(frozen=True)
class Partition:
    name: str
    range: Range


@dataclass
class PartitionWork:
    """What one pass over one table did."""

    created: int = 0
    dropped: int = 0
    moved_rows: int = 0
    expired_rows: int = 0


def floor(t: datetime, width: timedelta) -> datetime:
    return EPOCH + ((t - EPOCH) // width) * width


def partition_name(table: str, lo: datetime) -> str:
    return f"{table}_p{lo.astimezone(UTC):%Y%m%d_%H%M}"


def parse_bound(expr: str) -> Range | None:
    """The range of `pg_get_expr(relpartbound)` text (in a UTC session); None for DEFAULT or
    for bounds that are not plain timestamps (MINVALUE/MAXVALUE, made by hand)."""
    match = _BOUND.search(expr)
    if match is None:
        return None
    return Range(datetime.fromisoformat(match[1]), datetime.fromisoformat(match[2]))


def gaps(existing: Iterable[Range], want: Range) -> list[Range]:
    """The parts of *want* that no range in *existing* covers."""
    out, start = [], want.lo
    for have in sorted(existing):
        if have.hi <= start or have.lo >= want.hi:
            continue
        if have.lo > start:
            out.append(Range(start, have.lo))
        start = max(start, have.hi)
    if start < want.hi:
        out.append(Range(start, want.hi))
    return out


def plan(existing: Iterable[Range], starts: Iterable[datetime], width: timedelta) -> list[Range]:
    """Ranges to create so that each aligned bucket containing a time in *starts* is covered,
    clipped to what *existing* partitions leave free (they may have another width)."""
    taken = list(existing)
    out: list[Range] = []
    for lo in sorted({floor(t, width) for t in starts}):
        for gap in gaps(taken, Range(lo, lo + width)):
            out.append(gap)
            taken.append(gap)
    return out


def ahead(now: datetime, distance: timedelta, width: timedelta) -> list[datetime]:
    """One time in each bucket from now's to the one containing now + distance."""
    first, last = floor(now, width), floor(now + distance, width)
    return [first + i * width for i in range(int((last - first) / width) + 1)]


def expired(partitions: Iterable[Partition], cutoff: datetime) -> list[Partition]:
    """Partitions wholly older than *cutoff* (like drop_chunks: the upper bound <= cutoff)."""
    return [p for p in partitions if p.range.hi <= cutoff]


async def list_partitions(conn: Connection, table: str) -> tuple[list[Partition], str | None]:
    """The time partitions of *table* and the name of its DEFAULT partition (if any)."""
    cur = await conn.execute(
        """
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
        FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
        WHERE i.inhparent = %s::regclass
        """,
        (table,),
    )
    partitions, default = [], None
    for name, bound in await cur.fetchall():
        if bound == "DEFAULT":
            default = name
        elif (rng := parse_bound(bound)) is not None:
            partitions.append(Partition(name, rng))
    return sorted(partitions, key=lambda p: p.range), default


async def enforce_retention(
    conn: Connection, table: str, column: str, cutoff: datetime, lock_timeout_s: float
) -> PartitionWork:
    """Drop partitions wholly before *cutoff*; delete rows before it from the DEFAULT partition."""
    work = PartitionWork()
    partitions, default = await list_partitions(conn, table)
    for partition in expired(partitions, cutoff):
        async with conn.transaction():
            await _lock_timeout(conn, lock_timeout_s)
            await conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(partition.name)))
        work.dropped += 1
    if default is not None:
        cur = await conn.execute(
            sql.SQL("DELETE FROM {} WHERE {} < %s").format(
                sql.Identifier(default), sql.Identifier(column)
            ),
            (cutoff,),
        )
        work.expired_rows = max(cur.rowcount, 0)
    return work


async def ensure_partitions(
    conn: Connection,
    table: str,
    column: str,
    width: timedelta,
    now: datetime,
    distance: timedelta,
    lock_timeout_s: float,
) -> PartitionWork:
    """Create partitions up to now + *distance*, and one for every row waiting in DEFAULT."""
    work = PartitionWork()
    partitions, default = await list_partitions(conn, table)
    starts = ahead(now, distance, width)
    if default is not None:
        cur = await conn.execute(
            sql.SQL("SELECT DISTINCT date_bin(%s, {col}, %s) FROM ONLY {default}").format(
                col=sql.Identifier(column), default=sql.Identifier(default)
            ),
            (width, EPOCH),
        )
        starts += [row[0] for row in await cur.fetchall()]
    for rng in plan((p.range for p in partitions), starts, width):
        work.moved_rows += await _create(conn, table, column, default, rng, lock_timeout_s)
        work.created += 1
    return work


async def _create(
    conn: Connection,
    table: str,
    column: str,
    default: str | None,
    rng: Range,
    lock_timeout_s: float,
) -> int:
    """Build the partition for *rng*, move DEFAULT's rows of that range into it, attach it.
    Returns the rows moved. One transaction: a failure leaves everything as it was."""
    name = partition_name(table, rng.lo)
    ids = {
        "part": sql.Identifier(name),
        "parent": sql.Identifier(table),
        "col": sql.Identifier(column),
        "check": sql.Identifier(f"{name}_bound"),
        "lo": sql.Literal(rng.lo),
        "hi": sql.Literal(rng.hi),
    }
    moved = 0
    async with conn.transaction():
        await _lock_timeout(conn, lock_timeout_s)
        await conn.execute(
            sql.SQL(
                "CREATE TABLE {part} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
                " INCLUDING STORAGE INCLUDING COMPRESSION)"
            ).format(**ids)
        )
        # The CHECK proves the bound to ATTACH, which then skips scanning the new table.
        await conn.execute(
            sql.SQL(
                "ALTER TABLE {part} ADD CONSTRAINT {check} CHECK ({col} >= {lo} AND {col} < {hi})"
            ).format(**ids)
        )
        if default is not None:
            cur = await conn.execute(
                sql.SQL(
                    "WITH moved AS (DELETE FROM {default} WHERE {col} >= {lo} AND {col} < {hi}"
                    " RETURNING *) INSERT INTO {part} SELECT * FROM moved"
                ).format(default=sql.Identifier(default), **ids)
            )
            moved = max(cur.rowcount, 0)
        await conn.execute(
            sql.SQL(
                "ALTER TABLE {parent} ATTACH PARTITION {part} FOR VALUES FROM ({lo}) TO ({hi})"
            ).format(**ids)
        )
        await conn.execute(sql.SQL("ALTER TABLE {part} DROP CONSTRAINT {check}").format(**ids))
    return moved


async def _lock_timeout(conn: Connection, seconds: float) -> None:
    await conn.execute(
        sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{round(seconds * 1000)}ms"))
    )
