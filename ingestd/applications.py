"""`ingestd applications add | list | rotate | revoke`: registered applications and their keys.

The CLI only parses and prints; these functions do the work against the owner DSN (the table
application_keys is described in schema/postgres/050_application_keys.sql). A new key is
printed once and never stored: only its SHA-256 is. Revoking also deletes the keys' Redis
cache entries, so every replica stops accepting them at its next refresh
(auth.application_keys.refresh_s); a key revoked in the database alone stops within
refresh_s + redis_ttl_s.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from ingestd.appkeys import key_hash, new_token, redis_key, shown_prefix
from ingestd.config import Config
from ingestd.database_url import owner_dsn
from ingestd.errors import IngestdError, StateUnavailable
from ingestd.schema.db import Connection, connect
from ingestd.state.redis import RedisState

Out = Callable[[str], None]


class ApplicationError(IngestdError):
    """An applications command cannot do what was asked (unknown application, no schema)."""


@dataclass(frozen=True)
class NewKey:
    application_id: str
    token: str  # shown once


async def add(
    config: Config,
    name: str,
    *,
    application_id: str | None = None,
    namespace: str = "",
    environment: str = "",
    key_name: str = "",
) -> NewKey:
    """Register an application (or mark an existing row registered) and make its first key."""
    app_id = application_id or str(uuid.uuid4())
    async with _connection(config) as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO public.applications (id, name, namespace, environment, registeredat)"
            " VALUES (%s, %s, %s, %s, now())"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
            " namespace = excluded.namespace, environment = excluded.environment,"
            " registeredat = coalesce(applications.registeredat, now())",
            (app_id, name, namespace, environment),
        )
        token = await _insert_key(conn, app_id, key_name)
    return NewKey(app_id, token)


async def list_applications(config: Config, out: Out) -> None:
    """One line per registered application: id, name, active keys (their prefixes)."""
    async with _connection(config) as conn:
        cur = await conn.execute(
            "SELECT a.id, coalesce(a.name, ''), a.registeredat,"
            " coalesce(array_agg(k.prefix ORDER BY k.createdat)"
            " FILTER (WHERE k.id IS NOT NULL AND k.revokedat IS NULL), '{}'),"
            " count(k.id) FILTER (WHERE k.revokedat IS NOT NULL)"
            " FROM public.applications AS a"
            " LEFT JOIN public.application_keys AS k ON k.applicationid = a.id"
            " WHERE a.registeredat IS NOT NULL GROUP BY a.id ORDER BY a.registeredat"
        )
        rows = await cur.fetchall()
    if not rows:
        out("no registered applications")
    for app_id, name, registered, active, revoked in rows:
        keys = ", ".join(f"{p}..." for p in active) or "none"
        out(
            f"{app_id}  {name}  registered {registered:%Y-%m-%d %H:%M}Z  "
            f"keys: {keys}  ({revoked} revoked)"
        )


async def rotate(config: Config, application_id: str, *, keep_old: bool = False) -> NewKey:
    """A new key for *application_id*; its other keys are revoked unless *keep_old*."""
    async with _connection(config) as conn:
        async with conn.transaction():
            await _registered(conn, application_id)
            token = await _insert_key(conn, application_id, "rotated")
            revoked = [] if keep_old else await _revoke(conn, application_id, exclude=token)
        await _forget(config, revoked)
    return NewKey(application_id, token)


async def revoke(config: Config, application_id: str, prefix: str | None = None) -> int:
    """Revoke the keys of *application_id* (only the one starting with *prefix* if given);
    return how many."""
    async with _connection(config) as conn:
        async with conn.transaction():
            await _registered(conn, application_id)
            revoked = await _revoke(conn, application_id, prefix=prefix)
        await _forget(config, revoked)
    return len(revoked)


async def _insert_key(conn: Connection, application_id: str, name: str) -> str:
    token = new_token()
    await conn.execute(
        "INSERT INTO public.application_keys (applicationid, keyhash, prefix, name)"
        " VALUES (%s, %s, %s, %s)",
        (application_id, key_hash(token), shown_prefix(token), name),
    )
    return token


async def _registered(conn: Connection, application_id: str) -> None:
    cur = await conn.execute(
        "SELECT registeredat IS NOT NULL FROM public.applications WHERE id = %s",
        (application_id,),
    )
    row = await cur.fetchone()
    if row is None or not row[0]:
        raise ApplicationError(f"no registered application with id {application_id!r}")


async def _revoke(
    conn: Connection, application_id: str, *, prefix: str | None = None, exclude: str = ""
) -> list[str]:
    """Set revokedAt on the matching active keys; their hashes."""
    cur = await conn.execute(
        "UPDATE public.application_keys SET revokedat = now()"
        " WHERE applicationid = %s AND revokedat IS NULL AND keyhash <> %s"
        " AND (%s::text IS NULL OR starts_with(%s::text, prefix) OR starts_with(prefix, %s::text))"
        " RETURNING keyhash",
        (application_id, key_hash(exclude) if exclude else "", prefix, prefix, prefix),
    )
    return [str(row[0]) for row in await cur.fetchall()]


async def _forget(config: Config, digests: list[str]) -> None:
    """Delete the Redis cache entries of *digests* (best effort: they expire anyway)."""
    if not digests or not config.redis.enabled:
        return
    redis = RedisState(config.redis)
    async with asyncio.TaskGroup() as tasks:
        await redis.start(tasks)
    try:
        keys = [redis_key(redis, b"", digest) for digest in digests]
        await redis.command("del", "DEL", *keys)
    except StateUnavailable:
        pass  # replicas see the revocation within redis_ttl_s instead
    finally:
        await redis.stop(time.monotonic() + 2.0)


class _connection:
    """`async with _connection(config) as conn`: the owner DSN, schema 050 required."""

    def __init__(self, config: Config) -> None:
        self._dsn = owner_dsn(config.sinks.timescale)
        self._conn: Connection | None = None

    async def __aenter__(self) -> Connection:
        self._conn = await connect(self._dsn, purpose="applications")
        try:
            cur = await self._conn.execute("SELECT to_regclass('public.application_keys')")
            row = await cur.fetchone()
        except psycopg.Error:
            await self._conn.close()
            raise
        if row is None or row[0] is None:
            await self._conn.close()
            raise ApplicationError(
                "this database has no application_keys table: run `ingestd schema apply` first"
            )
        return self._conn

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            await self._conn.close()
