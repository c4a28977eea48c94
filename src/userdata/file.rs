//! The file source: a JSON or YAML array of user documents held in memory and reloaded when the
//! file changes. Users made by `on_user_creation` live in memory only; the file is never written.

use super::convert::{json_path, Fields};
use super::{Unavailable, UserRecord};
use crate::metrics::UserDataMetrics;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

const POLL: Duration = Duration::from_millis(500);

pub(crate) struct FileSource {
    path: PathBuf,
    fields: Fields,
    creation: Option<Map<String, Value>>,
    snapshot: RwLock<Option<Snapshot>>,
    created: Mutex<HashMap<String, Arc<UserRecord>>>,
    /// Serializes loads so a lookup's first load and the poller do not both parse the file.
    loading: Mutex<()>,
    last_error: Mutex<Option<String>>,
    none: Arc<UserRecord>,
    metrics: UserDataMetrics,
}

struct Snapshot {
    users: HashMap<String, Arc<UserRecord>>,
    stamp: Stamp,
}

/// What tells a changed file apart cheaply. The content hash catches an edit within the mtime
/// granularity that keeps the size.
#[derive(Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    hash: u64,
}

impl FileSource {
    pub(crate) fn new(
        path: PathBuf,
        fields: Fields,
        creation: Option<Map<String, Value>>,
        metrics: UserDataMetrics,
    ) -> Self {
        let none = Arc::new(fields.record(None, None));
        Self {
            path,
            fields,
            creation,
            snapshot: RwLock::new(None),
            created: Mutex::new(HashMap::new()),
            loading: Mutex::new(()),
            last_error: Mutex::new(None),
            none,
            metrics,
        }
    }

    pub(crate) fn lookup(&self, user_id: &str) -> Result<Arc<UserRecord>, Unavailable> {
        if self.read().is_none() {
            self.reload();
        }
        let found = match self.read().as_ref() {
            None => {
                self.metrics.lookup_errors.inc();
                return Err(Unavailable);
            }
            Some(snapshot) => snapshot.users.get(user_id).cloned(),
        };
        self.metrics.cache_hits.inc();
        if let Some(record) = found {
            return Ok(record);
        }
        let Some(creation) = &self.creation else {
            return Ok(self.none.clone());
        };
        let mut created = lock(&self.created);
        let record = created.entry(user_id.to_owned()).or_insert_with(|| {
            let mut document = creation.clone();
            document.insert(
                self.fields.user_id.clone(),
                Value::String(user_id.to_owned()),
            );
            self.metrics.users_created.inc();
            tracing::info!(
                user = user_id,
                "created user data (in memory; the file is not written)"
            );
            Arc::new(self.fields.record(Some(Value::Object(document)), None))
        });
        Ok(record.clone())
    }

    pub(crate) fn len(&self) -> u64 {
        let from_file = self.read().as_ref().map_or(0, |s| s.users.len());
        let created = lock(&self.created).len();
        (from_file + created) as u64
    }

    pub(crate) async fn watch(&self, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.reload();
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() || shutdown.has_changed().is_err() {
                return;
            }
        }
    }

    /// Loads the file if it changed since the last load. A file that cannot be read or parsed
    /// leaves the previous snapshot in place.
    fn reload(&self) {
        let _loading = lock(&self.loading);
        let previous = self.read().as_ref().map(|s| s.stamp.clone());
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.warn_once(previous.is_some(), &format!("cannot read: {e}"));
                return;
            }
        };
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut hasher);
        let stamp = Stamp {
            modified,
            len: bytes.len() as u64,
            hash: hasher.finish(),
        };
        if previous.as_ref() == Some(&stamp) {
            return;
        }
        match parse(&self.path, &bytes, &self.fields) {
            Ok(users) => {
                *lock(&self.last_error) = None;
                tracing::info!(path = %self.path.display(), users = users.len(), "loaded user data file");
                let count = users.len();
                *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) =
                    Some(Snapshot { users, stamp });
                self.metrics
                    .cache_entries
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
            Err(reason) => {
                tracing::error!(path = %self.path.display(), reason, "cannot load user data file; keeping the previous contents");
                // Not retried until the file changes again.
                if let Some(snapshot) = self
                    .snapshot
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_mut()
                {
                    snapshot.stamp = stamp;
                }
            }
        }
    }

    fn warn_once(&self, had_snapshot: bool, reason: &str) {
        // Each poll would repeat it; one line per distinct problem is enough.
        let mut last = lock(&self.last_error);
        if last.as_deref() != Some(reason) {
            tracing::error!(path = %self.path.display(), reason, kept_previous = had_snapshot, "user data file unavailable");
            *last = Some(reason.to_owned());
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<Snapshot>> {
        self.snapshot.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// First document per id wins, as the first inserted one does in MongoDB.
fn parse(
    path: &Path,
    bytes: &[u8],
    fields: &Fields,
) -> Result<HashMap<String, Arc<UserRecord>>, String> {
    let is_json = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let documents: Vec<Value> = if is_json {
        serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?
    } else {
        serde_yaml_ng::from_slice(bytes).map_err(|e| format!("invalid YAML: {e}"))?
    };
    let mut users = HashMap::new();
    for (i, document) in documents.into_iter().enumerate() {
        if !document.is_object() {
            return Err(format!("entry {i} is not an object"));
        }
        let Some(Value::String(id)) = json_path(&document, &fields.user_id) else {
            continue;
        };
        if users.contains_key(id) {
            continue;
        }
        let id = id.clone();
        users.insert(id, Arc::new(fields.record(Some(document), None)));
    }
    Ok(users)
}

// Each critical section is a plain map/option update that a panic cannot leave half done, so a
// poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
