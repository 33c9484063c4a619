"""Redis: the state every replica shares (dedup keys, pressure, rate limits), behind a breaker.

Redis trouble never stops ingest. Every command is bounded by `redis.timeout_ms`; failures feed a
circuit breaker that, once open, answers "unavailable" at once without asking Redis, then lets
one probe call through after `redis.breaker.open_s`. Callers get `StateUnavailable` and fail
open (no dedup, local-only limits). While the breaker is not closed the `redis` health
component is DEGRADED: still ready, with a reduced guarantee.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import hashlib
import math
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.asyncio.connection import AbstractConnection as Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, RedisError, ResponseError

from ingestd.config import BreakerConfig, RedisConfig
from ingestd.errors import StateUnavailable
from ingestd.observe.children import Children
from ingestd.observe.health import Health, State
from ingestd.observe.metrics import (
    REDIS_BREAKER_OPEN,
    REDIS_CALL_SECONDS,
    REDIS_CALLS,
    REDIS_DEGRADED_SECONDS,
)
from ingestd.pipeline import remaining
from ingestd.retry import SYSTEM_CLOCK, Clock

log = structlog.get_logger("ingestd.state.redis")

_CALLS = Children(REDIS_CALLS)
_CALL_SECONDS = Children(REDIS_CALL_SECONDS)

# A command answered this recently stands in for the health probe's PING (`RedisState.probe`);
# below the prober's period (admin.check_interval_s, 2 s) so a probe never trusts an old answer
# for long, above the pressure publisher's (pressure.publish_interval_s, 1 s) so it usually can.
PROBE_FRESH_S = 1.5


class BreakerState(enum.StrEnum):
    CLOSED = "closed"  # calls go through
    OPEN = "open"  # no call is made until open_s has passed
    HALF_OPEN = "half_open"  # one probe call decides


class Breaker:
    """A circuit breaker over consecutive failures; pure, driven by a clock (tests use a fake).

    Failures count only when the failed call started after the last counted failure: calls
    that were in flight together when Redis stalled (or the event loop did) are one incident.
    """

    def __init__(
        self,
        config: BreakerConfig,
        clock: Clock = SYSTEM_CLOCK,
        on_change: Callable[[BreakerState, str], None] | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._on_change = on_change
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.last_error = ""
        self._last_counted_at = float("-inf")
        self._opened_at = 0.0
        self._probing = False
        self._accounted_at = clock.now()

    def allow(self) -> bool:
        """Whether a call may be made now. In half-open state only one probe at a time."""
        now = self._account()
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if now - self._opened_at < self._config.open_s:
                return False
            self._set(BreakerState.HALF_OPEN)
        if self._probing:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._account()
        self.failures = 0
        self._probing = False
        if self.state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def failure(self, started_at: float, error: str) -> None:
        """Record a failed call that started at *started_at* (this clock's time)."""
        now = self._account()
        self.last_error = error
        self._probing = False
        if self.state is BreakerState.HALF_OPEN:
            self._opened_at = now
            self._set(BreakerState.OPEN)
            return
        if self.state is BreakerState.OPEN or started_at < self._last_counted_at:
            return
        self.failures += 1
        self._last_counted_at = now
        if self.failures >= self._config.failures_to_open:
            self._opened_at = now
            self._set(BreakerState.OPEN)

    def abandon(self) -> None:
        """A call was cancelled before it had an outcome: let another probe try."""
        self._probing = False

    @property
    def is_closed(self) -> bool:
        return self.state is BreakerState.CLOSED

    def _account(self) -> float:
        now = self._clock.now()
        if self.state is not BreakerState.CLOSED:
            REDIS_DEGRADED_SECONDS.inc(max(0.0, now - self._accounted_at))
        self._accounted_at = now
        return now

    def _set(self, state: BreakerState) -> None:
        self.state = state
        if self._on_change is not None:
            self._on_change(state, self.last_error)


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script run with EVALSHA; loaded on first use and again after a Redis restart."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


class RedisState:
    """The one Redis client of a process; every command goes through `command` (timeout, breaker,
    pipelining with the other commands of the same loop turn)."""

    name = "redis"

    def __init__(
        self, config: RedisConfig, health: Health | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.config = config
        self.health = health
        # Unique per process: a restarted replica is a new one (its old markers just expire).
        self.replica_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.prefix = config.key_prefix.encode()
        self.breaker = Breaker(config.breaker, clock, self._breaker_changed)
        self._clock = clock
        self._timeout_s = config.timeout_ms / 1000
        self._client: aioredis.Redis | None = None
        self._slots = asyncio.Semaphore(config.max_connections)
        self._queue: list[_Pending] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._scripts: dict[str, str] = {}
        self._down_since: float | None = None
        self._answered_at = -math.inf
        # Connections between pipelines (at most max_connections: `_slots` bounds the ones in
        # use). Ours, not the pool's: see `_exchange`.
        self._idle: list[Connection] = []

    def key(self, *parts: bytes) -> bytes:
        """A key under this deployment's prefix."""
        return self.prefix + b"".join(parts)

    @property
    def available(self) -> bool:
        """False while the breaker is open: callers can skip work that needs Redis."""
        return self._client is not None and self.breaker.state is not BreakerState.OPEN

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        """Create the client. Connects lazily: Redis being down does not stop startup."""
        # Not redis-py's BlockingConnectionPool: its waiters re-take an asyncio.Condition when
        # cancelled by a timeout and queued behind each other for 200+ ms against a hung
        # server. `_slots` bounds the pipelines in flight instead.
        pool = aioredis.ConnectionPool.from_url(
            self.config.url,
            max_connections=self.config.max_connections,
            socket_timeout=self._timeout_s,
            socket_connect_timeout=self._timeout_s,
            # One attempt per call: the breaker, not the client, decides when to try again.
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._client = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
        log.info(
            "redis_client_ready",
            replica=self.replica_id,
            timeout_ms=self.config.timeout_ms,
            key_prefix=self.config.key_prefix,
        )

    async def stop(self, deadline: float) -> None:
        """Send what is queued (done marks of the last commits), wait for every pipeline in
        flight until *deadline*, close the connections."""
        if self._queue:
            self._flush()
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=remaining(deadline))
        await self._close_idle()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def command(self, op: str, *args: Any, **options: Any) -> Any:
        """Run one Redis command within `timeout_ms`; StateUnavailable on any failure.

        Commands issued in the same event-loop turn (by concurrent requests) travel together
        in one pipeline: one write, one read, one connection. The caller waits at most the
        timeout (the send goes on alone, bounded by the socket timeout); while the breaker is
        open it raises at once. *options* are redis-py's reply options (`get=True` for SET GET).
        """
        if self._client is None or not self.breaker.allow():
            _CALLS(op, "breaker_open").inc()
            raise StateUnavailable(f"redis: {op} skipped, breaker {self.breaker.state}")
        began = self._clock.now()
        future = self._enqueue(args, options)
        # Awaited directly under a timeout (not asyncio.wait: a waiter future and callbacks
        # more per call); the timeout or a cancellation of the caller cancels *future*.
        timeout = asyncio.timeout(self._timeout_s)
        try:
            async with timeout:
                result = await future
        except Exception as error:
            if timeout.expired():
                self._failed(op, began, "timeout", f"no answer within {self.config.timeout_ms} ms")
                raise StateUnavailable(f"redis: {op} timed out") from None
            self._failed(op, began, "error", f"{type(error).__name__}: {error}"[:200])
            raise StateUnavailable(f"redis: {op} failed: {error}") from error
        except BaseException:
            future.cancel()
            self.breaker.abandon()
            raise
        self._answered(op, began)
        return result

    def send(self, op: str, *args: Any) -> None:
        """Queue one command whose reply nobody waits for (the dedup done marks): counted and
        fed to the breaker like `command`, without a task or a timer of its own. The send is
        bounded by `timeout_ms` like every pipeline."""
        if self._client is None or not self.breaker.allow():
            _CALLS(op, "breaker_open").inc()
            return
        future = self._enqueue(args, {})
        future.add_done_callback(functools.partial(self._sent, op, self._clock.now()))

    def _enqueue(self, args: tuple[Any, ...], options: dict[str, Any]) -> asyncio.Future[Any]:
        """Queue one command for the next pipeline (flushed on the loop's next turn)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Pending(args, options, future))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return future

    def _answered(self, op: str, began: float) -> None:
        self.breaker.success()
        self._answered_at = self._clock.now()
        _CALLS(op, "ok").inc()
        _CALL_SECONDS(op).observe(self._answered_at - began)

    def _sent(self, op: str, began: float, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self.breaker.abandon()
            return
        error = future.exception()
        if isinstance(error, TimeoutError):
            self._failed(op, began, "timeout", f"no answer within {self.config.timeout_ms} ms")
        elif error is not None:
            self._failed(op, began, "error", f"{type(error).__name__}: {error}"[:200])
        else:
            self._answered(op, began)

    async def run_script(
        self, op: str, script: Script, keys: Sequence[bytes], args: Sequence[Any]
    ) -> Any:
        """EVALSHA *script*; after a Redis restart (NOSCRIPT) it is loaded and run again."""
        self._scripts[script.sha] = script.source
        return await self.command(op, "EVALSHA", script.sha, len(keys), *keys, *args)

    async def probe(self) -> None:
        """Return when Redis answers PING; raise otherwise. Doubles as the half-open probe.

        A command answered within PROBE_FRESH_S with the breaker closed answers for it: the
        pressure publisher's script every second already shows Redis answering, and an idle
        process need not PING too (a round trip of redis-py and the loop every 2 s)."""
        fresh = self._clock.now() - self._answered_at < PROBE_FRESH_S
        if fresh and self.breaker.state is BreakerState.CLOSED:
            return
        await self.command("ping", "PING")

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        batch = [p for p in batch if not p.future.done()]  # callers that gave up already
        if not batch:
            return
        if self._client is None:
            _fail(batch, RedisConnectionError("client closed"))
            return
        task = asyncio.ensure_future(self._send(self._client, batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, client: aioredis.Redis, batch: list[_Pending]) -> None:
        try:
            async with self._slots, asyncio.timeout(self._timeout_s):
                results = await self._exchange(client, [(p.args, p.options) for p in batch])
                results = await self._reload_scripts(client, batch, results)
        except (RedisError, OSError) as exc:  # TimeoutError (an OSError) included
            _fail(batch, exc)
            return
        except RuntimeError as exc:
            # uvloop raises RuntimeError ("unable to perform operation on <TCPTransport
            # closed=True>; the handler is closed") when a reset connection is written to;
            # redis-py lets it through and returns the dead connection to its pool. Fail the
            # batch like any lost connection and drop the pool's idle connections (found by
            # the chaos suite's redis-cut fault: it surfaced as "Task exception was never
            # retrieved").
            _fail(batch, RedisConnectionError(f"connection lost: {exc}"))
            await self._close_idle()
            return
        except BaseException:
            _fail(batch, RedisConnectionError("send cancelled"))
            raise
        for pending, result in zip(batch, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, Exception):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)

    async def _reload_scripts(
        self, client: aioredis.Redis, batch: list[_Pending], results: list[Any]
    ) -> list[Any]:
        """Redis lost its script cache (a restart): load the scripts, run those calls again."""
        again = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        shas = {batch[i].args[1] for i in again} & self._scripts.keys()
        if not shas:
            return results
        loads: list[Command] = [(("SCRIPT", "LOAD", self._scripts[sha]), {}) for sha in shas]
        retried = await self._exchange(
            client, loads + [(batch[i].args, batch[i].options) for i in again]
        )
        for i, result in zip(again, retried[len(loads) :], strict=True):
            results[i] = result
        return results

    async def _exchange(self, client: aioredis.Redis, commands: list[Command]) -> list[Any]:
        """Send *commands* in one write, read their replies; a command's error comes back as
        its result. The caller bounds the whole exchange by `timeout_ms`.

        On a connection of our own with no socket timeout, not through the client: redis-py's
        `execute_command` (pool checkout with its lock and counters, retry wrapper, a task for
        every write's `wait_for`, a timer for every read) cost ~0.4 ms of CPU per request in
        dedup's two calls (tests/bench/request_cost.py, 2026-12-05); this costs a fraction.
        A connection comes back only after a complete exchange: one that failed or was cut off
        (timeout, cancellation) in the middle is closed, never reused.
        """
        connection = self._idle.pop() if self._idle else self._connect(client)
        try:
            packed = b"".join([_pack(args) for args, _ in commands])
            await connection.send_packed_command(packed, check_health=False)
            results: list[Any] = []
            callbacks = client.response_callbacks
            for args, options in commands:
                try:
                    reply = await connection.read_response()
                except ResponseError as exc:  # the reply was read whole: the connection is fine
                    results.append(exc)
                    continue
                callback = callbacks.get(args[0])
                results.append(reply if callback is None else callback(reply, **options))
        except BaseException:
            task = asyncio.ensure_future(connection.disconnect(nowait=True))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
            raise
        self._idle.append(connection)
        return results

    async def _close_idle(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            with contextlib.suppress(Exception):
                await connection.disconnect()

    @staticmethod
    def _connect(client: aioredis.Redis) -> Connection:
        """A new connection with the client's settings (URL, credentials, parser); no socket
        timeout: `_send` bounds each exchange instead (connecting keeps its own timeout)."""
        pool = client.connection_pool
        connection: Connection = pool.connection_class(
            **{**pool.connection_kwargs, "socket_timeout": None}
        )
        return connection

    def status(self) -> dict[str, Any]:
        """For /status: who this replica is to the others, and the breaker."""
        return {
            "replica": self.replica_id,
            "breaker": str(self.breaker.state),
            "failures": self.breaker.failures,
            "last_error": self.breaker.last_error,
        }

    def _failed(self, op: str, began: float, outcome: str, error: str) -> None:
        _CALLS(op, outcome).inc()
        self.breaker.failure(began, error)

    def _breaker_changed(self, state: BreakerState, error: str) -> None:
        REDIS_BREAKER_OPEN.set(1 if state is BreakerState.OPEN else 0)
        now = self._clock.now()
        if state is BreakerState.OPEN:
            if self._down_since is None:
                self._down_since = now
                log.warning("redis_breaker_opened", error=error, open_s=self.config.breaker.open_s)
            if self.health is not None:
                self.health.set("redis", State.DEGRADED, f"breaker open: {error}")
        elif state is BreakerState.CLOSED:
            down_s = now - (self._down_since or now)
            log.info("redis_breaker_closed", down_s=round(down_s, 3))
            self._down_since = None
            if self.health is not None:
                self.health.set("redis", State.OK)


@dataclass(slots=True)
class _Pending:
    """One command waiting for the next pipeline, and the future its caller awaits."""

    args: tuple[Any, ...]
    options: dict[str, Any]
    future: asyncio.Future[Any]


Command = tuple[tuple[Any, ...], dict[str, Any]]


def _pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP, encoded as redis-py's default Encoder does (str as UTF-8, numbers
    by repr) at a fraction of its packer's cost (a generator and two calls per argument)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, bool) or not isinstance(
            arg, bytes | bytearray | memoryview | int | float
        ):
            raise DataError(f"redis argument of type {type(arg).__name__}: {arg!r}"[:200])
        elif isinstance(arg, int | float):
            arg = repr(arg).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(out)


def _fail(batch: list[_Pending], error: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)
