//! The accept loop shared by the proxy listener and the admin listener.

mod accept;
mod idle;
pub mod reuse_port;

use crate::client_cert::ClientCert;

pub use accept::Connections;

use crate::config::LimitsConfig;
use crate::error::Body;
use crate::tls::Tls;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

/// hyper's HTTP/1 read buffer cannot be smaller than this.
const MIN_HEADER_BYTES: usize = 8192;

/// What a listener enforces on each connection before a request reaches the handler.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// How long a connection may go without a request in progress: from accept until the first
    /// request head is complete, and between keep-alive requests (HTTP/1 and HTTP/2 alike).
    pub idle_timeout: Duration,
    /// Request line plus headers (HTTP/1), or the header list (HTTP/2); more is a 431.
    pub max_header_bytes: usize,
    /// Once the listener stops, open connections get this long to finish (`shutdown.grace_seconds`);
    /// after that they are dropped, so a stuck client cannot hold the process past the
    /// orchestrator's kill deadline.
    pub drain_grace: Duration,
}

impl From<&LimitsConfig> for ServerLimits {
    fn from(limits: &LimitsConfig) -> Self {
        Self {
            idle_timeout: Duration::from_millis(limits.header_read_timeout_ms),
            max_header_bytes: limits.max_header_bytes,
            drain_grace: Duration::from_secs(
                crate::config::ShutdownConfig::default().grace_seconds,
            ),
        }
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self::from(&LimitsConfig::default())
    }
}

fn builder(limits: ServerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let header_bytes = limits.max_header_bytes.max(MIN_HEADER_BYTES);
    // hyper only enforces its header-read timeout (slowloris protection) when it has a timer.
    // The read buffer holds the request head while it is parsed, so capping it caps the head:
    // hyper answers 431 when it fills up before the head is complete.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_buf_size(header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Serves HTTP/1.1 (with upgrades) and h2c prior knowledge on `listener` until `shutdown`
/// resolves, then drains open connections for at most `limits.drain_grace`.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    limits: ServerLimits,
    handler: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let connections = Arc::new(Connections::unlimited());
    serve_tls(listener, limits, None, connections, handler, shutdown).await
}

/// [`serve`], over TLS when `tls` is set (HTTP/2 or HTTP/1.1 by ALPN). The handshake must finish
/// within the idle timeout, like a request head; a failed one is counted and ends only its
/// connection. `connections` may be shared by several accept loops on the same socket.
pub async fn serve_tls<F, Fut>(
    listener: TcpListener,
    limits: ServerLimits,
    tls: Option<Arc<Tls>>,
    connections: Arc<Connections>,
    handler: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = builder(limits);
    let graceful = GracefulShutdown::new();
    let local = listener.local_addr().ok();
    let mut backoff = accept::Backoff::default();
    tokio::pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.succeeded(local);
                accepted
            }
            Err(error) => {
                // Open connections keep being served meanwhile: they run on their own tasks.
                let delay = backoff.failed(local, &error);
                tokio::select! {
                    () = tokio::time::sleep(delay) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        // After the accept, not before: with a listening socket per worker, a worker holding a
        // slot while it waits for a connection would starve the worker the kernel hands it to.
        let waited = tokio::select! {
            permit = connections.wait_for_slot() => permit,
            () = &mut shutdown => break,
        };
        // Dropping the stream closes it: the client learns at once instead of timing out.
        let Some(slot) = connections.admit(waited, local, peer) else {
            continue;
        };
        // Small request/response writes would otherwise wait on Nagle + delayed ACK (~40 ms).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let (builder, handler, watcher) = (builder.clone(), handler.clone(), graceful.watcher());
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Some(tls) = tls else {
                let conn = Connection {
                    peer,
                    client_cert: None,
                };
                return serve_connection(builder, stream, conn, limits, handler, watcher).await;
            };
            match tokio::time::timeout(limits.idle_timeout, tls.acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let client_cert = crate::tls::client_cert(stream.get_ref().1);
                    let conn = Connection { peer, client_cert };
                    serve_connection(builder, stream, conn, limits, handler, watcher).await
                }
                Ok(Err(error)) => tls.handshake_failed(peer, &error.to_string()),
                Err(_) => tls.handshake_failed(peer, "no handshake within the idle timeout"),
            }
        });
    }

    // Stop accepting before draining so the orchestrator's next connection goes elsewhere.
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.drain_grace) => {
            tracing::warn!(listener = ?local, "connections still open after drain timeout; closing");
        }
    }
}

