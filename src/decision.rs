//! The one admission decision every front door asks, top to bottom: refuse upgrades and
//! ambiguous spellings → route → extract → verify → map claims → load user data → authorize →
//! identity headers. It reads the request and edits nothing: the door (inline proxy,
//! forward-auth, ext_authz, explain) applies the [`Decision`] in its own way, and answers a
//! [`Reject`] through [`Reject::into_response`], so a check added here reaches every door.

use crate::claims::MetadataMapping;
use crate::client_cert::ClientCert;
use crate::config::AuthMode;
use crate::config::TokenSource;
use crate::error::{json_response, Body, Reject};
use crate::expansion::{Context, RequestFacts};
use crate::explain::{failed, note, source_name, step, RuleUsed, Trace};
use crate::extract;
use crate::headers::{HeaderPlan, Rendered};
use crate::metrics::Metrics;
use crate::packed_json::PackedJson;
use crate::policy::Policy;
use crate::revocation::Revocation;
use crate::telemetry::{traced, Telemetry};
use crate::token_cache::{digest, Prerendered, Session, TokenCache, TokenDigest};
use crate::userdata::UserData;
use crate::userinfo::Userinfo;
use crate::verify::Verifier;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, Uri};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;

mod record;
mod session;

pub(crate) use record::hex;

/// The compiled config's request-time half, shared by every request and every door.
pub struct Decider {
    pub verifier: Verifier,
    /// One per provider, same order as `verifier.providers`.
    pub mappings: Vec<MetadataMapping>,
    /// Every provider's token sources, in config order without repeats.
    pub sources: Vec<TokenSource>,
    pub headers: HeaderPlan,
    pub token_cache: Arc<TokenCache>,
    pub user_data: Option<Arc<UserData>>,
    pub revocation: Option<Arc<Revocation>>,
    pub policy: Policy,
    pub userinfo: Option<Userinfo>,
    /// Whether anything reads `%%token` after the first request of a token (rules, or headers
    /// rendered per request); if not, cached sessions drop the claims.
    pub keep_claims: bool,
    /// Likewise for the mapped metadata fields (`%%user.data`): rules, /userinfo, or headers
    /// rendered per request may read them; the token-only headers are rendered before the drop.
    pub keep_mapped_data: bool,
    pub metrics: Arc<Metrics>,
    /// `access_log`: one line per request (see `crate::access_log`).
    pub access_log: bool,
    /// `tracing.otlp_endpoint` set: the decision's spans are exported.
    pub telemetry: Option<Arc<Telemetry>>,
}

/// What a door hands the decision: the facts of the request as the client sent it (for
/// forward-auth, the original request the subrequest describes).
pub struct Admission<'r> {
    pub method: &'r Method,
    pub uri: &'r Uri,
    pub headers: &'r HeaderMap,
    /// The connection's peer, never a header.
    pub peer: SocketAddr,
    /// The listener client certificate rustls verified (inline proxy over TLS only).
    pub client_cert: Option<&'r ClientCert>,
}

/// What the decision allows.
pub enum Decision {
    /// Let the request through, with these identity headers (none for an anonymous caller).
    Allow(Allow),
    /// Answered by claimgate itself (`/userinfo`).
    Respond(Response<Body>),
}

pub struct Allow {
    /// The normalized target, when the rules judged a different spelling than the client sent.
    pub uri: Option<Uri>,
    pub identity: IdentityHeaders,
}

/// The trusted identity headers: rendered once per token, once per user document version, or
/// not at all for an anonymous caller. Shared, never copied per request.
pub enum IdentityHeaders {
    Anonymous,
    PerToken(Arc<Session>),
    PerRequest(Arc<Rendered>),
}

impl IdentityHeaders {
    /// The headers, each value a shared `Bytes` (a reference count, not a copy).
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, HeaderValue)> {
        let (packed, rendered): (_, &[(HeaderName, HeaderValue)]) = match self {
            IdentityHeaders::Anonymous => (None, &[]),
            IdentityHeaders::PerToken(session) => (session.prerendered(), &[]),
            IdentityHeaders::PerRequest(rendered) => (None, rendered),
        };
        let packed = packed.into_iter().flat_map(Prerendered::iter);
        packed.chain(rendered.iter().map(|(name, value)| (name, value.clone())))
    }
}

