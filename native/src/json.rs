//! JSON values and their text, byte for byte as the Python reference's orjson writes them.
//!
//! orjson (pinned in pyproject.toml) escapes like serde_json (`\" \\ \b \t \n \f \r`, other
//! control characters as lowercase `\u00xx`, everything else raw) and formats finite doubles
//! with zmij (orjson >= 3.11.7). Objects behave like the Python dicts they are built from: a
//! repeated key keeps its first position and takes the last value.

use std::collections::HashMap;

/// A JSON-ready value (the Python reference's dict / list / str / int / float / bool / None).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Array(Vec<Value>),
    Object(Object),
}

/// An insertion-ordered map with Python dict semantics for repeated keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object {
    pub entries: Vec<(String, Value)>,
    index: Option<HashMap<String, usize>>,
}

// Past this many entries a hash index replaces the linear scan (hostile inputs).
const INDEX_FROM: usize = 16;

impl Object {
    pub fn new() -> Self {
        Object::default()
    }

    pub fn insert(&mut self, key: String, value: Value) {
        if let Some(index) = &mut self.index {
            if let Some(&at) = index.get(&key) {
                self.entries[at].1 = value;
            } else {
                index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
            return;
        }
        if let Some(entry) = self.entries.iter_mut().find(|(k, _)| *k == key) {
            entry.1 = value;
            return;
        }
        self.entries.push((key, value));
        if self.entries.len() > INDEX_FROM {
            let index = self
                .entries
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i))
                .collect();
            self.index = Some(index);
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        if let Some(index) = &self.index {
            return index.get(key).map(|&at| &self.entries[at].1);
        }
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A one-entry object: the tagged forms `{"$double": "NaN"}` and `{"$bytes": "..."}`.
pub fn tagged(tag: &str, text: String) -> Value {
    let mut object = Object::new();
    object.insert(tag.to_owned(), Value::Str(text));
    Value::Object(object)
}

/// What a NUL character inside a string becomes in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nul {
    /// `\ufffd`, counted: the reference's `dumps` (orjson, then `\u0000` -> `\ufffd`).
    Replace,
    /// `\u0000`: plain orjson.
    Keep,
}

/// Writes JSON text into a buffer, counting replaced NUL characters.
pub struct Writer<'a> {
    pub out: &'a mut Vec<u8>,
    pub nul: Nul,
    pub replaced: usize,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl<'a> Writer<'a> {
    pub fn new(out: &'a mut Vec<u8>, nul: Nul) -> Self {
        Writer {
            out,
            nul,
            replaced: 0,
        }
    }

    pub fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.out.extend_from_slice(b"null"),
            Value::Bool(true) => self.out.extend_from_slice(b"true"),
            Value::Bool(false) => self.out.extend_from_slice(b"false"),
            Value::Int(v) => self.int(*v),
            Value::UInt(v) => self
                .out
                .extend_from_slice(itoa::Buffer::new().format(*v).as_bytes()),
            Value::Float(v) => self.float(*v),
            Value::Str(s) => self.string(s),
            Value::Array(items) => {
                self.out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.value(item);
                }
                self.out.push(b']');
            }
            Value::Object(object) => {
                self.out.push(b'{');
                for (i, (key, item)) in object.entries.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.member(key, item);
                }
                self.out.push(b'}');
            }
        }
    }

    /// `"key":value`, an object member without the braces.
    pub fn member(&mut self, key: &str, value: &Value) {
        self.string(key);
        self.out.push(b':');
        self.value(value);
    }

    pub fn int(&mut self, value: i64) {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// A double as orjson writes it; only finite values reach here (others are tagged).
    pub fn float(&mut self, value: f64) {
        if value.is_finite() {
            self.out
                .extend_from_slice(zmij::Buffer::new().format_finite(value).as_bytes());
        } else {
            self.out.extend_from_slice(b"null");
        }
    }

    pub fn string(&mut self, text: &str) {
        self.out.push(b'"');
        let bytes = text.as_bytes();
        let mut start = 0;
        for (i, &byte) in bytes.iter().enumerate() {
            if !NEEDS_ESCAPE[usize::from(byte)] {
                continue;
            }
            self.out.extend_from_slice(&bytes[start..i]);
            match byte {
                b'"' => self.out.extend_from_slice(b"\\\""),
                b'\\' => self.out.extend_from_slice(b"\\\\"),
                0x08 => self.out.extend_from_slice(b"\\b"),
                b'\t' => self.out.extend_from_slice(b"\\t"),
                b'\n' => self.out.extend_from_slice(b"\\n"),
                0x0c => self.out.extend_from_slice(b"\\f"),
                b'\r' => self.out.extend_from_slice(b"\\r"),
                0 if self.nul == Nul::Replace => {
                    self.replaced += 1;
                    self.out.extend_from_slice(b"\\ufffd");
                }
                _ => {
                    self.out.extend_from_slice(b"\\u00");
                    self.out.push(HEX[usize::from(byte >> 4)]);
                    self.out.push(HEX[usize::from(byte & 0xf)]);
                }
            }
            start = i + 1;
        }
        self.out.extend_from_slice(&bytes[start..]);
        self.out.push(b'"');
    }
}

