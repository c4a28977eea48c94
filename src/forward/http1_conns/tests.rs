use super::*;
use crate::error::full;
use crate::forward::connector::{Alpn, UpstreamTls};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// An upstream answering `200 ok` to every request; with `close_after` it closes each
/// connection after that many answers, without announcing it (no `Connection: close`).
async fn start_upstream(close_after: Option<usize>) -> (SocketAddr, Arc<AtomicUsize>) {
    answering(close_after, OK).await
}

/// As [`start_upstream`], answering `answer` to every request.
async fn answering(
    close_after: Option<usize>,
    answer: &'static [u8],
) -> (SocketAddr, Arc<AtomicUsize>) {
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

async fn response(conns: &Http1Connections, addr: SocketAddr) -> Response<Incoming> {
    let req = Request::get("/")
        .header(http::header::HOST, addr.to_string())
        .body(full(""))
        .unwrap();
    conns.send(req).await.unwrap()
}

async fn get(conns: &Http1Connections, addr: SocketAddr) -> StatusCode {
    let response = response(conns, addr).await;
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

async fn body_of(conns: &Http1Connections, addr: SocketAddr) -> Bytes {
    let response = response(conns, addr).await;
    response.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn chunked_and_empty_bodies_give_their_connection_back() {
    let chunked =
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n";
    let empty = b"HTTP/1.1 204 No Content\r\n\r\n";
    for (answer, body) in [(&chunked[..], &b"ok!!!"[..]), (&empty[..], &b""[..])] {
        let (addr, accepted) = answering(None, answer).await;
        let conns = connections(addr);
        for _ in 0..5 {
            assert_eq!(body_of(&conns, addr).await, body);
            tokio::task::yield_now().await;
        }
        let answer = String::from_utf8_lossy(answer);
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "{answer:?}");
    }
}

#[tokio::test]
async fn a_body_dropped_half_read_closes_its_connection() {
    // The body announces 10 bytes and sends 2: what is left would precede the next answer.
    let (addr, accepted) =
        answering(None, b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok").await;
    let conns = connections(addr);
    for round in 1..=3 {
        let mut body = response(&conns, addr).await.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "ok");
        drop(body);
        tokio::task::yield_now().await;
        assert_eq!(accepted.load(Ordering::SeqCst), round);
    }
}
