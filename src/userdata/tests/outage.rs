//! An unreachable or restarting MongoDB.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_source_is_unavailable() {
    // A port that was just free: nothing listens there.
    let port = free_port();
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

/// A server of this test's own (own pidfile, fixed port), so stopping it disturbs nobody.
struct PrivateServer {
    pidfile: String,
    port: u16,
    args: &'static str,
}

impl PrivateServer {
    fn start(port: u16, args: &'static str) -> (Self, String) {
        let server = Self {
            pidfile: format!("/tmp/claimgate-ud-{port}-{}.pid", std::process::id()),
            port,
            args,
        };
        let uri = server.run("start");
        (server, uri)
    }

    fn run(&self, command: &str) -> String {
        let mut cmd = std::process::Command::new("bash");
        cmd.args([mongo_sh(), command])
            .env("CLAIMGATE_MONGO_PIDFILE", &self.pidfile)
            .env("CLAIMGATE_MONGO_ARGS", self.args);
        if command == "start" {
            cmd.arg(self.port.to_string());
        }
        let out = cmd.output().expect("run mongo.sh");
        assert!(
            out.status.success(),
            "mongo.sh {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        line.strip_prefix("MONGODB_URI=")
            .unwrap_or_default()
            .to_owned()
    }

    async fn stop(&self) {
        let this = Self {
            pidfile: self.pidfile.clone(),
            port: self.port,
            args: self.args,
        };
        tokio::task::spawn_blocking(move || {
            this.run("stop");
            std::mem::forget(this);
        })
        .await
        .unwrap();
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.run("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_cached_through_a_restart_and_recovers() {
    let port = free_port();
    let (server, uri) = tokio::task::spawn_blocking(move || PrivateServer::start(port, ""))
        .await
        .unwrap();
    let client = Client::with_uri_str(&uri).await.unwrap();
    let users = client.database("restart").collection::<Document>("users");
    users
        .insert_one(doc! { "user_id": "alice", "plan": "old" })
        .await
        .unwrap();
    let cfg = |mode: &str| -> UserDataConfig {
        serde_json::from_value(json!({
            "source": "mongodb", "uri": uri, "database": "restart", "collection": "users",
            "timeout_ms": 500, "on_unavailable": mode, "cache": { "ttl_seconds": 1 },
        }))
        .unwrap()
    };
    let cached = Running::start(&cfg("serve_cached")).await;
    let deny = Running::start(&cfg("deny")).await;
    assert_eq!(cached.doc("alice").await.unwrap()["plan"], "old");
    assert_eq!(deny.doc("alice").await.unwrap()["plan"], "old");

    server.stop().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = Instant::now();
    let stale = cached
        .data
        .lookup("alice")
        .await
        .expect("known user served from cache");
    assert_eq!(field(&stale, "plan"), Some(json!("old")));
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(cached.metrics.stale_serves.get(), 1);
    assert_eq!(cached.data.lookup("bob").await, Err(Unavailable));
    assert_eq!(deny.data.lookup("alice").await, Err(Unavailable));

    // The restarted server starts empty (mongo.sh gives each start a fresh data directory).
    let _restarted = tokio::task::spawn_blocking(move || PrivateServer::start(port, ""))
        .await
        .unwrap();
    users
        .insert_one(doc! { "user_id": "alice", "plan": "new" })
        .await
        .unwrap();
    let started = Instant::now();
    for r in [&cached, &deny] {
        loop {
            let found = r
                .data
                .lookup("alice")
                .await
                .ok()
                .and_then(|rec| field(&rec, "plan"));
            if found == Some(json!("new")) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "no recovery: {found:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let started = Instant::now();
    while !cached.data.watching() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "change stream not reopened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = cached.metrics.change_events.get();
    users
        .update_one(
            doc! { "user_id": "alice" },
            doc! { "$set": { "plan": "newer" } },
        )
        .await
        .unwrap();
    cached
        .eventually("alice", |rec| field(rec, "plan") == Some(json!("newer")))
        .await;
    assert!(
        cached.metrics.change_events.get() > events,
        "the reopened stream delivers events"
    );
    cached.stop().await;
    deny.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_server_falls_back_to_the_ttl() {
    init_logs();
    let port = free_port();
    let (_server, uri) =
        tokio::task::spawn_blocking(move || PrivateServer::start(port, "--standalone"))
            .await
            .unwrap();
    let client = Client::with_uri_str(&uri).await.unwrap();
    let users = client
        .database("standalone")
        .collection::<Document>("users");
    users
        .insert_one(doc! { "user_id": "alice", "plan": "old" })
        .await
        .unwrap();
    let cfg: UserDataConfig = serde_json::from_value(json!({
        "source": "mongodb", "uri": uri, "database": "standalone", "collection": "users",
        "cache": { "ttl_seconds": 1 },
    }))
    .unwrap();
    let data = Arc::new(UserData::new(&cfg, UserDataMetrics::default()).unwrap());
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(data.clone().run(rx));
    assert_eq!(
        data.lookup("alice")
            .await
            .unwrap()
            .document
            .as_ref()
            .unwrap()
            .to_value()["plan"],
        "old"
    );
    users
        .update_one(
            doc! { "user_id": "alice" },
            doc! { "$set": { "plan": "new" } },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(!data.watching());
    assert!(!task.is_finished(), "run() keeps going until shutdown");
    assert_eq!(
        data.lookup("alice")
            .await
            .unwrap()
            .document
            .as_ref()
            .unwrap()
            .to_value()["plan"],
        "new"
    );
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
