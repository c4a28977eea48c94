//! The verified-token cache: a repeat of a byte-identical token skips parsing, signature and claim
//! mapping. Keyed by SHA-256 of the whole token (never a prefix, kid or signature alone, which
//! would let a tampered payload ride on a cached verification); an entry expires at the token's
//! `exp`, and is ignored once the key that verified it is no longer published.

use crate::claims::Identity;
use crate::headers::Rendered;
use crate::metrics::Metrics;
use crate::userdata::UserRecord;
use crate::verify::{now_seconds, Proof};
use moka::sync::Cache;
use moka::Expiry;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What a verified token yields; shared by every request that presents the same token.
#[derive(Debug)]
pub struct Session {
    pub proof: Proof,
    /// `identity.token` and `identity.data` are empty unless something reads them per request
    /// (see `Decider::keep_claims` and `Decider::keep_mapped_data`): they are most of a session's size.
    pub identity: Identity,
    /// Identity headers rendered once, when they depend only on the token.
    pub rendered: OnceLock<Rendered>,
    /// Identity headers that also depend on the user's document, with the document version
    /// (record) they were rendered from; reused while the user data cache hands out that record.
    pub rendered_for: Mutex<Option<(Arc<UserRecord>, Arc<Rendered>)>>,
    /// `iat` and `jti`, kept for the revocation checks, which run on every request (a cached
    /// verification must not outlive a revocation). `jti` only when a revocation list is set.
    pub iat: Option<f64>,
    pub jti: Option<Box<str>>,
}

pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
    );
    out
}

struct UntilExp;

impl Expiry<TokenDigest, Arc<Session>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &TokenDigest,
        session: &Arc<Session>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            session.proof.exp.saturating_sub(now_seconds()),
        ))
    }
}

pub struct TokenCache {
    cache: Option<Cache<TokenDigest, Arc<Session>>>,
    metrics: Arc<Metrics>,
}

impl TokenCache {
    pub fn new(enabled: bool, max_entries: u64, metrics: Arc<Metrics>) -> Self {
        let cache = enabled.then(|| {
            Cache::builder()
                .max_capacity(max_entries)
                .expire_after(UntilExp)
                .build()
        });
        Self { cache, metrics }
    }

    /// A cached session for this token, if one exists and `still_valid` agrees.
    pub fn get(
        &self,
        key: &TokenDigest,
        still_valid: impl FnOnce(&Proof) -> bool,
    ) -> Option<Arc<Session>> {
        let cache = self.cache.as_ref()?;
        match cache.get(key) {
            Some(session) if still_valid(&session.proof) => {
                self.metrics.token_cache_hits.inc();
                Some(session)
            }
            Some(_) => {
                cache.invalidate(key);
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
        let guard = session.rendered_for.lock().ok()?;
        let (for_record, rendered) = guard.as_ref()?;
        Arc::ptr_eq(for_record, record).then(|| rendered.clone())
    }

    pub fn remember_rendered(session: &Session, record: &Arc<UserRecord>, rendered: Arc<Rendered>) {
        if let Ok(mut guard) = session.rendered_for.lock() {
            *guard = Some((record.clone(), rendered));
        }
    }

    pub fn insert(&self, key: TokenDigest, session: Arc<Session>) {
        if let Some(cache) = &self.cache {
            cache.insert(key, session);
        }
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }

    pub fn update_metrics(&self) {
        self.metrics
            .token_cache_entries
            .set(self.entry_count() as i64);
    }
}
