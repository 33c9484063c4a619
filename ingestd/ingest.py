"""Between the receivers and the batchers: one decoded OTLP request in, one outcome out.

Both transports call `Ingest.export` with a decoded request. It converts the request into the
payload of the signal's sink (pure code in `ingestd.convert`), hands that to the sink's
batcher as one part, and, in `ack: committed` mode, waits until the part is committed.
Records a converter refuses come back as partial success; everything else is stored or the
whole request fails with a retryable error, never half of it.

Before converting, a request passes the shared-state steps (`ingestd.state`): dedup (a retry
of a request stored before is answered from Redis; one in flight elsewhere is waited for),
admission (refused at once while its sink fails on the cluster) and the tenant's rate limit.

Even earlier, before a receiver reads or decodes a body, `admission_error` refuses new requests
while the process drains (after SIGTERM) or is over a memory bound (`ingestd.memory`). During
the drain, requests still waiting for their commit at the answer deadline are answered
UNAVAILABLE (`begin_drain`), so every client hears back before the process exits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog

from ingestd.batching import Batcher
from ingestd.config import DedupConfig, IngestConfig, LimitsConfig, PressureConfig
from ingestd.convert.limits import Shape, check_structure, request_limits
from ingestd.errors import IngestdError, SinkUnavailable, StageClosed
from ingestd.memory import MemoryGuard
from ingestd.model import (
    Converted,
    Converter,
    ExportResult,
    Part,
    PartResult,
    RequestContext,
    Signal,
)
from ingestd.observe.children import Children
from ingestd.observe.metrics import (
    ACK_SECONDS,
    CONVERT_NUL_REPLACED,
    DEDUP_REQUESTS,
    RECEIVER_ACCEPTED_ITEMS,
    RECEIVER_REFUSED_ITEMS,
    RECEIVER_REJECTED_ITEMS,
)
from ingestd.pipeline import remaining
from ingestd.receiver.decode import parse_protobuf
from ingestd.signals import SIGNALS
from ingestd.state.dedup import NO_CLAIM, Claim, Outcome, RedisDedup
from ingestd.state.pressure import ClusterPressure
from ingestd.state.ratelimit import RateLimiter

log = structlog.get_logger("ingestd.ingest")

# Threads for the large requests of a thread-safe converter (the native codec): a small pool,
# conversions beyond the cores only queue (one worker process per core is the way to more CPU).
CONVERT_THREADS = min(4, os.cpu_count() or 1)

# The labelled children every request touches, bound once (observe.children).
_ACK_SECONDS = Children(ACK_SECONDS)
_ACCEPTED = Children(RECEIVER_ACCEPTED_ITEMS)
_REFUSED = Children(RECEIVER_REFUSED_ITEMS)
_REJECTED = Children(RECEIVER_REJECTED_ITEMS)
_NUL_REPLACED = Children(CONVERT_NUL_REPLACED)
_JOINED = DEDUP_REQUESTS.labels(outcome="joined")


class Ingest:
    """The request side of the pipeline, shared by the gRPC and HTTP receivers."""

    def __init__(
        self,
        config: IngestConfig,
        routes: dict[Signal, Route],
        *,
        dedup: RedisDedup | None = None,
        pressure: ClusterPressure | None = None,
        limits: RateLimiter | None = None,
        memory: MemoryGuard | None = None,
        count_application: Callable[[str, str, int], None] | None = None,
    ) -> None:
        """*count_application(application_id, signal, items)* is told the items accepted per
        request (ingestd.appkeys: the per-application counts of /status, metrics and logs)."""
        self.config = config
        self.count_application = count_application
        self.routes = routes
        # Without them (tests, no Redis configured) each step is a no-op that admits all.
        self.dedup = dedup or RedisDedup(DedupConfig(enabled=False), None, in_flight_ttl_s=0)
        self.pressure = pressure or ClusterPressure(PressureConfig(enabled=False), None)
        self.limits = limits or RateLimiter(LimitsConfig(), None)
        # Each signal is admitted while its batcher has room and its sink answers.
        for signal, route in routes.items():
            self.pressure.watch(signal, route.batcher, SIGNALS[signal].sink)
        self.memory = memory
        # Requests being stored right now, by key: an identical retry joins the first one
        # instead of buffering the same rows twice.
        self._in_flight: dict[bytes, Part] = {}
        # Requests waiting for their commit, so that a drain can answer them by its deadline.
        self._waiters: set[asyncio.Future[PartResult]] = set()
        self.draining = False
        self._gave_up = False
        self.request_limits = request_limits(config)
        # Signals whose converter reads protobuf bytes (the native codec), decided once here.
        self._bytes_signals = frozenset(
            signal
            for signal, route in routes.items()
            if getattr(route.convert, "takes_bytes", False)
        )
        # Conversion threads for requests of at least `ingest.convert_in_thread_bytes`
        # (`_convert`): one for the Python reference's large converter (its caches are used by one
        # request at a time), CONVERT_THREADS for a thread-safe one (the native codec releases the
        # GIL). Created on first use.
        self._converting: dict[bool, concurrent.futures.ThreadPoolExecutor] = {}

    def accepts(self, signal: Signal) -> bool:
        return signal in self.routes

    def takes_bytes(self, signal: Signal) -> bool:
        """Whether *signal*'s converter reads protobuf bytes (the native codec)."""
        return signal in self._bytes_signals

    def _message(self, signal: Signal, body: bytes) -> Any:
        """What `export` reads of a protobuf *body*: the bytes themselves when only the native
        codec reads it (no upb parse: ~0.06 ms per 512 spans), else the parsed message. The
        native decoder refuses exactly what upb refuses (the differential suite holds them so),
        so a bad body is BadRequest either way."""
        if signal in self._bytes_signals and not self.limits.active:
            return body
        return parse_protobuf(signal, body)

    def admission_error(self, reserved: int | None = None) -> IngestdError | None:
        """Why a new request must be refused before its body is read or decoded, or None.

        *reserved*: the body size the request declares (None: unknown, a typical body is
        assumed). Called by the receivers for every request; a few comparisons when all is well.
        """
        if self.draining:
            return StageClosed("shutting down; retry on another replica", retry_after_s=1.0)
        if self.memory is not None:
            return self.memory.refusal(reserved)
        return None

    def structure(self, signal: Signal, body: bytes) -> Shape:
        """Count *body*'s resources, scopes and records on the wire before it is parsed;
        PayloadTooLarge past `ingest.max_*_per_request` (see `convert.limits`)."""
        return check_structure(signal, body, self.request_limits)

    @contextlib.contextmanager
    def decoding(self, nbytes: int, *, extra: int = 0) -> Iterator[None]:
        """Count a request body (and *extra* bytes: a reservation before the body is read, the
        messages parsing allocates) against the memory cap while it is decoded and stored."""
        if self.memory is None:
            yield
            return
        with self.memory.budget.decoding_body(nbytes, extra):
            yield

    def begin_drain(self, answer_by: float) -> None:
        """Refuse new requests from now on; answer UNAVAILABLE at *answer_by* (monotonic)
        every request still waiting for its commit then. Idempotent."""
        if self.draining:
            return
        self.draining = True
        delay = max(0.0, answer_by - time.monotonic())
        asyncio.get_running_loop().call_later(delay, self._give_up)

    def _give_up(self) -> None:
        self._gave_up = True
        if self._waiters:
            log.warning("requests_unanswered_at_drain_deadline", requests=len(self._waiters))
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_exception(_not_stored_before_shutdown())

    async def export(
        self,
        signal: Signal,
        request: Any,
        *,
        key: bytes,
        ctx: RequestContext,
        wire_bytes: int,
        body: bytes | None = None,
    ) -> ExportResult:
        """Store one decoded request; return the partial-success outcome.

        *body*, the request's decompressed protobuf bytes when it came as protobuf, is what a
        converter that `takes_bytes` (the native codec) converts instead of the message.
        *request* None: parse *body* here, only if something reads the message (the Python
        codec, the rate limits' charges); BadRequest when it is not a valid request.

        Raises IngestdError subclasses (Overloaded, SinkUnavailable, Rejected, StageClosed,
        PayloadTooLarge) for the receiver to map to a status. Blocks, in committed mode, until
        the request's rows are committed or `ingest.ack_timeout_s` passes.
        """
        began = time.monotonic()
        outcome = "error"
        try:
            if request is None:
                assert body is not None
                request = self._message(signal, body)
            result = await self._export(
                signal, request, key=key, ctx=ctx, wire_bytes=wire_bytes, body=body
            )
            outcome = "ok" if not result.rejected else "partial"
            return result
        except IngestdError as exc:
            outcome = type(exc).__name__
            raise
        finally:
            _ACK_SECONDS(signal, ctx.transport, outcome).observe(time.monotonic() - began)

    async def _export(
        self,
        signal: Signal,
        request: Any,
        *,
        key: bytes,
        ctx: RequestContext,
        wire_bytes: int,
        body: bytes | None,
    ) -> ExportResult:
        # An identical request buffered here already is joined below, without asking Redis.
        if key in self._in_flight:
            _JOINED.inc()
            claim = NO_CLAIM
        else:
            claim = await self.dedup.begin(key)
        if claim.stored is not None:
            return ExportResult(*claim.stored)  # stored before, here or on another replica
        try:
            self.pressure.admit(signal)
            if isinstance(request, bytes) and self.limits.active:  # limits turned on meanwhile
                request = parse_protobuf(signal, request)
            await self.limits.charge(signal, request, ctx.tenant, wire_bytes, shared=claim.redis_ok)
            if body is not None and signal in self._bytes_signals:
                request = body
            return await self._store(
                signal, request, key=key, ctx=ctx, wire_bytes=wire_bytes, claim=claim
            )
        finally:
            self.dedup.release(claim)  # a no-op once settled: finished, or following its part

    async def _store(
        self,
        signal: Signal,
        request: Any,
        *,
        key: bytes,
        ctx: RequestContext,
        wire_bytes: int,
        claim: Claim,
    ) -> ExportResult:
        route = self.routes[signal]
        converted = await self._convert(route, request, wire_bytes, ctx.application_id)
        self._count_rejects(signal, converted)
        if converted.items == 0:
            self.dedup.finish(claim, Outcome(converted.rejected, converted.reject_example))
            return ExportResult(converted.rejected, converted.reject_example)

        part = self._in_flight.get(key) if key else None
        if part is None:
            # The buffer holds the payload, not the request: a payload bigger than the wire
            # bytes (NDJSON is ~3x OTLP protobuf) is what bounds memory and sizes the batch.
            nbytes = max(wire_bytes, converted.nbytes)
            part = Part(payload=converted.payload, items=converted.items, nbytes=nbytes, key=key)
            try:
                await route.batcher.submit(part, timeout_s=self.config.enqueue_timeout_s)
            except IngestdError as exc:
                self._refused(signal, ctx, converted.items, exc)
                raise
            if key:
                self._in_flight[key] = part
                part.done.add_done_callback(lambda _f: self._in_flight.pop(key, None))
        # From here the part's fate settles the claim: done on commit, released on failure.
        self.dedup.follow(claim, part.done, lambda stored: _outcome(converted, stored))

        if self.config.ack == "accepted":
            self._accepted(signal, ctx, converted.items)
            return ExportResult(converted.rejected, converted.reject_example)

        stored = await self._wait_committed(signal, ctx, part, converted.items)
        self._accepted(signal, ctx, converted.items - stored.rejected)
        if stored.rejected:
            _REJECTED(signal, "sink").inc(stored.rejected)
        return ExportResult(*_outcome(converted, stored))

    async def _convert(
        self, route: Route, request: Any, wire_bytes: int, application_id: str
    ) -> Converted:
        """The one place a request is converted: a request of at least
        `ingest.convert_in_thread_bytes` by the route's `convert_large` on a conversion thread
        (the event loop keeps answering meanwhile), any other inline by `convert`.

        A `thread_safe` converter (the native codec: no per-call state, the GIL released while it
        converts) is its own `convert_large` and gets CONVERT_THREADS threads, so big requests
        use more than one core; the Python reference's large converter gets one.
        """
        # An application id the caller's key names overrides the one the resources give.
        args = (request, application_id) if application_id else (request,)
        large = route.convert_large
        if large is None or wire_bytes < self.config.convert_in_thread_bytes:
            return route.convert(*args)
        safe = bool(getattr(large, "thread_safe", False))
        executor = self._converting.get(safe)
        if executor is None:
            executor = self._converting[safe] = concurrent.futures.ThreadPoolExecutor(
                max_workers=CONVERT_THREADS if safe else 1, thread_name_prefix="convert"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, large, *args)

    def _accepted(self, signal: Signal, ctx: RequestContext, items: int) -> None:
        _ACCEPTED(signal, ctx.transport).inc(items)
        if self.count_application is not None:
            self.count_application(ctx.application_id, signal, items)

    async def _wait_committed(
        self, signal: Signal, ctx: RequestContext, part: Part, items: int
    ) -> PartResult:
        try:
            async with asyncio.timeout(self.config.ack_timeout_s):
                return await self._watch(part)
        except TimeoutError:
            text = f"{signal}: not stored within {self.config.ack_timeout_s}s"
            exc = SinkUnavailable(
                text, retry_after_s=self.pressure.hint_s(signal), client_message=text
            )
            self._refused(signal, ctx, items, exc)
            raise exc from None
        except IngestdError as exc:
            self._refused(signal, ctx, items, exc)
            raise

    def _watch(self, part: Part) -> asyncio.Future[PartResult]:
        """A future that follows *part.done*, or fails at the drain's answer deadline.

        Waiting on it rather than on the part means that a client that goes away cancels only
        its own future, never a part other requests share.
        """
        waiter: asyncio.Future[PartResult] = asyncio.get_running_loop().create_future()
        if self._gave_up:
            waiter.set_exception(_not_stored_before_shutdown())
            return waiter

        def follow(done: asyncio.Future[PartResult]) -> None:
            if waiter.done():
                return
            if done.cancelled():
                waiter.set_exception(_not_stored_before_shutdown())
            elif (error := done.exception()) is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(done.result())

        part.done.add_done_callback(follow)
        self._waiters.add(waiter)
        waiter.add_done_callback(self._waiters.discard)
        return waiter

    def _count_rejects(self, signal: Signal, converted: Converted) -> None:
        for reason, count in converted.reject_reasons.items():
            _REJECTED(signal, reason).inc(count)
        if converted.nul_replaced:
            _NUL_REPLACED(signal).inc(converted.nul_replaced)

    def _refused(self, signal: Signal, ctx: RequestContext, items: int, exc: IngestdError) -> None:
        _REFUSED(signal, ctx.transport, type(exc).__name__).inc(items)


# What parsing allocates per message beyond its wire bytes (upb, measured: an empty
# ResourceSpans of 2 bytes takes ~32): charged to the memory budget with the body.
MESSAGE_BYTES = 32


@dataclass(frozen=True, slots=True)
class Route:
    """Where one signal goes: its converter and its sink's batcher.

    *convert_large*, a second converter with caches of its own, converts the requests of at
    least `ingest.convert_in_thread_bytes` in Ingest's one worker thread (so the two never share
    a cache); without it every request is converted on the event loop.
    """

    convert: Converter
    batcher: Batcher
    convert_large: Converter | None = None


def answer_deadline(deadline: float) -> float:
    """When a drain answers the requests still waiting: a little before the stop *deadline*,
    so that the answers go out and the stages behind still stop by it."""
    left = remaining(deadline)
    return time.monotonic() + left - min(2.0, 0.1 * left)


def _not_stored_before_shutdown() -> StageClosed:
    return StageClosed("not stored before shutdown; retry on another replica", retry_after_s=1.0)


def _outcome(converted: Converted, stored: PartResult) -> Outcome:
    """What the client hears: the converter's and the sink's rejects together."""
    return Outcome(converted.rejected + stored.rejected, converted.reject_example or stored.message)
