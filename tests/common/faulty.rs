//! Servers that misbehave on purpose, for tests/faults.rs: a TCP relay that can be slowed or cut
//! (in front of MongoDB), a JWKS endpoint that stalls, answers garbage or streams an endless
//! body, and a raw upstream that resets mid-body or sends an oversized head. All written on
//! plain tokio sockets so each fault is exactly what the test asks for.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP relay from 127.0.0.1:PORT to `target`. `set_delay` holds every chunk (both ways) that
/// long before passing it on; `cut` drops every relayed connection and refuses new ones (accepted
/// and closed at once) until `restore`.
pub struct TcpFault {
    pub addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
    stop: watch::Sender<bool>,
}

impl TcpFault {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let (cuts, _) = watch::channel(0u64);
        let (stop, mut stopped) = watch::channel(false);
        let (d, dn, c) = (delay_ms.clone(), down.clone(), cuts.clone());
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => continue,
                    },
                    _ = stopped.changed() => return,
                };
                if dn.load(Ordering::SeqCst) {
                    continue;
                }
                let (d, mut cut) = (d.clone(), c.subscribe());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        _ = pump(cr, sw, d.clone()) => {}
                        _ = pump(sr, cw, d) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            delay_ms,
            down,
            cuts,
            stop,
        }
    }

    /// `host:port` for a `mongodb://` URI.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Drops every open relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpFault {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.cuts.send_modify(|n| *n += 1);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay_ms: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Reads one HTTP/1 request head (up to the blank line); false if the peer went away first.
async fn read_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// What [`FaultyJwks`] answers.
#[derive(Clone, Debug)]
pub enum JwksMode {
    /// 200 with this JSON document.
    Serve(String),
    /// Reads the request and answers nothing until the mode changes.
    Stall,
    /// This status, content type and body.
    Answer(u16, &'static str, String),
    /// 200 with a chunked body of this many bytes (`{"keys":[` then spaces), streamed from one
    /// reused buffer: nothing near its size is allocated.
    Endless(u64),
}

/// A JWKS endpoint at `/jwks.json` over raw HTTP/1.1 (one request per connection), which can be
/// started on a chosen port, and counts requests, stalled requests and body bytes written.
pub struct FaultyJwks {
    pub addr: SocketAddr,
    mode: Arc<Mutex<JwksMode>>,
    changed: watch::Sender<u64>,
    hits: Arc<AtomicUsize>,
    stalled: Arc<AtomicUsize>,
    body_bytes: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
}

impl FaultyJwks {
    pub async fn start(mode: JwksMode) -> Self {
        Self::start_at(0, mode).await
    }

    /// On `port` (0: any free one), e.g. a port the proxy was already told about.
    pub async fn start_at(port: u16, mode: JwksMode) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(mode));
        let (changed, _) = watch::channel(0u64);
        let hits = Arc::new(AtomicUsize::new(0));
        let stalled = Arc::new(AtomicUsize::new(0));
        let body_bytes = Arc::new(AtomicU64::new(0));
        let (stop, mut stopped) = watch::channel(false);
        let (m, c, h, s, b) = (
            mode.clone(),
            changed.clone(),
            hits.clone(),
            stalled.clone(),
            body_bytes.clone(),
        );
        tokio::spawn(async move {
            loop {
                let mut stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                    _ = stopped.changed() => return,
                };
                let (m, mut c, h, s, b) =
                    (m.clone(), c.subscribe(), h.clone(), s.clone(), b.clone());
                tokio::spawn(async move {
                    if !read_head(&mut stream).await {
                        return;
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let mut mode = m.lock().unwrap().clone();
                    while matches!(mode, JwksMode::Stall) {
                        s.fetch_add(1, Ordering::SeqCst);
                        let _ = c.changed().await;
                        s.fetch_sub(1, Ordering::SeqCst);
                        mode = m.lock().unwrap().clone();
                    }
                    let _ = answer(&mut stream, mode, &b).await;
                });
            }
        });
        Self {
            addr,
            mode,
            changed,
            hits,
            stalled,
            body_bytes,
            stop,
        }
    }

    pub fn uri(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    pub fn set(&self, mode: JwksMode) {
        *self.mode.lock().unwrap() = mode;
        self.changed.send_modify(|n| *n += 1);
    }

    /// Requests received so far (a request head was read).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Requests being held by [`JwksMode::Stall`] right now.
    pub fn stalled(&self) -> usize {
        self.stalled.load(Ordering::SeqCst)
    }

    /// Body bytes written by [`JwksMode::Endless`] answers so far.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyJwks {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.changed.send_modify(|n| *n += 1);
    }
}

