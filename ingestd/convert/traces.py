"""OTLP traces -> rows of the `traces` table (docs/design.md), one per span. Pure, no I/O.

`convert` walks an export request once: each resource and scope is converted once, each span
becomes one tuple in `COLUMNS` order, ready for the Timescale writer's binary COPY. A span that
cannot be stored is rejected alone, counted by reason, with one example message for the
client's partial-success answer.
"""

from __future__ import annotations

from typing import Any

from ingestd.convert import copy_binary, wire
from ingestd.convert.common import (
    INT16_MAX,
    INT16_MIN,
    INT32_MAX,
    INT64_MAX,
    PG_EPOCH_US,
    AttributeEncoder,
    BadAttribute,
    Rows,
    RowsConverter,
    add_resource,
    add_scope,
    clean_text,
    int4_bits,
    int4_count,
    jsonb,
    time_problem,
)
from ingestd.convert.limits import DEFAULT_LIMITS, RequestLimits
from ingestd.model import Converted

TABLE = "traces"

# (column, binary COPY wire type). timestamptz and jsonb are sent in their binary forms as
# int8 and bytea: see ingestd.convert.common and ingestd.sinks.timescale.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("starttime", "int8"),
    ("endtime", "int8"),
    ("applicationid", "text"),
    ("traceid", "bytea"),
    ("spanid", "bytea"),
    ("parentspanid", "bytea"),
    ("tracestate", "text"),
    ("flags", "int4"),
    ("name", "text"),
    ("kind", "int2"),
    ("statuscode", "int2"),
    ("statusmessage", "text"),
    ("starttimeunixnano", "int8"),
    ("durationnano", "int8"),
    ("attributes", "bytea"),
    ("events", "bytea"),
    ("links", "bytea"),
    ("droppedattributescount", "int4"),
    ("droppedeventscount", "int4"),
    ("droppedlinkscount", "int4"),
    ("resourceid", "int8"),
    ("scopeid", "int8"),
)

TYPES = tuple(wire_type for _, wire_type in COLUMNS)

_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)


def convert(
    request: Any,
    attributes: AttributeEncoder,
    *,
    max_time_unix_nano: int,
    application_id: str = "",
    limits: RequestLimits = DEFAULT_LIMITS,
) -> Converted:
    """One ExportTraceServiceRequest -> Converted whose payload is `Rows` for `traces`."""
    request = wire.as_fast(wire.TRACES_REQUEST, request)
    out = Rows()
    converted = Converted(payload=out, items=0, nbytes=0)
    nul = 0
    nul_before = attributes.nul_replaced
    for resource_spans in request.resource_spans:
        resource, n = add_resource(
            out, resource_spans.resource, resource_spans.schema_url, override=application_id
        )
        nul += n
        for scope_spans in resource_spans.scope_spans:
            scope_id, n = add_scope(out, scope_spans.scope, scope_spans.schema_url)
            nul += n
            nul += _spans(
                scope_spans.spans,
                out.rows,
                converted,
                attributes,
                (resource.application_id, resource.resource_id, scope_id),
                min(max_time_unix_nano, INT64_MAX),
            )
    converted.items = len(out.rows)
    converted.nul_replaced = nul + attributes.nul_replaced - nul_before
    return converted


