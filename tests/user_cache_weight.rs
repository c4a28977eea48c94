//! The user data cache's weigher against the allocator: for records of several shapes, the bytes
//! the weigher computes are within ±20 % of the heap the record (and its cache entry) really
//! holds, so `user_data.cache.max_bytes` bounds real memory.
//!
//! One test function: the counting allocator sees every thread, so the shapes are measured one
//! after another, N records at a time to drown the harness's own allocations. It then checks
//! that `max_bytes` and `max_entries` both bound the cache.

use claimgate::packed_json::PackedJson;
use claimgate::userdata::{
    compact, doc_to_json, record_heap, Fetched, RecordCache, UserRecord, ENTRY_OVERHEAD,
};
use mongodb::bson::{doc, oid::ObjectId, Document};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{Counting, LIVE};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const N: usize = 2_000;

/// Builds the i-th record of one shape.
type Shape = fn(usize) -> Arc<UserRecord>;

fn record(document: Option<Value>, permissions: Option<Value>) -> Arc<UserRecord> {
    Arc::new(UserRecord {
        document: document.as_ref().map(PackedJson::pack),
        permissions: permissions.map(|p| Box::new(compact(p))),
        blocked: false,
        expires_at: None,
        tokens_valid_after: None,
    })
}

/// A document as read from MongoDB: through the BSON → JSON conversion.
fn from_bson(doc: Document) -> Option<Value> {
    Some(doc_to_json(doc))
}

fn small(i: usize) -> Arc<UserRecord> {
    record(Some(json!({"user_id": format!("u{i}")})), None)
}

/// Eight fields, about 210 bytes as JSON.
fn eight_fields(i: usize) -> Arc<UserRecord> {
    record(
        from_bson(doc! {
            "_id": ObjectId::new(),
            "user_id": format!("user-{i:06}"),
            "name": format!("User Number {i}"),
            "email": format!("user{i}@example.com"),
            "group": "engineering",
            "roles": ["reader", "writer"],
            "canRead": true,
            "quota": 1000_i32 + i as i32,
        }),
        None,
    )
}

fn nested(i: usize) -> Arc<UserRecord> {
    record(
        Some(json!({
            "user_id": format!("user-{i:06}"),
            "profile": {"status": "active", "address": {"city": "Lyon", "zip": "69001"}},
            "teams": [{"name": "a", "admin": true}, {"name": "b", "admin": false}],
            "matrix": [[1, 2, 3], [4, 5], []],
            "tags": ["x", "y", "z", "w", "v"],
            "empty": {},
        })),
        None,
    )
}

fn with_permissions(i: usize) -> Arc<UserRecord> {
    let perms: Vec<Value> = (0..12)
        .map(|p| Value::String(format!("resource-{p}:read")))
        .collect();
    record(
        Some(json!({"user_id": format!("user-{i:06}"), "roles": ["admin", "ops"]})),
        Some(Value::Array(perms)),
    )
}

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn within(label: &str, what: &str, weighed: f64, real: f64) {
    let ratio = weighed / real;
    println!("{label}: {what} weighed {weighed:.0} B, allocated {real:.0} B ({ratio:.2})");
    assert!(
        (0.8..=1.2).contains(&ratio),
        "{label}: {what} weighed {weighed:.0} B but {real:.0} B were allocated"
    );
}

#[test]
fn the_weigher_tracks_real_heap_bytes() {
    let shapes: [(&str, Shape); 4] = [
        ("small document", small),
        ("8-field document", eight_fields),
        ("nested arrays and objects", nested),
        ("document with permissions", with_permissions),
    ];
    for (label, build) in shapes {
        let before = live();
        let records: Vec<_> = (0..N).map(build).collect();
        // The vector of pointers is the test's, not the records'.
        let real = (live() - before) as f64 / N as f64 - std::mem::size_of::<usize>() as f64;
        let weighed = records.iter().map(|r| record_heap(r)).sum::<usize>() as f64 / N as f64;
        within(label, "record", weighed, real);

        let before = live();
        let cache = RecordCache::new(u64::MAX, None, Duration::from_secs(300));
        for (i, record) in records.iter().enumerate() {
            let fetched = Fetched {
                record: record.clone(),
                doc_id: Some(format!("{i:024x}")),
            };
            cache.insert(&format!("user-{i:06}"), fetched);
        }
        assert_eq!(cache.len(), N as u64);
        // The records were allocated above; the cache adds only its entries.
        let real = (live() - before) as f64 / N as f64 + real;
        within(
            label,
            "cache entry (record and ENTRY_OVERHEAD)",
            cache.bytes() as f64 / N as f64,
            real,
        );
        assert!(cache.bytes() as usize >= N * ENTRY_OVERHEAD);
        drop(cache);
    }
    the_byte_bound_holds();
}

/// Run from the test above rather than as a test of its own: a concurrent test would disturb the
/// allocation counts.
fn the_byte_bound_holds() {
    // Room for about 265 entries of the 8-field shape (~565 B each with the cache's overhead,
    // the document packed), less the room kept for ghost keys.
    let max_bytes = 150_000;
    let cache = RecordCache::new(max_bytes, None, Duration::from_secs(300));
    for i in 0..1_000 {
        let fetched = Fetched {
            record: eight_fields(i),
            doc_id: Some(format!("{i:024x}")),
        };
        cache.insert(&format!("user-{i:06}"), fetched);
    }
    let entries = cache.len();
    assert!(cache.bytes() <= max_bytes, "{} B held", cache.bytes());
    assert!((200..=270).contains(&entries), "{entries} entries kept");
    // `max_entries` is a second bound: both hold.
    let cache = RecordCache::new(max_bytes, Some(10), Duration::from_secs(300));
    for i in 0..100 {
        cache.insert(
            &format!("user-{i:06}"),
            Fetched {
                record: small(i),
                doc_id: None,
            },
        );
    }
    assert!(cache.len() <= 10, "{} entries kept", cache.len());
}
