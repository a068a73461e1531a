//! Hand-built OpenAPI schemas for the fields whose bounds the `#[schema(...)]` attributes
//! cannot express: string maps with bounded keys and values, and argument lists.
//!
//! Each takes its numbers from [`crate::limits`], so the published contract and the checks in
//! the server and the agent cannot drift apart. Plain numeric and length bounds are written as
//! attribute literals on the fields instead, and `tests::attribute_bounds_match_limits`
//! compares them with the same constants.

use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type,
};

use crate::limits::{
    COMMAND_ARG_MAX_BYTES, COMMAND_ARGV_MAX_ENTRIES, COMMAND_MAX_BYTES, ENV_MAX_ENTRIES,
    ENV_MAX_KEY_BYTES, ENV_MAX_VALUE_BYTES, METADATA_MAX_ENTRIES, METADATA_MAX_KEY_BYTES,
    METADATA_MAX_VALUE_BYTES,
};

/// A string holding no NUL character.
pub(crate) const NO_NUL: &str = "^[^\\u0000]*$";
/// A non-empty environment variable name: no `=`, no NUL.
const ENV_NAME: &str = "^[^=\\u0000]+$";

/// `type: object` or, when `nullable`, `type: [object, null]`.
fn object_type(nullable: bool) -> SchemaType {
    if nullable {
        SchemaType::from_iter([Type::Object, Type::Null])
    } else {
        SchemaType::Type(Type::Object)
    }
}

/// A string schema of at most `max` characters (every limit is in bytes of UTF-8, and a
/// string never has more characters than bytes), matching `pattern` when given.
fn string(min: Option<usize>, max: usize, pattern: Option<&str>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(min)
        .max_length(Some(max))
        .pattern(pattern)
}

/// Session labels: at most 32 entries, keys of 1 to 64 bytes, values of at most 1024 bytes.
fn metadata(nullable: bool) -> Schema {
    ObjectBuilder::new()
        .schema_type(object_type(nullable))
        .description(Some(format!(
            "Free-form string labels: at most {METADATA_MAX_ENTRIES} entries, keys of 1 to \
             {METADATA_MAX_KEY_BYTES} bytes, values of at most {METADATA_MAX_VALUE_BYTES} bytes."
        )))
        .max_properties(Some(METADATA_MAX_ENTRIES))
        .property_names(Some(string(Some(1), METADATA_MAX_KEY_BYTES, None).build()))
        .additional_properties(Some(AdditionalProperties::RefOr(
            string(None, METADATA_MAX_VALUE_BYTES, None).build().into(),
        )))
        .build()
        .into()
}

/// `metadata` of a request: optional, and `null` means "not given".
pub(crate) fn metadata_request() -> Schema {
    metadata(true)
}

/// `metadata` of a session as shown.
pub(crate) fn metadata_response() -> Schema {
    metadata(false)
}

/// Environment variables of a session or a command: at most 256, names of 1 to 256 bytes
/// without `=` or NUL, values of at most 32 KiB without NUL. Optional; `null` means none.
pub(crate) fn env_request() -> Schema {
    ObjectBuilder::new()
        .schema_type(object_type(true))
        .description(Some(format!(
            "Environment variables: at most {ENV_MAX_ENTRIES}, names of 1 to {ENV_MAX_KEY_BYTES} \
             bytes with no `=` or NUL, values of at most {ENV_MAX_VALUE_BYTES} bytes with no NUL."
        )))
        .max_properties(Some(ENV_MAX_ENTRIES))
        .property_names(Some(
            string(Some(1), ENV_MAX_KEY_BYTES, Some(ENV_NAME)).build(),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(
            string(None, ENV_MAX_VALUE_BYTES, Some(NO_NUL))
                .build()
                .into(),
        )))
        .build()
        .into()
}

/// `argv` of a command: 1 to 4096 strings without NUL, the first (the program) non-empty, each
/// at most 128 KiB and at most 256 KiB in all. Optional; `null` means "not given".
pub(crate) fn argv_request() -> Schema {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .description(Some(format!(
            "A program and its arguments, run without a shell: 1 to {COMMAND_ARGV_MAX_ENTRIES} \
             strings with no NUL, the first (the program, looked up on `PATH`) not empty, each \
             at most {COMMAND_ARG_MAX_BYTES} bytes (Linux's bound on one argument) and at most \
             {COMMAND_MAX_BYTES} bytes in all. Give either `command` or `argv`."
        )))
        .min_items(Some(1))
        .max_items(Some(COMMAND_ARGV_MAX_ENTRIES))
        .prefix_items([string(Some(1), COMMAND_ARG_MAX_BYTES, Some(NO_NUL)).build()])
        .items(string(None, COMMAND_ARG_MAX_BYTES, Some(NO_NUL)).build())
        .build()
        .into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::Value;
    use utoipa::PartialSchema;

    use crate::limits::*;
    use crate::{
        CommandRequest, CreateSessionRequest, Resources, ResourcesRequest, SessionList,
        UpdateSessionRequest,
    };

    /// The JSON of `T`'s schema's `properties`.
    fn properties<T: PartialSchema>() -> Value {
        serde_json::to_value(T::schema()).unwrap()["properties"].clone()
    }

    fn bounds(property: &Value) -> (f64, f64) {
        let number = |key: &str| property[key].as_f64().unwrap_or(f64::NAN);
        (number("minimum"), number("maximum"))
    }

    #[test]
    fn attribute_bounds_match_limits() {
        let ttl = (TTL_MIN_SECS as f64, TTL_MAX_SECS as f64);
        assert_eq!(bounds(&properties::<CreateSessionRequest>()["ttl"]), ttl);
        assert_eq!(bounds(&properties::<UpdateSessionRequest>()["ttl"]), ttl);
        let memory = (MEMORY_MB_RANGE.0 as f64, MEMORY_MB_RANGE.1 as f64);
        let pids = (PIDS_RANGE.0 as f64, PIDS_RANGE.1 as f64);
        for resources in [properties::<Resources>(), properties::<ResourcesRequest>()] {
            assert_eq!(bounds(&resources["cpus"]), CPUS_RANGE);
            assert_eq!(bounds(&resources["memoryMb"]), memory);
            assert_eq!(bounds(&resources["pids"]), pids);
        }
        assert_eq!(
            properties::<SessionList>()["limit"]["maximum"],
            LIST_LIMIT_MAX
        );
        let command = properties::<CommandRequest>();
        assert_eq!(command["command"]["maxLength"], COMMAND_ARG_MAX_BYTES);
        assert_eq!(command["cwd"]["maxLength"], PATH_MAX_BYTES);
        assert_eq!(command["stdin"]["maxLength"], COMMAND_STDIN_MAX_BYTES);
        assert_eq!(command["timeout"]["maximum"], COMMAND_TIMEOUT_MAX_SECS);
        assert_eq!(command["timeout"]["exclusiveMinimum"], 0);
        assert_eq!(command["argv"]["maxItems"], COMMAND_ARGV_MAX_ENTRIES);
        assert_eq!(command["env"]["maxProperties"], ENV_MAX_ENTRIES);
    }

    #[test]
    fn optional_request_fields_accept_null() {
        // serde reads `null` as `None`, and the schemas say so.
        let req: CreateSessionRequest =
            serde_json::from_str(r#"{"ttl":null,"metadata":null,"env":null}"#).unwrap();
        assert_eq!(req, CreateSessionRequest::default());
        let types = &properties::<CreateSessionRequest>()["metadata"]["type"];
        assert_eq!(types, &serde_json::json!(["object", "null"]));
    }
}
