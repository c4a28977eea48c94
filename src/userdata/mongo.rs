//! The MongoDB source: one query per cache miss, Atlas' rules for picking among duplicates,
//! insert-if-absent for new users, and roles → permissions.

use super::cache::{Fetched, RecordCache};
use super::convert::{bson_path, bson_to_json, doc_to_json, Fields};
use super::{Unavailable, UserRecord};
use crate::config::{OnUnavailable, RolesConfig};
use crate::metrics::UserDataMetrics;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use mongodb::error::{Error, ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, ConnectionString};
use mongodb::{Client, Collection};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// How many matching documents one lookup reads. Duplicates are rare; when an id is also a valid
/// ObjectId and this many ObjectId-typed matches precede any string match, a second query looks
/// for the string match alone.
const MATCH_LIMIT: i64 = 8;

pub(crate) struct MongoSource {
    conn: ConnectionString,
    client: OnceCell<Client>,
    pub(crate) database: String,
    pub(crate) collection: String,
    pub(crate) fields: Fields,
    /// `on_user_creation.document`; the id field is added per user.
    creation: Option<Document>,
    pub(crate) roles: Option<RolesConfig>,
    pub(crate) timeout: Duration,
    pub(crate) on_unavailable: OnUnavailable,
    pub(crate) cache: Arc<RecordCache>,
    pub(crate) metrics: UserDataMetrics,
}

pub(crate) struct Settings {
    pub conn: ConnectionString,
    pub database: String,
    pub collection: String,
    pub fields: Fields,
    pub creation: Option<Document>,
    pub roles: Option<RolesConfig>,
    pub timeout: Duration,
    pub on_unavailable: OnUnavailable,
    pub max_bytes: u64,
    pub max_entries: Option<u64>,
    pub ttl: Duration,
}

impl MongoSource {
    pub(crate) fn new(s: Settings, metrics: UserDataMetrics) -> Self {
        Self {
            conn: s.conn,
            client: OnceCell::new(),
            database: s.database,
            collection: s.collection,
            fields: s.fields,
            creation: s.creation,
            roles: s.roles,
            timeout: s.timeout,
            on_unavailable: s.on_unavailable,
            cache: Arc::new(RecordCache::new(s.max_bytes, s.max_entries, s.ttl)),
            metrics,
        }
    }

    /// Built on first use rather than in `new`: parsing a `mongodb+srv` URI resolves DNS, and the
    /// driver's monitors need a runtime, neither of which `claimgate check` has.
    pub(crate) async fn client(&self) -> Result<&Client, Error> {
        self.client
            .get_or_try_init(|| async {
                let mut options = ClientOptions::parse(self.conn.clone()).await?;
                // The driver's 30 s default would hold every request that long when the server is
                // down; a lookup may not take longer than timeout_ms anyway.
                options.server_selection_timeout.get_or_insert(self.timeout);
                options.connect_timeout.get_or_insert(self.timeout);
                options
                    .app_name
                    .get_or_insert_with(|| "claimgate".to_owned());
                Client::with_options(options)
            })
            .await
    }

    pub(crate) fn users(client: &Client, database: &str, collection: &str) -> Collection<Document> {
        client.database(database).collection(collection)
    }

    pub(crate) async fn lookup(
        self: &Arc<Self>,
        user_id: &str,
    ) -> Result<Arc<UserRecord>, Unavailable> {
        let cached = self.cache.get(user_id);
        if let Some(entry) = cached.as_ref().filter(|e| self.cache.is_fresh(e)) {
            self.metrics.cache_hits.inc();
            return Ok(entry.record.clone());
        }
        self.metrics.cache_misses.inc();
        let fetched = if self.cache.source_held_down() {
            self.metrics.lookup_errors.inc();
            Err(Unavailable)
        } else {
            let this = self.clone();
            let id = user_id.to_owned();
            self.cache
                .get_or_fetch(user_id, move || this.fetch(id))
                .await
        };
        self.metrics
            .cache_entries
            .set(saturating_i64(self.cache.len()));
        self.metrics
            .cache_bytes
            .set(saturating_i64(self.cache.bytes()));
        match fetched {
            Ok(entry) => Ok(entry.record.clone()),
            Err(Unavailable) => match cached {
                Some(entry) if self.on_unavailable == OnUnavailable::ServeCached => {
                    self.metrics.stale_serves.inc();
                    Ok(entry.record.clone())
                }
                _ => Err(Unavailable),
            },
        }
    }

