"""Steady OTLP load that behaves like the SDK exporters, writing every answer into the ledger.

One client per (signal, transport): it builds a request of `records` records, each tagged with
`chaos.run` and a unique `chaos.seq`, exports it, and retries like an OTLP exporter: retryable
statuses (gRPC UNAVAILABLE, RESOURCE_EXHAUSTED with RetryInfo, ...; HTTP 429/502/503/504) and
lost connections are retried with exponential backoff, honouring RetryInfo / Retry-After, until
`give_up_s` has passed; any other status is final. Clients send one request at a time (the
exporters' default), with a short pause between requests to bound the load on two shared cores.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from ingestd.model import Signal
from ingestd.signals import SIGNALS
from tests.chaos.ledger import Ledger, Outcome, Request
from tests.harness import retry_delay_s

# The OTLP exporters' retryable gRPC codes (RESOURCE_EXHAUSTED only with RetryInfo).
_RETRYABLE_GRPC = {
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
}
_RETRYABLE_HTTP = {429, 502, 503, 504}

PAST_NS = 2 * 365 * 86400 * 10**9  # "far in the past": two years
FUTURE_NS = 10 * 86400 * 10**9  # "far in the future": ten days (> ingest.max_future_skew_s)


@dataclass
class LoadConfig:
    """How much load: per client, one request of `records` records at a time."""

    records: int = 40
    pause_s: float = 0.05
    give_up_s: float = 45.0
    attempt_timeout_s: float = 10.0
    max_backoff_s: float = 2.0
    # Clock skew: every request also carries records two years old (stored) and ten days
    # ahead (refused as partial success).
    skewed: bool = False


def _kv(key: str, value: str) -> KeyValue:
    kv = KeyValue(key=key)
    kv.value.string_value = value
    return kv


def build(signal: Signal, run_id: str, seqs: list[str], skew: dict[str, int]) -> Any:
    """An export request whose records carry `chaos.run` and their `chaos.seq`."""
    now = time.time_ns()
    resource = [_kv("service.name", "chaos"), _kv("chaos.run", run_id)]
    if signal is Signal.TRACES:
        request = trace_service_pb2.ExportTraceServiceRequest()
        rs = request.resource_spans.add()
        rs.resource.attributes.extend(resource)
        scope = rs.scope_spans.add()
        scope.scope.name = "chaos"
        for seq in seqs:
            t = now + skew.get(seq, 0)
            span = scope.spans.add(
                trace_id=os.urandom(16),
                span_id=os.urandom(8),
                name="chaos-op",
                kind=2,
                start_time_unix_nano=t - 1_000_000,
                end_time_unix_nano=t,
            )
            span.attributes.extend([_kv("chaos.run", run_id), _kv("chaos.seq", seq)])
        return request
    if signal is Signal.METRICS:
        request = metrics_service_pb2.ExportMetricsServiceRequest()
        rm = request.resource_metrics.add()
        rm.resource.attributes.extend(resource)
        metric = rm.scope_metrics.add().metrics.add(name="chaos.gauge", unit="1")
        for i, seq in enumerate(seqs):
            point = metric.gauge.data_points.add(time_unix_nano=now + skew.get(seq, 0), as_int=i)
            point.attributes.extend([_kv("chaos.run", run_id), _kv("chaos.seq", seq)])
        return request
    request = logs_service_pb2.ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.extend(resource)
    scope_logs = rl.scope_logs.add()
    for seq in seqs:
        record = scope_logs.log_records.add(
            time_unix_nano=now + skew.get(seq, 0), severity_number=9, severity_text="INFO"
        )
        record.body.string_value = f"chaos record {seq}"
        record.attributes.extend([_kv("chaos.run", run_id), _kv("chaos.seq", seq)])
    return request


class Client:
    """One exporter of one signal over one transport, feeding the ledger."""

    def __init__(
        self,
        ledger: Ledger,
        signal: Signal,
        transport: str,
        *,
        grpc_port: int,
        http_port: int,
        config: LoadConfig,
        name: str,
    ) -> None:
        self.ledger = ledger
        self.signal = signal
        self.transport = transport
        self.grpc_target = f"127.0.0.1:{grpc_port}"
        self.http_url = f"http://127.0.0.1:{http_port}/v1/{signal.value}"
        self.config = config
        self.name = name

    async def run(self, stop: asyncio.Event) -> None:
        """Export until *stop* is set; the request in flight is finished (or given up)."""
        if self.transport == "grpc":
            async with grpc.aio.insecure_channel(self.grpc_target) as channel:
                call = channel.unary_unary(
                    SIGNALS[self.signal].grpc_method,
                    request_serializer=None,
                    response_deserializer=None,
                )
                await self._loop(stop, lambda body: self._grpc(call, body))
        else:
            timeout = aiohttp.ClientTimeout(total=self.config.attempt_timeout_s)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                await self._loop(stop, lambda body: self._http(session, body))

    async def _loop(self, stop: asyncio.Event, send: Any) -> None:
        while not stop.is_set():
            seqs = self.ledger.new_seqs(self.name, self.config.records)
            skew: dict[str, int] = {}
            if self.config.skewed:
                for i, seq in enumerate(seqs):
                    if i % 4 == 1:
                        skew[seq] = -PAST_NS
                    elif i % 4 == 3:
                        skew[seq] = FUTURE_NS
            body = build(self.signal, self.ledger.run_id, seqs, skew).SerializeToString()
            refused = frozenset(s for s, d in skew.items() if d > 0)
            request = self.ledger.add(Request(self.signal, self.transport, seqs, refused))
            await self._deliver(request, body, send)
            await asyncio.sleep(self.config.pause_s)

    async def _deliver(self, request: Request, body: bytes, send: Any) -> None:
        give_up_at = time.monotonic() + self.config.give_up_s
        backoff = 0.1
        while True:
            request.attempts += 1
            status, retryable, hint, answer = await send(body)
            request.heard.append(status)
            request.last_status = status
            if answer is not None:
                request.outcome = Outcome.OK
                request.rejected = getattr(
                    answer.partial_success, SIGNALS[self.signal].rejected_field
                )
                return
            if not retryable:
                request.outcome = Outcome.REJECTED
                return
            delay = hint if hint is not None else backoff * random.uniform(0.8, 1.2)
            delay = min(delay, 5.0)
            backoff = min(backoff * 2, self.config.max_backoff_s)
            if time.monotonic() + delay > give_up_at:
                request.outcome = Outcome.GAVE_UP
                return
            await asyncio.sleep(delay)

    async def _grpc(self, call: Any, body: bytes) -> tuple[str, bool, float | None, Any]:
        try:
            data = await call(body, timeout=self.config.attempt_timeout_s)
        except grpc.aio.AioRpcError as error:
            code = error.code()
            hint = retry_delay_s(error)
            retryable = code in _RETRYABLE_GRPC or (
                code is grpc.StatusCode.RESOURCE_EXHAUSTED and hint is not None
            )
            return code.name, retryable, hint, None
        return "OK", False, None, SIGNALS[self.signal].response_type.FromString(data)

    async def _http(
        self, session: aiohttp.ClientSession, body: bytes
    ) -> tuple[str, bool, float | None, Any]:
        headers = {"Content-Type": "application/x-protobuf"}
        try:
            async with session.post(self.http_url, data=body, headers=headers) as reply:
                data = await reply.read()
                if reply.status == 200:
                    return "200", False, None, SIGNALS[self.signal].response_type.FromString(data)
                hint = _retry_after(reply.headers.get("Retry-After"))
                return str(reply.status), reply.status in _RETRYABLE_HTTP, hint, None
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            return f"conn:{type(exc).__name__}", True, None, None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


async def run_load(
    ledger: Ledger,
    *,
    grpc_port: int,
    http_port: int,
    config: LoadConfig,
    stop: asyncio.Event,
    signals: tuple[Signal, ...] = tuple(Signal),
) -> None:
    """One client per signal and transport until *stop*; returns when all have finished."""
    clients = [
        Client(
            ledger,
            signal,
            transport,
            grpc_port=grpc_port,
            http_port=http_port,
            config=config,
            name=f"{signal.value[0]}{transport[0]}",
        )
        for signal in signals
        for transport in ("grpc", "http")
    ]
    await asyncio.gather(*(c.run(stop) for c in clients))
