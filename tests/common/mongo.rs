//! MongoDB for the user-data tests: the real wire-protocol server from `shared/ci/mongo.sh`
//! (SecantusDB), one random database per test, and dedicated servers for outage tests.
//!
//! Lifetime of the servers this harness starts. A test binary is one process whose tests run on
//! many threads, and Rust never drops statics, so a `Drop` guard cannot stop a shared server. Each
//! server started here therefore gets a *watchdog*: a `sh` child that ignores INT/HUP/TERM/QUIT
//! and blocks reading a pipe whose only write end this process holds. Whenever this process
//! ends — normal exit, failed test, panic, Ctrl-C, even SIGKILL — the kernel closes that write
//! end, the read sees EOF, and the watchdog runs `mongo.sh stop` with the server's own pidfile.
//! The watchdog is spawned before `mongo.sh start`, so an interrupted start is cleaned up too
//! (stop waits for start's lock). std's pipes are close-on-exec, so no other child (proxies,
//! `mongo.sh` itself) inherits the write end and keeps the watchdog waiting.
//!
//! When `MONGODB_URI` is set (`.ci/run` exports it), the shared server is that one and nothing is
//! started or stopped here.

use mongodb::bson::{doc, Document};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, IndexModel};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `$CARGO_MANIFEST_DIR/../shared/ci/mongo.sh`; in a git worktree that path does not exist, so
/// `$CLAIMGATE_SHARED/ci/mongo.sh`, then `/work/shared/ci/mongo.sh`.
pub fn mongo_sh() -> PathBuf {
    let mut candidates = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/ci/mongo.sh")];
    if let Some(shared) = std::env::var_os("CLAIMGATE_SHARED") {
        candidates.push(Path::new(&shared).join("ci/mongo.sh"));
    }
    candidates.push(PathBuf::from("/work/shared/ci/mongo.sh"));
    candidates
        .into_iter()
        .find(|p| p.exists())
        .expect("shared/ci/mongo.sh not found (set MONGODB_URI or CLAIMGATE_SHARED)")
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{}_{nanos:x}_{n}", std::process::id())
}

/// A `mongo.sh`-managed server with its own pidfile, stopped by its watchdog when this process
/// ends (see the module docs) and, for dedicated servers, also on drop.
pub struct MongoServer {
    pub port: u16,
    pidfile: PathBuf,
    /// Dropping this closes the pipe: the watchdog stops the server.
    watchdog: Mutex<Option<ChildStdin>>,
}

impl MongoServer {
    /// The URI of the server every test of this process shares: `MONGODB_URI`, or one started on
    /// first use.
    pub fn shared_uri() -> String {
        static SHARED: OnceLock<String> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                if let Ok(uri) = std::env::var("MONGODB_URI") {
                    if !uri.is_empty() {
                        return uri;
                    }
                }
                // Never dropped: the watchdog stops it when the process ends.
                let server = Box::leak(Box::new(Self::launch(None)));
                server.uri()
            })
            .clone()
    }

    /// A server of its own on a fixed free port, so it can be stopped and started again at the
    /// same address. Blocking (about 1.5 s); call it from `spawn_blocking` or before the runtime
    /// is busy.
    pub fn dedicated() -> Self {
        Self::launch(Some(super::free_port()))
    }

    fn launch(port: Option<u16>) -> Self {
        let pidfile =
            std::env::temp_dir().join(format!("claimgate-test-mongo-{}.pid", unique_suffix()));
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg("trap '' INT HUP TERM QUIT; cat >/dev/null; \"$0\" stop; rm -f \"$1.lock\"")
            .arg(mongo_sh())
            .arg(&pidfile)
            .env("CLAIMGATE_MONGO_PIDFILE", &pidfile)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the mongo watchdog")
            .stdin
            .take();
        let port = start_at(&pidfile, port);
        Self {
            port,
            pidfile,
            watchdog: Mutex::new(watchdog),
        }
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// `mongo.sh stop` (a clean shutdown takes 3-4 s; the data is gone afterwards).
    pub async fn stop(&self) {
        let pidfile = self.pidfile.clone();
        let out = tokio::task::spawn_blocking(move || run(&pidfile, &["stop"]))
            .await
            .unwrap();
        assert!(out.status.success(), "mongo.sh stop: {out:?}");
    }

    /// `mongo.sh start PORT` again after [`stop`](Self::stop), on the same port.
    pub async fn restart(&self) {
        let (pidfile, port) = (self.pidfile.clone(), self.port);
        let got = tokio::task::spawn_blocking(move || start_at(&pidfile, Some(port)))
            .await
            .unwrap();
        assert_eq!(got, port);
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        if let Some(pipe) = self.watchdog.lock().unwrap().take() {
            let _ = run(&self.pidfile, &["stop"]);
            drop(pipe);
        }
    }
}