    async fn fetch(self: Arc<Self>, user_id: String) -> Result<Fetched, Unavailable> {
        let outcome = tokio::time::timeout(self.timeout, self.fetch_inner(&user_id)).await;
        let (error, first) = match outcome {
            Ok(Ok(fetched)) => {
                if self.cache.source_up() {
                    tracing::info!("user data source reachable again");
                }
                return Ok(fetched);
            }
            Ok(Err(e)) => {
                let first = !unreachable(&e) || self.cache.source_down();
                (e.to_string(), first)
            }
            Err(_) => (
                format!("no answer within {} ms", self.timeout.as_millis()),
                self.cache.source_down(),
            ),
        };
        self.metrics.lookup_errors.inc();
        // During an outage every user's first miss fails the same way; one warning per outage.
        if first {
            tracing::warn!(error = %error, "user data lookup failed");
        } else {
            tracing::debug!(error = %error, "user data lookup failed");
        }
        Err(Unavailable)
    }

    async fn fetch_inner(&self, user_id: &str) -> Result<Fetched, Error> {
        let client = self.client().await?;
        let users = Self::users(client, &self.database, &self.collection);
        let mut document = self.find(&users, user_id).await?;
        if document.is_none() {
            if let Some(creation) = &self.creation {
                if self.create(&users, user_id, creation).await? {
                    self.metrics.users_created.inc();
                    tracing::info!(user = user_id, "created user data document");
                }
                // Read back rather than assume: another replica may have won the race, and the
                // stored document (with its `_id`) is what later events refer to.
                document = self.find(&users, user_id).await?;
            }
        }
        let permissions = match &self.roles {
            Some(roles) => Some(self.permissions(client, roles, document.as_ref()).await?),
            None => None,
        };
        let doc_id = document
            .as_ref()
            .and_then(|d| d.get("_id"))
            .map(canonical_id);
        let json = document.map(doc_to_json);
        Ok(Fetched {
            record: Arc::new(self.fields.record(json, permissions)),
            doc_id,
        })
    }

    /// Atlas' rules: a string-typed match wins over an ObjectId-typed one, and among equals the
    /// first inserted (lowest `_id`) wins.
    async fn find(
        &self,
        users: &Collection<Document>,
        user_id: &str,
    ) -> Result<Option<Document>, Error> {
        let field = self.fields.user_id.as_str();
        let oid = (user_id.len() == 24)
            .then(|| ObjectId::parse_str(user_id).ok())
            .flatten();
        let Some(oid) = oid else {
            return users
                .find_one(doc! { field: user_id })
                .sort(doc! { "_id": 1 })
                .await;
        };
        let docs: Vec<Document> = users
            .find(doc! { field: { "$in": [user_id, oid] } })
            .sort(doc! { "_id": 1 })
            .limit(MATCH_LIMIT)
            .await?
            .try_collect()
            .await?;
        let full = docs.len() as i64 >= MATCH_LIMIT;
        let is_string_match = |d: &Document| holds_string(bson_path(d, field), user_id);
        if let Some(i) = docs.iter().position(is_string_match) {
            return Ok(docs.into_iter().nth(i));
        }
        if full {
            if let Some(d) = users
                .find_one(doc! { field: user_id })
                .sort(doc! { "_id": 1 })
                .await?
            {
                return Ok(Some(d));
            }
        }
        Ok(docs.into_iter().next())
    }

