"""The ingest role: exactly what the writers need, granted by `schema apply` from one list.

The daemon's writers (sinks/timescale.py) COPY into the telemetry tables, read and insert
ledger keys, and upsert the dimension tables; the application key cache (appkeys.py), on the
same DSN, reads key hashes; nothing else. `schema apply`, running as the
schema owner (`sinks.timescale.owner_dsn`), makes `sinks.timescale.ingest_role` hold exactly
that: it creates the role (NOLOGIN) when it is missing, revokes everything it holds on the
tables of `public` and `ingestd`, and grants `INGEST_PRIVILEGES` again. So the role never has
DDL rights (it owns nothing and has no CREATE on a schema) and nothing on `users`, `alerts`
or ingestd's bookkeeping.

The rule for new tables: a migration's table gets nothing until it is named here, either in
`INGEST_PRIVILEGES` (the writers need it) or in `OWNER_ONLY`; tests/integration
test_ingest_role.py fails while a table of the applied schema is in neither list.

The login the writers use (`sinks.timescale.dsn`) is a member of the role, provisioned by the
database administrator (docs/security.md): `CREATE ROLE ingestd_writer LOGIN PASSWORD '...'
IN ROLE ingestd_ingest`. `apply` checks the membership and says what to run when it is not
there. TimescaleDB copies a hypertable's grants to every chunk, new ones included; a native
partitioned table is checked at its parent.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict

from ingestd.config import TimescaleSinkConfig
from ingestd.errors import SchemaError
from ingestd.schema.db import Connection

# table -> privileges, and nothing else. COPY FROM needs INSERT; the dimension upserts read
# the conflicting row (ON CONFLICT ... WHERE) and update lastSeenAt / descriptions.
INGEST_PRIVILEGES: dict[str, str] = {
    "public.metrics": "INSERT",
    "public.traces": "INSERT",
    "public.resources": "SELECT, INSERT",
    "public.scopes": "SELECT, INSERT",
    "public.applications": "SELECT, INSERT, UPDATE",
    "public.metric_descriptions": "SELECT, INSERT, UPDATE",
    "ingestd.ledger": "SELECT, INSERT",
    # The application key cache (ingestd/appkeys.py) looks up a key's hash: these columns only.
    "public.application_keys": "SELECT (keyhash, applicationid, revokedat)",
}

# Tables the writers never touch: the application's own (users hold password hashes) and
# the schema's bookkeeping, read and written by `schema apply` and the maintenance job.
OWNER_ONLY: frozenset[str] = frozenset(
    {
        "public.users",
        "public.alerts",
        "public.metrics_hourly",
        "public.metrics_daily",
        "ingestd.migrations",
        "ingestd.policies",
        "ingestd.retention_policies",
        "ingestd.maintenance_runs",
        "ingestd.rollups",
        "ingestd.metrics_hourly_rollup",
        "ingestd.metrics_daily_rollup",
        "ingestd.alert_rules",
        "ingestd.alert_states",
        "ingestd.alert_outbox",
    }
)

SCHEMAS = ("public", "ingestd")

Out = Callable[[str], None]


async def reconcile(conn: Connection, config: TimescaleSinkConfig, out: Out) -> None:
    """Make the ingest role hold exactly INGEST_PRIVILEGES; check the writers' login.

    Raises SchemaError when a separate owner_dsn is configured and the role cannot be created
    or the writers' login is not its member (with the SQL an administrator should run).
    Without owner_dsn a missing role that cannot be created is reported and skipped: one
    role owns and writes, as before.
    """
    role = config.ingest_role
    split = config.owner_dsn is not None
    if not await _role_exists(conn, role) and not await _create_role(conn, role, split, out):
        return
    tables = [t for t in INGEST_PRIVILEGES if await _table_exists(conn, t)]
    ident = sql.Identifier(role)
    async with conn.transaction():
        for schema in SCHEMAS:
            await conn.execute(
                sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(
                    sql.Identifier(schema), ident
                )
            )
            await conn.execute(
                sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(
                    sql.Identifier(schema), ident
                )
            )
            await conn.execute(
                sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), ident)
            )
        for table in tables:
            schema, _, name = table.partition(".")
            await conn.execute(
                sql.SQL("GRANT {} ON {} TO {}").format(
                    sql.SQL(INGEST_PRIVILEGES[table]), sql.Identifier(schema, name), ident
                )
            )
    out(f"ingest role {role}: granted on {len(tables)} tables, nothing else")
    if split:
        await _check_writer(conn, config, out)


async def _role_exists(conn: Connection, role: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    return await cur.fetchone() is not None


async def _table_exists(conn: Connection, table: str) -> bool:
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def _create_role(conn: Connection, role: str, split: bool, out: Out) -> bool:
    """CREATE ROLE ... NOLOGIN; False (and a line) when not allowed and not required."""
    try:
        await conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    except errors.DuplicateObject:
        return True  # another apply (roles are per cluster) made it meanwhile
    except errors.InsufficientPrivilege as exc:
        how = f"CREATE ROLE {role} NOLOGIN;"
        if split:
            raise SchemaError(
                f"the ingest role {role} does not exist and the owner may not create it "
                f"(no CREATEROLE); as an administrator run: {how} then apply again"
            ) from exc
        out(
            f"ingest role {role}: not created (the owner has no CREATEROLE); the writers "
            f"use the owner's role (docs/security.md: {how})"
        )
        return False
    out(f"ingest role {role}: created (NOLOGIN)")
    return True


async def _check_writer(conn: Connection, config: TimescaleSinkConfig, out: Out) -> None:
    """The login of `dsn` must be a member of the ingest role, and not the owner itself."""
    role = config.ingest_role
    writer = str(conninfo_to_dict(config.dsn).get("user") or "")
    if not writer:
        out(f"ingest role {role}: sinks.timescale.dsn names no user; not checked")
        return
    cur = await conn.execute(
        "SELECT current_user, EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s)", (writer,)
    )
    row = await cur.fetchone()
    assert row is not None
    owner, exists = row
    if writer == owner:
        out(
            f"ingest role {role}: sinks.timescale.dsn uses the owner {owner} itself; "
            "point it at a member of the ingest role for least privilege"
        )
        return
    grant = f"GRANT {role} TO {writer};"
    if not exists:
        raise SchemaError(
            f"the writers' login {writer} (sinks.timescale.dsn) does not exist; as an "
            f"administrator run: CREATE ROLE {writer} LOGIN PASSWORD '...' IN ROLE {role};"
        )
    cur = await conn.execute("SELECT pg_has_role(%s, %s, 'USAGE')", (writer, role))
    member = await cur.fetchone()
    if member and member[0]:
        out(f"ingest role {role}: the writers' login {writer} is a member")
        return
    try:
        await conn.execute(
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(writer))
        )
    except psycopg.Error as exc:
        raise SchemaError(
            f"the writers' login {writer} is not a member of {role} and the owner may not "
            f"grant it; as an administrator run: {grant}"
        ) from exc
    out(f"ingest role {role}: made {writer} a member")
