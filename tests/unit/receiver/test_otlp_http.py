"""The OTLP/HTTP receiver: paths, methods, media types, encodings, limits and status mapping.

The receiver runs on a loopback port in front of a real Ingest and Batcher whose writer keeps
batches in memory (tests/fakes.py); no other server is involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import zstandard
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from ingestd.batching import Batcher
from ingestd.config import (
    BatchConfig,
    BufferConfig,
    HttpReceiverConfig,
    IngestConfig,
    MemoryConfig,
    RetryConfig,
)
from ingestd.convert.logs import LogsConverter
from ingestd.errors import PayloadTooLarge
from ingestd.ingest import Ingest, Route
from ingestd.memory import MemoryGuard
from ingestd.model import Converted, Converter, Signal
from ingestd.receiver import decode
from ingestd.receiver.otlp_http import OtlpHttpReceiver, inflater
from tests.fakes import RecordingWriter
from tests.harness import free_port

EXAMPLES = Path(__file__).parents[2] / "data" / "otlp-examples"
PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


@dataclass
class Served:
    url: str
    writer: RecordingWriter
    session: aiohttp.ClientSession

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> aiohttp.ClientResponse:
        resp = await self.session.post(self.url + path, data=body, headers=headers)
        await resp.read()
        return resp

    @property
    def items(self) -> list[bytes]:
        return [item for b in self.writer.batches for p in b.parts for item in p.payload]


async def serve(
    *,
    ack: str = "committed",
    max_items: int = 10_000,
    receiver: dict[str, Any] | None = None,
    memory: MemoryGuard | None = None,
    convert: Converter | None = None,
) -> AsyncIterator[Served]:
    writer = RecordingWriter()
    batcher = Batcher(
        "logs",
        writer,
        # max_rows=1: every part is flushed at once, so no test waits for the batch age.
        batch=BatchConfig(max_rows=1, max_bytes=1 << 20, flush_interval_s=0.2),
        buffer=BufferConfig(max_items=max_items, max_bytes=1 << 30),
        writers=1,
        retry=RetryConfig(),
    )
    ingest = Ingest(
        IngestConfig(ack=ack, enqueue_timeout_s=0),
        {Signal.LOGS: Route(convert or LogsConverter(), batcher)},
        memory=memory,
    )
    config = HttpReceiverConfig(
        endpoint=f"127.0.0.1:{free_port()}",
        **{
            "max_request_body_bytes": 1 << 20,
            "max_decompressed_bytes": 4 << 20,
            **(receiver or {}),
        },
    )
    http = OtlpHttpReceiver(config, ingest)
    async with (
        asyncio.TaskGroup() as tasks,
        aiohttp.ClientSession(auto_decompress=False) as session,
    ):
        await batcher.start(tasks)
        await http.start(tasks)
        try:
            yield Served(f"http://127.0.0.1:{http.port}", writer, session)
        finally:
            await http.stop(asyncio.get_running_loop().time() + 1)
            await batcher.stop(asyncio.get_running_loop().time() + 1)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async for s in serve():
        yield s


def logs_body(*bodies: str, time_unix_nano: int = 1_544_712_660_300_000_000) -> bytes:
    req = logs_service_pb2.ExportLogsServiceRequest()
    records = req.resource_logs.add().scope_logs.add().log_records
    for text in bodies:
        rec = records.add(time_unix_nano=time_unix_nano)
        rec.body.string_value = text
    return req.SerializeToString()


def status_of(resp_body: bytes, media: str) -> status_pb2.Status:
    if media == "json":
        data = orjson.loads(resp_body)
        return status_pb2.Status(code=data["code"], message=data.get("message", ""))
    return status_pb2.Status.FromString(resp_body)


async def test_protobuf_request_is_stored_and_answered_in_protobuf(served: Served) -> None:
    """A protobuf export is converted, committed, and answered with an empty response."""
    resp = await served.post("/v1/logs", logs_body("a", "b"), PROTOBUF)
    assert resp.status == 200
    assert resp.content_type == "application/x-protobuf"
    answer = logs_service_pb2.ExportLogsServiceResponse.FromString(await resp.read())
    assert not answer.HasField("partial_success")
    assert len(served.items) == 2


class _BytesReader:
    """A converter that reads protobuf bytes, as the native codec does; keeps what it got."""

    takes_bytes = True

    def __init__(self) -> None:
        self.reference = LogsConverter()
        self.given: list[object] = []

    def __call__(self, request: Any, application_id: str = "") -> Converted:
        self.given.append(request)
        if isinstance(request, bytes):
            request = logs_service_pb2.ExportLogsServiceRequest.FromString(request)
        return self.reference(request, application_id)


async def test_protobuf_body_reaches_a_bytes_converter_unparsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """For a converter that takes bytes (and no rate limits), the body is never parsed: the
    converter gets the request's bytes themselves, as over gRPC."""
    parsed: list[object] = []
    spec = decode.SIGNALS[Signal.LOGS]

    def counted() -> Any:
        parsed.append(None)
        return spec.decode_type()

    monkeypatch.setitem(decode.SIGNALS, Signal.LOGS, dataclasses.replace(spec, decode_type=counted))
    reader = _BytesReader()
    body = logs_body("a", "b")
    async for served in serve(convert=reader):
        resp = await served.post("/v1/logs", body, PROTOBUF)
        assert resp.status == 200
        assert reader.given == [body]
        assert len(served.items) == 2
    assert parsed == []


