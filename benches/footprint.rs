//! Heap bytes per cached entry: where the memory of a proxy holding many tokens and users goes.
//!
//! `cargo bench --bench footprint` (a few seconds). A counting global allocator measures the
//! live heap before and after building N entries of each kind the proxy keeps per token and per
//! user, so the figures are exact heap sizes (allocator bookkeeping and fragmentation, which RSS
//! also pays, come on top). `benches/load.sh` with `MEMORY=1` shows the resulting RSS.

mod common;

use claimgate::claims::{Identity, MetadataMapping};
use claimgate::config::{ForwardConfig, HeaderMapping, MetadataField, TokenCacheConfig};
use claimgate::expansion::Context;
use claimgate::headers::HeaderPlan;
use claimgate::metrics::Metrics;
use claimgate::packed_json::PackedJson;
use claimgate::token_cache::{digest, Prerendered, Session, TokenCache};
use claimgate::userdata::{
    doc_to_json, record_heap, Fetched, RecordCache, UserRecord, ENTRY_OVERHEAD,
};
use claimgate::verify::now_seconds;
use common::{app_for, ISSUER};
use mongodb::bson::{doc, oid::ObjectId};
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

#[path = "../tests/common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{Counting, LIVE};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const N: usize = 20_000;

/// Live heap bytes per entry that `build` leaves behind in what it returns.
fn per_entry<T>(label: &str, build: impl FnOnce() -> T) -> (T, f64) {
    let before = LIVE.load(Ordering::Relaxed);
    let kept = build();
    let bytes = (LIVE.load(Ordering::Relaxed) - before) as f64 / N as f64;
    println!("| {label} | {bytes:.0} |");
    (kept, bytes)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks every bench for its names
    }
    if std::env::var_os("FOOTPRINT_RSS").is_some() {
        return rss_of_a_full_user_cache();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let signer = common::hs256();
    let app = app_for(&signer, "HS256");
    let verifier = &app.decider.verifier;
    // What the load bench's provider maps.
    let fields = ["name", "email"].map(|name| MetadataField {
        name: name.into(),
        field_name: None,
        required: false,
    });
    let mapping = MetadataMapping::compile(&fields, "providers[0]").expect("mapping");
    let default_plan =
        HeaderPlan::compile(&ForwardConfig::default(), None, Counter::default()).expect("plan");
    let mut with_roles = ForwardConfig::default();
    with_roles.headers.insert(
        "X-User-Roles".into(),
        HeaderMapping::Short("%%user.custom_data.roles".into()),
    );
    let user_plan =
        HeaderPlan::compile(&with_roles, Some(8 * 1024), Counter::default()).expect("plan");
    let now = now_seconds();
    let tokens: Vec<String> = (0..N).map(|i| signer.mint(ISSUER, i, now, 3_600)).collect();
    let provider: Arc<str> = Arc::from("bench");
    let verified: Vec<_> = tokens
        .iter()
        .map(|t| rt.block_on(verifier.verify(t)).expect("verifies"))
        .collect();

    println!(
        "heap bytes per entry, {N} entries of each (counting allocator); a serde_json::Value is {} bytes\n",
        std::mem::size_of::<serde_json::Value>()
    );
    println!("| kept per token or per user | bytes |");
    println!("| --- | ---: |");
    let empty_claims: Arc<serde_json::Map<String, serde_json::Value>> = Arc::default();
    // As `Decider::session` builds it. Without user data: token-only headers rendered, then what
    // no later request reads dropped. With user data the user header needs the document, so the
    // session keeps the mapped fields (and `iat`, for `tokens_valid_after`) instead.
    let session = |v: &claimgate::verify::Verified, with_user_data: bool| {
        let mut identity = Identity {
            id: v.user_id.clone(),
            provider: provider.clone(),
            data: Arc::new(mapping.map(&v.claims).expect("maps")),
            token: empty_claims.clone(),
        };
        let ctx = Context {
            identity: &identity,
            custom_data: None,
            permissions: None,
            request: None,
        };
        if with_user_data {
            let iat = v.claims.get("iat").and_then(serde_json::Value::as_f64);
            return Arc::new(Session::new(v.proof.clone(), identity, None, iat, None));
        }
        let rendered = default_plan.render(&ctx).expect("renders");
        identity.data = empty_claims.clone();
        Arc::new(Session::new(
            v.proof.clone(),
            identity,
            Prerendered::pack(&rendered, default_plan.names()),
            None,
            None,
        ))
    };
    let (lean, lean_bytes) = per_entry(
        "token: session as cached without user data (proof, id, rendered X-User-Id + X-Claimgate-User)",
        || verified.iter().map(|v| session(v, false)).collect::<Vec<_>>(),
    );
    drop(lean);
    let (sessions, session_bytes) = per_entry(
        "token: session with user data (2 mapped fields and iat kept; headers rendered per user document)",
        || {
            verified
                .iter()
                .map(|v| session(v, true))
                .collect::<Vec<_>>()
        },
    );
    let (token_cache, token_cache_bytes) = per_entry(
        "token: verified-token cache entry (quick_cache slot, SHA-256 key, weigher)",
        || {
            let config = TokenCacheConfig {
                enabled: true,
                max_bytes: 1 << 30,
                max_entries: None,
            };
            let cache = TokenCache::new(&config, Arc::new(Metrics::new()));
            for (token, session) in tokens.iter().zip(&sessions) {
                cache.insert(digest(token), session.clone());
            }
            assert_eq!(cache.entry_count(), N as u64);
            cache
        },
    );
    let weighed = session(&verified[0], false).entry_bytes();
    println!(
        "| token: what the weigher charges a session as cached without user data (measured: {:.0}) | {weighed} |",
        lean_bytes + token_cache_bytes
    );
    let (records, record_bytes) = per_entry(
        "user: document (_id, user_id, name, roles[2], canRead), packed, in a UserRecord",
        || (0..N).map(load_user).collect::<Vec<_>>(),
    );
    let (user_cache, user_cache_bytes) = per_entry(
        "user: user data cache entry (quick_cache by user id, weighed; _id → user id index for deletes)",
        || {
            let cache = RecordCache::new(u64::MAX, None, Duration::from_secs(300));
            for (i, record) in records.iter().enumerate() {
                let fetched = Fetched {
                    record: record.clone(),
                    doc_id: Some(format!("{i:024x}")),
                };
                cache.insert(&format!("user-{i:06}"), fetched);
            }
            assert_eq!(cache.len(), N as u64);
            cache
        },
    );
    // What `ENTRY_OVERHEAD` should be: the row above less the key strings the weigher counts
    // itself (user id and `_id`, each held twice).
    let keys = 2 * "user-000000".len() + 2 * 24;
    let weighed = user_cache.bytes() as f64 / N as f64;
    let record_weight = records.iter().map(|r| record_heap(r)).sum::<usize>() as f64 / N as f64;
    println!(
        "\nuser cache: measured overhead per entry {:.0} B (ENTRY_OVERHEAD = {ENTRY_OVERHEAD}); \
         weighed {weighed:.0} B per entry vs measured {:.0} B (record {record_bytes:.0} B, weigher says {record_weight:.0} B)\n",
        user_cache_bytes - keys as f64,
        user_cache_bytes + record_bytes,
    );
    let (_, rendered_bytes) = per_entry(
        "token: headers rendered with the user's document (X-Claimgate-User carries custom_data)",
        || {
            for (session, record) in sessions.iter().zip(&records) {
                let ctx = Context {
                    identity: &session.identity,
                    custom_data: record.document.as_ref().map(PackedJson::root),
                    permissions: None,
                    request: None,
                };
                let rendered = Arc::new(user_plan.render(&ctx).expect("renders"));
                TokenCache::remember_rendered(session, record, rendered);
            }
        },
    );
    let without_user_data = lean_bytes + token_cache_bytes;
    let with_user_data =
        session_bytes + token_cache_bytes + record_bytes + user_cache_bytes + rendered_bytes;
    let mib = |bytes: f64| bytes * 100_000.0 / 1_048_576.0;
    println!(
        "\nper token without user data {without_user_data:.0} B (100 000 tokens: {:.1} MiB); \
         per token + user with user data {with_user_data:.0} B (100 000 of each: {:.1} MiB)",
        mib(without_user_data),
        mib(with_user_data)
    );
    drop((token_cache, user_cache, sessions, records));
}

