"""The OTLP/gRPC receiver: the upstream-most stage, `client -> OtlpGrpcReceiver -> Ingest`.

One generic handler serves TraceService, MetricsService and LogsService `Export`. It receives the
request's raw bytes (grpc has already undone gzip and enforced `max_recv_msg_size_mib`, answering
RESOURCE_EXHAUSTED itself), keys them, decodes them, hands them to `Ingest.export`, and answers
with the OTLP response (partial success when records were refused) or aborts with the status
the one table in `receiver.status` gives, with RetryInfo when a retry can help.

New RPCs are refused before their message is read while the process drains or is over a
memory bound (`Ingest.admission_error`): the method lookup (`_Handlers.service`, called by
grpc before it receives the request) hands back a handler that aborts with UNAVAILABLE +
RetryInfo without reading. On stop the server keeps listening, refusing new RPCs that way,
until every RPC in flight has been answered; then it closes (GOAWAY).
"""

from __future__ import annotations

import asyncio
import collections
import functools
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import structlog
from grpc_status import rpc_status

from ingestd.auth import Caller
from ingestd.config import GrpcReceiverConfig
from ingestd.errors import IngestdError, Overloaded, StageClosed, Unauthenticated
from ingestd.ingest import MESSAGE_BYTES, answer_deadline
from ingestd.model import ExportResult, RequestContext, Signal
from ingestd.observe.children import Children
from ingestd.observe.metrics import RECEIVER_REFUSED_REQUESTS, RECEIVER_REQUESTS
from ingestd.pipeline import remaining
from ingestd.receiver import decode
from ingestd.receiver import status as statuses
from ingestd.receiver.base import ReceiverBase
from ingestd.signals import BY_GRPC_METHOD, SIGNALS
from ingestd.tls import grpc_credentials

log = structlog.get_logger("ingestd.receiver.grpc")

MiB = 1024 * 1024
_BUSY_RETRY_AFTER_S = 1.0
_REQUESTS = Children(RECEIVER_REQUESTS)


def server_options(config: GrpcReceiverConfig, reuse_port: bool) -> list[tuple[str, int]]:
    """grpc core's channel arguments for the server, from `receivers.grpc`."""
    keepalive = config.keepalive.server_parameters
    policy = config.keepalive.enforcement_policy

    def ms(seconds: float) -> int:
        # 0 in the config means no limit: grpc's INT_MAX milliseconds.
        return int(seconds * 1000) if seconds else 2**31 - 1

    return [
        ("grpc.max_receive_message_length", config.max_recv_msg_size_mib * MiB),
        ("grpc.max_concurrent_streams", config.max_concurrent_streams),
        ("grpc.server_handshake_timeout_ms", ms(config.handshake_timeout_s)),
        ("grpc.max_connection_idle_ms", ms(keepalive.max_connection_idle_s)),
        ("grpc.max_connection_age_ms", ms(keepalive.max_connection_age_s)),
        ("grpc.max_connection_age_grace_ms", ms(keepalive.max_connection_age_grace_s)),
        # An idle client connection costs little; pings keep NATs from dropping it.
        ("grpc.keepalive_time_ms", ms(keepalive.time_s)),
        ("grpc.keepalive_timeout_ms", ms(keepalive.timeout_s)),
        # Clients pinging more often than min_time are sent GOAWAY (after 2 strikes).
        ("grpc.http2.min_ping_interval_without_data_ms", ms(policy.min_time_s)),
        ("grpc.keepalive_permit_without_calls", int(policy.permit_without_stream)),
        # Several workers share the port (workers: N); one process alone binds it
        # exclusively, so that a second ingestd on the same port fails to start.
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        # A message in an encoding left out is answered UNIMPLEMENTED by grpc core.
        ("grpc.compression_enabled_algorithms_bitset", _codec_bits(config)),
    ]


