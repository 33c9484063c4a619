"""OTLP spans -> `traces` rows, field by field, and the spans that are rejected alone."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from ingestd.convert import traces, wire
from ingestd.convert.common import PG_EPOCH_US, AttributeEncoder
from ingestd.convert.identity import application_id_of
from ingestd.model import Converted
from tests.samples import set_attributes

NOW = 1_700_000_000_123_456_789
COLUMN = {name: i for i, (name, _) in enumerate(traces.COLUMNS)}
TRACE_ID = bytes(range(1, 17))
SPAN_ID = bytes(range(21, 29))
PARENT_ID = bytes(range(31, 39))


def request(*spans: Span, resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    set_attributes(rs.resource.attributes, resource or {"service.name": "api"})
    rs.schema_url = "https://opentelemetry.io/schemas/1.21.0"
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = "lib", "1.0"
    ss.spans.extend(spans)
    return req


def span(**fields: Any) -> Span:
    s = Span(
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        name="GET /x",
        start_time_unix_nano=NOW,
        end_time_unix_nano=NOW + 1_500,
    )
    for key, value in fields.items():
        setattr(s, key, value)
    return s


def convert(req: Any, *, max_time: int = NOW + 10**12) -> Converted:
    return traces.convert(req, AttributeEncoder(), max_time_unix_nano=max_time)


def row_of(converted: Converted, i: int = 0) -> dict[str, Any]:
    return dict(zip(COLUMN, converted.payload.rows[i], strict=True))


def test_every_column_of_a_full_span() -> None:
    """Each column holds the span's value: exact ids, nanoseconds, status, JSON, counts."""
    s = span(
        parent_span_id=PARENT_ID,
        trace_state="k=v",
        flags=0x301,
        kind=Span.SPAN_KIND_CLIENT,
        dropped_attributes_count=1,
        dropped_events_count=2,
        dropped_links_count=3,
    )
    s.status.code, s.status.message = 2, "boom"
    set_attributes(s.attributes, {"http.method": "GET", "big": 2**62 + 1, "ratio": 0.25})
    event = s.events.add(time_unix_nano=NOW + 7, name="exception", dropped_attributes_count=4)
    set_attributes(event.attributes, {"exception.type": "ValueError"})
    link = s.links.add(trace_id=bytes(16 * [0xAB]), span_id=bytes(8 * [0xCD]), trace_state="l=1")
    link.flags, link.dropped_attributes_count = 0x100, 5
    set_attributes(link.attributes, {"linked": True})

    converted = convert(request(s))
    row = row_of(converted)
    rows = converted.payload
    assert converted.items == 1
    assert converted.rejected == 0
    assert row["starttime"] == NOW // 1000 - PG_EPOCH_US
    assert row["endtime"] == (NOW + 1_500) // 1000 - PG_EPOCH_US
    assert row["starttimeunixnano"] == NOW
    assert row["durationnano"] == 1_500
    assert (row["traceid"], row["spanid"], row["parentspanid"]) == (TRACE_ID, SPAN_ID, PARENT_ID)
    assert (row["tracestate"], row["flags"], row["name"]) == ("k=v", 0x301, "GET /x")
    assert (row["kind"], row["statuscode"], row["statusmessage"]) == (3, 2, "boom")
    assert json.loads(row["attributes"][1:]) == {
        "http.method": "GET",
        "big": 2**62 + 1,
        "ratio": 0.25,
    }
    assert json.loads(row["events"][1:]) == [
        {
            "timeUnixNano": NOW + 7,
            "name": "exception",
            "attributes": {"exception.type": "ValueError"},
            "droppedAttributesCount": 4,
        }
    ]
    assert json.loads(row["links"][1:]) == [
        {
            "traceId": "ab" * 16,
            "spanId": "cd" * 8,
            "traceState": "l=1",
            "flags": 0x100,
            "attributes": {"linked": True},
            "droppedAttributesCount": 5,
        }
    ]
    assert (row["droppedattributescount"], row["droppedeventscount"], row["droppedlinkscount"]) == (
        1,
        2,
        3,
    )
    assert row["applicationid"] == application_id_of("", "api", "")
    assert row["resourceid"] in rows.resources
    assert row["scopeid"] in rows.scopes
    assert rows.scopes[row["scopeid"]][:2] == ("lib", "1.0")
    assert rows.applications == {row["applicationid"]: ("api", "", "")}


def test_minimal_span_has_nulls_and_empty_json() -> None:
    """No parent, events or links: parentSpanId, events and links are NULL; attributes {}."""
    row = row_of(convert(request(span())))
    assert row["parentspanid"] is None
    assert row["events"] is None
    assert row["links"] is None
    assert row["attributes"] == b"\x01{}"
    assert (row["statuscode"], row["statusmessage"], row["tracestate"]) == (0, "", "")


