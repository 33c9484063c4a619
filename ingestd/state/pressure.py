"""Shared backpressure: every replica sees every replica's buffer fill and sink health.

Each `publish_interval_s` a replica writes, per signal, its batcher's fill and whether that
signal's sink is failing here (its health component UNAVAILABLE, or its batcher retrying for
two ticks in a row) into one Redis hash, and reads everyone's entries back in the same script
call. Entries older than `stale_after_s` (by Redis's clock) are ignored and deleted: a dead
replica fades out. From that view each replica decides, per signal, at admission:

- closed: the sink fails here, or on at least `failing_quorum` of the live replicas. Requests
  are refused at once with UNAVAILABLE and a retry hint that grows with the outage (instead of
  queueing until `ingest.enqueue_timeout_s` or `ack_timeout_s`);
- reopening: after recovery, a growing fraction is admitted (10 % -> 100 % over `reopen_s`);
- open: everything is admitted; the batchers' own retry hints use the cluster's mean fill.

Without Redis (disabled, or not answering) the replica's own view alone decides.
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from ingestd.batching import Batcher
from ingestd.config import PressureConfig
from ingestd.errors import SinkUnavailable, StateUnavailable
from ingestd.model import Signal
from ingestd.observe.health import Health, State
from ingestd.observe.metrics import (
    PRESSURE_MALFORMED_ENTRIES,
    PRESSURE_REFUSED_REQUESTS,
    PRESSURE_REPLICAS,
    PRESSURE_SIGNAL_CLOSED,
)
from ingestd.pipeline import cancel_and_wait
from ingestd.retry import SYSTEM_CLOCK, Clock
from ingestd.state.redis import RedisState, Script

log = structlog.get_logger("ingestd.state.pressure")

# KEYS[1]: the hash; ARGV: replica id, its entry (JSON), stale_ms. Returns the live entries
# as a flat [replica, entry, ...] list, deleting stale ones on the way.
_PUBLISH_AND_READ = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stale = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], now .. ' ' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], stale)
local all, out = redis.call('HGETALL', KEYS[1]), {}
for i = 1, #all, 2 do
  local v = all[i + 1]
  local sp = string.find(v, ' ', 1, true)
  local ts = sp and tonumber(string.sub(v, 1, sp - 1))
  if ts == nil or now - ts > stale then
    redis.call('HDEL', KEYS[1], all[i])
  else
    out[#out + 1] = all[i]
    out[#out + 1] = string.sub(v, sp + 1)
  end
end
return out
"""
)


