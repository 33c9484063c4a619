"""Connections for schema work: autocommit, UTC, named, bounded; and interval formatting."""

from __future__ import annotations

from datetime import timedelta

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

Connection = AsyncConnection[TupleRow]


async def connect(
    dsn: str, *, purpose: str, statement_timeout_s: float = 600.0, connect_timeout_s: int = 10
) -> Connection:
    """Open an autocommit connection (transactions are explicit) in UTC, named for pg_stat_activity.

    UTC matters: partition bounds are read back as text and date_trunc-like code must not
    depend on the server's or the role's TimeZone. search_path is `public` alone: the
    default `"$user", public` would put every table of a role named `ingestd` into our
    internal schema `ingestd` (the Deep Eyes tables live in public; ours are always qualified).
    """
    conn = await AsyncConnection.connect(
        dsn,
        autocommit=True,
        connect_timeout=connect_timeout_s,
        application_name=f"ingestd-{purpose}",
    )
    await conn.execute("SET TimeZone TO 'UTC'")
    await conn.execute("SET search_path TO public")
    await conn.execute(f"SET statement_timeout TO {round(statement_timeout_s * 1000)}")
    return conn


def human(delta: timedelta | None) -> str:
    """'365 days', '6 hours', '15 min', '90 s'; '-' for None."""
    if delta is None:
        return "-"
    seconds = round(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
