//! The application identity of a resource: ONE function, mirroring the Python reference
//! (`service_identity` + `application_id` in `ingestd/convert/common.py`, moving to
//! `ingestd/convert/identity.py`). Change both together; the differential tests hold them equal.

use crate::json::{self, Object, Value};

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
