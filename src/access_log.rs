//! The access log: one line per request, built by `Decider::record` from what the door saw, and
//! written when the answer's body has been sent (so `bytes` is what the client got), through
//! `tracing` like every other line (target `claimgate::access`, so `--log-format json|text` and
//! `RUST_LOG` apply to it too).
//!
//! And the request id every answer carries: the client's `X-Request-Id` when it is one
//! [`RequestId::valid`] value, otherwise a fresh random one.

use crate::error::Body;
use crate::log_safe::Escaped;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-sent id kept: a UUID is 36, a W3C trace id 32; 128 leaves room for the
/// composite ids some load balancers send while keeping a log line bounded.
pub const MAX_REQUEST_ID_LEN: usize = 128;

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Ids drawn per refill of a worker's pool: the RNG call costs about as much as a whole proxied
/// request when made for each id (profiled under `benches/load.sh`), and a few hundred ids'
/// worth of bytes per call makes it negligible.
const IDS_PER_REFILL: usize = 256;

thread_local! {
    /// Each thread's own pool, so drawing an id takes no lock. Bytes are handed out once each.
    static RANDOM_IDS: std::cell::RefCell<RandomIds> = const {
        std::cell::RefCell::new(RandomIds { bytes: [0; 16 * IDS_PER_REFILL], used: 16 * IDS_PER_REFILL })
    };
}

struct RandomIds {
    bytes: [u8; 16 * IDS_PER_REFILL],
    used: usize,
}

impl RandomIds {
    fn next(&mut self) -> [u8; 16] {
        if self.used == self.bytes.len() {
            if aws_lc_rs::rand::fill(&mut self.bytes).is_err() {
                // The system RNG failing is not a reason to refuse a request; a time-based id
                // stays unique enough to find the line.
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                return nanos.to_be_bytes();
            }
            self.used = 0;
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&self.bytes[self.used..self.used + 16]);
        self.used += 16;
        id
    }
}

/// The request's id: sent to the upstream, returned to the client, written in the log line.
#[derive(Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The client's id when it sent exactly one valid `X-Request-Id`, else a new one.
    pub fn of(headers: &HeaderMap) -> Self {
        let mut sent = headers.get_all(&X_REQUEST_ID).iter();
        match (sent.next(), sent.next()) {
            (Some(value), None) if Self::valid(value.as_bytes()) => Self(value.clone()),
            _ => Self::generate(),
        }
    }

    /// 1 to [`MAX_REQUEST_ID_LEN`] bytes of visible ASCII (`!` to `~`): no space, no control
    /// character, nothing a log line or a header could be split on.
    pub fn valid(id: &[u8]) -> bool {
        (1..=MAX_REQUEST_ID_LEN).contains(&id.len()) && id.iter().all(|b| (b'!'..=b'~').contains(b))
    }

    /// 128 random bits as 32 lowercase hex digits.
    pub fn generate() -> Self {
        let bytes = RANDOM_IDS.with(|pool| pool.borrow_mut().next());
        let mut hex = [0u8; 32];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(bytes) {
            pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
            pair[1] = HEX_DIGITS[usize::from(byte & 0x0f)];
        }
        Self(HeaderValue::from_bytes(&hex).unwrap_or(HeaderValue::from_static("-")))
    }

    pub fn header(&self) -> &HeaderValue {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Only visible ASCII is ever kept or generated.
        self.0.to_str().unwrap_or("-")
    }
}

/// Returns `X-Request-Id` on the answer, and hands it the log line when there is one.
pub fn finish(line: Option<Line>, id: &RequestId, mut response: Response<Body>) -> Response<Body> {
    match line {
        Some(line) => line.finish(response),
        None => {
            response
                .headers_mut()
                .insert(X_REQUEST_ID, id.header().clone());
            response
        }
    }
}

/// The request body's announced length, if any.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// What the door knows about a request besides the decision.
pub struct Facts<'a> {
    pub method: &'a Method,
    pub request_id: &'a RequestId,
    pub peer: SocketAddr,
    pub started: Instant,
    /// Time to the upstream's response headers (inline proxy only).
    pub upstream: Option<Duration>,
    /// The request body's `Content-Length`, when announced.
    pub request_bytes: Option<u64>,
}

