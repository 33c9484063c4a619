"""Native vs Python traces codec: byte-identical COPY payloads, rejects and dimension rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from ingestd.convert.wire import TRACES_REQUEST
from ingestd.model import Signal
from ingestd.receiver.otlp_json import parse_json
from tests.fuzz import strategies
from tests.fuzz.differential import NOW_NS, compare
from tests.wire import mutated, varint

EXAMPLES = Path(__file__).parents[2] / "data" / "otlp-examples"


def _kv(key: str, **value: object) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(**value))


def _span(**fields: object) -> trace_pb2.Span:
    base: dict[str, object] = {
        "trace_id": b"\x01" * 16,
        "span_id": b"\x02" * 8,
        "name": "GET /",
        "start_time_unix_nano": NOW_NS - 10**9,
        "end_time_unix_nano": NOW_NS,
    }
    base.update(fields)
    return trace_pb2.Span(**base)


def _body(*spans: trace_pb2.Span, resource: resource_pb2.Resource | None = None) -> bytes:
    request = trace_service_pb2.ExportTraceServiceRequest()
    rs = request.resource_spans.add(schema_url="https://s/1")
    rs.resource.CopyFrom(
        resource or resource_pb2.Resource(attributes=[_kv("service.name", string_value="api")])
    )
    ss = rs.scope_spans.add()
    ss.scope.name = "lib"
    ss.spans.extend(spans)
    return request.SerializeToString()


def test_example_file_is_identical() -> None:
    """The opentelemetry-proto trace example converts to the same bytes in both codecs."""
    request = parse_json(Signal.TRACES, (EXAMPLES / "trace.json").read_bytes())
    out = compare(Signal.TRACES, request.SerializeToString())
    assert out["items"] >= 1


HOSTILE = {
    "nul everywhere": _span(
        name="a\x00b",
        trace_state="t\x00",
        status=trace_pb2.Status(message="\x00", code=2),
        attributes=[_kv("k\x00", string_value="v\x00"), _kv("k\ufffd", int_value=1)],
        events=[trace_pb2.Span.Event(name="e\x00", attributes=[_kv("x", string_value="\x00")])],
    ),
    "floats": _span(
        attributes=[
            _kv("nan", double_value=float("nan")),
            _kv("inf", double_value=float("-inf")),
            _kv("big", double_value=1e300),
            _kv("small", double_value=5e-324),
            _kv("neg0", double_value=-0.0),
        ]
    ),
    "nested and duplicate keys": _span(
        attributes=[
            _kv(
                "m",
                kvlist_value=common_pb2.KeyValueList(
                    values=[
                        _kv("a", int_value=1),
                        _kv("b", bool_value=True),
                        _kv("a", bytes_value=b"\xff"),
                    ]
                ),
            ),
            _kv(
                "m",
                array_value=common_pb2.ArrayValue(
                    values=[common_pb2.AnyValue(), common_pb2.AnyValue(string_value="x")]
                ),
            ),
            _kv("empty"),
        ]
    ),
    "bad ids": _span(trace_id=b"\x00" * 16),
    "short span id": _span(span_id=b"\x01"),
    "bad parent": _span(parent_span_id=b"\x01\x02"),
    "no start": _span(start_time_unix_nano=0),
    "future": _span(end_time_unix_nano=NOW_NS + 10**15),
    "beyond int64": _span(end_time_unix_nano=2**63 + 5),
    "end before start": _span(start_time_unix_nano=NOW_NS, end_time_unix_nano=NOW_NS - 1),
    "enum overflow": _span(kind=40000, name="\u202e\x07'\""),
    "negative enum": _span(kind=-5, status=trace_pb2.Status(code=-32768)),
    "uint32 edges": _span(
        flags=2**32 - 1, dropped_attributes_count=2**32 - 1, dropped_events_count=2**31
    ),
    "links": _span(
        links=[
            trace_pb2.Span.Link(
                trace_id=b"\xab" * 3,
                span_id=b"",
                trace_state="\x00",
                flags=7,
                attributes=[_kv("l", int_value=-(2**63))],
            )
        ]
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_span_is_identical(case: str) -> None:
    """Each hostile span gets the same row or the same reject from both codecs."""
    compare(Signal.TRACES, _body(HOSTILE[case], _span(span_id=b"\x03" * 8)))


def test_identity_edge_cases_are_identical() -> None:
    """service.name missing, empty, non-string, or NUL-bearing: the same application rows."""
    for attributes in (
        [],
        [_kv("service.name", string_value="")],
        [_kv("service.name", int_value=42), _kv("deployment.environment.name", double_value=1.5)],
        [
            _kv(
                "service.name",
                array_value=common_pb2.ArrayValue(
                    values=[common_pb2.AnyValue(string_value="\x00")]
                ),
            )
        ],
        [
            _kv("service.name"),
            _kv("service.namespace", string_value="n\x00s"),
            _kv("deployment.environment", bool_value=False),
        ],
    ):
        compare(
            Signal.TRACES, _body(_span(), resource=resource_pb2.Resource(attributes=attributes))
        )


def test_application_id_override_is_identical() -> None:
    """A request bound to a registered application: both codecs use the given id on every row
    and write no applications row for it (the row is Deep Eyes')."""
    out = compare(Signal.TRACES, _body(_span()), application_id="0123456789abcdef")
    assert out["applications"] == {}
    assert out["items"] == 1
    assert b"0123456789abcdef" in out["data"]


def test_bad_attribute_bytes_are_identical() -> None:
    """A span attribute that is not a KeyValue is refused alone, with the same message."""
    good = _body(_span(attributes=[_kv("ok", string_value="x")]))
    bad = good.replace(b"\x0a\x02ok", b"\x0a\x02o\xff")
    out = compare(Signal.TRACES, bad)
    assert out["reasons"] == {"bad_attribute": 1}


def test_deep_attribute_is_identical() -> None:
    """Attributes nested near and past the protobuf depth limit: same rows or rejects."""
    for depth in (40, 48, 49, 50, 51, 60):
        value = b"\x0a\x01x"  # AnyValue{string_value: "x"}
        for _ in range(depth):
            array = b"\x0a" + varint(len(value)) + value  # ArrayValue{values: [value]}
            value = b"\x2a" + varint(len(array)) + array  # AnyValue{array_value: ...}
        raw = b"\x0a\x01d\x12" + varint(len(value)) + value  # KeyValue{key: "d", value}
        request = TRACES_REQUEST.FromString(_body(_span()))
        request.resource_spans[0].scope_spans[0].spans[0].attributes.append(raw)
        compare(Signal.TRACES, request.SerializeToString())


def test_unknown_and_repeated_fields_are_identical() -> None:
    """Unknown fields, repeated scalars and split sub-messages hash and convert the same."""
    body = bytearray(_body(_span()))
    body += b"\x0a\x07\x0a\x05\x50\x05\x10\x03\x98\x01\x07"  # a 2nd resource_spans, odd fields
    compare(Signal.TRACES, bytes(body))
    compare(Signal.TRACES, b"\x0a\x00" * 3)
    compare(Signal.TRACES, b"\xff\xff")
    # Fuzz findings (2026-12-04): field numbers past 2^29-1 are refused; inside an unknown
    # group upb skips fields by wire type, field number 0 included.
    compare(Signal.TRACES, bytes.fromhex("8a100a001a0c303030f0908080f09080800a"))
    compare(Signal.TRACES, bytes.fromhex("0b190a05108080800112100a001a0c30303030"))
    assert compare(Signal.TRACES, bytes.fromhex("0b100a001a0c")) != "BadRequest"


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(strategies.TRACES)
def test_generated_requests_are_identical(
    request: trace_service_pb2.ExportTraceServiceRequest,
) -> None:
    """Hypothesis-built requests (tests/fuzz/strategies.py) convert identically."""
    compare(Signal.TRACES, request.SerializeToString())


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(strategies.TRACES, st.data())
def test_mutated_requests_are_identical(
    request: trace_service_pb2.ExportTraceServiceRequest, data: st.DataObject
) -> None:
    """Generated requests with bytes flipped, cut or inserted: same verdict and same output."""
    compare(Signal.TRACES, mutated(request.SerializeToString(), data))


def test_decoded_json_request_is_identical() -> None:
    """An OTLP/JSON request reaches the native codec decoded; it converts the same."""
    from ingestd.convert import native
    from ingestd.convert.traces import TraceConverter

    request = parse_json(Signal.TRACES, (EXAMPLES / "trace.json").read_bytes())
    clock = lambda: NOW_NS  # noqa: E731
    python = TraceConverter(max_future_skew_s=3600, clock_ns=clock)(request)
    compiled = native.NativeTraceConverter(max_future_skew_s=3600, clock_ns=clock)(request)
    assert compiled.payload.data == python.payload.data
    assert compiled.payload.resources == python.payload.resources
