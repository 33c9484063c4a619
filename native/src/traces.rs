//! OTLP traces -> binary COPY rows of the `traces` table, one per span, mirroring
//! `ingestd/convert/traces.py` (column order, rejects and their order, NUL handling).

use crate::common::{
    self, add_resource, add_scope, clean_text, each_field, hex, int32_of, int4_bits, int4_count,
    time_problem, Attributes, Context, Example, INT64_MAX, PG_EPOCH_US,
};
use crate::json::{Object, Value};
use crate::wire::{Result, FIXED32, FIXED64, LEN, VARINT};
use crate::Converted;

const COLUMNS: i16 = 22;
// Nesting levels of the request: ExportTraceServiceRequest 1, ResourceSpans 2, Resource and
// ScopeSpans 3, InstrumentationScope and Span 4.
const RESOURCE_DEPTH: u32 = 3;
const SCOPE_DEPTH: u32 = 4;

#[derive(Default)]
struct EventView<'a> {
    time_unix_nano: u64,
    name: &'a str,
    attributes: Vec<&'a [u8]>,
    dropped_attributes_count: u32,
}

#[derive(Default)]
struct LinkView<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    trace_state: &'a str,
    flags: u32,
    attributes: Vec<&'a [u8]>,
    dropped_attributes_count: u32,
}

#[derive(Default)]
struct SpanView<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    trace_state: &'a str,
    parent_span_id: &'a [u8],
    flags: u32,
    name: &'a str,
    kind: i32,
    start: u64,
    end: u64,
    attributes: Vec<&'a [u8]>,
    dropped_attributes_count: u32,
    events: Vec<EventView<'a>>,
    dropped_events_count: u32,
    links: Vec<LinkView<'a>>,
    dropped_links_count: u32,
    status_message: &'a str,
    status_code: i32,
}

fn event(bytes: &[u8]) -> Result<EventView<'_>> {
    let mut out = EventView::default();
    each_field(&[bytes], |f| {
        match (f.number, f.wire) {
            (1, FIXED64) => out.time_unix_nano = f.int,
            (2, LEN) => out.name = f.text()?,
            (3, LEN) => out.attributes.push(f.bytes),
            (4, VARINT) => out.dropped_attributes_count = f.int as u32,
            _ => {}
        }
        Ok(())
    })?;
    Ok(out)
}

fn link(bytes: &[u8]) -> Result<LinkView<'_>> {
    let mut out = LinkView::default();
    each_field(&[bytes], |f| {
        match (f.number, f.wire) {
            (1, LEN) => out.trace_id = f.bytes,
            (2, LEN) => out.span_id = f.bytes,
            (3, LEN) => out.trace_state = f.text()?,
            (4, LEN) => out.attributes.push(f.bytes),
            (5, VARINT) => out.dropped_attributes_count = f.int as u32,
            (6, FIXED32) => out.flags = f.int as u32,
            _ => {}
        }
        Ok(())
    })?;
    Ok(out)
}

/// Every field of a span, checked as upb checks the request (before any conversion).
fn span(bytes: &[u8]) -> Result<SpanView<'_>> {
    let mut out = SpanView::default();
    each_field(&[bytes], |f| {
        match (f.number, f.wire) {
            (1, LEN) => out.trace_id = f.bytes,
            (2, LEN) => out.span_id = f.bytes,
            (3, LEN) => out.trace_state = f.text()?,
            (4, LEN) => out.parent_span_id = f.bytes,
            (5, LEN) => out.name = f.text()?,
            (6, VARINT) => out.kind = int32_of(f.int),
            (7, FIXED64) => out.start = f.int,
            (8, FIXED64) => out.end = f.int,
            (9, LEN) => out.attributes.push(f.bytes),
            (10, VARINT) => out.dropped_attributes_count = f.int as u32,
            (11, LEN) => out.events.push(event(f.bytes)?),
            (12, VARINT) => out.dropped_events_count = f.int as u32,
            (13, LEN) => out.links.push(link(f.bytes)?),
            (14, VARINT) => out.dropped_links_count = f.int as u32,
            (15, LEN) => each_field(&[f.bytes], |s| {
                match (s.number, s.wire) {
                    (2, LEN) => out.status_message = s.text()?,
                    (3, VARINT) => out.status_code = int32_of(s.int),
                    _ => {}
                }
                Ok(())
            })?,
            (16, FIXED32) => out.flags = f.int as u32,
            _ => {}
        }
        Ok(())
    })?;
    Ok(out)
}

struct ScopeSpans<'a> {
    scope: Vec<&'a [u8]>,
    /// Each span's bytes, checked: read again into a `SpanView` when its row is written, so
    /// that a request's views (~450 bytes a span) never exist all at once.
    spans: Vec<&'a [u8]>,
    schema_url: &'a str,
}

