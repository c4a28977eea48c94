//! The zero-drop drain through the real binary under load: after SIGTERM `/readyz` turns 503 at
//! once, keep-alive clients keep being answered (each HTTP/1 answer now says `Connection: close`)
//! until the stop point `shutdown.delay_seconds` later, then new connections are refused, a
//! request whose body is still streaming across the stop point completes, and the process exits
//! 0. Every request sent gets the right answer and none a connection error. A second signal exits
//! at once.

mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DELAY: Duration = Duration::from_secs(2);

async fn start(delay_seconds: u64) -> (Proxy, SigningKey, EchoUpstream, JwksServer) {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let config = TestConfig::jwks(&upstream.url(), &jwks_server.uri()).set(
        "/shutdown",
        json!({"delay_seconds": delay_seconds, "grace_seconds": 10}),
    );
    (Proxy::start(&config).await, key, upstream, jwks_server)
}

/// One POST whose 8 body bytes are sent one per `pace`: it is in flight for `8 × pace`.
async fn slow_post(addr: &str, token: &str, pace: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 8\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for byte in b"abcdefgh" {
        tokio::time::sleep(pace).await;
        stream.write_all(&[*byte]).await.unwrap();
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_answers_every_request_sent_and_exits_zero() {
    let (proxy, key, _upstream, _jwks) = start(DELAY.as_secs()).await;
    let token = key.sign(&Claims::new());
    let addr = proxy.url.trim_start_matches("http://").to_owned();

    // Clients with keep-alive pools send until shortly before the stop point.
    let stop_sending = Arc::new(AtomicBool::new(false));
    let loops = load::keep_alive_loops(&proxy.url, "/hello", &token, 4, &stop_sending);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A request whose body streams across the stop point.
    let slow = tokio::spawn({
        let (addr, token) = (addr.clone(), token.clone());
        async move { slow_post(&addr, &token, Duration::from_millis(400)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    proxy.signal("TERM");
    // Not ready at once; still serving.
    proxy
        .wait_admin("/readyz", 503, Duration::from_secs(1))
        .await;
    let resp = proxy.get_with_token("/hello", &token).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["connection"], "close");

    tokio::time::sleep(DELAY.saturating_sub(signalled.elapsed()) / 2).await;
    stop_sending.store(true, Ordering::SeqCst);
    let load::Counts {
        sent,
        ok,
        closing,
        failures,
    } = load::total(loops).await;
    assert!(failures.is_empty(), "{failures:?}\n{}", proxy.stderr());
    println!(
        "drain: {sent} requests sent, {ok} answered 200, {closing} of them with Connection: close"
    );
    assert_eq!(sent, ok);
    assert!(
        closing > 0,
        "no answer during the delay said Connection: close"
    );

    // After the stop point: new connections are refused; the streaming request completes.
    tokio::time::sleep(DELAY.saturating_sub(signalled.elapsed()) + Duration::from_millis(500))
        .await;
    assert!(
        TcpStream::connect(&addr).await.is_err(),
        "still accepting after the stop point"
    );
    let answer = slow.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"body_len\":8"), "{answer}");

    let status = proxy.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(
        status.map(|s| s.code()),
        Some(Some(0)),
        "{}",
        proxy.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let (proxy, _key, _upstream, _jwks) = start(60).await;
    proxy.signal("TERM");
    proxy
        .wait_admin("/readyz", 503, Duration::from_secs(2))
        .await;
    assert!(
        proxy.wait_exit(Duration::from_millis(500)).await.is_none(),
        "the delay was skipped"
    );
    proxy.signal("INT");
    let status = proxy.wait_exit(Duration::from_secs(5)).await;
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
}
