//! The client's request body on its way to the upstream, remembering whether reading it failed.
//!
//! The upstream client reports a failing request body as a failed upstream request. Without this
//! flag a client sending broken chunked framing would be answered 502 and counted and logged as
//! an upstream outage, so any client could raise upstream alerts at will.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

pub(super) struct ClientBody {
    inner: Incoming,
    failed: Arc<AtomicBool>,
}

impl ClientBody {
    /// The body, and a flag that is set once reading the body has failed.
    pub(super) fn new(inner: Incoming) -> (Self, Arc<AtomicBool>) {
        let failed = Arc::new(AtomicBool::new(false));
        let body = Self {
            inner,
            failed: failed.clone(),
        };
        (body, failed)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if matches!(frame, Some(Err(_))) {
            self.failed.store(true, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    // Delegated so the upstream request keeps the client's Content-Length.
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
