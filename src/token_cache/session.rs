//! What a verified token leaves behind for its later requests, and the worker-local copy the
//! per-worker front serves.

use super::weight;
use crate::claims::Identity;
use crate::headers::Rendered;
use crate::userdata::UserRecord;
use crate::verify::Proof;
use http::{HeaderName, HeaderValue};
use std::sync::{Arc, Mutex, Weak};

/// What a verified token yields; shared by every request that presents the same token.
#[derive(Debug)]
pub struct Session {
    pub proof: Proof,
    /// `identity.token` and `identity.data` are empty unless something reads them per request
    /// (see `Decider::keep_claims` and `Decider::keep_mapped_data`): they are most of a session's
    /// size. An empty `token` is the cache's one shared empty map, not an allocation per session.
    pub identity: Identity,
    /// Identity headers rendered once, when they depend only on the token.
    pub rendered: Prerendered,
    /// Identity headers that also depend on the user's document, with the document version
    /// (record) they were rendered from; reused while the user data cache hands out that record.
    /// A `Weak` so that a session never keeps an evicted document alive: it pins only the
    /// record's allocation, so the pointer cannot be reused by a newer record either.
    memo: Mutex<Option<(Weak<UserRecord>, Arc<Rendered>)>>,
    /// `iat` and `jti`, kept for the revocation checks, which run on every request (a cached
    /// verification must not outlive a revocation). `jti` only when a revocation list is set.
    pub iat: Option<f64>,
    pub jti: Option<Box<str>>,
}

/// Headers rendered from the token alone, in exactly as many bytes as they hold.
#[derive(Debug, Default)]
pub struct Prerendered(Option<Box<[(HeaderName, HeaderValue)]>>);

impl Prerendered {
    pub fn get(&self) -> Option<&[(HeaderName, HeaderValue)]> {
        self.0.as_deref()
    }
}

impl Session {
    pub fn new(
        proof: Proof,
        identity: Identity,
        rendered: Option<Rendered>,
        iat: Option<f64>,
        jti: Option<Box<str>>,
    ) -> Self {
        Self {
            proof,
            identity,
            rendered: Prerendered(rendered.map(Vec::into_boxed_slice)),
            memo: Mutex::new(None),
            iat,
            jti,
        }
    }

    /// The headers rendered for exactly this user record, if this session has them.
    pub fn rendered_for(&self, record: &Arc<UserRecord>) -> Option<Arc<Rendered>> {
        let guard = self.memo.lock().ok()?;
        let (for_record, rendered) = guard.as_ref()?;
        std::ptr::eq(for_record.as_ptr(), Arc::as_ptr(record)).then(|| rendered.clone())
    }

    /// Keeps a per-user rendering for the next request of this token, unless it is larger than
    /// the allowance its cache entry was weighed with (then it is rendered per request).
    pub fn remember_rendered(&self, record: &Arc<UserRecord>, rendered: Arc<Rendered>) {
        if weight::memo_bytes(&rendered) > weight::MEMO_MAX_BYTES {
            return;
        }
        if let Ok(mut guard) = self.memo.lock() {
            *guard = Some((Arc::downgrade(record), rendered));
        }
    }

    pub(super) fn memo_bytes(&self) -> usize {
        self.memo
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|(_, r)| weight::memo_bytes(r)))
            .unwrap_or(0)
    }

    /// A copy sharing no reference count with `self`: a worker's front hands it out on every
    /// hit, so the `Arc`, `Bytes` and `HeaderName` counts it bumps live in memory only that
    /// worker writes. Only the verification key (read, never counted per request) is shared.
    pub(super) fn local_copy(
        &self,
        empty_claims: &Arc<serde_json::Map<String, serde_json::Value>>,
    ) -> Self {
        let token = if self.identity.token.is_empty() {
            empty_claims.clone()
        } else {
            Arc::new((*self.identity.token).clone())
        };
        let identity = Identity {
            id: self.identity.id.clone(),
            provider: Arc::from(&*self.identity.provider),
            data: self.identity.data.clone(),
            token,
        };
        let rendered = self.rendered.get().map(|headers| {
            headers
                .iter()
                .map(|(name, value)| (local_name(name), local_value(value)))
                .collect()
        });
        Self {
            proof: self.proof.clone(),
            identity,
            rendered: Prerendered(rendered),
            memo: Mutex::new(None),
            iat: self.iat,
            jti: self.jti.clone(),
        }
    }
}

fn local_name(name: &HeaderName) -> HeaderName {
    HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone())
}

fn local_value(value: &HeaderValue) -> HeaderValue {
    match HeaderValue::from_bytes(value.as_bytes()) {
        Ok(mut copy) => {
            copy.set_sensitive(value.is_sensitive());
            copy
        }
        Err(_) => value.clone(),
    }
}
