"""Memory bounds of one process: a cap over all batchers together and an RSS guard.

`receiver --(admission: refused here, before the body is read or decoded)--> Ingest -> Batcher`

Each batcher bounds itself (`sinks.*.buffer`); `MemoryBudget` bounds them together
(`memory.max_buffered_bytes`): a batcher makes a request wait for room when the buffers of all
sinks hold that much, exactly as when its own buffer is full. The receivers also count the
bodies of the requests they are decoding, and refuse new requests before reading them while
buffers plus bodies reach the cap. `MemoryGuard` samples the process's resident memory every
`memory.check_interval_ms` from /proc/self/statm (a few microseconds; never per request) and
refuses new requests the same way while it is above `memory.max_rss_mib`. A refusal is an
`Overloaded` error (UNAVAILABLE + RetryInfo, HTTP 503 + Retry-After), counted by reason; it is
load shedding, not a failure, so readiness stays as it is, until shedding has gone on without a
break for `memory.unready_after_shedding_s`: then component `memory` turns unavailable and
/readyz fails, so that traffic moves to other replicas (liveness never depends on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import time
from collections.abc import Callable, Iterator

import structlog

from ingestd.config import MemoryConfig
from ingestd.errors import MemoryPressure
from ingestd.observe.health import Health, State
from ingestd.observe.metrics import (
    MEMORY_HELD_BYTES,
    MEMORY_HELD_LIMIT_BYTES,
    MEMORY_REFUSED_REQUESTS,
    MEMORY_RSS_LIMIT_BYTES,
    MEMORY_SHEDDING,
    PROCESS_RSS,
)
from ingestd.pipeline import cancel_and_wait
from ingestd.retry import SYSTEM_CLOCK, Clock
from ingestd.workers import cgroup

log = structlog.get_logger("ingestd.memory")

MiB = 1024 * 1024
# The health component that reports continuous shedding (readiness).
COMPONENT = "memory"
_PAGE = os.sysconf("SC_PAGE_SIZE")
# Of the container's memory limit, the share the workers' RSS may reach before they refuse new
# data; the rest covers the supervisor and the overshoot of requests admitted before the bound
# was crossed and of grpc's own receive buffers (5-23 % of the bound, measured in
# tests/integration/test_memory_guard.py).
_AUTO_SHARE = 0.70
# How long a refused client is told to wait: long enough for buffers to drain a few batches.
_RETRY_AFTER_S = 2.0
# RSS grown this much since the last trim, with nothing buffered or admitted, is trimmed.
_IDLE_GROWTH = 4 * MiB
# The sampling task's period while quiet (nothing admitted, buffered or shed since the last
# reading): RSS cannot grow much by itself then, and a request arriving reads RSS itself when the
# reading is older than check_interval_ms (`refusal`), so no admission sees an older reading.
# 5 readings a second cost an idle worker ~1.7 of its ~4.3 ms of CPU a second (py-spy,
# 2026-12-05, dev machine); one every 2 s keeps the gauge fresh for any scrape interval.
IDLE_INTERVAL_S = 2.0
# A shedding episode ends after this long without the bound crossed.
_EPISODE_QUIET_S = 1.0
# Between two samples the guard expects this much more RSS per body byte it admitted: the body,
# the decoded request and its converted rows together (measured on traces: 24 requests of
# 1.1 MB in flight took 177 MiB, 6.7x; tests/integration/test_memory_guard.py). Without it, a
# crowd of large requests arriving at once (clients retrying after the same hint) would all be
# admitted before the next sample.
_RSS_PER_BODY_BYTE = 6
# The typical body: a moving average of the sizes read, starting at a 512-span request.
_FIRST_TYPICAL_BODY = 256 * 1024
_TYPICAL_WEIGHT = 0.1


class MemoryBudget:
    """Bytes held by every batcher of the process, and by request bodies being decoded."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.buffered = 0
        self.decoding = 0
        # Body bytes of requests admitted since the last RSS sample (not in that sample yet),
        # estimated at admission from the typical body (the real size is known only later).
        self.since_sample = 0.0
        self.typical_body = float(_FIRST_TYPICAL_BODY)
        self._waiters: list[Callable[[], None]] = []

    def fits(self, nbytes: int) -> bool:
        """Whether the batchers may take *nbytes* more (always true without a cap)."""
        return not self.max_bytes or self.buffered + nbytes <= self.max_bytes

    @property
    def held(self) -> int:
        """Bytes held now: buffered plus bodies being read or decoded."""
        return self.buffered + self.decoding

    def fits_decoding(self, nbytes: int) -> bool:
        """Whether a body of *nbytes* more stays within the cap (always true without one)."""
        return not self.max_bytes or self.held + nbytes <= self.max_bytes

    @property
    def full(self) -> bool:
        return bool(self.max_bytes) and self.buffered + self.decoding >= self.max_bytes

    def on_release(self, wake: Callable[[], None]) -> None:
        """Call *wake* whenever bytes are released (a batcher waiting for room re-checks)."""
        self._waiters.append(wake)

    def hold(self, nbytes: int) -> None:
        self.buffered += nbytes
        MEMORY_HELD_BYTES.set(self.buffered + self.decoding)

    def release(self, nbytes: int) -> None:
        self.buffered -= nbytes
        MEMORY_HELD_BYTES.set(self.buffered + self.decoding)
        for wake in self._waiters:
            wake()

    @contextlib.contextmanager
    def decoding_body(self, nbytes: int, extra: int = 0) -> Iterator[None]:
        """Count a request body of *nbytes* (and *extra* bytes beside it: a reservation, the
        parsed messages) from when it is read until the request is answered. Only bodies
        move the typical body size."""
        held = nbytes + extra
        self.decoding += held
        if nbytes:
            self.typical_body += (nbytes - self.typical_body) * _TYPICAL_WEIGHT
        MEMORY_HELD_BYTES.set(self.buffered + self.decoding)
        try:
            yield
        finally:
            self.decoding -= held
            MEMORY_HELD_BYTES.set(self.buffered + self.decoding)


