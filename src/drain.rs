//! The zero-drop drain, in three steps after the first SIGTERM/SIGINT:
//!
//! 1. **Delay** (`shutdown.delay_seconds`): `/readyz` answers 503 at once so endpoints
//!    controllers and load balancers stop sending, while the listeners keep accepting; every
//!    HTTP/1 response carries `Connection: close`, so keep-alive clients reconnect (to another
//!    pod) after their current request instead of racing a close later.
//! 2. **Stop point**: the listeners close (new connections are refused), idle connections are
//!    closed (HTTP/2 gets GOAWAY), requests in flight go on.
//! 3. **Grace** (`shutdown.grace_seconds`, from the stop point): requests, streaming bodies and
//!    WebSocket tunnels still open are given until then; the process then exits 0.
//!
//! A second signal exits at once.

use http::{header, HeaderValue, Response, Version};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Whether the drain has started; shared by the admin port and every listener.
#[derive(Clone, Default, Debug)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn start(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// During the drain, an HTTP/1 response ends its connection: hyper closes it once the
    /// response is written, and the client knows not to send on it again.
    pub fn close_after<B>(&self, request_version: Version, response: &mut Response<B>) {
        if self.is_on() && request_version <= Version::HTTP_11 {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
}

/// Counts open upgraded connections (WebSocket tunnels), which hyper no longer tracks once the
/// 101 is sent, so that the drain can wait for them too.
#[derive(Clone, Debug)]
pub struct Tunnels(Arc<watch::Sender<usize>>);

impl Default for Tunnels {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

/// Held by a tunnel's task for as long as it is open.
pub struct TunnelGuard(Arc<watch::Sender<usize>>);

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open = open.saturating_sub(1));
    }
}

impl Tunnels {
    pub fn open(&self) -> TunnelGuard {
        self.0.send_modify(|open| *open += 1);
        TunnelGuard(self.0.clone())
    }

    /// Waits until no tunnel is open, or `within` has passed; returns how many are left.
    pub async fn closed(&self, within: Duration) -> usize {
        let mut rx = self.0.subscribe();
        let _ = tokio::time::timeout(within, rx.wait_for(|open| *open == 0)).await;
        let left = *rx.borrow();
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http1_responses_are_closed_and_only_while_draining() {
        let draining = Draining::default();
        let mut response = Response::new(());
        draining.close_after(Version::HTTP_11, &mut response);
        assert!(response.headers().get(header::CONNECTION).is_none());
        draining.start();
        draining.close_after(Version::HTTP_2, &mut response);
        assert!(response.headers().get(header::CONNECTION).is_none());
        draining.close_after(Version::HTTP_11, &mut response);
        assert_eq!(response.headers()[header::CONNECTION], "close");
    }

    #[tokio::test]
    async fn tunnels_are_waited_for_until_the_last_closes() {
        let tunnels = Tunnels::default();
        let guard = tunnels.open();
        assert_eq!(tunnels.closed(Duration::from_millis(10)).await, 1);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(guard);
        });
        assert_eq!(tunnels.closed(Duration::from_secs(5)).await, 0);
    }
}