struct ResourceSpans<'a> {
    resource: Vec<&'a [u8]>,
    scope_spans: Vec<ScopeSpans<'a>>,
    schema_url: &'a str,
}

fn request(body: &[u8]) -> Result<Vec<ResourceSpans<'_>>> {
    let mut out = Vec::new();
    each_field(&[body], |f| {
        if (f.number, f.wire) != (1, LEN) {
            return Ok(());
        }
        let mut rs = ResourceSpans {
            resource: Vec::new(),
            scope_spans: Vec::new(),
            schema_url: "",
        };
        each_field(&[f.bytes], |g| {
            match (g.number, g.wire) {
                (1, LEN) => rs.resource.push(g.bytes),
                (2, LEN) => {
                    let mut ss = ScopeSpans {
                        scope: Vec::new(),
                        spans: Vec::new(),
                        schema_url: "",
                    };
                    each_field(&[g.bytes], |h| {
                        match (h.number, h.wire) {
                            (1, LEN) => ss.scope.push(h.bytes),
                            (2, LEN) => {
                                span(h.bytes)?;
                                ss.spans.push(h.bytes);
                            }
                            (3, LEN) => ss.schema_url = h.text()?,
                            _ => {}
                        }
                        Ok(())
                    })?;
                    rs.scope_spans.push(ss);
                }
                (3, LEN) => rs.schema_url = g.text()?,
                _ => {}
            }
            Ok(())
        })?;
        out.push(rs);
        Ok(())
    })?;
    Ok(out)
}

/// One ExportTraceServiceRequest -> COPY rows for `traces`, rejects and dimension rows.
/// Err only when the bytes are not a valid request (the whole request is refused).
pub fn convert(body: &[u8], ctx: &Context) -> Result<Converted> {
    let parsed = request(body)?;
    let mut out = Converted::default();
    let mut attributes = Attributes::default();
    let mut nul = 0;
    let max_time = ctx.max_time_unix_nano.min(INT64_MAX);
    let mut scratch = Scratch::default();
    for rs in &parsed {
        let (resource, n) = add_resource(
            &mut out.dimensions,
            &rs.resource,
            rs.schema_url,
            RESOURCE_DEPTH,
            ctx,
        )?;
        nul += n;
        for ss in &rs.scope_spans {
            let (scope_id, n) =
                add_scope(&mut out.dimensions, &ss.scope, ss.schema_url, SCOPE_DEPTH)?;
            nul += n;
            let ids = (
                resource.application_id.as_str(),
                resource.resource_id,
                scope_id,
            );
            for &raw in &ss.spans {
                let span = span(raw)?;
                nul += row(
                    &span,
                    &mut out,
                    &mut attributes,
                    &mut scratch,
                    ids,
                    max_time,
                );
            }
        }
    }
    out.items = out.copy.rows();
    out.nul_replaced = nul + attributes.nul_replaced;
    Ok(out)
}

#[derive(Default)]
struct Scratch {
    attributes: Vec<u8>,
    events: Vec<u8>,
    links: Vec<u8>,
}

fn example(span: &SpanView<'_>, detail: String) -> Example {
    Example {
        prefix: "span ",
        name: Some(span.name.to_owned()),
        suffix: format!(": {detail}"),
    }
}

/// Appends the span's row, or rejects it; returns the NUL count of its text columns.
fn row<'a>(
    span: &SpanView<'a>,
    out: &mut Converted,
    attributes: &mut Attributes<'a>,
    scratch: &mut Scratch,
    (app_id, resource_id, scope_id): (&str, i64, i64),
    max_time: u64,
) -> usize {
    let (start, end) = (span.start, span.end);
    let parent = span.parent_span_id;
    if span.trace_id.len() != 16
        || span.span_id.len() != 8
        || (!parent.is_empty() && parent.len() != 8)
        || !(0 < start && start <= end && end <= max_time)
        || span.trace_id.iter().all(|&b| b == 0)
        || span.span_id.iter().all(|&b| b == 0)
    {
        let (reason, detail) = problem(span, max_time);
        out.rejects.reject(reason, || example(span, detail));
        return 0;
    }
    scratch.attributes.clear();
    scratch.events.clear();
    scratch.links.clear();
    let encoded = attributes
        .jsonb(&span.attributes, &mut scratch.attributes)
        .and_then(|()| events(&span.events, attributes, &mut scratch.events))
        .and_then(|()| links(&span.links, attributes, &mut scratch.links));
    if let Err(message) = encoded {
        out.rejects
            .reject("bad_attribute", || example(span, message));
        return 0;
    }
    let (kind, code) = (span.kind, span.status_code);
    let (Ok(kind16), Ok(code16)) = (i16::try_from(kind), i16::try_from(code)) else {
        out.rejects.reject("enum_out_of_range", || {
            example(span, format!("kind {kind} or status code {code}"))
        });
        return 0;
    };
    let (name, n1) = clean_text(span.name);
    let (trace_state, n2) = clean_text(span.trace_state);
    let (message, n3) = clean_text(span.status_message);
    let copy = &mut out.copy;
    copy.begin_row(COLUMNS);
    copy.int8(start as i64 / 1000 - PG_EPOCH_US);
    copy.int8(end as i64 / 1000 - PG_EPOCH_US);
    copy.bytes(app_id.as_bytes());
    copy.bytes(span.trace_id);
    copy.bytes(span.span_id);
    if parent.is_empty() {
        copy.null();
    } else {
        copy.bytes(parent);
    }
    copy.bytes(trace_state.as_bytes());
    copy.int4(int4_bits(span.flags));
    copy.bytes(name.as_bytes());
    copy.int2(kind16);
    copy.int2(code16);
    copy.bytes(message.as_bytes());
    copy.int8(start as i64);
    copy.int8((end - start) as i64);
    copy.bytes(&scratch.attributes);
    for json in [&scratch.events, &scratch.links] {
        if json.is_empty() {
            copy.null();
        } else {
            copy.bytes(json);
        }
    }
    copy.int4(int4_count(span.dropped_attributes_count));
    copy.int4(int4_count(span.dropped_events_count));
    copy.int4(int4_count(span.dropped_links_count));
    copy.int8(resource_id);
    copy.int8(scope_id);
    n1 + n2 + n3
}

