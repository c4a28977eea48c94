//! The admin listener: liveness, readiness, Prometheus metrics, `POST /explain` (see
//! [`crate::doors::explain`]), and (only in `--dev`) the dev issuer's token and JWKS endpoints.

use crate::app::Current;
use crate::dev::DevIssuer;
use crate::error::{full, Body};
use crate::metrics::Metrics;
use crate::reload::{ReloadError, Reloader};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use std::sync::Arc;

pub struct Admin {
    /// The compiled config in force (reloads swap it).
    pub current: Current,
    pub reloader: Arc<Reloader>,
    pub metrics: Arc<Metrics>,
    pub dev: Option<DevIssuer>,
    pub draining: crate::drain::Draining,
}

impl Admin {
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if req.uri().path() == "/explain" && req.method() == Method::POST {
            return self.explain(req.into_body()).await;
        }
        if req.method() == Method::POST && req.uri().path() == "/reload" {
            return self.reload().await;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "method not allowed\n".into(),
            );
        }
        match req.uri().path() {
            "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
            "/explain" => {
                let mut response = respond(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "text/plain",
                    "POST a JSON body: {\"token\": \"...\", \"method\", \"path\", \"headers\"}\n"
                        .into(),
                );
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
                response
            }
            "/readyz" => self.readyz(),
            "/metrics" => {
                let compiled = self.current.load();
                for store in &compiled.key_stores {
                    store.update_age_metric();
                }
                compiled.decider.token_cache.update_metrics();
                if let Some(user_data) = &compiled.decider.user_data {
                    self.metrics
                        .user_data
                        .cache_entries
                        .set(user_data.cache_entries() as i64);
                }
                respond(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    self.metrics.encode(),
                )
            }
            "/dev/token" if self.dev.is_some() => self.dev_token(req.uri().query().unwrap_or("")),
            "/dev/jwks.json" => match &self.dev {
                Some(dev) => respond(StatusCode::OK, "application/json", dev.jwks()),
                None => not_found(),
            },
            _ => not_found(),
        }
    }

    /// `POST /reload`: 200 with the new config's hash, or 422 with the reason the running config
    /// was kept (the same file/key/reason as `claimgate check`).
    async fn reload(&self) -> Response<Body> {
        match self.reloader.reload().await {
            Ok(hash) => {
                let body = serde_json::json!({"reloaded": true, "hash": hash});
                respond(StatusCode::OK, "application/json", body.to_string())
            }
            Err(error) => {
                let body = match &error {
                    ReloadError::Invalid(e) => serde_json::json!({
                        "reloaded": false, "error": error.to_string(),
                        "file": e.file, "key": e.key, "reason": e.reason,
                    }),
                    ReloadError::NoConfigFile => {
                        serde_json::json!({"reloaded": false, "error": error.to_string()})
                    }
                };
                let status = match error {
                    ReloadError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                    ReloadError::NoConfigFile => StatusCode::CONFLICT,
                };
                respond(status, "application/json", body.to_string())
            }
        }
    }

    /// Bodies are small (a token and a route): a larger one is refused before it is read whole.
    async fn explain<B>(&self, body: B) -> Response<Body>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use http_body_util::BodyExt;
        const MAX_BODY: usize = 64 * 1024;
        let bad = |why: String| {
            let body = serde_json::json!({ "error": why }).to_string();
            respond(StatusCode::BAD_REQUEST, "application/json", body)
        };
        let bytes = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return bad(format!("request body: {e}")),
        };
        let request = match crate::doors::explain::parse_request(&bytes) {
            Ok(request) => request,
            Err(why) => return bad(why),
        };
        let decider = self.current.load_full().decider.clone();
        match crate::doors::explain::explain(&decider, &request).await {
            Ok(answer) => respond(StatusCode::OK, "application/json", answer.to_string()),
            Err(why) => bad(why),
        }
    }

    fn readyz(&self) -> Response<Body> {
        let compiled = self.current.load();
        let providers: serde_json::Map<String, serde_json::Value> = compiled
            .key_stores
            .iter()
            .map(|s| {
                let status = serde_json::json!({
                    "ready": s.is_ready(),
                    "keys": s.keys().map_or(0, |k| k.len()),
                    "key_age_seconds": s.key_age().map(|a| a.as_secs()),
                });
                (s.provider().to_owned(), status)
            })
            .collect();
        let draining = self.draining.is_on();
        // A revocation list never read would let revoked tokens through: not ready until it is.
        let revocation = compiled.decider.revocation.as_ref().map(|r| r.is_ready());
        let ready = !draining
            && compiled.key_stores.iter().all(|s| s.is_ready())
            && revocation != Some(false);
        let config = serde_json::json!({
            "hash": self.metrics.config.hash(),
            "loaded_at": self.metrics.config.load_time(),
        });
        let mut body = serde_json::json!({
            "ready": ready, "draining": draining, "providers": providers, "config": config,
        });
        if let Some(loaded) = revocation {
            body["revocation_list_loaded"] = loaded.into();
        }
        let body = body.to_string();
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        respond(status, "application/json", body)
    }

    fn dev_token(&self, query: &str) -> Response<Body> {
        let Some(dev) = &self.dev else {
            return not_found();
        };
        let params: Vec<(String, String)> = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (decode(k), decode(v)))
            .collect();
        match dev.mint(&params) {
            Ok(token) => respond(StatusCode::OK, "text/plain", format!("{token}\n")),
            Err(why) => respond(StatusCode::BAD_REQUEST, "text/plain", format!("{why}\n")),
        }
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn not_found() -> Response<Body> {
    respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into())
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
