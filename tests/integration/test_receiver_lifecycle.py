"""The gRPC receiver as a stage: start/stop contract, backpressure statuses, TLS.

These run a real grpc.aio server on 127.0.0.1 in front of a real Batcher whose writer is the
in-memory RecordingWriter; no database is involved.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from ingestd.batching import Batcher
from ingestd.config import (
    BatchConfig,
    BufferConfig,
    GrpcReceiverConfig,
    IngestConfig,
    RetryConfig,
    TlsConfig,
)
from ingestd.convert.traces import TraceConverter
from ingestd.ingest import Ingest, Route
from ingestd.model import Signal
from ingestd.pipeline import deadline_in
from ingestd.receiver.otlp_grpc import OtlpGrpcReceiver
from tests.fakes import RecordingWriter
from tests.harness import retry_delay_s
from tests.integration.conftest import make_certificate
from tests.samples import span_request

pytestmark = pytest.mark.integration


class Stack:
    """A receiver -> Ingest -> Batcher(RecordingWriter) chain, started in a TaskGroup."""

    def __init__(self, *, tls: TlsConfig | None = None, max_items: int = 100_000) -> None:
        self.writer = RecordingWriter()
        self.batcher = Batcher(
            "traces",
            self.writer,
            batch=BatchConfig(flush_interval_s=0.02),
            buffer=BufferConfig(max_items=max_items),
            writers=1,
            retry=RetryConfig(),
        )
        ingest = Ingest(
            IngestConfig(enqueue_timeout_s=0.2, ack_timeout_s=5),
            {Signal.TRACES: Route(TraceConverter(max_future_skew_s=3600), self.batcher)},
        )
        config = GrpcReceiverConfig(endpoint="127.0.0.1:0", tls=tls or TlsConfig())
        self.receiver = OtlpGrpcReceiver(config, ingest)
        self.tasks = asyncio.TaskGroup()

    async def __aenter__(self) -> Stack:
        await self.tasks.__aenter__()
        await self.batcher.start(self.tasks)
        await self.receiver.start(self.tasks)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.receiver.stop(deadline_in(2))
        await self.batcher.stop(deadline_in(2))
        await self.tasks.__aexit__(None, None, None)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.receiver.port}"


async def test_stop_without_start_and_twice() -> None:
    """stop() before start() and a second stop() are harmless."""
    stack = Stack()
    await stack.receiver.stop(deadline_in(1))
    async with stack:
        pass
    await stack.receiver.stop(deadline_in(1))


async def test_start_export_stop_delivers() -> None:
    """A request answered OK was handed to the writer before the answer."""
    async with Stack() as stack, grpc.aio.insecure_channel(stack.target) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        answer = await stub.Export(span_request(7))
        assert not answer.HasField("partial_success")
        assert sum(p.payload.rows for b in stack.writer.batches for p in b.parts) == 7


async def test_stop_refuses_new_rpcs_and_bounds_in_flight_ones() -> None:
    """Stopping refuses new calls at once and returns by its deadline despite a stuck sink."""
    stack = Stack()
    async with stack, grpc.aio.insecure_channel(stack.target) as channel:
        stack.writer.gate = asyncio.Event()  # the sink never finishes
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        stuck = asyncio.ensure_future(stub.Export(span_request(3), timeout=10))
        await asyncio.sleep(0.2)
        began = time.monotonic()
        stopping = asyncio.ensure_future(stack.receiver.stop(deadline_in(1.0)))
        await asyncio.sleep(0.05)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Export(span_request(1), timeout=2)
        await stopping
        assert time.monotonic() - began < 1.5
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError):
            await stuck
        stack.writer.gate.set()


async def test_full_buffer_answers_unavailable_with_retry_info() -> None:
    """When the batcher is full the client hears UNAVAILABLE with a RetryInfo delay."""
    async with Stack(max_items=10) as stack, grpc.aio.insecure_channel(stack.target) as channel:
        stack.writer.gate = asyncio.Event()
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        first = asyncio.ensure_future(stub.Export(span_request(8), timeout=10))
        await asyncio.sleep(0.1)
        with pytest.raises(grpc.aio.AioRpcError) as full:
            await stub.Export(span_request(8), timeout=5)
        stack.writer.gate.set()
        await first
    assert full.value.code() is grpc.StatusCode.UNAVAILABLE
    delay = retry_delay_s(full.value)
    assert delay is not None
    assert delay >= 1.0


async def test_request_larger_than_the_buffer_is_resource_exhausted() -> None:
    """A request that can never fit the buffer is RESOURCE_EXHAUSTED, not retryable."""
    async with Stack(max_items=10) as stack, grpc.aio.insecure_channel(stack.target) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as too_big:
            await stub.Export(span_request(11), timeout=5)
    assert too_big.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_delay_s(too_big.value) is None


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    return make_certificate(tmp_path, "localhost", "IP:127.0.0.1,DNS:localhost")


async def test_tls_endpoint_serves_tls_clients(certificate: tuple[Path, Path]) -> None:
    """With tls.cert_file/key_file set, a TLS client that trusts the certificate is served."""
    cert, key = certificate
    async with Stack(tls=TlsConfig(cert_file=cert, key_file=key)) as stack:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        async with grpc.aio.secure_channel(stack.target, credentials) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            await stub.Export(span_request(2), timeout=10)
        async with grpc.aio.insecure_channel(stack.target) as plain:
            with pytest.raises(grpc.aio.AioRpcError):
                await trace_service_pb2_grpc.TraceServiceStub(plain).Export(
                    span_request(1), timeout=3
                )