/// A decision with what its log lines need.
pub struct Outcome {
    pub decision: Result<Decision, Reject>,
    pub trail: Trail,
}

/// What the decision learned on the way, for the log lines, whatever it decided.
#[derive(Default)]
pub struct Trail {
    /// Fingerprint source for logs: the token's SHA-256, never the token.
    pub token: Option<TokenDigest>,
    /// The normalized path the rules judged (unset when routing refused the request).
    pub path: Option<String>,
    /// The verified token's identity (user id, provider).
    pub session: Option<Arc<Session>>,
    /// The caller's trace context, with `tracing.otlp_endpoint` set (the `forward` span's parent).
    pub trace: Option<opentelemetry::Context>,
}

impl Decider {
    pub async fn decide(&self, request: Admission<'_>) -> Outcome {
        let mut trail = Trail::default();
        let decision = self.admit(&request, &mut trail, None).await;
        Outcome { decision, trail }
    }

    /// [`Decider::decide`], reporting every step to `trace` (`/explain`). The token is verified
    /// for real, so every check shows, and the verified-token cache is neither read nor filled.
    pub async fn decide_traced(&self, request: Admission<'_>, trace: &mut Trace) -> Outcome {
        let mut trail = Trail::default();
        let decision = self.admit(&request, &mut trail, Some(trace)).await;
        Outcome { decision, trail }
    }

    /// Removes the identity headers a client must never supply, for doors that pass the
    /// client's headers on.
    pub fn strip_identity_headers(&self, headers: &mut HeaderMap) {
        self.headers.strip(headers);
    }

