"""Shared by both transports: protobuf decoding, responses and request keys.

A request's key identifies it across retries, replicas and restarts: a 128-bit xxh3 hash of the
decompressed body together with the signal and the tenant. It is what dedup and the Timescale
ledger remember, so a retried request is stored once.
"""

from __future__ import annotations

from typing import Any

import xxhash
from google.protobuf.message import DecodeError

from ingestd.errors import BadRequest
from ingestd.model import ExportResult, Signal
from ingestd.signals import SIGNALS


def request_key(signal: Signal, tenant: str, body: bytes) -> bytes:
    """16 bytes that identify this request's content for this signal and tenant."""
    hasher = xxhash.xxh3_128(signal.value.encode())
    hasher.update(b"\x00")
    hasher.update(tenant.encode())
    hasher.update(b"\x00")
    hasher.update(body)
    return hasher.digest()


def parse_protobuf(signal: Signal, body: bytes) -> Any:
    """Decode an OTLP protobuf export request; BadRequest when the bytes are not one.

    The message is the signal's `decode_type`: for traces and metrics `convert.wire`'s classes
    (same wire format, record attributes kept as raw bytes for the converters' cache).
    """
    message = SIGNALS[signal].decode_type()
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise BadRequest(f"not a valid OTLP {signal} export request: {exc}") from exc
    return message


def response(signal: Signal, result: ExportResult) -> Any:
    """The Export*ServiceResponse for *result*; partial_success is set only when needed."""
    spec = SIGNALS[signal]
    message = spec.response_type()
    if result.rejected or result.message:
        setattr(message.partial_success, spec.rejected_field, result.rejected)
        message.partial_success.error_message = result.message
    return message
