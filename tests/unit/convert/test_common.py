"""Attribute encoding, derived ids and time checks shared by the trace and metric converters."""

from __future__ import annotations

import base64
import json
import math

import pytest
import xxhash
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from ingestd.convert import common, values
from ingestd.convert.common import AttributeEncoder, BadAttribute, Rows
from tests.samples import set_attributes, set_value


def value(python_value: object) -> AnyValue:
    v = AnyValue()
    set_value(v, python_value)
    return v


def raw_attributes(attributes: dict[str, object]) -> list[bytes]:
    resource = Resource()
    set_attributes(resource.attributes, attributes)
    return [kv.SerializeToString() for kv in resource.attributes]


def decoded(jsonb_value: bytes) -> object:
    assert jsonb_value[:1] == b"\x01", "binary jsonb starts with version 1"
    return json.loads(jsonb_value[1:])


@pytest.mark.parametrize(
    ("python_value", "expected"),
    [
        ("text", "text"),
        (True, True),
        (False, False),
        (0, 0),
        (2**53 + 1, 2**53 + 1),
        (-(2**63), -(2**63)),
        (2**63 - 1, 2**63 - 1),
        (1.5, 1.5),
        ([1, "a", [2.5, None]], [1, "a", [2.5, None]]),
        ({"k": {"nested": [True]}}, {"k": {"nested": [True]}}),
    ],
)
def test_any_value_kinds_survive_json(python_value: object, expected: object) -> None:
    """Every plain AnyValue kind becomes the JSON value of the same type and exact value."""
    data, _ = common.dumps(values.any_value(value(python_value)))
    assert json.loads(data) == expected
    assert type(json.loads(data)) is type(expected)


def test_empty_value_is_null() -> None:
    """An AnyValue with no kind set becomes JSON null."""
    assert values.any_value(AnyValue()) is None


def test_whole_double_keeps_a_fraction() -> None:
    """A finite double with no fractional part is written as 1.0, so it reads back as a float."""
    data, _ = common.dumps(values.any_value(value(1.0)))
    assert data == b"1.0"


