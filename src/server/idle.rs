//! The idle deadline of a connection: how long it may sit with no request in progress, from
//! accept and again after each response.
//!
//! hyper cannot enforce this by itself: its HTTP/1 header-read timeout only runs once hyper-util's
//! protocol sniffing has seen a first byte, and HTTP/2 has no idle timeout at all. So the
//! connection task counts the requests in progress and drops the connection once the count has
//! stayed at zero for the whole limit.
//!
//! A request only touches two atomics: the connection task is not woken per request (that cost
//! two wake-ups, a timer reset and a spurious poll of the connection per request under load).
//! Its timer fires once per limit instead and then reads when the last request ended.

use crate::error::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// Shared by a connection's task and its service: the requests in progress, and when the last
/// one ended.
#[derive(Clone)]
pub(super) struct Activity(Arc<State>);

struct State {
    in_flight: AtomicUsize,
    /// Nanoseconds from `opened` to the end of the latest request (0: none yet).
    last_end: AtomicU64,
    opened: Instant,
}

impl State {
    fn since_opened(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.opened).as_nanos()).unwrap_or(u64::MAX)
    }

    /// When the connection becomes idle for `limit`, or `None` while a request is in progress.
    fn idle_deadline(&self, limit: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let idle_from = self.opened + Duration::from_nanos(self.last_end.load(Ordering::Acquire));
        Some(idle_from + limit)
    }
}

impl Activity {
    pub(super) fn new() -> Self {
        Self(Arc::new(State {
            in_flight: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
            opened: Instant::now(),
        }))
    }

    /// Marks a request as in progress until the returned guard is dropped.
    pub(super) fn start(&self) -> InFlight {
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.0.clone())
    }

    /// Drives `connection` to completion, or drops it once no request has been in progress for
    /// `limit`. Returns None when the connection was dropped for being idle.
    pub(super) async fn run<C: Future>(self, connection: C, limit: Duration) -> Option<C::Output> {
        tokio::pin!(connection);
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                output = &mut connection => return Some(output),
                () = &mut deadline => {
                    let now = Instant::now();
                    match self.0.idle_deadline(limit) {
                        Some(at) if at <= now => return None,
                        Some(at) => deadline.as_mut().reset(at),
                        // Busy: the earliest the limit can run out is a whole limit from now.
                        None => deadline.as_mut().reset(now + limit),
                    }
                }
            }
        }
    }
}

/// One request in progress; it ends when the response body is dropped (sent, or abandoned), or
/// when the handler is dropped before answering.
pub(super) struct InFlight(Arc<State>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // The end is recorded before the count drops, so a timer that sees no request in
        // progress also sees when the last one ended.
        let ended = self.0.since_opened(Instant::now());
        self.0.last_end.fetch_max(ended, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
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
