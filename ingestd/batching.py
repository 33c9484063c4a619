"""The per-sink batcher: a bounded buffer flushed by size, bytes or age into parallel writers.

`client -> receiver -> Batcher [bounded: items, bytes] -> writers -> BatchWriter -> server`

A request hands the batcher one `Part` (its rows for this sink) and, in `ack: committed` mode,
awaits `part.done`, which resolves only once the writer has committed the batch holding it.
Parts of many concurrent requests share one batch; a part is never split across batches, so a
request's rows commit together (the Timescale writer's exactly-once ledger relies on it).

Memory is bounded: items and bytes are counted from `submit` until the batch holding them is
finished, so a slow or retrying sink keeps its batches, the buffer fills, and `submit` refuses
new requests with `Overloaded` (a retry hint for the client) after `enqueue_timeout_s`. The
bytes of all batchers together are bounded the same way by a shared `MemoryBudget`.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from ingestd.config import BatchConfig, BufferConfig, RetryConfig
from ingestd.errors import (
    DeliveryError,
    IngestdError,
    Overloaded,
    PayloadTooLarge,
    Rejected,
    SinkUnavailable,
    StageClosed,
)
from ingestd.memory import MemoryBudget
from ingestd.model import Part, PartResult
from ingestd.observe.children import Children
from ingestd.observe.metrics import (
    BATCH_BYTES,
    BATCH_ROWS,
    BATCHER_BUFFERED_BYTES,
    BATCHER_BUFFERED_ITEMS,
    BATCHER_CAPACITY_BYTES,
    BATCHER_CAPACITY_ITEMS,
    BATCHER_DROPPED_ITEMS,
    BATCHER_FLUSHES,
    BATCHER_REFUSED_ITEMS,
    SINK_RETRIES,
    SINK_WRITE_SECONDS,
)
from ingestd.pipeline import HasStatus, remaining
from ingestd.retry import SYSTEM_CLOCK, Clock, backoff_delays

log = structlog.get_logger("ingestd.batching")


@dataclass(eq=False, slots=True)
class Batch:
    parts: list[Part]
    items: int
    nbytes: int
    reason: str
    # Unique per batch, stable across retries of the same batch.
    id: bytes = field(default_factory=lambda: os.urandom(16))
    attempt: int = 0


class BatchWriter(Protocol):
    """A sink's write side. One call writes one whole batch, all or nothing per part."""

    name: str

    async def write_batch(self, batch: Batch) -> Sequence[PartResult]:
        """Store *batch*; return one result per part, in order.

        Raises SinkUnavailable when the batch may be retried as it is (connection lost, server
        busy), and Rejected when the sink will never take any of it. Must be idempotent: a
        batch retried after an unknown outcome is stored exactly once.
        """
        ...


