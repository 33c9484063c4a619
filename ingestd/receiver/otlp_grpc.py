"""The OTLP/gRPC receiver: the upstream-most stage, `client -> OtlpGrpcReceiver -> Ingest`.

One generic handler serves TraceService, MetricsService and LogsService `Export`. It receives the
request's raw bytes (grpc has already undone gzip and enforced `max_recv_msg_size_mib`, answering
RESOURCE_EXHAUSTED itself), keys them, decodes them, hands them to `Ingest.export`, and answers
with the OTLP response (partial success when records were refused) or aborts with the status
the one table in `receiver.status` gives, with RetryInfo when a retry can help.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, NoReturn

import grpc
import structlog
from grpc_status import rpc_status

from ingestd.auth import Authenticator
from ingestd.config import AuthConfig, GrpcReceiverConfig, TlsConfig
from ingestd.errors import IngestdError
from ingestd.ingest import ExportResult, Ingest, RequestContext, Signal
from ingestd.metrics import RECEIVER_REQUESTS
from ingestd.pipeline import remaining
from ingestd.receiver import decode, status

log = structlog.get_logger("ingestd.receiver.grpc")

SERVICES: dict[Signal, str] = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
}

MiB = 1024 * 1024


class OtlpGrpcReceiver:
    name = "receiver.grpc"

    def __init__(
        self, config: GrpcReceiverConfig, ingest: Ingest, auth: Authenticator | None = None
    ) -> None:
        self.config = config
        self._ingest = ingest
        # Without auth every request belongs to the default tenant "".
        self._auth = auth or Authenticator(AuthConfig())
        self._server: grpc.aio.Server | None = None
        self._empty: dict[Signal, bytes] = {
            signal: decode.RESPONSE_TYPES[signal]().SerializeToString() for signal in SERVICES
        }
        self.port: int | None = None

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        """Bind the endpoint and start serving; raises when the endpoint cannot be bound."""
        limit = self.config.max_recv_msg_size_mib * MiB
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                # An idle client connection costs little; pings keep NATs from dropping it.
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ]
        )
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    service,
                    {
                        "Export": grpc.unary_unary_rpc_method_handler(
                            functools.partial(self._export, signal),
                            request_deserializer=None,
                            response_serializer=None,
                        )
                    },
                )
                for signal, service in SERVICES.items()
            ]
        )
        endpoint = self.config.endpoint
        tls = self.config.tls
        try:
            if tls.enabled:
                port = server.add_secure_port(endpoint, _credentials(tls))
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
        """Refuse new RPCs at once; let in-flight ones finish within half the time left.

        The other half is for the batchers to flush what those RPCs buffered; RPCs still
        running after the grace period are cancelled (the client retries elsewhere).
        """
        if self._server is None:
            return
        server, self._server = self._server, None
        await server.stop(grace=remaining(deadline) / 2)

    async def _export(
        self, signal: Signal, body: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        outcome = "CANCELLED"  # unless an answer is reached
        try:
            if not self._ingest.accepts(signal):
                outcome = "UNIMPLEMENTED"
                await _abort(
                    context,
                    status.Status(
                        grpc.StatusCode.UNIMPLEMENTED, 404, None, f"{signal} are not accepted here"
                    ),
                )
            if not body:
                outcome = "ok"
                return self._empty[signal]
            answer = await self._answer(signal, body, _authorization(context))
            if isinstance(answer, status.Status):
                outcome = answer.grpc_code.name
                await _abort(context, answer)
            outcome = "partial" if answer.rejected else "ok"
            data: bytes = decode.response(signal, answer).SerializeToString()
            return data
        finally:
            RECEIVER_REQUESTS.labels(signal=signal, transport="grpc", status=outcome).inc()

    async def _answer(
        self, signal: Signal, body: bytes, authorization: str | None
    ) -> ExportResult | status.Status:
        """Store one request: its result, or the status to abort with."""
        try:
            # Authenticate before decoding: an unknown caller costs no parsing.
            tenant = self._auth.authenticate(authorization)
            return await self._ingest.export(
                signal,
                decode.parse_protobuf(signal, body),
                key=decode.request_key(signal, tenant, body),
                ctx=RequestContext(transport="grpc", tenant=tenant),
                wire_bytes=len(body),
            )
        except Exception as exc:
            if not isinstance(exc, IngestdError):
                log.exception("export_failed_unexpectedly", signal=str(signal))
            return status.status_for(exc)


def _authorization(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


async def _abort(context: grpc.aio.ServicerContext[Any, Any], failure: status.Status) -> NoReturn:
    """End the RPC with *failure* (google.rpc.Status details carry RetryInfo when retryable)."""
    rpc = rpc_status.to_status(status.rpc_status(failure))
    # grpc-stubs lacks abort_with_status on the aio context; grpc.aio has it and it raises.
    await context.abort_with_status(rpc)  # type: ignore[attr-defined]
    raise AssertionError("abort_with_status returned")


def _credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    assert tls.cert_file is not None
    assert tls.key_file is not None
    client_ca = tls.client_ca_file.read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