def test_nanoseconds_are_kept_exactly() -> None:
    """startTimeUnixNano and durationNano keep nanoseconds the timestamptz columns drop."""
    whole_micro = NOW - NOW % 1000
    s = span(start_time_unix_nano=whole_micro + 1, end_time_unix_nano=whole_micro + 999)
    row = row_of(convert(request(s)))
    assert row["starttimeunixnano"] == whole_micro + 1
    assert row["durationnano"] == 998
    assert row["starttime"] == row["endtime"], "both fall in the same microsecond"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"trace_id": bytes(15)}, "bad_trace_id"),
        ({"trace_id": bytes(16)}, "bad_trace_id"),
        ({"trace_id": b""}, "bad_trace_id"),
        ({"span_id": bytes(range(1, 10))}, "bad_span_id"),
        ({"span_id": bytes(8)}, "bad_span_id"),
        ({"parent_span_id": b"\x01\x02"}, "bad_parent_span_id"),
        ({"start_time_unix_nano": 0}, "timestamp_missing"),
        ({"end_time_unix_nano": 0}, "timestamp_missing"),
        ({"end_time_unix_nano": NOW - 1}, "end_before_start"),
        ({"end_time_unix_nano": NOW + 10**13}, "timestamp_in_future"),
        ({"end_time_unix_nano": 2**64 - 1}, "timestamp_out_of_range"),
    ],
)
def test_unstorable_span_is_rejected_alone(fields: dict[str, Any], reason: str) -> None:
    """A bad span is rejected with its reason and an example; the good ones are kept."""
    good_before, good_after = span(name="ok1"), span(name="ok2")
    converted = convert(request(good_before, span(name="bad", **fields), good_after))
    assert converted.items == 2
    assert [r[COLUMN["name"]] for r in converted.payload.rows] == ["ok1", "ok2"]
    assert converted.rejected == 1
    assert converted.reject_reasons == {reason: 1}
    assert "'bad'" in converted.reject_example


def test_undecodable_attribute_rejects_its_span() -> None:
    """A span whose raw attribute bytes do not decode is rejected, the others stored."""
    req = wire.as_fast(wire.TRACES_REQUEST, request(span(name="bad"), span(name="ok")))
    req.resource_spans[0].scope_spans[0].spans[0].attributes.append(b"\x0a\xff\xff")
    converted = convert(req)
    assert converted.reject_reasons == {"bad_attribute": 1}
    assert [r[COLUMN["name"]] for r in converted.payload.rows] == ["ok"]


def test_nul_in_text_columns_is_replaced_and_counted() -> None:
    """NUL in name, trace state and status message becomes U+FFFD, counted per character."""
    s = span(name="a\x00b", trace_state="\x00")
    s.status.message = "m\x00\x00"
    converted = convert(request(s))
    row = row_of(converted)
    assert (row["name"], row["tracestate"], row["statusmessage"]) == (
        "a\ufffdb",
        "\ufffd",
        "m\ufffd\ufffd",
    )
    assert converted.nul_replaced == 4


def test_resource_and_scope_are_converted_once_per_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """add_resource/add_scope run once per ResourceSpans/ScopeSpans, not once per span."""
    calls = {"resource": 0, "scope": 0}
    real_resource, real_scope = traces.add_resource, traces.add_scope

    def count_resource(*args: Any, **kwargs: Any) -> Any:
        calls["resource"] += 1
        return real_resource(*args, **kwargs)

    def count_scope(*args: Any) -> Any:
        calls["scope"] += 1
        return real_scope(*args)

    monkeypatch.setattr(traces, "add_resource", count_resource)
    monkeypatch.setattr(traces, "add_scope", count_scope)
    req = request(*(span() for _ in range(50)))
    second = req.resource_spans.add()
    second.CopyFrom(req.resource_spans[0])
    second.scope_spans.add().CopyFrom(second.scope_spans[0])
    converted = convert(req)
    assert converted.items == 150
    assert calls == {"resource": 2, "scope": 3}
    assert len(converted.payload.resources) == 1, "identical resources share one dimension row"


def test_official_and_fast_messages_convert_alike() -> None:
    """A request parsed into the official classes converts exactly like the fast classes."""
    s = span()
    set_attributes(s.attributes, {"a": [1, {"b": None}], "c": b"x"})
    official = request(s)
    fast = wire.TRACES_REQUEST.FromString(official.SerializeToString())
    assert convert(official).payload.rows == convert(fast).payload.rows


def test_several_resources_keep_their_own_application() -> None:
    """Spans take the application and resource ids of their own ResourceSpans."""
    req = request(span(), resource={"service.name": "a"})
    other = ResourceSpans()
    set_attributes(other.resource.attributes, {"service.name": "b", "deployment.environment": "e"})
    other.scope_spans.add().spans.append(span())
    req.resource_spans.append(other)
    converted = convert(req)
    apps = [r[COLUMN["applicationid"]] for r in converted.payload.rows]
    assert apps == [application_id_of("", "a", ""), application_id_of("", "b", "e")]
    assert len({r[COLUMN["resourceid"]] for r in converted.payload.rows}) == 2


def test_converter_uses_its_clock_for_the_future_limit() -> None:
    """TraceConverter refuses spans beyond now + max_future_skew_s by its injected clock."""
    converter = traces.TraceConverter(max_future_skew_s=1.0, clock_ns=lambda: NOW)
    converted = converter(request(span(end_time_unix_nano=NOW + 2_000_000_000), span()))
    assert converted.reject_reasons == {"timestamp_in_future": 1}
    assert converted.items == 1


def test_registered_application_id_overrides_the_resource() -> None:
    """An ingest key's application id is every row's, and no derived application row is made."""
    converted = traces.convert(
        request(span(), span(span_id=b"\x02" * 8), resource={"service.name": "someone-else"}),
        AttributeEncoder(),
        max_time_unix_nano=NOW + 10**12,
        application_id="app-7",
    )
    assert {row_of(converted, i)["applicationid"] for i in range(2)} == {"app-7"}
    assert converted.payload.applications == {}
    assert convert(request(span())).payload.applications  # without a key: derived, recorded
