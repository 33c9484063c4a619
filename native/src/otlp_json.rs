//! OTLP/JSON -> OTLP protobuf bytes, for the inputs where the result is certain to be the
//! message `ingestd/receiver/otlp_json.py` builds; anything else returns None and the Python
//! decoder decides (and words the error). The protobuf then goes through the signal's native
//! converter like any other request.
//!
//! Why the wire order is enough: the Python decoder walks each object in key order, sets
//! scalars (the last one wins), merges into sub-messages and appends to repeated fields; the
//! protobuf parser does exactly that with the fields in the order written here.
//!
//! Accepted as the Python decoder accepts them: numbers within their field's range; integers
//! also as plain decimal strings, doubles as plain decimal strings or NaN / Infinity /
//! -Infinity; enum numbers or names; hex ids; base64 without padding characters. Left to
//! Python: integers beyond 64 bits, strings with whitespace, underscores or non-ASCII digits
//! in numbers, anything invalid.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use serde_json::{Map, Number, Value};

use crate::otlp_json_schema::{ENUMS, MESSAGES};
use crate::wire::{self, FIXED32, FIXED64, VARINT};

pub use crate::otlp_json_schema::{LOGS, METRICS, TRACES};

/// How a field is written (the proto type, plus OTLP's hex ids).
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Str,
    Bool,
    Double,
    Int32,
    Uint32,
    Int64,
    Uint64,
    Fixed64,
    Sfixed64,
    Fixed32,
    Sint32,
    Enum(usize),
    Hex,
    Base64,
    Message(usize),
}

/// One field of a message: its JSON and proto names, number and kind.
#[derive(Debug)]
pub struct Field {
    pub json: &'static str,
    pub name: &'static str,
    pub number: u32,
    pub kind: Kind,
    pub repeated: bool,
}

/// The request (message index *root*, see the schema) as protobuf bytes, or None.
pub fn transcode(body: &[u8], root: usize) -> Option<Vec<u8>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let Value::Object(object) = value else {
        return None;
    };
    let mut out = Vec::with_capacity(body.len() / 2);
    message(&object, root, &mut out)?;
    Some(out)
}

fn message(object: &Map<String, Value>, index: usize, out: &mut Vec<u8>) -> Option<()> {
    let fields = MESSAGES[index];
    for (key, value) in object {
        let Some(field) = fields.iter().find(|f| f.json == key || f.name == key) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        if field.repeated {
            let Value::Array(items) = value else {
                return None;
            };
            for item in items {
                one(field, item, out)?;
            }
        } else {
            one(field, value, out)?;
        }
    }
    Some(())
}

fn one(field: &Field, value: &Value, out: &mut Vec<u8>) -> Option<()> {
    let n = field.number;
    match field.kind {
        Kind::Message(index) => {
            let Value::Object(object) = value else {
                return None;
            };
            let mut inner = Vec::new();
            message(object, index, &mut inner)?;
            wire::put_len(out, n, &inner);
        }
        Kind::Str => wire::put_len(out, n, value.as_str()?.as_bytes()),
        Kind::Bool => varint(out, n, u64::from(value.as_bool()?)),
        Kind::Double => fixed64(out, n, double(value)?.to_bits()),
        Kind::Int32 => varint(
            out,
            n,
            i64::from(i32::try_from(integer(value)?).ok()?) as u64,
        ),
        Kind::Enum(e) => varint(out, n, i64::from(enumeration(value, e)?) as u64),
        Kind::Uint32 => varint(out, n, u64::from(u32::try_from(integer(value)?).ok()?)),
        Kind::Sint32 => {
            let v = i32::try_from(integer(value)?).ok()?;
            varint(out, n, u64::from(((v << 1) ^ (v >> 31)) as u32));
        }
        Kind::Int64 => varint(out, n, i64::try_from(integer(value)?).ok()? as u64),
        Kind::Uint64 => varint(out, n, u64::try_from(integer(value)?).ok()?),
        Kind::Fixed64 => fixed64(out, n, u64::try_from(integer(value)?).ok()?),
        Kind::Sfixed64 => fixed64(out, n, i64::try_from(integer(value)?).ok()? as u64),
        Kind::Fixed32 => {
            wire::put_tag(out, n, FIXED32);
            out.extend_from_slice(&u32::try_from(integer(value)?).ok()?.to_le_bytes());
        }
        Kind::Hex => wire::put_len(out, n, &hex(value.as_str()?)?),
        Kind::Base64 => wire::put_len(out, n, &base64(value.as_str()?)?),
    }
    Some(())
}

