"""Ingest keys of registered applications: which application a bearer token belongs to.

The receivers ask `Authenticator.identify` before reading a body; a bearer token that is no
configured tenant token comes here (`ApplicationKeys.lookup`). A request with a valid key is
stored under its application's id (RequestContext.application_id), whatever its resources say.

Key format (schema/postgres/050_application_keys.sql, docs/deep-eyes.md): a token is `ik_`
and 43 URL-safe base64 characters (32 random bytes); the database holds only its SHA-256 as
64 lower-case hex characters, and the token's first 12 characters to tell keys apart.

Three levels, so that ingest never waits on the database for a key it checked recently:
- this process: digest -> application id ("" = no such key), read without awaiting anything
  while a known key was checked within `max_stale_s`, an unknown one within `unknown_ttl_s`;
- Redis, shared by the replicas: `<prefix>ak:<digest>` -> application id or "", for
  `redis_ttl_s` (known) or `unknown_ttl_s` (unknown). `ingestd applications revoke` deletes
  the entries of the keys it revokes;
- the database, the truth (a revoked key has revokedAt set, or its row is gone).
A refresher re-checks the known keys every `refresh_s`: one MGET, and one query for those
Redis has no entry for (written back to Redis). Without Redis it asks the database directly.
When neither answers, entries age; past `max_stale_s` a key is refused with
KeyCheckUnavailable (retryable): authentication never fails open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from ingestd.config import ApplicationKeysConfig
from ingestd.errors import KeyCheckUnavailable, StateUnavailable
from ingestd.observe.metrics import APPLICATION_ITEMS, APPLICATION_KEY_CHECKS
from ingestd.state.redis import RedisState

log = structlog.get_logger("ingestd.appkeys")

TOKEN_PREFIX = "ik_"
# What `list` shows of a key: "ik_" and 9 characters, 54 bits of the 256: useless to guess with.
SHOWN_CHARS = 12
_REDIS_PART = b"ak:"
# Entries not asked for this long leave the cache (and the refresher's work).
_IDLE_S = 600.0
# At most this many database lookups of new keys at once; more wait (random-key floods).
_DB_LOOKUPS = 4
# Distinct `application` label values on the items metric; further applications count as
# "other" (the label must not grow with the number of registered applications without bound).
MAX_APPLICATION_LABELS = 100
_QUERY = (
    "SELECT keyhash, applicationid FROM public.application_keys"
    " WHERE keyhash = ANY(%s) AND revokedat IS NULL"
)


def new_token() -> str:
    """A fresh ingest key: `ik_` + 32 random bytes, URL-safe base64 (43 characters)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def key_hash(token: str) -> str:
    """What application_keys.keyHash holds for *token*: SHA-256 of its UTF-8, lower-case hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def shown_prefix(token: str) -> str:
    return token[:SHOWN_CHARS]


def redis_key(redis: RedisState | None, prefix: bytes, digest: str) -> bytes:
    return (redis.prefix if redis is not None else prefix) + _REDIS_PART + digest.encode()


@dataclass(slots=True)
class _Entry:
    application_id: str  # "" for a key that does not exist or is revoked
    checked_at: float
    used_at: float


class ApplicationKeys:
    """The key cache of one process (see the module docstring); a stage of the daemon."""

    name = "applications"

    def __init__(
        self,
        config: ApplicationKeysConfig,
        dsn: str,
        redis: RedisState | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        query: Callable[[list[str]], Awaitable[dict[str, str]]] | None = None,
    ) -> None:
        """*query* replaces the database lookup (tests): digests -> {digest: application id}."""
        self.config = config
        self._dsn = dsn
        self._redis = redis
        self._clock = clock
        self._query = query or self._query_database
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._checking: dict[str, asyncio.Task[str]] = {}
        self._db_slots = asyncio.Semaphore(_DB_LOOKUPS)
        self._checks: Counter[str] = Counter()
        self._database_ok = True
        self._items: Counter[tuple[str, str]] = Counter()
        self._logged_items: Counter[tuple[str, str]] = Counter()

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        """Open the (lazy) database pool and start the refresher. Returns at once."""
        if self._query == self._query_database:
            self._pool = AsyncConnectionPool(
                self._dsn,
                min_size=0,
                max_size=2,
                open=False,
                name="application-keys",
                kwargs={"autocommit": True, "application_name": "ingestd-keys"},
                timeout=5.0,
            )
            await self._pool.open(wait=False)
        tasks.create_task(self._refresh_loop(), name="application-keys-refresh")
        log.info("application_keys_ready", refresh_s=self.config.refresh_s)

    async def stop(self, deadline: float) -> None:
        self._stopped = True
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close(timeout=max(0.1, deadline - time.monotonic()))

    _stopped = False

    async def lookup(self, digest: str) -> str | None:
        """The application id of the key whose SHA-256 hex is *digest*; None when there is none.

        Answers from memory for a key checked recently; otherwise asks Redis, then the
        database. Raises KeyCheckUnavailable when neither can answer.
        """
        now = self._clock()
        entry = self._entries.get(digest)
        if entry is not None:
            entry.used_at = now
            age = now - entry.checked_at
            if entry.application_id and age <= self.config.max_stale_s:
                self._checked("memory")
                return entry.application_id
            if not entry.application_id and age <= self.config.unknown_ttl_s:
                self._checked("memory_unknown")
                return None
        checking = self._checking.get(digest)
        if checking is None:
            # One check per key at a time: concurrent requests with a new key share it.
            checking = asyncio.get_running_loop().create_task(self._check(digest))
            self._checking[digest] = checking
            checking.add_done_callback(lambda task: self._checked_done(digest, task))
        app = await asyncio.shield(checking)
        return app or None

    def _checked_done(self, digest: str, task: asyncio.Task[str]) -> None:
        self._checking.pop(digest, None)
        if not task.cancelled():
            task.exception()  # retrieved here too: every waiter may have gone

    async def _check(self, digest: str) -> str:
        found = await self._from_redis([digest])
        if digest in found:
            self._checked("redis")
            app = found[digest]
        else:
            try:
                async with self._db_slots:
                    app = (await self._from_database([digest]))[digest]
            except KeyCheckUnavailable:
                self._checked("failed")
                raise
            self._checked("database")
        self._remember(digest, app)
        return app

    def _checked(self, source: str) -> None:
        self._checks[source] += 1
        APPLICATION_KEY_CHECKS.labels(source=source).inc()

    def _remember(self, digest: str, app: str) -> None:
        now = self._clock()
        entry = self._entries.get(digest)
        if entry is None:
            self._entries[digest] = _Entry(app, now, now)
            while len(self._entries) > self.config.max_entries:
                self._entries.popitem(last=False)
        else:
            if entry.application_id and not app:
                log.info("application_key_revoked", application=entry.application_id)
            entry.application_id, entry.checked_at = app, now
        self._entries.move_to_end(digest)

    async def _from_redis(self, digests: list[str]) -> dict[str, str]:
        """The entries Redis has for *digests* (absent ones left out); {} when it is down."""
        if self._redis is None or not self._redis.available:
            return {}
        keys = [redis_key(self._redis, b"", d) for d in digests]
        try:
            values = await self._redis.command("mget", "MGET", *keys)
        except StateUnavailable:
            return {}
        return {d: v.decode() for d, v in zip(digests, values, strict=True) if v is not None}

    async def _from_database(self, digests: list[str]) -> dict[str, str]:
        """{digest: application id or ""} for every digest, written back to Redis."""
        try:
            found = await self._query(digests)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            if self._database_ok:
                log.warning("application_keys_database_unavailable", error=str(exc)[:200])
            self._database_ok = False
            raise KeyCheckUnavailable(
                "cannot check the application key now; retry shortly", retry_after_s=1.0
            ) from exc
        if not self._database_ok:
            log.info("application_keys_database_available")
        self._database_ok = True
        answer = {d: found.get(d, "") for d in digests}
        await self._to_redis(answer)
        return answer

    async def _query_database(self, digests: list[str]) -> dict[str, str]:
        if self._pool is None:
            raise psycopg.OperationalError("application keys: pool is closed")
        async with self._pool.connection() as conn:
            cur = await conn.execute(_QUERY, (digests,))
            return {str(row[0]): str(row[1]) for row in await cur.fetchall()}

    async def _to_redis(self, answer: dict[str, str]) -> None:
        if self._redis is None or not self._redis.available:
            return
        for digest, app in answer.items():
            ttl_s = self.config.redis_ttl_s if app else self.config.unknown_ttl_s
            try:
                await self._redis.command(
                    "set",
                    "SET",
                    redis_key(self._redis, b"", digest),
                    app,
                    "PX",
                    round(ttl_s * 1000),
                )
            except StateUnavailable:
                return

    async def refresh(self) -> None:
        """Re-check every known key (Redis, then the database for what Redis lacks); drop
        entries idle for 10 minutes and expired unknown ones. Never raises."""
        now = self._clock()
        for digest, entry in list(self._entries.items()):
            idle = now - entry.used_at > _IDLE_S
            expired = (
                not entry.application_id and now - entry.checked_at > self.config.unknown_ttl_s
            )
            if idle or expired:
                del self._entries[digest]
        known = [d for d, e in self._entries.items() if e.application_id]
        for start in range(0, len(known), 1000):
            chunk = known[start : start + 1000]
            found = await self._from_redis(chunk)
            missing = [d for d in chunk if d not in found]
            if missing:
                # On failure entries age; past max_stale_s their keys are refused.
                with contextlib.suppress(KeyCheckUnavailable):
                    found |= await self._from_database(missing)
            for digest, app in found.items():
                if digest in self._entries:
                    self._remember(digest, app)

    async def _refresh_loop(self) -> None:
        last_log = self._clock()
        while not self._stopped:
            await asyncio.sleep(self.config.refresh_s)
            try:
                await self.refresh()
            except Exception:  # a bug must not stop the refresher: keys would go stale
                log.exception("application_keys_refresh_failed")
            if self._clock() - last_log >= 60.0:
                last_log = self._clock()
                self.log_counts()

    def count(self, application_id: str, signal: str, items: int) -> None:
        """Accepted items of one request, by application (registered ones; "" = derived id)."""
        label = application_label(application_id, self._items)
        signal = str(signal)  # a StrEnum member: /status serializes keys as plain str
        self._items[(label, signal)] += items
        APPLICATION_ITEMS.labels(application=label, signal=signal).inc(items)

    def log_counts(self) -> None:
        """One `application_items` event with the items accepted since the last one."""
        delta = self._items - self._logged_items
        if delta:
            self._logged_items = Counter(self._items)
            log.info("application_items", items=_nested(delta.items()))

    def status(self) -> dict[str, Any]:
        """For /status: cache sizes, how keys were checked, items by application. No keys."""
        known = sum(1 for e in self._entries.values() if e.application_id)
        return {
            "keys_cached": known,
            "unknown_cached": len(self._entries) - known,
            "checks": dict(self._checks),
            "database_ok": self._database_ok,
            "accepted_items": _nested(self._items.items()),
        }


def application_label(application_id: str, seen: Iterable[tuple[str, str]]) -> str:
    """The `application` label for *application_id*: itself, "derived" for requests without
    a key, "other" once MAX_APPLICATION_LABELS applications have a label."""
    if not application_id:
        return "derived"
    labels = {label for label, _ in seen}
    if application_id in labels or len(labels) < MAX_APPLICATION_LABELS:
        return application_id
    return "other"


def _nested(counts: Iterable[tuple[tuple[str, str], int]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (app, signal), n in counts:
        out.setdefault(app, {})[signal] = n
    return out
