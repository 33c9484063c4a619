"""The OTLP/HTTP receiver's connection timeouts, on real sockets and real time (short ones).

No server of the dev stack is needed; these live here because they wait on the clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from ingestd.batching import Batcher
from ingestd.config import BatchConfig, BufferConfig, HttpReceiverConfig, IngestConfig, RetryConfig
from ingestd.convert.logs import LogsConverter
from ingestd.ingest import Ingest, Route
from ingestd.model import Signal
from ingestd.receiver.otlp_http import OtlpHttpReceiver
from tests.fakes import RecordingWriter
from tests.harness import free_port

HEADER_TIMEOUT_S = 0.3
BODY_TIMEOUT_S = 0.3


@pytest.fixture
async def port() -> AsyncIterator[int]:
    batcher = Batcher(
        "logs",
        RecordingWriter(),
        batch=BatchConfig(max_rows=1),
        buffer=BufferConfig(),
        writers=1,
        retry=RetryConfig(),
    )
    ingest = Ingest(IngestConfig(), {Signal.LOGS: Route(LogsConverter(), batcher)})
    config = HttpReceiverConfig(
        endpoint=f"127.0.0.1:{free_port()}",
        read_header_timeout_s=HEADER_TIMEOUT_S,
        read_body_timeout_s=BODY_TIMEOUT_S,
        idle_timeout_s=1.0,
    )
    receiver = OtlpHttpReceiver(config, ingest)
    async with asyncio.TaskGroup() as tasks:
        await batcher.start(tasks)
        await receiver.start(tasks)
        assert receiver.port is not None
        yield receiver.port
        await receiver.stop(time.monotonic() + 1)
        await batcher.stop(time.monotonic() + 1)


def full_request() -> bytes:
    body = logs_service_pb2.ExportLogsServiceRequest()
    body.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "x"
    payload = body.SerializeToString()
    head = (
        "POST /v1/logs HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-protobuf\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Seconds until the server closes the connection (reads until EOF)."""
    began = time.monotonic()
    async with asyncio.timeout(seconds):
        while await reader.read(65536):
            pass
    return time.monotonic() - began


async def test_incomplete_request_head_is_cut_off(port: int) -> None:
    """A client trickling header bytes (slowloris) is disconnected after read_header_timeout_s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/logs HTTP/1.1\r\nHost: test\r\n")
    await writer.drain()
    waited = await closed_within(reader, 5 * HEADER_TIMEOUT_S)
    # After the header timeout, well before the idle timeout (1 s) would have closed it.
    assert HEADER_TIMEOUT_S * 0.8 <= waited < 0.8
    writer.close()


async def test_slow_body_is_answered_400(port: int) -> None:
    """A body that does not arrive within read_body_timeout_s is refused."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/logs HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-protobuf\r\n"
        b"Content-Length: 100\r\n\r\n0123456789"
    )
    await writer.drain()
    async with asyncio.timeout(5 * BODY_TIMEOUT_S):
        status_line = await reader.readline()
    assert status_line.startswith(b"HTTP/1.1 400"), status_line
    writer.close()


async def test_idle_keepalive_connection_survives_the_header_timeout(port: int) -> None:
    """Between requests a connection idles up to idle_timeout_s, not read_header_timeout_s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(2):
        writer.write(full_request())
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        headers = await reader.readuntil(b"\r\n\r\n")
        length = int(headers.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        await asyncio.sleep(2 * HEADER_TIMEOUT_S)  # idle longer than the header timeout
    waited = await closed_within(reader, 3.0)  # then the idle timeout (1 s) closes it
    assert waited >= 0.3
    writer.close()


async def test_silent_connection_is_closed_after_the_idle_timeout(port: int) -> None:
    """A connection that never sends a byte is closed after idle_timeout_s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    waited = await closed_within(reader, 3.0)
    assert waited >= 0.8
    writer.close()