    /// The client-sent headers [`Decider::strip_identity_headers`] would remove.
    pub fn identity_header_copies<'h>(
        &'h self,
        headers: &'h HeaderMap,
    ) -> impl Iterator<Item = &'h HeaderName> {
        self.headers.client_copies(headers)
    }

    /// `pass_authorization: false`: takes the token out of every place it may be read from.
    pub fn remove_tokens(&self, headers: &mut HeaderMap, uri: &mut Uri) {
        if !self.headers.pass_authorization {
            extract::remove_tokens(headers, uri, &self.sources);
        }
    }

    /// Everything that must hold before a request may pass, in order.
    async fn admit(
        &self,
        req: &Admission<'_>,
        trail: &mut Trail,
        mut trace: Option<&mut Trace>,
    ) -> Result<Decision, Reject> {
        let t = &mut trace;
        let parent = self.telemetry.as_ref().map(|tel| tel.parent(req.headers));
        trail.trace = parent.clone();
        let span = |name| Some(self.telemetry.as_ref()?.start(name, parent.as_ref()?));
        // Refuse what would carry the request past this decision, whatever the route.
        // Route: rules judge the normalized path, so that is also what the upstream gets.
        let judged = crate::upgrade::check(req.headers)
            .and_then(|()| extract::check_single_authorization(req.headers))
            .and_then(|()| self.policy.judge(req.uri));
        let path = step(
            t,
            "request",
            judged,
            |p| json!({"method": req.method.as_str(), "path": p.ok().map(|p| &p.judged)}),
        )?;
        let uri = path.forward;
        let path = path.judged;
        if self.access_log {
            trail.path = Some(path.clone());
        }
        let rule = self.policy.route(req.method, &path);
        let auth = rule.map_or(AuthMode::Required, |r| r.auth);
        note(t, |t| {
            let name = rule.map(|r| r.name.clone());
            let auth = format!("{auth:?}").to_lowercase();
            t.pass("route", json!({"rule": name, "auth": auth}));
            t.rule = name.map(|name| RuleUsed {
                name,
                allow_when: Vec::new(),
            });
        });
        let anonymous = |uri| {
            Ok(Decision::Allow(Allow {
                uri,
                identity: IdentityHeaders::Anonymous,
            }))
        };
        if auth == AuthMode::None {
            note(t, |t| t.skip("token", "auth_none"));
            return anonymous(uri);
        }

        // Extract.
        let query = req.uri.query();
        let (token, source) = match extract::token(req.headers, query, &self.sources) {
            Ok(found) => found,
            Err(Reject::TokenMissing) if auth == AuthMode::Optional => {
                note(t, |t| t.skip("token", "absent_optional"));
                return anonymous(uri);
            }
            Err(reject) => return step(t, "token", Err(reject), |_| Value::Null),
        };
        note(t, |t| {
            t.source = Some(source_name(source));
            t.pass("token", json!({"source": source_name(source)}));
        });
        let key = digest(&token);
        trail.token = Some(key);

        // Verify and map claims.
        let verifying = span("verify");
        let session = traced(verifying, self.session(&token, key, t).await)?;
        drop(token);
        trail.session = Some(session.clone());
        let provider = &self.verifier.providers[session.proof.provider];
        let allowed = if provider.sources.contains(source) {
            Ok(())
        } else {
            Err(Reject::TokenSourceNotAllowed)
        };
        step(t, "token_source", allowed, |_| {
            let allowed: Vec<String> = provider.sources.iter().map(source_name).collect();
            json!({"source": source_name(source), "allowed": allowed})
        })?;

        // Load user data.
        let record = match &self.user_data {
            Some(user_data) => {
                let id = &session.identity.id;
                let loading = span("user_data");
                let loaded = self.load_user_data(user_data, id, t).await;
                Some(traced(loading, loaded)?)
            }
            None => {
                note(t, |t| t.skip("user_data", "not_configured"));
                None
            }
        };
        let ctx = Context {
            identity: &session.identity,
            custom_data: record
                .as_ref()
                .and_then(|r| r.document.as_ref())
                .map(PackedJson::root),
            permissions: record.as_ref().and_then(|r| r.permissions.as_deref()),
            request: Some(RequestFacts {
                method: req.method.as_str(),
                path: &path,
                remote_ip: req.peer.ip(),
                client_cert: req.client_cert,
            }),
        };

        // Authorize.
        let authorizing = span("authorize");
        let authorized = (|| {
            let revoked = self.check_revoked(&session, record.as_deref());
            let valid_after = record.as_ref().and_then(|r| r.tokens_valid_after);
            if self.revocation.is_none() && valid_after.is_none() {
                note(t, |t| t.skip("revocation", "not_configured"));
                revoked?;
            } else {
                step(
                    t,
                    "revocation",
                    revoked,
                    |_| json!({"iat": session.iat(), "tokens_valid_after": valid_after}),
                )?;
            }
            match rule {
                Some(rule) => rule.check_traced(&ctx, t),
                None => {
                    note(t, |t| {
                        t.skip("scopes", "no_rule");
                        t.skip("allow_when", "no_rule");
                    });
                    Ok(())
                }
            }
        })();
        traced(authorizing, authorized)?;
        if let Some(userinfo) = self.userinfo.as_ref().filter(|u| u.path == path) {
            return Ok(Decision::Respond(json_response(userinfo.render(&ctx))));
        }

        // Identity headers.
        let identity = if session.prerendered().is_some() {
            IdentityHeaders::PerToken(session.clone())
        } else if self.headers.needs_request {
            let rendered = self.headers.render(&ctx);
            IdentityHeaders::PerRequest(Arc::new(failed(t, "headers", rendered)?))
        } else {
            let cached = record
                .as_ref()
                .and_then(|r| TokenCache::rendered_for(&session, r));
            IdentityHeaders::PerRequest(match cached {
                Some(rendered) => rendered,
                None => {
                    let rendered = self.headers.render(&ctx);
                    let rendered = Arc::new(failed(t, "headers", rendered)?);
                    if let Some(record) = &record {
                        TokenCache::remember_rendered(&session, record, rendered.clone());
                    }
                    rendered
                }
            })
        };
        note(t, |t| {
            t.pass("headers", json!({"count": identity.iter().count()}))
        });
        Ok(Decision::Allow(Allow { uri, identity }))
    }
}