class Gate(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    REOPENING = "reopening"


class Admission:
    """One signal's gate: closed while its sink fails, then reopening gradually. Pure."""

    def __init__(self, config: PressureConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self.gate = Gate.OPEN
        self.since = 0.0

    def update(self, failing: bool, now: float) -> Gate | None:
        """Feed the latest view; return the new gate when it changed."""
        before = self.gate
        if failing:
            if self.gate is not Gate.CLOSED:
                self.gate, self.since = Gate.CLOSED, now
        elif self.gate is Gate.CLOSED:
            self.gate, self.since = Gate.REOPENING, now
        if self.gate is Gate.REOPENING and now - self.since >= self._config.reopen_s:
            self.gate, self.since = Gate.OPEN, now
        return self.gate if self.gate is not before else None

    def admit(self, now: float) -> bool:
        if self.gate is Gate.OPEN:
            return True
        if self.gate is Gate.CLOSED:
            return False
        return self._rng.random() < self.fraction(now)

    def fraction(self, now: float) -> float:
        """Share of requests admitted: 0 closed, 10 % -> 100 % while reopening, 1 open."""
        if self.gate is Gate.CLOSED:
            return 0.0
        if self.gate is Gate.OPEN or self._config.reopen_s <= 0:
            return 1.0
        return min(1.0, 0.1 + 0.9 * (now - self.since) / self._config.reopen_s)

    def hint_s(self, now: float) -> float:
        """Retry hint while refusing: 1 s at first, +1 s per 2 s of outage, capped."""
        if self.gate is Gate.CLOSED:
            return min(self._config.max_retry_hint_s, 1.0 + (now - self.since) / 2)
        return 1.0


@dataclass(slots=True)
class _Watched:
    batcher: Batcher
    component: str | None
    admission: Admission
    retrying_ticks: int = 0
    fill: float = 0.0
    cluster_fill: float = 0.0
    failing_replicas: int = 0
    reporting_replicas: int = 0


class ClusterPressure:
    """The admission stage: publishes this replica's pressure, decides from everyone's."""

    name = "pressure"

    def __init__(
        self,
        config: PressureConfig,
        redis: RedisState | None,
        health: Health | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._redis = redis
        self._health = health
        self._clock = clock
        self._rng = rng or random.Random()
        self._signals: dict[Signal, _Watched] = {}
        self._replicas = 1
        self._task: asyncio.Task[None] | None = None
        self._key = redis.key(b"pressure") if redis else b""
        PRESSURE_REPLICAS.set(1)

    def watch(self, signal: Signal, batcher: Batcher, component: str | None = None) -> None:
        """Gate *signal* on *batcher*'s fill and on the health of *component* (its sink)."""
        self._signals[signal] = _Watched(batcher, component, Admission(self.config, self._rng))
        PRESSURE_SIGNAL_CLOSED.labels(signal=signal).set(0)

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        if not self.config.enabled:
            return
        await self.tick()
        self._task = tasks.create_task(self._loop(), name="pressure")

    async def stop(self, deadline: float) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def admit(self, signal: Signal) -> None:
        """Raise SinkUnavailable (with a retry hint) when *signal* is not admitted now."""
        watched = self._signals.get(signal)
        if watched is None:
            return
        now = self._clock.now()
        if watched.admission.admit(now):
            return
        gate = watched.admission.gate
        reason = "sink_failing" if gate is Gate.CLOSED else "reopening"
        PRESSURE_REFUSED_REQUESTS.labels(signal=signal, reason=reason).inc()
        where = f"{watched.failing_replicas} of {watched.reporting_replicas} replicas"
        message = (
            f"{signal}: its sink is failing ({where}); refused at once"
            if gate is Gate.CLOSED
            else f"{signal}: its sink is recovering; admitting a growing share"
        )
        # ingestd's own words (counts only): the client may read them.
        raise SinkUnavailable(
            message, retry_after_s=watched.admission.hint_s(now), client_message=message
        )

    def hint_s(self, signal: Signal) -> float:
        """The retry hint for *signal* now: the outage's, or the batcher's from cluster fill."""
        watched = self._signals.get(signal)
        if watched is None:
            return 2.0
        now = self._clock.now()
        if watched.admission.gate is not Gate.OPEN:
            return watched.admission.hint_s(now)
        return watched.batcher.retry_hint_s()

    def live_replicas(self) -> int:
        """Replicas in the last cluster view (kept while Redis is away); at least 1."""
        return self._replicas

    async def _loop(self) -> None:
        while True:
            await self._clock.sleep(self.config.publish_interval_s)
            await self.tick()

    async def tick(self) -> None:
        """Publish this replica's view, read everyone's, update every gate."""
        mine = self._local_view()
        entries = {"self": mine}
        if self._redis is not None:
            try:
                entries = await self._publish_and_read(self._redis, mine)
                self._replicas = max(1, len(entries))
                PRESSURE_REPLICAS.set(self._replicas)
            except StateUnavailable:
                pass  # counted by the call; our own view decides meanwhile
        self._apply(mine, entries)

    def _local_view(self) -> dict[str, list[Any]]:
        view: dict[str, list[Any]] = {}
        for signal, watched in self._signals.items():
            watched.fill = watched.batcher.fill()
            # Only a batch still being retried means the sink is failing now (a batch that
            # gave up leaves its error behind; else a closed gate would never reopen).
            retrying = watched.batcher.retrying()
            watched.retrying_ticks = watched.retrying_ticks + 1 if retrying else 0
            failing = watched.retrying_ticks >= 2 or self._component_down(watched.component)
            # The view is JSON: orjson encodes only exact str keys, not a StrEnum's.
            view[signal.value] = [round(watched.fill, 4), 1 if failing else 0]
        return view

    def _component_down(self, component: str | None) -> bool:
        if self._health is None or component is None:
            return False
        try:
            return self._health.get(component).state is State.UNAVAILABLE
        except KeyError:
            return False

    async def _publish_and_read(
        self, redis: RedisState, mine: dict[str, list[Any]]
    ) -> dict[str, dict[str, list[Any]]]:
        stale_ms = int(self.config.stale_after_s * 1000)
        flat = await redis.run_script(
            "pressure",
            _PUBLISH_AND_READ,
            [self._key],
            [redis.replica_id, orjson.dumps(mine), stale_ms],
        )
        entries: dict[str, dict[str, list[Any]]] = {}
        malformed = 0
        for i in range(0, len(flat), 2):
            entry = _valid_entry(flat[i], flat[i + 1])
            if entry is None:
                malformed += 1
            else:
                entries[entry[0]] = entry[1]
        if malformed:
            PRESSURE_MALFORMED_ENTRIES.inc(malformed)
            log.debug("pressure_entries_malformed", entries=malformed)
        return entries

    def _apply(self, mine: dict[str, list[Any]], entries: dict[str, dict[str, list[Any]]]) -> None:
        now = self._clock.now()
        for signal, watched in self._signals.items():
            reports = [e[signal] for e in entries.values() if signal in e]
            watched.reporting_replicas = len(reports)
            watched.failing_replicas = sum(1 for _, failing in reports if failing)
            watched.cluster_fill = sum(fill for fill, _ in reports) / len(reports) if reports else 0
            watched.batcher.note_cluster_fill(watched.cluster_fill)
            need = max(1, math.ceil(self.config.failing_quorum * len(reports)))
            failing = bool(mine[signal][1]) or watched.failing_replicas >= need
            changed = watched.admission.update(failing, now)
            if changed is not None:
                self._log_change(signal, watched, changed)

    def _log_change(self, signal: Signal, watched: _Watched, gate: Gate) -> None:
        PRESSURE_SIGNAL_CLOSED.labels(signal=signal).set(1 if gate is Gate.CLOSED else 0)
        emit = log.warning if gate is Gate.CLOSED else log.info
        emit(
            "admission_changed",
            signal=signal,
            gate=str(gate),
            failing_replicas=watched.failing_replicas,
            replicas=watched.reporting_replicas,
        )

    def status(self) -> dict[str, Any]:
        """For /status: each signal's gate and fill, and the replicas seen."""
        now = self._clock.now()
        return {
            "replicas": self._replicas,
            "signals": {
                signal.value: {
                    "gate": str(w.admission.gate),
                    "admitted_fraction": round(w.admission.fraction(now), 3),
                    "fill": round(w.fill, 4),
                    "cluster_fill": round(w.cluster_fill, 4),
                    "failing_replicas": w.failing_replicas,
                }
                for signal, w in self._signals.items()
            },
        }


def _valid_entry(replica: Any, raw: Any) -> tuple[str, dict[str, list[Any]]] | None:
    """One replica's entry as read from Redis, or None when it is not the shape we write.

    Redis is shared (other deployments, other versions, anyone with access): an entry that is
    not `{signal: [fill >= 0, 0 | 1], ...}` is treated as absent rather than trusted.
    """
    try:
        name = replica.decode() if isinstance(replica, bytes) else str(replica)
        value = orjson.loads(raw)
    except (ValueError, TypeError):
        return None
    if not isinstance(value, dict):
        return None
    for report in value.values():
        if not isinstance(report, list) or len(report) != 2:
            return None
        fill, failing = report
        if isinstance(fill, bool) or not isinstance(fill, int | float):
            return None
        if not (math.isfinite(fill) and fill >= 0) or failing not in (0, 1):
            return None
        report[0] = min(float(fill), 1.0)  # a fill beyond full says nothing more
    return name, value
