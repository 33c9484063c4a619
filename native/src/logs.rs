//! OTLP logs -> Elasticsearch `_bulk` items (action line with a deterministic `_id`, document
//! line), mirroring `ingestd/convert/logs.py` byte for byte: the document layout, routing,
//! attribute arrays made uniform, the ids (xxh3 of the records' deterministic serialization).
//!
//! Routing: the `data_stream.*` attributes pick a record's route as in the reference; whether
//! that route may be written to is the Python `RoutePolicy`'s decision (allowlists, the cap of
//! data streams, the fallback, its counters), asked through `Admit` once per distinct route of
//! a scope, exactly when the reference's `_Scope._route_bytes` asks it.

use base64::Engine as _;

use crate::common::{
    self, canon_key_value, canon_resource, canon_scope, each_field, enter_message, hex, int32_of,
    key_value_as, Context, Example, FastMap, Flavor, Rejects, INT64_MAX,
};
use crate::copy::Segments;
use crate::identity;
use crate::json::{self, Nul, Object, Value};
use crate::wire::{self, Result, FIXED32, FIXED64, LEN, VARINT};

pub const DATASET_ATTR: &str = "data_stream.dataset";
pub const NAMESPACE_ATTR: &str = "data_stream.namespace";
pub const TYPE_ATTR: &str = "data_stream.type";
const OTEL_SUFFIX: &str = ".otel";
const NAME_MAX: usize = 100;
// Nesting levels: request 1, ResourceLogs 2, Resource / ScopeLogs 3, scope / LogRecord 4.
const RESOURCE_DEPTH: u32 = 3;
const SCOPE_DEPTH: u32 = 4;
const RECORD_DEPTH: u32 = 4;

/// One request's bulk items, and what was refused.
#[derive(Debug, Default)]
pub struct Bulk {
    pub buf: Segments,
    pub offsets: Vec<u64>,
    pub rejects: Rejects,
}

/// The route a converter starts from (already sanitized by the Python side).
pub struct Route<'c> {
    pub dataset: &'c str,
    pub namespace: &'c str,
    /// `sinks.elasticsearch.routing.from_attributes`: off, the `data_stream.*` attributes
    /// stay plain attributes and every record goes to *dataset* / *namespace*.
    pub from_attributes: bool,
    /// A registered application's namespace (`application_namespace`, computed by the Python
    /// side): every record goes there whatever its attributes say; only the dataset is routed.
    pub locked_namespace: Option<&'c str>,
}

/// Asks where a route may be written: (dataset, namespace) in, the route to use out (itself,
/// or the policy's fallback). Asked once per distinct route of a scope, in record order, for
/// the records that are stored: exactly the calls the reference's `_Scope._route_bytes` makes
/// to `RoutePolicy.admit`. Never asked for the start route: it is the policy's fallback, which
/// `RoutePolicy.admit` answers unchanged and without counting.
pub type Admit<'a> = dyn FnMut(&str, &str) -> (String, String) + 'a;

/// Admits every route as it is (what a `RoutePolicy` under its cap without allowlists does).
pub fn admit_all(dataset: &str, namespace: &str) -> (String, String) {
    (dataset.to_owned(), namespace.to_owned())
}

/// The reference's `_Scope._routes`: the routes one scope met, and where each goes.
struct ScopeRoutes<'r, 'a> {
    start: &'r Route<'r>,
    admit: &'r mut Admit<'a>,
    known: FastMap<(String, String), (String, String)>,
}

impl ScopeRoutes<'_, '_> {
    fn admitted(&mut self, dataset: String, namespace: String) -> (String, String) {
        if dataset == self.start.dataset && namespace == self.start.namespace {
            return (dataset, namespace);
        }
        let key = (dataset, namespace);
        if let Some(to) = self.known.get(&key) {
            return to.clone();
        }
        let to = (self.admit)(&key.0, &key.1);
        self.known.insert(key, to.clone());
        to
    }
}

/// Python's `str.isspace` (Unicode White_Space plus the C0 separators 0x1c-0x1f).
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn sanitize(value: &str, suffix: bool) -> String {
    let lowered = value.to_lowercase();
    let replaced: String = lowered
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(NAME_MAX)
        .collect();
    let mut name = replaced.trim_matches(|c| c == '.' || c == '_').to_owned();
    if !name.is_empty() && suffix && !name.ends_with(OTEL_SUFFIX) {
        name.push_str(OTEL_SUFFIX);
    }
    name
}