async fn answer(
    stream: &mut TcpStream,
    mode: JwksMode,
    written: &AtomicU64,
) -> std::io::Result<()> {
    let (status, content_type, body) = match mode {
        JwksMode::Serve(json) => (200, "application/json", json),
        JwksMode::Answer(status, content_type, body) => (status, content_type, body),
        JwksMode::Stall => unreachable!("stalls are waited out before answering"),
        JwksMode::Endless(total) => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            stream.write_all(head.as_bytes()).await?;
            let mut chunk = b"{\"keys\":[".to_vec();
            chunk.resize(64 * 1024, b' ');
            let mut sent = 0u64;
            while sent < total {
                let n = chunk.len().min((total - sent) as usize);
                stream.write_all(format!("{n:x}\r\n").as_bytes()).await?;
                stream.write_all(&chunk[..n]).await?;
                stream.write_all(b"\r\n").await?;
                sent += n as u64;
                written.fetch_add(n as u64, Ordering::SeqCst);
                chunk[..9].fill(b' ');
            }
            return stream.write_all(b"0\r\n\r\n").await;
        }
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await
}

/// What [`RawUpstream`] does with each request.
#[derive(Clone, Copy, Debug)]
pub enum UpstreamFault {
    /// Announces `Content-Length: announced`, sends `sent` bytes, then resets the connection.
    ResetMidBody { announced: u64, sent: u64 },
    /// A 200 whose head carries one header of this many bytes.
    HugeHead(usize),
    /// A 200 with a body of this many bytes (a repeating pattern), written as fast as the
    /// connection takes it; counts what was written.
    LargeBody(u64),
}

/// An upstream on raw sockets; see [`UpstreamFault`].
pub struct RawUpstream {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    /// Body bytes accepted by the socket so far (LargeBody).
    pub written: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
}

impl RawUpstream {
    pub async fn start(fault: UpstreamFault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let (stop, mut stopped) = watch::channel(false);
        let (r, w) = (requests.clone(), written.clone());
        tokio::spawn(async move {
            loop {
                let mut stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                    _ = stopped.changed() => return,
                };
                let (r, w) = (r.clone(), w.clone());
                tokio::spawn(async move {
                    if !read_head(&mut stream).await {
                        return;
                    }
                    r.fetch_add(1, Ordering::SeqCst);
                    let _ = misbehave(&mut stream, fault, &w).await;
                });
            }
        });
        Self {
            addr,
            requests,
            written,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The byte at `offset` of a [`UpstreamFault::LargeBody`] body.
pub fn pattern_byte(offset: u64) -> u8 {
    (offset % 251) as u8
}

async fn misbehave(
    stream: &mut TcpStream,
    fault: UpstreamFault,
    written: &AtomicU64,
) -> std::io::Result<()> {
    match fault {
        UpstreamFault::ResetMidBody { announced, sent } => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&vec![b'x'; sent as usize]).await?;
            stream.flush().await?;
            // Give the bytes time to leave before the RST overtakes them.
            tokio::time::sleep(Duration::from_millis(200)).await;
            stream.set_zero_linger()?;
            Ok(())
        }
        UpstreamFault::HugeHead(size) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nX-Huge: {}\r\nContent-Length: 2\r\n\r\nok",
                "h".repeat(size)
            );
            stream.write_all(head.as_bytes()).await
        }
        UpstreamFault::LargeBody(total) => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            // 251 is prime and divides no chunk size, so a dropped or repeated chunk shows.
            let block: Vec<u8> = (0..251 * 256).map(|i| pattern_byte(i as u64)).collect();
            let mut sent = 0u64;
            while sent < total {
                let n = block.len().min((total - sent) as usize);
                let start = (sent % 251) as usize;
                let end = (start + n).min(block.len());
                let n = end - start;
                stream.write_all(&block[start..end]).await?;
                sent += n as u64;
                written.fetch_add(n as u64, Ordering::SeqCst);
            }
            Ok(())
        }
    }
}
