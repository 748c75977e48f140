//! The v1 JSON Schemas, embedded from `schemas/` and compiled once per process.

use crate::FrameError;
use serde_json::Value;
use std::sync::LazyLock;

/// `schemas/permission-broker-request.v1.json`, as shipped.
pub const REQUEST_SCHEMA: &str = include_str!("../../../schemas/permission-broker-request.v1.json");
/// `schemas/permission-broker-response.v1.json`, as shipped.
pub const RESPONSE_SCHEMA: &str =
    include_str!("../../../schemas/permission-broker-response.v1.json");

/// Longest schema error message kept; the rest is cut (messages can quote the whole instance).
const MAX_MESSAGE_CHARS: usize = 200;

/// A compiled schema that asserts formats (`date-time` is checked, not just annotated).
#[derive(Debug)]
pub struct Schema {
    kind: &'static str,
    validator: jsonschema::Validator,
}

impl Schema {
    fn compile(kind: &'static str, text: &str) -> Result<Schema, String> {
        let schema: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| e.to_string())?;
        Ok(Schema { kind, validator })
    }

    pub fn is_valid(&self, instance: &Value) -> bool {
        self.validator.is_valid(instance)
    }

    /// The first violation, as a [`FrameError::Schema`] naming the JSON pointer where it is.
    pub fn validate(&self, instance: &Value) -> Result<(), FrameError> {
        self.validator.validate(instance).map_err(|e| {
            let mut message = e.to_string();
            if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
                message.truncate(cut);
                message.push('…');
            }
            FrameError::Schema {
                kind: self.kind,
                path: e.instance_path().to_string(),
                message,
            }
        })
    }
}

static REQUEST: LazyLock<Schema> = LazyLock::new(|| compiled("request", REQUEST_SCHEMA));
static RESPONSE: LazyLock<Schema> = LazyLock::new(|| compiled("response", RESPONSE_SCHEMA));

#[allow(clippy::panic)]
fn compiled(kind: &'static str, text: &str) -> Schema {
    // The schemas are compile-time constants; `schemas_compile` below proves they are valid, so
    // this cannot fail in a built binary.
    Schema::compile(kind, text)
        .unwrap_or_else(|e| panic!("embedded {kind} schema does not compile: {e}"))
}

/// The request schema's `datetime` property alone (`/properties/datetime` of the shipped
/// schema), so the one-pass parser checks the format with the schema's own rule.
static REQUEST_DATETIME: LazyLock<Schema> = LazyLock::new(|| {
    let datetime = serde_json::from_str::<Value>(REQUEST_SCHEMA)
        .map(|schema| schema["properties"]["datetime"].to_string())
        .unwrap_or_default();
    compiled("request datetime", &datetime)
});

/// Whether `datetime` satisfies the request schema's `datetime` property (`format: date-time`).
pub(crate) fn request_datetime_is_valid(datetime: &str) -> bool {
    REQUEST_DATETIME.is_valid(&Value::String(datetime.to_owned()))
}

/// The strict v1 request schema.
pub fn request_schema() -> &'static Schema {
    &REQUEST
}

/// The v1 response schema (what a broker sends).
pub fn response_schema() -> &'static Schema {
    &RESPONSE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_compile() {
        Schema::compile("request", REQUEST_SCHEMA).unwrap();
        Schema::compile("response", RESPONSE_SCHEMA).unwrap();
        assert!(request_datetime_is_valid(
            "2026-11-23T16:30:45.262660275+00:00"
        ));
        assert!(!request_datetime_is_valid("2026-11-23 16:30:45"));
        assert!(!request_datetime_is_valid("yesterday"));
    }
}
