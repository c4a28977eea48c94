//! An upstream that resets mid-body, sends an oversized head, or meets a slow reader.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_body_is_not_passed_off_as_a_whole_response() {
    let key = SigningKey::es256("ec");
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let upstream = RawUpstream::start(UpstreamFault::ResetMidBody {
        announced: 1 << 20,
        sent: 64 << 10,
    })
    .await;
    let proxy = Proxy::start(&TestConfig::jwks(&upstream.url(), &jwks_server.uri())).await;
    let resp = proxy.get_with_token("/", &fresh(&key)).await;
    // The head was already relayed; what matters is that the body ends in an error.
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(ANSWER_WITHIN, resp.bytes())
        .await
        .expect("the client was left waiting for the rest of the body");
    assert!(
        body.is_err(),
        "a truncated body ({} bytes of 1 MiB) was delivered as complete",
        body.map(|b| b.len()).unwrap_or(0)
    );
    // The proxy is fine afterwards.
    assert_eq!(proxy.admin_get("/healthz").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_response_head_over_the_limit_is_502() {
    let key = SigningKey::es256("ec");
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let upstream = RawUpstream::start(UpstreamFault::HugeHead(1 << 20)).await;
    let proxy = Proxy::start(&TestConfig::jwks(&upstream.url(), &jwks_server.uri())).await;
    let token = fresh(&key);
    let request = proxy.get_with_token("/", &token);
    let resp = tokio::time::timeout(ANSWER_WITHIN, request).await.unwrap();
    expect_reject(resp, 502, "upstream_unavailable").await;
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reading_client_gets_backpressure_not_buffering() {
    const BODY: u64 = 256 << 20;
    let key = SigningKey::es256("ec");
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let upstream = RawUpstream::start(UpstreamFault::LargeBody(BODY)).await;
    let proxy = Proxy::start(&TestConfig::jwks(&upstream.url(), &jwks_server.uri())).await;
    let rss_before = proxy.rss_kib().unwrap();

    let mut slow = TcpStream::connect(addr(&proxy)).await.unwrap();
    let request = format!(
        "GET /big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        fresh(&key)
    );
    slow.write_all(request.as_bytes()).await.unwrap();
    let mut first = vec![0u8; 4096];
    let n = slow.read(&mut first).await.unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    // The client stops reading. Whatever the upstream manages to write now sits in socket
    // buffers and claimgate's small per-connection buffers, never in a growing queue.
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = upstream.written.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    let rss_stalled = proxy.rss_kib().unwrap();
    eprintln!(
        "slow client: upstream wrote {} KiB of {} KiB then stalled; proxy RSS {rss_before} → \
         {rss_stalled} KiB",
        last >> 10,
        BODY >> 10
    );
    assert!(last < BODY / 4, "{last} bytes were taken from the upstream");
    assert!(
        rss_stalled < rss_before + 32 * 1024,
        "RSS grew from {rss_before} to {rss_stalled} KiB"
    );
    // Other clients are served meanwhile (their own upstream connection, same big answer).
    let resp = proxy.get_with_token("/other", &fresh(&key)).await;
    assert_eq!(resp.status(), 200);
    drop(resp);

    // The slow client then reads everything, intact.
    let text = String::from_utf8_lossy(&first[..n]).into_owned();
    let head_len = text.find("\r\n\r\n").unwrap() + 4;
    let mut offset = 0u64;
    for byte in &first[head_len..n] {
        assert_eq!(*byte, pattern_byte(offset));
        offset += 1;
    }
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = tokio::time::timeout(ANSWER_WITHIN, slow.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        for byte in &buf[..n] {
            assert_eq!(*byte, pattern_byte(offset), "at offset {offset}");
            offset += 1;
        }
    }
    assert_eq!(offset, BODY, "body length");
}
