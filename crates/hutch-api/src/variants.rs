//! Named schemas for the variants of tagged unions.
//!
//! `utoipa` describes an internally tagged enum (`#[serde(tag = "type")]`) as a `oneOf` of
//! inline objects. Client generators then invent a name for each variant (`Frame_type_2`),
//! and the names of their nested models can collide. [`name_tagged_variants`] gives each
//! variant a schema of its own, `{Variant}{Union}` (`StdoutFrame`, `ExitProcessEvent`), and the
//! union a discriminator on the tag, so that every variant becomes one well-named type.

use std::collections::BTreeMap;

use utoipa::openapi::schema::{Discriminator, Schema};
use utoipa::openapi::{Components, Ref, RefOr};

/// The property that tags every union of the API.
pub const TAG: &str = "type";

/// Replaces the inline variants of every tagged union among `components`' schemas with
/// references to named schemas, and adds the discriminator. A union is a `oneOf` whose every
/// item is an object with a required [`TAG`] property of one constant string value. Unions
/// already named are left as they are, so calling it twice changes nothing.
pub fn name_tagged_variants(components: &mut Components) {
    let mut named = Vec::new();
    for (union, schema) in components.schemas.iter_mut() {
        let RefOr::T(Schema::OneOf(one_of)) = schema else {
            continue;
        };
        let Some(tags) = one_of
            .items
            .iter()
            .map(tag_value)
            .collect::<Option<Vec<String>>>()
        else {
            continue;
        };
        let mut mapping = BTreeMap::new();
        for (item, tag) in one_of.items.iter_mut().zip(tags) {
            let name = format!("{}{union}", capitalized(&tag));
            let reference = Ref::from_schema_name(&name);
            mapping.insert(tag, reference.ref_location.clone());
            named.push((name, std::mem::replace(item, RefOr::Ref(reference))));
        }
        one_of.discriminator = Some(Discriminator::with_mapping(TAG, mapping));
    }
    components.schemas.extend(named);
}

/// The constant value of a variant's required [`TAG`] property, if `item` is such a variant.
fn tag_value(item: &RefOr<Schema>) -> Option<String> {
    let RefOr::T(Schema::Object(object)) = item else {
        return None;
    };
    if !object.required.iter().any(|name| name == TAG) {
        return None;
    }
    let RefOr::T(Schema::Object(property)) = object.properties.get(TAG)? else {
        return None;
    };
    match property.enum_values.as_deref()? {
        [serde_json::Value::String(value)] => Some(value.clone()),
        _ => None,
    }
}

/// `stdout` → `Stdout`.
fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::ComponentsBuilder;
    use utoipa::{PartialSchema, ToSchema};

    use super::*;
    use crate::{Frame, ProcessEvent};

    fn named(components: &Components) -> serde_json::Value {
        serde_json::to_value(&components.schemas).unwrap()
    }

    #[test]
    fn every_frame_variant_gets_a_named_schema_and_the_union_a_discriminator() {
        let mut components = ComponentsBuilder::new()
            .schema(Frame::name(), Frame::schema())
            .build();
        name_tagged_variants(&mut components);
        let schemas = named(&components);
        let frame = &schemas["Frame"];
        assert_eq!(frame["discriminator"]["propertyName"], "type");
        for (tag, name) in [
            ("stdout", "StdoutFrame"),
            ("stderr", "StderrFrame"),
            ("result", "ResultFrame"),
            ("artifact", "ArtifactFrame"),
            ("error", "ErrorFrame"),
            ("control", "ControlFrame"),
        ] {
            let location = format!("#/components/schemas/{name}");
            assert_eq!(frame["discriminator"]["mapping"][tag], location.as_str());
            assert!(
                frame["oneOf"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|item| item["$ref"] == location.as_str()),
                "{name} is not among Frame's variants"
            );
            assert_eq!(schemas[name]["properties"]["type"]["enum"][0], tag);
        }
    }

    #[test]
    fn naming_twice_changes_nothing() {
        let mut components = ComponentsBuilder::new()
            .schema(ProcessEvent::name(), ProcessEvent::schema())
            .build();
        name_tagged_variants(&mut components);
        let once = named(&components);
        name_tagged_variants(&mut components);
        assert_eq!(named(&components), once);
        assert!(once["ExitProcessEvent"].is_object());
    }
}
