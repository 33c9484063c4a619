//! The application identity of a resource: ONE function, mirroring the Python reference
//! (`service_identity` + `application_id` in `ingestd/convert/common.py`, moving to
//! `ingestd/convert/identity.py`). Change both together; the differential tests hold them equal.

use crate::common::{dict, each_field, key_value};
use crate::json::{self, Object, Value};
use crate::wire::{Result, LEN};

/// What the OTLP SDKs report when the service sets no name.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// (name, namespace, environment) of a resource's attributes (a dict, last value per key),
/// as `ingestd/convert/identity.py` `service_identity` for every signal.
///
/// A string value is used as it is, any other as its JSON text; an empty (or unset) value
/// counts as missing. `service.name` missing is `unknown_service`; `deployment.environment`
/// missing or empty falls back to `deployment.environment.name`.
pub fn service_identity(attributes: &Object) -> (String, String, String) {
    let present = |key: &str| {
        attributes
            .get(key)
            .map(text)
            .filter(|value| !value.is_empty())
    };
    let name = present("service.name").unwrap_or_else(|| UNKNOWN_SERVICE.to_owned());
    let environment = present("deployment.environment")
        .or_else(|| present("deployment.environment.name"))
        .unwrap_or_default();
    let namespace = present("service.namespace").unwrap_or_default();
    (name, namespace, environment)
}

fn text(value: &Value) -> String {
    match value {
        Value::Str(s) => s.clone(),
        Value::Null => String::new(),
        other => String::from_utf8(json::to_text(other)).unwrap_or_default(),
    }
}

/// applicationId: xxh3_64 hex of `namespace \x1f name \x1f environment`.
pub fn application_id(name: &str, namespace: &str, environment: &str) -> String {
    let joined = format!("{namespace}\u{1f}{name}\u{1f}{environment}");
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(joined.as_bytes()))
}

/// The application id of a resource from its raw KeyValue attributes (logs): the same
/// identity as `service_identity`, read from the identity keys only.
pub fn log_application_id(raws: &[&[u8]], depth: u32) -> Result<String> {
    let mut pairs = Vec::new();
    for raw in raws {
        let mut key = "";
        each_field(&[raw], |f| {
            if (f.number, f.wire) == (1, LEN) {
                key = f.text()?;
            }
            Ok(())
        })?;
        if IDENTITY_KEYS.contains(&key) {
            pairs.push(key_value(&[raw], depth)?);
        }
    }
    let (name, namespace, environment) = service_identity(&dict(pairs));
    Ok(application_id(&name, &namespace, &environment))
}

const IDENTITY_KEYS: [&str; 4] = [
    "service.name",
    "service.namespace",
    "deployment.environment",
    "deployment.environment.name",
];

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
