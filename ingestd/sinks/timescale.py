"""The TimescaleDB sink: a psycopg pool, and one binary-COPY `TimescaleWriter` per table.

`Batcher(traces) -> TimescaleWriter("traces") -> one transaction per batch -> PostgreSQL`

Exactly once. Each batch is one transaction that (1) reads `ingestd.ledger` for the request keys
of its parts and skips the parts already there, (2) upserts the dimension rows this process has
not stored yet, (3) COPYs the rows of the remaining parts, (4) inserts one ledger row per
written part (the request key is the primary key), (5) commits. Rows and their ledger rows
commit together or not at all, so:
- the connection drops before COMMIT reaches the server: nothing is stored; the batcher retries
  and writes everything;
- it drops after the server committed but before we read the reply (the outcome is unknown to
  us): the retry's step (1), on a new connection, finds the keys and writes nothing again. If the
  old transaction is still committing when the retry runs, the retry's step (4) waits on the
  primary key until it finishes and then fails with a unique violation, which is retried and
  then finds the keys; if the old transaction aborted, step (4) succeeds and the retry stored it;
- a client retries a request whose answer it never got (ingestd was killed after COMMIT, the
  answer was lost): the key is in the ledger, the part is a duplicate, nothing is written;
- two replicas write the same request at once: the primary key lets one commit; the other one
  fails with a unique violation, is retried and finds the key.
A server that keeps an abandoned transaction open (client gone without a TCP reset) would hold
the key's lock; `idle_in_transaction_session_timeout` ends such sessions, and TCP keepalives and
`tcp_user_timeout` detect a dead peer on our side.

Rows arrive already encoded (`ingestd.convert.copy_binary.CopyRows`: the binary COPY tuples of
one request, from the native codec or the Python reference), so a batch's COPY is the signature,
the parts' bytes as they are (`Copy.write`, no Python call per row or field) and the trailer.
psycopg's `Copy.write` adds neither signature nor trailer (`_copy_base.py`, BinaryFormatter.end).
A refused row is found from the COPY error's line number through the parts' row counts, and
left out by slicing its part at the row offsets.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
import xxhash
from psycopg import AsyncConnection, AsyncCursor, errors, sql
from psycopg.adapt import PyFormat
from psycopg_pool import AsyncConnectionPool

from ingestd.batching import Batch
from ingestd.config import TimescaleSinkConfig
from ingestd.convert.copy_binary import COPY_HEADER, COPY_TRAILER, CopyRows
from ingestd.errors import Rejected, SinkUnavailable
from ingestd.model import Part, PartResult
from ingestd.observe.metrics import SINK_DUPLICATE_ITEMS, SINK_REJECTED_ITEMS
from ingestd.pipeline import remaining

log = structlog.get_logger("ingestd.sinks.timescale")

# Session settings of every pooled connection (see the module docstring).
_SESSION_OPTIONS = (
    # Ends our own sessions that the server still holds in a transaction after we vanished,
    # releasing the ledger keys they lock. A live batch is never idle for more than a moment.
    "-c idle_in_transaction_session_timeout=60000"
    # A statement stuck for this long (a lock held by such a session) fails and is retried.
    " -c statement_timeout=60000"
)
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    # Unacknowledged data for this long means the peer is gone (Linux TCP_USER_TIMEOUT, ms).
    "tcp_user_timeout": 30000,
}


class TimescaleSink:
    """The pool shared by the writers of every table, and what this process already stored."""

    name = "timescale"

    def __init__(self, config: TimescaleSinkConfig) -> None:
        self.config = config
        self._pool: AsyncConnectionPool[AsyncConnection] | None = None
        self.dimensions = Dimensions()

    @property
    def pool(self) -> AsyncConnectionPool[AsyncConnection]:
        if self._pool is None:
            raise RuntimeError("TimescaleSink used before start()")
        return self._pool

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        """Create the pool; connections are made in the background (no wait for the server)."""
        self._pool = AsyncConnectionPool(
            self.config.dsn,
            min_size=self.config.pool.min_size,
            max_size=self.config.pool.max_size,
            timeout=self.config.pool.connect_timeout_s,
            kwargs={
                "connect_timeout": max(1, round(self.config.pool.connect_timeout_s)),
                "options": _SESSION_OPTIONS,
                **_KEEPALIVES,
            },
            configure=_configure,
            # One round trip per checkout finds connections that died while idle (a server
            # restart) before a batch is written on them.
            check=AsyncConnectionPool.check_connection,
            # Keep trying through a long outage: giving up would only shrink the pool.
            reconnect_timeout=24 * 3600.0,
            name="timescale",
            open=False,
        )
        await self._pool.open(wait=False)

    async def stop(self, deadline: float) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close(timeout=max(0.1, remaining(deadline)))

    def status(self) -> dict[str, Any]:
        """For /status: the pool's connections (open, idle) and requests waiting for one."""
        if self._pool is None:
            return {"pool": None}
        stats = self._pool.get_stats()
        return {
            "pool": {
                "size": stats.get("pool_size", 0),
                "idle": stats.get("pool_available", 0),
                "max": stats.get("pool_max", 0),
                "waiting": stats.get("requests_waiting", 0),
            }
        }

    async def probe(self) -> None:
        """Return when PostgreSQL answers a query; raise otherwise."""
        async with self.pool.connection(timeout=self.config.pool.connect_timeout_s) as conn:
            await conn.execute("SELECT 1")