@pytest.mark.parametrize(
    ("double", "tag"),
    [(math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity")],
)
def test_non_finite_doubles_are_tagged(double: float, tag: str) -> None:
    """NaN and the infinities, which JSON cannot hold, become {"$double": ...}."""
    assert values.any_value(value(double)) == {"$double": tag}


def test_bytes_are_tagged_base64() -> None:
    """A bytes value becomes {"$bytes": standard base64} with its exact bytes."""
    raw = bytes(range(256))
    tagged = values.any_value(value(raw))
    assert tagged == {"$bytes": base64.b64encode(raw).decode()}
    assert base64.b64decode(tagged["$bytes"]) == raw


def test_nul_is_replaced_and_counted() -> None:
    """NUL in keys and values becomes U+FFFD, and each one is counted."""
    encoder = AttributeEncoder()
    out = encoder.jsonb(raw_attributes({"a\x00": "x\x00y\x00", "ok": "fine"}))
    assert decoded(out) == {"a\ufffd": "x\ufffdy\ufffd", "ok": "fine"}
    assert encoder.nul_replaced == 3
    encoder.jsonb(raw_attributes({"a\x00": "x\x00y\x00", "ok": "fine"}))
    assert encoder.nul_replaced == 6, "NUL-bearing attributes are not cached, so each is counted"


def test_escaped_backslash_before_u0000_text_is_not_touched() -> None:
    """The literal text backslash-u0000 (not a NUL) is kept as it is."""
    data, count = common.dumps({"k": "\\u0000 and \x00"})
    assert count == 1
    assert json.loads(data) == {"k": "\\u0000 and \ufffd"}


def test_nul_inside_nested_values_is_replaced() -> None:
    """NUL inside arrays and key-value lists is replaced too."""
    encoder = AttributeEncoder()
    out = encoder.jsonb(raw_attributes({"arr": ["\x00", {"in\x00": 1}]}))
    assert decoded(out) == {"arr": ["\ufffd", {"in\ufffd": 1}]}
    assert encoder.nul_replaced == 2


def test_encoder_cache_gives_identical_results() -> None:
    """A cached attribute list encodes to the same bytes as the first time."""
    encoder = AttributeEncoder()
    raws = raw_attributes({"http.method": "GET", "n": 2**60, "f": math.inf, "b": b"\x00\xff"})
    first = encoder.jsonb_memo(raws)
    assert encoder.jsonb_memo(list(raws)) == first
    assert encoder.jsonb(raws) == first
    assert decoded(first) == {
        "http.method": "GET",
        "n": 2**60,
        "f": {"$double": "Infinity"},
        "b": {"$bytes": "AP8="},
    }


def test_repeated_key_keeps_the_last_value() -> None:
    """Two attributes with one key: the last wins, as jsonb itself would keep it."""
    raws = raw_attributes({"k": 1}) + raw_attributes({"k": 2})
    assert decoded(AttributeEncoder().jsonb(raws)) == {"k": 2}


def test_cache_is_bounded() -> None:
    """The caches empty themselves past their byte budget and keep answering correctly."""
    encoder = AttributeEncoder(max_bytes=6000)
    for i in range(500):
        raws = raw_attributes({"id": f"value-{i}"})
        assert decoded(encoder.jsonb_memo(raws)) == {"id": f"value-{i}"}
        assert encoder.as_dict(raws) == {"id": f"value-{i}"}
    assert 0 < len(encoder._lists) < 100
    assert 0 < len(encoder._members) < 100
    assert 0 < len(encoder._pairs) < 100


def test_undecodable_attribute_raises_bad_attribute() -> None:
    """Raw bytes that are not a KeyValue raise BadAttribute (the record is rejected alone)."""
    with pytest.raises(BadAttribute):
        AttributeEncoder().jsonb([b"\x0a\xff"])


def test_resource_and_scope_ids_are_signed_xxh3_of_serialization_and_url() -> None:
    """resourceId/scopeId = signed xxh3_64 of the deterministic serialization + schema URL."""
    resource = Resource()
    set_attributes(resource.attributes, {"service.name": "api"})
    data = resource.SerializeToString(deterministic=True) + b"https://schema/1"
    unsigned = xxhash.xxh3_64_intdigest(data)
    expected = unsigned - 2**64 if unsigned >= 2**63 else unsigned
    assert common.message_id(resource, "https://schema/1") == expected
    scope = InstrumentationScope(name="lib", version="1")
    unsigned = xxhash.xxh3_64_intdigest(scope.SerializeToString(deterministic=True))
    assert common.message_id(scope, "") == (unsigned - 2**64 if unsigned >= 2**63 else unsigned)


def test_add_resource_fills_dimension_rows() -> None:
    """A resource yields its resources row and its applications row."""
    rows = Rows()
    resource = Resource(dropped_attributes_count=3)
    set_attributes(resource.attributes, {"service.name": "api", "service.namespace": "n"})
    info, nul = common.add_resource(rows, resource, "url")
    assert nul == 0
    attrs, dropped, url = rows.resources[info.resource_id]
    assert (decoded(attrs), dropped, url) == (
        {"service.name": "api", "service.namespace": "n"},
        3,
        "url",
    )
    assert rows.applications[info.application_id] == ("api", "n", "")


def test_add_scope_fills_its_row() -> None:
    """A scope yields (name, version, attributes, dropped, schema URL)."""
    rows = Rows()
    scope = InstrumentationScope(name="lib", version="2.0", dropped_attributes_count=1)
    scope.attributes.append(KeyValue(key="k", value=AnyValue(string_value="v")))
    scope_id, _ = common.add_scope(rows, scope, "s")
    name, version, attrs, dropped, url = rows.scopes[scope_id]
    assert (name, version, decoded(attrs), dropped, url) == ("lib", "2.0", {"k": "v"}, 1, "s")


@pytest.mark.parametrize(
    ("unix_nano", "problem"),
    [
        (0, "timestamp_missing"),
        (1, None),
        (2_000, None),
        (2_001, "timestamp_in_future"),
        (2**63, "timestamp_out_of_range"),
    ],
)
def test_time_problem(unix_nano: int, problem: str | None) -> None:
    """Zero, beyond bigint, and later than the allowed maximum are refused; the rest is fine."""
    assert common.time_problem(unix_nano, 2_000) == problem


def test_pg_micros_is_microseconds_since_2000() -> None:
    """timestamptz's binary value: floor(ns / 1000) minus the 2000-01-01 epoch."""
    assert common.pg_micros(946_684_800_000_000_000) == 0
    assert common.pg_micros(946_684_800_000_001_999) == 1
