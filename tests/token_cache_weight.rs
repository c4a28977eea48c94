//! The verified-token cache weighs each entry by the heap it really holds: the weigher, checked
//! here against a counting allocator for sessions of several shapes, and the byte bound it
//! enforces.

use claimgate::claims::Identity;
use claimgate::config::{ForwardConfig, HeaderMapping, TokenCacheConfig};
use claimgate::expansion::Context;
use claimgate::headers::HeaderPlan;
use claimgate::jwks::{Alg, VerifyKey};
use claimgate::metrics::Metrics;
use claimgate::packed_json::PackedJson;
use claimgate::token_cache::{digest, Prerendered, Session, TokenCache};
use claimgate::userdata::UserRecord;
use claimgate::verify::{now_seconds, Proof};
use prometheus_client::metrics::counter::Counter;
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{Counting, LIVE};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const N: usize = 2_000;

/// The tests of this binary run one at a time, so none allocates while another reads `LIVE`.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Shape {
    name: &'static str,
    id_len: usize,
    /// Mapped fields kept in `identity.data`.
    data: Option<Value>,
    /// All claims kept (`%%token` read per request).
    claims: bool,
    /// Token-only headers rendered (and cloned once, as forwarding a request does).
    rendered: bool,
    jti: bool,
    /// A per-user rendering remembered.
    memo: bool,
}

struct Fixture {
    key: Arc<VerifyKey>,
    provider: Arc<str>,
    empty: Arc<Map<String, Value>>,
    plan: HeaderPlan,
    user_plan: HeaderPlan,
    record: Arc<UserRecord>,
}

/// Built the way a JSON parser builds it (`Map::new` and one insert per member).
fn object(value: &Value) -> Map<String, Value> {
    let mut map = Map::new();
    for (k, v) in value.as_object().into_iter().flatten() {
        map.insert(k.clone(), v.clone());
    }
    map
}

fn session(f: &Fixture, shape: &Shape, i: usize) -> Arc<Session> {
    let id = format!("{i:0width$}", width = shape.id_len);
    let claims = json!({"iss": "https://issuer.example", "sub": id, "aud": "api",
        "exp": 2_000_000_000u64, "iat": 1_700_000_000u64, "jti": format!("jti-{i}"),
        "scope": "read write", "groups": ["a", "b", "c"], "user": {"name": "Ann", "n": i}});
    let identity = Identity {
        id,
        provider: f.provider.clone(),
        data: match &shape.data {
            Some(data) => Arc::new(object(data)),
            None => f.empty.clone(),
        },
        token: if shape.claims {
            Arc::new(object(&claims))
        } else {
            f.empty.clone()
        },
    };
    let rendered = shape.rendered.then(|| {
        let ctx = Context {
            identity: &identity,
            custom_data: None,
            permissions: None,
            request: None,
        };
        let rendered = f.plan.render(&ctx).unwrap();
        let packed = Prerendered::pack(&rendered, f.plan.names()).unwrap();
        // Forwarding a request slices the buffer, which allocates its shared count once.
        for (_, value) in packed.iter() {
            drop(value);
        }
        packed
    });
    let proof = Proof {
        provider: 0,
        exp: now_seconds() + 3_600,
        key: f.key.clone(),
    };
    let jti = shape.jti.then(|| format!("jti-{i:08}").into_boxed_str());
    let session = Arc::new(Session::new(proof, identity, rendered, Some(1.0), jti));
    if shape.memo {
        let ctx = Context {
            identity: &session.identity,
            custom_data: f.record.document.as_ref().map(PackedJson::root),
            permissions: None,
            request: None,
        };
        let rendered = f.user_plan.render(&ctx).unwrap();
        for (_, value) in &rendered {
            drop(value.clone());
        }
        TokenCache::remember_rendered(&session, &f.record, Arc::new(rendered));
    }
    session
}

