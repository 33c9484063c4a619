"""The one table that maps outcomes to gRPC and HTTP statuses, with retry hints."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

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
    UnsupportedMedia,
)
from ingestd.receiver import status

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("error", "code", "http", "retry"),
    [
        (PayloadTooLarge("big"), grpc.StatusCode.RESOURCE_EXHAUSTED, 413, None),
        (UnsupportedMedia("zip"), grpc.StatusCode.INVALID_ARGUMENT, 415, None),
        (BadRequest("garbage"), grpc.StatusCode.INVALID_ARGUMENT, 400, None),
        (Unauthenticated("who"), grpc.StatusCode.UNAUTHENTICATED, 401, None),
        (RateLimited("slow down", retry_after_s=3.5), grpc.StatusCode.RESOURCE_EXHAUSTED, 429, 3.5),
        (Overloaded("full", retry_after_s=2.0), UNAVAILABLE, 503, 2.0),
        (StageClosed("stopping"), UNAVAILABLE, 503, 1.0),
        (SinkUnavailable("db down", retry_after_s=0.25), UNAVAILABLE, 503, 0.25),
        (Rejected("never"), grpc.StatusCode.INVALID_ARGUMENT, 400, None),
    ],
)
def test_each_error_class_maps_to_its_status(
    error: IngestdError, code: grpc.StatusCode, http: int, retry: float | None
) -> None:
    """Every error class gets its gRPC code, HTTP status and (only if retryable) a hint."""
    result = status.status_for(error)
    assert (result.grpc_code, result.http_status, result.retry_after_s) == (code, http, retry)
    assert result.message == error.client_message


def test_unexpected_exception_is_retryable() -> None:
    """A bug answers UNAVAILABLE with a retry hint, so no client drops data for good."""
    result = status.status_for(KeyError("x"))
    assert (result.grpc_code, result.http_status, result.retry_after_s) == (UNAVAILABLE, 503, 5.0)
    assert result.message == "internal error"


def test_retryable_status_carries_retry_info() -> None:
    """UNAVAILABLE's google.rpc.Status holds a RetryInfo with the exact delay."""
    proto = status.rpc_status(status.status_for(SinkUnavailable("down", retry_after_s=2.75)))
    assert proto.code == code_pb2.UNAVAILABLE
    assert proto.message == "storage is unavailable right now; retry later"
    (detail,) = proto.details
    info = error_details_pb2.RetryInfo()
    assert detail.Unpack(info)
    assert (info.retry_delay.seconds, info.retry_delay.nanos) == (2, 750_000_000)


def test_permanent_status_has_no_retry_info() -> None:
    """INVALID_ARGUMENT carries no RetryInfo (the client must not retry)."""
    proto = status.rpc_status(status.status_for(BadRequest("bad")))
    assert proto.code == code_pb2.INVALID_ARGUMENT
    assert list(proto.details) == []


def test_unimplemented_has_an_rpc_code() -> None:
    """UNIMPLEMENTED (a signal without a route) converts to a google.rpc.Status."""
    proto = status.rpc_status(status.Status(grpc.StatusCode.UNIMPLEMENTED, 404, None, "no logs"))
    assert proto.code == code_pb2.UNIMPLEMENTED


@pytest.mark.parametrize(("seconds", "header"), [(None, None), (0.2, "1"), (1.0, "1"), (2.1, "3")])
def test_retry_after_header_rounds_up(seconds: float | None, header: str | None) -> None:
    """HTTP Retry-After is whole seconds, rounded up, at least 1."""
    assert status.retry_after_header(status.Status(UNAVAILABLE, 503, seconds, "")) == header


@pytest.mark.parametrize(
    "error",
    [
        SinkUnavailable("traces: connection to server at db.internal (10.0.0.7), port 5432 failed"),
        Rejected("traces: value too long for type character varying(64): 'alice@corp'"),
        KeyError("/srv/ingestd/secret/path"),
    ],
)
def test_server_and_internal_text_never_reaches_the_client(error: BaseException) -> None:
    """PostgreSQL, Elasticsearch and internal error text stays in the logs, off the status."""
    answer = status.status_for(error)
    for leak in ("db.internal", "10.0.0.7", "alice", "/srv/ingestd", "KeyError", "5432"):
        assert leak not in answer.message
        assert leak not in status.rpc_status(answer).message
    assert answer.message


def test_ingestd_own_refusals_keep_their_precise_reason() -> None:
    """A refusal from ingestd's own checks (quoting the client's own input) is sent as it is."""
    text = "request body of 99999999 bytes exceeds 20971520 bytes"
    assert status.status_for(PayloadTooLarge(text)).message == text
    vouched = SinkUnavailable("traces: its sink is failing (2 of 3 replicas)", client_message="x")
    assert status.status_for(vouched).message == "x"
