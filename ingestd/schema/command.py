"""What `ingestd schema apply | status | maintain` do; the CLI only parses and prints.

`apply` runs one step per store, in order, each printing what it does with its store's name
in front. A store's step is an async function (Config, out) -> None.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import psycopg

from ingestd import __version__
from ingestd.config import Config
from ingestd.database_url import owner_dsn
from ingestd.errors import SchemaError
from ingestd.schema import (
    elasticsearch,
    grants,
    maintenance,
    migrations,
    policies,
    status,
    tiers,
    timescaledb_jobs,
)
from ingestd.schema.db import Connection, connect
from ingestd.schema.partitions import PartitionWork

Out = Callable[[str], None]
Step = Callable[[Config, Out], Awaitable[None]]

# Waiting for the maintenance lock (a run in progress, or another replica's apply) and for
# locks that DDL needs; past this, apply fails with a lock timeout and can simply be rerun.
APPLY_LOCK_TIMEOUT_S = 60


def steps(config: Config) -> list[tuple[str, Step]]:
    """The stores `schema apply` sets up, in order."""
    chosen: list[tuple[str, Step]] = []
    if config.sinks.timescale.enabled:
        chosen.append(("postgres", apply_postgres))
    if config.sinks.elasticsearch.enabled:
        chosen.append(("elasticsearch", apply_elasticsearch))
    return chosen


async def apply(config: Config, out: Out) -> None:
    """Set up every enabled store; raises SchemaError or the store's client error on failure."""
    for store, step in steps(config):
        await step(config, _prefixed(out, store))


def _prefixed(out: Out, store: str) -> Out:
    def prefixed(line: str) -> None:
        out(f"{store}: {line}")

    return prefixed


async def apply_elasticsearch(config: Config, out: Out) -> None:
    """The logs data streams' templates (schema/elasticsearch/*.json). Idempotent."""
    for line in await elasticsearch.apply_templates(config.sinks.elasticsearch):
        out(line.removeprefix("elasticsearch: "))


async def apply_postgres(config: Config, out: Out) -> None:
    """Tier, migrations, policies and (postgres tier) the first partitions. Idempotent."""
    conn = await connect(owner_dsn(config.sinks.timescale), purpose="schema")
    try:
        info = conn.info
        out(f"connected to {info.host}:{info.port}/{info.dbname} as {info.user}")
        await conn.execute(f"SET lock_timeout = {APPLY_LOCK_TIMEOUT_S * 1000}")
        # The maintenance lock: one apply at a time (replicas starting together), and no
        # maintenance run while tables change under it.
        try:
            await conn.execute("SELECT pg_advisory_lock(%s)", (config.maintenance.lock_key,))
        except psycopg.errors.LockNotAvailable as exc:
            raise SchemaError(
                f"another `schema apply` or a maintenance run has held the maintenance lock "
                f"for over {APPLY_LOCK_TIMEOUT_S} s; try again when it is done"
            ) from exc
        try:
            tier = await tiers.establish(conn, config.schema.tier, out)
            facts = await tiers.read_facts(conn)
            timescaledb_jobs.check_version(tier, facts.installed_version)
            directory = config.schema.migrations_dir or migrations.DEFAULT_DIR
            await migrations.apply(conn, tier, directory, __version__, out)
            await policies.reconcile(conn, config.schema, tier, out)
            if tier is tiers.Tier.POSTGRES:
                await _first_partitions(conn, config, out)
            await grants.reconcile(conn, config.sinks.timescale, out)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (config.maintenance.lock_key,))
    finally:
        await conn.close()
    out("done")


async def _first_partitions(conn: Connection, config: Config, out: Out) -> None:
    """Partitions from now to partitions_ahead, so the writer has them before maintenance runs."""
    cur = await conn.execute("SELECT now()")
    row = await cur.fetchone()
    assert row is not None
    now: datetime = row[0]
    stored = await maintenance.read_policies(conn)
    for table in ("metrics", "traces"):
        policy = stored[table]
        work: PartitionWork = await maintenance.ensure_partitions(
            conn, policy, now, config.maintenance.lock_timeout_s
        )
        through = f"{now + (policy.partitions_ahead or policy.drop_after):%F %H:%M}Z"
        if work.created:
            out(f"{table}: created {work.created} partition(s), covered through {through}")
        else:
            out(f"{table}: partitions in place through {through}")


async def show_status(config: Config, out: Out) -> None:
    conn = await connect(owner_dsn(config.sinks.timescale), purpose="status")
    try:
        for line in (await status.gather(conn)).lines():
            out(line)
    finally:
        await conn.close()


async def maintain(config: Config, out: Out) -> bool:
    """One maintenance run by hand; True when it acted without errors."""
    report = await maintenance.maintain_once(
        owner_dsn(config.sinks.timescale), config.maintenance, trigger="manual"
    )
    for line in report.lines():
        out(line)
    return report.acted and report.ok