async def test_json_example_is_stored_and_answered_in_json(served: Served) -> None:
    """The published logs.json example is accepted; the answer is JSON too."""
    resp = await served.post("/v1/logs", (EXAMPLES / "logs.json").read_bytes(), JSON)
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert orjson.loads(await resp.read()) == {}
    (item,) = served.items
    doc = orjson.loads(item.split(b"\n")[1])
    assert doc["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert doc["body"] == {"text": "Example log record"}


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, sent by some clients
        ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
        ("GZIP", lambda b: gzip.compress(b[:10]) + gzip.compress(b[10:])),  # two members
    ],
)
async def test_compressed_bodies(served: Served, encoding: str, compress: Any) -> None:
    """gzip, deflate (zlib or raw) and zstd bodies decode to the same records."""
    body = logs_body("zipped")
    resp = await served.post("/v1/logs", compress(body), {**PROTOBUF, "Content-Encoding": encoding})
    assert resp.status == 200, await resp.read()
    assert b'"text":"zipped"' in served.items[0]


async def test_unknown_content_encoding_is_400(served: Served) -> None:
    """An encoding we do not speak is a 400 with a Status naming it, and nothing is stored."""
    resp = await served.post("/v1/logs", logs_body("x"), {**PROTOBUF, "Content-Encoding": "br"})
    assert resp.status == 400
    status = status_of(await resp.read(), "protobuf")
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert "br" in status.message
    assert served.items == []


async def test_corrupt_gzip_is_400(served: Served) -> None:
    """A body that is not what its Content-Encoding says is a 400."""
    resp = await served.post("/v1/logs", b"not gzip at all", {**JSON, "Content-Encoding": "gzip"})
    assert resp.status == 400
    assert status_of(await resp.read(), "json").code == code_pb2.INVALID_ARGUMENT


async def test_wrong_content_type_is_415(served: Served) -> None:
    """Only protobuf and JSON are accepted."""
    resp = await served.post("/v1/logs", b"hello", {"Content-Type": "text/plain"})
    assert resp.status == 415
    assert "text/plain" in status_of(await resp.read(), "json").message


async def test_content_type_parameters_are_allowed(served: Served) -> None:
    """`application/json; charset=utf-8` is JSON."""
    body = (EXAMPLES / "logs.json").read_bytes()
    resp = await served.post("/v1/logs", body, {"Content-Type": "application/json; charset=utf-8"})
    assert resp.status == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_are_405(served: Served, method: str) -> None:
    """OTLP/HTTP is POST only; the answer says so in Allow."""
    resp = await served.session.request(method, served.url + "/v1/logs")
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"


