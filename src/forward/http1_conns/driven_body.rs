//! The response body of an upstream connection that has no task of its own: reading the body
//! drives the connection, and a body read to its end puts the connection back for the next
//! request.

use super::{checkin, Conn, Idle};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError, Weak};
use std::task::{Context, Poll};

pub(super) struct DrivenBody {
    inner: Incoming,
    /// In a `Mutex` only so that the body is `Sync`, as a boxed body must be: it is reached
    /// through `get_mut` and never locked.
    conn: Mutex<Option<Conn>>,
    idle: Weak<Mutex<Idle>>,
    /// Read to its end: the connection can carry the next request.
    finished: bool,
}

impl DrivenBody {
    pub(super) fn new(inner: Incoming, conn: Conn, idle: Weak<Mutex<Idle>>) -> Self {
        Self {
            inner,
            conn: Mutex::new(Some(conn)),
            idle,
            finished: false,
        }
    }

    fn conn(&mut self) -> &mut Option<Conn> {
        self.conn.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    fn note(&mut self, frame: &Option<Result<Frame<Bytes>, hyper::Error>>) {
        match frame {
            None => self.finished = true,
            Some(Ok(_)) => self.finished = self.inner.is_end_stream(),
            // The exchange broke off: the connection cannot be trusted with another request.
            Some(Err(_)) => *self.conn() = None,
        }
    }
}

impl Body for DrivenBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        // The body first: asking for a frame is what lets the connection read the next one, so
        // driving the connection before that would only wake this task to come back.
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.note(&frame);
            return Poll::Ready(frame);
        }
        if let Some(conn) = this.conn() {
            conn.drive(cx);
        }
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        this.note(&frame);
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for DrivenBody {
    fn drop(&mut self) {
        // A body that ends before its first read (no content, HEAD, 204, 304) is never polled.
        let finished = self.finished || self.inner.is_end_stream();
        let conn = self.conn().take();
        if let (true, Some(conn), Some(idle)) = (finished, conn, self.idle.upgrade()) {
            // Checked at checkout: one poll there lets the connection finish the exchange.
            checkin(&idle, conn);
        }
        // Otherwise the connection closes with the body: a half-read response would arrive
        // in front of the next one.
    }
}