async def _configure(conn: AsyncConnection) -> None:
    # set_types() picks dumpers by OID; make bytea's the C bytes dumper (see the docstring).
    conn.adapters.register_dumper(bytes, conn.adapters.get_dumper(bytes, PyFormat.BINARY))
    # Transactions are explicit (`conn.transaction()`); nothing is ever left open implicitly.
    await conn.set_autocommit(True)


# -- dimension rows -------------------------------------------------------------------------------

# Upper bound of each dimension cache; past it the cache is emptied (re-upserts are harmless).
_MAX_CACHED = 100_000
# applications.lastSeenAt moves forward at most this often per application per process.
_LAST_SEEN_EVERY_S = 60.0


@dataclass(slots=True)
class _Pending:
    """The dimension rows one batch must upsert, sorted by key (a fixed lock order)."""

    resources: list[tuple[int, tuple[bytes, int, str]]] = field(default_factory=list)
    scopes: list[tuple[int, tuple[str, str, bytes, int, str]]] = field(default_factory=list)
    applications: list[tuple[str, tuple[str, str, str]]] = field(default_factory=list)
    descriptions: list[tuple[tuple[str, str], tuple[str, str, str]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.resources or self.scopes or self.applications or self.descriptions)


class Dimensions:
    """Which resources, scopes, applications and metric descriptions this process stored.

    Shared by every writer of the sink; entries are added only after their transaction
    committed, so a rolled-back upsert is repeated by the next batch.
    """

    def __init__(self) -> None:
        self._resources: set[int] = set()
        self._scopes: set[int] = set()
        self._applications: dict[str, float] = {}
        # Keyed and valued by digests, not the client's strings: a metric name or description
        # of a megabyte costs the cache 16 + 8 bytes like any other (bounded by bytes).
        self._descriptions: dict[bytes, int] = {}

    def pending(self, payloads: Sequence[CopyRows], now: float) -> _Pending:
        resources: dict[int, tuple[bytes, int, str]] = {}
        scopes: dict[int, tuple[str, str, bytes, int, str]] = {}
        applications: dict[str, tuple[str, str, str]] = {}
        descriptions: dict[tuple[str, str], tuple[str, str, str]] = {}
        for rows in payloads:
            resources.update(
                (rid, r) for rid, r in rows.resources.items() if rid not in self._resources
            )
            scopes.update((sid, s) for sid, s in rows.scopes.items() if sid not in self._scopes)
            applications.update(
                (app_id, app)
                for app_id, app in rows.applications.items()
                if now - self._applications.get(app_id, -_LAST_SEEN_EVERY_S) >= _LAST_SEEN_EVERY_S
            )
            descriptions.update(
                (key, d)
                for key, d in rows.descriptions.items()
                if self._descriptions.get(_digest(key)) != _digest64(d)
            )
        return _Pending(
            sorted(resources.items()),
            sorted(scopes.items()),
            sorted(applications.items()),
            sorted(descriptions.items()),
        )

    def remember(self, pending: _Pending, now: float) -> None:
        for cache in (self._resources, self._scopes, self._applications, self._descriptions):
            if len(cache) > _MAX_CACHED:
                cache.clear()
        self._resources.update(rid for rid, _ in pending.resources)
        self._scopes.update(sid for sid, _ in pending.scopes)
        self._applications.update((app_id, now) for app_id, _ in pending.applications)
        self._descriptions.update((_digest(key), _digest64(d)) for key, d in pending.descriptions)


def _digest(parts: tuple[str, ...]) -> bytes:
    return xxhash.xxh3_128_digest("\x1f".join(parts).encode())


def _digest64(parts: tuple[str, ...]) -> int:
    return xxhash.xxh3_64_intdigest("\x1f".join(parts).encode())


_UPSERT_RESOURCES = sql.SQL("""
    INSERT INTO resources (id, attributes, droppedattributescount, schemaurl, firstseenat)
    SELECT u.id, u.attributes::jsonb, u.dropped, u.url, now()
    FROM unnest(%s::int8[], %s::text[], %s::int4[], %s::text[]) AS u(id, attributes, dropped, url)
    ORDER BY u.id
    ON CONFLICT (id) DO NOTHING
""")
_UPSERT_SCOPES = sql.SQL("""
    INSERT INTO scopes
        (id, name, version, attributes, droppedattributescount, schemaurl, firstseenat)
    SELECT u.id, u.name, u.version, u.attributes::jsonb, u.dropped, u.url, now()
    FROM unnest(%s::int8[], %s::text[], %s::text[], %s::text[], %s::int4[], %s::text[])
        AS u(id, name, version, attributes, dropped, url)
    ORDER BY u.id
    ON CONFLICT (id) DO NOTHING
""")
_UPSERT_APPLICATIONS = sql.SQL("""
    INSERT INTO applications (id, name, namespace, environment, createdat, lastseenat)
    SELECT u.id, u.name, u.namespace, u.environment, now(), now()
    FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])
        AS u(id, name, namespace, environment)
    ORDER BY u.id
    ON CONFLICT (id) DO UPDATE SET lastseenat = excluded.lastseenat
    WHERE applications.lastseenat < excluded.lastseenat AND applications.registeredat IS NULL
""")
_UPSERT_DESCRIPTIONS = sql.SQL("""
    INSERT INTO metric_descriptions (applicationid, name, type, unit, description, updatedat)
    SELECT u.app, u.name, u.type, u.unit, u.description, now()
    FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[])
        AS u(app, name, type, unit, description)
    ORDER BY u.app, u.name
    ON CONFLICT (applicationid, name) DO UPDATE
    SET type = excluded.type, unit = excluded.unit, description = excluded.description,
        updatedat = excluded.updatedat
    WHERE (metric_descriptions.type, metric_descriptions.unit, metric_descriptions.description)
        IS DISTINCT FROM (excluded.type, excluded.unit, excluded.description)
""")


def _json_text(jsonb_binary: bytes) -> str:
    return jsonb_binary[1:].decode()


async def _upsert(cur: AsyncCursor[Any], pending: _Pending) -> None:
    if pending.resources:
        ids, values = zip(*pending.resources, strict=True)
        await cur.execute(
            _UPSERT_RESOURCES,
            (
                list(ids),
                [_json_text(v[0]) for v in values],
                [v[1] for v in values],
                [v[2] for v in values],
            ),
        )
    if pending.scopes:
        ids, scopes = zip(*pending.scopes, strict=True)
        await cur.execute(
            _UPSERT_SCOPES,
            (
                list(ids),
                [s[0] for s in scopes],
                [s[1] for s in scopes],
                [_json_text(s[2]) for s in scopes],
                [s[3] for s in scopes],
                [s[4] for s in scopes],
            ),
        )
    if pending.applications:
        app_ids, apps = zip(*pending.applications, strict=True)
        await cur.execute(
            _UPSERT_APPLICATIONS,
            (list(app_ids), [a[0] for a in apps], [a[1] for a in apps], [a[2] for a in apps]),
        )
    if pending.descriptions:
        keys, descs = zip(*pending.descriptions, strict=True)
        await cur.execute(
            _UPSERT_DESCRIPTIONS,
            (
                [k[0] for k in keys],
                [k[1] for k in keys],
                [d[0] for d in descs],
                [d[1] for d in descs],
                [d[2] for d in descs],
            ),
        )


# -- the writer -----------------------------------------------------------------------------------

_READ_LEDGER = sql.SQL(
    "SELECT requestkey, rejected, message FROM ingestd.ledger WHERE requestkey = ANY(%s)"
)
_INSERT_LEDGER = sql.SQL("""
    INSERT INTO ingestd.ledger (requestkey, signal, items, rejected, message)
    SELECT * FROM unnest(%s::bytea[], %s::text[], %s::int4[], %s::int4[], %s::text[])
""")
_COPY_LINE = re.compile(r"COPY \S+, line (\d+)")

# Rows refused one by one per batch before whole parts are refused instead: a request full of
# bad rows must not cost a transaction per row.
_MAX_ROW_REJECTS = 16

# SQLSTATE classes and codes that a retry may fix (connection, resources, concurrency, schema
# not applied yet, failover); see _classify.
_RETRYABLE_CLASSES = ("08", "40", "53", "57", "58", "XX")
_RETRYABLE_CODES = {
    "25006": "read-only transaction (a replica, or failover in progress)",
    "55P03": "lock not available",
    "42P01": "table missing: apply the schema (`ingestd schema apply`)",
    "42703": "column missing: the schema is older than this ingestd (`ingestd schema apply`)",
    "3F000": "schema missing: apply the schema (`ingestd schema apply`)",
    "42501": "permission denied for the ingestd role",
}


class _DataError(Exception):
    """A COPY refused a row; *line* is its 1-based position in the COPY (None if unknown)."""

    def __init__(self, line: int | None, error: errors.Error) -> None:
        super().__init__(str(error))
        self.line = line
        self.error = error


@dataclass(slots=True)
class _PartState:
    """What the writer knows about one part across the attempts of one `write_batch`."""

    part: Part
    excluded: set[int] = field(default_factory=set)
    message: str = ""
    # PostgreSQL's own text about the first refused row, for the log only.
    detail: str = ""
    sqlstate: str = ""
    refused_whole: bool = False

    def payload(self) -> CopyRows:
        payload: CopyRows = self.part.payload
        return payload

    def data(self) -> bytes:
        """The COPY tuples to send: the part's, without the rows excluded so far."""
        payload = self.payload()
        if not self.excluded:
            return payload.data
        return b"".join(payload.row(j) for j in range(payload.rows) if j not in self.excluded)

    def rejected(self) -> int:
        return self.part.items if self.refused_whole else len(self.excluded)


class TimescaleWriter:
    """`BatchWriter` for one table: one transaction per batch, exactly once (module docstring)."""

    def __init__(
        self, sink: TimescaleSink, *, table: str, columns: Sequence[tuple[str, str]], signal: str
    ) -> None:
        self.name = f"timescale.{table}"
        self.table = table
        self.signal = signal
        self._sink = sink
        self._copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c, _ in columns)
        )
        self._counts: dict[str, int] = {
            "batches": 0,
            "rows": 0,
            "duplicate_parts": 0,
            "rejected_rows": 0,
        }

    async def write_batch(self, batch: Batch) -> Sequence[PartResult]:
        """Store *batch* in one transaction; see the module docstring for the guarantees.

        Raises SinkUnavailable for anything a retry may fix, Rejected when PostgreSQL refuses
        the batch for a reason no single row explains. Rows PostgreSQL refuses are reported in
        their part's result and the rest is written.
        """
        states = [_PartState(part) for part in batch.parts]
        try:
            async with self._sink.pool.connection() as conn:
                for _ in range(_MAX_ROW_REJECTS + len(states) + 1):
                    try:
                        return await self._transaction(conn, states)
                    except _DataError as exc:
                        self._exclude(states, exc)
        except errors.Error as exc:
            raise _classify(exc, self.table) from exc
        except _DataError as exc:
            raise Rejected(f"{self.table}: {exc}") from exc
        raise Rejected(f"{self.table}: rows kept being refused: {states[0].message}")

    async def _transaction(
        self, conn: AsyncConnection, states: list[_PartState]
    ) -> list[PartResult]:
        began = time.monotonic()
        async with conn.transaction(), conn.cursor() as cur:
            stored = await self._read_ledger(cur, states)
            todo, repeats = _split(states, stored)
            pending = self._sink.dimensions.pending([s.part.payload for s in todo], began)
            if pending:
                await _upsert(cur, pending)
            rows = await self._copy_rows(cur, todo)
            await self._insert_ledger(cur, todo)
        self._sink.dimensions.remember(pending, began)
        return self._results(states, stored, repeats, rows, began)

    async def _read_ledger(
        self, cur: AsyncCursor[Any], states: list[_PartState]
    ) -> dict[bytes, PartResult]:
        keys = [s.part.key for s in states if s.part.key]
        if not keys:
            return {}
        await cur.execute(_READ_LEDGER, (keys,))
        return {
            bytes(key): PartResult(rejected, message or "", duplicate=True)
            for key, rejected, message in await cur.fetchall()
        }

    async def _copy_rows(self, cur: AsyncCursor[Any], todo: list[_PartState]) -> int:
        parts = [s for s in todo if not s.refused_whole and s.part.items > len(s.excluded)]
        if not parts:
            return 0
        written = 0
        try:
            async with cur.copy(self._copy) as copy:
                await copy.write(COPY_HEADER)
                for state in parts:
                    await copy.write(state.data())
                    written += state.payload().rows - len(state.excluded)
                await copy.write(COPY_TRAILER)
        except (errors.DataError, errors.IntegrityError) as exc:
            # Class 22 (data exception) or 23 (integrity constraint violation): one row's fault.
            match = _COPY_LINE.search(exc.diag.context or "")
            raise _DataError(int(match.group(1)) if match else None, exc) from exc
        return written

    async def _insert_ledger(self, cur: AsyncCursor[Any], todo: list[_PartState]) -> None:
        keyed = [s for s in todo if s.part.key]
        if not keyed:
            return
        try:
            await cur.execute(
                _INSERT_LEDGER,
                (
                    [s.part.key for s in keyed],
                    [self.signal] * len(keyed),
                    [s.part.items for s in keyed],
                    [s.rejected() for s in keyed],
                    [s.message for s in keyed],
                ),
            )
        except errors.UniqueViolation as exc:
            # Another replica (or our own attempt whose COMMIT outcome we never learnt) stored
            # one of these requests meanwhile: retry, and the ledger read will find it.
            raise SinkUnavailable(
                f"{self.table}: a request of this batch was stored concurrently; retrying",
                retry_after_s=1.0,
            ) from exc

    def _exclude(self, states: list[_PartState], exc: _DataError) -> None:
        """Refuse the row PostgreSQL named (or, past the budget, its whole part)."""
        located = _locate(states, exc.line)
        if located is None:
            raise exc
        state, index = located
        if not state.message:
            state.sqlstate = exc.error.sqlstate or "unknown"
            # The client hears the SQLSTATE only: PostgreSQL's text may quote values and
            # names; it goes to the log (rows_refused) instead.
            state.message = f"{self.table}: rows refused by PostgreSQL (SQLSTATE {state.sqlstate})"
            state.detail = exc.error.diag.message_primary or str(exc.error)
        if sum(len(s.excluded) for s in states) >= _MAX_ROW_REJECTS:
            state.refused_whole = True
        else:
            state.excluded.add(index)

    def _results(
        self,
        states: list[_PartState],
        stored: dict[bytes, PartResult],
        repeats: dict[int, int],
        rows: int,
        began: float,
    ) -> list[PartResult]:
        out: list[PartResult] = []
        duplicates = rejected = 0
        for i, state in enumerate(states):
            if state.part.key in stored:
                result = stored[state.part.key]
            elif i in repeats:
                first = states[repeats[i]]
                result = PartResult(first.rejected(), first.message, duplicate=True)
            else:
                result = PartResult(state.rejected(), state.message)
                if result.rejected:
                    rejected += result.rejected
                    SINK_REJECTED_ITEMS.labels(sink=self.table, reason=state.sqlstate).inc(
                        result.rejected
                    )
            if result.duplicate:
                duplicates += 1
                SINK_DUPLICATE_ITEMS.labels(sink=self.table).inc(state.part.items)
            out.append(result)
        self._counts["batches"] += 1
        self._counts["rows"] += rows
        self._counts["duplicate_parts"] += duplicates
        self._counts["rejected_rows"] += rejected
        if duplicates:
            log.info("duplicates_skipped", table=self.table, parts=duplicates)
        if rejected:
            # One event per batch, never per row: the rows are counted by SQLSTATE in
            # ingestd_sink_rejected_items_total and reported to each client.
            refusing = [s for s in states if s.message]
            log.warning(
                "rows_refused",
                table=self.table,
                rows=rejected,
                parts=len(refusing),
                sqlstates=sorted({s.sqlstate for s in refusing}),
                example=f"{refusing[0].message}: {refusing[0].detail}"[:300],
            )
        log.debug(
            "batch_committed",
            table=self.table,
            rows=rows,
            parts=len(states),
            duplicates=duplicates,
            ms=round((time.monotonic() - began) * 1e3, 1),
        )
        return out

    def status(self) -> dict[str, Any]:
        """Counters for /status."""
        return dict(self._counts)


