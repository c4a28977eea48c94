//! A JSON value packed into one byte buffer, for documents that stay cached for long.
//!
//! A user's custom data is read on every request but changes rarely. As a `serde_json::Value`
//! (with `preserve_order`, which `bson` turns on) every object field costs 104 bytes of bucket
//! plus an index table, and every string its own allocation: a five-field document took ~850
//! bytes of heap. Packed, the same document is one allocation of ~130 bytes. Readers walk it in
//! place (`PackedRef::get`) and turn only what they use back into a `Value`.
//!
//! Layout, each value a tag byte and then:
//! - null, false, true: nothing;
//! - unsigned integer: LEB128; negative integer: 8 bytes little-endian; float: 8 bytes LE;
//! - string: LEB128 byte length, then UTF-8;
//! - array: LEB128 body length in bytes, then the items;
//! - object: LEB128 body length, then per field the key (LEB128 length, UTF-8) and the value.
//!
//! Containers carry their body length so that a lookup skips a field's value without reading it.
//! Object fields keep their order, so unpacking gives back an equal `Value`, order included.

use serde_json::{Map, Number, Value};

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const UNSIGNED: u8 = 3;
const NEGATIVE: u8 = 4;
const FLOAT: u8 = 5;
const STRING: u8 = 6;
const ARRAY: u8 = 7;
const OBJECT: u8 = 8;

/// An owned packed JSON value.
#[derive(Clone, PartialEq, Eq)]
pub struct PackedJson(Box<[u8]>);

impl PackedJson {
    pub fn pack(value: &Value) -> Self {
        let mut out = Vec::new();
        write(value, &mut out);
        Self(out.into_boxed_slice())
    }

    pub fn root(&self) -> PackedRef<'_> {
        PackedRef(&self.0)
    }

    pub fn to_value(&self) -> Value {
        self.root().to_value()
    }

    /// Heap bytes this value owns.
    pub fn heap_bytes(&self) -> usize {
        self.0.len()
    }
}

impl std::fmt::Debug for PackedJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedJson({})", self.to_value())
    }
}

/// A view of one packed value (the buffer starts at its tag; it may run past its end).
#[derive(Clone, Copy)]
pub struct PackedRef<'a>(&'a [u8]);

impl<'a> PackedRef<'a> {
    pub fn is_null(self) -> bool {
        self.0.first() == Some(&NULL)
    }

    /// The value of `key` if this is an object that has it.
    pub fn get(self, key: &str) -> Option<PackedRef<'a>> {
        match self.shape() {
            PackedShape::Object(mut fields) => fields.find(|(name, _)| *name == key).map(|f| f.1),
            _ => None,
        }
    }

    /// Item `index` if this is an array that long.
    pub fn index(self, index: usize) -> Option<PackedRef<'a>> {
        match self.shape() {
            PackedShape::Array(mut items) => items.nth(index),
            _ => None,
        }
    }

    /// What this value is, one level deep: scalars read out (strings borrowed), containers left
    /// packed. A damaged buffer (never produced by `pack`) reads as `null`.
    pub fn shape(self) -> PackedShape<'a> {
        self.try_shape().unwrap_or(PackedShape::Null)
    }

    fn try_shape(self) -> Option<PackedShape<'a>> {
        let (&tag, rest) = self.0.split_first()?;
        Some(match tag {
            NULL => PackedShape::Null,
            FALSE => PackedShape::Bool(false),
            TRUE => PackedShape::Bool(true),
            UNSIGNED => PackedShape::Number(read_leb128(rest)?.0.into()),
            NEGATIVE => PackedShape::Number(i64::from_le_bytes(*rest.first_chunk()?).into()),
            FLOAT => {
                PackedShape::Number(Number::from_f64(f64::from_le_bytes(*rest.first_chunk()?))?)
            }
            STRING => PackedShape::String(string(rest)?.0),
            ARRAY => PackedShape::Array(PackedItems(body(rest)?.0)),
            OBJECT => PackedShape::Object(PackedFields(body(rest)?.0)),
            _ => return None,
        })
    }

    /// Unpacks this value. A damaged buffer (never produced by `pack`) reads as `null`, and a
    /// damaged container as the items before the damage.
    pub fn to_value(self) -> Value {
        match self.shape() {
            PackedShape::Null => Value::Null,
            PackedShape::Bool(b) => Value::Bool(b),
            PackedShape::Number(n) => Value::Number(n),
            PackedShape::String(s) => Value::String(s.to_owned()),
            PackedShape::Array(items) => Value::Array(items.map(PackedRef::to_value).collect()),
            PackedShape::Object(fields) => Value::Object(
                fields
                    .map(|(key, value)| (key.to_owned(), value.to_value()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

/// A packed value one level deep (see [`PackedRef::shape`]).
pub enum PackedShape<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(&'a str),
    Array(PackedItems<'a>),
    Object(PackedFields<'a>),
}

/// The items of a packed array, in order; stops at the first damaged one.
#[derive(Clone)]
pub struct PackedItems<'a>(&'a [u8]);

impl<'a> Iterator for PackedItems<'a> {
    type Item = PackedRef<'a>;

    fn next(&mut self) -> Option<PackedRef<'a>> {
        let item = encoded_len(self.0).and_then(|length| self.0.split_at_checked(length));
        let Some((item, rest)) = item else {
            self.0 = &[];
            return None;
        };
        self.0 = rest;
        Some(PackedRef(item))
    }
}

/// The fields of a packed object, in order; stops at the first damaged one.
#[derive(Clone)]
pub struct PackedFields<'a>(&'a [u8]);

impl<'a> Iterator for PackedFields<'a> {
    type Item = (&'a str, PackedRef<'a>);

    fn next(&mut self) -> Option<(&'a str, PackedRef<'a>)> {
        let field = string(self.0).and_then(|(name, after_name)| {
            let (value, rest) = after_name.split_at_checked(encoded_len(after_name)?)?;
            Some((name, PackedRef(value), rest))
        });
        let Some((name, value, rest)) = field else {
            self.0 = &[];
            return None;
        };
        self.0 = rest;
        Some((name, value))
    }
}

fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.push(UNSIGNED);
                write_leb128(u, out);
            } else if let Some(i) = n.as_i64() {
                out.push(NEGATIVE);
                out.extend_from_slice(&i.to_le_bytes());
            } else {
                out.push(FLOAT);
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes());
            }
        }
        Value::String(s) => {
            out.push(STRING);
            write_str(s, out);
        }
        Value::Array(items) => write_container(ARRAY, out, |body| {
            items.iter().for_each(|item| write(item, body))
        }),
        Value::Object(map) => write_container(OBJECT, out, |body| {
            for (key, value) in map {
                write_str(key, body);
                write(value, body);
            }
        }),
    }
}

