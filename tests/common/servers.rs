//! The real HTTP servers the proxy talks to: a JWKS endpoint whose behaviour a test changes while
//! the proxy runs, and an upstream that echoes what actually reached it.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Handler = Arc<dyn Fn(Request<Incoming>) -> BoxFuture<Response<Full<Bytes>>> + Send + Sync>;

/// A tiny HTTP/1 + h2c server on 127.0.0.1:0 (HTTP/1 + h2 by ALPN when given a TLS acceptor).
/// `shutdown` closes the listener *and* every open connection, so a client with a pooled
/// keep-alive connection really sees the server gone.
pub struct HttpServer {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tls: bool,
}

impl HttpServer {
    pub async fn start(handler: Handler) -> Self {
        Self::start_with(handler, None).await
    }

    pub async fn start_with(handler: Handler, tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, mut stop) = watch::channel(false);
        let tls_enabled = tls.is_some();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                    _ = stop.changed() => return,
                };
                let handler = handler.clone();
                let mut conn_stop = stop.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let stream: Box<dyn Stream> = match tls {
                        // A refused handshake (e.g. no client certificate) only ends this one.
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => Box::new(stream),
                            Err(_) => return,
                        },
                        None => Box::new(stream),
                    };
                    let service = service_fn(move |req| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler(req).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = conn_stop.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            shutdown,
            tls: tls_enabled,
        }
    }

    /// `http://127.0.0.1:PORT`, or `https://` when serving TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .unwrap()
}

#[derive(Clone)]
struct JwksState {
    jwks: Value,
    status: StatusCode,
    delay: Duration,
    cache_control: Option<String>,
}

/// A JWKS endpoint at `/jwks.json`.
pub struct JwksServer {
    server: HttpServer,
    state: Arc<Mutex<JwksState>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    pub async fn start(jwks: Value) -> Self {
        Self::start_with(jwks, None).await
    }

    /// The same endpoint over TLS (`uri()` is then `https://`).
    pub async fn start_tls(jwks: Value, tls: TlsAcceptor) -> Self {
        Self::start_with(jwks, Some(tls)).await
    }

    async fn start_with(jwks: Value, tls: Option<TlsAcceptor>) -> Self {
        let state = Arc::new(Mutex::new(JwksState {
            jwks,
            status: StatusCode::OK,
            delay: Duration::ZERO,
            cache_control: None,
        }));
        let hits = Arc::new(AtomicUsize::new(0));
        let (st, h) = (state.clone(), hits.clone());
        let handler: Handler = Arc::new(move |_req| {
            h.fetch_add(1, Ordering::SeqCst);
            // Snapshot now, so a change made while this response sleeps applies to the next one.
            let s = st.lock().unwrap().clone();
            Box::pin(async move {
                tokio::time::sleep(s.delay).await;
                if s.status != StatusCode::OK {
                    return respond(s.status, "text/plain", "jwks failure injected by test");
                }
                let mut resp = respond(s.status, "application/json", s.jwks.to_string());
                if let Some(cc) = s.cache_control {
                    resp.headers_mut()
                        .insert("cache-control", cc.parse().unwrap());
                }
                resp
            })
        });
        Self {
            server: HttpServer::start_with(handler, tls).await,
            state,
            hits,
        }
    }

    pub fn uri(&self) -> String {
        format!("{}/jwks.json", self.server.url())
    }

    /// Serve a new key set (rotation).
    pub fn set_jwks(&self, jwks: Value) {
        self.state.lock().unwrap().jwks = jwks;
    }

    /// Answer every fetch with this status (e.g. 500); `recover` goes back to 200.
    pub fn fail_with(&self, status: u16) {
        self.state.lock().unwrap().status = StatusCode::from_u16(status).unwrap();
    }

    pub fn recover(&self) {
        self.state.lock().unwrap().status = StatusCode::OK;
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    pub fn set_cache_control(&self, value: Option<&str>) {
        self.state.lock().unwrap().cache_control = value.map(str::to_owned);
    }

    /// How many requests reached the endpoint so far (including failed ones).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn shutdown(&self) {
        self.server.shutdown();
    }
}