class Batcher:
    """A bounded buffer for one sink (one table or one data stream family)."""

    def __init__(
        self,
        name: str,
        writer: BatchWriter,
        *,
        batch: BatchConfig,
        buffer: BufferConfig,
        writers: int,
        retry: RetryConfig,
        retry_until_stopped: bool = False,
        clock: Clock = SYSTEM_CLOCK,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.name = f"batcher.{name}"
        self.sink = name
        self._writer = writer
        self._batch = batch
        self._buffer = buffer
        self._writers = writers
        self._retry = retry
        # In `ack: accepted` mode the client already has its answer: giving up on a batch
        # loses data, so retry until shutdown instead of for retry.max_elapsed_s.
        self.retry_until_stopped = retry_until_stopped
        self._clock = clock

        self._pending: collections.deque[Part] = collections.deque()
        self._pending_items = 0
        self._pending_bytes = 0
        self._held_items = 0  # pending + being written: what the limits bound
        self._held_bytes = 0
        self._space_queue: collections.deque[Part] = collections.deque()
        self._space_freed = asyncio.Event()
        self._drained = asyncio.Event()
        self._wake = asyncio.Event()
        self._ready: asyncio.Queue[Batch] = asyncio.Queue(maxsize=writers)
        # Writers waiting for a batch right now (see `flush_when_idle`).
        self._idle_writers = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: set[Batch] = set()
        self._closing = False
        self._stop_deadline: float | None = None
        self._last_error: str = ""
        self._counts: collections.Counter[str] = collections.Counter()
        # The mean fill of this sink's buffers on all replicas (`note_cluster_fill`), so that
        # retry hints follow the cluster's pressure, not only this replica's.
        self._cluster_fill = 0.0
        # The process-wide cap over every batcher (memory.max_buffered_bytes).
        self._budget = budget or MemoryBudget(0)
        self._budget.on_release(self._signal_space)

        BATCHER_CAPACITY_ITEMS.labels(sink=name).set(buffer.max_items)
        BATCHER_CAPACITY_BYTES.labels(sink=name).set(buffer.max_bytes)
        self._g_items = BATCHER_BUFFERED_ITEMS.labels(sink=name)
        self._g_bytes = BATCHER_BUFFERED_BYTES.labels(sink=name)
        # Bound once: with idle writers every request is a batch, so these run per request.
        self._h_rows = BATCH_ROWS.labels(sink=name)
        self._h_bytes = BATCH_BYTES.labels(sink=name)
        self._flushes = Children(BATCHER_FLUSHES)
        self._write_seconds = Children(SINK_WRITE_SECONDS)

    # -- the request side ---------------------------------------------------------------------

    async def submit(self, part: Part, *, timeout_s: float) -> Part:
        """Buffer *part*, waiting up to *timeout_s* for room.

        Raises Overloaded when there is no room in time, PayloadTooLarge when the part could
        never fit, StageClosed once stopping. The caller may then await `part.done`.
        """
        if self._closing:
            raise StageClosed(f"{self.sink}: shutting down", retry_after_s=1.0)
        if part.items > self._buffer.max_items or part.nbytes > self._buffer.max_bytes:
            self._refuse(part, "too_large")
            raise PayloadTooLarge(
                f"{self.sink}: a request of {part.items} items / {part.nbytes} bytes exceeds "
                f"the buffer ({self._buffer.max_items} items / {self._buffer.max_bytes} bytes)"
            )
        if self._space_queue or not self._fits(part):
            await self._wait_for_room(part, timeout_s)
        part.enqueued_at = self._clock.now()
        self._pending.append(part)
        self._pending_items += part.items
        self._pending_bytes += part.nbytes
        self._held_items += part.items
        self._held_bytes += part.nbytes
        self._budget.hold(part.nbytes)
        self._g_items.set(self._held_items)
        self._g_bytes.set(self._held_bytes)
        self._drained.clear()
        reason = self._reason_now()
        if reason is not None and not self._ready.full():
            # Cut here, not in the flush loop: at a steady rate with idle writers every request
            # is a batch, and waking the flush loop first costs a task switch per request.
            self._ready.put_nowait(self._counted(self._cut(reason)))
        else:
            self._wake.set()
        return part

    def _fits(self, part: Part) -> bool:
        return self._fits_here(part) and self._budget.fits(part.nbytes)

    def _fits_here(self, part: Part) -> bool:
        return (
            self._held_items + part.items <= self._buffer.max_items
            and self._held_bytes + part.nbytes <= self._buffer.max_bytes
        )

    async def _wait_for_room(self, part: Part, timeout_s: float) -> None:
        # First come, first served: a big request that waits is not starved by small ones.
        self._space_queue.append(part)
        try:
            async with asyncio.timeout(timeout_s):
                while not self._closing and not (self._space_queue[0] is part and self._fits(part)):
                    await self._space_freed.wait()
        except TimeoutError:
            if self._fits_here(part):
                self._refuse(part, "memory_full")
                raise Overloaded(
                    f"{self.sink}: the buffers of all sinks hold {self._budget.buffered} bytes "
                    f"(memory.max_buffered_bytes: {self._budget.max_bytes})",
                    retry_after_s=self.retry_hint_s(),
                ) from None
            self._refuse(part, "buffer_full")
            raise Overloaded(
                f"{self.sink}: buffer full ({self._held_items} items, {self._held_bytes} bytes)",
                retry_after_s=self.retry_hint_s(),
            ) from None
        finally:
            self._space_queue.remove(part)
            self._signal_space()
        if self._closing:
            raise StageClosed(f"{self.sink}: shutting down", retry_after_s=1.0)

    def _signal_space(self) -> None:
        # Wake every waiter once; each re-checks whether it is at the head and fits.
        self._space_freed.set()
        self._space_freed = asyncio.Event()

    def _refuse(self, part: Part, reason: str) -> None:
        BATCHER_REFUSED_ITEMS.labels(sink=self.sink, reason=reason).inc(part.items)
        self._counts[f"refused_{reason}"] += part.items

    def retry_hint_s(self) -> float:
        """How long a refused client should wait: grows with how full the buffers are."""
        fill = max(self.fill(), self._cluster_fill)
        return round(min(30.0, max(1.0, 2 * self._batch.flush_interval_s + 5.0 * fill)), 1)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        self._tasks.append(tasks.create_task(self._flush_loop(), name=f"{self.name}.flush"))
        for i in range(self._writers):
            self._tasks.append(tasks.create_task(self._write_loop(), name=f"{self.name}.w{i}"))

    async def stop(self, deadline: float) -> None:
        """Refuse new parts, flush what is buffered, wait for the writers until *deadline*.

        What is still unwritten at the deadline is failed with SinkUnavailable so that waiting
        clients retry, and counted as dropped.
        """
        if self._stop_deadline is not None:
            return
        self._closing = True
        # The deadline is in time.monotonic(); retries run on self._clock (a fake one in tests).
        self._stop_deadline = self._clock.now() + remaining(deadline)
        self._signal_space()
        self._wake.set()
        if self._held_items and self._tasks:
            try:
                async with asyncio.timeout(remaining(deadline)):
                    await self._drained.wait()
            except TimeoutError:
                pass
        leftovers = self._unfinished_parts()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._fail_leftovers(leftovers)
        # Batches being written were released as their writers were cancelled; what was still
        # queued is given back to the process-wide budget here, so other sinks' batchers that
        # are still draining see the room.
        self._budget.release(self._held_bytes)
        self._held_items = self._held_bytes = 0
        self._g_items.set(0)
        self._g_bytes.set(0)

    def _unfinished_parts(self) -> list[Part]:
        parts = list(self._pending)
        for batch in self._in_flight:
            parts.extend(batch.parts)
        while not self._ready.empty():
            parts.extend(self._ready.get_nowait().parts)
        return parts

    def _fail_leftovers(self, leftovers: list[Part]) -> None:
        if not leftovers:
            return
        error = SinkUnavailable(f"{self.sink}: not written before shutdown", retry_after_s=1.0)
        items = sum(p.items for p in leftovers if not p.done.done())
        for part in leftovers:
            if not part.done.done():
                part.done.set_exception(error)
        self._pending.clear()
        self._in_flight.clear()
        BATCHER_DROPPED_ITEMS.labels(sink=self.sink, reason="shutdown").inc(items)
        log.error("drain_incomplete", sink=self.sink, items=items, parts=len(leftovers))

    # -- flushing -----------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            reason = await self._next_flush_reason()
            await self._ready.put(self._counted(self._cut(reason)))

    def _counted(self, batch: Batch) -> Batch:
        self._counts["batches"] += 1
        self._flushes(self.sink, batch.reason).inc()
        return batch

    def _reason_now(self) -> str | None:
        """Why what is pending must be cut right now, or None (it waits: age, or a writer)."""
        if not self._pending:
            return None
        if self._pending_items >= self._batch.max_rows:
            return "size"
        if self._pending_bytes >= self._batch.max_bytes:
            return "bytes"
        if self._closing:
            return "drain"
        if self._batch.flush_when_idle and self._idle_writers > self._ready.qsize():
            # A writer has nothing to do: what is pending goes now. Under load the writers
            # stay busy and batches grow while they write (natural batching).
            return "idle"
        return None

    async def _next_flush_reason(self) -> str:
        while True:
            if self._pending:
                reason = self._reason_now()
                if reason is not None:
                    return reason
                delay = self._pending[0].enqueued_at + self._batch.flush_interval_s
                delay -= self._clock.now()
                if delay <= 0:
                    return "age"
                await self._wait_wake(delay)
            else:
                await self._wait_wake(None)

    async def _wait_wake(self, delay: float | None) -> None:
        self._wake.clear()
        if delay is None:
            await self._wake.wait()
            return
        waker = asyncio.ensure_future(self._wake.wait())
        sleeper = asyncio.ensure_future(self._clock.sleep(delay))
        try:
            await asyncio.wait((waker, sleeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()
            sleeper.cancel()

    def _cut(self, reason: str) -> Batch:
        """Take whole parts from the front up to the batch limits (always at least one)."""
        parts: list[Part] = []
        items = nbytes = 0
        while self._pending:
            head = self._pending[0]
            if parts and (
                items + head.items > self._batch.max_rows
                or nbytes + head.nbytes > self._batch.max_bytes
            ):
                break
            self._pending.popleft()
            parts.append(head)
            items += head.items
            nbytes += head.nbytes
        self._pending_items -= items
        self._pending_bytes -= nbytes
        return Batch(parts=parts, items=items, nbytes=nbytes, reason=reason)

    # -- writing ------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            self._idle_writers += 1
            if self._pending:
                self._wake.set()  # an idle writer is a reason to flush (flush_when_idle)
            try:
                batch = await self._ready.get()
            finally:
                self._idle_writers -= 1
            self._in_flight.add(batch)
            try:
                await self._write_with_retry(batch)
            finally:
                self._in_flight.discard(batch)
                self._release(batch)

    async def _write_with_retry(self, batch: Batch) -> None:
        delays = backoff_delays(self._retry)
        give_up_at = self._clock.now() + self._retry.max_elapsed_s
        while True:
            batch.attempt += 1
            began = self._clock.now()
            try:
                results = await self._writer.write_batch(batch)
            except SinkUnavailable as exc:
                self._observe(began, "unavailable")
                delay = next(delays)
                if self._out_of_time(give_up_at, delay):
                    self._fail(batch, exc, "retries_exhausted")
                    return
                SINK_RETRIES.labels(sink=self.sink).inc()
                self._counts["retries"] += 1
                self._note_error(batch, exc, delay)
                await self._clock.sleep(delay)
            except Rejected as exc:
                self._observe(began, "rejected")
                self._fail(batch, exc, "rejected")
                return
            except Exception as exc:  # a bug in a writer must not lose the batch silently
                self._observe(began, "error")
                log.exception("write_failed_unexpectedly", sink=self.sink, items=batch.items)
                wrapped = SinkUnavailable(f"{self.sink}: internal error: {exc}", retry_after_s=1)
                self._fail(batch, wrapped, "internal_error")
                return
            else:
                self._observe(began, "ok")
                self._complete(batch, results)
                return

    def _out_of_time(self, give_up_at: float, delay: float) -> bool:
        now = self._clock.now()
        if self._stop_deadline is not None and now + delay >= self._stop_deadline:
            return True
        return not self.retry_until_stopped and now + delay > give_up_at

    def _note_error(self, batch: Batch, exc: IngestdError, delay: float) -> None:
        message = exc.message[:300]
        if message != self._last_error or batch.attempt == 2:
            log.warning(
                "batch_write_retry",
                sink=self.sink,
                items=batch.items,
                attempt=batch.attempt,
                retry_in_s=round(delay, 3),
                error=message,
            )
        self._last_error = message

    def _observe(self, began: float, outcome: str) -> None:
        self._write_seconds(self.sink, outcome).observe(self._clock.now() - began)

    def _complete(self, batch: Batch, results: Sequence[PartResult]) -> None:
        if len(results) != len(batch.parts):
            raise RuntimeError(f"{self.sink}: writer returned {len(results)} results")
        self._h_rows.observe(batch.items)
        self._h_bytes.observe(batch.nbytes)
        rejected = 0
        for part, result in zip(batch.parts, results, strict=True):
            rejected += result.rejected
            if not part.done.done():
                part.done.set_result(result)
        self._counts["items_written"] += batch.items - rejected
        self._counts["items_rejected"] += rejected
        if self._last_error:
            log.info("sink_recovered", sink=self.sink, after_attempts=batch.attempt)
            self._last_error = ""
        log.debug(
            "batch_flushed",
            sink=self.sink,
            items=batch.items,
            bytes=batch.nbytes,
            parts=len(batch.parts),
            reason=batch.reason,
            attempts=batch.attempt,
        )

    def _fail(self, batch: Batch, exc: DeliveryError | IngestdError, reason: str) -> None:
        BATCHER_DROPPED_ITEMS.labels(sink=self.sink, reason=reason).inc(batch.items)
        self._counts[f"failed_{reason}"] += batch.items
        log.error(
            "batch_failed",
            sink=self.sink,
            items=batch.items,
            parts=len(batch.parts),
            attempts=batch.attempt,
            reason=reason,
            error=exc.message[:300],
        )
        for part in batch.parts:
            if not part.done.done():
                part.done.set_exception(exc)

    def _release(self, batch: Batch) -> None:
        self._held_items -= batch.items
        self._held_bytes -= batch.nbytes
        self._g_items.set(self._held_items)
        self._g_bytes.set(self._held_bytes)
        if self._held_items == 0:
            self._drained.set()
        # Wakes this batcher's waiters, and those of the other sinks held by the global cap.
        self._budget.release(batch.nbytes)

    # -- introspection ------------------------------------------------------------------------

    def fill(self) -> float:
        """How full this buffer is: the larger of its items' and bytes' share of the limits."""
        return max(
            self._held_items / self._buffer.max_items, self._held_bytes / self._buffer.max_bytes
        )

    def retrying(self) -> bool:
        """Whether a batch is being retried right now (its sink failing at this moment).

        The last error alone stays set after a batch gave up; only a batch still in flight
        after an error means the sink is failing now.
        """
        return bool(self._last_error) and bool(self._in_flight)

    def note_cluster_fill(self, fill: float) -> None:
        """The mean fill of this sink's buffers on every replica, for the retry hints."""
        self._cluster_fill = fill

    @property
    def held_items(self) -> int:
        """Items submitted and not yet finished (pending or being written)."""
        return self._held_items

    def status(self) -> dict[str, Any]:
        """Counters and fill for /status, with the writer's own when it has any."""
        writer = self._writer.status() if isinstance(self._writer, HasStatus) else {}
        return writer | {
            "held_items": self._held_items,
            "held_bytes": self._held_bytes,
            "pending_items": self._pending_items,
            "max_items": self._buffer.max_items,
            "max_bytes": self._buffer.max_bytes,
            "batches_in_flight": len(self._in_flight),
            "closing": self._closing,
            "last_error": self._last_error,
            **dict(self._counts),
        }
