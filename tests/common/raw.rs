//! A raw-socket HTTP/1.1 client for requests no well-behaved client library would send (two
//! `Authorization` headers, `..;` paths, h2c upgrades, broken framing).

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The status line's code and the body of a raw answer.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    /// The `reason` of a claimgate rejection body, if it is one.
    pub fn reason(&self) -> Option<String> {
        let body: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        body["reason"].as_str().map(str::to_owned)
    }

    /// The first value of a response header, trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `bytes` as they are to `base_url` (`http://127.0.0.1:PORT`) and reads one answer: until
/// its `Content-Length` is complete, the server closes, or 10 s pass.
pub async fn send(base_url: &str, bytes: &[u8]) -> RawResponse {
    let addr = base_url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer (a 431, a 400) and close before reading everything.
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 8192];
        while !complete(&answer) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    RawResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// `GET path` with the given extra header lines (`"Name: value"`) and `Connection: close`.
pub async fn get(base_url: &str, path: &str, headers: &[String]) -> RawResponse {
    request(base_url, "GET", path, headers).await
}

/// `method path` with the given extra header lines and `Connection: close`, without a body.
pub async fn request(base_url: &str, method: &str, path: &str, headers: &[String]) -> RawResponse {
    let host = base_url.trim_start_matches("http://");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for line in headers {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    send(base_url, request.as_bytes()).await
}

/// Whether `answer` holds a whole head and as many body bytes as its `Content-Length` says.
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .is_some_and(|length| body.len() >= length)
}