/// What is known of a connection before its first request.
struct Connection {
    peer: SocketAddr,
    /// The verified TLS client certificate, handed to each request as an extension.
    client_cert: Option<Arc<ClientCert>>,
}

/// Serves one accepted connection until it ends, is idle too long, or the drain ends it.
async fn serve_connection<IO, F, Fut>(
    builder: auto::Builder<TokioExecutor>,
    io: IO,
    Connection { peer, client_cert }: Connection,
    limits: ServerLimits,
    handler: F,
    watcher: Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let activity = idle::Activity::new();
    let tracker = activity.clone();
    let service = service_fn(move |mut req: Request<Incoming>| {
        if let Some(cert) = &client_cert {
            req.extensions_mut().insert(cert.clone());
        }
        let in_flight = tracker.start();
        let response = handler(req, peer);
        async move {
            let response = response
                .await
                .map(|body| idle::Tracked::wrap(body, in_flight));
            Ok::<_, Infallible>(response)
        }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let connection = watcher.watch(connection.into_owned());
    match activity.run(connection, limits.idle_timeout).await {
        // Clients hanging up mid-request are routine for a proxy, not worth a warning.
        Some(Err(error)) => tracing::debug!(%peer, %error, "connection ended with an error"),
        Some(Ok(())) => {}
        None => tracing::debug!(%peer, "closed an idle connection"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::full;
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    use tokio::net::TcpStream;
    use tokio::sync::{mpsc, oneshot};

    #[tokio::test]
    async fn shutdown_stops_accepting_and_lets_in_flight_requests_finish() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (started_tx, mut started_rx) = mpsc::channel(1);
        let handler = move |_req: Request<Incoming>, _peer: SocketAddr| {
            let started = started_tx.clone();
            async move {
                let _ = started.send(()).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                Response::new(full("done"))
            }
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, ServerLimits::default(), handler, async {
            let _ = stop_rx.await;
        }));

        let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
        let request = Request::get(format!("http://{addr}/"))
            .body(full(""))
            .unwrap();
        let in_flight = tokio::spawn(async move { client.request(request).await });
        started_rx.recv().await.unwrap();
        stop_tx.send(()).unwrap();

        let response = in_flight.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "done");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err());
    }

    /// The idle timeout is about waiting for requests; a tunnel that outlives its request
    /// (a quiet websocket) belongs to the application and must not be cut by it.
    #[tokio::test]
    async fn upgraded_connection_is_not_closed_by_the_idle_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ServerLimits {
            idle_timeout: Duration::from_millis(100),
            ..ServerLimits::default()
        };
        let handler = |mut req: Request<Incoming>, _peer: SocketAddr| async move {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let mut io = TokioIo::new(upgrade.await.unwrap());
                let mut buf = [0u8; 4];
                io.read_exact(&mut buf).await.unwrap();
                io.write_all(&buf).await.unwrap();
            });
            let mut response = Response::new(full(""));
            *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.insert("connection", http::HeaderValue::from_static("upgrade"));
            headers.insert("upgrade", http::HeaderValue::from_static("echo"));
            response
        };
        tokio::spawn(serve(listener, limits, handler, std::future::pending()));

        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        stream.write_all(b"ping").await.unwrap();
        let mut echoed = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&echoed, b"ping");
    }
}
