use super::*;
use crate::claims::Identity;
use crate::jwks::{Alg, VerifyKey};
use crate::verify::now_seconds;
use http::{HeaderName, HeaderValue};

fn session(cache: &TokenCache) -> Arc<Session> {
    let proof = Proof {
        provider: 0,
        exp: now_seconds() + 3_600,
        key: Arc::new(VerifyKey::hmac(&[1u8; 32], &[Alg::HS256]).unwrap()),
    };
    let identity = Identity {
        id: "ann".into(),
        provider: Arc::from("corp"),
        data: cache.empty_map(),
        token: cache.empty_map(),
    };
    let name = HeaderName::from_static("x-user-id");
    let rendered = [(name.clone(), HeaderValue::from_static("ann"))];
    let names: Arc<[HeaderName]> = Arc::from([name]);
    Arc::new(Session::new(
        proof,
        identity,
        Prerendered::pack(&rendered, &names),
        Some(1.0),
        None,
    ))
}

fn cache() -> TokenCache {
    TokenCache::new(&TokenCacheConfig::default(), Arc::new(Metrics::new()))
}

#[test]
fn a_worker_serves_repeats_from_its_own_copy() {
    let cache = cache();
    let key = digest("token");
    let original = session(&cache);
    cache.insert(key, original.clone());
    // The inserting worker keeps the session it verified.
    let first = cache.get(&key, |_| true).unwrap();
    assert!(Arc::ptr_eq(&first, &original));
    // Another worker serves the shared session the first time, copies it when the token comes
    // back, then serves its copy.
    std::thread::scope(|s| {
        s.spawn(|| {
            let shared = cache.get(&key, |_| true).unwrap();
            assert!(Arc::ptr_eq(&shared, &original));
            let copy = cache.get(&key, |_| true).unwrap();
            assert!(!Arc::ptr_eq(&copy, &original));
            let headers = |s: &Session| -> Vec<(HeaderName, HeaderValue)> {
                let packed = s.prerendered().unwrap();
                packed.iter().map(|(n, v)| (n.clone(), v)).collect()
            };
            assert_eq!(headers(&copy), headers(&original));
            assert_eq!(headers(&copy)[0].1, "ann");
            assert_eq!(copy.identity.id, "ann");
            assert_eq!(copy.iat(), Some(1.0));
            let again = cache.get(&key, |_| true).unwrap();
            assert!(Arc::ptr_eq(&copy, &again));
        });
    });
    cache.update_metrics();
    assert_eq!(cache.metrics.token_cache_hits.get(), 4);
    assert_eq!(cache.metrics.token_cache_misses.get(), 0);
    assert!(cache.bytes() > 0);
}

#[test]
fn an_entry_no_longer_valid_is_dropped() {
    let cache = cache();
    let key = digest("token");
    cache.insert(key, session(&cache));
    std::thread::scope(|s| {
        s.spawn(|| assert!(cache.get(&key, |_| true).is_some()));
    });
    // This worker's front refuses it and drops it from the shared cache too (another worker's
    // copy is checked the same way on each of its own hits).
    assert!(cache.get(&key, |_| false).is_none());
    assert!(cache.get(&key, |_| true).is_none());
    cache.update_metrics();
    assert_eq!(cache.metrics.token_cache_misses.get(), 2);
}

#[test]
fn a_disabled_cache_keeps_nothing() {
    let config = TokenCacheConfig {
        enabled: false,
        ..TokenCacheConfig::default()
    };
    let cache = TokenCache::new(&config, Arc::new(Metrics::new()));
    let key = digest("token");
    cache.insert(key, session(&cache));
    assert!(cache.get(&key, |_| true).is_none());
    assert_eq!(cache.bytes(), 0);
}

#[test]
fn rotating_tokens_are_served_shared_without_copies() {
    let cache = cache();
    use super::front::{Front, SLOTS};
    let all: Vec<_> = (0..4 * SLOTS)
        .map(|i| digest(&format!("token-{i}")))
        .collect();
    // Only tokens that share their slot with another: a token alone in its slot finds its own
    // mark a round later and is copied, as a hot token should be.
    let mut per_slot = vec![0; SLOTS];
    for key in &all {
        per_slot[Front::slot(key)] += 1;
    }
    let keys: Vec<_> = all
        .into_iter()
        .filter(|key| per_slot[Front::slot(key)] > 1)
        .collect();
    let originals: Vec<_> = keys
        .iter()
        .map(|key| {
            let s = session(&cache);
            cache.insert(*key, s.clone());
            s
        })
        .collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            let before = cache.bytes();
            // Each token once per round, more tokens than slots: marks never survive a round,
            // so this worker never copies (a copy would also cost the user-header rendering
            // kept on the shared session).
            for _ in 0..2 {
                for (key, original) in keys.iter().zip(&originals) {
                    let got = cache.get(key, |_| true).unwrap();
                    assert!(Arc::ptr_eq(&got, original));
                }
            }
            assert_eq!(cache.bytes(), before);
        });
    });
}
