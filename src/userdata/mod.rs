//! Custom user data: each verified user's document from MongoDB (or a file), cached, kept fresh
//! by change streams, created on first sight, with roles resolved to permissions.
//!
//! MongoDB: one query per cache miss, concurrent misses for a user share it, and a change
//! stream invalidates cached users within one event round trip. File: the whole file is held in
//! memory and reloaded when it changes.

mod cache;
mod convert;
mod file;
mod mongo;
mod stream;
#[cfg(test)]
mod tests;
mod weight;

use crate::config::{KeyError, UserDataConfig, UserDataSource};
use crate::error::Reject;
use crate::metrics::UserDataMetrics;
use crate::packed_json::PackedJson;
/// The user data cache and what its entries weigh, public for `benches/footprint.rs` and
/// `tests/user_cache_weight.rs`.
#[doc(hidden)]
pub use cache::{Entry, Fetched, RecordCache, ENTRY_OVERHEAD};
/// How a MongoDB document becomes the JSON that rules, headers and /userinfo read.
pub use convert::doc_to_json;
pub(crate) use weight::table_bytes;
pub use weight::{compact, record_heap};
// What the revocation list shares with user data: the client, the stream's resume rules and the
// way fields and dates are read.
use convert::Fields;
pub(crate) use convert::{bson_instant, bson_path};
use file::FileSource;
use mongo::Settings;
pub(crate) use mongo::{canonical_id, unreachable, MongoSource};
use mongodb::bson::{Bson, Document};
use mongodb::options::ConnectionString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
pub(crate) use stream::{stopped, unsupported};
use tokio::sync::watch;

/// One user's custom data as the rest of the proxy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    /// The user's document as JSON, packed (`None`: the user has no document).
    pub document: Option<PackedJson>,
    /// A JSON array, present only when `user_data.roles` is configured.
    /// Boxed: most deployments have no roles, and an inline `Value` costs every user 72 bytes.
    pub permissions: Option<Box<serde_json::Value>>,
    pub blocked: bool,
    /// From `expiration_field`; kept as an instant because a record can stay cached for long.
    pub expires_at: Option<SystemTime>,
    /// From `tokens_valid_after_field`, in seconds since the epoch: tokens with an earlier `iat`
    /// are revoked. `+inf` when the field holds something that is not a date.
    pub tokens_valid_after: Option<f64>,
}

impl UserRecord {
    pub fn expired(&self) -> bool {
        self.expires_at.is_some_and(|at| at <= SystemTime::now())
    }
}

/// The source could not be reached and nothing cached may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("user data source unavailable")
    }
}

impl std::error::Error for Unavailable {}

impl From<Unavailable> for Reject {
    fn from(_: Unavailable) -> Self {
        Reject::UserDataUnavailable
    }
}

pub struct UserData {
    source: Source,
    required: bool,
    watching: Arc<AtomicBool>,
}

enum Source {
    Mongo(Arc<MongoSource>),
    File(Arc<FileSource>),
}