/// A dataset name Elasticsearch accepts, with the otel suffix; "" when nothing is left.
pub fn sanitize_dataset(value: &str) -> String {
    sanitize(value, true)
}

/// A namespace Elasticsearch accepts; "" when nothing is left.
pub fn sanitize_namespace(value: &str) -> String {
    sanitize(value, false)
}

/// `_uniform`: an array mixing types becomes doubles (numbers only) or strings.
fn uniform(values: Vec<Value>) -> Vec<Value> {
    #[derive(PartialEq, Clone, Copy)]
    enum T {
        Int,
        Float,
        Other(u8),
    }
    let kind = |v: &Value| match v {
        Value::Int(_) | Value::UInt(_) => Some(T::Int),
        Value::Float(_) => Some(T::Float),
        Value::Bool(_) => Some(T::Other(0)),
        Value::Str(_) => Some(T::Other(1)),
        Value::Array(_) => Some(T::Other(2)),
        Value::Object(_) => Some(T::Other(3)),
        Value::Null => None,
    };
    let mut kinds: Vec<T> = Vec::new();
    for value in &values {
        if let Some(k) = kind(value) {
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
    }
    if kinds.len() <= 1 {
        return values;
    }
    if kinds.iter().all(|k| matches!(k, T::Int | T::Float)) {
        return values
            .into_iter()
            .map(|v| match v {
                Value::Int(i) => Value::Float(i as f64),
                other => other,
            })
            .collect();
    }
    values
        .into_iter()
        .map(|v| match v {
            Value::Str(_) | Value::Null => v,
            other => Value::Str(String::from_utf8(json::to_text(&other)).unwrap_or_default()),
        })
        .collect()
}

/// Every array of *value*, at every level, made uniform (children first, as the reference).
fn uniform_in_place(value: &mut Value) {
    match value {
        Value::Array(items) => {
            items.iter_mut().for_each(uniform_in_place);
            let taken = std::mem::take(items);
            *items = uniform(taken);
        }
        Value::Object(object) => object
            .entries
            .iter_mut()
            .for_each(|(_, v)| uniform_in_place(v)),
        _ => {}
    }
}

/// `_attributes`: top-level attributes as an object (arrays uniform) and how many blank keys
/// were dropped.
fn attributes(raws: &[&[u8]], depth: u32) -> Result<(Object, u32)> {
    let mut out = Object::new();
    for raw in raws {
        let (key, mut value) = key_value_as(&[raw], depth, Flavor::Logs)?;
        uniform_in_place(&mut value);
        out.insert(key, value);
    }
    let smallest = out.entries.iter().map(|(k, _)| k.as_str()).min();
    match smallest {
        None => return Ok((out, 0)),
        Some(key) if key.chars().next().is_some_and(|c| c > ' ') => return Ok((out, 0)),
        Some(_) => {}
    }
    let before = out.entries.len();
    let kept: Vec<(String, Value)> = out
        .entries
        .into_iter()
        .filter(|(k, _)| !k.chars().all(is_py_space))
        .collect();
    let blank = u32::try_from(before - kept.len()).unwrap_or(u32::MAX);
    Ok((common::dict(kept), blank))
}

fn remove(object: &mut Object, key: &str) -> Option<Value> {
    let at = object.entries.iter().position(|(k, _)| k == key)?;
    let (_, value) = object.entries.remove(at);
    *object = common::dict(std::mem::take(&mut object.entries));
    Some(value)
}

/// `_route`: take the routing attributes out of *attributes*; they override the inherited one.
fn route(attributes: &mut Object, dataset: &str, namespace: &str) -> (String, String) {
    let (mut dataset, mut namespace) = (dataset.to_owned(), namespace.to_owned());
    if let Some(Value::Str(value)) = remove(attributes, DATASET_ATTR) {
        let name = sanitize_dataset(&value);
        if !name.is_empty() {
            dataset = name;
        }
    }
    if let Some(Value::Str(value)) = remove(attributes, NAMESPACE_ATTR) {
        let name = sanitize_namespace(&value);
        if !name.is_empty() {
            namespace = name;
        }
    }
    remove(attributes, TYPE_ATTR);
    (dataset, namespace)
}

fn has_routing(attributes: &Object) -> bool {
    [DATASET_ATTR, NAMESPACE_ATTR, TYPE_ATTR]
        .iter()
        .any(|k| attributes.get(k).is_some())
}

/// `iso_nanos`: `2018-12-13T14:51:00.300000000Z`.
pub fn iso_nanos(ns: u64) -> String {
    let (seconds, fraction) = (ns / 1_000_000_000, ns % 1_000_000_000);
    let days = i64::try_from(seconds / 86_400).unwrap_or(0);
    let rem = seconds % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `iso_nanos` with the date and time of the last second seen kept (records of one request
/// share few seconds; formatting the date is the costly part).
#[derive(Default)]
struct IsoClock {
    second: Option<u64>,
    prefix: String,
}

impl IsoClock {
    fn format(&mut self, ns: u64) -> String {
        let (second, fraction) = (ns / 1_000_000_000, ns % 1_000_000_000);
        if self.second != Some(second) {
            let full = iso_nanos(ns);
            self.prefix = full[..full.len() - 10].to_owned();
            self.second = Some(second);
        }
        let mut out = String::with_capacity(self.prefix.len() + 11);
        out.push_str(&self.prefix);
        let digits = itoa::Buffer::new().format(fraction).to_owned();
        out.push_str(&"000000000"[digits.len()..]);
        out.push_str(&digits);
        out.push('Z');
        out
    }
}

struct Scope {
    routed: bool,
    locked: bool,
    dataset: String,
    namespace: String,
    /// `,"application_id":...,"resource":{...},"scope":{...}}` (after data_stream).
    shared: Vec<u8>,
    seed: u64,
}

fn object_bytes(object: &Object) -> Vec<u8> {
    json::to_text(&Value::Object(object.clone()))
}

struct ResourceInfo {
    routed: bool,
    locked: bool,
    dataset: String,
    namespace: String,
    app_id: String,
    encoded: Vec<u8>,
    serialized: Vec<u8>,
}

fn resource_info(
    chunks: &[&[u8]],
    schema_url: &str,
    start: &Route<'_>,
    ctx: &Context,
) -> Result<ResourceInfo> {
    let mut raws = Vec::new();
    let mut dropped: u64 = 0;
    if !chunks.is_empty() {
        enter_message(RESOURCE_DEPTH)?;
    }
    each_field(chunks, |f| {
        match (f.number, f.wire) {
            (1, LEN) => raws.push(f.bytes),
            (2, VARINT) => dropped = u64::from(f.int as u32),
            _ => {}
        }
        Ok(())
    })?;
    let serialized = canon_resource(chunks, RESOURCE_DEPTH)?;
    let (mut attrs, blank) = attributes(&raws, RESOURCE_DEPTH + 1)?;
    let (dataset, mut namespace) = if start.from_attributes {
        route(&mut attrs, start.dataset, start.namespace)
    } else {
        (start.dataset.to_owned(), start.namespace.to_owned())
    };
    // A registered application's documents stay in its own namespace.
    if let Some(locked) = start.locked_namespace {
        namespace = locked.to_owned();
    }
    let app_id = match &ctx.application_id {
        Some(id) => id.clone(),
        None => identity::log_application_id(&raws, RESOURCE_DEPTH + 1)?,
    };
    let mut fields = Object::new();
    if !attrs.entries.is_empty() {
        fields.insert("attributes".into(), Value::Object(attrs));
    }
    if !schema_url.is_empty() {
        fields.insert("schema_url".into(), Value::Str(schema_url.to_owned()));
    }
    let dropped = dropped + u64::from(blank);
    if dropped != 0 {
        fields.insert("dropped_attributes_count".into(), Value::UInt(dropped));
    }
    let mut serialized_url = serialized;
    serialized_url.extend_from_slice(schema_url.as_bytes());
    Ok(ResourceInfo {
        routed: start.from_attributes,
        locked: start.locked_namespace.is_some(),
        dataset,
        namespace,
        app_id,
        encoded: object_bytes(&fields),
        serialized: serialized_url,
    })
}

fn scope_info(resource: &ResourceInfo, chunks: &[&[u8]], schema_url: &str) -> Result<Scope> {
    let (mut name, mut version) = ("", "");
    let mut raws = Vec::new();
    let mut dropped: u64 = 0;
    if !chunks.is_empty() {
        enter_message(SCOPE_DEPTH)?;
    }
    each_field(chunks, |f| {
        match (f.number, f.wire) {
            (1, LEN) => name = f.text()?,
            (2, LEN) => version = f.text()?,
            (3, LEN) => raws.push(f.bytes),
            (4, VARINT) => dropped = u64::from(f.int as u32),
            _ => {}
        }
        Ok(())
    })?;
    let canonical = canon_scope(chunks, SCOPE_DEPTH)?;
    let (mut attrs, blank) = attributes(&raws, SCOPE_DEPTH + 1)?;
    let (dataset, mut namespace) = if resource.routed {
        route(&mut attrs, &resource.dataset, &resource.namespace)
    } else {
        (resource.dataset.clone(), resource.namespace.clone())
    };
    if resource.locked {
        namespace.clone_from(&resource.namespace);
    }
    let mut fields = Object::new();
    if !name.is_empty() {
        fields.insert("name".into(), Value::Str(name.to_owned()));
    }
    if !version.is_empty() {
        fields.insert("version".into(), Value::Str(version.to_owned()));
    }
    if !attrs.entries.is_empty() {
        fields.insert("attributes".into(), Value::Object(attrs));
    }
    if !schema_url.is_empty() {
        fields.insert("schema_url".into(), Value::Str(schema_url.to_owned()));
    }
    let dropped = dropped + u64::from(blank);
    if dropped != 0 {
        fields.insert("dropped_attributes_count".into(), Value::UInt(dropped));
    }
    let mut shared = b",\"application_id\":\"".to_vec();
    shared.extend_from_slice(resource.app_id.as_bytes());
    shared.extend_from_slice(b"\",\"resource\":");
    shared.extend_from_slice(&resource.encoded);
    shared.extend_from_slice(b",\"scope\":");
    shared.extend_from_slice(&object_bytes(&fields));
    shared.push(b'}');
    let mut seed_input = resource.serialized.clone();
    seed_input.push(0);
    seed_input.extend_from_slice(&canonical);
    seed_input.extend_from_slice(schema_url.as_bytes());
    let seed = xxhash_rust::xxh3::xxh3_64(&seed_input);
    Ok(Scope {
        routed: resource.routed,
        locked: resource.locked,
        dataset,
        namespace,
        shared,
        seed,
    })
}

/// One LogRecord, every field checked as upb checks the request.
#[derive(Default)]
struct Record<'a> {
    time: u64,
    observed: u64,
    severity_number: i32,
    severity_text: &'a str,
    body: Vec<&'a [u8]>,
    attributes: Vec<&'a [u8]>,
    dropped: u32,
    flags: u32,
    trace_id: &'a [u8],
    span_id: &'a [u8],
    event_name: &'a str,
    raw: &'a [u8],
}

fn record(bytes: &[u8]) -> Result<Record<'_>> {
    enter_message(RECORD_DEPTH)?;
    let mut r = Record {
        raw: bytes,
        ..Record::default()
    };
    each_field(&[bytes], |f| {
        match (f.number, f.wire) {
            (1, FIXED64) => r.time = f.int,
            (11, FIXED64) => r.observed = f.int,
            (2, VARINT) => r.severity_number = int32_of(f.int),
            (3, LEN) => r.severity_text = f.text()?,
            (5, LEN) => r.body.push(f.bytes),
            (6, LEN) => r.attributes.push(f.bytes),
            (7, VARINT) => r.dropped = f.int as u32,
            (8, FIXED32) => r.flags = f.int as u32,
            (9, LEN) => r.trace_id = f.bytes,
            (10, LEN) => r.span_id = f.bytes,
            (12, LEN) => r.event_name = f.text()?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(r)
}

/// The deterministic serialization of a LogRecord (upb's field order and encodings).
fn canon_record(r: &Record<'_>) -> Result<Vec<u8>> {
    let mut known: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut unknown: Vec<&[u8]> = Vec::new();
    let mut attributes = Vec::new();
    let mut body: Vec<&[u8]> = Vec::new();
    let scalar = |number: u32, bytes: Vec<u8>, known: &mut Vec<(u32, Vec<u8>)>| {
        known.retain(|(n, _)| *n != number);
        if !bytes.is_empty() {
            known.push((number, bytes));
        }
    };
    each_field(&[r.raw], |f| {
        let mut out = Vec::new();
        match (f.number, f.wire) {
            (1 | 11, FIXED64) => {
                if f.int != 0 {
                    wire::put_tag(&mut out, f.number, FIXED64);
                    out.extend_from_slice(&f.int.to_le_bytes());
                }
                scalar(f.number, out, &mut known);
            }
            (8, FIXED32) => {
                if f.int != 0 {
                    wire::put_tag(&mut out, 8, FIXED32);
                    out.extend_from_slice(&(f.int as u32).to_le_bytes());
                }
                scalar(8, out, &mut known);
            }
            (2, VARINT) => {
                let v = i64::from(int32_of(f.int));
                if v != 0 {
                    wire::put_tag(&mut out, 2, VARINT);
                    wire::put_varint(&mut out, v as u64);
                }
                scalar(2, out, &mut known);
            }
            (7, VARINT) => {
                let v = f.int & 0xffff_ffff;
                if v != 0 {
                    wire::put_tag(&mut out, 7, VARINT);
                    wire::put_varint(&mut out, v);
                }
                scalar(7, out, &mut known);
            }
            (3 | 9 | 10 | 12, LEN) => {
                if !f.bytes.is_empty() {
                    wire::put_len(&mut out, f.number, f.bytes);
                }
                scalar(f.number, out, &mut known);
            }
            (5, LEN) => body.push(f.bytes),
            (6, LEN) => {
                let element = canon_key_value(&[f.bytes], RECORD_DEPTH + 1)?;
                wire::put_len(&mut attributes, 6, &element);
            }
            _ => unknown.push(f.raw),
        }
        Ok(())
    })?;
    if !body.is_empty() {
        let inner = common::canon_any_value(&body, RECORD_DEPTH + 1)?;
        let mut out = Vec::new();
        wire::put_len(&mut out, 5, &inner);
        known.push((5, out));
    }
    if !attributes.is_empty() {
        known.push((6, attributes));
    }
    known.sort_by_key(|(n, _)| *n);
    let mut out: Vec<u8> = known.into_iter().flat_map(|(_, b)| b).collect();
    for raw in unknown {
        out.extend_from_slice(raw);
    }
    Ok(out)
}

/// Whether a LogRecord's bytes are already its deterministic serialization (what SDKs send),
/// so the id hashes them as they are.
fn canonical_record(bytes: &[u8]) -> bool {
    let nonzero32 = |v: u64| v != 0 && v < (1 << 32);
    common::canonical_fields(bytes, &[6], |f| match (f.number, f.wire) {
        (1 | 11, FIXED64) => f.int != 0,
        (2, VARINT) => f.int != 0 && f.int == i64::from(int32_of(f.int)) as u64,
        (3 | 9 | 10 | 12, LEN) => !f.bytes.is_empty(),
        (5, LEN) => common::canonical_any_value(f.bytes),
        (6, LEN) => common::canonical_key_value(f.bytes),
        (7, VARINT) => nonzero32(f.int),
        (8, FIXED32) => f.int != 0,
        _ => false,
    })
}

/// `_body`: the body field of the document, or None without one.
fn body(chunks: &[&[u8]]) -> Result<Option<Value>> {
    if chunks.is_empty() {
        return Ok(None);
    }
    let value = common::any_value_as(chunks, RECORD_DEPTH + 1, Flavor::Logs)?;
    // Which oneof case is set decides, not the value: read it again from the wire.
    let case = body_case(chunks)?;
    let mut out = Object::new();
    match (case, value) {
        (None, _) => return Ok(None),
        (Some(1), value) => {
            out.insert("text".into(), value);
        }
        (Some(6), value) => {
            out.insert("structured".into(), value);
        }
        (Some(5), Value::Array(values)) => {
            if !values.is_empty() && values.iter().all(|v| matches!(v, Value::Object(_))) {
                out.insert("structured".into(), Value::Array(values));
            } else {
                let mut wrapped = Object::new();
                wrapped.insert("value".into(), Value::Array(values));
                out.insert("structured".into(), Value::Object(wrapped));
            }
        }
        (Some(_), Value::Bool(b)) => {
            out.insert(
                "text".into(),
                Value::Str(if b { "true" } else { "false" }.into()),
            );
        }
        (Some(_), Value::Int(i)) => {
            out.insert("text".into(), Value::Str(i.to_string()));
        }
        (Some(_), Value::Float(f)) => {
            out.insert("text".into(), Value::Str(json::py_float_repr(f)));
        }
        (Some(_), Value::Str(s)) => {
            out.insert("text".into(), Value::Str(s));
        }
        (Some(_), _) => {
            out.insert("text".into(), Value::Str("None".into()));
        }
    }
    Ok(Some(Value::Object(out)))
}

/// The field number of the AnyValue oneof case set last, or None.
fn body_case(chunks: &[&[u8]]) -> Result<Option<u32>> {
    let mut case = None;
    each_field(chunks, |f| {
        match (f.number, f.wire) {
            (1 | 5 | 6 | 7, LEN) | (2 | 3 | 8, VARINT) | (4, FIXED64) => case = Some(f.number),
            _ => {}
        }
        Ok(())
    })?;
    Ok(case)
}

fn future(timestamp: u64) -> Example {
    Example {
        prefix: "",
        name: None,
        suffix: format!(
            "log record time {timestamp} ns is more than the allowed skew in the future"
        ),
    }
}

/// One ExportLogsServiceRequest -> bulk items. Err only when the bytes are not a valid request.
/// *admit* decides each route a record is routed to (see `Admit`).
pub fn convert(
    body_bytes: &[u8],
    ctx: &Context,
    start: &Route<'_>,
    admit: &mut Admit<'_>,
) -> Result<Bulk> {
    // Parse (and so check) everything first: upb refuses a request as a whole.
    struct ScopeLogs<'a> {
        scope: Vec<&'a [u8]>,
        // Each record's bytes, checked: read again when it is encoded, so that a request's
        // record views never exist all at once.
        records: Vec<&'a [u8]>,
        schema_url: &'a str,
    }
    struct ResourceLogs<'a> {
        resource: Vec<&'a [u8]>,
        scopes: Vec<ScopeLogs<'a>>,
        schema_url: &'a str,
    }
    let mut parsed: Vec<ResourceLogs<'_>> = Vec::new();
    each_field(&[body_bytes], |f| {
        if (f.number, f.wire) != (1, LEN) {
            return Ok(());
        }
        let mut rl = ResourceLogs {
            resource: Vec::new(),
            scopes: Vec::new(),
            schema_url: "",
        };
        each_field(&[f.bytes], |g| {
            match (g.number, g.wire) {
                (1, LEN) => rl.resource.push(g.bytes),
                (2, LEN) => {
                    let mut sl = ScopeLogs {
                        scope: Vec::new(),
                        records: Vec::new(),
                        schema_url: "",
                    };
                    each_field(&[g.bytes], |h| {
                        match (h.number, h.wire) {
                            (1, LEN) => sl.scope.push(h.bytes),
                            (2, LEN) => {
                                record(h.bytes)?;
                                sl.records.push(h.bytes);
                            }
                            (3, LEN) => sl.schema_url = h.text()?,
                            _ => {}
                        }
                        Ok(())
                    })?;
                    rl.scopes.push(sl);
                }
                (3, LEN) => rl.schema_url = g.text()?,
                _ => {}
            }
            Ok(())
        })?;
        parsed.push(rl);
        Ok(())
    })?;
    let mut out = Bulk::default();
    let latest = ctx.max_time_unix_nano.min(INT64_MAX);
    let mut seen: FastMap<[u8; 16], u32> = common::fast_map();
    let mut clock = IsoClock::default();
    for rl in &parsed {
        let resource = resource_info(&rl.resource, rl.schema_url, start, ctx)?;
        for sl in &rl.scopes {
            let scope = scope_info(&resource, &sl.scope, sl.schema_url)?;
            let mut routes = ScopeRoutes {
                start,
                admit: &mut *admit,
                known: common::fast_map(),
            };
            for &raw in &sl.records {
                encode(
                    &record(raw)?,
                    &scope,
                    &mut routes,
                    (ctx.now_unix_nano, latest),
                    &mut seen,
                    &mut clock,
                    &mut out,
                )?;
            }
        }
    }
    Ok(out)
}

// The per-request state travels separately from the record and its scope; grouping it would
// only move the argument list into a struct used once.
#[allow(clippy::too_many_arguments)]
fn encode(
    r: &Record<'_>,
    scope: &Scope,
    routes: &mut ScopeRoutes<'_, '_>,
    (now, latest): (u64, u64),
    seen: &mut FastMap<[u8; 16], u32>,
    clock: &mut IsoClock,
    out: &mut Bulk,
) -> Result<()> {
    // Everything that can fail the request is read before anything is written.
    let timestamp = if r.time != 0 {
        r.time
    } else if r.observed != 0 {
        r.observed
    } else {
        now
    };
    let owned;
    let canonical: &[u8] = if canonical_record(r.raw) {
        r.raw
    } else {
        owned = canon_record(r)?;
        &owned
    };
    let body_value = body(&r.body)?;
    let attrs = if r.attributes.is_empty() {
        None
    } else {
        Some(attributes(&r.attributes, RECORD_DEPTH + 1)?)
    };
    if timestamp > latest {
        out.rejects.reject("future_timestamp", || future(timestamp));
        return Ok(());
    }
    let (mut dataset, mut namespace) = (scope.dataset.clone(), scope.namespace.clone());
    let mut dropped = u64::from(r.dropped);
    let mut event_name = r.event_name.to_owned();
    let mut attributes_value = None;
    if let Some((mut attrs, blank)) = attrs {
        dropped += u64::from(blank);
        if scope.routed && has_routing(&attrs) {
            let routed;
            (dataset, routed) = route(&mut attrs, &dataset, &namespace);
            if !scope.locked {
                namespace = routed;
            }
        }
        if event_name.is_empty() {
            if let Some(Value::Str(name)) = attrs.get("event.name") {
                event_name = name.clone();
            }
        }
        if !attrs.entries.is_empty() {
            attributes_value = Some(Value::Object(attrs));
        }
    }
    let (dataset, namespace) = routes.admitted(dataset, namespace);
    out.offsets.push(out.buf.begin_item());
    let data = &mut out.buf.data;
    data.extend_from_slice(b"{\"create\":{\"_index\":\"logs-");
    data.extend_from_slice(dataset.as_bytes());
    data.push(b'-');
    data.extend_from_slice(namespace.as_bytes());
    data.extend_from_slice(b"\",\"_id\":\"");
    data.extend_from_slice(&id(canonical, scope.seed, seen));
    data.extend_from_slice(b"\"}}\n");
    let mut w = json::Writer::new(data, Nul::Keep);
    w.out.push(b'{');
    w.member("@timestamp", &Value::Str(clock.format(timestamp)));
    let member = |w: &mut json::Writer<'_>, key: &str, value: &Value| {
        w.out.push(b',');
        w.member(key, value);
    };
    if r.observed != 0 {
        member(
            &mut w,
            "observed_timestamp",
            &Value::Str(iso_nanos(r.observed.min(latest))),
        );
    }
    if !r.severity_text.is_empty() {
        member(
            &mut w,
            "severity_text",
            &Value::Str(r.severity_text.to_owned()),
        );
    }
    if r.severity_number != 0 {
        member(
            &mut w,
            "severity_number",
            &Value::Int(i64::from(r.severity_number)),
        );
    }
    if !r.trace_id.is_empty() {
        member(&mut w, "trace_id", &Value::Str(hex(r.trace_id)));
    }
    if !r.span_id.is_empty() {
        member(&mut w, "span_id", &Value::Str(hex(r.span_id)));
    }
    if r.flags != 0 {
        member(&mut w, "flags", &Value::UInt(u64::from(r.flags)));
    }
    if let Some(value) = &attributes_value {
        member(&mut w, "attributes", value);
    }
    if !event_name.is_empty() {
        member(&mut w, "event_name", &Value::Str(event_name));
    }
    if dropped != 0 {
        member(&mut w, "dropped_attributes_count", &Value::UInt(dropped));
    }
    if let Some(value) = &body_value {
        member(&mut w, "body", value);
    }
    w.out
        .extend_from_slice(b",\"data_stream\":{\"type\":\"logs\",\"dataset\":");
    w.string(&dataset);
    w.out.extend_from_slice(b",\"namespace\":");
    w.string(&namespace);
    w.out.push(b'}');
    w.out.extend_from_slice(&scope.shared);
    w.out.push(b'\n');
    Ok(())
}

/// The document id: xxh3_128 of the record's deterministic serialization seeded by its
/// resource and scope; a repeat of the same record in the request gets an ordinal.
fn id(canonical: &[u8], seed: u64, seen: &mut FastMap<[u8; 16], u32>) -> Vec<u8> {
    let mut digest = xxhash_rust::xxh3::xxh3_128_with_seed(canonical, seed).to_be_bytes();
    let ordinal = seen.entry(digest).or_insert(0);
    let n = *ordinal;
    *ordinal += 1;
    if n != 0 {
        let mut input = digest.to_vec();
        input.extend_from_slice(&n.to_be_bytes());
        digest = xxhash_rust::xxh3::xxh3_128(&input).to_be_bytes();
    }
    let text = base64::engine::general_purpose::URL_SAFE.encode(digest);
    text.as_bytes()[..22].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_time_like_strftime() {
        assert_eq!(
            iso_nanos(1_544_712_660_300_000_000),
            "2018-12-13T14:51:00.300000000Z"
        );
        assert_eq!(iso_nanos(0), "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn clock_matches_iso_nanos() {
        let mut clock = IsoClock::default();
        for ns in [
            1_544_712_660_300_000_000,
            1_544_712_660_000_000_007,
            5,
            1_544_712_661_999_999_999,
        ] {
            assert_eq!(clock.format(ns), iso_nanos(ns));
        }
    }

    /// A request of one resource and one scope whose records carry `data_stream.dataset`.
    fn routed_request(datasets: &[&str]) -> Vec<u8> {
        let mut scope_logs = Vec::new();
        for dataset in datasets {
            let mut value = Vec::new();
            wire::put_len(&mut value, 1, dataset.as_bytes());
            let mut key_value = Vec::new();
            wire::put_len(&mut key_value, 1, DATASET_ATTR.as_bytes());
            wire::put_len(&mut key_value, 2, &value);
            let mut record = Vec::new();
            wire::put_tag(&mut record, 1, FIXED64);
            record.extend_from_slice(&1u64.to_le_bytes());
            wire::put_len(&mut record, 6, &key_value);
            wire::put_len(&mut scope_logs, 2, &record);
        }
        let mut resource_logs = Vec::new();
        wire::put_len(&mut resource_logs, 2, &scope_logs);
        let mut request = Vec::new();
        wire::put_len(&mut request, 1, &resource_logs);
        request
    }

    fn indexes(bulk: &Bulk) -> Vec<String> {
        let text = String::from_utf8(bulk.buf.to_vec()).unwrap();
        text.lines()
            .step_by(2)
            .map(|line| line.split('"').nth(5).unwrap().to_owned())
            .collect()
    }

    /// The context and start route of a converter; *application*: a registered one's id,
    /// also its namespace.
    fn setting(application: Option<&'static str>) -> (Context, Route<'static>) {
        let ctx = Context {
            application_id: application.map(str::to_owned),
            max_time_unix_nano: 10,
            now_unix_nano: 1,
            max_buckets_per_point: usize::MAX,
        };
        let start = Route {
            dataset: "app.otel",
            namespace: "prod",
            from_attributes: true,
            locked_namespace: application,
        };
        (ctx, start)
    }

    #[test]
    fn asks_once_per_route_of_a_scope_and_uses_the_answer() {
        let (ctx, start) = setting(None);
        let mut asked = Vec::new();
        let mut admit = |dataset: &str, namespace: &str| {
            asked.push((dataset.to_owned(), namespace.to_owned()));
            if dataset == "b.otel" {
                ("app.otel".to_owned(), "prod".to_owned())
            } else {
                admit_all(dataset, namespace)
            }
        };
        let request = routed_request(&["a", "b", "a", "App", "b"]);
        let bulk = convert(&request, &ctx, &start, &mut admit).unwrap();
        assert_eq!(
            indexes(&bulk),
            [
                "logs-a.otel-prod",
                "logs-app.otel-prod",
                "logs-a.otel-prod",
                "logs-app.otel-prod",
                "logs-app.otel-prod"
            ]
        );
        let pairs = |names: &[&str]| -> Vec<(String, String)> {
            names
                .iter()
                .map(|n| ((*n).to_owned(), "prod".to_owned()))
                .collect()
        };
        assert_eq!(asked, pairs(&["a.otel", "b.otel"]));
    }

    #[test]
    fn a_locked_namespace_ignores_the_attributes() {
        let (ctx, start) = setting(Some("a1"));
        let bulk = convert(&routed_request(&["a"]), &ctx, &start, &mut admit_all).unwrap();
        assert_eq!(indexes(&bulk), ["logs-a.otel-a1"]);
    }

    #[test]
    fn sanitizes_names() {
        assert_eq!(sanitize_dataset("My-App"), "my_app.otel");
        assert_eq!(sanitize_namespace("..x.."), "x");
        assert_eq!(sanitize_dataset("._"), "");
    }
}