/// The i-th of load.sh's users, through the same BSON → JSON conversion and packing as
/// documents read from MongoDB.
fn load_user(i: usize) -> Arc<UserRecord> {
    Arc::new(UserRecord {
        document: Some(PackedJson::pack(&doc_to_json(doc! {
            "_id": ObjectId::new(),
            "user_id": format!("user-{i:06}"),
            "name": format!("User {i}"),
            "roles": ["reader", "bench"],
            "canRead": true,
        }))),
        permissions: None,
        blocked: false,
        expires_at: None,
        tokens_valid_after: None,
    })
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `FOOTPRINT_RSS=1`: the default 32 MiB user cache filled with load.sh's users, as RSS.
fn rss_of_a_full_user_cache() {
    let (rss, live) = (rss_kib(), LIVE.load(Ordering::Relaxed));
    let cache = RecordCache::new(32 << 20, None, Duration::from_secs(300));
    for i in 0..100_000 {
        let fetched = Fetched {
            record: load_user(i),
            doc_id: Some(format!("{i:024x}")),
        };
        cache.insert(&format!("user-{i:06}"), fetched);
    }
    let n = cache.len();
    println!(
        "{n} users cached, weighed {:.1} MiB, allocated {:.1} MiB, RSS +{:.1} MiB",
        cache.bytes() as f64 / 1048576.0,
        (LIVE.load(Ordering::Relaxed) - live) as f64 / 1048576.0,
        (rss_kib() - rss) as f64 / 1024.0
    );
}
