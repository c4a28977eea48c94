//! Envoy's ext_authz over gRPC (`envoy.service.auth.v3.Authorization/Check`, served on
//! `forward_auth.grpc_listen`): what Istio's `envoyExtAuthzGrpc` provider calls. The door turns a
//! `CheckRequest` into an [`Admission`] and the [`Decision`] or [`Reject`] into a
//! `CheckResponse`; it checks nothing itself.
//!
//! - The caller is judged by the gRPC connection's peer address against
//!   `forward_auth.trusted_proxies`, never by `attributes.source` (which the caller writes).
//! - Allowed: `OkHttpResponse.headers` set the identity headers, each overwriting whatever the
//!   client sent under that name; the client's other copies (a managed name claimgate did not
//!   set this time, `_` spellings) are listed in `headers_to_remove`.
//! - Refused: `Reject::into_response`'s status, headers and JSON body as the
//!   `DeniedHttpResponse`, and the matching gRPC code in `CheckResponse.status`.
//! - Answered by claimgate (`/userinfo`): a `DeniedHttpResponse` with status 200 and the JSON
//!   body, which is how an ext_authz server answers in the application's place.

use super::original_request::{self, Original};
use super::trusted::TrustedProxies;
use crate::access_log::{finish, Facts, RequestId};
use crate::config::{ForwardAuthConfig, KeyError};
use crate::decision::{Admission, Decider, Decision, IdentityHeaders, Trail};
use crate::error::{full, Body, Reject};
use crate::server::ServerLimits;
use crate::tls::Tls;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderAppendAction, HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::pb::google::rpc;
use http::{HeaderMap, HeaderName, Method, Response, StatusCode, Uri};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tower::Service as _;

/// `CheckResponse.status` when claimgate answers in the application's place (`/userinfo`):
/// anything but OK makes Envoy send the `DeniedHttpResponse` (here a 200) to the client.
fn answered() -> rpc::Status {
    rpc::Status {
        code: 7, // PERMISSION_DENIED: the request does not go on to the application
        message: "answered_by_claimgate".to_owned(),
        details: Vec::new(),
    }
}

pub struct ExtAuthz {
    trusted_proxies: TrustedProxies,
}

impl ExtAuthz {
    /// Compiles an already validated `forward_auth` section.
    pub fn compile(config: &ForwardAuthConfig) -> Result<Self, KeyError> {
        Ok(Self {
            trusted_proxies: TrustedProxies::compile(&config.trusted_proxies)?,
        })
    }

    /// One `Check`: `peer` is the gRPC connection's, `None` if the transport could not tell.
    pub async fn check(
        &self,
        decider: &Decider,
        peer: Option<SocketAddr>,
        request: &CheckRequest,
    ) -> CheckResponse {
        let started = Instant::now();
        let logged_peer = peer.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let (answer, trail, client_copies, method, request_id) = match self.original(peer, request)
        {
            Err(reject) => (
                Err(reject),
                Trail::default(),
                Vec::new(),
                Method::GET,
                RequestId::generate(),
            ),
            Ok((original, mut headers)) => {
                // As in the other doors: a client-sent identity header is never judged; Envoy
                // is asked to drop the copies claimgate does not overwrite.
                let client_copies: Vec<String> = decider
                    .identity_header_copies(&headers)
                    .map(|name| name.as_str().to_owned())
                    .collect();
                decider.strip_identity_headers(&mut headers);
                let outcome = decider
                    .decide(Admission {
                        method: &original.method,
                        uri: &original.uri,
                        headers: &headers,
                        peer: logged_peer,
                        // The TLS peer here is the front proxy, never the client: see `client_cert`.
                        client_cert: None,
                    })
                    .await;
                let mut trail = outcome.trail;
                if trail.path.is_none() && decider.access_log {
                    trail.path = Some(original.uri.path().to_owned());
                }
                // Envoy sets `x-request-id` on the requests it asks about; it is this request's.
                let request_id = RequestId::of(&headers);
                (
                    outcome.decision,
                    trail,
                    client_copies,
                    original.method,
                    request_id,
                )
            }
        };
        let status = match &answer {
            Ok(Decision::Allow(_)) => Ok(StatusCode::OK),
            Ok(Decision::Respond(response)) => Ok(response.status()),
            Err(reject) => Err(reject),
        };
        let line = decider.record(
            status,
            trail,
            &Uri::from_static("/"),
            Facts {
                method: &method,
                request_id: &request_id,
                peer: logged_peer,
                started,
                upstream: None,
                request_bytes: None,
            },
        );
        match answer {
            Ok(Decision::Allow(allow)) => {
                if let Some(line) = line {
                    line.finish(Response::new(full("")));
                }
                allowed(&allow.identity, client_copies)
            }
            Ok(Decision::Respond(response)) => {
                let response = finish(line, &request_id, response);
                http_answer(answered(), response).await
            }
            // The one mapping of a [`Reject`] to a `CheckResponse`: [`Reject::into_response`]
            // as the denied response, [`Reject::grpc_status`] and the reason code as the status.
            Err(reject) => {
                let status = rpc::Status {
                    code: i32::from(reject.grpc_status()),
                    message: reject.code().to_owned(),
                    details: Vec::new(),
                };
                let response = finish(line, &request_id, reject.into_response());
                http_answer(status, response).await
            }
        }
    }

    /// The caller first (by its connection's address), then the original request Envoy
    /// describes in `attributes.request.http`.
    fn original(
        &self,
        peer: Option<SocketAddr>,
        request: &CheckRequest,
    ) -> Result<(Original, HeaderMap), Reject> {
        self.trusted_proxies
            .check(peer.ok_or(Reject::UntrustedProxy)?)?;
        let http = request
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .ok_or(bad("attributes.request.http is missing"))?;
        let method = Method::from_bytes(http.method.as_bytes())
            .map_err(|_| bad("attributes.request.http.method is not a method"))?;
        // `path` is the request target: path and query.
        let uri = original_request::target(&http.path)?;
        Ok((Original { method, uri }, headers_of(http)?))
    }
}

