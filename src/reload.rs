//! Hot reload: `SIGHUP`, `POST /reload` on the admin port, and (with `reload.watch: true`) a
//! change of the config file's contents re-read the config. A valid new config is compiled beside
//! the running one, reusing the warm parts whose sections did not change (see
//! [`Compiled::build`]), and swapped in whole: requests in flight finish on the config they
//! started with, new ones use the new one, and the listeners stay open. An invalid config is
//! refused with the same file/key/reason message as `claimgate check`, and the old one keeps
//! serving. Settings that shape the listeners (`listen`, `admin.listen`, `mode`,
//! `forward_auth.grpc_listen`, `tls`, `limits`, `shutdown`) need a restart: a reload that changes
//! them is refused, naming the key.

use crate::app::{Compiled, Current, Shared};
use crate::config::{self, Config, ConfigError};
use crate::drain::Tunnels;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

/// Where the running config came from, and the command-line values that override it.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
}

pub struct Reloader {
    current: Current,
    shared: Shared,
    source: OnceLock<Source>,
    /// One reload at a time; also remembers the last file contents tried (for `watch`).
    last_seen: tokio::sync::Mutex<Option<Vec<u8>>>,
    /// Background tasks of the components in force (key refresh, user data and revocation
    /// streams), each with its own stop switch, keyed by the component's address.
    background: Mutex<Vec<(usize, watch::Sender<bool>)>>,
}

/// Why a reload was refused.
#[derive(Debug)]
pub enum ReloadError {
    /// The process was not started from a config file (`--dev`).
    NoConfigFile,
    Invalid(ConfigError),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::NoConfigFile => write!(f, "not started with --config: nothing to reload"),
            ReloadError::Invalid(e) => write!(f, "{e}"),
        }
    }
}

impl Reloader {
    pub fn new(current: Current, shared: Shared) -> Self {
        let reloader = Self {
            current,
            shared,
            source: OnceLock::new(),
            last_seen: tokio::sync::Mutex::new(None),
            background: Mutex::new(Vec::new()),
        };
        reloader
            .shared
            .metrics
            .config
            .loaded(&reloader.current.load().config);
        reloader
    }

    /// Names the file later reloads read (and the command-line overrides to apply to it).
    pub fn set_source(&self, source: Source) {
        if let Ok(bytes) = std::fs::read(&source.path) {
            self.shared.metrics.config.set_hash(&bytes);
            if let Ok(mut seen) = self.last_seen.try_lock() {
                *seen = Some(bytes);
            }
        }
        let _ = self.source.set(source);
    }

    pub fn tunnels(&self) -> Tunnels {
        self.shared.tunnels.clone()
    }

    /// Re-reads the config file and swaps in what it compiles to; returns the new config hash.
    pub async fn reload(&self) -> Result<String, ReloadError> {
        let source = self.source.get().ok_or(ReloadError::NoConfigFile)?;
        let mut last_seen = self.last_seen.lock().await;
        let bytes = std::fs::read(&source.path).map_err(|e| {
            ReloadError::Invalid(ConfigError {
                file: source.path.clone(),
                key: String::new(),
                reason: format!("cannot read: {e}"),
            })
        })?;
        *last_seen = Some(bytes.clone());
        let result = self.swap_in(source, &bytes);
        let metrics = &self.shared.metrics.config;
        match &result {
            Ok(hash) => {
                metrics
                    .reloads
                    .get_or_create(&ResultLabel { result: "ok" })
                    .inc();
                tracing::info!(config = %source.path.display(), hash = %hash, "config reloaded");
            }
            Err(error) => {
                metrics
                    .reloads
                    .get_or_create(&ResultLabel { result: "error" })
                    .inc();
                tracing::error!(%error, "config reload refused; the running config keeps serving");
            }
        }
        result
    }

    fn swap_in(&self, source: &Source, bytes: &[u8]) -> Result<String, ReloadError> {
        let invalid = |e: config::KeyError| ReloadError::Invalid(e.in_file(&source.path));
        let text = std::str::from_utf8(bytes)
            .map_err(|_| invalid(config::KeyError::new("", "is not UTF-8")))?;
        let mut new = config::parse_str(text, &|name| std::env::var(name).ok()).map_err(invalid)?;
        new.listen = source.listen.unwrap_or(new.listen);
        new.admin.listen = source.admin_listen.unwrap_or(new.admin.listen);
        let old = self.current.load_full();
        needs_no_restart(&old.config, &new).map_err(invalid)?;
        let compiled = Compiled::build(new, &self.shared, Some(&old)).map_err(invalid)?;
        self.current.store(Arc::new(compiled));
        self.sync_background();
        let metrics = &self.shared.metrics.config;
        metrics.loaded(&self.current.load().config);
        Ok(metrics.set_hash(bytes))
    }