def read_rss_bytes() -> int:
    """This process's resident set size, from /proc/self/statm (pages -> bytes)."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def rss_limit_bytes(config: MemoryConfig, workers: int, limit: int | None = None) -> int:
    """The RSS guard's bound for one process; 0 when there is none."""
    if config.max_rss_mib == "auto":
        container = limit if limit is not None else cgroup.memory_limit()
        return int(container * _AUTO_SHARE / workers) if container else 0
    return config.max_rss_mib * MiB


class MemoryGuard:
    """A stage that samples RSS and answers, per request, whether new data may come in."""

    name = "memory"

    def __init__(
        self,
        config: MemoryConfig,
        *,
        workers: int = 1,
        read_rss: Callable[[], int] = read_rss_bytes,
        container_limit: int | None = None,
        clock: Clock = SYSTEM_CLOCK,
        health: Health | None = None,
    ) -> None:
        self.config = config
        self._health = health
        # When the current shedding episode (any reason) began; None while not shedding.
        self._shedding_since: float | None = None
        if health is not None:
            health.register(COMPONENT)
        self.budget = MemoryBudget(int(config.max_buffered_bytes))
        self.max_rss = rss_limit_bytes(config, workers, container_limit)
        self.rss = 0
        self.rss_over = False
        self._read_rss = read_rss
        self._clock = clock
        self._interval_s = config.check_interval_ms / 1000
        self._sampled_at = -1e9
        self.quiet = False
        self._task: asyncio.Task[None] | None = None
        self._trimmed_at = 0.0
        self._malloc_trim = _malloc_trim()
        pin_mmap_threshold()
        self._rss_after_trim = read_rss()
        self._shedding: dict[str, bool] = {"rss": False, "held_bytes": False}
        self._over_at: dict[str, float] = {}
        MEMORY_RSS_LIMIT_BYTES.set(self.max_rss)
        MEMORY_HELD_LIMIT_BYTES.set(self.budget.max_bytes)
        for reason in self._shedding:
            MEMORY_SHEDDING.labels(reason=reason).set(0)

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        if self._health is not None:
            self._health.set(COMPONENT, State.OK)
        self.sample()
        log.info(
            "memory_limits",
            max_buffered_bytes=self.budget.max_bytes,
            max_rss_bytes=self.max_rss,
            rss_bytes=self.rss,
        )
        self._task = tasks.create_task(self._loop(), name="memory")

    async def stop(self, deadline: float) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.next_sample_in_s())
            self.sample()

    def next_sample_in_s(self) -> float:
        """The sampling task's next sleep: `check_interval_ms`, or IDLE_INTERVAL_S while quiet."""
        return max(self._interval_s, IDLE_INTERVAL_S) if self.quiet else self._interval_s

    def sample(self) -> None:
        """Read RSS now; note (log once, gauge) when the guard turns on or off."""
        self._sampled_at = self._clock.now()
        self.rss = self._read_rss()
        idle = self.budget.since_sample == 0 and not (self.budget.buffered or self.budget.decoding)
        self.budget.since_sample = 0
        if (
            idle
            and self._malloc_trim is not None
            and self.rss > self._rss_after_trim + _IDLE_GROWTH
        ):
            # Quiet after a load: hand what malloc kept of freed requests back to the system, so
            # that RSS returns near its idle size instead of keeping the peak (once per episode).
            self._malloc_trim(0)
            before, self.rss = self.rss, self._read_rss()
            self._rss_after_trim = self.rss
            log.info("memory_trimmed", rss_before_bytes=before, rss_bytes=self.rss)
        PROCESS_RSS.set(self.rss)
        over = bool(self.max_rss) and self.rss > self.max_rss
        if over and self._malloc_trim is not None and time.monotonic() - self._trimmed_at > 1.0:
            # Freed request bodies often stay in malloc's heap; hand them back before deciding
            # that the process really holds that much (a few ms, at most once a second).
            self._trimmed_at = time.monotonic()
            self._malloc_trim(0)
            self.rss = self._read_rss()
            over = self.rss > self.max_rss
        self.rss_over = over
        self._note("rss", over)
        self._note("held_bytes", self.budget.full)
        self._judge_readiness()
        self.quiet = idle and not self.rss_over and not any(self._shedding.values())

    def _judge_readiness(self) -> None:
        """Unready after `unready_after_shedding_s` of shedding without a break (see there)."""
        now = self._clock.now()
        if not any(self._shedding.values()):
            self._shedding_since = None
        elif self._shedding_since is None:
            self._shedding_since = now
        if self._health is None or not self.config.unready_after_shedding_s:
            return
        since = self._shedding_since
        if since is not None and now - since >= self.config.unready_after_shedding_s:
            reasons = ", ".join(r for r, on in self._shedding.items() if on)
            self._health.set(
                COMPONENT,
                State.UNAVAILABLE,
                f"refusing new requests for memory ({reasons}) for {now - since:.0f} s",
            )
        else:
            self._health.set(COMPONENT, State.OK)

    def _note(self, reason: str, over: bool) -> None:
        """Track shedding episodes: one that starts is logged at once; it ends (and is logged)
        only after a quiet second, so that memory hovering at the bound is one episode, not
        an event every sample."""
        now = self._clock.now()
        if over:
            self._over_at[reason] = now
        if self._shedding[reason] == over or (
            not over and now - self._over_at.get(reason, 0.0) < _EPISODE_QUIET_S
        ):
            return
        self._shedding[reason] = over
        MEMORY_SHEDDING.labels(reason=reason).set(1 if over else 0)
        log.warning(
            "memory_shedding" if over else "memory_shedding_ended",
            reason=reason,
            rss_bytes=self.rss,
            max_rss_bytes=self.max_rss,
            held_bytes=self.budget.buffered + self.budget.decoding,
            max_held_bytes=self.budget.max_bytes,
        )

    def refusal(self, reserved: int | None = None) -> MemoryPressure | None:
        """The error to refuse a new request with, or None to let it in (and count its
        *reserved* body, or a typical one when unknown, toward RSS until the next sample).
        Per request: a few comparisons."""
        if self.max_rss and self._clock.now() - self._sampled_at > self._interval_s:
            # The sampling task runs late while the event loop converts large requests, which
            # is exactly when memory grows: a request arriving then takes the sample itself.
            self.sample()
        budget = self.budget
        if self.rss_over or (
            self.max_rss and self.rss + _RSS_PER_BODY_BYTE * budget.since_sample > self.max_rss
        ):
            MEMORY_REFUSED_REQUESTS.labels(reason="rss").inc()
            return MemoryPressure(
                f"memory: resident {self.rss // MiB} MiB over {self.max_rss // MiB} MiB",
                retry_after_s=_RETRY_AFTER_S,
            )
        if self.budget.full or (
            reserved and not self.budget.fits_decoding(reserved) and self.budget.held
        ):
            MEMORY_REFUSED_REQUESTS.labels(reason="held_bytes").inc()
            return MemoryPressure(
                f"memory: {self.budget.buffered + self.budget.decoding} bytes held, cap "
                f"{self.budget.max_bytes}",
                retry_after_s=_RETRY_AFTER_S,
            )
        # A declared body counts in full; a compressed one inflates, so never less than typical.
        budget.since_sample += max(reserved or 0, budget.typical_body)
        return None

    def status(self) -> dict[str, object]:
        """For /status."""
        return {
            "rss_bytes": self.rss,
            "max_rss_bytes": self.max_rss,
            "buffered_bytes": self.budget.buffered,
            "decoding_bytes": self.budget.decoding,
            "max_buffered_bytes": self.budget.max_bytes,
            "shedding": [reason for reason, on in self._shedding.items() if on],
        }


# glibc's mallopt parameter number for the mmap threshold (malloc.h M_MMAP_THRESHOLD).
_M_MMAP_THRESHOLD = -3
# Blocks from this size up are mmap'd, and so given back to the kernel when freed.
MMAP_THRESHOLD_BYTES = 1 << 20


def pin_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold at `MMAP_THRESHOLD_BYTES` (once per process; False where the
    libc has no mallopt).

    glibc starts at 128 KiB and raises the threshold to the size of each mmap'd block freed,
    up to 32 MiB: a process that has converted a few large requests then takes their payloads
    (the native codec's 1 MiB segments, COPY and bulk buffers) from the heap, where a freed
    block stays resident. Pinned, a large request's memory comes and goes with it: parse
    memory measured 0.35 / 0.33 / 0.32x the request (traces / metrics / logs, native) pinned
    at 1 MiB against 1.39 / 3.15 / 4.47x at 32 MiB (docs/native.md "Parse memory").
    Allocations below 1 MiB (an SDK-sized request, its rows) are unaffected.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None (musl and other libcs have none)."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim
