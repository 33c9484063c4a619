"""Which of the three tiers a database gets, decided once by `schema apply` and then kept.

- full: TimescaleDB with `timescaledb.license = 'timescale'` (compression, retention and
  refresh policies, continuous aggregates);
- apache: TimescaleDB without its TSL part (hypertables; ingestd's maintenance job does
  retention and rollups);
- postgres: no TimescaleDB (native range partitioning; the maintenance job does the rest).

The tier is detected before anything is created, never by trying a TSL function and catching
its 0A000 error. In one server the apache and postgres tiers differ per database: the
extension library is preloaded server-wide, a postgres-tier database never creates it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from ingestd.errors import SchemaError
from ingestd.schema.db import Connection


class Tier(enum.StrEnum):
    FULL = "full"
    APACHE = "apache"
    POSTGRES = "postgres"

    @property
    def timescaledb(self) -> bool:
        return self is not Tier.POSTGRES


@dataclass(frozen=True)
class ServerFacts:
    """What the server and this database offer, read before deciding."""

    installed_version: str | None  # timescaledb created in this database
    available_version: str | None  # installable (its files are on the server)
    license: str | None  # timescaledb.license; known only once the extension is loaded


def decide(wanted: str, recorded: Tier | None, facts: ServerFacts) -> Tier | None:
    """The tier for this database, or None when the extension must be created to read the license.

    *wanted* is `schema.tier` (auto, full, apache, postgres); *recorded* the tier an earlier
    `apply` chose. A database never changes tier: that would need its data moved.
    """
    if recorded is not None:
        if wanted not in ("auto", recorded):
            raise SchemaError(
                f"this database was set up as tier {recorded}; schema.tier is {wanted}. "
                f"Changing tiers would need the data migrated, which ingestd does not do: "
                f"set schema.tier to auto or {recorded}, or use a new database"
            )
        wanted = recorded
    if wanted == Tier.POSTGRES:
        return Tier.POSTGRES
    if facts.installed_version is None:
        if facts.available_version is None:
            if wanted == "auto":
                return Tier.POSTGRES
            raise SchemaError(
                f"schema.tier is {wanted} but the timescaledb extension is not available on "
                f"this server (pg_available_extensions has no timescaledb)"
            )
        return None
    if wanted == Tier.APACHE:
        return Tier.APACHE
    if facts.license == "timescale":
        return Tier.FULL
    if wanted == Tier.FULL:
        raise SchemaError(
            f"schema.tier is full but timescaledb.license is {facts.license!r}: compression, "
            f"retention policies and continuous aggregates need 'timescale' (set it in "
            f"postgresql.conf), or set schema.tier to auto or apache"
        )
    return Tier.APACHE


async def read_facts(conn: Connection) -> ServerFacts:
    cur = await conn.execute(
        """
        SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
               (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'),
               current_setting('timescaledb.license', true)
        """
    )
    row = await cur.fetchone()
    assert row is not None
    return ServerFacts(installed_version=row[0], available_version=row[1], license=row[2])


async def recorded_tier(conn: Connection) -> Tier | None:
    """The tier recorded by earlier applies, or None for a database never set up."""
    cur = await conn.execute("SELECT to_regclass('ingestd.migrations') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return None
    cur = await conn.execute("SELECT DISTINCT tier FROM ingestd.migrations")
    tiers = {Tier(r[0]) for r in await cur.fetchall()}
    if len(tiers) > 1:
        raise SchemaError(f"ingestd.migrations records several tiers ({sorted(tiers)})")
    return tiers.pop() if tiers else None


async def establish(conn: Connection, wanted: str, out: Callable[[str], None]) -> Tier:
    """Decide the tier, creating the timescaledb extension when the tier needs it.

    The extension is created in a transaction that also reads the license, so a refused
    choice (tier full on an Apache-only server) leaves the database as it was.
    """
    recorded = await recorded_tier(conn)
    facts = await read_facts(conn)
    tier = decide(wanted, recorded, facts)
    if tier is None:
        async with conn.transaction():
            await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            facts = await read_facts(conn)
            tier = decide(wanted, recorded, facts)
        out(f"created extension timescaledb {facts.installed_version}")
    assert tier is not None
    out(f"tier {tier} ({describe(facts, tier)})" + ("" if recorded else ", detected now"))
    if recorded is None and wanted == "auto" and tier is Tier.APACHE and facts.license:
        out("compression and continuous aggregates: unavailable (timescaledb.license is apache)")
    return tier


def describe(facts: ServerFacts, tier: Tier) -> str:
    if tier is Tier.POSTGRES or facts.installed_version is None:
        return "PostgreSQL native partitioning, no TimescaleDB"
    return f"TimescaleDB {facts.installed_version}, license {facts.license}"