    /// Starts the background task of every component in force that has none, and stops those
    /// of components a reload dropped.
    pub fn sync_background(&self) {
        let compiled = self.current.load_full();
        let decider = &compiled.decider;
        let mut wanted: Vec<(usize, Starter)> = Vec::new();
        for store in &compiled.key_stores {
            let store = store.clone();
            wanted.push((
                address(&store),
                Box::new(move |rx| drop(tokio::spawn(store.run_refresh(rx)))),
            ));
        }
        if let Some(user_data) = &decider.user_data {
            let user_data = user_data.clone();
            wanted.push((
                address(&user_data),
                Box::new(move |rx| drop(tokio::spawn(user_data.run(rx)))),
            ));
        }
        if let Some(revocation) = &decider.revocation {
            let revocation = revocation.clone();
            wanted.push((
                address(&revocation),
                Box::new(move |rx| drop(tokio::spawn(revocation.run(rx)))),
            ));
        }
        let Ok(mut running) = self.background.lock() else {
            return;
        };
        running.retain(|(id, stop)| {
            let keep = wanted.iter().any(|(w, _)| w == id);
            if !keep {
                let _ = stop.send(true);
            }
            keep
        });
        for (id, start) in wanted {
            if !running.iter().any(|(r, _)| *r == id) {
                let (tx, rx) = watch::channel(false);
                start(rx);
                running.push((id, tx));
            }
        }
    }

    /// Stops every background task (shutdown).
    pub fn stop_background(&self) {
        if let Ok(mut running) = self.background.lock() {
            for (_, stop) in running.drain(..) {
                let _ = stop.send(true);
            }
        }
    }

    /// With `reload.watch: true`, reloads when the file's contents differ from the last ones
    /// read. Contents, not modification times: Kubernetes swaps a ConfigMap's symlink.
    pub async fn watch_file(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let Some(source) = self.source.get() else {
                continue;
            };
            if !self.current.load().config.reload.watch {
                continue;
            }
            let changed = match std::fs::read(&source.path) {
                Ok(bytes) => self.last_seen.lock().await.as_deref() != Some(&bytes[..]),
                Err(_) => false,
            };
            if changed {
                let _ = self.reload().await;
            }
        }
    }
}

/// Starts a component's background task with the given stop switch.
type Starter = Box<dyn FnOnce(watch::Receiver<bool>) + Send>;

fn address<T>(component: &Arc<T>) -> usize {
    Arc::as_ptr(component) as usize
}

/// The settings the listeners were started with cannot change without a restart.
fn needs_no_restart(old: &Config, new: &Config) -> Result<(), config::KeyError> {
    let same =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    let grpc = |c: &Config| c.forward_auth.as_ref().and_then(|f| f.grpc_listen);
    let fixed: [(&str, bool); 7] = [
        ("listen", old.listen == new.listen),
        ("admin.listen", old.admin.listen == new.admin.listen),
        ("mode", old.mode == new.mode),
        ("forward_auth.grpc_listen", grpc(old) == grpc(new)),
        ("tls", same(&old.tls, &new.tls)),
        ("limits", same(&old.limits, &new.limits)),
        ("shutdown", same(&old.shutdown, &new.shutdown)),
    ];
    match fixed.iter().find(|(_, unchanged)| !unchanged) {
        Some((key, _)) => Err(config::KeyError::new(
            *key,
            "changed, which needs a restart (a reload keeps the listeners open); the running config keeps serving",
        )),
        None => Ok(()),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HashLabel {
    hash: String,
}

/// `claimgate_config_reloads_total{result}`, `claimgate_config_info{hash}` and the load time.
#[derive(Default)]
pub struct ConfigMetrics {
    reloads: Family<ResultLabel, Counter>,
    info: Family<HashLabel, Gauge>,
    load_time: Gauge,
    hash: Mutex<String>,
}

impl ConfigMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "config_reloads",
            "Config reloads by result (ok, error)",
            metrics.reloads.clone(),
        );
        registry.register(
            "config_info",
            "The config in force, by the SHA-256 (first 16 hex digits) of its file",
            metrics.info.clone(),
        );
        registry.register(
            "config_load_timestamp_seconds",
            "When the config in force was loaded (Unix time)",
            metrics.load_time.clone(),
        );
        for result in ["ok", "error"] {
            let _ = metrics.reloads.get_or_create(&ResultLabel { result });
        }
        metrics
    }

    fn loaded(&self, _config: &Config) {
        self.load_time.set(crate::verify::now_seconds() as i64);
    }

    /// Records the hash of the file in force; returns it.
    fn set_hash(&self, bytes: &[u8]) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
        let hash: String = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.info.clear();
        self.info
            .get_or_create(&HashLabel { hash: hash.clone() })
            .set(1);
        if let Ok(mut current) = self.hash.lock() {
            current.clone_from(&hash);
        }
        hash
    }

    /// The hash of the config file in force (empty before one was read).
    pub fn hash(&self) -> String {
        self.hash.lock().map(|h| h.clone()).unwrap_or_default()
    }

    pub fn load_time(&self) -> i64 {
        self.load_time.get()
    }
}