/// The tonic service: it asks the door and decision of the config in force for each call.
pub struct Service {
    current: crate::app::Current,
}

/// The gRPC connection's peer, handed to the tonic service by [`serve`].
#[derive(Clone, Copy)]
struct Peer(SocketAddr);

#[tonic::async_trait]
impl Authorization for Service {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let peer = request.extensions().get::<Peer>().map(|p| p.0);
        let compiled = self.current.load_full();
        let Some((door, _)) = &compiled.ext_authz else {
            return Err(tonic::Status::unavailable("ext_authz is not configured"));
        };
        let response = door.check(&compiled.decider, peer, request.get_ref()).await;
        Ok(tonic::Response::new(response))
    }
}

/// Serves `Check` on `listener` until `shutdown` resolves (open calls are then finished).
///
/// The gRPC service runs on claimgate's own server, so the listener has the proxy listener's
/// TLS (and client-certificate verification: mTLS from Envoy), `limits.*`, accept backoff and
/// drain, instead of a second, differently configured stack.
pub async fn serve(
    current: crate::app::Current,
    listener: TcpListener,
    limits: ServerLimits,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()>,
) {
    let grpc = AuthorizationServer::new(Service { current });
    let handler = move |mut req: http::Request<Incoming>, peer: SocketAddr| {
        let mut grpc = grpc.clone();
        req.extensions_mut().insert(Peer(peer));
        async move {
            let response = match grpc.call(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            buffered(response).await
        }
    };
    let connections = Arc::new(crate::server::Connections::unlimited());
    crate::server::serve_tls(listener, limits, tls, connections, handler, shutdown).await;
}

/// A `Check` answer is one small message: it is read whole and re-sent with its trailers
/// (`grpc-status`) in the server's body type. A body that fails to produce is a gRPC INTERNAL.
async fn buffered(response: http::Response<tonic::body::Body>) -> Response<Body> {
    let (parts, body) = response.into_parts();
    match body.collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            let mut frames = vec![Frame::data(collected.to_bytes())];
            frames.extend(trailers.map(Frame::trailers));
            let frames = frames.into_iter().map(Ok::<_, hyper::Error>);
            Response::from_parts(
                parts,
                StreamBody::new(futures_util::stream::iter(frames)).boxed(),
            )
        }
        Err(status) => {
            tracing::error!(error = %status, "an ext_authz answer could not be produced");
            tonic::Status::internal("claimgate could not produce the answer")
                .into_http::<Body>()
                .map(|_| crate::error::full(bytes::Bytes::new()))
        }
    }
}

fn bad(what: &'static str) -> Reject {
    Reject::BadOriginalRequest(what)
}

/// The original request's headers: `header_map` (newer Envoys, repeated names kept apart) when
/// sent, else the `headers` map. Pseudo-headers (`:path`, `:method`...) are left out: the
/// method and target come from their own fields.
fn headers_of(http: &HttpRequest) -> Result<HeaderMap, Reject> {
    let mut headers = HeaderMap::new();
    let mut add = |name: &str, value: &[u8]| -> Result<(), Reject> {
        if name.starts_with(':') {
            return Ok(());
        }
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad("a header name of the original request is not a token"))?;
        let value = http::HeaderValue::from_bytes(value)
            .map_err(|_| bad("a header value of the original request is not a valid value"))?;
        headers.append(name, value);
        Ok(())
    };
    match &http.header_map {
        Some(map) if !map.headers.is_empty() => {
            for header in &map.headers {
                let value = match header.raw_value.is_empty() {
                    true => header.value.as_bytes(),
                    false => &header.raw_value,
                };
                add(&header.key, value)?;
            }
        }
        _ => {
            for (name, value) in &http.headers {
                add(name, value.as_bytes())?;
            }
        }
    }
    Ok(headers)
}

/// OK, with the identity headers set over any client copy and the client's lookalikes removed.
fn allowed(identity: &IdentityHeaders, client_copies: Vec<String>) -> CheckResponse {
    let headers: Vec<HeaderValueOption> = identity
        .iter()
        .map(|(name, value)| overwrite(name, &value))
        .collect();
    let headers_to_remove = client_copies
        .into_iter()
        .filter(|name| {
            !headers
                .iter()
                .any(|h| h.header.as_ref().is_some_and(|h| &h.key == name))
        })
        .collect();
    CheckResponse {
        status: Some(rpc::Status::default()),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// An HTTP answer for Envoy to send to the client in the application's place.
async fn http_answer(status: rpc::Status, response: Response<Body>) -> CheckResponse {
    let (parts, body) = response.into_parts();
    // Bodies claimgate builds itself are in memory; reading them cannot fail.
    let body = match body.collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    CheckResponse {
        status: Some(status),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(parts.status.as_u16()),
            }),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| overwrite(name, value))
                .collect(),
            body,
        })),
        ..Default::default()
    }
}

/// A header Envoy must set in place of any existing value: `append_action` for current Envoys
/// and the deprecated `append: false` for those that read only it.
#[allow(deprecated)]
fn overwrite(name: &HeaderName, value: &http::HeaderValue) -> HeaderValueOption {
    let (text, raw_value) = match value.to_str() {
        Ok(text) => (text.to_owned(), Vec::new()),
        Err(_) => (String::new(), value.as_bytes().to_vec()),
    };
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.as_str().to_owned(),
            value: text,
            raw_value,
        }),
        append: Some(BoolValue { value: false }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        keep_empty_value: false,
    }
}
