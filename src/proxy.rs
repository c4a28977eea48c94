//! The request path, top to bottom: strip → extract → verify → map claims → load user data →
//! authorize → inject headers → forward. Each step lives in its own module; this file only
//! orders them and turns the outcome into a response, metric and log line.

use crate::claims::{Identity, MetadataMapping};
use crate::config::TokenSource;
use crate::error::{Body, Reject};
use crate::expansion::Context;
use crate::extract;
use crate::forward::Forwarder;
use crate::headers::HeaderPlan;
use crate::metrics::{Metrics, ALLOWED};
use crate::token_cache::{digest, Session, TokenCache, TokenDigest};
use crate::verify::{now_seconds, Verifier};
use http::{Request, Response};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

pub struct Proxy {
    pub verifier: Verifier,
    /// One per provider, same order as `verifier.providers`.
    pub mappings: Vec<MetadataMapping>,
    /// Every provider's token sources, in config order without repeats.
    pub sources: Vec<TokenSource>,
    pub headers: HeaderPlan,
    pub token_cache: TokenCache,
    pub forwarder: Forwarder,
    pub metrics: Arc<Metrics>,
}

impl Proxy {
    pub async fn handle(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let mut token_digest = None;
        let outcome = match self.admit(&mut req, &mut token_digest).await {
            Ok(()) => self.forwarder.forward(req, peer).await,
            Err(reject) => Err(reject),
        };
        let response = match outcome {
            Ok(response) => {
                self.metrics.count_outcome(ALLOWED);
                response
            }
            Err(reject) => {
                self.metrics.count_outcome(reject.code());
                log_rejection(&reject, token_digest.as_ref(), peer);
                reject.into_response()
            }
        };
        self.metrics
            .request_duration
            .observe(started.elapsed().as_secs_f64());
        response
    }

    /// Everything that must pass before the request may be forwarded; on success the request
    /// carries exactly the trusted identity headers.
    async fn admit(
        &self,
        req: &mut Request<Incoming>,
        token_digest: &mut Option<TokenDigest>,
    ) -> Result<(), Reject> {
        self.headers.strip(req.headers_mut());
        // A `Connection: x-user-id` must not be able to make the forwarder drop injected headers.
        crate::forward::strip_connection_listed(req.headers_mut());

        let (token, source) = extract::token(req.headers(), req.uri().query(), &self.sources)?;
        let key = digest(&token);
        *token_digest = Some(key);
        let session = self.session(&token, key).await?;
        drop(token);
        let provider = &self.verifier.providers[session.verified.provider];
        if !provider.sources.contains(source) {
            return Err(Reject::TokenSourceNotAllowed);
        }

        let ctx = Context {
            identity: &session.identity,
            custom_data: None,
            permissions: None,
            request: None,
        };
        let rendered = match session.rendered.get() {
            Some(rendered) => rendered,
            None => {
                let rendered = self.headers.render(&ctx)?;
                session.rendered.get_or_init(|| rendered)
            }
        };
        let headers = req.headers_mut();
        for (name, value) in rendered {
            headers.insert(name.clone(), value.clone());
        }
        if !self.headers.pass_authorization {
            headers.remove(http::header::AUTHORIZATION);
        }
        Ok(())
    }

    /// Verify and map claims, or reuse the result for a byte-identical token.
    async fn session(&self, token: &str, key: TokenDigest) -> Result<Arc<Session>, Reject> {
        if let Some(session) = self
            .token_cache
            .get(&key, |v| self.verifier.still_valid(v, now_seconds()))
        {
            return Ok(session);
        }
        let verified = self.verifier.verify(token).await?;
        let provider = &self.verifier.providers[verified.provider];
        let data = self.mappings[verified.provider].map(&verified.claims)?;
        let identity = Identity {
            id: verified.user_id.clone(),
            provider: provider.name.clone(),
            data,
            token: verified.claims.clone(),
        };
        let session = Arc::new(Session {
            verified,
            identity,
            rendered: OnceLock::new(),
        });
        self.token_cache.insert(key, session.clone());
        Ok(session)
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
            reason = reject.code(), detail = %reject.description(), token = fingerprint, peer = %peer.ip(),
            "request rejected"
        ),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
