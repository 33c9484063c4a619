"""Helpers for the operations tests: scrape /metrics, export with a ledger of every answer.

`Exporter` sends trace requests over gRPC (each on its own connection when asked) or HTTP and
records, per request, when its answer came and what it was: OK (with the partial-success
count), or the error with its retry hint. Tests compare that ledger with /metrics and rows.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import IngestdProcess, retry_delay_s
from tests.samples import span_request

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_ids = itertools.count()

# Without this every channel to one target shares one TCP connection (grpc's global
# subchannel pool); the worker tests need one connection per client.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def scrape(proc: IngestdProcess) -> list[tuple[str, dict[str, str], float]]:
    """Every sample on /metrics as (name, labels, value)."""
    status, body = proc.get("/metrics")
    assert status == 200, body[:300]
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    ]


def value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum of *name*'s samples whose labels include *labels* (0 when none)."""
    return sum(
        v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())
    )


def status_json(proc: IngestdProcess) -> dict[str, Any]:
    code, body = proc.get("/status")
    assert code == 200, body[:300]
    result: dict[str, Any] = json.loads(body)
    return result


@dataclass
class Answer:
    """What one request's client heard, and when (time.time(), to compare with log events)."""

    span_ids: list[bytes]
    transport: str
    at: float = 0.0
    ok: bool = False
    rejected: int = 0
    code: str = ""  # gRPC code name or HTTP status, on error
    retry_after_s: float | None = None


@dataclass
class Exporter:
    """Send trace requests to one ingestd; keep every answer."""

    grpc_target: str
    http_url: str = ""
    answers: list[Answer] = field(default_factory=list)

    def request(
        self, spans: int, *, bad_span_ids: int = 0
    ) -> trace_service_pb2.ExportTraceServiceRequest:
        request = span_request(spans, tag=f"ops-{next(_ids)}")
        for span in request.resource_spans[0].scope_spans[0].spans[:bad_span_ids]:
            span.span_id = b"\x01\x02\x03"  # not 8 bytes: refused on its own (partial success)
        return request

    async def grpc_once(
        self, channel: grpc.aio.Channel, body: bytes, span_ids: list[bytes], timeout_s: float = 10
    ) -> Answer:
        answer = Answer(span_ids, "grpc")
        export = channel.unary_unary(
            TRACE_EXPORT, request_serializer=None, response_deserializer=None
        )
        try:
            reply = await export(body, timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            answer.code = error.code().name
            answer.retry_after_s = retry_delay_s(error)
        else:
            answer.ok = True
            response = trace_service_pb2.ExportTraceServiceResponse.FromString(reply)
            answer.rejected = response.partial_success.rejected_spans
        answer.at = time.time()
        self.answers.append(answer)
        return answer

    async def http_once(
        self, session: aiohttp.ClientSession, body: bytes, span_ids: list[bytes]
    ) -> Answer:
        answer = Answer(span_ids, "http")
        try:
            async with session.post(
                f"{self.http_url}/v1/traces",
                data=body,
                headers={"Content-Type": "application/x-protobuf"},
            ) as reply:
                payload = await reply.read()
                if reply.status == 200:
                    answer.ok = True
                    response = trace_service_pb2.ExportTraceServiceResponse.FromString(payload)
                    answer.rejected = response.partial_success.rejected_spans
                else:
                    answer.code = str(reply.status)
                    hint = reply.headers.get("Retry-After")
                    answer.retry_after_s = float(hint) if hint else None
        except aiohttp.ClientError as error:
            answer.code = type(error).__name__
        answer.at = time.time()
        self.answers.append(answer)
        return answer

    def acked_span_ids(self) -> list[bytes]:
        """Ids of spans the server acknowledged (OK answers; refused spans included: the test
        sends bad ids only where it expects them refused)."""
        return [sid for a in self.answers if a.ok for sid in a.span_ids]

    def items_ok(self, transport: str) -> int:
        return sum(
            len(a.span_ids) - a.rejected for a in self.answers if a.ok and a.transport == transport
        )


def post_http(url: str, body: bytes, timeout_s: float = 5) -> tuple[int, dict[str, str], bytes]:
    """One HTTP POST of a protobuf body on a new connection: (status, headers, body)."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/x-protobuf"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


async def spans_stored(dsn: str) -> dict[bytes, int]:
    """span id -> rows in `traces`."""
    from tests.integration.load import stored_counts

    return await asyncio.to_thread(stored_counts, dsn)
