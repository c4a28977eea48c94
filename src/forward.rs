//! The last step of the request path: hand an allowed request to the upstream and stream the
//! answer back.

mod client_body;
mod connector;
mod headers;
mod http1_conns;

use crate::config::{KeyError, UpstreamConfig, UpstreamProtocol};
use crate::error::{error_chain, Body, Reject};
pub use connector::UpstreamTls;
use connector::{Alpn, Connector};
pub use headers::strip_connection_listed;
use headers::{
    accepts_trailers, append_forwarded_for, requested_upgrade, strip_hop_by_hop, X_FORWARDED_HOST,
    X_FORWARDED_PROTO,
};
use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http1_conns::Http1Connections;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::time::Duration;

pub struct Forwarder {
    /// This worker's own kept-alive HTTP/1 connections.
    http1: Http1Connections,
    /// HTTP/2 for `protocol: h2c | auto`: prior knowledge in cleartext, ALPN `h2` over TLS.
    h2c: Option<Client<Connector, Body>>,
    protocol: UpstreamProtocol,
    /// `http` or `https`, from the upstream URL.
    scheme: Scheme,
    /// `X-Forwarded-Proto`: how clients reach the listener.
    client_scheme: HeaderValue,
    authority: Authority,
    /// `Host` for a request that brought none (HTTP/1.0), as the legacy client would set it:
    /// the upstream authority without a default port.
    default_host: HeaderValue,
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
        let target = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| bad("is not a valid URL"))?;
        let http1 = Http1Connections::new(tls.connector(connector.clone(), Alpn::Http1), target);
        let default_host = match (authority.port_u16(), scheme == Scheme::HTTPS) {
            (Some(443), true) | (Some(80), false) => HeaderValue::from_str(authority.host()),
            _ => HeaderValue::from_str(authority.as_str()),
        }
        .map_err(|_| bad("has an invalid host"))?;
        let h2c = (upstream.protocol != UpstreamProtocol::Http1).then(|| {
            Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(http1_conns::MAX_IDLE)
                .pool_idle_timeout(http1_conns::IDLE_TIMEOUT)
                // Without a timer the pool never evicts idle connections.
                .pool_timer(TokioTimer::new())
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
            default_host,
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
        let h2 = self.h2_for(req.version());
        let version = match h2 {
            Some(_) => Version::HTTP_2,
            None => Version::HTTP_11,
        };
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
        let uri = match h2 {
            Some(_) => self.upstream_uri(&parts.uri),
            None => self.origin_form(&parts.uri, &parts.method),
        };
        parts.uri = uri.map_err(|error| {
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
        match host {
            Some(host) => {
                parts.headers.insert(header::HOST, host.clone());
                parts.headers.insert(X_FORWARDED_HOST, host);
            }
            // hyper's HTTP/1 connection sends no Host of its own.
            None if h2.is_none() => {
                parts
                    .headers
                    .insert(header::HOST, self.default_host.clone());
            }
            None => {}
        }
        append_forwarded_for(&mut parts.headers, peer);
        parts
            .headers
            .insert(X_FORWARDED_PROTO, self.client_scheme.clone());

        let (body, client_body_failed) = client_body::ClientBody::new(body);
        let request = Request::from_parts(parts, body.boxed());
        let sent = async {
            match h2 {
                Some(client) => client.request(request).await.map_err(UpstreamError::Http2),
                None => self.http1.send(request).await.map_err(UpstreamError::Http1),
            }
        };
        let response = match tokio::time::timeout(self.timeout, sent).await {
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

    /// The HTTP/2 pool for a request the client sent as `client_version`, or `None` for HTTP/1.
    fn h2_for(&self, client_version: Version) -> Option<&Client<Connector, Body>> {
        let h2 = match self.protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::H2c => true,
            UpstreamProtocol::Auto => client_version == Version::HTTP_2,
        };
        self.h2c.as_ref().filter(|_| h2)
    }

    /// The request target for an HTTP/1 upstream, which hyper's connection sends as given:
    /// origin-form under the base path, authority-form for CONNECT (as the legacy client did).
    fn origin_form(&self, original: &Uri, method: &Method) -> Result<Uri, http::Error> {
        let mut parts = http::uri::Parts::default();
        if method == Method::CONNECT {
            parts.authority = Some(self.authority.clone());
            return Ok(Uri::from_parts(parts)?);
        }
        let path_and_query = match original.path_and_query() {
            // Only origin-form paths can take a prefix; `*` (OPTIONS) passes through as is.
            Some(pq) if !self.base_path.is_empty() && pq.as_str().starts_with('/') => {
                format!("{}{}", self.base_path, pq.as_str()).parse()?
            }
            Some(pq) => pq.clone(),
            None if self.base_path.is_empty() => return Ok(Uri::default()),
            None => format!("{}/", self.base_path).parse()?,
        };
        parts.path_and_query = Some(path_and_query);
        Ok(Uri::from_parts(parts)?)
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

/// A failed upstream request, from whichever HTTP version carried it.
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error(transparent)]
    Http1(#[from] http1_conns::Http1Error),
    #[error(transparent)]
    Http2(#[from] hyper_util::client::legacy::Error),
}

#[cfg(test)]
mod tests;