/// The bytes a JSON string escapes: control characters, `"` and `\\` (serde_json's table).
static NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = true;
        i += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// The JSON text of *value* (plain orjson: NUL kept as `\u0000`).
pub fn to_text(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    Writer::new(&mut out, Nul::Keep).value(value);
    out
}

/// *value* with every NUL in its keys and strings replaced by U+FFFD (keys that then collide
/// merge as in a dict), and how many were replaced: the reference's `orjson.loads(dumps(v))`.
pub fn cleaned(value: Value) -> (Value, usize) {
    match value {
        Value::Str(s) => clean_string(s),
        Value::Array(items) => {
            let mut count = 0;
            let items = items
                .into_iter()
                .map(|item| {
                    let (item, n) = cleaned(item);
                    count += n;
                    item
                })
                .collect();
            (Value::Array(items), count)
        }
        Value::Object(object) => {
            let mut count = 0;
            let mut out = Object::new();
            for (key, item) in object.entries {
                let (key, n) = clean_string_raw(key);
                let (item, m) = cleaned(item);
                count += n + m;
                out.insert(key, item);
            }
            (Value::Object(out), count)
        }
        other => (other, 0),
    }
}

fn clean_string(text: String) -> (Value, usize) {
    let (text, count) = clean_string_raw(text);
    (Value::Str(text), count)
}

/// *text* with NUL replaced by U+FFFD, and the count (the reference's `clean_text`).
pub fn clean_string_raw(text: String) -> (String, usize) {
    let count = text.bytes().filter(|&b| b == 0).count();
    if count == 0 {
        return (text, 0);
    }
    (text.replace('\0', "\u{fffd}"), count)
}

/// Whether *value* holds a NUL in any key or string.
pub fn holds_nul(value: &Value) -> bool {
    match value {
        Value::Str(s) => s.as_bytes().contains(&0),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(object) => object
            .entries
            .iter()
            .any(|(k, v)| k.as_bytes().contains(&0) || holds_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_orjson() {
        let mut out = Vec::new();
        Writer::new(&mut out, Nul::Keep).string("a\"\\\n\u{1}/\u{7f}é\0");
        assert_eq!(out, "\"a\\\"\\\\\\n\\u0001/\u{7f}é\\u0000\"".as_bytes());
    }

    #[test]
    fn replaces_and_counts_nul() {
        let mut out = Vec::new();
        let mut writer = Writer::new(&mut out, Nul::Replace);
        writer.string("\0x\0");
        assert_eq!(writer.replaced, 2);
        assert_eq!(out, b"\"\\ufffdx\\ufffd\"");
    }

    #[test]
    fn objects_keep_first_position_and_last_value() {
        let mut object = Object::new();
        object.insert("a".into(), Value::Int(1));
        object.insert("b".into(), Value::Int(2));
        object.insert("a".into(), Value::Int(3));
        assert_eq!(to_text(&Value::Object(object)), b"{\"a\":3,\"b\":2}");
    }

    #[test]
    fn floats_like_orjson() {
        for (value, text) in [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (1e16, "1e+16"),
            (1e-5, "0.00001"),
            (1.2e30, "1.2e+30"),
        ] {
            assert_eq!(to_text(&Value::Float(value)), text.as_bytes());
        }
    }
}

/// Python's `repr(float)` (`str()` too): shortest round-trip digits, exponent form below
/// 1e-4 and from 1e16 (`1e-05`, `1e+16`), else fixed with at least one decimal (`3.0`).
pub fn py_float_repr(value: f64) -> String {
    if value.is_nan() {
        return "nan".into();
    }
    if value.is_infinite() {
        return if value > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let sci = format!("{value:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if !(-4..16).contains(&exponent) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{first}{dot}e{esign}{:02}", exponent.abs());
    }
    let point = exponent + 1; // digits before the decimal point
    if point <= 0 {
        let zeros = "0".repeat(usize::try_from(-point).unwrap_or(0));
        return format!("{sign}0.{zeros}{digits}");
    }
    let point = usize::try_from(point).unwrap_or(0);
    if digits.len() <= point {
        let zeros = "0".repeat(point - digits.len());
        return format!("{sign}{digits}{zeros}.0");
    }
    let (int, frac) = digits.split_at(point);
    format!("{sign}{int}.{frac}")
}

#[cfg(test)]
mod repr_tests {
    use super::py_float_repr;

    #[test]
    fn matches_python_repr() {
        for (value, text) in [
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-0.0, "-0.0"),
            (3.0, "3.0"),
            (123.456, "123.456"),
            (5e-324, "5e-324"),
            (f64::NAN, "nan"),
        ] {
            assert_eq!(py_float_repr(value), text);
        }
    }
}