/// A request's line, waiting for the answer's body to be sent.
pub struct Line {
    pub method: Method,
    /// The normalized path the rules judged, or the path as sent when routing refused it.
    pub path: String,
    pub status: u16,
    /// `allowed` or the rejection's reason code.
    pub reason: &'static str,
    pub user: Option<String>,
    pub provider: Option<std::sync::Arc<str>>,
    pub upstream: Option<Duration>,
    pub request_bytes: Option<u64>,
    pub request_id: RequestId,
    pub peer: SocketAddr,
    pub started: Instant,
}

impl Line {
    /// Adds `X-Request-Id` to the answer and writes the line once its body is sent: at once for
    /// a body of known length, else when the streamed body ends or the client goes away.
    pub fn finish(self, mut response: Response<Body>) -> Response<Body> {
        response
            .headers_mut()
            .insert(X_REQUEST_ID, self.request_id.header().clone());
        if let Some(bytes) = response.body().size_hint().exact() {
            self.write(bytes);
            return response;
        }
        response.map(|body| {
            CountedBody {
                body,
                sent: 0,
                line: Some(self),
            }
            .boxed()
        })
    }

    fn write(&self, bytes: u64) {
        let latency_us = self.started.elapsed().as_micros() as u64;
        let upstream_us = self.upstream.map(|d| d.as_micros() as u64);
        tracing::info!(
            target: "claimgate::access",
            method = %self.method,
            path = %Client(&self.path),
            status = self.status,
            reason = self.reason,
            user = %Client(self.user.as_deref().unwrap_or("")),
            provider = %Client(self.provider.as_deref().unwrap_or("")),
            latency_us,
            upstream_latency_us = upstream_us,
            bytes,
            request_bytes = self.request_bytes,
            request_id = %Client(self.request_id.as_str()),
            peer = %self.peer.ip(),
            "access"
        );
    }
}

static JSON: AtomicBool = AtomicBool::new(false);

/// Set once at startup for `--log-format json`, which escapes values on its own.
pub fn set_json_format(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// Client-chosen text (path, user id from a claim, request id): through [`Escaped`] in the
/// text format, as is in JSON (where quoting it again would only get in the way of queries).
struct Client<'a>(&'a str);

impl std::fmt::Display for Client<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match JSON.load(Ordering::Relaxed) {
            true => f.write_str(self.0),
            false => Escaped(self.0).fmt(f),
        }
    }
}

/// The answer's body, counting what was sent and writing the line when it ends or is dropped.
struct CountedBody {
    body: Body,
    sent: u64,
    line: Option<Line>,
}

impl CountedBody {
    fn done(&mut self) {
        if let Some(line) = self.line.take() {
            line.write(self.sent);
        }
    }
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.done(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        self.done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_validity() {
        assert!(RequestId::valid(b"abc-123_X:/="));
        assert!(RequestId::valid(&[b'a'; MAX_REQUEST_ID_LEN]));
        assert!(!RequestId::valid(&[b'a'; MAX_REQUEST_ID_LEN + 1]));
        assert!(!RequestId::valid(b""));
        assert!(!RequestId::valid(b"has space"));
        assert!(!RequestId::valid(b"tab\there"));
        assert!(!RequestId::valid("é".as_bytes()));
    }

    #[test]
    fn kept_when_valid_and_single_generated_otherwise() {
        let mut headers = HeaderMap::new();
        assert_eq!(RequestId::of(&headers).as_str().len(), 32);
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("req-1"));
        assert_eq!(RequestId::of(&headers).as_str(), "req-1");
        headers.append(X_REQUEST_ID, HeaderValue::from_static("req-2"));
        let id = RequestId::of(&headers);
        assert!(id.as_str().len() == 32 && id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(
            RequestId::generate().as_str(),
            RequestId::generate().as_str()
        );
    }

    #[test]
    fn generated_ids_stay_distinct_across_pool_refills() {
        let ids: std::collections::HashSet<String> = (0..3 * IDS_PER_REFILL + 7)
            .map(|_| RequestId::generate().as_str().to_owned())
            .collect();
        assert_eq!(ids.len(), 3 * IDS_PER_REFILL + 7);
        assert!(
            ids.iter()
                .all(|id| id.len() == 32
                    && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        );
    }
}