impl UserData {
    /// Validates config and builds clients; does no network I/O (used by `claimgate check`).
    pub fn new(cfg: &UserDataConfig, metrics: UserDataMetrics) -> Result<Self, KeyError> {
        if cfg.user_id_field.is_empty() {
            return Err(KeyError::new(
                "user_data.user_id_field",
                "must not be empty",
            ));
        }
        if cfg.cache.max_bytes == 0 {
            return Err(KeyError::new(
                "user_data.cache.max_bytes",
                "must be greater than 0",
            ));
        }
        if cfg.cache.max_entries == Some(0) {
            return Err(KeyError::new(
                "user_data.cache.max_entries",
                "must be greater than 0",
            ));
        }
        if cfg.timeout_ms == 0 {
            return Err(KeyError::new(
                "user_data.timeout_ms",
                "must be greater than 0",
            ));
        }
        let fields = Fields {
            user_id: cfg.user_id_field.clone(),
            blocked: cfg.blocked_field.clone(),
            expiration: cfg.expiration_field.clone(),
            tokens_valid_after: cfg.tokens_valid_after_field.clone(),
        };
        let creation = match &cfg.on_user_creation {
            Some(c) if c.document.contains_key("_id") => {
                return Err(KeyError::new(
                    "user_data.on_user_creation.document",
                    "must not set `_id` (every created user would get the same one)",
                ))
            }
            Some(c) => Some(c.document.clone()),
            None => None,
        };
        let source = match cfg.source {
            UserDataSource::Mongodb => {
                let uri = required(&cfg.uri, "user_data.uri")?;
                let conn = ConnectionString::parse(uri).map_err(|e| {
                    KeyError::new("user_data.uri", format!("invalid MongoDB URI: {}", e.kind))
                })?;
                let creation = match creation {
                    Some(map) => Some(to_document(map)?),
                    None => None,
                };
                if let Some(roles) = &cfg.roles {
                    for (key, value) in [
                        ("collection", &roles.collection),
                        ("id_field", &roles.id_field),
                        ("permissions_field", &roles.permissions_field),
                    ] {
                        if value.is_empty() {
                            return Err(KeyError::new(
                                format!("user_data.roles.{key}"),
                                "must not be empty",
                            ));
                        }
                    }
                }
                Source::Mongo(Arc::new(MongoSource::new(
                    Settings {
                        conn,
                        database: required(&cfg.database, "user_data.database")?.to_owned(),
                        collection: required(&cfg.collection, "user_data.collection")?.to_owned(),
                        fields,
                        creation,
                        roles: cfg.roles.clone(),
                        timeout: Duration::from_millis(cfg.timeout_ms),
                        on_unavailable: cfg.on_unavailable,
                        max_bytes: cfg.cache.max_bytes,
                        max_entries: cfg.cache.max_entries,
                        ttl: Duration::from_secs(cfg.cache.ttl_seconds),
                    },
                    metrics,
                )))
            }
            UserDataSource::File => {
                let Some(path) = cfg.path.clone().filter(|p| !p.as_os_str().is_empty()) else {
                    return Err(KeyError::new(
                        "user_data.path",
                        "is required for source: file",
                    ));
                };
                if cfg.roles.is_some() {
                    return Err(KeyError::new(
                        "user_data.roles",
                        "roles are resolved from a MongoDB collection; not available with source: file",
                    ));
                }
                Source::File(Arc::new(FileSource::new(path, fields, creation, metrics)))
            }
        };
        Ok(Self {
            source,
            required: cfg.required,
            watching: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Background work: index hint and change streams (MongoDB) or the file watch. Returns when
    /// `shutdown` becomes true.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        match &self.source {
            Source::Mongo(src) => {
                let hint = index_hint(src.clone(), shutdown.clone());
                let users = stream::follow(
                    src.clone(),
                    stream::Watched::Users,
                    self.watching.clone(),
                    shutdown.clone(),
                );
                let roles = stream::follow(
                    src.clone(),
                    stream::Watched::Roles,
                    self.watching.clone(),
                    shutdown.clone(),
                );
                tokio::join!(hint, users, roles);
                // Without change streams the tasks above end early; the contract is to return at
                // shutdown.
                let mut shutdown = shutdown;
                let _ = shutdown.wait_for(|stop| *stop).await;
            }
            Source::File(src) => {
                self.watching.store(true, Ordering::Release);
                src.watch(shutdown).await;
            }
        }
        self.watching.store(false, Ordering::Release);
    }

    /// The user's record, creating the document first if configured. Takes at most about
    /// `timeout_ms`.
    pub async fn lookup(&self, user_id: &str) -> Result<Arc<UserRecord>, Unavailable> {
        match &self.source {
            Source::Mongo(src) => src.lookup(user_id).await,
            Source::File(src) => src.lookup(user_id),
        }
    }

    /// The cached record for `user_id` and its age, without fetching or counting anything (for
    /// `/explain`); `None` on a miss or with a file source (read whole, nothing is cached).
    pub fn cached(&self, user_id: &str) -> Option<(Arc<UserRecord>, Duration)> {
        match &self.source {
            Source::Mongo(src) => src.cache.get(user_id).map(|e| (e.record.clone(), e.age())),
            Source::File(_) => None,
        }
    }

    /// The 403s a record implies, in the order a client would want to learn them.
    pub fn admit(&self, record: &UserRecord) -> Result<(), Reject> {
        if record.document.is_none() && self.required {
            return Err(Reject::NoUserData);
        }
        if record.blocked {
            return Err(Reject::UserBlocked);
        }
        if record.expired() {
            return Err(Reject::UserExpired);
        }
        Ok(())
    }

    /// The MongoDB source (and its client), for the revocation list; `None` with a file source.
    pub(crate) fn mongo(&self) -> Option<Arc<MongoSource>> {
        match &self.source {
            Source::Mongo(src) => Some(src.clone()),
            Source::File(_) => None,
        }
    }

    pub fn cache_entries(&self) -> u64 {
        match &self.source {
            Source::Mongo(src) => src.cache.len(),
            Source::File(src) => src.len(),
        }
    }

    /// True while changes reach the cache live (change stream open, or file watch running);
    /// false means only the TTL bounds staleness.
    pub fn watching(&self) -> bool {
        self.watching.load(Ordering::Acquire)
    }
}

fn required<'a>(value: &'a Option<String>, key: &str) -> Result<&'a str, KeyError> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(KeyError::new(key, "is required for source: mongodb")),
    }
}

/// Extended JSON (`{"$date": ..}`) in the creation document becomes real BSON types.
fn to_document(map: serde_json::Map<String, serde_json::Value>) -> Result<Document, KeyError> {
    match Bson::try_from(serde_json::Value::Object(map)) {
        Ok(Bson::Document(doc)) => Ok(doc),
        Ok(_) => Err(KeyError::new(
            "user_data.on_user_creation.document",
            "must be a map",
        )),
        Err(e) => Err(KeyError::new(
            "user_data.on_user_creation.document",
            format!("invalid Extended JSON: {e}"),
        )),
    }
}

/// Retries until the server answers once; the hint matters only at startup.
async fn index_hint(src: Arc<MongoSource>, mut shutdown: watch::Receiver<bool>) {
    let mut delay = Duration::from_secs(1);
    while !src.check_indexes().await {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}