async def test_unknown_path_is_404(served: Served) -> None:
    """Only the three signal paths exist."""
    resp = await served.post("/v1/profiles", b"", PROTOBUF)
    assert resp.status == 404


async def test_signal_without_sink_is_unimplemented(served: Served) -> None:
    """Traces with no traces route: 404 carrying UNIMPLEMENTED, in the request's encoding."""
    resp = await served.post("/v1/traces", (EXAMPLES / "trace.json").read_bytes(), JSON)
    assert resp.status == 404
    assert status_of(await resp.read(), "json").code == code_pb2.UNIMPLEMENTED


@pytest.mark.parametrize(
    ("body", "headers"),
    [(b'{"resourceLogs": [', JSON), (b"\xff\xff\xff\xff", PROTOBUF)],
)
async def test_undecodable_bodies_are_400(
    served: Served, body: bytes, headers: dict[str, str]
) -> None:
    """Malformed JSON or protobuf is INVALID_ARGUMENT / 400, and nothing is stored."""
    resp = await served.post("/v1/logs", body, headers)
    assert resp.status == 400
    media = "json" if headers is JSON else "protobuf"
    assert status_of(await resp.read(), media).code == code_pb2.INVALID_ARGUMENT
    assert served.items == []


async def test_body_over_the_limit_is_413(served: Served) -> None:
    """A body larger than max_request_body_bytes is refused before decoding."""
    resp = await served.post("/v1/logs", b"x" * ((1 << 20) + 1), PROTOBUF)
    assert resp.status == 413
    assert status_of(await resp.read(), "protobuf").code == code_pb2.RESOURCE_EXHAUSTED


async def test_compression_bomb_is_413(served: Served) -> None:
    """A small gzip body inflating past max_decompressed_bytes is refused."""
    bomb = gzip.compress(b"\x00" * (64 << 20), compresslevel=9)
    assert len(bomb) < 1 << 20
    resp = await served.post("/v1/logs", bomb, {**PROTOBUF, "Content-Encoding": "gzip"})
    assert resp.status == 413
    assert served.items == []


def _bomb(encoding: str, size: int) -> bytes:
    zeros = b"\x00" * size
    if encoding == "gzip":
        return gzip.compress(zeros, compresslevel=1)
    if encoding == "zstd":
        return zstandard.ZstdCompressor(level=1).compress(zeros)
    return zlib.compress(zeros, 1)


@pytest.mark.parametrize("encoding", ["gzip", "zstd", "deflate"])
def test_bomb_is_refused_without_inflating_it(encoding: str) -> None:
    """Inflating stops at the limit: memory stays near the limit, not the bomb's full size."""
    bomb = _bomb(encoding, 256 << 20)
    inflate = inflater(encoding)
    assert inflate is not None
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge):
            inflate(bomb, 4 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak} bytes while refusing a 256 MiB bomb"


async def test_partial_success_is_200_with_the_count(served: Served) -> None:
    """A record refused for good is reported in partial_success; the rest is stored."""
    req = logs_service_pb2.ExportLogsServiceRequest()
    records = req.resource_logs.add().scope_logs.add().log_records
    records.add(time_unix_nano=1_544_712_660_300_000_000).body.string_value = "ok"
    records.add(time_unix_nano=2**63 - 1).body.string_value = "from the far future"
    resp = await served.post("/v1/logs", req.SerializeToString(), PROTOBUF)
    assert resp.status == 200
    answer = logs_service_pb2.ExportLogsServiceResponse.FromString(await resp.read())
    assert answer.partial_success.rejected_log_records == 1
    assert "future" in answer.partial_success.error_message
    assert len(served.items) == 1


