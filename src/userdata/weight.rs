//! What a cached user costs in heap bytes, computed from the sizes and capacities of what the
//! record holds, and the compaction that makes those capacities exact.
//!
//! The document is packed (`crate::packed_json`): one exact-size buffer. The permissions stay a
//! `serde_json::Value`, built with `preserve_order` (bson asks for it), so every object is an
//! `IndexMap`: a vector of (hash, key, value) buckets plus a hash table of indices. A map grown
//! one insert at a time keeps up to half its buckets spare; `compact` rebuilds each object at its
//! exact size so cached permissions hold no slack and their weight can be computed exactly.

use super::UserRecord;
use crate::packed_json::PackedJson;
use serde_json::{Map, Value};
use std::mem::size_of;

/// Rebuilds `value` with no spare capacity in any object, array or string.
pub fn compact(value: Value) -> Value {
    match value {
        Value::String(mut s) => {
            s.shrink_to_fit();
            Value::String(s)
        }
        Value::Array(items) => {
            // A collect over `into_iter` reuses the old allocation, spare capacity included.
            let mut items: Vec<Value> = items.into_iter().map(compact).collect();
            items.shrink_to_fit();
            Value::Array(items)
        }
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (mut key, v) in map {
                key.shrink_to_fit();
                out.insert(key, compact(v));
            }
            Value::Object(out)
        }
        other => other,
    }
}

/// Heap bytes owned by `value`, assuming it went through `compact` (or was built at its exact
/// size, as `doc_to_json` does).
fn value_heap(value: &Value) -> usize {
    match value {
        Value::String(s) => s.capacity(),
        Value::Array(items) => {
            items.capacity() * size_of::<Value>() + items.iter().map(value_heap).sum::<usize>()
        }
        Value::Object(map) => {
            let slots = map_slots(map.len());
            let keys_and_values: usize =
                map.iter().map(|(k, v)| k.capacity() + value_heap(v)).sum();
            slots + keys_and_values
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// One `IndexMap` bucket: the cached hash, the key and the value.
const MAP_BUCKET: usize = size_of::<(usize, String, Value)>();

/// Control bytes past the end of a hashbrown table (its SIMD group width).
const GROUP_WIDTH: usize = 16;

/// The two allocations of an `IndexMap` made with capacity `len`: the bucket vector, and the
/// hashbrown table of `usize` indices (power-of-two buckets at a load factor of 7/8).
fn map_slots(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    len * MAP_BUCKET + table_bytes(len, size_of::<usize>())
}

/// Heap bytes of a hashbrown table with room for `capacity` items of `slot` bytes each.
pub(crate) fn table_bytes(capacity: usize, slot: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 4 {
        4
    } else if capacity < 8 {
        8
    } else {
        (capacity * 8 / 7).next_power_of_two()
    };
    buckets * slot + buckets + GROUP_WIDTH
}

/// Heap bytes of a record behind its `Arc`: the allocation itself (two counters and the record)
/// plus the document and permissions it owns.
pub fn record_heap(record: &UserRecord) -> usize {
    2 * size_of::<usize>()
        + size_of::<UserRecord>()
        + record.document.as_ref().map_or(0, PackedJson::heap_bytes)
        + record
            .permissions
            .as_ref()
            .map_or(0, |p| size_of::<serde_json::Value>() + value_heap(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compaction_keeps_the_value() {
        let v = json!({"a": [1, "two", {"b": null}], "c": {"d": "e"}, "f": 1.5});
        assert_eq!(compact(v.clone()), v);
    }

    #[test]
    fn table_sizes_follow_hashbrown() {
        assert_eq!(table_bytes(3, 8), 4 * 8 + 4 + 16);
        assert_eq!(table_bytes(7, 8), 8 * 8 + 8 + 16);
        assert_eq!(table_bytes(14, 8), 16 * 8 + 16 + 16);
        assert_eq!(table_bytes(15, 8), 32 * 8 + 32 + 16);
    }
}
