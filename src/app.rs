//! Building the running proxy from a parsed config, and running its listeners until shutdown.
//! What a config compiles to lives in [`Compiled`], which reloads swap.

use crate::admin::Admin;
use crate::config::{Config, KeyError};
use crate::decision::Decider;
use crate::dev::DevIssuer;
use crate::doors::ext_authz;
use crate::drain::{Draining, Tunnels};
use crate::jwks::KeyStore;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::server::ServerLimits;
use crate::tls::Tls;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use workers::{spawn_proxy_workers, stopped};

pub use compiled::{Compiled, Shared};

mod compiled;
mod workers;

pub struct App {
    /// The config as started; listeners and limits come from here (a reload cannot change them).
    pub config: Config,
    /// The compiled config as first built (benches and tests read it before `run`).
    pub decider: Arc<Decider>,
    pub key_stores: Vec<Arc<KeyStore>>,
    /// The compiled config requests use now; reloads swap it.
    pub current: Current,
    pub reloader: Arc<Reloader>,
    pub admin: Arc<Admin>,
    /// The proxy listener's TLS, when configured.
    pub tls: Option<Arc<Tls>>,
    /// Set at the first SIGTERM/SIGINT: `/readyz` turns 503 and HTTP/1 connections close.
    pub draining: Draining,
}

/// The compiled config in force, loaded once per request.
pub type Current = Arc<ArcSwap<Compiled>>;

impl App {
    /// Compiles the config into the request path. Does no network I/O, so `claimgate check` can
    /// run it too.
    pub fn build(config: Config, dev: Option<DevIssuer>) -> Result<Self, KeyError> {
        let metrics = Arc::new(Metrics::new());
        let tls = match &config.tls {
            Some(cfg) => Some(Arc::new(Tls::new(
                cfg,
                metrics.tls_handshake_errors.clone(),
            )?)),
            None => None,
        };
        let shared = Shared {
            metrics: metrics.clone(),
            tunnels: Tunnels::default(),
            behind_tls: tls.is_some(),
        };
        let compiled = Compiled::build(config.clone(), &shared, None)?;
        let (decider, key_stores) = (compiled.decider.clone(), compiled.key_stores.clone());
        let current: Current = Arc::new(ArcSwap::from_pointee(compiled));
        let reloader = Arc::new(Reloader::new(current.clone(), shared));
        let draining = Draining::default();
        let admin = Arc::new(Admin {
            current: current.clone(),
            reloader: reloader.clone(),
            metrics,
            dev,
            draining: draining.clone(),
        });
        Ok(Self {
            config,
            decider,
            key_stores,
            current,
            reloader,
            admin,
            tls,
            draining,
        })
    }

    /// Where the ext_authz gRPC listener is to be bound, if there is one.
    pub fn grpc_listen(&self) -> Option<std::net::SocketAddr> {
        self.current
            .load()
            .ext_authz
            .as_ref()
            .map(|(_, addr)| *addr)
    }

    /// Serves the proxy and admin listeners (and the ext_authz gRPC listener, bound at
    /// [`App::grpc_listen`]) and keeps keys fresh until `shutdown` resolves.
    pub async fn run(
        self,
        proxy_listener: TcpListener,
        admin_listener: TcpListener,
        grpc_listener: Option<TcpListener>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (stop_tx, stop_rx) = watch::channel(false);
        // Key refresh, user data and revocation streams: started (and stopped) per component,
        // as reloads add and drop them.
        self.reloader.sync_background();
        tokio::spawn(self.reloader.clone().watch_file(stop_rx.clone()));
        if let Some(tls) = &self.tls {
            tokio::spawn(tls.clone().watch_files(stop_rx.clone()));
        }
        let shutdown_cfg = self.config.shutdown;
        let limits = ServerLimits {
            drain_grace: Duration::from_secs(shutdown_cfg.grace_seconds),
            ..ServerLimits::from(&self.config.limits)
        };
        let admin = self.admin.clone();
        let admin_task = tokio::spawn(crate::server::serve(
            admin_listener,
            limits,
            move |req, _peer| {
                let admin = admin.clone();
                async move { admin.handle(req).await }
            },
            stopped(stop_rx.clone()),
        ));
        let grpc_task = match grpc_listener {
            Some(listener) => Some(tokio::spawn(ext_authz::serve(
                self.current.clone(),
                listener,
                limits,
                self.tls.clone(),
                stopped(stop_rx.clone()),
            ))),
            None => None,
        };
        let metrics = &self.decider.metrics;
        let connections = Arc::new(crate::server::Connections::new(
            &self.config.limits,
            metrics.connections_open.clone(),
            metrics.connections_refused.clone(),
        ));
        let workers = spawn_proxy_workers(
            self.current.clone(),
            proxy_listener,
            (limits, connections),
            self.tls.clone(),
            (self.draining.clone(), self.reloader.tunnels()),
            &stop_rx,
        );
        shutdown.await;
        self.draining.start();
        tracing::info!(
            delay_seconds = shutdown_cfg.delay_seconds,
            grace_seconds = shutdown_cfg.grace_seconds,
            "draining: /readyz answers 503; still accepting until the delay ends"
        );
        tokio::time::sleep(Duration::from_secs(shutdown_cfg.delay_seconds)).await;
        tracing::info!("drain stop point: listeners closed; requests in flight may finish");
        let _ = stop_tx.send(true);
        let _ = admin_task.await;
        if let Some(task) = grpc_task {
            let _ = task.await;
        }
        for worker in workers {
            let _ = tokio::task::spawn_blocking(move || worker.join()).await;
        }
        self.reloader.stop_background();
    }
}
