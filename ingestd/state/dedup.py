"""Dedup of retried requests across replicas, before a request is converted or buffered.

A request's key (`receiver.decode.request_key`) is claimed in Redis with one
`SET key "F<replica>" NX GET PX <in-flight ttl>`: the answer says whether the request is new
(we now own it), done (its stored outcome comes back: answer it without writing), or in flight
somewhere (wait for its outcome, polling with backoff, up to `dedup.wait_in_flight_s`). Once
the request's part commits, the marker becomes "done" for `dedup.ttl_s`; when it fails, the
marker is deleted so a retry can go ahead. A dead replica's marker expires after the in-flight
TTL (a bit over `ingest.ack_timeout_s`).

Redis is an accelerator here: when it does not answer, requests go on without dedup (counted),
and the Timescale ledger and Elasticsearch's deterministic ids still keep retries from being
stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
import structlog

from ingestd.config import DedupConfig
from ingestd.errors import InFlightElsewhere, StateUnavailable
from ingestd.observe.children import Children
from ingestd.observe.metrics import DEDUP_REQUESTS, DEDUP_WAIT_SECONDS
from ingestd.pipeline import remaining
from ingestd.retry import SYSTEM_CLOCK, Clock
from ingestd.state.redis import RedisState, Script

log = structlog.get_logger("ingestd.state.dedup")

_REQUESTS = Children(DEDUP_REQUESTS)

_DONE = b"D"
_IN_FLIGHT = b"F"
# Polling for another replica's outcome: 5 ms doubling to 50 ms. Commits take a flush interval
# (200 ms) or more, so a waiter learns the outcome within ~50 ms of it for ~20 GETs a second.
_FIRST_POLL_S = 0.005
_MAX_POLL_S = 0.05

# Delete the marker only if it is still ours: it may have expired and been taken by a retry.
_RELEASE = Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
)


class Outcome(NamedTuple):
    """What a stored request's client heard: records refused for good, and an example reason."""

    rejected: int = 0
    message: str = ""


@dataclass(eq=False, slots=True)
class Claim:
    """One request's standing in the dedup table, as `begin` found it."""

    key: bytes
    # This process holds the in-flight marker and must settle it (finish or release).
    owned: bool = False
    # The request was stored before (here or elsewhere): answer this, write nothing.
    stored: Outcome | None = None
    # False when Redis failed for this request: skip its other Redis calls (one timeout each).
    redis_ok: bool = True
    settled: bool = False


NO_CLAIM = Claim(b"")


def encode(outcome: Outcome) -> bytes:
    if not outcome.rejected and not outcome.message:
        return _DONE
    return _DONE + orjson.dumps([outcome.rejected, outcome.message[:500]])


def decode(value: bytes) -> Outcome:
    if len(value) == 1:
        return Outcome()
    rejected, message = orjson.loads(value[1:])
    return Outcome(int(rejected), str(message))


class RedisDedup:
    """Claims, finishes and releases request keys in Redis; a no-op without Redis."""

    name = "dedup"

    def __init__(
        self,
        config: DedupConfig,
        redis: RedisState | None,
        *,
        in_flight_ttl_s: float,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config
        self._redis = redis if config.enabled else None
        self._in_flight_ttl_ms = int(in_flight_ttl_s * 1000)
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._marker = _IN_FLIGHT + (redis.replica_id.encode() if redis else b"")

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        """Nothing to acquire: Redis is the RedisState's; this only settles claims."""

    async def stop(self, deadline: float) -> None:
        """Wait for pending release calls (each bounded by the Redis timeout); the done marks
        are queued on RedisState, whose stop (after this one) sends them."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=remaining(deadline))

    async def begin(self, key: bytes) -> Claim:
        """Claim *key*, or find it done, or wait for it while it is in flight elsewhere.

        Raises InFlightElsewhere when it is still in flight after `wait_in_flight_s`.
        Never raises for Redis trouble: the claim then says `redis_ok=False` and owns nothing.
        """
        if self._redis is None or not key:
            return NO_CLAIM
        redis, rkey = self._redis, self._redis.key(b"d:", key)
        began = self._clock.now()
        delay, waited = _FIRST_POLL_S, False
        while True:
            try:
                # SET NX GET (Redis >= 7.0): take the key if free, else read what holds it.
                previous = await redis.command(
                    "dedup_begin", "SET", rkey, self._marker, "NX", "GET",
                    "PX", self._in_flight_ttl_ms, get=True,
                )  # fmt: skip
            except StateUnavailable:
                _REQUESTS("skipped").inc()
                return Claim(key, redis_ok=False)
            if previous is None or previous.startswith(_DONE):
                return self._found(key, previous, waited, began)
            if self._clock.now() + delay - began > self.config.wait_in_flight_s:
                _REQUESTS("in_flight_timeout").inc()
                DEDUP_WAIT_SECONDS.observe(self._clock.now() - began)
                raise InFlightElsewhere(
                    "the same request is still being stored by another replica",
                    retry_after_s=2.0,
                )
            waited = True
            await self._clock.sleep(delay)
            delay = min(delay * 2, _MAX_POLL_S)

    def _found(self, key: bytes, previous: bytes | None, waited: bool, began: float) -> Claim:
        if waited:
            DEDUP_WAIT_SECONDS.observe(self._clock.now() - began)
        if previous is None:
            _REQUESTS("taken_over" if waited else "new").inc()
            return Claim(key, owned=True)
        _REQUESTS("waited_done" if waited else "done").inc()
        return Claim(key, stored=decode(previous))

    def finish(self, claim: Claim, outcome: Outcome) -> None:
        """Mark *claim* done with *outcome* for `ttl_s` (in the background, bounded)."""
        if self._settle(claim):
            self._finish(claim.key, outcome)

    def release(self, claim: Claim) -> None:
        """Delete *claim*'s in-flight marker so that a retry can store the request."""
        if self._settle(claim):
            self._spawn(self._release(claim.key))

    def follow(
        self,
        claim: Claim,
        done: asyncio.Future[Any],
        outcome_of: Callable[[Any], Outcome],
    ) -> None:
        """Settle *claim* when *done* resolves: finish on a result, release on an error."""
        if not self._settle(claim):
            return

        def settle(future: asyncio.Future[Any]) -> None:
            if future.cancelled() or future.exception() is not None:
                self._spawn(self._release(claim.key))
            else:
                self._finish(claim.key, outcome_of(future.result()))

        done.add_done_callback(settle)

    def _settle(self, claim: Claim) -> bool:
        if not claim.owned or claim.settled:
            return False
        claim.settled = True
        return True

    def _finish(self, key: bytes, outcome: Outcome) -> None:
        assert self._redis is not None
        rkey, value = self._redis.key(b"d:", key), encode(outcome)
        # Queued, not awaited (no task per request; RedisState.stop waits for it). On failure
        # (counted by RedisState) a retry finds the marker until it expires, then stores the
        # request again: the ledger and the ES ids find it stored.
        self._redis.send("dedup_finish", "SET", rkey, value, "EX", self.config.ttl_s)

    async def _release(self, key: bytes) -> None:
        assert self._redis is not None
        with contextlib.suppress(StateUnavailable):  # else the marker expires after its TTL
            await self._redis.run_script(
                "dedup_release", _RELEASE, [self._redis.key(b"d:", key)], [self._marker]
            )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
