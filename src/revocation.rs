//! The revocation list: `jti`s listed in a MongoDB collection, held in memory and kept fresh by a
//! change stream, so the per-request check is a hash lookup and every instance sees a new entry
//! within one event round trip.
//!
//! Fail-closed rules for tokens that carry a `jti` (a listed `jti` is always `token_revoked`):
//! until the list has been read once, while it is over `max_entries`, or (under
//! `user_data.on_unavailable: deny`) while its change stream has been down for longer than
//! `user_data.timeout_ms`, such a token gets 503 `revocation_unavailable`. Under `serve_cached`
//! the last known list keeps being applied through an outage.

mod stream;

use crate::config::{KeyError, OnUnavailable, RevocationConfig};
use crate::error::Reject;
use crate::metrics::RevocationMetrics;
use crate::userdata::{bson_instant, bson_path, canonical_id, MongoSource};
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::Error;
use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

pub struct Revocation {
    src: Arc<MongoSource>,
    database: String,
    collection: String,
    jti_field: String,
    expires_field: Option<String>,
    max_entries: usize,
    on_unavailable: OnUnavailable,
    /// How long the stream may be down under `deny` before tokens with a `jti` are refused: a
    /// routine reconnect must not turn into 503s.
    grace: Duration,
    state: RwLock<State>,
    metrics: RevocationMetrics,
}

/// One listing document.
#[derive(Debug, Clone, PartialEq)]
struct Listed {
    jti: Box<str>,
    expires: Option<SystemTime>,
}

#[derive(Default)]
struct State {
    /// Listing document `_id` (canonical text) → what it lists: a delete event carries only the
    /// `_id`, and two documents may list the same `jti`.
    by_doc: HashMap<String, Listed>,
    /// `jti` → how many documents list it.
    by_jti: HashMap<Box<str>, u32>,
    loaded: bool,
    /// A document was left out for `max_entries`: the list is incomplete until a reload fits.
    overflow: bool,
    /// Since when the change stream has been down (`None`: open, or not opened yet).
    down_since: Option<Instant>,
}

impl State {
    fn put(&mut self, doc_id: String, listed: Listed, max_entries: usize) {
        if !self.by_doc.contains_key(&doc_id) && self.by_doc.len() >= max_entries {
            self.overflow = true;
            return;
        }
        *self.by_jti.entry(listed.jti.clone()).or_insert(0) += 1;
        if let Some(old) = self.by_doc.insert(doc_id, listed) {
            self.forget(&old.jti);
        }
    }

    fn remove(&mut self, doc_id: &str) {
        if let Some(old) = self.by_doc.remove(doc_id) {
            self.forget(&old.jti);
        }
    }

    fn forget(&mut self, jti: &str) {
        if let Some(count) = self.by_jti.get_mut(jti) {
            *count -= 1;
            if *count == 0 {
                self.by_jti.remove(jti);
            }
        }
    }

    /// Drops entries whose expiry has passed: the tokens they revoke are expired anyway.
    fn prune(&mut self, now: SystemTime) {
        let past: Vec<String> = self
            .by_doc
            .iter()
            .filter(|(_, l)| l.expires.is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in past {
            self.remove(&id);
        }
    }
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
        if cfg.max_entries == 0 {
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
            max_entries: cfg.max_entries,
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
                    fresh.put(doc_id, listed, self.max_entries);
                }
            }
        }
        fresh.loaded = true;
        self.metrics.loads.inc();
        if fresh.overflow {
            tracing::error!(
                collection = self.collection,
                max_entries = self.max_entries,
                "the revocation list is larger than revocation.max_entries: tokens with a jti are refused (503) until it fits"
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
                state.put(doc_id.to_owned(), listed, self.max_entries)
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
    fn read_document(&self, document: &Document) -> Option<(String, Option<Listed>)> {
        let doc_id = canonical_id(document.get("_id")?);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(jti: &str, expires: Option<SystemTime>) -> Listed {
        Listed {
            jti: jti.into(),
            expires,
        }
    }

    #[test]
    fn a_jti_stays_listed_while_any_document_lists_it() {
        let mut s = State::default();
        s.put("1".into(), listed("a", None), 10);
        s.put("2".into(), listed("a", None), 10);
        s.remove("1");
        assert!(s.by_jti.contains_key("a"));
        // An update that changes the listed jti unlists the old one.
        s.put("2".into(), listed("b", None), 10);
        assert!(!s.by_jti.contains_key("a") && s.by_jti.contains_key("b"));
        s.remove("2");
        assert!(s.by_jti.is_empty() && s.by_doc.is_empty());
    }

    #[test]
    fn over_the_bound_the_list_is_marked_incomplete() {
        let mut s = State::default();
        s.put("1".into(), listed("a", None), 1);
        s.put("1".into(), listed("a2", None), 1);
        assert!(!s.overflow, "replacing an entry is not growth");
        s.put("2".into(), listed("b", None), 1);
        assert!(s.overflow && !s.by_jti.contains_key("b"));
    }

    #[test]
    fn expired_entries_are_pruned() {
        let now = SystemTime::now();
        let mut s = State::default();
        s.put(
            "1".into(),
            listed("old", Some(now - Duration::from_secs(1))),
            10,
        );
        s.put(
            "2".into(),
            listed("new", Some(now + Duration::from_secs(60))),
            10,
        );
        s.put("3".into(), listed("forever", None), 10);
        s.prune(now);
        let mut left: Vec<_> = s.by_jti.keys().map(|k| k.to_string()).collect();
        left.sort();
        assert_eq!(left, ["forever", "new"]);
    }
}
