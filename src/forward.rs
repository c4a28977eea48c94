//! The last step of the request path: hand an allowed request to the upstream and stream the
//! answer back.

mod client_body;
mod connector;

use crate::config::{KeyError, UpstreamConfig, UpstreamProtocol};
use crate::error::{error_chain, Body, Reject};
pub use connector::UpstreamTls;
use connector::{Alpn, Connector};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::time::Duration;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// RFC 9110 §7.6.1 plus the legacy ones still seen in the wild (Keep-Alive, Proxy-Connection,
/// Trailer) and h2c's HTTP2-Settings (RFC 7540 §3.2); they describe one connection, so passing
/// them on would describe the wrong one.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "http2-settings",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Enough idle connections for a busy sidecar to avoid reconnect storms, bounded so a burst
/// cannot pin thousands of sockets on the upstream afterwards.
const POOL_MAX_IDLE_PER_HOST: usize = 256;
/// Below the usual 100-120 s idle timeouts of upstream servers, so we drop a connection before
/// the upstream does and rarely send on a half-closed socket.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Forwarder {
    http1: Client<Connector, Body>,
    /// HTTP/2 for `protocol: h2c | auto`: prior knowledge in cleartext, ALPN `h2` over TLS.
    h2c: Option<Client<Connector, Body>>,
    protocol: UpstreamProtocol,
    /// `http` or `https`, from the upstream URL.
    scheme: Scheme,
    /// `X-Forwarded-Proto`: how clients reach the listener.
    client_scheme: HeaderValue,
    authority: Authority,
    /// Prefix from the upstream URL, without trailing slash; empty when the URL has no path.
    base_path: String,
    timeout: Duration,
    /// Upgraded connections, counted for the drain.
    tunnels: crate::drain::Tunnels,
}

impl Forwarder {
    pub fn new(upstream: &UpstreamConfig) -> Result<Self, KeyError> {
        Self::with_tls(upstream, &UpstreamTls::new(upstream.tls.as_ref())?)
    }

    /// Like [`Forwarder::new`] with `upstream.tls` already read, so the per-worker forwarders
    /// share one reading of the files.
    pub fn with_tls(upstream: &UpstreamConfig, tls: &UpstreamTls) -> Result<Self, KeyError> {
        let bad = |reason: &str| KeyError::new("upstream.url", reason);
        let uri: Uri = upstream
            .url
            .parse()
            .map_err(|_| bad("is not a valid URL"))?;
        let scheme = match uri.scheme() {
            Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => s.clone(),
            _ => return Err(bad("must be an http:// or https:// URL")),
        };
        if scheme == Scheme::HTTP && upstream.tls.is_some() {
            return Err(KeyError::new(
                "upstream.tls",
                "needs an https:// upstream.url",
            ));
        }
        let authority = uri.authority().cloned().ok_or_else(|| bad("has no host"))?;
        // The client would send userinfo on to the upstream verbatim, leaking the credentials.
        if authority.as_str().contains('@') {
            return Err(bad("must not contain credentials"));
        }
        if uri.query().is_some() {
            return Err(bad("must not contain a query string"));
        }

        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(
            (upstream.connect_timeout_ms > 0)
                .then(|| Duration::from_millis(upstream.connect_timeout_ms)),
        );
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            // Without a timer the pool never evicts idle connections.
            .pool_timer(TokioTimer::new());
        let http1 = builder.build(tls.connector(connector.clone(), Alpn::Http1));
        let h2c = (upstream.protocol != UpstreamProtocol::Http1).then(|| {
            builder
                .http2_only(true)
                // gRPC streams can sit idle for long; pings tell a dead upstream from a quiet one.
                .http2_keep_alive_interval(Duration::from_secs(30))
                .timer(TokioTimer::new())
                .build(tls.connector(connector, Alpn::H2))
        });

        Ok(Self {
            http1,
            h2c,
            protocol: upstream.protocol,
            scheme,
            client_scheme: HeaderValue::from_static("http"),
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            timeout: Duration::from_millis(upstream.timeout_ms),
            tunnels: Default::default(),
        })
    }

    /// For a listener that serves TLS: the upstream is told `X-Forwarded-Proto: https`.
    /// Counts this forwarder's WebSocket tunnels in `tunnels`, which the drain waits for.
    pub fn with_tunnels(mut self, tunnels: crate::drain::Tunnels) -> Self {
        self.tunnels = tunnels;
        self
    }

    pub fn behind_tls(mut self, tls: bool) -> Self {
        if tls {
            self.client_scheme = HeaderValue::from_static("https");
        }
        self
    }

    /// `req` already had identity headers stripped/injected by the caller. `peer` is the client
    /// socket address.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, Reject> {
        let upgrade = requested_upgrade(req.headers());
        let (client, version) = self.client_for(req.version());
        // An HTTP/2 upstream has no upgrade mechanism to pass a WebSocket handshake on to.
        if upgrade.is_some() && version == Version::HTTP_2 {
            return Err(Reject::BadUpgrade);
        }
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let trailers_wanted = accepts_trailers(req.headers());
        let (mut parts, body) = req.into_parts();

        // h2 clients carry the host in :authority only; HTTP/1 upstreams need it as Host.
        let host = parts.headers.get(header::HOST).cloned().or_else(|| {
            let authority = parts.uri.authority()?;
            HeaderValue::from_str(authority.as_str()).ok()
        });
        parts.uri = self.upstream_uri(&parts.uri).map_err(|error| {
            tracing::warn!(upstream = %self.authority, %error, "cannot build upstream URI");
            Reject::UpstreamUnavailable
        })?;
        parts.version = version;

