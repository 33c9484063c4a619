//! The application identity of a resource: ONE function, mirroring the Python reference
//! (`service_identity` + `application_id` in `ingestd/convert/common.py`, moving to
//! `ingestd/convert/identity.py`). Change both together; the differential tests hold them equal.

use crate::common::each_field;
use crate::json::{self, Object, Value};
use crate::wire::{Result, FIXED64, LEN, VARINT};

/// What the OTLP SDKs report when the service sets no name.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// (name, namespace, environment) of a resource's attributes (a dict, last value per key).
///
/// `service.name` missing or empty-valued defaults to `unknown_service`; a non-string value is
/// used as its JSON text; `deployment.environment` wins over `deployment.environment.name`.
pub fn service_identity(attributes: &Object) -> (String, String, String) {
    let present = |key: &str| attributes.get(key).filter(|v| **v != Value::Null);
    let name = present("service.name").map_or_else(|| UNKNOWN_SERVICE.to_owned(), text);
    let environment = present("deployment.environment")
        .or_else(|| present("deployment.environment.name"))
        .map_or_else(String::new, text);
    let namespace = present("service.namespace").map_or_else(String::new, text);
    (name, namespace, environment)
}

fn text(value: &Value) -> String {
    match value {
        Value::Str(s) => s.clone(),
        other => String::from_utf8(json::to_text(other)).unwrap_or_default(),
    }
}

/// applicationId: xxh3_64 hex of `namespace \x1f name \x1f environment`.
pub fn application_id(name: &str, namespace: &str, environment: &str) -> String {
    let joined = format!("{namespace}\u{1f}{name}\u{1f}{environment}");
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(joined.as_bytes()))
}

/// The application id of a resource from its raw KeyValue attributes, as
/// `ingestd/convert/identity.py` `application_id` (used by logs today): the last value of each
/// identity key as text (strings as they are, bool/int/double as Python's `str`, anything
/// else empty); an empty `service.name` is `unknown_service`.
///
/// The Python side is being merged into one identity function for every signal; when it is,
/// `service_identity` above and this become one function here too.
pub fn log_application_id(raws: &[&[u8]], depth: u32) -> Result<String> {
    let (mut name, mut namespace, mut environment, mut environment_name) = (None, None, None, None);
    for raw in raws {
        let mut key = "";
        let mut value: Vec<&[u8]> = Vec::new();
        each_field(&[raw], |f| {
            match (f.number, f.wire) {
                (1, LEN) => key = f.text()?,
                (2, LEN) => value.push(f.bytes),
                _ => {}
            }
            Ok(())
        })?;
        let slot = match key {
            "service.name" => &mut name,
            "service.namespace" => &mut namespace,
            "deployment.environment" => &mut environment,
            "deployment.environment.name" => &mut environment_name,
            _ => continue,
        };
        *slot = Some(scalar_text(&value)?);
    }
    let _ = depth;
    let environment = environment.or(environment_name).unwrap_or_default();
    let name = name
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| UNKNOWN_SERVICE.to_owned());
    Ok(application_id(
        &name,
        &namespace.unwrap_or_default(),
        &environment,
    ))
}

/// An AnyValue's scalar as Python's `str` of it; "" for other kinds and an unset value.
fn scalar_text(chunks: &[&[u8]]) -> Result<String> {
    let mut text = String::new();
    each_field(chunks, |f| {
        match (f.number, f.wire) {
            (1, LEN) => text = f.text()?.to_owned(),
            (2, VARINT) => text = if f.int != 0 { "true" } else { "false" }.to_owned(),
            (3, VARINT) => text = (f.int as i64).to_string(),
            (4, FIXED64) => text = json::py_float_repr(f64::from_bits(f.int)),
            (5..=7, LEN) | (8, VARINT) => text = String::new(),
            _ => {}
        }
        Ok(())
    })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_joins_like_the_reference() {
        let mut attributes = Object::new();
        attributes.insert("service.namespace".into(), Value::Str("shop".into()));
        attributes.insert("deployment.environment.name".into(), Value::Int(3));
        let identity = service_identity(&attributes);
        assert_eq!(
            identity,
            ("unknown_service".into(), "shop".into(), "3".into())
        );
        assert_eq!(application_id("", "", "").len(), 16);
    }
}
