"""The OTLP/HTTP receiver: `POST /v1/traces | /v1/metrics | /v1/logs` -> Ingest.export.

Per request, in the Collector's order (reference otelcol.md section 2): path (404), the bearer
token when auth is on (401 with `WWW-Authenticate`, before anything else), method (405),
Content-Type (415: application/x-protobuf or application/json), the body read under
`max_request_body_bytes` (413), Content-Encoding (gzip, deflate, zstd; others 400) inflated
in bounded steps under `max_decompressed_bytes` (413: a small bomb is refused after inflating
at most the limit), decode (400: JSON here, protobuf in `Ingest` and only when something reads
the message, as for gRPC), then `Ingest.export`. Outcomes map through the one status
table (receiver/status.py); errors are a google.rpc.Status and every answer uses the request's
encoding.

The server is aiohttp's low-level one (three paths need no router), with keep-alive connections
closed after `idle_timeout_s` and a request head that does not arrive within
`read_header_timeout_s` cut off.

While the process drains or is over a memory bound (`Ingest.admission_error`), a request is
answered 503 + Retry-After before its body is read, and its connection is closed (the client
reconnects, to another replica behind a balancer). On stop the listener stays open, refusing
new requests that way, until every request in flight has been answered.
"""

from __future__ import annotations

import asyncio
import collections
import zlib
from collections.abc import Callable
from typing import Any

import orjson
import structlog
import zstandard
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from google.protobuf import json_format

from ingestd.auth import ANONYMOUS, Caller
from ingestd.config import HttpReceiverConfig
from ingestd.convert.limits import Shape, check_shape, shape_of
from ingestd.convert.native import json_as_protobuf
from ingestd.errors import (
    BadRequest,
    IngestdError,
    Overloaded,
    PayloadTooLarge,
    StageClosed,
    Unauthenticated,
    Unimplemented,
    UnsupportedMedia,
)
from ingestd.ingest import MESSAGE_BYTES, answer_deadline
from ingestd.model import RequestContext, Signal
from ingestd.observe.children import Children
from ingestd.observe.metrics import RECEIVER_REFUSED_REQUESTS, RECEIVER_REQUESTS
from ingestd.receiver.base import ReceiverBase
from ingestd.receiver.cors import Cors
from ingestd.receiver.decode import request_key, response
from ingestd.receiver.otlp_json import parse_json
from ingestd.receiver.status import retry_after_header, rpc_status, status_for
from ingestd.signals import BY_HTTP_PATH
from ingestd.tls import ServerTls, server_context, stop_web_server

log = structlog.get_logger("ingestd.receiver.http")
_REQUESTS = Children(RECEIVER_REQUESTS)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

# Inflate in steps of this size, checking the limit after each: a bomb costs at most the
# limit plus one step of memory and CPU, never its full expansion.
_INFLATE_STEP = 1024 * 1024
# Bodies above this are inflated in a worker thread (zlib and zstd release the GIL) so the
# event loop keeps serving other requests meanwhile.
_INFLATE_IN_THREAD = 256 * 1024
# RFC 9659: an HTTP zstd decoder needs at most an 8 MiB window; larger ones are refused rather
# than allocated.
_ZSTD_MAX_WINDOW = 8 * 1024 * 1024
_READ_CHUNK = 256 * 1024
# A body inflating to at most this is never refused for its compression ratio.
_RATIO_FREE_BYTES = 4 * 1024 * 1024
# Parsed JSON costs about a Python object per 20 bytes; counted against memory until parsed.
_JSON_BYTES_PER_MESSAGE = 20
_BUSY_RETRY_AFTER_S = 1.0