fn write_container(tag: u8, out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
    let mut body = Vec::new();
    fill(&mut body);
    out.push(tag);
    write_leb128(body.len() as u64, out);
    out.extend_from_slice(&body);
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    write_leb128(s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

fn write_leb128(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_leb128(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut n = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((n, &bytes[i + 1..]));
        }
    }
    None
}

/// A length-prefixed run: the run, and what follows it.
fn body(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (length, rest) = read_leb128(bytes)?;
    let length = usize::try_from(length).ok()?;
    Some((rest.get(..length)?, rest.get(length..)?))
}

fn string(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (text, rest) = body(bytes)?;
    Some((std::str::from_utf8(text).ok()?, rest))
}

/// How many bytes the value at the start of `bytes` takes, tag included.
fn encoded_len(bytes: &[u8]) -> Option<usize> {
    let (&tag, rest) = bytes.split_first()?;
    let payload = match tag {
        NULL | FALSE | TRUE => 0,
        NEGATIVE | FLOAT => 8,
        UNSIGNED => rest.len() - read_leb128(rest)?.1.len(),
        STRING | ARRAY | OBJECT => rest.len() - body(rest)?.1.len(),
        _ => return None,
    };
    (payload <= rest.len()).then_some(1 + payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "_id": {"$oid": "65a1b2c3d4e5f60718293a4b"},
            "user_id": "u-1",
            "name": "Ünïcode \"quoted\"",
            "roles": ["reader", "writer"],
            "canRead": true,
            "nothing": null,
            "n": [0, 127, 128, 300, u64::MAX, -1, i64::MIN, 1.5, -0.25, 1e300],
            "nested": {"a": {"b": [{}, [], ""]}},
            "zzz": false,
            "aaa": 1
        })
    }

    #[test]
    fn unpacking_gives_back_the_same_value_in_the_same_order() {
        let value = sample();
        let unpacked = PackedJson::pack(&value).to_value();
        assert_eq!(unpacked, value);
        assert_eq!(unpacked.to_string(), value.to_string());
    }

    #[test]
    fn lookups_walk_objects_and_arrays_in_place() {
        let packed = PackedJson::pack(&sample());
        let root = packed.root();
        assert_eq!(
            root.get("user_id").map(PackedRef::to_value),
            Some(json!("u-1"))
        );
        assert_eq!(root.get("aaa").map(PackedRef::to_value), Some(json!(1)));
        assert_eq!(
            root.get("roles")
                .and_then(|r| r.index(1))
                .map(PackedRef::to_value),
            Some(json!("writer"))
        );
        assert!(root.get("roles").and_then(|r| r.index(2)).is_none());
        assert!(root.get("nothing").is_some_and(PackedRef::is_null));
        assert!(root.get("missing").is_none());
        assert!(root.get("user_id").and_then(|s| s.get("x")).is_none());
        let deep = root
            .get("nested")
            .and_then(|n| n.get("a"))
            .and_then(|a| a.get("b"));
        assert_eq!(deep.map(PackedRef::to_value), Some(json!([{}, [], ""])));
        assert_eq!(
            root.get("n")
                .and_then(|n| n.index(4))
                .map(PackedRef::to_value),
            Some(json!(u64::MAX))
        );
    }

    #[test]
    fn a_document_packs_far_smaller_than_its_value() {
        let doc = json!({"_id": "65a1b2c3d4e5f60718293a4b", "user_id": "u-000001",
            "name": "User 1", "roles": ["reader", "writer"], "canRead": true});
        let packed = PackedJson::pack(&doc);
        let text = doc.to_string().len();
        assert!(
            packed.heap_bytes() < text,
            "{} vs JSON text {text}",
            packed.heap_bytes()
        );
    }

    #[test]
    fn damaged_buffers_read_as_nothing_rather_than_panicking() {
        let packed = PackedJson::pack(&sample());
        for cut in 0..packed.0.len() {
            let damaged = PackedRef(&packed.0[..cut]);
            let _ = damaged.to_value();
            let _ = damaged.get("roles").and_then(|r| r.index(1));
            let _ = damaged.get("zzz");
        }
        assert_eq!(PackedRef(&[99]).to_value(), Value::Null);
    }
}