fn fixture() -> Fixture {
    let mut with_roles = ForwardConfig::default();
    with_roles.headers.insert(
        "X-User-Roles".into(),
        HeaderMapping::Short("%%user.custom_data.roles".into()),
    );
    Fixture {
        key: Arc::new(VerifyKey::hmac(&[7u8; 32], &[Alg::HS256]).unwrap()),
        provider: Arc::from("provider-one"),
        empty: Arc::default(),
        plan: HeaderPlan::compile(&ForwardConfig::default(), None, Counter::default()).unwrap(),
        user_plan: HeaderPlan::compile(&with_roles, Some(8 * 1024), Counter::default()).unwrap(),
        record: Arc::new(UserRecord {
            document: Some(PackedJson::pack(
                &json!({"user_id": "u", "name": "User", "roles": ["reader", "writer"]}),
            )),
            permissions: None,
            blocked: false,
            expires_at: None,
            tokens_valid_after: None,
        }),
    }
}

#[test]
fn weigher_is_within_a_fifth_of_the_real_heap() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let mapped = json!({"name": "Ann Example", "email": "ann@example.com"});
    let nested = json!({"name": "Ann", "groups": ["a", "b", "c", "d"], "org": {"id": 42, "unit": "eng"},
        "email": "ann@example.com", "level": 3});
    let shape = |name, id_len, data: Option<&Value>, claims, rendered, jti, memo| Shape {
        name,
        id_len,
        data: data.cloned(),
        claims,
        rendered,
        jti,
        memo,
    };
    let shapes = [
        shape("lean, short id", 6, None, false, true, false, false),
        shape("lean, long id", 200, None, false, true, false, false),
        shape("lean with jti", 12, None, false, true, true, false),
        shape(
            "2 mapped fields kept",
            12,
            Some(&mapped),
            false,
            false,
            false,
            false,
        ),
        shape(
            "2 mapped fields + memo",
            12,
            Some(&mapped),
            false,
            false,
            false,
            true,
        ),
        shape(
            "5 mapped fields + claims",
            24,
            Some(&nested),
            true,
            false,
            true,
            false,
        ),
        shape("claims + rendered", 24, None, true, true, false, false),
    ];
    for shape in &shapes {
        let mut kept = Vec::with_capacity(N);
        let before = LIVE.load(Ordering::Relaxed);
        for i in 0..N {
            kept.push(session(&f, shape, i));
        }
        let real = (LIVE.load(Ordering::Relaxed) - before) as f64 / N as f64;
        let weighed = kept.iter().map(|s| s.heap_bytes()).sum::<usize>() as f64 / N as f64;
        println!("{}: real {real:.0} B, weighed {weighed:.0} B", shape.name);
        assert!(
            (weighed - real).abs() <= real * 0.2,
            "{}: weighed {weighed:.0} B for {real:.0} B really held",
            shape.name
        );
        drop(kept);
    }
}

#[test]
fn both_bounds_hold() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let lean = Shape {
        name: "lean",
        id_len: 8,
        data: None,
        claims: false,
        rendered: true,
        jti: false,
        memo: false,
    };
    let max_bytes = 256 * 1024;
    for max_entries in [None, Some(50)] {
        let config = TokenCacheConfig {
            enabled: true,
            max_bytes,
            max_entries,
        };
        let cache = TokenCache::new(&config, Arc::new(Metrics::new()));
        for i in 0..5_000 {
            cache.insert(digest(&format!("token-{i}")), session(&f, &lean, i));
        }
        let one = session(&f, &lean, 0).entry_bytes() as u64;
        assert!(
            cache.bytes() <= max_bytes,
            "{} > {max_bytes}",
            cache.bytes()
        );
        let entries = cache.entry_count();
        match max_entries {
            Some(n) => assert!(entries <= n && entries >= n / 2, "{entries} entries"),
            // The byte bound, not a count, is what stops it: most of the budget is used.
            None => assert!(
                entries * one >= max_bytes / 2,
                "{entries} entries of {one} B"
            ),
        }
    }
}
