//! What the signal converters share, mirroring `ingestd/convert/common.py`: attribute values,
//! the attribute encoder, derived ids (deterministic re-serialization + xxh3), the dimension
//! rows a request introduces, and the rejects.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::ops::Range;

use base64::Engine as _;

use crate::identity;
use crate::json::{self, Nul, Object, Value};
use crate::wire::{self, DecodeError, Field, Reader, Result, FIXED64, LEN, MAX_DEPTH, VARINT};

/// Hash maps keyed by request bytes: xxh3 (SipHash cost 13 % of a traces conversion), with a
/// random seed per map so that crafted inputs cannot aim for collisions.
pub type FastMap<K, V> = HashMap<K, V, SeededXxh3>;

pub fn fast_map<K, V>() -> FastMap<K, V> {
    HashMap::with_hasher(SeededXxh3(RandomState::new().hash_one(0u64)))
}

/// `BuildHasher` of one-shot seeded xxh3 (the crate's streaming builder derives a secret per
/// hasher, which costs more than hashing a short key).
#[derive(Clone, Copy)]
pub struct SeededXxh3(u64);

impl BuildHasher for SeededXxh3 {
    type Hasher = SeededXxh3Hasher;

    fn build_hasher(&self) -> SeededXxh3Hasher {
        SeededXxh3Hasher(self.0)
    }
}

pub struct SeededXxh3Hasher(u64);

impl std::hash::Hasher for SeededXxh3Hasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0 ^ n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub const PG_EPOCH_US: i64 = 946_684_800_000_000;
pub const INT64_MAX: u64 = i64::MAX as u64;
pub const JSONB_VERSION: u8 = 1;

/// What a request brings besides its bytes (the Python reference takes the same).
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Overrides the application id derived from each resource (a request bound to one).
    pub application_id: Option<String>,
    /// Records stamped later than this are refused (`timestamp_in_future`).
    pub max_time_unix_nano: u64,
    /// The converter's clock (logs: the time of a record without one).
    pub now_unix_nano: u64,
    /// Metrics: a histogram, exponential histogram or summary point with more bounds, bucket
    /// counts (per side) or quantiles than this is refused (`too_many_buckets`).
    pub max_buckets_per_point: usize,
}

/// The first refused record, for the client's message: `f"{prefix}{name!r}{suffix}"`, or
/// `prefix + suffix` without a name. (Python composes it: `repr` of a str follows Python's own
/// Unicode tables.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub prefix: &'static str,
    pub name: Option<String>,
    pub suffix: String,
}

/// Refused records: how many, by reason (first-seen order), and the first one.
#[derive(Debug, Default)]
pub struct Rejects {
    pub rejected: u64,
    pub reasons: Vec<(&'static str, u64)>,
    pub example: Option<Example>,
}

impl Rejects {
    pub fn reject(&mut self, reason: &'static str, example: impl FnOnce() -> Example) {
        self.rejected += 1;
        match self.reasons.iter_mut().find(|(r, _)| *r == reason) {
            Some(entry) => entry.1 += 1,
            None => self.reasons.push((reason, 1)),
        }
        if self.example.is_none() {
            self.example = Some(example());
        }
    }
}

/// A metric description row: (applicationId, name) -> (type, unit, description).
pub type Description = ((String, String), (String, String, String));

/// The dimension rows of one request, in the reference's dict order and semantics.
#[derive(Debug, Default)]
pub struct Dimensions {
    /// id -> (attributes jsonb, droppedAttributesCount, schemaUrl); a repeat replaces.
    pub resources: Vec<(i64, Vec<u8>, i32, String)>,
    /// id -> (name, version, attributes jsonb, droppedAttributesCount, schemaUrl); first kept.
    pub scopes: Vec<(i64, String, String, Vec<u8>, i32, String)>,
    /// id -> (name, namespace, environment); first kept.
    pub applications: Vec<(String, String, String, String)>,
    /// (applicationId, metric name) -> (type, unit, description); a repeat replaces.
    pub descriptions: Vec<Description>,
    resource_at: HashMap<i64, usize>,
    scope_at: HashMap<i64, usize>,
    application_at: HashMap<String, usize>,
    description_at: HashMap<(String, String), usize>,
}

impl Dimensions {
    pub fn has_scope(&self, id: i64) -> bool {
        self.scope_at.contains_key(&id)
    }

