//! Against a real MongoDB-wire server (SecantusDB via shared/ci/mongo.sh, or `MONGODB_URI`).
//! Each test uses its own database and drops it.

mod file;
mod mongo;
mod outage;

use super::*;
use crate::config::UserDataConfig;
use crate::packed_json::PackedRef;
use mongodb::bson::{doc, oid::ObjectId, DateTime};
use mongodb::options::IndexOptions;
use mongodb::{Client, Database, IndexModel};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;
use std::time::Instant;

/// Beside the repository, or the shared copy when running in a worktree elsewhere.
fn mongo_sh() -> &'static str {
    let beside = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/ci/mongo.sh");
    [beside, "/work/shared/ci/mongo.sh"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("shared/ci/mongo.sh not found; set MONGODB_URI")
}

/// The integration tests' MongoDB harness, shared so that a server started for `cargo test` is
/// stopped by its watchdog when the test process ends, never left running.
#[allow(dead_code)]
#[path = "../../../tests/common/mongo.rs"]
mod harness;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn mongo_uri() -> &'static str {
    static URI: OnceLock<String> = OnceLock::new();
    URI.get_or_init(harness::MongoServer::shared_uri)
}

/// Logs show up with a failing test (or --nocapture); RUST_LOG refines them.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

struct TestDb {
    db: Database,
    name: String,
}

impl TestDb {
    async fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "cg_ud_{}_{:x}",
            N.fetch_add(1, Ordering::Relaxed),
            nanos & 0xffff_ffff
        );
        let client = Client::with_uri_str(mongo_uri()).await.unwrap();
        let db = client.database(&name);
        let me = Self { db, name };
        me.index("users", "user_id", false).await;
        me
    }

    async fn index(&self, collection: &str, field: &str, unique: bool) {
        self.db
            .collection::<Document>(collection)
            .create_index(
                IndexModel::builder()
                    .keys(doc! { field: 1 })
                    .options(IndexOptions::builder().unique(unique).build())
                    .build(),
            )
            .await
            .unwrap();
    }

    fn users(&self) -> mongodb::Collection<Document> {
        self.db.collection("users")
    }

    fn config(&self, extra: serde_json::Value) -> UserDataConfig {
        let mut base = json!({
            "source": "mongodb",
            "uri": mongo_uri(),
            "database": self.name,
            "collection": "users",
            "timeout_ms": 3000,
        });
        if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    async fn drop(self) {
        self.db.drop().await.unwrap();
    }
}

struct Running {
    data: Arc<UserData>,
    metrics: UserDataMetrics,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts the background task and waits for the change stream, so that every write the
    /// test makes afterwards arrives as an event.
    async fn start(cfg: &UserDataConfig) -> Self {
        init_logs();
        let metrics = UserDataMetrics::default();
        let data = Arc::new(UserData::new(cfg, metrics.clone()).unwrap());
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(data.clone().run(rx));
        let started = Instant::now();
        while !data.watching() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "change stream never opened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            data,
            metrics,
            stop,
            task,
        }
    }

    async fn doc(&self, user: &str) -> Option<serde_json::Value> {
        let record = self.data.lookup(user).await.unwrap();
        record.document.as_ref().map(PackedJson::to_value)
    }

    /// Polls until `check` holds; returns how long it took. Fails after 2 s.
    async fn eventually(&self, user: &str, check: impl Fn(&UserRecord) -> bool) -> Duration {
        let started = Instant::now();
        loop {
            let record = self.data.lookup(user).await.unwrap();
            if check(&record) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "not visible within 2 s; last record {record:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("run() returns at shutdown")
            .unwrap();
    }
}

fn field(record: &UserRecord, name: &str) -> Option<serde_json::Value> {
    record
        .document
        .as_ref()?
        .root()
        .get(name)
        .map(PackedRef::to_value)
}
