//! Clients holding connections: 2 000 idle ones, and more than `limits.max_connections`.

use super::*;

/// Writes `GET /` with `token` on a kept-alive connection and returns the status.
async fn request_on(stream: &mut TcpStream, token: &str) -> Option<u16> {
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    read_response(stream).await
}

/// Reads one response with a Content-Length body; None when the connection closes first.
async fn read_response(stream: &mut TcpStream) -> Option<u16> {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text.get(9..12)?.parse().ok();
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

const SECRET: &str = "a-test-secret-that-is-longer-than-32-bytes";

/// Waits until `claimgate_connections_open` satisfies `done`, failing after `ANSWER_WITHIN`.
async fn until_open(proxy: &Proxy, done: impl Fn(f64) -> bool, what: &str) {
    let deadline = Instant::now() + ANSWER_WITHIN;
    loop {
        let open = metric(&proxy.metrics().await, "claimgate_connections_open", &[]).unwrap_or(0.0);
        if done(open) {
            return;
        }
        assert!(Instant::now() < deadline, "{open} connections open: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn hmac_token() -> String {
    SigningKey::hs256(SECRET).sign(&Claims::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_do_not_stop_service() {
    const IDLE: usize = 2000;
    let upstream = EchoUpstream::start().await;
    let config =
        TestConfig::hmac(&upstream.url(), SECRET).set("/limits/header_read_timeout_ms", 120_000);
    let proxy = Proxy::start(&config).await;
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(addr(&proxy)).await.unwrap());
    }
    until_open(&proxy, |open| open >= IDLE as f64, "not all accepted").await;
    let started = Instant::now();
    for _ in 0..20 {
        expect_echo(proxy.get_with_token("/", &hmac_token()).await).await;
    }
    eprintln!(
        "{IDLE} idle connections open: 20 requests served in {:?}, proxy RSS {} KiB",
        started.elapsed(),
        proxy.rss_kib().unwrap_or(0)
    );
    drop(idle);
    until_open(&proxy, |open| open < 10.0, "still counted open").await;
}

/// Four connections that each completed a request, on a proxy with `max_connections: 4`.
async fn four_busy_connections(on_max: &str) -> (Proxy, EchoUpstream, Vec<TcpStream>) {
    let upstream = EchoUpstream::start().await;
    let config = TestConfig::hmac(&upstream.url(), SECRET)
        .set("/limits/max_connections", 4)
        .set("/limits/on_max_connections", on_max);
    let proxy = Proxy::start(&config).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(addr(&proxy)).await.unwrap();
        assert_eq!(request_on(&mut stream, &hmac_token()).await, Some(200));
        held.push(stream);
    }
    let open = metric(&proxy.metrics().await, "claimgate_connections_open", &[]);
    assert_eq!(open, Some(4.0));
    (proxy, upstream, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_wait_keeps_new_connections_in_the_backlog() {
    let (proxy, _upstream, mut held) = four_busy_connections("wait").await;
    // The fifth connects (the kernel's backlog takes it) and sends its request.
    let mut fifth = TcpStream::connect(addr(&proxy)).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        hmac_token()
    );
    fifth.write_all(request.as_bytes()).await.unwrap();
    let waiting = tokio::spawn(async move {
        let status = read_response(&mut fifth).await;
        (status, Instant::now())
    });
    // The existing connections are served meanwhile, and the fifth is not.
    for stream in &mut held {
        assert_eq!(request_on(stream, &hmac_token()).await, Some(200));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "the fifth connection was served over the limit"
    );
    let refused = metric(
        &proxy.metrics().await,
        "claimgate_connections_refused_total",
        &[],
    );
    assert_eq!(refused, Some(0.0));
    // One closes: the fifth is accepted and answered.
    let closed_at = Instant::now();
    drop(held.pop());
    let (status, answered_at) = tokio::time::timeout(ANSWER_WITHIN, waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, Some(200));
    assert!(answered_at >= closed_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuse_closes_new_connections_at_once() {
    let (proxy, upstream, mut held) = four_busy_connections("refuse").await;
    let seen = upstream.requests().len();
    let mut fifth = TcpStream::connect(addr(&proxy)).await.unwrap();
    let status = tokio::time::timeout(ANSWER_WITHIN, request_on(&mut fifth, &hmac_token()))
        .await
        .expect("the fifth connection was left hanging");
    assert_eq!(status, None, "the fifth connection got an answer");
    assert_eq!(upstream.requests().len(), seen);
    let refused = metric(
        &proxy.metrics().await,
        "claimgate_connections_refused_total",
        &[],
    );
    assert_eq!(refused, Some(1.0));
    for stream in &mut held {
        assert_eq!(request_on(stream, &hmac_token()).await, Some(200));
    }
    assert!(proxy.stderr().contains("limits.max_connections reached"));
    // A slot frees up: the next connection is served.
    drop(held.pop());
    let deadline = Instant::now() + ANSWER_WITHIN;
    loop {
        let mut stream = TcpStream::connect(addr(&proxy)).await.unwrap();
        if request_on(&mut stream, &hmac_token()).await == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "no slot freed after a close");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Below the cap every connection is served at once, whichever worker's listening socket the
/// kernel hands it to: a worker waiting for a free slot must not hold one back from the other
/// worker. The cap is filled and emptied several times, since which socket gets a connection is
/// the kernel's choice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_wait_serves_every_connection_up_to_the_cap() {
    let upstream = EchoUpstream::start().await;
    let config = TestConfig::hmac(&upstream.url(), SECRET)
        .set("/limits/max_connections", 4)
        .set("/limits/on_max_connections", "wait");
    let proxy = Proxy::start(&config).await;
    for round in 1..=6 {
        let mut held = Vec::new();
        for i in 1..=4 {
            let mut stream = TcpStream::connect(addr(&proxy)).await.unwrap();
            let served = tokio::time::timeout(
                Duration::from_secs(3),
                request_on(&mut stream, &hmac_token()),
            )
            .await;
            assert_eq!(
                served.ok().flatten(),
                Some(200),
                "round {round}: connection {i} of 4 was not served within 3 s"
            );
            held.push(stream);
        }
        drop(held);
        until_open(&proxy, |open| open == 0.0, "after all closed").await;
    }
}