fn run(pidfile: &Path, args: &[&str]) -> std::process::Output {
    Command::new(mongo_sh())
        .args(args)
        .env("CLAIMGATE_MONGO_PIDFILE", pidfile)
        .stdin(Stdio::null())
        .output()
        .expect("run mongo.sh")
}

/// `mongo.sh start [PORT]`; returns the port from its `MONGODB_URI=` line.
fn start_at(pidfile: &Path, port: Option<u16>) -> u16 {
    let port_arg = port.map(|p| p.to_string());
    let mut args = vec!["start"];
    args.extend(port_arg.as_deref());
    let out = run(pidfile, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mongo.sh start failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let uri = stdout
        .trim()
        .strip_prefix("MONGODB_URI=")
        .unwrap_or_else(|| panic!("unexpected mongo.sh start output: {stdout}"));
    let port = uri.trim_start_matches("mongodb://127.0.0.1:");
    port.split('/').next().unwrap().parse().unwrap()
}

/// A database of its own with a random name on `uri`, dropped when this value is dropped (even
/// when the test panics).
pub struct TestDb {
    pub uri: String,
    pub name: String,
    pub client: Client,
}

impl TestDb {
    /// A fresh database on the shared server.
    pub async fn shared() -> Self {
        let uri = tokio::task::spawn_blocking(MongoServer::shared_uri)
            .await
            .unwrap();
        Self::on(&uri).await
    }

    pub async fn on(uri: &str) -> Self {
        Self::named(uri, &format!("cg_test_{}", unique_suffix())).await
    }

    /// A client for an existing database name (e.g. after a dedicated server restarted).
    pub async fn named(uri: &str, name: &str) -> Self {
        let mut options = ClientOptions::parse(uri).await.unwrap();
        options.server_selection_timeout = Some(Duration::from_secs(20));
        Self {
            uri: uri.to_owned(),
            name: name.to_owned(),
            client: Client::with_options(options).unwrap(),
        }
    }

    pub fn coll(&self, name: &str) -> Collection<Document> {
        self.client.database(&self.name).collection(name)
    }

    pub fn users(&self) -> Collection<Document> {
        self.coll("users")
    }

    /// An ascending (non-unique) index on `field`: the server scans the collection otherwise.
    pub async fn index(&self, collection: &str, field: &str) {
        self.coll(collection)
            .create_index(IndexModel::builder().keys(doc! { field: 1 }).build())
            .await
            .unwrap();
    }

    /// Inserts one document into `users`, in call order (each gets a larger `_id`).
    pub async fn insert_user(&self, document: Document) {
        self.users().insert_one(document).await.unwrap();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (uri, name) = (self.uri.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot block on a future: use a thread with
        // its own runtime and client.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut options = ClientOptions::parse(&uri).await?;
                options.server_selection_timeout = Some(Duration::from_secs(3));
                let client = Client::with_options(options)?;
                client.database(&name).drop().await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}