def _split(
    states: list[_PartState], stored: dict[bytes, PartResult]
) -> tuple[list[_PartState], dict[int, int]]:
    """(parts to write, {index of a repeated key: index of its first part in the batch})."""
    first_of_key: dict[bytes, int] = {}
    todo: list[_PartState] = []
    repeats: dict[int, int] = {}
    for i, state in enumerate(states):
        key = state.part.key
        if key in stored:
            continue
        if key and key in first_of_key:
            repeats[i] = first_of_key[key]
            continue
        if key:
            first_of_key[key] = i
        todo.append(state)
    return todo, repeats


def _locate(states: list[_PartState], line: int | None) -> tuple[_PartState, int] | None:
    """The part and row index of the *line*-th row the last COPY sent."""
    if line is None:
        return None
    seen = 0
    for state in states:
        if state.refused_whole:
            continue
        for j in range(state.payload().rows):
            if j in state.excluded:
                continue
            seen += 1
            if seen == line:
                return state, j
    return None


def _classify(exc: errors.Error, table: str) -> SinkUnavailable | Rejected:
    """The batcher-facing error for a psycopg error (see _RETRYABLE_CLASSES)."""
    state = exc.sqlstate or ""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if state in _RETRYABLE_CODES:
        hint = _RETRYABLE_CODES[state]
        if state in ("42P01", "42703", "3F000"):
            log.error("schema_not_applied", table=table, error=text, hint=hint)
        return SinkUnavailable(f"{table}: {hint}: {text}", retry_after_s=5.0)
    if not state or state[:2] in _RETRYABLE_CLASSES:
        return SinkUnavailable(f"{table}: {text}", retry_after_s=1.0)
    if state[:2] in ("22", "23"):
        return Rejected(f"{table}: {text}")
    log.error("unexpected_database_error", table=table, sqlstate=state, error=text)
    return SinkUnavailable(f"{table}: {text}", retry_after_s=5.0)
