"""OTLP request classes for the hot path: the same wire format, with record attributes left raw.

Reading a KeyValue through upb costs ~0.7 us in Python (key, value, WhichOneof, the value: four
calls that each build an object), and a span or a data point carries ~10 of them. These classes
are generated from the official descriptors with one change: the `attributes` of spans, span
events, span links and the four data point kinds are declared `repeated bytes`, which has the
same wire encoding as `repeated KeyValue`. Parsing then yields each attribute's serialized
bytes, which `convert.common.AttributeEncoder` turns into JSON through a cache keyed by those
bytes: attribute sets repeat across records (every series of a metric, every span of a route),
so most records never touch a KeyValue object. Everything else (resource, scope, ids, times)
parses exactly as in the official classes.

`as_fast(cls, request)` accepts an official message too (OTLP/JSON requests are parsed into
those) and re-encodes it, so converters only ever see these classes.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from ingestd.errors import BadRequest

# (message name within its file, field name) whose `repeated KeyValue` becomes `repeated bytes`.
_RAW_ATTRIBUTES = {
    trace_pb2.DESCRIPTOR: {
        "Span": "attributes",
        "Span.Event": "attributes",
        "Span.Link": "attributes",
    },
    metrics_pb2.DESCRIPTOR: {
        "NumberDataPoint": "attributes",
        "HistogramDataPoint": "attributes",
        "ExponentialHistogramDataPoint": "attributes",
        "SummaryDataPoint": "attributes",
    },
}


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for module in (
        common_pb2,
        resource_pb2,
        trace_pb2,
        metrics_pb2,
        trace_service_pb2,
        metrics_service_pb2,
    ):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        for path, field_name in _RAW_ATTRIBUTES.get(module.DESCRIPTOR, {}).items():
            _make_raw(_find_message(proto, path), field_name)
        pool.Add(proto)
    return pool


def _find_message(
    proto: descriptor_pb2.FileDescriptorProto, path: str
) -> descriptor_pb2.DescriptorProto:
    first, *rest = path.split(".")
    message = next(m for m in proto.message_type if m.name == first)
    for name in rest:
        message = next(m for m in message.nested_type if m.name == name)
    return message


def _make_raw(message: descriptor_pb2.DescriptorProto, field_name: str) -> None:
    field = next(f for f in message.field if f.name == field_name)
    if field.type_name != ".opentelemetry.proto.common.v1.KeyValue":
        raise RuntimeError(f"{message.name}.{field_name} is not a KeyValue list")
    field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
    field.ClearField("type_name")


_POOL = _build_pool()


def _message_class(full_name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(full_name))


TRACES_REQUEST: Any = _message_class(
    "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest"
)
METRICS_REQUEST: Any = _message_class(
    "opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest"
)


def as_fast(cls: Any, request: Message) -> Any:
    """*request* as *cls*, one of this module's classes (re-encoded if it is an official one).

    BadRequest when the request nests deeper than protobuf parsing allows (100 levels): an
    OTLP/JSON request is built without that limit, and its protobuf form would be refused too.
    """
    if isinstance(request, cls):
        return request
    try:
        return cls.FromString(request.SerializeToString())
    except DecodeError as exc:
        raise BadRequest(
            f"{cls.DESCRIPTOR.name} nests deeper than OTLP protobuf allows: {exc}"
        ) from exc