    pub fn put_resource(&mut self, row: (i64, Vec<u8>, i32, String)) {
        match self.resource_at.get(&row.0) {
            Some(&at) => self.resources[at] = row,
            None => {
                self.resource_at.insert(row.0, self.resources.len());
                self.resources.push(row);
            }
        }
    }

    pub fn put_scope(&mut self, row: (i64, String, String, Vec<u8>, i32, String)) {
        self.scope_at.insert(row.0, self.scopes.len());
        self.scopes.push(row);
    }

    pub fn has_application(&self, id: &str) -> bool {
        self.application_at.contains_key(id)
    }

    pub fn put_application(&mut self, row: (String, String, String, String)) {
        self.application_at
            .insert(row.0.clone(), self.applications.len());
        self.applications.push(row);
    }

    pub fn put_description(&mut self, key: (String, String), value: (String, String, String)) {
        match self.description_at.get(&key) {
            Some(&at) => self.descriptions[at].1 = value,
            None => {
                self.description_at
                    .insert(key.clone(), self.descriptions.len());
                self.descriptions.push((key, value));
            }
        }
    }
}

// -- small conversions ---------------------------------------------------------------------------

/// A uint32 bit field (flags) as int4: the same 32 bits, signed.
pub fn int4_bits(value: u32) -> i32 {
    value as i32
}

/// A uint32 count as int4, saturating at 2^31-1.
pub fn int4_count(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// An int32 enum read from a varint (upb keeps the low 32 bits).
pub fn int32_of(value: u64) -> i32 {
    value as u32 as i32
}

/// *text* with NUL replaced by U+FFFD, and the count (the reference's `clean_text`).
pub fn clean_text(text: &str) -> (String, usize) {
    json::clean_string_raw(text.to_owned())
}

/// Why a record timestamp cannot be stored, or None (the reference's `time_problem`).
pub fn time_problem(unix_nano: u64, max_unix_nano: u64) -> Option<&'static str> {
    if unix_nano == 0 {
        Some("timestamp_missing")
    } else if unix_nano > INT64_MAX {
        Some("timestamp_out_of_range")
    } else if unix_nano > max_unix_nano {
        Some("timestamp_in_future")
    } else {
        None
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The fields of a message sent in several pieces (a singular sub-message repeated on the wire
/// is merged, which is the same as parsing the pieces one after the other).
pub fn each_field<'a>(
    chunks: &[&'a [u8]],
    mut visit: impl FnMut(Field<'a>) -> Result<()>,
) -> Result<()> {
    for chunk in chunks {
        let mut reader = Reader::new(chunk);
        while let Some(field) = reader.next_field()? {
            visit(field)?;
        }
    }
    Ok(())
}

/// Entering a message at nesting level *depth*: TooDeep past upb's limit.
pub fn enter_message(depth: u32) -> Result<()> {
    enter(depth)
}

fn enter(depth: u32) -> Result<()> {
    if depth > MAX_DEPTH {
        Err(DecodeError::TooDeep)
    } else {
        Ok(())
    }
}

// -- attribute values ----------------------------------------------------------------------------

/// A double as JSON-ready: itself when finite, else the tagged `{"$double": ...}`.
pub fn double_value(value: f64) -> Value {
    if value.is_finite() {
        Value::Float(value)
    } else if value.is_nan() {
        json::tagged("$double", "NaN".into())
    } else if value > 0.0 {
        json::tagged("$double", "Infinity".into())
    } else {
        json::tagged("$double", "-Infinity".into())
    }
}

/// How attribute values become JSON: the database contract (tagged NaN/Infinity and bytes) or
/// the log documents (`convert/logs.py` `_value`: non-finite doubles and bytes as strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Contract,
    Logs,
}

enum Case {
    None,
    Value(Value),
    Array(Vec<Value>),
    Kvlist(Vec<(String, Value)>),
}

/// One AnyValue (sent in *chunks*, at nesting level *depth*) as a JSON-ready value.
pub fn any_value(chunks: &[&[u8]], depth: u32) -> Result<Value> {
    any_value_as(chunks, depth, Flavor::Contract)
}

/// `any_value` in the given flavor.
pub fn any_value_as(chunks: &[&[u8]], depth: u32, flavor: Flavor) -> Result<Value> {
    enter(depth)?;
    let mut case = Case::None;
    each_field(chunks, |f| {
        match (f.number, f.wire) {
            (1, LEN) => case = Case::Value(Value::Str(f.text()?.to_owned())),
            (2, VARINT) => case = Case::Value(Value::Bool(f.int != 0)),
            (3, VARINT) => case = Case::Value(Value::Int(f.int as i64)),
            (4, FIXED64) => {
                let value = f64::from_bits(f.int);
                case = Case::Value(match flavor {
                    Flavor::Contract => double_value(value),
                    Flavor::Logs => log_double(value),
                });
            }
            (5, LEN) => {
                let values = array_values(f.bytes, depth + 1, flavor)?;
                match &mut case {
                    Case::Array(items) => items.extend(values),
                    _ => case = Case::Array(values),
                }
            }
            (6, LEN) => {
                let pairs = kvlist_pairs(f.bytes, depth + 1, flavor)?;
                match &mut case {
                    Case::Kvlist(items) => items.extend(pairs),
                    _ => case = Case::Kvlist(pairs),
                }
            }
            (7, LEN) => {
                let text = base64::engine::general_purpose::STANDARD.encode(f.bytes);
                case = Case::Value(match flavor {
                    Flavor::Contract => json::tagged("$bytes", text),
                    Flavor::Logs => Value::Str(text),
                });
            }
            (8, VARINT) => case = Case::Value(Value::Null),
            _ => {}
        }
        Ok(())
    })?;
    Ok(match case {
        Case::None => Value::Null,
        Case::Value(value) => value,
        Case::Array(items) => Value::Array(items),
        Case::Kvlist(pairs) => Value::Object(dict(pairs)),
    })
}

/// A double in a log document: itself when finite, else its name as a string.
pub fn log_double(value: f64) -> Value {
    if value.is_finite() {
        Value::Float(value)
    } else if value.is_nan() {
        Value::Str("NaN".into())
    } else if value > 0.0 {
        Value::Str("Infinity".into())
    } else {
        Value::Str("-Infinity".into())
    }
}

fn array_values(bytes: &[u8], depth: u32, flavor: Flavor) -> Result<Vec<Value>> {
    enter(depth)?;
    let mut out = Vec::new();
    each_field(&[bytes], |f| {
        if (f.number, f.wire) == (1, LEN) {
            out.push(any_value_as(&[f.bytes], depth + 1, flavor)?);
        }
        Ok(())
    })?;
    Ok(out)
}

fn kvlist_pairs(bytes: &[u8], depth: u32, flavor: Flavor) -> Result<Vec<(String, Value)>> {
    enter(depth)?;
    let mut out = Vec::new();
    each_field(&[bytes], |f| {
        if (f.number, f.wire) == (1, LEN) {
            out.push(key_value_as(&[f.bytes], depth + 1, flavor)?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// KeyValue pairs as a dict (a repeated key keeps its last value, as jsonb does).
pub fn dict(pairs: Vec<(String, Value)>) -> Object {
    let mut out = Object::new();
    for (key, value) in pairs {
        out.insert(key, value);
    }
    out
}

/// One KeyValue (in *chunks*, at *depth*) as (key, JSON-ready value).
pub fn key_value(chunks: &[&[u8]], depth: u32) -> Result<(String, Value)> {
    key_value_as(chunks, depth, Flavor::Contract)
}

/// `key_value` in the given flavor.
pub fn key_value_as(chunks: &[&[u8]], depth: u32, flavor: Flavor) -> Result<(String, Value)> {
    enter(depth)?;
    let mut key = "";
    let mut value: Vec<&[u8]> = Vec::new();
    each_field(chunks, |f| {
        match (f.number, f.wire) {
            (1, LEN) => key = f.text()?,
            (2, LEN) => value.push(f.bytes),
            _ => {}
        }
        Ok(())
    })?;
    let value = if value.is_empty() {
        Value::Null
    } else {
        any_value_as(&value, depth + 1, flavor)?
    };
    Ok((key.to_owned(), value))
}

// -- the attribute encoder -----------------------------------------------------------------------

/// Why a raw attribute is refused: the Python reference's BadAttribute text.
pub fn bad_attribute(error: &DecodeError) -> String {
    format!(
        "attribute does not decode: Error parsing message with type \
         'opentelemetry.proto.common.v1.KeyValue': {}",
        match error {
            DecodeError::Malformed => "Wire format was corrupt".to_owned(),
            other => other.to_string(),
        }
    )
}

/// Raw KeyValue bytes -> JSON, memoised by those bytes for one request (the reference's
/// `AttributeEncoder`). NUL-bearing attributes are never cached, so each is counted.
pub struct Attributes<'a> {
    members: FastMap<&'a [u8], Range<usize>>,
    arena: Vec<u8>,
    pairs: FastMap<&'a [u8], (String, Value)>,
    pub nul_replaced: usize,
}

impl Default for Attributes<'_> {
    fn default() -> Self {
        Attributes {
            members: fast_map(),
            arena: Vec::new(),
            pairs: fast_map(),
            nul_replaced: 0,
        }
    }
}

impl<'a> Attributes<'a> {
    /// (key, value) of one raw attribute, NUL replaced (counted): the reference's `_decode`.
    fn decode(&mut self, raw: &[u8]) -> std::result::Result<(String, Value), DecodeError> {
        let (key, value) = key_value(&[raw], 1)?;
        if !key.as_bytes().contains(&0) && !json::holds_nul(&value) {
            return Ok((key, value));
        }
        let mut object = Object::new();
        object.insert(key, value);
        let (cleaned, count) = json::cleaned(Value::Object(object));
        self.nul_replaced += count;
        match cleaned {
            Value::Object(mut object) if object.entries.len() == 1 => {
                Ok(object.entries.pop().unwrap_or((String::new(), Value::Null)))
            }
            _ => Err(DecodeError::Malformed),
        }
    }

    /// Appends the binary jsonb of an attribute list to *out*; Err(message) as BadAttribute.
    pub fn jsonb(
        &mut self,
        raws: &[&'a [u8]],
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), String> {
        out.push(JSONB_VERSION);
        out.push(b'{');
        for (i, raw) in raws.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if let Some(range) = self.members.get(raw) {
                out.extend_from_slice(&self.arena[range.clone()]);
                continue;
            }
            let nul_before = self.nul_replaced;
            let (key, value) = self.decode(raw).map_err(|e| bad_attribute(&e))?;
            let start = out.len();
            json::Writer::new(out, Nul::Keep).member(&key, &value);
            if self.nul_replaced == nul_before {
                let at = self.arena.len();
                self.arena.extend_from_slice(&out[start..]);
                self.members.insert(raw, at..self.arena.len());
            }
        }
        out.push(b'}');
        Ok(())
    }

    /// An attribute list as a dict (events and links nest them); Err(message) as BadAttribute.
    pub fn as_dict(&mut self, raws: &[&'a [u8]]) -> std::result::Result<Object, String> {
        let mut out = Object::new();
        for raw in raws {
            if let Some((key, value)) = self.pairs.get(raw) {
                out.insert(key.clone(), value.clone());
                continue;
            }
            let nul_before = self.nul_replaced;
            let (key, value) = self.decode(raw).map_err(|e| bad_attribute(&e))?;
            if self.nul_replaced == nul_before {
                self.pairs.insert(raw, (key.clone(), value.clone()));
            }
            out.insert(key, value);
        }
        Ok(out)
    }
}

/// The binary jsonb of *value* with NUL replaced (the reference's `jsonb`), and the count.
pub fn jsonb(value: &Value) -> (Vec<u8>, usize) {
    let mut out = vec![JSONB_VERSION];
    let mut writer = json::Writer::new(&mut out, Nul::Replace);
    writer.value(value);
    let count = writer.replaced;
    (out, count)
}

// -- derived ids: deterministic re-serialization, as upb's `SerializeToString(deterministic)` ----

/// Known fields in field-number order, canonical encodings, then unknown fields as received.
struct Canon<'a> {
    known: Vec<(u32, Vec<u8>)>,
    unknown: Vec<&'a [u8]>,
}

impl<'a> Canon<'a> {
    fn new() -> Self {
        Canon {
            known: Vec::new(),
            unknown: Vec::new(),
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.known.sort_by_key(|(number, _)| *number);
        let mut out = Vec::new();
        for (_, bytes) in &self.known {
            out.extend_from_slice(bytes);
        }
        for raw in self.unknown {
            out.extend_from_slice(raw);
        }
        out
    }
}

fn put_varint_field(number: u32, value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    wire::put_tag(&mut out, number, VARINT);
    wire::put_varint(&mut out, value);
    out
}

fn put_len_field(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    wire::put_len(&mut out, number, bytes);
    out
}

/// Collects a repeated message field's canonical elements into one known entry.
fn push_repeated(canon: &mut Canon<'_>, number: u32, element: &[u8]) {
    let bytes = put_len_field(number, element);
    match canon.known.iter_mut().find(|(n, _)| *n == number) {
        Some((_, all)) => all.extend_from_slice(&bytes),
        None => canon.known.push((number, bytes)),
    }
}

fn set_single(canon: &mut Canon<'_>, number: u32, bytes: Vec<u8>) {
    canon.known.retain(|(n, _)| *n != number);
    if !bytes.is_empty() {
        canon.known.push((number, bytes));
    }
}

fn canon_string(number: u32, f: &Field<'_>) -> Result<Vec<u8>> {
    f.text()?;
    Ok(if f.bytes.is_empty() {
        Vec::new()
    } else {
        put_len_field(number, f.bytes)
    })
}

fn canon_uint32(number: u32, value: u64) -> Vec<u8> {
    let value = value & 0xffff_ffff;
    if value == 0 {
        Vec::new()
    } else {
        put_varint_field(number, value)
    }
}

pub fn canon_any_value(chunks: &[&[u8]], depth: u32) -> Result<Vec<u8>> {
    enter(depth)?;
    let mut canon = Canon::new();
    // The oneof: (field number, encoding); a message case sent again merges its pieces.
    let mut case: Option<(u32, Vec<u8>)> = None;
    let mut pieces: Vec<&[u8]> = Vec::new();
    each_field(chunks, |f| {
        let scalar = match (f.number, f.wire) {
            (1, LEN) => {
                f.text()?;
                Some(put_len_field(1, f.bytes))
            }
            (2, VARINT) => Some(put_varint_field(2, u64::from(f.int != 0))),
            (3, VARINT) => Some(put_varint_field(3, f.int)),
            (4, FIXED64) => {
                let mut out = Vec::new();
                wire::put_tag(&mut out, 4, FIXED64);
                out.extend_from_slice(&f.int.to_le_bytes());
                Some(out)
            }
            (7, LEN) => Some(put_len_field(7, f.bytes)),
            (8, VARINT) => Some(put_varint_field(8, i64::from(int32_of(f.int)) as u64)),
            (5 | 6, LEN) => {
                if !matches!(&case, Some((n, _)) if *n == f.number) {
                    pieces.clear();
                }
                pieces.push(f.bytes);
                let inner = canon_list(&pieces, depth + 1, f.number == 5)?;
                case = Some((f.number, put_len_field(f.number, &inner)));
                None
            }
            _ => {
                canon.unknown.push(f.raw);
                None
            }
        };
        if let Some(bytes) = scalar {
            case = Some((f.number, bytes));
            pieces.clear();
        }
        Ok(())
    })?;
    if let Some(case) = case {
        canon.known.push(case);
    }
    Ok(canon.finish())
}

/// ArrayValue (`values` are AnyValues) or KeyValueList (`values` are KeyValues).
fn canon_list(chunks: &[&[u8]], depth: u32, array: bool) -> Result<Vec<u8>> {
    enter(depth)?;
    let mut canon = Canon::new();
    each_field(chunks, |f| {
        if (f.number, f.wire) == (1, LEN) {
            let element = if array {
                canon_any_value(&[f.bytes], depth + 1)?
            } else {
                canon_key_value(&[f.bytes], depth + 1)?
            };
            push_repeated(&mut canon, 1, &element);
        } else {
            canon.unknown.push(f.raw);
        }
        Ok(())
    })?;
    Ok(canon.finish())
}

pub fn canon_key_value(chunks: &[&[u8]], depth: u32) -> Result<Vec<u8>> {
    enter(depth)?;
    let mut canon = Canon::new();
    let mut value: Vec<&[u8]> = Vec::new();
    each_field(chunks, |f| {
        match (f.number, f.wire) {
            (1, LEN) => set_single(&mut canon, 1, canon_string(1, &f)?),
            (2, LEN) => value.push(f.bytes),
            (3, VARINT) => {
                let v = i64::from(int32_of(f.int));
                set_single(
                    &mut canon,
                    3,
                    if v == 0 {
                        Vec::new()
                    } else {
                        put_varint_field(3, v as u64)
                    },
                );
            }
            _ => canon.unknown.push(f.raw),
        }
        Ok(())
    })?;
    if !value.is_empty() {
        let inner = canon_any_value(&value, depth + 1)?;
        canon.known.push((2, put_len_field(2, &inner)));
    }
    Ok(canon.finish())
}

fn canon_entity_ref(bytes: &[u8], depth: u32) -> Result<Vec<u8>> {
    enter(depth)?;
    let mut canon = Canon::new();
    each_field(&[bytes], |f| {
        match (f.number, f.wire) {
            (1 | 2, LEN) => set_single(&mut canon, f.number, canon_string(f.number, &f)?),
            (3 | 4, LEN) => {
                f.text()?;
                push_repeated(&mut canon, f.number, f.bytes);
            }
            _ => canon.unknown.push(f.raw),
        }
        Ok(())
    })?;
    Ok(canon.finish())
}

/// The deterministic serialization of a Resource (at *depth*).
pub fn canon_resource(chunks: &[&[u8]], depth: u32) -> Result<Vec<u8>> {
    if chunks.is_empty() {
        return Ok(Vec::new());
    }
    enter(depth)?;
    let mut canon = Canon::new();
    each_field(chunks, |f| {
        match (f.number, f.wire) {
            (1, LEN) => push_repeated(&mut canon, 1, &canon_key_value(&[f.bytes], depth + 1)?),
            (2, VARINT) => set_single(&mut canon, 2, canon_uint32(2, f.int)),
            (3, LEN) => push_repeated(&mut canon, 3, &canon_entity_ref(f.bytes, depth + 1)?),
            _ => canon.unknown.push(f.raw),
        }
        Ok(())
    })?;
    Ok(canon.finish())
}

/// The deterministic serialization of an InstrumentationScope (at *depth*).
pub fn canon_scope(chunks: &[&[u8]], depth: u32) -> Result<Vec<u8>> {
    if chunks.is_empty() {
        return Ok(Vec::new());
    }
    enter(depth)?;
    let mut canon = Canon::new();
    each_field(chunks, |f| {
        match (f.number, f.wire) {
            (1 | 2, LEN) => set_single(&mut canon, f.number, canon_string(f.number, &f)?),
            (3, LEN) => push_repeated(&mut canon, 3, &canon_key_value(&[f.bytes], depth + 1)?),
            (4, VARINT) => set_single(&mut canon, 4, canon_uint32(4, f.int)),
            _ => canon.unknown.push(f.raw),
        }
        Ok(())
    })?;
    Ok(canon.finish())
}

/// resourceId / scopeId: signed xxh3_64 of the deterministic serialization + schema URL.
pub fn message_id(canonical: &[u8], schema_url: &str) -> i64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(canonical);
    hasher.update(schema_url.as_bytes());
    hasher.digest() as i64
}

// -- resources and scopes ------------------------------------------------------------------------

/// What every record of one resource shares.
pub struct ResourceInfo {
    pub resource_id: i64,
    pub application_id: String,
}

/// The attributes of a Resource or scope as a dict, and its dropped count.
fn attributes_of(
    chunks: &[&[u8]],
    attributes_field: u32,
    dropped_field: u32,
    depth: u32,
) -> Result<(Object, u32)> {
    let mut pairs = Vec::new();
    let mut dropped = 0u32;
    each_field(chunks, |f| {
        if (f.number, f.wire) == (attributes_field, LEN) {
            pairs.push(key_value(&[f.bytes], depth + 1)?);
        } else if (f.number, f.wire) == (dropped_field, VARINT) {
            dropped = f.int as u32;
        }
        Ok(())
    })?;
    Ok((dict(pairs), dropped))
}

/// Register a resource (sent in *chunks* at *depth*) and its application; ids and NUL count.
pub fn add_resource(
    dims: &mut Dimensions,
    chunks: &[&[u8]],
    schema_url: &str,
    depth: u32,
    ctx: &Context,
) -> Result<(ResourceInfo, usize)> {
    let canonical = canon_resource(chunks, depth)?;
    let (attributes, dropped) = if chunks.is_empty() {
        (Object::new(), 0)
    } else {
        attributes_of(chunks, 1, 2, depth)?
    };
    let resource_id = message_id(&canonical, schema_url);
    let (attrs_jsonb, mut nul) = jsonb(&Value::Object(attributes.clone()));
    let (url, nul_url) = clean_text(schema_url);
    dims.put_resource((resource_id, attrs_jsonb, int4_count(dropped), url));
    if let Some(id) = ctx.application_id.as_ref().filter(|id| !id.is_empty()) {
        // A registered application's id: no applications row (that row is Deep Eyes').
        let info = ResourceInfo {
            resource_id,
            application_id: id.clone(),
        };
        return Ok((info, nul + nul_url));
    }
    let identity = identity::service_identity(&attributes);
    let app_id = identity::application_id(&identity.0, &identity.1, &identity.2);
    if !dims.has_application(&app_id) {
        let (name, n1) = clean_text(&identity.0);
        let (namespace, n2) = clean_text(&identity.1);
        let (environment, n3) = clean_text(&identity.2);
        nul += n1 + n2 + n3;
        dims.put_application((app_id.clone(), name, namespace, environment));
    }
    Ok((
        ResourceInfo {
            resource_id,
            application_id: app_id,
        },
        nul + nul_url,
    ))
}

/// Register an instrumentation scope; its id and the NUL count.
pub fn add_scope(
    dims: &mut Dimensions,
    chunks: &[&[u8]],
    schema_url: &str,
    depth: u32,
) -> Result<(i64, usize)> {
    let canonical = canon_scope(chunks, depth)?;
    let scope_id = message_id(&canonical, schema_url);
    let mut name = "";
    let mut version = "";
    each_field(chunks, |f| {
        match (f.number, f.wire) {
            (1, LEN) => name = f.text()?,
            (2, LEN) => version = f.text()?,
            _ => {}
        }
        Ok(())
    })?;
    let (attributes, dropped) = attributes_of(chunks, 3, 4, depth)?;
    if dims.has_scope(scope_id) {
        return Ok((scope_id, 0));
    }
    let (attrs_jsonb, nul) = jsonb(&Value::Object(attributes));
    let (name, n1) = clean_text(name);
    let (version, n2) = clean_text(version);
    let (url, n3) = clean_text(schema_url);
    dims.put_scope((
        scope_id,
        name,
        version,
        attrs_jsonb,
        int4_count(dropped),
        url,
    ));
    Ok((scope_id, nul + n1 + n2 + n3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_orders_fields_and_keeps_unknown_ones_last() {
        // unknown field 10, dropped=3, one attribute {key "a"}: upb writes 0a030a0161 1003 5005
        let raw = [0x50, 0x05, 0x10, 0x03, 0x0a, 0x03, 0x0a, 0x01, b'a'];
        let got = canon_resource(&[&raw], 3).unwrap();
        assert_eq!(got, [0x0a, 0x03, 0x0a, 0x01, b'a', 0x10, 0x03, 0x50, 0x05]);
    }

    #[test]
    fn any_value_maps_like_the_reference() {
        let nan = [0x21, 0, 0, 0, 0, 0, 0, 0xf8, 0x7f];
        assert_eq!(
            json::to_text(&any_value(&[&nan], 1).unwrap()),
            b"{\"$double\":\"NaN\"}"
        );
        assert_eq!(any_value(&[&[0x18, 0x7f]], 1).unwrap(), Value::Int(127));
        assert_eq!(any_value(&[&[]], 1).unwrap(), Value::Null);
    }

    #[test]
    fn rejects_keep_the_first_example() {
        let mut rejects = Rejects::default();
        let example = |n: &str| Example {
            prefix: "span ",
            name: Some(n.into()),
            suffix: String::new(),
        };
        rejects.reject("a", || example("x"));
        rejects.reject("a", || example("y"));
        assert_eq!(rejects.reasons, vec![("a", 2)]);
        assert_eq!(rejects.example.unwrap().name.as_deref(), Some("x"));
    }
}

// -- already canonical? (then the raw bytes are the deterministic serialization) -----------------

fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Whether *f* is encoded minimally (tag, varint, length), as upb would write it.
pub fn minimal(f: &Field<'_>) -> bool {
    let tag = varint_len((u64::from(f.number) << 3) | u64::from(f.wire));
    let body = match f.wire {
        VARINT => varint_len(f.int),
        FIXED64 => 8,
        wire::FIXED32 => 4,
        LEN => varint_len(f.bytes.len() as u64) + f.bytes.len(),
        _ => return false,
    };
    f.raw.len() == tag + body
}

/// Fields in strictly increasing number order, except *repeated* ones, which may repeat
/// back to back; every field minimal and known (checked by *known*).
pub fn canonical_fields(
    bytes: &[u8],
    repeated: &[u32],
    mut known: impl FnMut(&Field<'_>) -> bool,
) -> bool {
    let mut reader = Reader::new(bytes);
    let mut last = 0u32;
    loop {
        match reader.next_field() {
            Ok(None) => return true,
            Ok(Some(f)) => {
                let order = f.number > last || (f.number == last && repeated.contains(&last));
                if !order || !minimal(&f) || !known(&f) {
                    return false;
                }
                last = f.number;
            }
            Err(_) => return false,
        }
    }
}

/// Whether an AnyValue's bytes are already its deterministic serialization.
pub fn canonical_any_value(bytes: &[u8]) -> bool {
    let mut cases = 0;
    canonical_fields(bytes, &[], |f| {
        cases += 1;
        cases == 1
            && match (f.number, f.wire) {
                (1 | 7, LEN) => true,
                (2, VARINT) => f.int <= 1,
                (3, VARINT) => true,
                (4, FIXED64) => true,
                (5 | 6, LEN) => canonical_fields(f.bytes, &[1], |g| {
                    (g.number, g.wire) == (1, LEN)
                        && if f.number == 5 {
                            canonical_any_value(g.bytes)
                        } else {
                            canonical_key_value(g.bytes)
                        }
                }),
                (8, VARINT) => f.int == i64::from(int32_of(f.int)) as u64,
                _ => false,
            }
    })
}

/// Whether a KeyValue's bytes are already its deterministic serialization.
pub fn canonical_key_value(bytes: &[u8]) -> bool {
    canonical_fields(bytes, &[], |f| match (f.number, f.wire) {
        (1, LEN) => !f.bytes.is_empty(),
        (2, LEN) => canonical_any_value(f.bytes),
        (3, VARINT) => f.int != 0 && f.int == i64::from(int32_of(f.int)) as u64,
        _ => false,
    })
}

#[cfg(test)]
mod canonical_tests {
    use super::*;

    #[test]
    fn canonical_check_agrees_with_the_canonical_form() {
        let cases: [&[u8]; 6] = [
            &[0x0a, 0x01, b'k', 0x12, 0x03, 0x0a, 0x01, b'v'],
            &[0x12, 0x03, 0x0a, 0x01, b'v', 0x0a, 0x01, b'k'],
            &[0x0a, 0x00],
            &[0x0a, 0x01, b'k', 0x12, 0x02, 0x10, 0x02],
            &[0x0a, 0x01, b'k', 0x12, 0x04, 0x0a, 0x00, 0x18, 0x01],
            &[0x0a, 0x01, b'k', 0x12, 0x00, 0x50, 0x01],
        ];
        // The check may say no to a canonical encoding (then the slow path runs), never yes to
        // a non-canonical one.
        for raw in cases {
            let canonical = canon_key_value(&[raw], 1).unwrap();
            if canonical_key_value(raw) {
                assert_eq!(canonical, raw, "{raw:?}");
            }
        }
        assert!(canonical_key_value(cases[0]));
        assert!(!canonical_key_value(cases[1]));
    }
}
