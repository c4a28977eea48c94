//! BSON → JSON for the rest of the proxy, and the flags a user document implies.
//!
//! The JSON is "relaxed Extended JSON"-ish on purpose: expressions and headers downstream compare
//! plain strings and numbers, so `{"$oid": ..}`/`{"$date": ..}` wrappers would only get in the way.

use super::weight::compact;
use super::UserRecord;
use crate::packed_json::PackedJson;
use base64::Engine;
use mongodb::bson::{Bson, DateTime, Document};
use serde_json::{Map, Number, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) fn bson_to_json(value: Bson) -> Value {
    match value {
        // JSON has no NaN or infinity.
        Bson::Double(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        Bson::String(s) | Bson::Symbol(s) | Bson::JavaScriptCode(s) => Value::String(s),
        Bson::JavaScriptCodeWithScope(c) => Value::String(c.code),
        Bson::Array(items) => {
            // `collect` over `into_iter` would reuse the BSON vector's larger allocation.
            let mut out = Vec::with_capacity(items.len());
            out.extend(items.into_iter().map(bson_to_json));
            Value::Array(out)
        }
        Bson::Document(doc) => doc_to_json(doc),
        Bson::Boolean(b) => Value::Bool(b),
        Bson::Null | Bson::Undefined | Bson::MaxKey | Bson::MinKey | Bson::DbPointer(_) => {
            Value::Null
        }
        Bson::RegularExpression(r) => Value::String(format!("/{}/{}", r.pattern, r.options)),
        Bson::Int32(i) => Value::from(i),
        Bson::Int64(i) => Value::from(i),
        Bson::Timestamp(t) => serde_json::json!({ "t": t.time, "i": t.increment }),
        Bson::Binary(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b.bytes)),
        Bson::ObjectId(oid) => Value::String(oid.to_hex()),
        // Dates outside RFC 3339's year range stay as epoch milliseconds rather than failing.
        Bson::DateTime(d) => d
            .try_to_rfc3339_string()
            .map_or_else(|_| Value::from(d.timestamp_millis()), Value::String),
        // A string keeps the full precision that an f64 would lose.
        Bson::Decimal128(d) => Value::String(d.to_string()),
    }
}

/// Built at its exact size (see `weight.rs`): the document may stay cached for long.
pub fn doc_to_json(doc: Document) -> Value {
    let mut map = Map::with_capacity(doc.len());
    for (k, v) in doc {
        map.insert(k, bson_to_json(v));
    }
    Value::Object(map)
}

/// A dotted path (`profile.status`) into nested objects, as MongoDB field paths read.
pub(crate) fn json_path<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(value, |v, key| v.as_object()?.get(key))
}

pub(crate) fn bson_path<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut keys = path.split('.');
    let mut current = doc.get(keys.next()?)?;
    for key in keys {
        current = current.as_document()?.get(key)?;
    }
    Some(current)
}

/// How each user document is read; shared by the MongoDB and file sources.
#[derive(Debug, Clone)]
pub(crate) struct Fields {
    pub user_id: String,
    pub blocked: Option<String>,
    pub expiration: Option<String>,
    pub tokens_valid_after: Option<String>,
}

impl Fields {
    /// The document is packed and the permissions compacted (`weight::compact`): records stay
    /// cached for long, and the cache weighs them by their exact heap size.
    pub(crate) fn record(&self, document: Option<Value>, permissions: Option<Value>) -> UserRecord {
        let permissions = permissions.map(|p| Box::new(compact(p)));
        let blocked = match (&document, &self.blocked) {
            (Some(doc), Some(field)) => json_path(doc, field) == Some(&Value::Bool(true)),
            _ => false,
        };
        let expires_at = match (&document, &self.expiration) {
            (Some(doc), Some(field)) => json_path(doc, field).and_then(|v| expiry(v, field)),
            _ => None,
        };
        let tokens_valid_after = match (&document, &self.tokens_valid_after) {
            (Some(doc), Some(field)) => json_path(doc, field).and_then(|v| valid_after(v, field)),
            _ => None,
        };
        UserRecord {
            document: document.as_ref().map(PackedJson::pack),
            permissions,
            blocked,
            expires_at,
            tokens_valid_after,
        }
    }
}

/// `null` or a missing field means "never expires". Any other value that is not a date fails
/// closed (expires at the epoch): a typo in the data must not extend someone's access.
fn expiry(value: &Value, field: &str) -> Option<SystemTime> {
    if value.is_null() {
        return None;
    }
    let parsed = parse_instant(value);
    if parsed.is_none() {
        tracing::warn!(
            field,
            value = %value,
            "user data expiration field is not a date (RFC 3339 string, BSON date or epoch seconds); treating the user as expired"
        );
    }
    Some(parsed.unwrap_or(UNIX_EPOCH))
}

