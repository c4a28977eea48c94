//! A JSON value as rules read it: borrowed from a `serde_json::Value`, or walked in place in a
//! packed user document, so that a rule on `%%user.custom_data` (`%in` on `roles`, a string
//! compared with `==`) compares without unpacking, that is without allocating.

use crate::packed_json::{PackedFields, PackedItems, PackedRef, PackedShape};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;

/// A JSON value to read, wherever it lives.
#[derive(Clone, Copy)]
pub enum Json<'a> {
    Value(&'a Value),
    Packed(PackedRef<'a>),
    /// A string fact of the request or the identity (its method, the user's id).
    Str(&'a str),
}

/// A value one level deep: what comparisons match on. Cheap to clone (a few words).
#[derive(Clone)]
pub enum Shape<'a> {
    Null,
    Bool(bool),
    Number(Cow<'a, Number>),
    String(&'a str),
    Array(Items<'a>),
    Object(Fields<'a>),
}

impl<'a> Json<'a> {
    pub fn shape(self) -> Shape<'a> {
        match self {
            Json::Value(value) => match value {
                Value::Null => Shape::Null,
                Value::Bool(b) => Shape::Bool(*b),
                Value::Number(n) => Shape::Number(Cow::Borrowed(n)),
                Value::String(s) => Shape::String(s),
                Value::Array(items) => Shape::Array(Items::Value(items.iter())),
                Value::Object(map) => Shape::Object(Fields::Value(map)),
            },
            Json::Packed(packed) => match packed.shape() {
                PackedShape::Null => Shape::Null,
                PackedShape::Bool(b) => Shape::Bool(b),
                PackedShape::Number(n) => Shape::Number(Cow::Owned(n)),
                PackedShape::String(s) => Shape::String(s),
                PackedShape::Array(items) => Shape::Array(Items::Packed(items)),
                PackedShape::Object(fields) => Shape::Object(Fields::Packed(fields)),
            },
            Json::Str(s) => Shape::String(s),
        }
    }
}

/// The items of an array.
#[derive(Clone)]
pub enum Items<'a> {
    Value(std::slice::Iter<'a, Value>),
    Packed(PackedItems<'a>),
}

impl<'a> Iterator for Items<'a> {
    type Item = Json<'a>;

    fn next(&mut self) -> Option<Json<'a>> {
        match self {
            Items::Value(items) => items.next().map(Json::Value),
            Items::Packed(items) => items.next().map(Json::Packed),
        }
    }
}

/// The fields of an object.
#[derive(Clone)]
pub enum Fields<'a> {
    Value(&'a Map<String, Value>),
    Packed(PackedFields<'a>),
}

impl<'a> Fields<'a> {
    pub fn count(&self) -> usize {
        match self {
            Fields::Value(map) => map.len(),
            Fields::Packed(fields) => fields.clone().count(),
        }
    }

    pub fn get(&self, key: &str) -> Option<Json<'a>> {
        match self {
            Fields::Value(map) => map.get(key).map(Json::Value),
            Fields::Packed(fields) => fields
                .clone()
                .find(|(name, _)| *name == key)
                .map(|(_, value)| Json::Packed(value)),
        }
    }

    /// Whether every field passes `check`.
    pub fn all(&self, mut check: impl FnMut(&'a str, Json<'a>) -> bool) -> bool {
        match self {
            Fields::Value(map) => map
                .iter()
                .all(|(key, value)| check(key, Json::Value(value))),
            Fields::Packed(fields) => fields
                .clone()
                .all(|(key, value)| check(key, Json::Packed(value))),
        }
    }
}

/// A value an expansion or literal resolved to: borrowed, built for this request, or packed.
pub enum Resolved<'a> {
    Borrowed(&'a Value),
    Owned(Value),
    Packed(PackedRef<'a>),
    Str(&'a str),
}

impl<'a> Resolved<'a> {
    pub fn json(&self) -> Json<'_> {
        match self {
            Resolved::Borrowed(value) => Json::Value(value),
            Resolved::Owned(value) => Json::Value(value),
            Resolved::Packed(packed) => Json::Packed(*packed),
            Resolved::Str(s) => Json::Str(s),
        }
    }

    pub fn into_value(self) -> Value {
        self.into_cow().into_owned()
    }

    /// A `Value`, borrowed where it already is one.
    pub fn into_cow(self) -> Cow<'a, Value> {
        match self {
            Resolved::Borrowed(value) => Cow::Borrowed(value),
            Resolved::Owned(value) => Cow::Owned(value),
            Resolved::Packed(packed) => Cow::Owned(packed.to_value()),
            Resolved::Str(s) => Cow::Owned(Value::String(s.to_owned())),
        }
    }
}
