//! The JOSE header and the claims set as JSON objects, parsed strictly: RFC 7515 §4 and RFC 7519
//! §4 let a parser either reject duplicate member names or keep the last one. Keeping the last
//! one is how `{"sub":"alice",...,"sub":"admin"}` turns into `admin` while another parser in
//! the chain (a gateway, the issuer's own tooling, a log pipeline) sees `alice`, so claimgate
//! rejects them, at every depth.
//!
//! serde_json does the parsing; this module only replaces the visitor that builds the `Value`.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::Cell;
use std::fmt;

/// Why a header or claims set was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictError {
    NotUtf8,
    DuplicateMember,
    NotJson,
    NotObject,
}

/// Parses `bytes` as one JSON object, refusing invalid UTF-8 anywhere (also in members nobody
/// reads) and duplicate member names at any depth.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, StrictError> {
    let text = std::str::from_utf8(bytes).map_err(|_| StrictError::NotUtf8)?;
    let duplicate = Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Strict {
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    match value {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(StrictError::NotObject),
        // serde_json wraps the visitor's error with a position; the flag says which one it was.
        Err(_) if duplicate.get() => Err(StrictError::DuplicateMember),
        Err(_) => Err(StrictError::NotJson),
    }
}

/// A seed rather than a plain `Deserialize` impl, so that the duplicate flag reaches every level.
#[derive(Clone, Copy)]
struct Strict<'a> {
    duplicate: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // serde_json already refuses numbers that overflow f64, so this only guards the invariant.
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                self.duplicate.set(true);
                return Err(de::Error::custom("duplicate member name"));
            }
            let value = access.next_value_seed(self)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<Value, StrictError> {
        parse_object(text.as_bytes()).map(Value::Object)
    }

    #[test]
    fn parses_like_serde_json_when_names_are_unique() {
        let text =
            r#"{"a":1,"b":[true,null,-2,1.5,"x\u00e9"],"c":{"d":{"e":18446744073709551615}}}"#;
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_eq!(parse(text), Ok(expected));
    }

    #[test]
    fn duplicates_are_refused_at_any_depth() {
        assert_eq!(
            parse(r#"{"sub":"alice","sub":"admin"}"#),
            Err(StrictError::DuplicateMember)
        );
        assert_eq!(
            parse(r#"{"a":{"b":[{"c":1,"c":2}]}}"#),
            Err(StrictError::DuplicateMember)
        );
        // Names that differ only by escaping are the same name once decoded.
        assert_eq!(
            parse(r#"{"sub":"alice","s\u0075b":"admin"}"#),
            Err(StrictError::DuplicateMember)
        );
        // The same name in sibling objects is not a duplicate.
        assert!(parse(r#"{"a":{"x":1},"b":{"x":2}}"#).is_ok());
    }

    #[test]
    fn invalid_utf8_and_non_objects_are_refused() {
        assert_eq!(parse_object(b"{\"x\":\"\xff\"}"), Err(StrictError::NotUtf8));
        assert_eq!(parse("[1]"), Err(StrictError::NotObject));
        assert_eq!(parse("{} {}"), Err(StrictError::NotJson));
        assert_eq!(parse(r#"{"a":1e400}"#), Err(StrictError::NotJson));
        assert_eq!(parse(r#"{"a":"\ud800"}"#), Err(StrictError::NotJson));
        assert_eq!(parse(&json!({"a": 1}).to_string()), Ok(json!({"a": 1})));
    }
}