/// What the upstream received, as it echoes it back.
#[derive(Debug, Clone)]
pub struct Echo {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-case header name → every value, in arrival order.
    pub headers: BTreeMap<String, Vec<String>>,
    pub body_len: u64,
    pub body_sha256: String,
    /// The HTTP version the request arrived in, e.g. `HTTP/2.0`.
    pub version: String,
}

impl Echo {
    pub fn from_json(v: &Value) -> Self {
        let headers = v["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, vs)| {
                let vs = vs.as_array().unwrap();
                let vs = vs.iter().map(|s| s.as_str().unwrap().to_owned()).collect();
                (k.clone(), vs)
            })
            .collect();
        Self {
            method: v["method"].as_str().unwrap().to_owned(),
            path: v["path"].as_str().unwrap().to_owned(),
            query: v["query"].as_str().map(str::to_owned),
            headers,
            body_len: v["body_len"].as_u64().unwrap(),
            body_sha256: v["body_sha256"].as_str().unwrap().to_owned(),
            version: v["version"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// The single value of a header; panics if it was sent more than once, since a duplicated
    /// identity header is itself a bug the tests must catch.
    pub fn header(&self, name: &str) -> Option<&str> {
        let values = self.headers.get(&name.to_ascii_lowercase())?;
        assert_eq!(values.len(), 1, "header {name} reached upstream {values:?}");
        Some(&values[0])
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.headers.contains_key(&name.to_ascii_lowercase())
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An upstream answering every request with a JSON [`Echo`] of it. The body is hashed as it
/// streams in, so a 20 MiB upload costs no memory here.
pub struct EchoUpstream {
    server: HttpServer,
    delay_ms: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<Echo>>>,
}

impl EchoUpstream {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// The same echo over TLS (`url()` is then `https://`).
    pub async fn start_tls(tls: TlsAcceptor) -> Self {
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<TlsAcceptor>) -> Self {
        let delay_ms = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (d, s) = (delay_ms.clone(), seen.clone());
        let handler: Handler = Arc::new(move |req| {
            let (d, s) = (d.clone(), s.clone());
            Box::pin(async move {
                let (parts, mut body) = req.into_parts();
                let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (name, value) in &parts.headers {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    headers
                        .entry(name.as_str().to_owned())
                        .or_default()
                        .push(value);
                }
                let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
                let mut len = 0u64;
                while let Some(frame) = body.frame().await {
                    let Ok(frame) = frame else { break };
                    if let Some(data) = frame.data_ref() {
                        len += data.len() as u64;
                        ctx.update(data);
                    }
                }
                let echo = json!({
                    "method": parts.method.as_str(),
                    "version": format!("{:?}", parts.version),
                    "path": parts.uri.path(),
                    "query": parts.uri.query(),
                    "headers": headers,
                    "body_len": len,
                    "body_sha256": hex(ctx.finish().as_ref()),
                });
                s.lock().unwrap().push(Echo::from_json(&echo));
                tokio::time::sleep(Duration::from_millis(d.load(Ordering::SeqCst))).await;
                respond(StatusCode::OK, "application/json", echo.to_string())
            })
        });
        Self {
            server: HttpServer::start_with(handler, tls).await,
            delay_ms,
            seen,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Delay every response (after the request is fully read) by this long.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Every request that reached the upstream, oldest first.
    pub fn requests(&self) -> Vec<Echo> {
        self.seen.lock().unwrap().clone()
    }
}

/// A URL on which nothing listens: the port was bound once and released.
pub fn dead_url() -> String {
    format!("http://127.0.0.1:{}", super::free_port())
}

/// Asserts the proxy counted at least one JWKS fetch of provider `test` with `result`
/// (`ok` or `error`).
pub async fn expect_jwks_fetch(proxy: &super::Proxy, result: &str) {
    let metrics = proxy.metrics().await;
    let labels = [("provider", "test"), ("result", result)];
    let count = super::metric(&metrics, "claimgate_jwks_fetches_total", &labels);
    assert!(
        count.unwrap_or(0.0) >= 1.0,
        "no {result} fetch; metrics:\n{metrics}"
    );
}
