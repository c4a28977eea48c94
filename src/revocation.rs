//! The revocation list: `jti`s listed in a MongoDB collection, held in memory and kept fresh by a
//! change stream, so the per-request check is a hash lookup and every instance sees a new entry
//! within one event round trip.
//!
//! Fail-closed rules for tokens that carry a `jti` (a listed `jti` is always `token_revoked`):
//! until the list has been read once, while it is over `max_bytes` or `max_entries`, or (under
//! `user_data.on_unavailable: deny`) while its change stream has been down for longer than
//! `user_data.timeout_ms`, such a token gets 503 `revocation_unavailable`. Under `serve_cached`
//! the last known list keeps being applied through an outage.

mod state;
mod stream;

use crate::config::{KeyError, OnUnavailable, RevocationConfig};
use crate::error::Reject;
use crate::metrics::RevocationMetrics;
use crate::userdata::{bson_instant, bson_path, canonical_id, MongoSource};
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::Error;
use state::{Bounds, Listed, State};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

pub struct Revocation {
    src: Arc<MongoSource>,
    database: String,
    collection: String,
    jti_field: String,
    expires_field: Option<String>,
    bounds: Bounds,
    on_unavailable: OnUnavailable,
    /// How long the stream may be down under `deny` before tokens with a `jti` are refused: a
    /// routine reconnect must not turn into 503s.
    grace: Duration,
    state: RwLock<State>,
    metrics: RevocationMetrics,
}

impl Revocation {
    /// Validates the section against `user_data`; does no network I/O (`claimgate check`).
    pub fn new(
        cfg: &RevocationConfig,
        user_data: Option<&crate::userdata::UserData>,
        metrics: RevocationMetrics,
    ) -> Result<Self, KeyError> {
        let src = user_data.and_then(|u| u.mongo()).ok_or_else(|| {
            KeyError::new(
                "revocation",
                "needs `user_data` with `source: mongodb` (the list is read from its server)",
            )
        })?;
        for (key, value) in [
            ("collection", cfg.collection.as_str()),
            ("jti_field", cfg.jti_field.as_str()),
            ("expires_field", cfg.expires_field.as_deref().unwrap_or("-")),
            ("database", cfg.database.as_deref().unwrap_or("-")),
        ] {
            if value.is_empty() {
                return Err(KeyError::new(
                    format!("revocation.{key}"),
                    "must not be empty",
                ));
            }
        }
        if cfg.max_bytes == 0 {
            return Err(KeyError::new(
                "revocation.max_bytes",
                "must be greater than 0",
            ));
        }
        if cfg.max_entries == Some(0) {
            return Err(KeyError::new(
                "revocation.max_entries",
                "must be greater than 0",
            ));
        }
        let database = cfg.database.clone().unwrap_or_else(|| src.database.clone());
        Ok(Self {
            on_unavailable: src.on_unavailable,
            grace: src.timeout,
            src,
            database,
            collection: cfg.collection.clone(),
            jti_field: cfg.jti_field.clone(),
            expires_field: cfg.expires_field.clone(),
            bounds: Bounds {
                max_bytes: cfg.max_bytes,
                max_entries: cfg.max_entries.unwrap_or(usize::MAX),
            },
            state: RwLock::new(State::default()),
            metrics,
        })
    }

    /// The per-request check: `Ok` for a token without a `jti` (nothing to look up).
    pub fn check(&self, jti: Option<&str>) -> Result<(), Reject> {
        let Some(jti) = jti else {
            return Ok(());
        };
        let state = self.read();
        if state.by_jti.contains_key(jti) {
            self.metrics.refused_jti.inc();
            return Err(Reject::TokenRevoked);
        }
        let stale = self.on_unavailable == OnUnavailable::Deny
            && state.down_since.is_some_and(|at| at.elapsed() > self.grace);
        if !state.loaded || state.overflow || stale {
            return Err(Reject::RevocationUnavailable);
        }
        Ok(())
    }

