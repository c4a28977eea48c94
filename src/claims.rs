//! Mapping a verified token's claims into the caller's identity, the way Atlas App Services'
//! Custom JWT provider maps `metadata_fields` into `%%user.data`.

use crate::config::{KeyError, MetadataField};
use crate::error::Reject;
use crate::packed_json::PackedRef;
use serde_json::{Map, Value};
use std::sync::Arc;

/// A dot path into a JSON document; `\.` is a literal dot inside a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath {
    segments: Vec<String>,
}

impl ClaimPath {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut current = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('.') => current.push('.'),
                    Some('\\') => current.push('\\'),
                    _ => return Err(format!("{text:?}: `\\` must be followed by `.` or `\\`")),
                },
                '.' => segments.push(std::mem::take(&mut current)),
                c => current.push(c),
            }
        }
        segments.push(current);
        if segments.iter().any(String::is_empty) {
            return Err(format!("{text:?} has an empty path segment"));
        }
        Ok(Self { segments })
    }

    pub fn last(&self) -> &str {
        self.segments.last().map_or("", String::as_str)
    }

    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// Follows the path through objects (and arrays, by numeric index). JSON `null` counts as
    /// absent, as it does for Atlas.
    pub fn get<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        walk(root, &self.segments)
    }

    pub fn get_in<'a>(&self, root: &'a Map<String, Value>) -> Option<&'a Value> {
        let (first, rest) = self.segments.split_first()?;
        walk(root.get(first)?, rest)
    }

    /// [`ClaimPath::get`] on a packed document, with the same answers.
    pub fn get_packed<'a>(&self, mut value: PackedRef<'a>) -> Option<PackedRef<'a>> {
        for segment in &self.segments {
            value = match value.get(segment) {
                Some(field) => field,
                None => value.index(segment.parse::<usize>().ok()?)?,
            };
        }
        (!value.is_null()).then_some(value)
    }
}

fn walk<'a>(mut value: &'a Value, segments: &[String]) -> Option<&'a Value> {
    for segment in segments {
        value = match value {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    (!value.is_null()).then_some(value)
}

struct FieldRule {
    path: ClaimPath,
    field_name: String,
    required: bool,
    name: String,
}

/// The compiled `metadata_fields` of one provider.
pub struct MetadataMapping {
    fields: Vec<FieldRule>,
}

/// Who the caller is, as far as the token says.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub provider: Arc<str>,
    /// The mapped metadata fields (`%%user.data`).
    pub data: Arc<Map<String, Value>>,
    /// All verified claims (`%%token`).
    pub token: Arc<Map<String, Value>>,
}

const MAX_FIELD_NAME: usize = 64;

impl MetadataMapping {
    pub fn compile(fields: &[MetadataField], key_prefix: &str) -> Result<Self, KeyError> {
        let mut compiled = Vec::with_capacity(fields.len());
        for (i, field) in fields.iter().enumerate() {
            let key = |k: &str| format!("{key_prefix}.metadata_fields[{i}].{k}");
            let path = ClaimPath::parse(&field.name).map_err(|e| KeyError::new(key("name"), e))?;
            let field_name = field
                .field_name
                .clone()
                .unwrap_or_else(|| path.last().to_owned());
            if field_name.is_empty() || field_name.chars().count() > MAX_FIELD_NAME {
                return Err(KeyError::new(
                    key("field_name"),
                    format!("must be 1 to {MAX_FIELD_NAME} characters (got {field_name:?})"),
                ));
            }
            if compiled
                .iter()
                .any(|f: &FieldRule| f.field_name == field_name)
            {
                return Err(KeyError::new(
                    key("field_name"),
                    format!("{field_name:?} is mapped twice"),
                ));
            }
            compiled.push(FieldRule {
                path,
                field_name,
                required: field.required,
                name: field.name.clone(),
            });
        }
        Ok(Self { fields: compiled })
    }

    pub fn map(&self, claims: &Map<String, Value>) -> Result<Map<String, Value>, Reject> {
        let mut data = Map::new();
        for field in &self.fields {
            match field.path.get_in(claims) {
                Some(value) => {
                    data.insert(field.field_name.clone(), value.clone());
                }
                None if field.required => return Err(Reject::ClaimMissing(field.name.clone())),
                None => {}
            }
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn paths_follow_objects_and_escaped_dots() {
        let c = claims(json!({"user": {"name": "Ann"}, "a.b": 1, "arr": [10, 20]}));
        assert_eq!(
            ClaimPath::parse("user.name").unwrap().get_in(&c),
            Some(&json!("Ann"))
        );
        assert_eq!(
            ClaimPath::parse("a\\.b").unwrap().get_in(&c),
            Some(&json!(1))
        );
        assert_eq!(
            ClaimPath::parse("arr.1").unwrap().get_in(&c),
            Some(&json!(20))
        );
        assert_eq!(ClaimPath::parse("user.missing").unwrap().get_in(&c), None);
        assert!(ClaimPath::parse("a..b").is_err());
    }

    #[test]
    fn metadata_fields_map_like_atlas() {
        let fields = vec![
            MetadataField {
                name: "user.name".into(),
                field_name: Some("name".into()),
                required: true,
            },
            MetadataField {
                name: "groups".into(),
                field_name: None,
                required: false,
            },
            MetadataField {
                name: "email".into(),
                field_name: None,
                required: false,
            },
        ];
        let m = MetadataMapping::compile(&fields, "providers[0]").unwrap();
        let data = m
            .map(&claims(
                json!({"user": {"name": "Ann"}, "groups": ["a", "b"]}),
            ))
            .unwrap();
        assert_eq!(
            Value::Object(data),
            json!({"name": "Ann", "groups": ["a", "b"]})
        );
        let err = m.map(&claims(json!({"groups": []}))).unwrap_err();
        assert_eq!(err, Reject::ClaimMissing("user.name".into()));
    }

    #[test]
    fn long_default_field_name_is_a_config_error() {
        let fields = vec![MetadataField {
            name: format!("x.{}", "y".repeat(65)),
            field_name: None,
            required: false,
        }];
        let e = MetadataMapping::compile(&fields, "providers[0]")
            .err()
            .unwrap();
        assert_eq!(e.key, "providers[0].metadata_fields[0].field_name");
    }
}
