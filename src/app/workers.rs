//! The proxy listener's worker threads, each serving the configured front door.

use super::Current;
use crate::decision::Decider;
use crate::doors::forward_auth::ForwardAuth;
use crate::drain::{Draining, Tunnels};
use crate::forward::Forwarder;
use crate::server::{reuse_port, Connections, ServerLimits};
use crate::tls::Tls;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The front door a proxy worker serves on the `listen` port, per `mode`.
#[derive(Clone)]
pub(super) enum Door {
    Proxy(Arc<Forwarder>),
    ForwardAuth(Arc<ForwardAuth>),
}

impl Door {
    async fn handle(
        &self,
        decider: &Decider,
        req: http::Request<hyper::body::Incoming>,
        peer: std::net::SocketAddr,
    ) -> http::Response<crate::error::Body> {
        match self {
            Door::Proxy(forwarder) => {
                crate::doors::proxy::handle(decider, req, peer, forwarder).await
            }
            Door::ForwardAuth(door) => door.handle(decider, req, peer).await,
        }
    }
}

/// Thread per core: each worker is a single-threaded runtime with its own listening socket on
/// the proxy port (`SO_REUSEPORT`, see `server::reuse_port`) and its own upstream connections.
/// A request then never hops threads, which under load costs less than tokio's work stealing
/// (measured in benches/load.sh).
pub(super) fn spawn_proxy_workers(
    current: Current,
    listener: TcpListener,
    (limits, connections): (ServerLimits, Arc<Connections>),
    tls: Option<Arc<Tls>>,
    drain: (Draining, Tunnels),
    stop_rx: &watch::Receiver<bool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let listener = match listener.into_std() {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "cannot hand the proxy listener to the workers");
            return Vec::new();
        }
    };
    let workers = current.load().doors.len();
    let mut handles = Vec::with_capacity(workers);
    for index in 0..workers {
        let listener = match listener.try_clone() {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, worker = index, "cannot share the proxy listener");
                continue;
            }
        };
        let (current, stop, tls) = (current.clone(), stop_rx.clone(), tls.clone());
        let limits = (limits, connections.clone());
        let drain = drain.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("claimgate-proxy-{index}"))
            .spawn(move || run_worker(listener, limits, tls, (current, index), drain, stop));
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                tracing::error!(error = %e, worker = index, "cannot start a proxy worker thread")
            }
        }
    }
    handles
}

fn run_worker(
    listener: std::net::TcpListener,
    (limits, connections): (ServerLimits, Arc<Connections>),
    tls: Option<Arc<Tls>>,
    (current, index): (Current, usize),
    (draining, tunnels): (Draining, Tunnels),
    stop: watch::Receiver<bool>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a proxy worker runtime");
            return;
        }
    };
    runtime.block_on(async move {
        // Worker 0 keeps the socket bound at startup; the others add their own on its port.
        let own = (index > 0)
            .then(|| reuse_port::sibling(&listener))
            .flatten();
        let listener = match own.map_or_else(|| TcpListener::from_std(listener), Ok) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "cannot register the proxy listener");
                return;
            }
        };
        let stopped_at = Arc::new(OnceLock::new());
        let mark = stopped_at.clone();
        let shutdown = async move {
            stopped(stop).await;
            let _ = mark.set(Instant::now());
        };
        crate::server::serve_tls(
            listener,
            limits,
            tls,
            connections,
            move |req, peer| {
                // The config in force when the request arrived serves all of it, even if a
                // reload swaps another in meanwhile.
                let compiled = current.load_full();
                let draining = draining.clone();
                async move {
                    let version = req.version();
                    let door = &compiled.doors[index.min(compiled.doors.len() - 1)];
                    let mut response = door.handle(&compiled.decider, req, peer).await;
                    draining.close_after(version, &mut response);
                    response
                }
            },
            shutdown,
        )
        .await;
        // Tunnels run on this thread's runtime, which ends with this function: they get what is
        // left of the grace period.
        let spent = stopped_at
            .get()
            .map_or(Default::default(), Instant::elapsed);
        let open = tunnels
            .closed(limits.drain_grace.saturating_sub(spent))
            .await;
        if open > 0 {
            tracing::warn!(
                open,
                "upgraded connections still open at the end of the grace period; closing"
            );
        }
    });
}

pub(super) async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}
