//! Kept-alive HTTP/1 connections to the upstream, on hyper's low-level `client::conn::http1`,
//! driven by the request that uses them.
//!
//! Each proxy worker has its own `Forwarder` and so its own set: the lock below is only ever
//! taken by one thread (uncontended, a few nanoseconds), and none of hyper-util's pool machinery
//! (pool-wide lock, checkout waiters, a channel per request) sits on the request path.
//!
//! A connection has no task of its own. The request's task polls it while waiting for the
//! response head, and the response body ([`DrivenBody`]) polls it while the server reads the body
//! out, so the exchange never wakes another task. Once the body has been read to its end the
//! connection goes back to the idle list, where nobody polls it: the next checkout polls it once,
//! which reads an EOF the upstream sent meanwhile, and takes it only if it can carry a request.
//! An upgrade (WebSocket) runs on a fresh connection, which gets a task of its own once the
//! upstream answers 101, since the socket then belongs to the tunnel.
//!
//! Semantics are those of the legacy client it replaces: keep-alive reuse (most recently used
//! first), at most [`MAX_IDLE`] idle connections, each dropped after [`IDLE_TIMEOUT`], and a
//! request that hyper reports as not sent on a reused connection (the upstream closed it
//! meanwhile) is sent again once on a fresh connection instead of failing.

mod driven_body;

use super::connector::Connector;
use crate::error::Body;
use driven_body::DrivenBody;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::TrySendError;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
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

/// The connection future, plain or (for an upgrade request) able to hand its socket over.
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One upstream connection: the handle requests go in by, and the connection future that does
/// the reading and writing whenever its user polls it.
struct Conn {
    sender: SendRequest<Body>,
    /// `None` once the connection has ended.
    driver: Option<Driver>,
}

impl Conn {
    /// Lets the connection read and write what it can; false once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(driver) = &mut self.driver else {
            return false;
        };
        match driver.as_mut().poll(cx) {
            Poll::Pending => true,
            Poll::Ready(result) => {
                if let Err(error) = result {
                    tracing::debug!(%error, "upstream connection ended with an error");
                }
                // Dropping it also fails a request still waiting on it, instead of leaving the
                // request to wait for an answer that cannot come.
                self.driver = None;
                false
            }
        }
    }

    /// Whether the connection can take a request now, after one poll to learn of an EOF or
    /// error that arrived while nobody was polling it. That poll wakes nobody later: the request
    /// about to be sent would otherwise wake its own task as it goes in, for an extra pass over
    /// the whole server connection (the exchange's own poll registers the real waker).
    fn usable(&mut self) -> bool {
        self.drive(&mut Context::from_waker(Waker::noop())) && self.sender.is_ready()
    }
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
    conns: Vec<(Conn, Instant)>,
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

    /// Sends `req` (origin-form URI, `Host` set) on an idle connection or a new one; an upgrade
    /// request always on a new one. The response's body drives the connection.
    pub(super) async fn send(
        &self,
        req: Request<Body>,
        upgrade: bool,
    ) -> Result<Response<Body>, Http1Error> {
        let reused = match upgrade {
            true => None,
            false => checkout(&self.idle),
        };
        let (mut conn, reused) = match reused {
            Some(conn) => (conn, true),
            None => (self.connect(upgrade).await?, false),
        };
        let req = match exchange(&mut conn, req).await {
            Ok(response) => return Ok(self.hand_on(conn, response)),
            Err(mut error) => match error.take_message() {
                // Not a byte was written, so sending again cannot repeat a side effect.
                Some(req) if reused => {
                    tracing::debug!(error = %error.error(), "idle upstream connection was closed; retrying on a new one");
                    req
                }
                _ => return Err(Http1Error::Send(error.into_error())),
            },
        };
        let mut conn = self.connect(upgrade).await?;
        match exchange(&mut conn, req).await {
            Ok(response) => Ok(self.hand_on(conn, response)),
            Err(error) => Err(Http1Error::Send(error.into_error())),
        }
    }

    async fn connect(&self, upgrade: bool) -> Result<Conn, Http1Error> {
        let io = self
            .connector
            .clone()
            .oneshot(self.target.clone())
            .await
            .map_err(Http1Error::Connect)?;
        let (sender, connection) = http1::handshake(io).await.map_err(Http1Error::Handshake)?;
        let driver: Driver = match upgrade {
            // Only an upgradeable connection hands its socket to the tunnel after a 101.
            true => Box::pin(connection.with_upgrades()),
            false => Box::pin(connection),
        };
        Ok(Conn {
            sender,
            driver: Some(driver),
        })
    }

    /// The response, with a body that drives the connection and returns it once read to its end.
    fn hand_on(&self, mut conn: Conn, response: Response<Incoming>) -> Response<Body> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The socket now belongs to the tunnel: its connection finishes the handover on a
            // task of its own.
            if let Some(driver) = conn.driver.take() {
                tokio::spawn(async move {
                    if let Err(error) = driver.await {
                        tracing::debug!(%error, "upgraded upstream connection ended with an error");
                    }
                });
            }
            return response.map(BodyExt::boxed);
        }
        let idle = Arc::downgrade(&self.idle);
        response.map(|body| DrivenBody::new(body, conn, idle).boxed())
    }
}

/// Sends `req` on `conn`, driving the connection until the response head is in.
async fn exchange(
    conn: &mut Conn,
    req: Request<Body>,
) -> Result<Response<Incoming>, TrySendError<Request<Body>>> {
    let mut response = pin!(conn.sender.try_send_request(req));
    poll_fn(|cx| {
        conn.drive(cx);
        // The answer can only arrive in the poll just above (or with the connection's end,
        // also there), so the response needs no waker of its own: one would wake this task
        // again, for nothing, every time the connection hands an answer over.
        response
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
    })
    .await
}

fn lock(idle: &Mutex<Idle>) -> MutexGuard<'_, Idle> {
    // The list stays consistent whatever panicked while holding it: entries are whole.
    idle.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The warmest idle connection that can take a request; the ones found closed are dropped.
fn checkout(idle: &Mutex<Idle>) -> Option<Conn> {
    let mut idle = lock(idle);
    while let Some((mut conn, since)) = idle.conns.pop() {
        if since.elapsed() < IDLE_TIMEOUT && conn.usable() {
            return Some(conn);
        }
    }
    None
}

fn checkin(shared: &Arc<Mutex<Idle>>, conn: Conn) {
    let mut idle = lock(shared);
    if idle.conns.len() >= MAX_IDLE {
        // Dropping the connection closes it.
        return;
    }
    if !idle.reaping {
        // A body dropped while its runtime shuts down has nowhere to run the reaper.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        idle.reaping = true;
        runtime.spawn(reap(Arc::downgrade(shared)));
    }
    idle.conns.push((conn, Instant::now()));
}

/// Closes connections idle for [`IDLE_TIMEOUT`]; ends when none is left or the set is gone.
async fn reap(idle: Weak<Mutex<Idle>>) {
    loop {
        let next = {
            let Some(idle) = idle.upgrade() else { return };
            let mut idle = lock(&idle);
            // Nobody polls an idle connection, so one the upstream closed is only seen here by
            // its age (or at checkout).
            idle.conns
                .retain(|(_, since)| since.elapsed() < IDLE_TIMEOUT);
            match idle.conns.first() {
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