fn varint(out: &mut Vec<u8>, number: u32, value: u64) {
    wire::put_tag(out, number, VARINT);
    wire::put_varint(out, value);
}

fn fixed64(out: &mut Vec<u8>, number: u32, bits: u64) {
    wire::put_tag(out, number, FIXED64);
    out.extend_from_slice(&bits.to_le_bytes());
}

/// A JSON number as the Python decoder reads it: an integer literal (within 64 bits), or a
/// float literal (finite).
enum Num {
    Int(i128),
    Float(f64),
}

fn number(n: &Number) -> Option<Num> {
    let text = n.as_str();
    if text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        let value: f64 = text.parse().ok()?;
        return value.is_finite().then_some(Num::Float(value));
    }
    let value: i128 = text.parse().ok()?;
    // orjson reads integers beyond 64 bits as floats: leave those to Python.
    (i128::from(i64::MIN)..=i128::from(u64::MAX))
        .contains(&value)
        .then_some(Num::Int(value))
}

/// `_integer`: an int, an integral float, or a plain decimal string.
fn integer(value: &Value) -> Option<i128> {
    match value {
        Value::Number(n) => match number(n)? {
            Num::Int(i) => Some(i),
            // Python: int(number) of an integral float; within 2^64 it is exact in f64.
            Num::Float(f) if f.fract() == 0.0 && f.abs() < 1.8e19 => Some(f as i128),
            Num::Float(_) => None,
        },
        Value::String(s) => {
            let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
            if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            s.parse().ok()
        }
        _ => None,
    }
}

/// `_double`: a number, a plain decimal string, or NaN / Infinity / -Infinity.
fn double(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => match number(n)? {
            Num::Int(i) => Some(i as f64),
            Num::Float(f) => Some(f),
        },
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            text => {
                let body = text.strip_prefix(['+', '-']).unwrap_or(text);
                let plain = !body.is_empty()
                    && body.bytes().all(|b| {
                        b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')
                    })
                    && body
                        .bytes()
                        .next()
                        .is_some_and(|b| b.is_ascii_digit() || b == b'.');
                if !plain {
                    return None;
                }
                text.parse().ok()
            }
        },
        _ => None,
    }
}

fn enumeration(value: &Value, e: usize) -> Option<i32> {
    match value {
        Value::Number(n) => match number(n)? {
            Num::Int(i) => i32::try_from(i).ok(),
            Num::Float(_) => None,
        },
        Value::String(s) => ENUMS[e].iter().find(|(name, _)| name == s).map(|(_, v)| *v),
        _ => None,
    }
}

fn hex(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// `_base64` (URL-safe letters mapped, padding added) for text without `=`.
fn base64(text: &str) -> Option<Vec<u8>> {
    if text.contains('=') {
        return None;
    }
    let mut standard: String = text.replace('-', "+").replace('_', "/");
    while !standard.len().is_multiple_of(4) {
        standard.push('=');
    }
    LENIENT.decode(standard).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcodes_ids_enums_and_int64_strings() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102","kind":"SPAN_KIND_SERVER","startTimeUnixNano":"5"}]}]}]}"#;
        let out = transcode(body, TRACES).unwrap();
        // request { resource_spans { scope_spans { spans { trace_id, kind 2, start 5 } } } }
        let mut expected = vec![0x0a, 0x13, 0x12, 0x11, 0x12, 0x0f];
        expected.extend_from_slice(&[
            0x0a, 0x02, 0x01, 0x02, 0x30, 0x02, 0x39, 5, 0, 0, 0, 0, 0, 0, 0,
        ]);
        assert_eq!(out, expected);
    }

    #[test]
    fn leaves_doubtful_input_to_python() {
        assert!(transcode(b"[1]", TRACES).is_none());
        assert!(transcode(br#"{"resourceSpans":{}}"#, TRACES).is_none());
        let big = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":" 5"}]}]}]}"#;
        assert!(transcode(big, TRACES).is_none());
    }
}