class OtlpHttpReceiver(ReceiverBase[HttpReceiverConfig]):
    """A stage serving OTLP/HTTP on `receivers.http.endpoint` into *ingest*."""

    name = "receiver.http"

    def _init_transport(self) -> None:
        self._cors = Cors(self.config.cors)
        self._codecs = frozenset(self.config.compression_algorithms)
        self._tls: ServerTls | None = None
        self._tls_watch: asyncio.Task[None] | None = None
        self._runner: web.ServerRunner | None = None
        self._site: web.TCPSite | None = None
        # Requests by the HTTP status sent, for /status.
        self._counts: collections.Counter[int] = collections.Counter()

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        """Listen on the endpoint; raises OSError when it cannot be bound."""
        host, _, port = self.config.endpoint.rpartition(":")
        self._tls = server_context(self.config.tls, "http")
        if self._tls is not None:
            self._tls_watch = tasks.create_task(self._tls.watch(), name="http-tls-reload")
        server = _Server(
            self._handle,
            head_timeout_s=self.config.read_header_timeout_s,
            keepalive_timeout=self.config.idle_timeout_s,
            # We read and inflate the body ourselves, under our own limits.
            auto_decompress=False,
            access_log=None,
        )
        # stop() waits for requests in flight until its own deadline; what is left then is cut
        # at once (the clients were not answered, so they retry).
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        self._site = web.TCPSite(
            self._runner,
            host,
            int(port),
            ssl_context=self._tls.context if self._tls is not None else None,
            reuse_port=self.reuse_port or None,
        )
        await self._site.start()
        sockets = self._runner.addresses
        self.port = sockets[0][1] if sockets else int(port)
        log.info("http_receiver_listening", endpoint=f"{host}:{self.port}")

    async def stop(self, deadline: float) -> None:
        """Refuse new requests (503 + Retry-After), answer those in flight, then close.

        Requests in flight are answered by Ingest's drain deadline at the latest (a little
        before *deadline*): stored, or 503 so that their clients retry. What is still running
        at *deadline* is cut.
        """
        self._closing = True
        if self._runner is not None:
            self._ingest.begin_drain(answer_deadline(deadline))
        if not await self._in_flight.drained(deadline):
            log.warning("http_requests_cut_at_shutdown", requests=self._in_flight.count)
        if self._site is not None:
            # From here new connections are refused by the kernel: no status can be sent.
            log.info("receiver_closing", receiver=self.name, in_flight=self._in_flight.count)
            await self._site.stop()
            self._site = None
        runner, watch, self._runner, self._tls_watch = self._runner, self._tls_watch, None, None
        await stop_web_server(runner, watch)

    def status(self) -> dict[str, object]:
        """For /status: whether it serves, requests in flight, requests by HTTP status."""
        requests = {str(code): n for code, n in sorted(self._counts.items())}
        return self._status(listening=self._site is not None, requests=requests)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if not self._cors.enabled:
            return await self._route(request)
        if request.path in BY_HTTP_PATH and Cors.is_preflight(request.method, request.headers):
            # Browsers send no credentials on a preflight: it is answered before auth.
            return web.Response(status=204, headers=self._cors.preflight(request.headers))
        reply = await self._route(request)
        reply.headers.update(self._cors.response_headers(request.headers.get("Origin")))
        return reply

    async def _route(self, request: web.BaseRequest) -> web.StreamResponse:
        spec = BY_HTTP_PATH.get(request.path)
        if spec is None:
            paths = ", ".join(BY_HTTP_PATH)
            return _plain(404, f"no OTLP endpoint at {request.path}; use {paths}")
        signal = spec.signal
        media = request.content_type
        authorization = request.headers.get("Authorization")
        caller = ANONYMOUS
        try:
            # Before anything else: an unknown caller learns nothing and costs no reading.
            caller = await self._auth.identify(authorization)
        except IngestdError as exc:
            reply = self._error(signal, media if media in (PROTOBUF, JSON) else JSON, exc)
            if isinstance(exc, Unauthenticated):
                # RFC 9110 section 11.6.1: a 401 names the scheme; RFC 6750 section 3 adds
                # the error code only when a token was sent.
                reply.headers["WWW-Authenticate"] = 'Bearer realm="ingestd"' + (
                    ', error="invalid_token"' if authorization else ""
                )
            reply.force_close()  # the body is left unread
            return reply
        if request.method != "POST":
            reply = _plain(405, f"{request.method} is not allowed; OTLP/HTTP uses POST")
            reply.headers["Allow"] = "POST"
            return reply
        if media not in (PROTOBUF, JSON):
            error = UnsupportedMedia(
                f"Content-Type {media!r} is not supported; use {PROTOBUF} or {JSON}"
            )
            return self._error(signal, JSON, error)
        if self._in_flight.count >= self.config.max_concurrent_requests:
            reply = self._error(
                signal,
                media,
                Overloaded(
                    f"{self._in_flight.count} requests in flight, the most this receiver serves "
                    "at once (receivers.http.max_concurrent_requests)",
                    retry_after_s=_BUSY_RETRY_AFTER_S,
                ),
            )
            reply.force_close()
            return reply
        with self._in_flight.request():
            return await self._export(signal, media, request, caller)

    async def _export(
        self, signal: Signal, media: str, request: web.BaseRequest, caller: Caller
    ) -> web.Response:
        # The declared body is counted against memory from admission on (the body limit when
        # it is chunked): a burst of slow large bodies is refused before they arrive.
        limit = self.config.max_request_body_bytes
        declared = request.content_length
        reserved = limit if declared is None else min(declared, limit)
        try:
            self._admit(signal, reserved)
        except IngestdError as exc:
            # The body is left unread: the connection cannot carry another request.
            reply = self._error(signal, media, exc)
            reply.force_close()
            return reply
        try:
            with self._ingest.decoding(0, extra=reserved):
                body = await self._body(request)
            # OTLP/JSON the native transcoder is sure of becomes protobuf (the native codec's
            # input); None: the Python decoder reads the JSON.
            proto = body if media == PROTOBUF else self._transcoded(signal, body)
            if proto is not None:
                shape = self._ingest.structure(signal, proto)
            else:
                # JSON costs more per message than protobuf; its caps are checked once parsed.
                shape = Shape(items=len(body) // _JSON_BYTES_PER_MESSAGE)
            with self._ingest.decoding(len(body), extra=MESSAGE_BYTES * shape.messages):
                # Protobuf is parsed by Ingest only if something reads the message (as for
                # gRPC: not when the native codec alone reads the bytes).
                message = None
                if proto is None:
                    message = parse_json(signal, body)
                    check_shape(shape_of(signal, message), self._ingest.request_limits)
                result = await self._ingest.export(
                    signal,
                    message,
                    key=request_key(signal, caller.tenant, body),
                    ctx=RequestContext("http", caller.tenant, caller.application_id),
                    wire_bytes=len(body),
                    body=proto,
                )
        except IngestdError as exc:
            return self._error(signal, media, exc)
        except Exception as exc:  # a bug must still answer (retryable) and be seen once
            log.exception("http_request_failed", signal=str(signal))
            return self._error(signal, media, exc)
        self._counts[200] += 1
        _REQUESTS(signal, "http", "partial" if result.rejected else "ok").inc()
        reply = _encoded(200, media, response(signal, result))
        if self._closing or self._ingest.draining:
            # A draining server's keep-alive connections are closed soon: the client's next
            # request should open a new one (to another replica, or another worker).
            reply.force_close()
        return reply

    def _transcoded(self, signal: Signal, body: bytes) -> bytes | None:
        """An OTLP/JSON body as protobuf when the native codec converts *signal* and its
        transcoder is sure of the result (convert/native.py); None: the Python decoder reads it."""
        if not body or not self._ingest.takes_bytes(signal):
            return None
        return json_as_protobuf(signal, body)

    def _admit(self, signal: Signal, reserved: int) -> None:
        if self._closing:
            raise StageClosed("shutting down; retry on another replica", retry_after_s=1.0)
        if not self._ingest.accepts(signal):
            raise Unimplemented(f"{signal} are not accepted by this ingestd (no sink takes them)")
        refusal = self._ingest.admission_error(reserved)
        if refusal is not None:
            raise refusal

    async def _body(self, request: web.BaseRequest) -> bytes:
        """The decompressed body; PayloadTooLarge over a limit, BadRequest when unreadable."""
        limit = self.config.max_request_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(
                f"request body of {request.content_length} bytes exceeds {limit} bytes"
            )
        encoding = request.headers.get("Content-Encoding", "")
        # An unknown or disabled encoding fails before the body is read.
        inflate = inflater(encoding, self._codecs)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.config.read_body_timeout_s):
                async for chunk in request.content.iter_chunked(_READ_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"request body exceeds {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise BadRequest(
                f"request body not received within {self.config.read_body_timeout_s} s"
            ) from None
        raw = b"".join(chunks)
        if inflate is None:
            return raw
        # A bomb (64 MiB of empty records gzip to 65 KB, zstd to 6 KB) is cut at the ratio;
        # OTLP protobuf compresses 5-20x, repetitive logs ~50x.
        cap = int(self.config.max_decompressed_bytes)
        if ratio := self.config.max_decompression_ratio:
            cap = min(cap, max(ratio * len(raw), _RATIO_FREE_BYTES))
        if len(raw) > _INFLATE_IN_THREAD:
            return await asyncio.to_thread(inflate, raw, cap)
        return inflate(raw, cap)

    def _error(self, signal: Signal, media: str, exc: BaseException) -> web.Response:
        status = status_for(exc)
        self._counts[status.http_status] += 1
        RECEIVER_REQUESTS.labels(signal=signal, transport="http", status=status.http_status).inc()
        reason = type(exc).__name__ if isinstance(exc, IngestdError) else "InternalError"
        RECEIVER_REFUSED_REQUESTS.labels(signal=signal, transport="http", reason=reason).inc()
        if status.http_status >= 500:
            log.debug("http_request_refused", signal=str(signal), error=str(exc)[:300])
        reply = _encoded(status.http_status, media, rpc_status(status))
        retry_after = retry_after_header(status)
        if retry_after is not None:
            reply.headers["Retry-After"] = retry_after
        if isinstance(exc, PayloadTooLarge):
            # The rest of an oversized body is not read: close rather than drain it.
            reply.force_close()
        return reply


