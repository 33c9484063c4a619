"""Shared by both transports: the OTLP message types per signal, protobuf decoding, request keys.

A request's key identifies it across retries, replicas and restarts: a 128-bit xxh3 hash of the
decompressed body together with the signal and the tenant. It is what dedup and the Timescale
ledger remember, so a retried request is stored once.
"""

from __future__ import annotations

from typing import Any

import xxhash
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from ingestd.convert.wire import FAST_REQUEST_TYPES
from ingestd.errors import BadRequest
from ingestd.model import ExportResult, Signal

REQUEST_TYPES: dict[Signal, Any] = {
    Signal.TRACES: trace_service_pb2.ExportTraceServiceRequest,
    Signal.METRICS: metrics_service_pb2.ExportMetricsServiceRequest,
    Signal.LOGS: logs_service_pb2.ExportLogsServiceRequest,
}

RESPONSE_TYPES: dict[Signal, Any] = {
    Signal.TRACES: trace_service_pb2.ExportTraceServiceResponse,
    Signal.METRICS: metrics_service_pb2.ExportMetricsServiceResponse,
    Signal.LOGS: logs_service_pb2.ExportLogsServiceResponse,
}

# The partial_success field that counts refused records, per signal.
REJECTED_FIELD: dict[Signal, str] = {
    Signal.TRACES: "rejected_spans",
    Signal.METRICS: "rejected_data_points",
    Signal.LOGS: "rejected_log_records",
}


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

    Traces and metrics decode into `convert.wire`'s classes (same wire format, record
    attributes kept as raw bytes for the converters' cache); other signals into the official
    classes in REQUEST_TYPES.
    """
    message = FAST_REQUEST_TYPES.get(signal, REQUEST_TYPES[signal])()
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise BadRequest(f"not a valid OTLP {signal} export request: {exc}") from exc
    return message


def response(signal: Signal, result: ExportResult) -> Any:
    """The Export*ServiceResponse for *result*; partial_success is set only when needed."""
    message = RESPONSE_TYPES[signal]()
    if result.rejected or result.message:
        setattr(message.partial_success, REJECTED_FIELD[signal], result.rejected)
        message.partial_success.error_message = result.message
    return message
