//! Against a real MongoDB-wire server (SecantusDB via shared/ci/mongo.sh, or `MONGODB_URI`).
//! Each test uses its own database and drops it.

use super::*;
use crate::config::UserDataConfig;
use mongodb::bson::{doc, oid::ObjectId, DateTime};
use mongodb::options::IndexOptions;
use mongodb::{Client, Database, IndexModel};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;
use std::time::Instant;

fn mongo_uri() -> &'static str {
    static URI: OnceLock<String> = OnceLock::new();
    URI.get_or_init(|| {
        if let Ok(uri) = std::env::var("MONGODB_URI") {
            return uri;
        }
        let beside = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/ci/mongo.sh");
        let script = [beside, "/work/shared/ci/mongo.sh"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("shared/ci/mongo.sh not found; set MONGODB_URI");
        let out = std::process::Command::new("bash")
            .args([script, "start"])
            .output()
            .expect("run mongo.sh");
        assert!(
            out.status.success(),
            "mongo.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        line.strip_prefix("MONGODB_URI=")
            .unwrap_or_else(|| panic!("unexpected mongo.sh output {line:?}"))
            .to_owned()
    })
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
        self.data.lookup(user).await.unwrap().document.clone()
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

fn field<'a>(record: &'a UserRecord, name: &str) -> Option<&'a serde_json::Value> {
    record.document.as_ref()?.get(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_id_is_found_and_cached() {
    let t = TestDb::new().await;
    t.users()
        .insert_one(doc! { "user_id": "alice", "name": "Alice", "at": DateTime::from_millis(0) })
        .await
        .unwrap();
    let r = Running::start(&t.config(json!({}))).await;
    let alice = r.doc("alice").await.unwrap();
    assert_eq!(alice["name"], "Alice");
    assert_eq!(alice["at"], "1970-01-01T00:00:00Z");
    assert!(alice["_id"].is_string(), "ObjectId becomes hex: {alice}");
    assert_eq!(r.doc("nobody").await, None);
    r.doc("alice").await;
    r.doc("nobody").await;
    assert_eq!(r.metrics.cache_misses.get(), 2);
    assert_eq!(
        r.metrics.cache_hits.get(),
        2,
        "negative entries are cached too"
    );
    assert_eq!(r.data.cache_entries(), 2);
    r.stop().await;
    t.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_follow_atlas_rules() {
    let t = TestDb::new().await;
    let hex = "64b7f0c2a1b2c3d4e5f60718";
    let oid = ObjectId::parse_str(hex).unwrap();
    let users = t.users();
    users
        .insert_one(doc! { "user_id": oid, "n": 1 })
        .await
        .unwrap();
    users
        .insert_one(doc! { "user_id": hex, "n": 2 })
        .await
        .unwrap();
    users
        .insert_one(doc! { "user_id": hex, "n": 3 })
        .await
        .unwrap();
    users
        .insert_one(doc! { "user_id": "bob", "n": 4 })
        .await
        .unwrap();
    users
        .insert_one(doc! { "user_id": "bob", "n": 5 })
        .await
        .unwrap();
    let other = ObjectId::new();
    users
        .insert_one(doc! { "user_id": other, "n": 6 })
        .await
        .unwrap();
    let r = Running::start(&t.config(json!({}))).await;
    assert_eq!(r.doc(hex).await.unwrap()["n"], 2, "string beats ObjectId");
    assert_eq!(r.doc("bob").await.unwrap()["n"], 4, "first inserted wins");
    let d = r.doc(&other.to_hex()).await.unwrap();
    assert_eq!(d["n"], 6, "ObjectId-typed id matches");
    assert_eq!(d["user_id"], other.to_hex());
    r.stop().await;
    t.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_the_cache_through_the_change_stream() {
    let t = TestDb::new().await;
    let users = t.users();
    users
        .insert_one(doc! { "user_id": "u1", "plan": "free" })
        .await
        .unwrap();
    let r = Running::start(&t.config(json!({ "cache": { "ttl_seconds": 3600 } }))).await;
    assert_eq!(r.doc("u1").await.unwrap()["plan"], "free");

    users
        .update_one(doc! { "user_id": "u1" }, doc! { "$set": { "plan": "pro" } })
        .await
        .unwrap();
    let took = r
        .eventually("u1", |rec| field(rec, "plan") == Some(&json!("pro")))
        .await;
    assert!(took < Duration::from_secs(1), "update took {took:?}");

    users
        .replace_one(
            doc! { "user_id": "u1" },
            doc! { "user_id": "u1", "plan": "team" },
        )
        .await
        .unwrap();
    r.eventually("u1", |rec| field(rec, "plan") == Some(&json!("team")))
        .await;

    users.delete_one(doc! { "user_id": "u1" }).await.unwrap();
    let took = r.eventually("u1", |rec| rec.document.is_none()).await;
    assert!(took < Duration::from_secs(1), "delete took {took:?}");

    // The negative entry just cached must give way to an insert.
    users
        .insert_one(doc! { "user_id": "u1", "plan": "back" })
        .await
        .unwrap();
    r.eventually("u1", |rec| field(rec, "plan") == Some(&json!("back")))
        .await;
    assert!(r.metrics.change_events.get() >= 4);
    r.stop().await;
    t.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_is_created_exactly_once() {
    let t = TestDb::new().await;
    t.users().drop_indexes().await.unwrap();
    t.index("users", "user_id", true).await;
    let cfg = t.config(json!({ "on_user_creation": { "document": { "roles": ["reader"] } } }));
    // Several instances, as several replicas of the sidecar would be, each with many requests.
    let mut instances = Vec::new();
    for _ in 0..5 {
        instances.push(Running::start(&cfg).await);
    }
    let mut lookups = Vec::new();
    for i in 0..50 {
        let data = instances[i % instances.len()].data.clone();
        lookups.push(tokio::spawn(async move { data.lookup("newbie").await }));
    }
    for lookup in lookups {
        let record = lookup.await.unwrap().unwrap();
        let doc = record
            .document
            .as_ref()
            .expect("the record includes the new document");
        assert_eq!(doc["roles"], json!(["reader"]));
        assert_eq!(doc["user_id"], "newbie");
    }
    let count = t
        .users()
        .count_documents(doc! { "user_id": "newbie" })
        .await
        .unwrap();
    assert_eq!(count, 1);
    let created: u64 = instances
        .iter()
        .map(|r| r.metrics.users_created.get())
        .sum();
    assert_eq!(created, 1);
    for r in instances {
        r.stop().await;
    }
    t.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_and_expired_flags() {
    let t = TestDb::new().await;
    let past = DateTime::from_millis(1_000_000);
    let future = DateTime::from_millis(4_102_444_800_000);
    let users = t.users();
    users
        .insert_one(doc! { "user_id": "ok", "blocked": false, "expirationDate": future })
        .await
        .unwrap();
    users
        .insert_one(doc! { "user_id": "blk", "blocked": true })
        .await
        .unwrap();
    users
        .insert_one(doc! { "user_id": "old", "expirationDate": past })
        .await
        .unwrap();
    users
        .insert_one(doc! { "user_id": "old2", "expirationDate": "2001-02-03T04:05:06Z" })
        .await
        .unwrap();
    users
        .insert_one(doc! { "user_id": "old3", "expirationDate": 1_000_i64 })
        .await
        .unwrap();
    let cfg = t.config(json!({
        "blocked_field": "blocked", "expiration_field": "expirationDate", "required": true
    }));
    let r = Running::start(&cfg).await;
    let check = |user: &'static str| {
        let r = &r;
        async move {
            let record = r.data.lookup(user).await.unwrap();
            r.data.admit(&record).map_err(|e| e.code())
        }
    };
    assert_eq!(check("ok").await, Ok(()));
    assert_eq!(check("blk").await, Err("user_blocked"));
    assert_eq!(check("old").await, Err("user_expired"));
    assert_eq!(check("old2").await, Err("user_expired"));
    assert_eq!(check("old3").await, Err("user_expired"));
    assert_eq!(check("ghost").await, Err("no_user_data"));
    r.stop().await;
    t.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_resolve_to_permissions() {
    let t = TestDb::new().await;
    t.index("roles", "roleId", true).await;
    let roles = t.db.collection::<Document>("roles");
    roles
        .insert_one(doc! { "roleId": "reader", "permissions": ["read"] })
        .await
        .unwrap();
    roles
        .insert_one(doc! { "roleId": "writer", "permissions": ["read", "write"] })
        .await
        .unwrap();
    t.users()
        .insert_one(doc! { "user_id": "w", "roles": ["writer", "reader", "unknown"] })
        .await
        .unwrap();
    let r = Running::start(&t.config(json!({ "roles": { "collection": "roles" } }))).await;
    let w = r.data.lookup("w").await.unwrap();
    assert_eq!(w.permissions, Some(json!(["read", "write"])));
    let nobody = r.data.lookup("nobody").await.unwrap();
    assert_eq!(nobody.permissions, Some(json!([])));

    roles
        .update_one(
            doc! { "roleId": "reader" },
            doc! { "$push": { "permissions": "list" } },
        )
        .await
        .unwrap();
    r.eventually("w", |rec| {
        rec.permissions == Some(json!(["read", "write", "list"]))
    })
    .await;
    r.stop().await;
    t.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_source_is_unavailable() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for mode in ["serve_cached", "deny"] {
        let cfg: UserDataConfig = serde_json::from_value(json!({
            "source": "mongodb", "uri": format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
            "database": "d", "collection": "users", "timeout_ms": 300, "on_unavailable": mode,
        }))
        .unwrap();
        let metrics = UserDataMetrics::default();
        let data = UserData::new(&cfg, metrics.clone()).unwrap();
        let started = Instant::now();
        assert_eq!(data.lookup("alice").await, Err(Unavailable));
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        // Right after a failure, requests do not wait for the same answer again.
        let started = Instant::now();
        assert_eq!(data.lookup("bob").await, Err(Unavailable));
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(metrics.lookup_errors.get(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_source_follows_live_edits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.json");
    std::fs::write(
        &path,
        r#"[{"user_id": "a", "v": 1}, {"user_id": "a", "v": 9}]"#,
    )
    .unwrap();
    let cfg: UserDataConfig = serde_json::from_value(json!({
        "source": "file", "path": path, "blocked_field": "blocked",
        "on_user_creation": { "document": { "roles": ["reader"] } },
    }))
    .unwrap();
    let metrics = UserDataMetrics::default();
    let data = Arc::new(UserData::new(&cfg, metrics.clone()).unwrap());
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(data.clone().run(rx));
    let record = data.lookup("a").await.unwrap();
    assert_eq!(field(&record, "v"), Some(&json!(1)), "first entry wins");

    std::fs::write(&path, r#"[{"user_id": "a", "v": 2, "blocked": true}]"#).unwrap();
    let started = Instant::now();
    loop {
        let record = data.lookup("a").await.unwrap();
        if field(&record, "v") == Some(&json!(2)) {
            assert!(record.blocked);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "edit not seen within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // A broken edit keeps the last good contents.
    std::fs::write(&path, "[{").unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(data.lookup("a").await.unwrap().blocked);

    let created = data.lookup("new").await.unwrap();
    assert_eq!(field(&created, "roles"), Some(&json!(["reader"])));
    data.lookup("new").await.unwrap();
    assert_eq!(metrics.users_created.get(), 1);
    stop.send(true).unwrap();
    task.await.unwrap();

    let yaml = dir.path().join("users.yaml");
    std::fs::write(
        &yaml,
        "- user_id: y\n  expirationDate: 2001-01-01T00:00:00Z\n",
    )
    .unwrap();
    let cfg: UserDataConfig = serde_json::from_value(json!({
        "source": "file", "path": yaml, "expiration_field": "expirationDate",
    }))
    .unwrap();
    let data = UserData::new(&cfg, UserDataMetrics::default()).unwrap();
    assert!(data.lookup("y").await.unwrap().expired());
    assert_eq!(data.lookup("z").await.unwrap().document, None);
}

#[test]
fn config_errors_name_the_key() {
    let err = |v: serde_json::Value| {
        let cfg: UserDataConfig = serde_json::from_value(v).unwrap();
        UserData::new(&cfg, UserDataMetrics::default())
            .err()
            .map(|e| e.key)
    };
    let m = |extra: serde_json::Value| {
        let mut v =
            json!({"source": "mongodb", "uri": "mongodb://h", "database": "d", "collection": "c"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    assert_eq!(err(m(json!({}))), None, "needs no network");
    assert_eq!(
        err(m(json!({"uri": null}))).as_deref(),
        Some("user_data.uri")
    );
    assert_eq!(
        err(m(json!({"uri": "http://x"}))).as_deref(),
        Some("user_data.uri")
    );
    assert_eq!(
        err(m(json!({"database": ""}))).as_deref(),
        Some("user_data.database")
    );
    assert_eq!(
        err(m(json!({"collection": null}))).as_deref(),
        Some("user_data.collection")
    );
    assert_eq!(
        err(m(json!({"cache": {"max_entries": 0}}))).as_deref(),
        Some("user_data.cache.max_entries")
    );
    assert_eq!(
        err(m(json!({"on_user_creation": {"document": {"_id": 1}}}))).as_deref(),
        Some("user_data.on_user_creation.document")
    );
    assert_eq!(
        err(json!({"source": "file"})).as_deref(),
        Some("user_data.path")
    );
    assert_eq!(
        err(json!({"source": "file", "path": "u.json", "roles": {"collection": "r"}})).as_deref(),
        Some("user_data.roles")
    );
}
