//! What a verified token leaves behind for its later requests, and the worker-local copy the
//! per-worker front serves.

pub use super::prerendered::Prerendered;
use super::weight;
use crate::claims::Identity;
use crate::headers::Rendered;
use crate::userdata::UserRecord;
use crate::verify::Proof;
use std::sync::{Arc, Mutex, Weak};

/// What a verified token yields; shared by every request that presents the same token.
/// Kept small: a cache holds hundreds of thousands of these.
#[derive(Debug)]
pub struct Session {
    pub proof: Proof,
    /// `identity.token` and `identity.data` are empty unless something reads them per request
    /// (see `Decider::keep_claims` and `Decider::keep_mapped_data`): they are most of a session's
    /// size. Empty ones are the cache's shared empty maps, not an allocation per session.
    pub identity: Identity,
    headers: Headers,
    /// Only when a revocation check may read them (user data or a revocation list configured).
    revocable: Option<Box<Revocable>>,
}

#[derive(Debug)]
enum Headers {
    /// Rendered once, from the token alone.
    Token(Prerendered),
    /// Headers that also depend on the user's document, with the document version (record)
    /// they were rendered from; reused while the user data cache hands out that record. A
    /// `Weak` so that a session never keeps an evicted document alive: it pins only the
    /// record's allocation, so the pointer cannot be reused by a newer record either.
    PerUser(Memo),
}

type Memo = Mutex<Option<(Weak<UserRecord>, Arc<Rendered>)>>;

/// `iat` and `jti`, for the revocation checks, which run on every request (a cached
/// verification must not outlive a revocation).
#[derive(Debug, Clone)]
struct Revocable {
    iat: Option<f64>,
    jti: Option<Box<str>>,
}

impl Session {
    pub fn new(
        proof: Proof,
        identity: Identity,
        rendered: Option<Prerendered>,
        iat: Option<f64>,
        jti: Option<Box<str>>,
    ) -> Self {
        let headers = match rendered {
            Some(packed) => Headers::Token(packed),
            None => Headers::PerUser(Mutex::new(None)),
        };
        let revocable = (iat.is_some() || jti.is_some()).then(|| Box::new(Revocable { iat, jti }));
        Self {
            proof,
            identity,
            headers,
            revocable,
        }
    }

    /// The headers rendered from the token alone, when they depend on nothing else.
    pub fn prerendered(&self) -> Option<&Prerendered> {
        match &self.headers {
            Headers::Token(packed) => Some(packed),
            Headers::PerUser(_) => None,
        }
    }

    pub fn iat(&self) -> Option<f64> {
        self.revocable.as_ref().and_then(|r| r.iat)
    }

    pub fn jti(&self) -> Option<&str> {
        self.revocable.as_ref().and_then(|r| r.jti.as_deref())
    }

    /// The per-user rendering slot, which only a session without token-only headers has.
    fn memo(&self) -> Option<&Memo> {
        match &self.headers {
            Headers::PerUser(memo) => Some(memo),
            Headers::Token(_) => None,
        }
    }

    /// The headers rendered for exactly this user record, if this session has them.
    pub fn rendered_for(&self, record: &Arc<UserRecord>) -> Option<Arc<Rendered>> {
        let guard = self.memo()?.lock().ok()?;
        let (for_record, rendered) = guard.as_ref()?;
        std::ptr::eq(for_record.as_ptr(), Arc::as_ptr(record)).then(|| rendered.clone())
    }

    /// Keeps a per-user rendering for the next request of this token, unless it is larger than
    /// the allowance its cache entry was weighed with (then it is rendered per request).
    pub fn remember_rendered(&self, record: &Arc<UserRecord>, rendered: Arc<Rendered>) {
        let Some(memo) = self.memo() else {
            return;
        };
        if weight::memo_bytes(&rendered) > weight::MEMO_MAX_BYTES {
            return;
        }
        if let Ok(mut guard) = memo.lock() {
            *guard = Some((Arc::downgrade(record), rendered));
        }
    }

    pub(super) fn memo_bytes(&self) -> usize {
        self.memo()
            .and_then(|memo| memo.lock().ok())
            .and_then(|g| g.as_ref().map(|(_, r)| weight::memo_bytes(r)))
            .unwrap_or(0)
    }

    pub(super) fn revocable_bytes(&self) -> usize {
        self.revocable.as_ref().map_or(0, |r| {
            std::mem::size_of::<Revocable>() + r.jti.as_ref().map_or(0, |j| j.len())
        })
    }

    /// A copy sharing no reference count with `self`: a worker's front hands it out on every
    /// hit, so the `Arc`, `Bytes` and `HeaderName` counts it bumps live in memory only that
    /// worker writes. Only the verification key (read, never counted per request) and the
    /// shared empty maps are shared.
    pub(super) fn local_copy(&self) -> Self {
        let map = |m: &Arc<serde_json::Map<String, serde_json::Value>>| {
            if m.is_empty() {
                m.clone()
            } else {
                Arc::new((**m).clone())
            }
        };
        let identity = Identity {
            id: self.identity.id.clone(),
            provider: Arc::from(&*self.identity.provider),
            data: map(&self.identity.data),
            token: map(&self.identity.token),
        };
        let headers = match &self.headers {
            Headers::Token(packed) => Headers::Token(packed.local_copy()),
            Headers::PerUser(_) => Headers::PerUser(Mutex::new(None)),
        };
        Self {
            proof: self.proof.clone(),
            identity,
            headers,
            revocable: self.revocable.clone(),
        }
    }
}