    /// Insert-if-absent in one server-side step, so concurrent first requests (here or on other
    /// replicas) cannot both insert; true when this call inserted.
    async fn create(
        &self,
        users: &Collection<Document>,
        user_id: &str,
        creation: &Document,
    ) -> Result<bool, Error> {
        let field = self.fields.user_id.as_str();
        let mut fields = creation.clone();
        fields.insert(field, user_id);
        let result = users
            .update_one(doc! { field: user_id }, doc! { "$setOnInsert": fields })
            .upsert(true)
            .await;
        match result {
            Ok(r) => Ok(r.upserted_id.is_some()),
            // With a unique index a concurrent upsert can lose with E11000: the document exists.
            Err(e) if error_code(&e) == Some(11000) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The union of the permissions of the user's `roles`, in role order then permission order.
    async fn permissions(
        &self,
        client: &Client,
        roles: &RolesConfig,
        document: Option<&Document>,
    ) -> Result<Value, Error> {
        let wanted: Vec<Bson> = match document.and_then(|d| d.get("roles")) {
            Some(Bson::Array(items)) => items.clone(),
            _ => Vec::new(),
        };
        if wanted.is_empty() {
            return Ok(Value::Array(Vec::new()));
        }
        let id_field = roles.id_field.as_str();
        let found: Vec<Document> = client
            .database(&self.database)
            .collection::<Document>(&roles.collection)
            .find(doc! { id_field: { "$in": wanted.clone() } })
            .sort(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?;
        let mut out: Vec<Value> = Vec::new();
        for role in &wanted {
            let Some(def) = found.iter().find(|d| bson_path(d, id_field) == Some(role)) else {
                continue;
            };
            if let Some(Bson::Array(perms)) = bson_path(def, &roles.permissions_field) {
                for p in perms {
                    let p = bson_to_json(p.clone());
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
        }
        Ok(Value::Array(out))
    }

    /// Logs a hint when the lookup would scan the whole collection. Returns false when the server
    /// could not be asked (the caller retries).
    pub(crate) async fn check_indexes(&self) -> bool {
        let Ok(client) = self.client().await else {
            return false;
        };
        let mut targets = vec![(
            self.collection.as_str(),
            self.fields.user_id.as_str(),
            "user_id_field",
        )];
        if let Some(roles) = &self.roles {
            targets.push((
                roles.collection.as_str(),
                roles.id_field.as_str(),
                "roles.id_field",
            ));
        }
        for (collection, field, key) in targets {
            let coll = Self::users(client, &self.database, collection);
            let indexes: Result<Vec<_>, Error> = match coll.list_indexes().await {
                Ok(cursor) => cursor.try_collect().await,
                Err(e) => Err(e),
            };
            let indexes = match indexes {
                Ok(indexes) => indexes,
                // NamespaceNotFound: the collection does not exist yet.
                Err(e) if error_code(&e) == Some(26) => Vec::new(),
                Err(e) if unreachable(&e) => return false,
                Err(e) => {
                    tracing::warn!(collection, error = %e, "cannot list indexes");
                    continue;
                }
            };
            let leading = indexes
                .iter()
                .filter(|i| i.keys.keys().next().map(String::as_str) == Some(field));
            let unique = leading.clone().any(|i| {
                i.options.as_ref().and_then(|o| o.unique) == Some(true) && i.keys.len() == 1
            });
            if leading.count() == 0 {
                tracing::warn!(
                    database = %self.database, collection, field,
                    "no index starts with user_data.{key}: every lookup scans the collection; create one, e.g. db.{collection}.createIndex({{\"{field}\": 1}})"
                );
            } else if key == "user_id_field" && self.creation.is_some() && !unique {
                tracing::info!(
                    collection, field,
                    "on_user_creation is race-free across replicas only with a unique index on user_data.user_id_field"
                );
            }
        }
        true
    }
}

/// `$in` also matches array fields that contain the value, so arrays count too.
fn holds_string(value: Option<&Bson>, user_id: &str) -> bool {
    match value {
        Some(Bson::String(s)) => s == user_id,
        Some(Bson::Array(items)) => items.iter().any(|b| b.as_str() == Some(user_id)),
        _ => false,
    }
}

/// The user ids a (changed) document is found under, for invalidation.
pub(crate) fn user_ids_of(document: &Document, field: &str) -> Vec<String> {
    let one = |b: &Bson| match b {
        Bson::String(s) => vec![s.clone()],
        // Cache keys are the ids as presented; hex ids usually come in lower case.
        Bson::ObjectId(oid) => {
            let hex = oid.to_hex();
            vec![hex.to_ascii_uppercase(), hex]
        }
        _ => Vec::new(),
    };
    match bson_path(document, field) {
        Some(Bson::Array(items)) => items.iter().flat_map(one).collect(),
        Some(b) => one(b),
        None => Vec::new(),
    }
}

pub(crate) fn canonical_id(id: &Bson) -> String {
    id.clone().into_relaxed_extjson().to_string()
}

pub(crate) fn error_code(e: &Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        _ => None,
    }
}

/// The server could not be reached (as opposed to answering with an error).
pub(crate) fn unreachable(e: &Error) -> bool {
    matches!(
        e.kind.as_ref(),
        ErrorKind::Io(_)
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::DnsResolve { .. }
    )
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