    /// Read once: until then tokens with a `jti` cannot be judged.
    pub fn is_ready(&self) -> bool {
        self.read().loaded
    }

    pub fn entries(&self) -> usize {
        self.read().by_doc.len()
    }

    /// Follows the collection until `shutdown` becomes true.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        stream::follow(self, shutdown).await;
    }

    /// Reads the whole collection and replaces the list with it.
    async fn load(&self) -> Result<(), Error> {
        let client = self.src.client().await?;
        let coll = client
            .database(&self.database)
            .collection::<Document>(&self.collection);
        let mut projection = doc! { self.jti_field.as_str(): 1 };
        if let Some(field) = &self.expires_field {
            projection.insert(field.as_str(), 1);
        }
        let mut cursor = coll.find(doc! {}).projection(projection).await?;
        let now = SystemTime::now();
        let mut fresh = State::default();
        while let Some(document) = cursor.try_next().await? {
            if let Some((doc_id, Some(listed))) = self.read_document(&document) {
                if listed.expires.is_none_or(|at| at > now) {
                    fresh.put(doc_id, listed, self.bounds);
                }
            }
        }
        fresh.loaded = true;
        self.metrics.loads.inc();
        if fresh.overflow {
            tracing::error!(
                collection = self.collection,
                max_bytes = self.bounds.max_bytes,
                max_entries = self.bounds.max_entries,
                "the revocation list is larger than revocation.max_bytes or max_entries: tokens with a jti are refused (503) until it fits"
            );
        }
        let mut state = self.write();
        fresh.down_since = state.down_since;
        *state = fresh;
        self.publish(&state);
        Ok(())
    }

    /// A changed document (`None`: deleted, or gone by the time the event was read).
    fn apply(&self, doc_id: &str, document: Option<&Document>) {
        self.metrics.change_events.inc();
        let listed = document
            .and_then(|d| self.read_document(d))
            .and_then(|(_, l)| l);
        let mut state = self.write();
        match listed {
            Some(listed) if listed.expires.is_none_or(|at| at > SystemTime::now()) => {
                state.put(doc_id.into(), listed, self.bounds)
            }
            _ => state.remove(doc_id),
        }
        self.publish(&state);
    }

    /// The collection was dropped or renamed: nothing is listed any more.
    fn clear(&self) {
        let mut state = self.write();
        let down_since = state.down_since;
        *state = State {
            loaded: true,
            down_since,
            ..State::default()
        };
        self.publish(&state);
    }

    fn prune(&self) -> bool {
        let mut state = self.write();
        state.prune(SystemTime::now());
        self.publish(&state);
        state.overflow
    }

    fn stream_up(&self, up: bool) {
        let mut state = self.write();
        state.down_since = if up {
            None
        } else {
            state.down_since.or_else(|| Some(Instant::now()))
        };
    }

    /// The `_id` and what the document lists. A document without a string `jti` lists nothing;
    /// an expiry that is not a date is ignored (the entry is kept: failing closed).
    fn read_document(&self, document: &Document) -> Option<(Box<str>, Option<Listed>)> {
        let doc_id = canonical_id(document.get("_id")?).into_boxed_str();
        let jti = match bson_path(document, &self.jti_field) {
            Some(Bson::String(jti)) if !jti.is_empty() => jti.as_str().into(),
            _ => return Some((doc_id, None)),
        };
        let expires = self
            .expires_field
            .as_deref()
            .and_then(|field| bson_path(document, field))
            .and_then(bson_instant);
        Some((doc_id, Some(Listed { jti, expires })))
    }

    fn publish(&self, state: &State) {
        let entries = i64::try_from(state.by_doc.len()).unwrap_or(i64::MAX);
        self.metrics.entries.set(entries);
        let bytes = i64::try_from(state.bytes()).unwrap_or(i64::MAX);
        self.metrics.bytes.set(bytes);
        self.metrics.overflow.set(i64::from(state.overflow));
    }

    // Each critical section is a few map operations that cannot leave the maps inconsistent, so
    // a poisoned lock is used as is.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}
