//! The idle deadline of a connection: how long it may sit with no request in progress, from
//! accept and again after each response.
//!
//! hyper cannot enforce this by itself: its HTTP/1 header-read timeout only runs once hyper-util's
//! protocol sniffing has seen a first byte, and HTTP/2 has no idle timeout at all. So the
//! connection task counts the requests in progress and drops the connection once the count has
//! stayed at zero for the whole limit.

use crate::error::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Shared by a connection's task and its service: the number of requests in progress.
#[derive(Clone)]
pub(super) struct Activity(watch::Sender<usize>);

impl Activity {
    pub(super) fn new() -> Self {
        Self(watch::Sender::new(0))
    }

    /// Marks a request as in progress until the returned guard is dropped.
    pub(super) fn start(&self) -> InFlight {
        self.0.send_modify(|n| *n += 1);
        InFlight(self.0.clone())
    }

    /// Drives `connection` to completion, or drops it once no request has been in progress for
    /// `limit`. Returns None when the connection was dropped for being idle.
    pub(super) async fn run<C: Future>(self, connection: C, limit: Duration) -> Option<C::Output> {
        let mut busy = self.0.subscribe();
        tokio::pin!(connection);
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        loop {
            let idle = *busy.borrow_and_update() == 0;
            tokio::select! {
                output = &mut connection => return Some(output),
                // `self` keeps a sender alive, so this only fires on real changes.
                _ = busy.changed() => {
                    if *busy.borrow() == 0 {
                        deadline.as_mut().reset(Instant::now() + limit);
                    }
                }
                () = &mut deadline, if idle => return None,
            }
        }
    }
}

/// One request in progress; it ends when the response body is dropped (sent, or abandoned), or
/// when the handler is dropped before answering.
pub(super) struct InFlight(watch::Sender<usize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A response body that holds its request's [`InFlight`] until hyper is done with it, so a slow
/// download is not mistaken for an idle connection.
pub(super) struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl Tracked {
    pub(super) fn wrap(inner: Body, in_flight: InFlight) -> Body {
        use http_body_util::BodyExt;
        Self {
            inner,
            _in_flight: in_flight,
        }
        .boxed()
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    // Delegated so hyper still sends Content-Length rather than chunked encoding.
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_connection_is_dropped_and_busy_one_is_not() {
        let limit = Duration::from_millis(100);
        let activity = Activity::new();
        let started = Instant::now();
        assert!(activity
            .clone()
            .run(std::future::pending::<()>(), limit)
            .await
            .is_none());
        assert!(started.elapsed() >= limit);

        // A request in progress for longer than the limit keeps the connection; the limit counts
        // again from the moment it ends.
        let guard = activity.start();
        let task = tokio::spawn(activity.run(std::future::pending::<()>(), limit));
        tokio::time::sleep(limit * 3).await;
        assert!(!task.is_finished());
        let ended = Instant::now();
        drop(guard);
        assert!(task.await.unwrap().is_none());
        assert!(ended.elapsed() >= limit);
    }

    #[tokio::test]
    async fn finished_connection_returns_its_output() {
        let activity = Activity::new();
        let output = activity.run(async { 7 }, Duration::from_secs(60)).await;
        assert_eq!(output, Some(7));
    }
}
