"""Between the receivers and the batchers: one decoded OTLP request in, one outcome out.

Both transports call `Ingest.export` with a decoded request. It converts the request into the
payload of the signal's sink (pure code in `ingestd.convert`), hands that to the sink's
batcher as one part, and, in `ack: committed` mode, waits until the part is committed.
Records a converter refuses come back as partial success; everything else is stored or the
whole request fails with a retryable error, never half of it.

Before converting, a request passes the shared-state steps (`ingestd.state`): dedup (a retry
of a request stored before is answered from Redis; one in flight elsewhere is waited for),
admission (refused at once while its sink fails on the cluster) and the tenant's rate limit.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from ingestd.batching import Batcher, Part, PartResult
from ingestd.config import DedupConfig, IngestConfig, LimitsConfig, PressureConfig
from ingestd.errors import IngestdError, SinkUnavailable
from ingestd.metrics import (
    ACK_SECONDS,
    CONVERT_NUL_REPLACED,
    RECEIVER_ACCEPTED_ITEMS,
    RECEIVER_REFUSED_ITEMS,
    RECEIVER_REJECTED_ITEMS,
)
from ingestd.state.dedup import NO_CLAIM, Claim, Outcome, RedisDedup
from ingestd.state.pressure import ClusterPressure
from ingestd.state.ratelimit import RateLimiter

log = structlog.get_logger("ingestd.ingest")


class Signal(enum.StrEnum):
    TRACES = "traces"
    METRICS = "metrics"
    LOGS = "logs"


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who sent a request and how."""

    transport: str  # "grpc" or "http"
    tenant: str = ""


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What the client hears on success: how many records were refused for good, and why."""

    rejected: int = 0
    message: str = ""


@dataclass(slots=True)
class Converted:
    """A converter's output for one request: the sink payload plus what it refused."""

    payload: Any
    items: int
    nbytes: int
    rejected: int = 0
    # reason -> count, for metrics; plus one example message for the client.
    reject_reasons: Counter[str] = field(default_factory=Counter)
    reject_example: str = ""
    # NUL characters replaced by U+FFFD (PostgreSQL cannot store them in text or jsonb).
    nul_replaced: int = 0

    def reject(self, reason: str, example: str) -> None:
        self.rejected += 1
        self.reject_reasons[reason] += 1
        if not self.reject_example:
            self.reject_example = example


Converter = Callable[[Any], Converted]


@dataclass(frozen=True, slots=True)
class Route:
    """Where one signal goes: its converter and its sink's batcher."""

    convert: Converter
    batcher: Batcher


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
    ) -> None:
        self.config = config
        self.routes = routes
        # Without them (tests, no Redis configured) each step is a no-op that admits all.
        self.dedup = dedup or RedisDedup(DedupConfig(enabled=False), None, in_flight_ttl_s=0)
        self.pressure = pressure or ClusterPressure(PressureConfig(enabled=False), None)
        self.limits = limits or RateLimiter(LimitsConfig(), None)
        # Requests being stored right now, by key: an identical retry joins the first one
        # instead of buffering the same rows twice.
        self._in_flight: dict[bytes, Part] = {}

    def accepts(self, signal: Signal) -> bool:
        return signal in self.routes

    async def export(
        self, signal: Signal, request: Any, *, key: bytes, ctx: RequestContext, wire_bytes: int
    ) -> ExportResult:
        """Store one decoded request; return the partial-success outcome.

        Raises IngestdError subclasses (Overloaded, SinkUnavailable, Rejected, StageClosed,
        PayloadTooLarge) for the receiver to map to a status. Blocks, in committed mode, until
        the request's rows are committed or `ingest.ack_timeout_s` passes.
        """
        began = time.monotonic()
        outcome = "error"
        try:
            result = await self._export(signal, request, key=key, ctx=ctx, wire_bytes=wire_bytes)
            outcome = "ok" if not result.rejected else "partial"
            return result
        except IngestdError as exc:
            outcome = type(exc).__name__
            raise
        finally:
            ACK_SECONDS.labels(signal=signal, transport=ctx.transport, outcome=outcome).observe(
                time.monotonic() - began
            )

    async def _export(
        self, signal: Signal, request: Any, *, key: bytes, ctx: RequestContext, wire_bytes: int
    ) -> ExportResult:
        # An identical request buffered here already is joined below, without asking Redis.
        claim = NO_CLAIM if key in self._in_flight else await self.dedup.begin(key)
        if claim.stored is not None:
            return ExportResult(*claim.stored)  # stored before, here or on another replica
        try:
            self.pressure.admit(signal)
            await self.limits.charge(signal, request, ctx.tenant, wire_bytes, shared=claim.redis_ok)
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
        converted = route.convert(request)
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
            RECEIVER_ACCEPTED_ITEMS.labels(signal=signal, transport=ctx.transport).inc(
                converted.items
            )
            return ExportResult(converted.rejected, converted.reject_example)

        stored = await self._wait_committed(signal, ctx, part, converted.items)
        RECEIVER_ACCEPTED_ITEMS.labels(signal=signal, transport=ctx.transport).inc(
            converted.items - stored.rejected
        )
        if stored.rejected:
            RECEIVER_REJECTED_ITEMS.labels(signal=signal, reason="sink").inc(stored.rejected)
        return ExportResult(*_outcome(converted, stored))

    async def _wait_committed(
        self, signal: Signal, ctx: RequestContext, part: Part, items: int
    ) -> PartResult:
        try:
            async with asyncio.timeout(self.config.ack_timeout_s):
                # shield: a client that goes away must not cancel a part other requests share.
                return await asyncio.shield(part.done)
        except TimeoutError:
            exc = SinkUnavailable(
                f"{signal}: not stored within {self.config.ack_timeout_s}s",
                retry_after_s=self.pressure.hint_s(signal),
            )
            self._refused(signal, ctx, items, exc)
            raise exc from None
        except IngestdError as exc:
            self._refused(signal, ctx, items, exc)
            raise

    def _count_rejects(self, signal: Signal, converted: Converted) -> None:
        for reason, count in converted.reject_reasons.items():
            RECEIVER_REJECTED_ITEMS.labels(signal=signal, reason=reason).inc(count)
        if converted.nul_replaced:
            CONVERT_NUL_REPLACED.labels(signal=signal).inc(converted.nul_replaced)

    def _refused(self, signal: Signal, ctx: RequestContext, items: int, exc: IngestdError) -> None:
        RECEIVER_REFUSED_ITEMS.labels(
            signal=signal, transport=ctx.transport, reason=type(exc).__name__
        ).inc(items)


def _outcome(converted: Converted, stored: PartResult) -> Outcome:
    """What the client hears: the converter's and the sink's rejects together."""
    return Outcome(converted.rejected + stored.rejected, converted.reject_example or stored.message)