/// Seconds since the epoch. `null` or a missing field revokes nothing; any other value that is
/// not a date revokes every token (`+inf`): whoever wrote it meant to log the user out.
fn valid_after(value: &Value, field: &str) -> Option<f64> {
    if value.is_null() {
        return None;
    }
    let seconds = parse_instant(value).map(|at| match at.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    });
    if seconds.is_none() {
        tracing::warn!(
            field,
            value = %value,
            "user data tokens_valid_after field is not a date (BSON date, RFC 3339 string or epoch seconds); refusing every token of the user"
        );
    }
    Some(seconds.unwrap_or(f64::INFINITY))
}

/// An instant from a BSON value (date, RFC 3339 string, epoch seconds), as the user fields read it.
pub(crate) fn bson_instant(value: &Bson) -> Option<SystemTime> {
    parse_instant(&bson_to_json(value.clone()))
}

fn parse_instant(value: &Value) -> Option<SystemTime> {
    match value {
        Value::String(s) => DateTime::parse_rfc3339_str(s)
            .ok()
            .map(DateTime::to_system_time),
        Value::Number(n) => epoch_offset(n.as_f64()?, 1.0),
        // Extended JSON as a file source may hold it: `{"$date": "…"}`, `{"$date": ms}` or
        // `{"$date": {"$numberLong": "ms"}}`.
        Value::Object(map) => match map.get("$date")? {
            Value::String(s) => parse_instant(&Value::String(s.clone())),
            Value::Number(n) => epoch_offset(n.as_f64()?, 1000.0),
            Value::Object(long) => {
                epoch_offset(long.get("$numberLong")?.as_str()?.parse().ok()?, 1000.0)
            }
            _ => None,
        },
        _ => None,
    }
}

fn epoch_offset(amount: f64, per_second: f64) -> Option<SystemTime> {
    let seconds = amount / per_second;
    if !seconds.is_finite() {
        return None;
    }
    let magnitude = Duration::try_from_secs_f64(seconds.abs()).ok()?;
    if seconds >= 0.0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, oid::ObjectId};

    #[test]
    fn relaxed_conversion() {
        let oid = ObjectId::parse_str("64b7f0c2a1b2c3d4e5f60718").unwrap();
        let date = DateTime::parse_rfc3339_str("2030-01-02T03:04:05Z").unwrap();
        let json = doc_to_json(doc! {
            "_id": oid, "at": date, "n": 3_i32, "l": 4_i64, "f": 1.5, "nan": f64::NAN,
            "nested": { "list": [1_i32, "two", null] },
        });
        assert_eq!(
            json,
            serde_json::json!({
                "_id": "64b7f0c2a1b2c3d4e5f60718", "at": "2030-01-02T03:04:05Z", "n": 3, "l": 4,
                "f": 1.5, "nan": null, "nested": { "list": [1, "two", null] },
            })
        );
    }

    #[test]
    fn flags_from_fields() {
        let fields = Fields {
            user_id: "user_id".into(),
            blocked: Some("status.blocked".into()),
            expiration: Some("exp".into()),
            tokens_valid_after: Some("tva".into()),
        };
        let r = fields.record(
            Some(serde_json::json!({"status": {"blocked": true}, "exp": "2001-01-01T00:00:00Z"})),
            None,
        );
        assert!(r.blocked && r.expired());
        let r = fields.record(Some(serde_json::json!({"exp": 4_102_444_800_u64})), None);
        assert!(!r.blocked && !r.expired());
        let r = fields.record(Some(serde_json::json!({"exp": {"$date": 1000}})), None);
        assert!(r.expired());
        let r = fields.record(Some(serde_json::json!({"exp": null})), None);
        assert!(!r.expired());
        let r = fields.record(Some(serde_json::json!({"exp": "soon"})), None);
        assert!(r.expired(), "unparseable expiration fails closed");

        let r = fields.record(Some(serde_json::json!({"tva": 1_700_000_000})), None);
        assert_eq!(r.tokens_valid_after, Some(1_700_000_000.0));
        let r = fields.record(
            Some(serde_json::json!({"tva": "2023-11-14T22:13:20.5Z"})),
            None,
        );
        assert_eq!(r.tokens_valid_after, Some(1_700_000_000.5));
        let date = doc_to_json(doc! {"tva": DateTime::from_millis(1_700_000_000_250)});
        let r = fields.record(Some(date), None);
        assert_eq!(r.tokens_valid_after, Some(1_700_000_000.25));
        let r = fields.record(Some(serde_json::json!({"tva": null})), None);
        assert_eq!(r.tokens_valid_after, None);
        let r = fields.record(Some(serde_json::json!({"tva": "yesterday"})), None);
        assert_eq!(
            r.tokens_valid_after,
            Some(f64::INFINITY),
            "unparseable fails closed"
        );
    }
}