class OtlpGrpcReceiver(ReceiverBase[GrpcReceiverConfig]):
    name = "receiver.grpc"

    def _init_transport(self) -> None:
        self._server: grpc.aio.Server | None = None
        self._empty: dict[Signal, bytes] = {
            signal: spec.response_type().SerializeToString() for signal, spec in SIGNALS.items()
        }
        # Requests by the status sent, for /status (Prometheus has them by signal too).
        self._counts: collections.Counter[str] = collections.Counter()

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        """Bind the endpoint and start serving; raises when the endpoint cannot be bound."""
        server = grpc.aio.server(options=server_options(self.config, self.reuse_port))
        server.add_generic_rpc_handlers([_Handlers(self)])
        endpoint = self.config.endpoint
        tls = self.config.tls
        try:
            if tls.enabled:
                port = server.add_secure_port(endpoint, grpc_credentials(tls))
            else:
                port = server.add_insecure_port(endpoint)
        except RuntimeError as exc:
            raise RuntimeError(f"cannot listen on {endpoint}: {exc}") from exc
        await server.start()
        self._server = server
        self.port = port
        log.info(
            "grpc_listening", endpoint=f"{endpoint.rpartition(':')[0]}:{port}", tls=tls.enabled
        )

    async def stop(self, deadline: float) -> None:
        """Refuse new RPCs at once (UNAVAILABLE + RetryInfo); answer those in flight; close.

        RPCs in flight are answered by Ingest's drain deadline at the latest (a little before
        *deadline*): stored, or UNAVAILABLE so that their clients retry. Then the server sends
        GOAWAY and closes; anything still running a second later is cancelled.
        """
        if self._server is None:
            return
        self._closing = True
        self._ingest.begin_drain(answer_deadline(deadline))
        if not await self._in_flight.drained(deadline):
            log.warning("grpc_requests_cut_at_shutdown", requests=self._in_flight.count)
        server, self._server = self._server, None
        # From here new connections are refused by the kernel: no status can be sent.
        log.info("receiver_closing", receiver=self.name, in_flight=self._in_flight.count)
        await server.stop(grace=min(1.0, remaining(deadline)))

    def status(self) -> dict[str, object]:
        """For /status: whether it serves, RPCs in flight, RPCs by the status they got."""
        return self._status(listening=self._server is not None, requests=dict(self._counts))

    def authentication_error(self, metadata: Any) -> Unauthenticated | None:
        """Unauthenticated when the RPC's `authorization` metadata names no known token."""
        if not self._auth.enabled:
            return None
        authorization = _metadata_value(metadata, "authorization")
        if self._auth.keys is not None:
            # An application key needs an async lookup: only a missing token is refused
            # here; the handler identifies the caller before anything else.
            if authorization:
                return None
            return Unauthenticated("missing bearer token (Authorization: Bearer <token>)")
        try:
            self._auth.authenticate(authorization)
        except Unauthenticated as exc:
            return exc
        return None

    def admission_error(self) -> IngestdError | None:
        """Why a new RPC is refused before its message is read (draining, memory), or None."""
        if self._closing:
            return StageClosed("shutting down; retry on another replica", retry_after_s=1.0)
        return self._ingest.admission_error()

    def refuse(self, signal: Signal, error: IngestdError) -> grpc.RpcMethodHandler[Any, Any]:
        """A handler that aborts with *error*'s status without reading the request."""
        failure = self._refused(signal, error)

        async def abort(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            await _abort(context, failure)

        return grpc.stream_unary_rpc_method_handler(
            abort, request_deserializer=None, response_serializer=None
        )

    def _refused(self, signal: Signal, error: IngestdError) -> statuses.Status:
        """Count an RPC refused with *error*; the status to abort it with."""
        failure = statuses.status_for(error)
        self._counts[failure.grpc_code.name] += 1
        RECEIVER_REQUESTS.labels(
            signal=signal, transport="grpc", status=failure.grpc_code.name
        ).inc()
        RECEIVER_REFUSED_REQUESTS.labels(
            signal=signal, transport="grpc", reason=type(error).__name__
        ).inc()
        return failure

    def busy(self) -> Overloaded | None:
        """Overloaded when `max_concurrent_requests` RPCs are being served, else None."""
        if self._in_flight.count < self.config.max_concurrent_requests:
            return None
        return Overloaded(
            f"{self._in_flight.count} requests in flight, the most this receiver serves at once "
            "(receivers.grpc.max_concurrent_requests)",
            retry_after_s=_BUSY_RETRY_AFTER_S,
        )

    async def _export(
        self, signal: Signal, body: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        busy = self.busy()
        if busy is not None:
            # Admitted by `service` together with others whose messages arrived at once.
            await _abort(context, self._refused(signal, busy))
        with self._in_flight.request(), self._ingest.decoding(len(body)):
            return await self._respond(signal, body, context)

    async def _respond(
        self, signal: Signal, body: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        outcome = "CANCELLED"  # unless an answer is reached
        try:
            # Authenticate before anything else: not even an empty body is answered OK
            # without a token (HTTP answers 401 there too).
            try:
                caller = await self._auth.identify(_authorization(context))
            except IngestdError as exc:  # Unauthenticated, or a key that cannot be checked now
                failure = statuses.status_for(exc)
                outcome = failure.grpc_code.name
                RECEIVER_REFUSED_REQUESTS.labels(
                    signal=signal, transport="grpc", reason=type(exc).__name__
                ).inc()
                await _abort(context, failure)
            if not self._ingest.accepts(signal):
                outcome = "UNIMPLEMENTED"
                RECEIVER_REFUSED_REQUESTS.labels(
                    signal=signal, transport="grpc", reason="Unimplemented"
                ).inc()
                await _abort(
                    context,
                    statuses.Status(
                        grpc.StatusCode.UNIMPLEMENTED, 404, None, f"{signal} are not accepted here"
                    ),
                )
            if not body:
                outcome = "ok"
                return self._empty[signal]
            answer = await self._answer(signal, body, caller)
            if isinstance(answer, tuple):
                failure, reason = answer
                outcome = failure.grpc_code.name
                RECEIVER_REFUSED_REQUESTS.labels(
                    signal=signal, transport="grpc", reason=reason
                ).inc()
                await _abort(context, failure)
            if not answer.rejected and not answer.message:
                outcome = "ok"
                return self._empty[signal]  # no partial success: the same bytes every time
            outcome = "partial" if answer.rejected else "ok"
            data: bytes = decode.response(signal, answer).SerializeToString()
            return data
        finally:
            self._counts[outcome] += 1
            _REQUESTS(signal, "grpc", outcome).inc()

    async def _answer(
        self, signal: Signal, body: bytes, caller: Caller
    ) -> ExportResult | tuple[statuses.Status, str]:
        """Store one request: its result, or the status to abort with and the error's class."""
        try:
            shape = self._ingest.structure(signal, body)
            with self._ingest.decoding(0, extra=MESSAGE_BYTES * shape.messages):
                return await self._ingest.export(
                    signal,
                    None,  # parsed by Ingest if anything reads the message (native: nothing)
                    key=decode.request_key(signal, caller.tenant, body),
                    ctx=RequestContext("grpc", caller.tenant, caller.application_id),
                    wire_bytes=len(body),
                    body=body,
                )
        except Exception as exc:
            if not isinstance(exc, IngestdError):
                log.exception("export_failed_unexpectedly", signal=str(signal))
                return statuses.status_for(exc), "InternalError"
            return statuses.status_for(exc), type(exc).__name__


if TYPE_CHECKING:
    _GenericRpcHandler = grpc.GenericRpcHandler[Any, Any]
else:  # grpc's runtime class is not generic; grpc-stubs' is
    _GenericRpcHandler = grpc.GenericRpcHandler


class _Handlers(_GenericRpcHandler):
    """The three Export methods; grpc asks `service` before it reads a request's message."""

    def __init__(self, receiver: OtlpGrpcReceiver) -> None:
        self._receiver = receiver
        self._signals = {method: spec.signal for method, spec in BY_GRPC_METHOD.items()}
        self._handlers = {
            method: grpc.unary_unary_rpc_method_handler(
                functools.partial(receiver._export, signal),
                request_deserializer=None,
                response_serializer=None,
            )
            for method, signal in self._signals.items()
        }

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = self._handlers.get(details.method)
        if handler is None:
            return None  # grpc answers UNIMPLEMENTED
        # An unknown caller is refused before its message is read or anything else is said.
        error: IngestdError | None = self._receiver.authentication_error(
            details.invocation_metadata
        )
        if error is None:
            error = self._receiver.admission_error() or self._receiver.busy()
        if error is not None:
            return self._receiver.refuse(self._signals[details.method], error)
        return handler


def _authorization(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    return _metadata_value(context.invocation_metadata(), "authorization")


def _metadata_value(metadata: Any, name: str) -> str | None:
    for key, value in metadata or ():
        if key == name:
            return value if isinstance(value, str) else bytes(value).decode("latin-1")
    return None


async def _abort(context: grpc.aio.ServicerContext[Any, Any], failure: statuses.Status) -> NoReturn:
    """End the RPC with *failure* (google.rpc.Status details carry RetryInfo when retryable)."""
    rpc = rpc_status.to_status(statuses.rpc_status(failure))
    # grpc-stubs lacks abort_with_status on the aio context; grpc.aio has it and it raises.
    await context.abort_with_status(rpc)  # type: ignore[attr-defined]
    raise AssertionError("abort_with_status returned")


# grpc_compression_algorithm values; identity (0) is always on.
_CODEC_BITS = {"deflate": 1 << 1, "gzip": 1 << 2}


def _codec_bits(config: GrpcReceiverConfig) -> int:
    return 1 | sum(_CODEC_BITS[codec] for codec in set(config.compression_algorithms))
