//! The end of a request: counting it, logging a rejection, and the access log line.

use super::{Decider, Trail};
use crate::access_log;
use crate::error::Reject;
use crate::log_safe::Escaped;
use crate::metrics::ALLOWED;
use crate::token_cache::TokenDigest;
use http::{StatusCode, Uri};
use std::net::SocketAddr;

impl Decider {
    /// The one place a finished request is counted and logged (the rejection line, and the
    /// access line unless `access_log: false`); every door calls it once per request with the
    /// answer it gave (`Ok(status)` for an answer that is not a rejection), then hands its
    /// response to [`access_log::Line::finish`] when it returns a line.
    pub fn record(
        &self,
        answer: Result<StatusCode, &Reject>,
        trail: Trail,
        uri: &Uri,
        facts: access_log::Facts<'_>,
    ) -> Option<access_log::Line> {
        let (status, reason) = match answer {
            Ok(status) => {
                self.metrics.count_outcome(ALLOWED);
                (status, ALLOWED)
            }
            Err(reject) => {
                self.metrics.count_outcome(reject.code());
                log_rejection(reject, trail.token.as_ref(), facts.peer);
                (reject.status(), reject.code())
            }
        };
        self.metrics
            .request_duration
            .observe(facts.started.elapsed().as_secs_f64());
        // Nothing to build when the line would be filtered out (`RUST_LOG=warn`, say).
        if !self.access_log || !tracing::enabled!(target: "claimgate::access", tracing::Level::INFO)
        {
            return None;
        }
        let identity = trail.session.as_ref().map(|s| &s.identity);
        Some(access_log::Line {
            method: facts.method.clone(),
            path: trail.path.unwrap_or_else(|| uri.path().to_owned()),
            status: status.as_u16(),
            reason,
            user: identity.map(|i| i.id.clone()),
            provider: identity.map(|i| i.provider.clone()),
            upstream: facts.upstream,
            request_bytes: facts.request_bytes,
            request_id: facts.request_id.clone(),
            peer: facts.peer,
            started: facts.started,
        })
    }
}

/// Names the reason and a token fingerprint (8 bytes of its SHA-256), never the token.
fn log_rejection(reject: &Reject, token_digest: Option<&TokenDigest>, peer: SocketAddr) {
    let fingerprint = token_digest.map(|d| hex(&d[..8]));
    let fingerprint = fingerprint.as_deref().unwrap_or("-");
    match reject {
        Reject::KeysUnavailable | Reject::UpstreamUnavailable | Reject::UpstreamTimeout => {
            tracing::warn!(
                reason = reject.code(), token = fingerprint, peer = %peer.ip(), "request failed"
            )
        }
        _ => tracing::info!(
            reason = reject.code(), detail = %Escaped(&reject.description()), token = fingerprint, peer = %peer.ip(),
            "request rejected"
        ),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
