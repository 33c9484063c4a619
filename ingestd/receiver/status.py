"""The one table that maps an outcome to an OTLP status on both transports.

Follows the OTLP specification: retryable conditions carry a retry hint (gRPC RetryInfo,
HTTP Retry-After), RESOURCE_EXHAUSTED is only sent with RetryInfo when retrying helps (rate
limits), and permanent problems use codes clients must not retry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from ingestd.errors import (
    BadRequest,
    IngestdError,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    Rejected,
    SinkUnavailable,
    StageClosed,
    Unauthenticated,
    Unimplemented,
    UnsupportedMedia,
)


@dataclass(frozen=True, slots=True)
class Status:
    grpc_code: grpc.StatusCode
    http_status: int
    # Seconds the client should wait; None for permanent failures.
    retry_after_s: float | None
    message: str


# error class -> (gRPC code, HTTP status, retryable). The first matching class wins, so
# subclasses come before their bases.
_TABLE: tuple[tuple[type[IngestdError], grpc.StatusCode, int, bool], ...] = (
    (PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED, 413, False),
    (UnsupportedMedia, grpc.StatusCode.INVALID_ARGUMENT, 415, False),
    (BadRequest, grpc.StatusCode.INVALID_ARGUMENT, 400, False),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, 401, False),
    (Unimplemented, grpc.StatusCode.UNIMPLEMENTED, 404, False),
    (RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED, 429, True),
    (Overloaded, grpc.StatusCode.UNAVAILABLE, 503, True),
    (StageClosed, grpc.StatusCode.UNAVAILABLE, 503, True),
    (SinkUnavailable, grpc.StatusCode.UNAVAILABLE, 503, True),
    (Rejected, grpc.StatusCode.INVALID_ARGUMENT, 400, False),
)

# A bug or an unexpected failure: answer retryable so that nothing is lost for good; the
# OTLP clients give up after their own deadline if it keeps happening.
_DEFAULT_RETRY_S = 5.0


def status_for(exc: BaseException) -> Status:
    """The status to answer for *exc*."""
    if isinstance(exc, IngestdError):
        for cls, code, http, retryable in _TABLE:
            if isinstance(exc, cls):
                hint = (exc.retry_after_s or 1.0) if retryable else None
                return Status(code, http, hint, exc.client_message)
    # The exception's text (and class) stays in the log the receiver writes.
    return Status(grpc.StatusCode.UNAVAILABLE, 503, _DEFAULT_RETRY_S, "internal error")


def rpc_status(status: Status) -> status_pb2.Status:
    """A google.rpc.Status carrying RetryInfo when the status is retryable."""
    proto = status_pb2.Status(code=_RPC_CODES[status.grpc_code], message=status.message[:1024])
    if status.retry_after_s is not None:
        whole = math.floor(status.retry_after_s)
        info = error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(
                seconds=whole, nanos=int((status.retry_after_s - whole) * 1e9)
            )
        )
        detail = any_pb2.Any()
        detail.Pack(info)
        proto.details.append(detail)
    return proto


def retry_after_header(status: Status) -> str | None:
    """HTTP Retry-After value: whole seconds, rounded up (RFC 9110 allows no fractions)."""
    if status.retry_after_s is None:
        return None
    return str(max(1, math.ceil(status.retry_after_s)))


_RPC_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
    grpc.StatusCode.UNIMPLEMENTED: code_pb2.UNIMPLEMENTED,
    grpc.StatusCode.UNAVAILABLE: code_pb2.UNAVAILABLE,
    grpc.StatusCode.INTERNAL: code_pb2.INTERNAL,
    grpc.StatusCode.UNIMPLEMENTED: code_pb2.UNIMPLEMENTED,
}