Inflate = Callable[[bytes, int], bytes]


ALL_CODECS = frozenset({"gzip", "deflate", "zstd"})


def inflater(content_encoding: str, allowed: frozenset[str] = ALL_CODECS) -> Inflate | None:
    """The decoder for a Content-Encoding; None for identity; BadRequest if not *allowed*."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    codec = "gzip" if encoding == "x-gzip" else encoding
    decoder = {"gzip": _gunzip, "deflate": _inflate_deflate, "zstd": _unzstd}.get(codec)
    if decoder is None or codec not in allowed:
        accepted = ", ".join(sorted(allowed)) or "none"
        raise BadRequest(
            f"Content-Encoding {content_encoding!r} is not accepted here ({accepted}, identity)"
        )
    return decoder


def _gunzip(data: bytes, limit: int) -> bytes:
    return _zlib_stream(data, limit, wbits=16 + zlib.MAX_WBITS, name="gzip")


def _inflate_deflate(data: bytes, limit: int) -> bytes:
    # HTTP's "deflate" is the zlib format (RFC 9110); some clients send raw deflate.
    if len(data) >= 2 and (data[0] << 8 | data[1]) % 31 == 0 and data[0] & 0x0F == 8:
        return _zlib_stream(data, limit, wbits=zlib.MAX_WBITS, name="deflate")
    return _zlib_stream(data, limit, wbits=-zlib.MAX_WBITS, name="deflate")


def _zlib_stream(data: bytes, limit: int, *, wbits: int, name: str) -> bytes:
    out: list[bytes] = []
    size = 0
    pending = data
    decoder = zlib.decompressobj(wbits)
    try:
        while True:
            chunk = decoder.decompress(pending, _INFLATE_STEP)
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"{name} body inflates beyond {limit} bytes")
            out.append(chunk)
            pending = decoder.unconsumed_tail
            if decoder.eof:
                pending = decoder.unused_data
                if not pending:
                    break
                decoder = zlib.decompressobj(wbits)  # gzip allows several members
            elif not pending:
                break
    except zlib.error as exc:
        raise BadRequest(f"body is not valid {name}: {exc}") from exc
    if not decoder.eof:
        raise BadRequest(f"{name} body is truncated")
    return b"".join(out)


def _unzstd(data: bytes, limit: int) -> bytes:
    out: list[bytes] = []
    size = 0
    decoder = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW)
    try:
        with decoder.stream_reader(data, read_across_frames=True) as reader:
            while chunk := reader.read(_INFLATE_STEP):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"zstd body inflates beyond {limit} bytes")
                out.append(chunk)
    except zstandard.ZstdError as exc:
        raise BadRequest(f"body is not valid zstd: {exc}") from exc
    return b"".join(out)


def _encoded(status: int, media: str, message: Any) -> web.Response:
    if media == PROTOBUF:
        return web.Response(status=status, body=message.SerializeToString(), content_type=PROTOBUF)
    body = orjson.dumps(json_format.MessageToDict(message))
    return web.Response(status=status, body=body, content_type=JSON)


def _plain(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text)


class _Server(web.Server):
    """aiohttp's low-level server, with connections that time out an incomplete request head."""

    def __init__(self, handler: Any, *, head_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._head_timeout_s = head_timeout_s

    def __call__(self) -> RequestHandler:
        return _HeadTimedHandler(
            self, loop=self._loop, head_timeout_s=self._head_timeout_s, **self._kwargs
        )


class _HeadTimedHandler(RequestHandler):
    """Closes a connection whose request head is still incomplete after `head_timeout_s`.

    aiohttp's keep-alive timer bounds an idle connection, but a client trickling header bytes
    (slowloris) would hold it until then; Go's ReadHeaderTimeout is the model.
    """

    __slots__ = ("_head_timeout_s", "_head_timer")

    def __init__(self, manager: web.Server, *, head_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout_s = head_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Bytes arrived, yet no request is queued or running: they began a head.
        if (
            self._head_timer is None
            and not getattr(self, "_messages", True)
            and not getattr(self, "_request_in_progress", True)
        ):
            count = getattr(self, "_request_count", 0)
            self._head_timer = self._loop.call_later(self._head_timeout_s, self._expire, count)

    def _expire(self, count: int) -> None:
        self._head_timer = None
        if getattr(self, "_request_count", -1) == count and not self._request_in_progress:
            log.debug("http_header_timeout", timeout_s=self._head_timeout_s)
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)
