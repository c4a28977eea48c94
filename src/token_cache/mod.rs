//! The verified-token cache: a repeat of a byte-identical token skips parsing, signature and claim
//! mapping. Keyed by SHA-256 of the whole token (never a prefix, kid or signature alone, which
//! would let a tampered payload ride on a cached verification); an entry expires at the token's
//! `exp`, and is ignored once the key that verified it is no longer published.
//!
//! Two levels: a shared cache bounded by the heap its entries hold (`max_bytes`, and
//! `max_entries` when set), and in front of it a small table per worker thread with that
//! worker's own copies, so that a hot token does not bounce one cache line between workers.
//!
//! The shared level is a `quick_cache` (CLOCK-PRO, weighed): about 100 bytes of bookkeeping per
//! entry where moka took 291, and a read lock instead of moka's read-side housekeeping. It has no
//! expiry of its own: every hit already checks `exp` (`Verifier::still_valid`), and an expired
//! entry is dropped by the hit that finds it or evicted like any cold entry.

mod front;
mod prerendered;
mod session;
pub mod weight;

pub use prerendered::Prerendered;
pub use session::Session;

use crate::cache_sizing;
use crate::config::TokenCacheConfig;
use crate::headers::Rendered;
use crate::metrics::Metrics;
use crate::userdata::UserRecord;
use crate::verify::Proof;
use front::{Front, Lookup};
use quick_cache::sync::Cache;
use quick_cache::Weighter;
use serde_json::{Map, Value};
use std::sync::Arc;

pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
    );
    out
}

/// What the shared cache is told an entry weighs: [`Session::entry_bytes`], and at least `floor`
/// (`capacity / max_entries`) so that the entry bound holds whenever the byte bound does.
#[derive(Clone)]
struct EntryWeight {
    floor: u64,
}

impl Weighter<TokenDigest, Arc<Session>> for EntryWeight {
    fn weight(&self, _key: &TokenDigest, session: &Arc<Session>) -> u64 {
        (session.entry_bytes() as u64).max(self.floor)
    }
}

/// A typical entry's weight, for the cache's first sizing (it grows as needed).
const TYPICAL_ENTRY_BYTES: u64 = 512;

/// A slab slot of the shared cache (SHA-256 key, `Arc`, links) with its hash-table share: what
/// a remembered ghost key costs.
const SLOT_BYTES: u64 = 72;

struct Shared {
    cache: Cache<TokenDigest, Arc<Session>, EntryWeight>,
    /// `None` when the cache is too small to spare the front's share of `max_bytes`.
    front: Option<Front>,
}

pub struct TokenCache {
    shared: Option<Shared>,
    /// The one empty map of sessions that drop their claims or mapped data, so dropping costs
    /// no allocation.
    empty_map: Arc<Map<String, Value>>,
    metrics: Arc<Metrics>,
}

/// Lanes for the worker threads (one per core) and the other threads that may decide (the
/// forward-auth and ext_authz doors run on the same workers; tests run their own runtimes).
fn lanes() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    (2 * cores).clamp(2, 64)
}

impl TokenCache {
    pub fn new(config: &TokenCacheConfig, metrics: Arc<Metrics>) -> Self {
        let shared = config.enabled.then(|| {
            let lanes = lanes();
            // The front's copies come out of the same budget; a cache too small to give it a
            // quarter of its bytes runs without one.
            let front_bytes = Front::max_bytes(lanes);
            let with_front = config.max_bytes >= 4 * front_bytes;
            let capacity = if with_front {
                config.max_bytes - front_bytes
            } else {
                config.max_bytes
            };
            // Each entry weighs at least capacity / max_entries, so that the entry bound holds
            // whenever the byte bound does.
            let floor = config
                .max_entries
                .map_or(0, |n| capacity.div_ceil(n.max(1)));
            let (estimated, weight_capacity) =
                cache_sizing::sizing(capacity, TYPICAL_ENTRY_BYTES.max(floor), SLOT_BYTES);
            Shared {
                cache: Cache::with(
                    estimated,
                    weight_capacity,
                    EntryWeight { floor },
                    Default::default(),
                    Default::default(),
                ),
                front: with_front.then(|| Front::new(lanes)),
            }
        });
        Self {
            shared,
            empty_map: Arc::default(),
            metrics,
        }
    }

    /// The claims or mapped data of a session that keeps none.
    pub fn empty_map(&self) -> Arc<Map<String, Value>> {
        self.empty_map.clone()
    }

    /// A cached session for this token, if one exists and `still_valid` agrees (on every hit,
    /// the worker-local ones included).
    pub fn get(
        &self,
        key: &TokenDigest,
        still_valid: impl Fn(&Proof) -> bool,
    ) -> Option<Arc<Session>> {
        let shared = self.shared.as_ref()?;
        if let Some(front) = &shared.front {
            match front.get(key, &still_valid) {
                Lookup::Hit(session) => return Some(session),
                Lookup::Invalid => {
                    shared.cache.remove(key);
                    self.metrics.token_cache_misses.inc();
                    return None;
                }
                Lookup::Miss => {}
            }
        }
        match shared.cache.get(key) {
            Some(session) if still_valid(&session.proof) => {
                self.metrics.token_cache_hits.inc();
                Some(match &shared.front {
                    Some(front) if front.admit(key) => {
                        let local = Arc::new(session.local_copy());
                        front.put(*key, local.clone());
                        local
                    }
                    _ => session,
                })
            }
            Some(_) => {
                shared.cache.remove(key);
                if let Some(front) = &shared.front {
                    front.forget(key);
                }
                self.metrics.token_cache_misses.inc();
                None
            }
            None => {
                self.metrics.token_cache_misses.inc();
                None
            }
        }
    }

    /// The headers rendered for exactly this user record, if this session has them.
    pub fn rendered_for(session: &Session, record: &Arc<UserRecord>) -> Option<Arc<Rendered>> {
        session.rendered_for(record)
    }

    pub fn remember_rendered(session: &Session, record: &Arc<UserRecord>, rendered: Arc<Rendered>) {
        session.remember_rendered(record, rendered);
    }

    /// Caches a freshly verified session; this worker keeps it in its front as well.
    pub fn insert(&self, key: TokenDigest, session: Arc<Session>) {
        if let Some(shared) = &self.shared {
            if let Some(front) = &shared.front {
                front.put(key, session.clone());
            }
            shared.cache.insert(key, session);
        }
    }

    pub fn entry_count(&self) -> u64 {
        self.shared.as_ref().map_or(0, |s| s.cache.len() as u64)
    }

    /// The shared cache's weighed size plus what the workers' copies hold.
    pub fn bytes(&self) -> u64 {
        self.shared.as_ref().map_or(0, |s| {
            s.cache.weight() + s.front.as_ref().map_or(0, |f| f.bytes() as u64)
        })
    }

    fn flush_hits(&self) {
        if let Some(front) = self.shared.as_ref().and_then(|s| s.front.as_ref()) {
            self.metrics.token_cache_hits.inc_by(front.take_hits());
        }
    }

    pub fn update_metrics(&self) {
        self.flush_hits();
        self.metrics
            .token_cache_entries
            .set(self.entry_count() as i64);
        self.metrics.token_cache_bytes.set(self.bytes() as i64);
    }
}

impl Drop for TokenCache {
    /// A reload that replaces the cache must not lose the hits its workers counted locally.
    fn drop(&mut self) {
        self.flush_hits();
    }
}

#[cfg(test)]
mod tests;
