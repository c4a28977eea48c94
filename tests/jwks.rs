//! Key-set lifecycle as a client sees it: rotation, an identity provider that goes away or is
//! broken at startup, and readiness.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use std::time::{Duration, Instant};

/// Sends `token` until the proxy answers `status` or `timeout` passes; returns the last status.
async fn poll_status(proxy: &Proxy, token: &str, status: u16, timeout: Duration) -> u16 {
    let deadline = Instant::now() + timeout;
    loop {
        let got = proxy.get_with_token("/", token).await.status().as_u16();
        if got == status || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_triggers_refetch_and_rotated_key_is_accepted() {
    let old = SigningKey::rsa("key-a", Algorithm::RS256);
    let new = SigningKey::rsa("key-b", Algorithm::RS256);
    let upstream = EchoUpstream::start().await;
    let server = JwksServer::start(jwks(&[&old])).await;
    let proxy = Proxy::start(&TestConfig::jwks(&upstream.url(), &server.uri())).await;

    let new_token = new.sign(&Claims::new());
    expect_reject(
        proxy.get_with_token("/", &new_token).await,
        401,
        "unknown_kid",
    )
    .await;
    expect_echo(proxy.get_with_token("/", &old.sign(&Claims::new())).await).await;

    let hits_before = server.hits();
    server.set_jwks(jwks(&[&old, &new]));
    // jwks_min_refresh_seconds is 1: within a few seconds an unknown-kid request must refetch.
    let status = poll_status(&proxy, &new_token, 200, Duration::from_secs(10)).await;
    assert_eq!(
        status,
        200,
        "rotated key never accepted; stderr:\n{}",
        proxy.stderr()
    );
    assert!(server.hits() > hits_before, "accepted without refetching?");
    let echo = expect_echo(proxy.get_with_token("/", &new_token).await).await;
    assert_eq!(echo.header("x-user-id"), Some("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_do_not_cause_a_refetch_storm() {
    let known = SigningKey::es256("known");
    let upstream = EchoUpstream::start().await;
    let server = JwksServer::start(jwks(&[&known])).await;
    let config =
        TestConfig::jwks(&upstream.url(), &server.uri()).provider("jwks_min_refresh_seconds", 60);
    let proxy = Proxy::start(&config).await;
    let hits_at_start = server.hits();
    for i in 0..25 {
        let stranger = SigningKey::es256(&format!("stranger-{i}"));
        let resp = proxy
            .get_with_token("/", &stranger.sign(&Claims::new()))
            .await;
        expect_reject(resp, 401, "unknown_kid").await;
    }
    // At most one refetch per jwks_min_refresh_seconds, whatever attackers send.
    let extra = server.hits() - hits_at_start;
    assert!(extra <= 1, "{extra} JWKS fetches for 25 unknown kids");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_keys_keep_working_when_jwks_server_goes_away() {
    let key = SigningKey::ed25519("ed");
    let upstream = EchoUpstream::start().await;
    let server = JwksServer::start(jwks(&[&key])).await;
    let config =
        TestConfig::jwks(&upstream.url(), &server.uri()).provider("jwks_refresh_seconds", 1);
    let proxy = Proxy::start(&config).await;
    expect_echo(proxy.get_with_token("/", &key.sign(&Claims::new())).await).await;

    server.shutdown();
    // Let at least one scheduled refresh fail against the closed port.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let echo = expect_echo(proxy.get_with_token("/", &key.sign(&Claims::new())).await).await;
    assert_eq!(echo.header("x-user-id"), Some("alice"));
    // An unknown kid now triggers a failing refetch; known keys must survive it.
    let stranger = SigningKey::ed25519("stranger");
    let resp = proxy
        .get_with_token("/", &stranger.sign(&Claims::new()))
        .await;
    expect_reject(resp, 401, "unknown_kid").await;
    expect_echo(proxy.get_with_token("/", &key.sign(&Claims::new())).await).await;
    assert_eq!(proxy.admin_get("/readyz").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_is_unready_until_jwks_first_loads() {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let server = JwksServer::start(jwks(&[&key])).await;
    server.fail_with(500);
    let proxy = Proxy::spawn(&TestConfig::jwks(&upstream.url(), &server.uri()), &[], &[]);
    proxy.wait_up().await;
    let token = key.sign(&Claims::new());

    // Wait until at least one fetch failed, so the 503 below is about failure, not startup.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.hits() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.hits() > 0, "proxy never tried to fetch the JWKS");
    assert_eq!(proxy.admin_get("/readyz").await.status(), 503);
    let resp = proxy.get_with_token("/", &token).await;
    let retry_after = resp.headers().get("retry-after").cloned();
    expect_reject(resp, 503, "keys_unavailable").await;
    let retry_after = retry_after.expect("503 without Retry-After");
    assert!(retry_after.to_str().unwrap().parse::<u64>().is_ok());
    assert!(upstream.requests().is_empty());
    expect_jwks_fetch(&proxy, "error").await;

    server.recover();
    proxy.wait_ready().await;
    let echo = expect_echo(proxy.get_with_token("/", &token).await).await;
    assert_eq!(echo.header("x-user-id"), Some("alice"));
    expect_jwks_fetch(&proxy, "ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_jwks_server_times_out_then_recovers() {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let server = JwksServer::start(jwks(&[&key])).await;
    server.set_delay(Duration::from_secs(3));
    let config = TestConfig::jwks(&upstream.url(), &server.uri()).provider("jwks_timeout_ms", 300);
    let proxy = Proxy::spawn(&config, &[], &[]);
    proxy.wait_up().await;
    let token = key.sign(&Claims::new());
    expect_reject(
        proxy.get_with_token("/", &token).await,
        503,
        "keys_unavailable",
    )
    .await;

    server.set_delay(Duration::ZERO);
    proxy.wait_ready().await;
    expect_echo(proxy.get_with_token("/", &token).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_gauge_counts_published_keys() {
    let (a, b, c) = (
        SigningKey::es256("a"),
        SigningKey::ed25519("b"),
        SigningKey::rsa("c", Algorithm::PS256),
    );
    let upstream = EchoUpstream::start().await;
    let server = JwksServer::start(jwks(&[&a, &b, &c])).await;
    let proxy = Proxy::start(&TestConfig::jwks(&upstream.url(), &server.uri())).await;
    let metrics = proxy.metrics().await;
    let keys = metric(&metrics, "claimgate_jwks_keys", &[("provider", "test")]);
    assert_eq!(keys, Some(3.0), "metrics:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_max_age_drives_background_refresh() {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let server = JwksServer::start(jwks(&[&key])).await;
    server.set_cache_control(Some("public, max-age=1"));
    let proxy = Proxy::start(&TestConfig::jwks(&upstream.url(), &server.uri())).await;
    let hits_at_start = server.hits();
    // No traffic at all: only the honoured max-age (above jwks_min_refresh_seconds = 1, far below
    // jwks_refresh_seconds = 300) can explain further fetches.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        server.hits() > hits_at_start,
        "max-age=1 ignored: no refetch in 3.5 s"
    );
    expect_echo(proxy.get_with_token("/", &key.sign(&Claims::new())).await).await;
}