def _spans(
    spans: Any,
    rows: list[tuple[Any, ...]],
    converted: Converted,
    attributes: AttributeEncoder,
    ids: tuple[str, int, int],
    max_time: int,
) -> int:
    """Append one row per storable span (the hot loop); return the NUL count."""
    app_id, resource_id, scope_id = ids
    append = rows.append
    encode = attributes.jsonb
    nul = 0
    for span in spans:
        trace_id = span.trace_id
        span_id = span.span_id
        parent = span.parent_span_id
        start = span.start_time_unix_nano
        end = span.end_time_unix_nano
        if (
            len(trace_id) != 16
            or len(span_id) != 8
            or (parent and len(parent) != 8)
            or not 0 < start <= end <= max_time
            or trace_id == _ZERO_TRACE_ID
            or span_id == _ZERO_SPAN_ID
        ):
            reason, detail = _problem(span, max_time)
            converted.reject(reason, f"span {span.name!r}: {detail}")
            continue
        try:
            attrs = encode(span.attributes[:])
            events = span.events[:]
            events = _events(events, attributes) if events else None
            links = span.links[:]
            links = _links(links, attributes) if links else None
        except BadAttribute as exc:
            converted.reject("bad_attribute", f"span {span.name!r}: {exc}")
            continue
        name = span.name
        trace_state = span.trace_state
        status = span.status
        message = status.message
        kind, code = span.kind, status.code
        if not (INT16_MIN <= kind <= INT16_MAX and INT16_MIN <= code <= INT16_MAX):
            converted.reject(
                "enum_out_of_range", f"span {name!r}: kind {kind} or status code {code}"
            )
            continue
        flags = span.flags
        dropped = (
            span.dropped_attributes_count,
            span.dropped_events_count,
            span.dropped_links_count,
        )
        if flags > INT32_MAX or max(dropped) > INT32_MAX:
            flags = int4_bits(flags)
            dropped = (int4_count(dropped[0]), int4_count(dropped[1]), int4_count(dropped[2]))
        if "\x00" in name or "\x00" in trace_state or "\x00" in message:
            (name, n1), (trace_state, n2), (message, n3) = map(
                clean_text, (name, trace_state, message)
            )
            nul += n1 + n2 + n3
        append(
            (
                start // 1000 - PG_EPOCH_US,
                end // 1000 - PG_EPOCH_US,
                app_id,
                trace_id,
                span_id,
                parent or None,
                trace_state,
                flags,
                name,
                kind,
                code,
                message,
                start,
                end - start,
                attrs,
                events,
                links,
                *dropped,
                resource_id,
                scope_id,
            )
        )
    return nul


def _problem(span: Any, max_time: int) -> tuple[str, str]:
    """Why *span* cannot be stored: (reason, detail)."""
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE_ID:
        return "bad_trace_id", f"trace_id must be 16 bytes, not all zero (got {trace_id.hex()!r})"
    if len(span_id) != 8 or span_id == _ZERO_SPAN_ID:
        return "bad_span_id", f"span_id must be 8 bytes, not all zero (got {span_id.hex()!r})"
    if parent and len(parent) != 8:
        return "bad_parent_span_id", f"parent_span_id must be 8 bytes (got {parent.hex()!r})"
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    for field, value in (("start_time_unix_nano", start), ("end_time_unix_nano", end)):
        problem = time_problem(value, max_time)
        if problem is not None:
            return problem, f"{field} {value}"
    return "end_before_start", f"end_time_unix_nano {end} < start_time_unix_nano {start}"


def _events(events: Any, attributes: AttributeEncoder) -> bytes:
    return _jsonb(
        [
            {
                "timeUnixNano": event.time_unix_nano,
                "name": event.name,
                "attributes": attributes.as_dict(event.attributes[:]),
                "droppedAttributesCount": event.dropped_attributes_count,
            }
            for event in events
        ],
        attributes,
    )


def _links(links: Any, attributes: AttributeEncoder) -> bytes:
    return _jsonb(
        [
            {
                "traceId": link.trace_id.hex(),
                "spanId": link.span_id.hex(),
                "traceState": link.trace_state,
                "flags": link.flags,
                "attributes": attributes.as_dict(link.attributes[:]),
                "droppedAttributesCount": link.dropped_attributes_count,
            }
            for link in links
        ],
        attributes,
    )


def _jsonb(value: Any, attributes: AttributeEncoder) -> bytes:
    data, nul = jsonb(value)
    attributes.nul_replaced += nul
    return data


class TraceConverter(RowsConverter):
    """The traces route's converter: `convert` with the process's attribute cache and clock."""

    convert_request = staticmethod(convert)

    def __call__(self, request: Any, application_id: str = "") -> Converted:
        """The rows encoded for binary COPY (`copy_binary.CopyRows`), as the native codec's."""
        converted = super().__call__(request, application_id)
        payload = copy_binary.from_rows(converted.payload, TYPES)
        converted.payload = payload
        converted.nbytes = len(payload.data)
        return converted
