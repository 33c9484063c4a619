"""Numbered SQL files, the tiers each one is for, and the record of those applied.

A file is `NNN_name.sql` (every tier) or `NNN_name.TAGS.sql`, TAGS being `+`-joined tiers
(`full`, `apache`, `postgres`, or `timescaledb` for full+apache). Files apply in (number,
name) order, each in its own transaction together with its row in `ingestd.migrations`
(name, sha256 checksum, tier). An applied file is never run again; if its content changed,
`apply` refuses: fix a schema with a new file instead.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ingestd.errors import SchemaError
from ingestd.schema import files
from ingestd.schema.db import Connection
from ingestd.schema.tiers import Tier


def __getattr__(name: str) -> Path:
    """`DEFAULT_DIR`: the files shipped with ingestd, the repo's schema/postgres/ (package data
    in a wheel and the image too). Looked up when used, so that an install without the package
    data fails with SchemaError at `schema apply`, not at import."""
    if name == "DEFAULT_DIR":
        return files.directory("postgres")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_NAME = re.compile(r"^(?P<number>\d{3,})_[a-z0-9_]+(?:\.(?P<tags>[a-z+]+))?\.sql$")
_TAGS: dict[str, frozenset[Tier]] = {
    "full": frozenset({Tier.FULL}),
    "apache": frozenset({Tier.APACHE}),
    "postgres": frozenset({Tier.POSTGRES}),
    "timescaledb": frozenset({Tier.FULL, Tier.APACHE}),
}
ALL_TIERS = frozenset(Tier)

LEDGER_DDL = """
CREATE SCHEMA IF NOT EXISTS ingestd;
CREATE TABLE IF NOT EXISTS ingestd.migrations (
    name text PRIMARY KEY,
    checksum text NOT NULL,
    tier text NOT NULL,
    appliedAt timestamptz NOT NULL DEFAULT now(),
    durationMs integer NOT NULL,
    ingestdVersion text NOT NULL
);
"""


@dataclass(frozen=True)
class Migration:
    name: str
    number: int
    tiers: frozenset[Tier]
    sql: str = field(repr=False)
    checksum: str


@dataclass(frozen=True)
class Plan:
    """What an apply would do: files to run, and what blocks it."""

    pending: list[Migration]
    changed: list[str]  # applied files whose content differs now
    missing: list[str]  # applied files no longer present (reported, not fatal)
    applied: int  # files already applied and unchanged


def checksum(text: str) -> str:
    # Line endings are normalized so that a Windows checkout does not look like a change.
    return hashlib.sha256(text.replace("\r\n", "\n").encode()).hexdigest()


def parse_name(name: str) -> tuple[int, frozenset[Tier]]:
    """Number and tiers of a file name; raise ValueError saying what is wrong with it."""
    match = _NAME.match(name)
    if match is None:
        raise ValueError("expected NNN_name.sql or NNN_name.TIERS.sql (lower case)")
    tiers: set[Tier] = set()
    for tag in (match["tags"] or "").split("+"):
        if not tag:
            continue
        if tag not in _TAGS:
            raise ValueError(f"unknown tier tag {tag!r} (use {', '.join(sorted(_TAGS))})")
        tiers |= _TAGS[tag]
    return int(match["number"]), frozenset(tiers) or ALL_TIERS


def load(directory: Path) -> list[Migration]:
    """Every migration file in *directory*, sorted; SchemaError lists every badly named file."""
    if not directory.is_dir():
        raise SchemaError(f"migrations directory {directory} does not exist")
    migrations, problems = [], []
    for path in sorted(directory.glob("*.sql")):
        try:
            number, tiers = parse_name(path.name)
        except ValueError as exc:
            problems.append(f"{path.name}: {exc}")
            continue
        text = path.read_text(encoding="utf-8")
        migrations.append(Migration(path.name, number, tiers, text, checksum(text)))
    if problems:
        raise SchemaError(f"bad migration file names in {directory}: " + "; ".join(problems))
    return sorted(migrations, key=lambda m: (m.number, m.name))


def for_tier(migrations: Iterable[Migration], tier: Tier) -> list[Migration]:
    return [m for m in migrations if tier in m.tiers]


def plan(selected: list[Migration], applied: dict[str, str]) -> Plan:
    """Compare the files for this tier with the recorded {name: checksum}."""
    present = {m.name for m in selected}
    return Plan(
        pending=[m for m in selected if m.name not in applied],
        changed=[m.name for m in selected if m.name in applied and applied[m.name] != m.checksum],
        missing=sorted(name for name in applied if name not in present),
        applied=sum(1 for m in selected if applied.get(m.name) == m.checksum),
    )


async def ensure_ledger(conn: Connection) -> None:
    await conn.execute(LEDGER_DDL)


async def read_applied(conn: Connection) -> dict[str, str]:
    cur = await conn.execute("SELECT name, checksum FROM ingestd.migrations")
    return dict(await cur.fetchall())


async def apply(
    conn: Connection, tier: Tier, directory: Path, version: str, out: Callable[[str], None]
) -> int:
    """Apply the new files for *tier*; return how many. Raise SchemaError before running any
    file if an applied one changed, or naming the file whose SQL failed (rolled back)."""
    await ensure_ledger(conn)
    the_plan = plan(for_tier(load(directory), tier), await read_applied(conn))
    if the_plan.changed:
        raise SchemaError(
            f"applied migration(s) changed since they ran: {', '.join(the_plan.changed)} "
            f"(checksums differ from ingestd.migrations). Applied files must not be edited; "
            f"restore them and put the change in a new numbered file"
        )
    for name in the_plan.missing:
        out(f"note: applied migration {name} is no longer in {directory}")
    for migration in the_plan.pending:
        began = time.monotonic()
        try:
            async with conn.transaction():
                await conn.execute(migration.sql.encode())
                ms = round((time.monotonic() - began) * 1000)
                await conn.execute(
                    "INSERT INTO ingestd.migrations (name, checksum, tier, durationMs,"
                    " ingestdVersion) VALUES (%s, %s, %s, %s, %s)",
                    (migration.name, migration.checksum, str(tier), ms, version),
                )
        except Exception as exc:
            raise SchemaError(f"migration {migration.name} failed (rolled back): {exc}") from exc
        out(f"applied {migration.name} ({ms} ms)")
    if not the_plan.pending:
        out(f"migrations: up to date ({the_plan.applied} applied, nothing new)")
    return len(the_plan.pending)