async def test_partial_success_in_json_uses_camel_case(served: Served) -> None:
    """The JSON answer follows OTLP/JSON: partialSuccess.rejectedLogRecords."""
    body = orjson.dumps(
        {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": str(2**63 - 1)}]}]}]}
    )
    resp = await served.post("/v1/logs", body, JSON)
    assert resp.status == 200
    answer = orjson.loads(await resp.read())
    assert answer["partialSuccess"]["rejectedLogRecords"] == "1"


async def test_full_buffer_is_503_with_retry_after() -> None:
    """No room in the buffer: 503 UNAVAILABLE with Retry-After and RetryInfo, nothing lost."""
    async for served in serve(ack="accepted", max_items=2):
        served.writer.gate = asyncio.Event()  # the first batch cannot be written yet
        first = await served.post("/v1/logs", logs_body("a", "b"), PROTOBUF)
        assert first.status == 200
        refused = await served.post("/v1/logs", logs_body("c"), PROTOBUF)
        assert refused.status == 503
        assert int(refused.headers["Retry-After"]) >= 1
        status = status_of(await refused.read(), "protobuf")
        assert status.code == code_pb2.UNAVAILABLE
        assert status.details[0].type_url.endswith("google.rpc.RetryInfo")
        served.writer.gate.set()


async def test_request_larger_than_the_buffer_is_413() -> None:
    """A request that could never fit the buffer is refused for good."""
    async for served in serve(max_items=2):
        resp = await served.post("/v1/logs", logs_body("a", "b", "c"), PROTOBUF)
        assert resp.status == 413


async def test_empty_request_is_ok(served: Served) -> None:
    """An export with no records succeeds without touching the sink."""
    resp = await served.post("/v1/logs", b"", PROTOBUF)
    assert resp.status == 200
    assert served.writer.calls == 0


def logs_receiver(writer: RecordingWriter, batch: BatchConfig) -> tuple[Batcher, OtlpHttpReceiver]:
    """A logs batcher into *writer* and an HTTP receiver on a free port feeding it (not started)."""
    batcher = Batcher(
        "logs", writer, batch=batch, buffer=BufferConfig(), writers=1, retry=RetryConfig()
    )
    receiver = OtlpHttpReceiver(
        HttpReceiverConfig(endpoint=f"127.0.0.1:{free_port()}"),
        Ingest(IngestConfig(), {Signal.LOGS: Route(LogsConverter(), batcher)}),
    )
    return batcher, receiver


async def test_stop_without_start_and_twice() -> None:
    """stop() is fine before start() and idempotent."""
    _, receiver = logs_receiver(RecordingWriter(), BatchConfig())
    loop = asyncio.get_running_loop()
    await receiver.stop(loop.time() + 1)
    await receiver.stop(loop.time() + 1)


class CloggedWriter(RecordingWriter):
    """Never finishes a batch; says when the first one arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.called = asyncio.Event()

    async def write_batch(self, batch: Any) -> Any:
        self.called.set()
        return await super().write_batch(batch)


async def test_stop_returns_by_its_deadline_with_a_request_stuck_downstream() -> None:
    """A request waiting on a clogged sink does not hold stop() past its deadline."""
    writer = CloggedWriter()
    batcher, receiver = logs_receiver(writer, BatchConfig(max_rows=1))
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as tasks, aiohttp.ClientSession() as session:
        await batcher.start(tasks)
        await receiver.start(tasks)
        url = f"http://127.0.0.1:{receiver.port}/v1/logs"
        stuck = asyncio.ensure_future(session.post(url, data=logs_body("a"), headers=PROTOBUF))
        await writer.called.wait()
        began = loop.time()
        await receiver.stop(time.monotonic() + 0.5)
        took = loop.time() - began
        await batcher.stop(time.monotonic() + 0.5)
        with contextlib.suppress(aiohttp.ClientError):
            await stuck
    assert 0.4 <= took < 2.0


async def test_memory_over_its_bound_is_503_before_the_body_is_read() -> None:
    """Over memory.max_rss_mib a request is refused with 503 + Retry-After and the connection
    closed, before its body is read (a body larger than the receive limit is not even 413)."""
    guard = MemoryGuard(MemoryConfig(max_rss_mib=1), read_rss=lambda: 2 << 20)
    guard.sample()
    async for served in serve(memory=guard):
        resp = await served.post("/v1/logs", b"x" * (2 << 20), PROTOBUF)
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) >= 1
        assert resp.headers.get("Connection", "").lower() == "close"
        assert status_of(await resp.read(), "protobuf").code == code_pb2.UNAVAILABLE
        assert served.writer.batches == []
