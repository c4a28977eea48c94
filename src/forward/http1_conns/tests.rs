use super::*;
use crate::error::full;
use crate::forward::connector::{Alpn, UpstreamTls};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An upstream answering `200 ok` to every request; with `close_after` it closes each
/// connection after that many answers, without announcing it (no `Connection: close`).
async fn start_upstream(close_after: Option<usize>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut answered = 0;
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while close_after != Some(answered) {
                    let Ok(n @ 1..) = stream.read(&mut buf).await else {
                        return;
                    };
                    head.extend_from_slice(&buf[..n]);
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        head.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                        answered += 1;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

fn connections(addr: SocketAddr) -> Http1Connections {
    let tls = UpstreamTls::new(None).unwrap();
    let connector = tls.connector(HttpConnector::new(), Alpn::Http1);
    Http1Connections::new(connector, format!("http://{addr}/").parse().unwrap())
}

async fn get(conns: &Http1Connections, addr: SocketAddr) -> StatusCode {
    let req = Request::get("/")
        .header(http::header::HOST, addr.to_string())
        .body(full(""))
        .unwrap();
    let response = conns.send(req).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "ok");
    status
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let (addr, accepted) = start_upstream(None).await;
    let conns = connections(addr);
    for _ in 0..5 {
        assert_eq!(get(&conns, addr).await, StatusCode::OK);
        tokio::task::yield_now().await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(lock(&conns.idle).senders.len(), 1);
}

#[tokio::test]
async fn connections_the_upstream_closed_are_not_a_failure() {
    let (addr, accepted) = start_upstream(Some(1)).await;
    let conns = connections(addr);
    // Some of these find the closed connection still looking ready (the retry), others see it
    // closed at checkout; neither may fail.
    for round in 0..20 {
        assert_eq!(get(&conns, addr).await, StatusCode::OK, "round {round}");
        if round % 2 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 20);
}