        strip_hop_by_hop(&mut parts.headers);
        // gRPC servers insist on `te: trailers`, the one TE value HTTP/2 allows (RFC 9113 §8.2.2).
        if version == Version::HTTP_2 && trailers_wanted {
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(protocol) = upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, protocol);
        }
        // Re-inserted after stripping so `Connection: host` cannot make us send the upstream's
        // own authority instead of the client's.
        if let Some(host) = host {
            parts.headers.insert(header::HOST, host.clone());
            parts.headers.insert(X_FORWARDED_HOST, host);
        }
        append_forwarded_for(&mut parts.headers, peer);
        parts
            .headers
            .insert(X_FORWARDED_PROTO, self.client_scheme.clone());

        let (body, client_body_failed) = client_body::ClientBody::new(body);
        let request = Request::from_parts(parts, body.boxed());
        let response = match tokio::time::timeout(self.timeout, client.request(request)).await {
            Ok(Ok(response)) => response,
            // The client's fault, so neither a warning nor an upstream outage.
            Ok(Err(error)) if client_body_failed.load(std::sync::atomic::Ordering::Relaxed) => {
                tracing::debug!(error = %error_chain(&error), "cannot read the client's request body");
                return Err(Reject::BadRequest);
            }
            Ok(Err(error)) => {
                // No request headers or path here: they may carry the token.
                tracing::warn!(
                    upstream = %self.authority,
                    error = %error_chain(&error),
                    "upstream request failed"
                );
                return Err(Reject::UpstreamUnavailable);
            }
            Err(_) => {
                tracing::warn!(
                    upstream = %self.authority,
                    timeout_ms = self.timeout.as_millis() as u64,
                    "upstream sent no response headers in time"
                );
                return Err(Reject::UpstreamTimeout);
            }
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return self.tunnel(client_upgrade, response);
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body.boxed()))
    }

    /// The pool and HTTP version for a request the client sent as `client_version`.
    fn client_for(&self, client_version: Version) -> (&Client<Connector, Body>, Version) {
        let h2 = match self.protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::H2c => true,
            UpstreamProtocol::Auto => client_version == Version::HTTP_2,
        };
        match (&self.h2c, h2) {
            (Some(h2c), true) => (h2c, Version::HTTP_2),
            _ => (&self.http1, Version::HTTP_11),
        }
    }

    fn upstream_uri(&self, original: &Uri) -> Result<Uri, http::Error> {
        let path_and_query = original.path_and_query().map_or("/", |pq| pq.as_str());
        // Only origin-form paths can take a prefix; `*` (OPTIONS) passes through as is.
        let path_and_query = if !self.base_path.is_empty() && path_and_query.starts_with('/') {
            format!("{}{}", self.base_path, path_and_query)
        } else {
            path_and_query.to_owned()
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }

    /// Answers the client's upgrade with the upstream's 101 and splices the two raw streams.
    fn tunnel(
        &self,
        client_upgrade: Option<OnUpgrade>,
        mut response: Response<Incoming>,
    ) -> Result<Response<Body>, Reject> {
        let Some(client_upgrade) = client_upgrade else {
            tracing::warn!(upstream = %self.authority, "upstream switched protocols unasked");
            return Err(Reject::UpstreamUnavailable);
        };
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let (mut parts, _) = response.into_parts();
        let protocol = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = protocol {
            parts.headers.insert(header::UPGRADE, protocol);
        }

        let upstream = self.authority.clone();
        let open = self.tunnels.open();
        tokio::spawn(async move {
            let _open = open;
            // The client side only completes once hyper has written our 101, i.e. after return.
            let (client, server) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%upstream, %error, "upgrade failed");
                    return;
                }
            };
            let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
            if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
                tracing::debug!(%upstream, %error, "upgraded connection ended with an error");
            }
        });
        let body = Empty::new().map_err(|never| match never {}).boxed();
        Ok(Response::from_parts(parts, body))
    }
}

/// Removes every header named in `Connection` and then the hop-by-hop headers themselves.
///
/// The caller should run this before injecting identity headers: otherwise a client sending
/// `Connection: x-user-id` makes [`Forwarder::forward`] delete the injected header. Running it
/// first is safe because it leaves `Connection` holding only the tokens `forward` still needs
/// (`upgrade` and the fixed hop-by-hop names) and so deletes nothing more later.
pub fn strip_connection_listed(headers: &mut HeaderMap) {
    let listed = connection_tokens(headers);
    let mut kept = Vec::new();
    for name in listed {
        if HOP_BY_HOP.contains(&name.as_str()) {
            kept.push(name.as_str().to_owned());
        } else {
            headers.remove(&name);
        }
    }
    headers.remove(header::CONNECTION);
    if kept.is_empty() {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(&kept.join(", ")) {
        headers.insert(header::CONNECTION, value);
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in connection_tokens(headers) {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn connection_tokens(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect()
}

fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("trailers"))
}

/// The protocol asked for by an HTTP/1.1 upgrade (`Connection: upgrade` + `Upgrade: x`).
fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    if connection_tokens(headers).contains(&header::UPGRADE) {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    // IPv4 clients on a dual-stack listener show up as ::ffff:a.b.c.d; upstreams expect a.b.c.d.
    let ip = peer.ip().to_canonical().to_string();
    let previous: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .collect();
    let value = if previous.is_empty() {
        ip
    } else {
        format!("{}, {ip}", previous.join(", "))
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

#[cfg(test)]
mod tests;
