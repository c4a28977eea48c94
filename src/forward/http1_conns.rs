//! Kept-alive HTTP/1 connections to the upstream, on hyper's low-level `client::conn::http1`.
//!
//! Each proxy worker has its own `Forwarder` and so its own set: the lock below is only ever
//! taken by one thread (uncontended, a few nanoseconds), and none of hyper-util's pool machinery
//! (pool-wide lock, checkout waiters, a channel per request) sits on the request path.
//!
//! The connection drivers, the return of a connection once its response body is read, and the
//! idle reaper are `tokio::spawn`ed on the runtime of the request that made them, which for the
//! proxy is the worker's current-thread runtime: they never hop threads, and they end with the
//! worker.
//!
//! Semantics are those of the legacy client it replaces: keep-alive reuse (most recently used
//! first), at most [`MAX_IDLE`] idle connections, each dropped after [`IDLE_TIMEOUT`], and a
//! request that hyper reports as not sent on a reused connection (the upstream closed it
//! meanwhile) is sent again once on a fresh connection instead of failing.

use super::connector::Connector;
use crate::error::Body;
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;
use tokio::time::Instant;
use tower::ServiceExt;

/// Enough idle connections for a busy sidecar to avoid reconnect storms, bounded so a burst
/// cannot pin thousands of sockets on the upstream afterwards.
pub(super) const MAX_IDLE: usize = 256;
/// Below the usual 100-120 s idle timeouts of upstream servers, so we drop a connection before
/// the upstream does and rarely send on a half-closed socket.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why an HTTP/1 upstream request failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum Http1Error {
    #[error("cannot connect")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("HTTP/1 handshake failed")]
    Handshake(#[source] hyper::Error),
    #[error("request failed")]
    Send(#[source] hyper::Error),
}

pub(super) struct Http1Connections {
    /// Plain TCP (connect timeout, TCP_NODELAY) plus rustls for `https://`.
    connector: Connector,
    /// `scheme://authority` of the upstream: what the connector dials and takes the TLS server
    /// name from.
    target: Uri,
    idle: Arc<Mutex<Idle>>,
}

#[derive(Default)]
struct Idle {
    /// Oldest first; taken from the end, so the warmest connection is reused.
    senders: Vec<(SendRequest<Body>, Instant)>,
    /// Whether a reaper task is running for this set.
    reaping: bool,
}

impl Http1Connections {
    pub(super) fn new(connector: Connector, target: Uri) -> Self {
        Self {
            connector,
            target,
            idle: Default::default(),
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) on an idle connection or a new one.
    pub(super) async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, Http1Error> {
        let (mut sender, reused) = match checkout(&self.idle) {
            Some(sender) => (sender, true),
            None => (self.connect().await?, false),
        };
        let req = match sender.try_send_request(req).await {
            Ok(response) => return Ok(self.returned(sender, response)),
            Err(mut error) => match error.take_message() {
                // Not a byte was written, so sending again cannot repeat a side effect.
                Some(req) if reused => {
                    tracing::debug!(error = %error.error(), "idle upstream connection was closed; retrying on a new one");
                    req
                }
                _ => return Err(Http1Error::Send(error.into_error())),
            },
        };
        let mut sender = self.connect().await?;
        match sender.try_send_request(req).await {
            Ok(response) => Ok(self.returned(sender, response)),
            Err(error) => Err(Http1Error::Send(error.into_error())),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, Http1Error> {
        let io = self
            .connector
            .clone()
            .oneshot(self.target.clone())
            .await
            .map_err(Http1Error::Connect)?;
        let (sender, connection) = http1::handshake(io).await.map_err(Http1Error::Handshake)?;
        tokio::spawn(async move {
            // Upgrades keep the socket alive past the HTTP exchange for the WebSocket tunnel.
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Puts the connection back once it can take the next request, i.e. once the response body
    /// has been read, and hands the response on.
    fn returned(
        &self,
        mut sender: SendRequest<Body>,
        response: Response<Incoming>,
    ) -> Response<Incoming> {
        // After a 101 the socket belongs to the tunnel.
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return response;
        }
        if sender.is_ready() {
            checkin(&self.idle, sender);
        } else {
            let idle = Arc::downgrade(&self.idle);
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    if let Some(idle) = idle.upgrade() {
                        checkin(&idle, sender);
                    }
                }
            });
        }
        response
    }
}

fn lock(idle: &Mutex<Idle>) -> MutexGuard<'_, Idle> {
    // The list stays consistent whatever panicked while holding it: entries are whole.
    idle.lock().unwrap_or_else(PoisonError::into_inner)
}

fn checkout(idle: &Mutex<Idle>) -> Option<SendRequest<Body>> {
    let mut idle = lock(idle);
    while let Some((sender, since)) = idle.senders.pop() {
        // `is_ready` is false once the upstream closed the connection.
        if since.elapsed() < IDLE_TIMEOUT && sender.is_ready() {
            return Some(sender);
        }
    }
    None
}

fn checkin(shared: &Arc<Mutex<Idle>>, sender: SendRequest<Body>) {
    let mut idle = lock(shared);
    if idle.senders.len() >= MAX_IDLE {
        // Dropping the sender closes the connection.
        return;
    }
    idle.senders.push((sender, Instant::now()));
    if !idle.reaping {
        idle.reaping = true;
        tokio::spawn(reap(Arc::downgrade(shared)));
    }
}

/// Closes connections idle for [`IDLE_TIMEOUT`]; ends when none is left or the set is gone.
async fn reap(idle: Weak<Mutex<Idle>>) {
    loop {
        let next = {
            let Some(idle) = idle.upgrade() else { return };
            let mut idle = lock(&idle);
            idle.senders
                .retain(|(sender, since)| since.elapsed() < IDLE_TIMEOUT && !sender.is_closed());
            match idle.senders.first() {
                Some((_, oldest)) => *oldest + IDLE_TIMEOUT,
                None => {
                    idle.reaping = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(next).await;
    }
}

#[cfg(test)]
mod tests;
