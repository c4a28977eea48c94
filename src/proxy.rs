//! The request path, top to bottom: strip → refuse upgrades and ambiguous spellings → route →
//! extract → verify → map claims → load user data → authorize → inject headers → forward. Each step lives in its own module; this file only
//! orders them and turns the outcome into a response, metric and log line.

use crate::claims::{Identity, MetadataMapping};
use crate::config::AuthMode;
use crate::config::TokenSource;
use crate::error::{Body, Reject};
use crate::expansion::{Context, RequestFacts};
use crate::extract;
use crate::forward::Forwarder;
use crate::headers::{HeaderPlan, Rendered};
use crate::log_safe::Escaped;
use crate::metrics::{Metrics, ALLOWED};
use crate::policy::Policy;
use crate::token_cache::{digest, Session, TokenCache, TokenDigest};
use crate::userdata::{UserData, UserRecord};
use crate::userinfo::Userinfo;
use crate::verify::{now_seconds, Verifier};
use http::{Request, Response};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

pub struct Proxy {
    pub verifier: Verifier,
    /// One per provider, same order as `verifier.providers`.
    pub mappings: Vec<MetadataMapping>,
    /// Every provider's token sources, in config order without repeats.
    pub sources: Vec<TokenSource>,
    pub headers: HeaderPlan,
    pub token_cache: TokenCache,
    pub user_data: Option<Arc<UserData>>,
    pub policy: Policy,
    pub userinfo: Option<Userinfo>,
    /// Whether anything reads `%%token` after the first request of a token (rules, or headers
    /// rendered per request); if not, cached sessions drop the claims.
    pub keep_claims: bool,
    /// Likewise for the mapped metadata fields (`%%user.data`): rules, /userinfo, or headers
    /// rendered per request may read them; the token-only headers are rendered before the drop.
    pub keep_mapped_data: bool,
    pub metrics: Arc<Metrics>,
}

/// What admission decided for an allowed request.
enum Admitted {
    Forward,
    /// Answered by the proxy itself (`/userinfo`).
    Respond(Response<Body>),
}

impl Proxy {
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        forwarder: &Forwarder,
    ) -> Response<Body> {
        let started = Instant::now();
        let mut token_digest = None;
        let outcome = match self.admit(&mut req, peer, &mut token_digest).await {
            Ok(Admitted::Forward) => {
                // Every forwarded request, anonymous ones included, obeys `pass_authorization`.
                if !self.headers.pass_authorization {
                    let mut uri = req.uri().clone();
                    extract::remove_tokens(req.headers_mut(), &mut uri, &self.sources);
                    *req.uri_mut() = uri;
                }
                forwarder.forward(req, peer).await
            }
            Ok(Admitted::Respond(response)) => Ok(response),
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
        peer: SocketAddr,
        token_digest: &mut Option<TokenDigest>,
    ) -> Result<Admitted, Reject> {
        // Strip: no path, rejected or allowed, may carry a client-chosen identity.
        self.headers.strip(req.headers_mut());
        // A `Connection: x-user-id` must not be able to make the forwarder drop injected headers.
        crate::forward::strip_connection_listed(req.headers_mut());
        crate::upgrade::check(req.headers())?;
        extract::check_single_authorization(req.headers())?;
        // Rules judge the normalized path, so that is also what the upstream gets.
        let path = self.policy.judge(req.uri())?;
        if let Some(uri) = path.forward {
            *req.uri_mut() = uri;
        }
        let path = path.judged;
        let rule = self.policy.route(req.method(), &path);
        let auth = rule.map_or(AuthMode::Required, |r| r.auth);
        if auth == AuthMode::None {
            return Ok(Admitted::Forward);
        }

        // Extract.
        let (token, source) = match extract::token(req.headers(), req.uri().query(), &self.sources)
        {
            Ok(found) => found,
            Err(Reject::TokenMissing) if auth == AuthMode::Optional => {
                return Ok(Admitted::Forward)
            }
            Err(reject) => return Err(reject),
        };
        let key = digest(&token);
        *token_digest = Some(key);

        // Verify and map claims.
        let session = self.session(&token, key).await?;
        drop(token);
        let provider = &self.verifier.providers[session.proof.provider];
        if !provider.sources.contains(source) {
            return Err(Reject::TokenSourceNotAllowed);
        }

        // Load user data.
        let record = match &self.user_data {
            Some(user_data) => Some(self.load_user_data(user_data, &session.identity.id).await?),
            None => None,
        };
        let ctx = Context {
            identity: &session.identity,
            custom_data: record.as_ref().and_then(|r| r.document.as_ref()),
            permissions: record.as_ref().and_then(|r| r.permissions.as_ref()),
            request: Some(RequestFacts {
                method: req.method().as_str(),
                path: &path,
                remote_ip: peer.ip(),
            }),
        };

        // Authorize.
        if let Some(rule) = rule {
            rule.check(&ctx)?;
        }
        if let Some(userinfo) = self.userinfo.as_ref().filter(|u| u.path == path) {
            return Ok(Admitted::Respond(json_response(userinfo.render(&ctx))));
        }

        // Inject headers.
        let per_request: Arc<Rendered>;
        let rendered: &Rendered = match (session.rendered.get(), &record) {
            (Some(rendered), _) => rendered,
            (None, record) => {
                per_request = match record
                    .as_ref()
                    .and_then(|r| TokenCache::rendered_for(&session, r))
                {
                    Some(rendered) => rendered,
                    None => {
                        let rendered = Arc::new(self.headers.render(&ctx)?);
                        if let Some(record) = &record {
                            TokenCache::remember_rendered(&session, record, rendered.clone());
                        }
                        rendered
                    }
                };
                &per_request
            }
        };
        let headers = req.headers_mut();
        for (name, value) in rendered.iter() {
            headers.insert(name.clone(), value.clone());
        }
        Ok(Admitted::Forward)
    }

    /// The user's document, with the checks that need nothing but the document itself
    /// (required, blocked, expired).
    async fn load_user_data(
        &self,
        user_data: &UserData,
        user_id: &str,
    ) -> Result<Arc<UserRecord>, Reject> {
        let record = user_data.lookup(user_id).await?;
        user_data.admit(&record)?;
        Ok(record)
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
        let provider = &self.verifier.providers[verified.proof.provider];
        let data = self.mappings[verified.proof.provider].map(&verified.claims)?;
        let mut identity = Identity {
            id: verified.user_id,
            provider: provider.name.clone(),
            data,
            token: verified.claims,
        };
        // Headers that depend on the token alone are rendered once, while the claims are here.
        let rendered = OnceLock::new();
        if !self.headers.needs_user_data {
            let ctx = Context {
                identity: &identity,
                custom_data: None,
                permissions: None,
                request: None,
            };
            let _ = rendered.set(self.headers.render(&ctx)?);
        }
        if !self.keep_claims {
            identity.token = Arc::default();
        }
        if !self.keep_mapped_data {
            identity.data = serde_json::Map::new();
        }
        let session = Arc::new(Session {
            proof: verified.proof,
            identity,
            rendered,
            rendered_for: Mutex::new(None),
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
            reason = reject.code(), detail = %Escaped(&reject.description()), token = fingerprint, peer = %peer.ip(),
            "request rejected"
        ),
    }
}

fn json_response(value: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(crate::error::full(value.to_string()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
