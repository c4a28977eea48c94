//! What a cache entry really holds on the heap, computed from the lengths and capacities of what
//! it keeps (checked against a counting allocator by `tests/token_cache_weight.rs`).

use super::Session;
use crate::headers::Rendered;
use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};
use std::mem::size_of;

/// The shared cache's own heap per entry (its slab slot with the key and the session pointer, its
/// hash-table slot, room for the ghost keys CLOCK-PRO remembers, and the slab's growth headroom),
/// on top of the session. Measured with the counting allocator of `benches/footprint.rs` (row
/// "token: verified-token cache entry"): live heap after inserting 20 000 already built sessions
/// into a `TokenCache`, divided by 20 000; the slab grows by doubling, so this is near its worst.
pub const CACHE_ENTRY_BYTES: usize = 116;

/// The largest per-user rendering a session keeps (see `Session::remember_rendered`); a session
/// that may keep one is weighed with this allowance from the start, since it is filled after
/// the entry was weighed. Room for a user header carrying a few hundred bytes of `custom_data`.
pub const MEMO_MAX_BYTES: usize = 1024;

/// What a `Bytes` allocates when first cloned (its shared reference count; `bytes` 1.x
/// `Shared`): the proxy clones every identity header value into each request it forwards.
pub(super) const BYTES_SHARED: usize = 3 * size_of::<usize>();

/// An `Arc`'s strong and weak counts.
pub(super) const ARC_COUNTS: usize = 2 * size_of::<usize>();

impl Session {
    /// The heap this session holds, its own allocation included; shared parts (the provider
    /// name, the verification key, the compiled plan's header names, the shared empty maps)
    /// are not counted.
    pub fn heap_bytes(&self) -> usize {
        let identity = &self.identity;
        ARC_COUNTS
            + size_of::<Session>()
            + identity.id.capacity()
            + kept_map_heap(&identity.data)
            + kept_map_heap(&identity.token)
            + self.prerendered().map_or(0, |p| p.heap_bytes())
            + self.revocable_bytes()
            + self.memo_bytes()
    }

    /// What the shared cache is told: this session, the cache's own overhead, and the allowance
    /// for a per-user rendering kept later.
    pub fn entry_bytes(&self) -> usize {
        let memo_allowance = if self.prerendered().is_none() {
            MEMO_MAX_BYTES.saturating_sub(self.memo_bytes())
        } else {
            0
        };
        CACHE_ENTRY_BYTES + self.heap_bytes() + memo_allowance
    }

    /// [`Session::heap_bytes`] of a worker-local copy, whose header names are its own.
    pub fn local_heap_bytes(&self) -> usize {
        let names = self.prerendered().map_or(0, |p| p.names_heap_bytes());
        self.heap_bytes() + names + self.identity.provider.len() + ARC_COUNTS
    }
}

/// A kept claims or data map: its `Arc` and contents, or nothing when it is the shared empty one.
fn kept_map_heap(map: &Map<String, Value>) -> usize {
    if map.is_empty() {
        0
    } else {
        ARC_COUNTS + size_of::<Map<String, Value>>() + map_heap(map)
    }
}

/// A kept per-user rendering: its `Arc<Vec<_>>` and what the vector holds.
pub fn memo_bytes(rendered: &Rendered) -> usize {
    ARC_COUNTS
        + size_of::<Rendered>()
        + rendered.capacity() * size_of::<(HeaderName, HeaderValue)>()
        + values_heap(rendered)
}

fn values_heap(headers: &[(HeaderName, HeaderValue)]) -> usize {
    headers
        .iter()
        .map(|(_, v)| match v.len() {
            0 => 0,
            len => len + BYTES_SHARED,
        })
        .sum()
}

/// serde_json's map is an `IndexMap` here (`preserve_order`, which `bson` turns on): a vector
/// of (hash, key, value) entries and a hash table of indices into it, both grown by insertion.
pub fn map_heap(map: &Map<String, Value>) -> usize {
    let len = map.len();
    if len == 0 {
        return 0;
    }
    // hashbrown: 4 buckets up to 3 items, 8 up to 7, then the power of two above len * 8 / 7.
    let buckets = match len {
        0..=3 => 4,
        4..=7 => 8,
        _ => (len * 8 / 7).next_power_of_two(),
    };
    let table_capacity = if buckets < 8 {
        buckets - 1
    } else {
        buckets / 8 * 7
    };
    // IndexMap grows its entries to the table's capacity.
    let entry = size_of::<usize>() + size_of::<String>() + size_of::<Value>();
    let indices = buckets * size_of::<usize>() + buckets + 16;
    let contents: usize = map.iter().map(|(k, v)| k.capacity() + value_heap(v)).sum();
    indices + table_capacity * entry + contents
}

pub fn value_heap(value: &Value) -> usize {
    match value {
        Value::String(s) => s.capacity(),
        Value::Array(items) => {
            items.capacity() * size_of::<Value>() + items.iter().map(value_heap).sum::<usize>()
        }
        Value::Object(map) => map_heap(map),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}
