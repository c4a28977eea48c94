//! Forward-auth: claimgate as the authorization service of a front proxy. The subrequest
//! describes the original request in one header convention; the door turns it into an
//! [`Admission`] and answers 200 with the identity headers, the decision's own answer
//! (`/userinfo`), or the rejection as the inline proxy would have sent it.

use super::original_request::{self, Original};
use super::trusted::TrustedProxies;
use crate::access_log::{finish, Facts, RequestId};
use crate::config::{ForwardAuthConfig, KeyError, OriginalRequestSource};
use crate::decision::{Admission, Decider, Decision, IdentityHeaders, Trail};
use crate::error::{full, Body, Reject};
use http::{header, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A small body announced within `max_body_bytes` still has to arrive; a sender that stalls
/// gets its answer without it rather than holding the worker.
const BODY_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub struct ForwardAuth {
    /// `None` when only the gRPC listener (`grpc_listen`) is meant to be asked: every
    /// subrequest on this port is then `bad_original_request`.
    source: Option<OriginalRequestSource>,
    path_prefix: Option<String>,
    trusted_proxies: TrustedProxies,
    max_body_bytes: u64,
}

impl ForwardAuth {
    /// Compiles an already validated `forward_auth` section.
    pub fn compile(config: &ForwardAuthConfig) -> Result<Self, KeyError> {
        Ok(Self {
            source: config.original_request,
            path_prefix: config.path_prefix.clone(),
            trusted_proxies: TrustedProxies::compile(&config.trusted_proxies)?,
            max_body_bytes: config.max_body_bytes,
        })
    }

    pub async fn handle(
        &self,
        decider: &Decider,
        mut req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let started = Instant::now();
        let request_id = RequestId::of(req.headers());
        self.drain_small_body(req.body_mut()).await;
        // As in the proxy door: a client-sent identity header is never part of what is judged.
        decider.strip_identity_headers(req.headers_mut());
        let (answer, trail, method) = match self.original(&req, peer) {
            Err(reject) => (Err(reject), Trail::default(), req.method().clone()),
            Ok(original) => {
                let outcome = decider
                    .decide(Admission {
                        method: &original.method,
                        uri: &original.uri,
                        headers: req.headers(),
                        peer,
                        // The TLS peer here is the front proxy, never the client: see `client_cert`.
                        client_cert: None,
                    })
                    .await;
                let answer = outcome.decision.map(|decision| match decision {
                    Decision::Allow(allow) => allowed(&allow.identity),
                    Decision::Respond(response) => response,
                });
                let mut trail = outcome.trail;
                // Refused before routing: the original path as described, not the subrequest's.
                if trail.path.is_none() && decider.access_log {
                    trail.path = Some(original.uri.path().to_owned());
                }
                (answer, trail, original.method)
            }
        };
        let line = decider.record(
            answer.as_ref().map(Response::status),
            trail,
            req.uri(),
            Facts {
                method: &method,
                request_id: &request_id,
                peer,
                started,
                upstream: None,
                request_bytes: None,
            },
        );
        finish(
            line,
            &request_id,
            answer.unwrap_or_else(Reject::into_response),
        )
    }

    /// The caller first (by its address, which a client cannot choose), then its description
    /// of the original request.
    fn original(&self, req: &Request<Incoming>, peer: SocketAddr) -> Result<Original, Reject> {
        self.trusted_proxies.check(peer)?;
        let source = self.source.ok_or(Reject::BadOriginalRequest(
            "forward_auth.original_request is not set: this port answers no subrequest \
             (ext_authz callers use forward_auth.grpc_listen)",
        ))?;
        original_request::parse(
            source,
            self.path_prefix.as_deref(),
            req.method(),
            req.uri(),
            req.headers(),
        )
    }

    /// Reads and drops a body whose announced length is within `max_body_bytes`, so the
    /// connection can carry the next subrequest; any other body is left unread (hyper then
    /// closes the connection after the answer).
    async fn drain_small_body(&self, body: &mut Incoming) {
        let announced = body.size_hint().exact();
        if body.is_end_stream() || announced.is_none_or(|n| n > self.max_body_bytes) {
            return;
        }
        let drain = async {
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(BODY_DRAIN_TIMEOUT, drain).await;
    }
}

/// 200 with the identity headers and nothing else: no client header is echoed, and the answer
/// must not be cached by anything between claimgate and the front proxy.
fn allowed(identity: &IdentityHeaders) -> Response<Body> {
    let mut response = Response::new(full(""));
    let headers = response.headers_mut();
    for (name, value) in identity.iter() {
        headers.insert(name.clone(), value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