/// Why *span* cannot be stored: (reason, detail), in the reference's order.
fn problem(span: &SpanView<'_>, max_time: u64) -> (&'static str, String) {
    let (trace_id, span_id, parent) = (span.trace_id, span.span_id, span.parent_span_id);
    if trace_id.len() != 16 || trace_id.iter().all(|&b| b == 0) {
        let got = hex(trace_id);
        return (
            "bad_trace_id",
            format!("trace_id must be 16 bytes, not all zero (got '{got}')"),
        );
    }
    if span_id.len() != 8 || span_id.iter().all(|&b| b == 0) {
        let got = hex(span_id);
        return (
            "bad_span_id",
            format!("span_id must be 8 bytes, not all zero (got '{got}')"),
        );
    }
    if !parent.is_empty() && parent.len() != 8 {
        let got = hex(parent);
        return (
            "bad_parent_span_id",
            format!("parent_span_id must be 8 bytes (got '{got}')"),
        );
    }
    for (field, value) in [
        ("start_time_unix_nano", span.start),
        ("end_time_unix_nano", span.end),
    ] {
        if let Some(reason) = time_problem(value, max_time) {
            return (reason, format!("{field} {value}"));
        }
    }
    let (start, end) = (span.start, span.end);
    (
        "end_before_start",
        format!("end_time_unix_nano {end} < start_time_unix_nano {start}"),
    )
}

fn events<'a>(
    events: &[EventView<'a>],
    attributes: &mut Attributes<'a>,
    out: &mut Vec<u8>,
) -> std::result::Result<(), String> {
    if events.is_empty() {
        return Ok(());
    }
    let mut list = Vec::with_capacity(events.len());
    for event in events {
        let mut object = Object::new();
        object.insert("timeUnixNano".into(), Value::UInt(event.time_unix_nano));
        object.insert("name".into(), Value::Str(event.name.to_owned()));
        object.insert(
            "attributes".into(),
            Value::Object(attributes.as_dict(&event.attributes)?),
        );
        object.insert(
            "droppedAttributesCount".into(),
            Value::UInt(u64::from(event.dropped_attributes_count)),
        );
        list.push(Value::Object(object));
    }
    let (json, nul) = common::jsonb(&Value::Array(list));
    attributes.nul_replaced += nul;
    out.extend_from_slice(&json);
    Ok(())
}

fn links<'a>(
    links: &[LinkView<'a>],
    attributes: &mut Attributes<'a>,
    out: &mut Vec<u8>,
) -> std::result::Result<(), String> {
    if links.is_empty() {
        return Ok(());
    }
    let mut list = Vec::with_capacity(links.len());
    for link in links {
        let mut object = Object::new();
        object.insert("traceId".into(), Value::Str(hex(link.trace_id)));
        object.insert("spanId".into(), Value::Str(hex(link.span_id)));
        object.insert("traceState".into(), Value::Str(link.trace_state.to_owned()));
        object.insert("flags".into(), Value::UInt(u64::from(link.flags)));
        object.insert(
            "attributes".into(),
            Value::Object(attributes.as_dict(&link.attributes)?),
        );
        object.insert(
            "droppedAttributesCount".into(),
            Value::UInt(u64::from(link.dropped_attributes_count)),
        );
        list.push(Value::Object(object));
    }
    let (json, nul) = common::jsonb(&Value::Array(list));
    attributes.nul_replaced += nul;
    out.extend_from_slice(&json);
    Ok(())
}
