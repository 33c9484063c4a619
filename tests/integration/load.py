"""Clients that keep exporting unique spans, retry like OTLP exporters, and keep a ledger.

The ledger records what every request was told, so a test can compare it with the rows:
every request answered OK must be stored, and no span may be stored twice.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import grpc

from tests.harness import query, retry_delay_s
from tests.samples import span_request

_TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_ids = itertools.count()


@dataclass
class Sent:
    """One request and everything its client heard about it."""

    span_ids: list[bytes]
    body: bytes
    acked: bool = False
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    unavailable_without_retry_info: int = 0


@dataclass
class Clients:
    """*count* concurrent exporters to *target*, each sending *spans* spans per request."""

    target: str
    count: int = 4
    spans: int = 20
    # A request not OK by then is left unacknowledged (the test decides what that means).
    give_up_s: float = 60.0
    sent: list[Sent] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        """Export until *stop* is set, then finish (retry) what is in flight."""
        async with grpc.aio.insecure_channel(self.target) as channel:
            export = channel.unary_unary(
                _TRACE_EXPORT, request_serializer=None, response_deserializer=None
            )
            await asyncio.gather(*(self._client(export, stop) for _ in range(self.count)))

    async def _client(self, export: grpc.aio.UnaryUnaryMultiCallable, stop: asyncio.Event) -> None:
        while not stop.is_set():
            request = span_request(self.spans, tag=f"load-{next(_ids)}")
            spans = request.resource_spans[0].scope_spans[0].spans
            sent = Sent([s.span_id for s in spans], request.SerializeToString())
            self.sent.append(sent)
            await self._deliver(export, sent)

    async def _deliver(self, export: grpc.aio.UnaryUnaryMultiCallable, sent: Sent) -> None:
        give_up_at = time.monotonic() + self.give_up_s
        while time.monotonic() < give_up_at:
            sent.attempts += 1
            try:
                await export(sent.body, timeout=10)
            except grpc.aio.AioRpcError as error:
                sent.errors.append(error.code().name)
                delay = retry_delay_s(error)
                if error.code() is grpc.StatusCode.UNAVAILABLE and delay is None:
                    sent.unavailable_without_retry_info += 1
                await asyncio.sleep(min(delay or 0.2, 0.5))
            else:
                sent.acked = True
                return

    @property
    def acked(self) -> list[Sent]:
        return [s for s in self.sent if s.acked]

    def errors(self) -> set[str]:
        return {code for s in self.sent for code in s.errors}


def stored_counts(dsn: str) -> dict[bytes, int]:
    """How many rows each span id has in `traces`."""
    return {bytes(k): n for k, n in query(dsn, "SELECT spanid, count(*) FROM traces GROUP BY 1")}


def assert_exactly_once(dsn: str, clients: Clients) -> None:
    """Every acknowledged span is stored exactly once, and no span at all is stored twice."""
    counts = stored_counts(dsn)
    missing = [sid.hex() for s in clients.acked for sid in s.span_ids if counts.get(sid) != 1]
    assert not missing, f"{len(missing)} acknowledged spans not stored exactly once"
    twice = [sid.hex() for sid, n in counts.items() if n > 1]
    assert not twice, f"{len(twice)} spans stored more than once"
