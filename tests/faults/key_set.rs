//! The identity provider's key set: down at startup or later, garbage, stalled, a kid flood.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_down_at_startup_is_served_within_one_refresh_of_coming_up() {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    // Nothing listens there yet: connection refused.
    let port = free_port();
    let uri = format!("http://127.0.0.1:{port}/jwks.json");
    let config = TestConfig::jwks(&upstream.url(), &uri).provider("jwks_min_refresh_seconds", 2);
    let proxy = Proxy::spawn(&config, &[], &[]);
    proxy.wait_up().await;
    let deadline = Instant::now() + ANSWER_WITHIN;
    while jwks_errors(&proxy.metrics().await) < 1.0 {
        assert!(Instant::now() < deadline, "no failed fetch counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(proxy.admin_get("/readyz").await.status(), 503);
    let resp = proxy.get_with_token("/", &fresh(&key)).await;
    let retry_after = resp.headers().get("retry-after").cloned();
    expect_reject(resp, 503, "keys_unavailable").await;
    assert!(retry_after.is_some(), "503 without Retry-After");

    let server = FaultyJwks::start_at(port, JwksMode::Serve(jwks(&[&key]).to_string())).await;
    let up = Instant::now();
    while status_of(&proxy, &fresh(&key)).await != 200 {
        assert!(
            up.elapsed() < ANSWER_WITHIN,
            "not serving after the JWKS came up; stderr:\n{}",
            proxy.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("serving {:?} after the JWKS came up", up.elapsed());
    // Within one refresh: the first fetch that reached the server loaded the keys (requests
    // without keys never fetch; the first-load retries back off to jwks_min_refresh_seconds).
    assert_eq!(server.hits(), 1, "fetches before serving");
    assert_eq!(proxy.admin_get("/readyz").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jwks_answers_are_counted_and_the_last_good_keys_kept() {
    let (good, rotated) = (SigningKey::es256("good"), SigningKey::es256("rotated"));
    let upstream = EchoUpstream::start().await;
    let server = FaultyJwks::start(JwksMode::Serve(jwks(&[&good]).to_string())).await;
    let config = TestConfig::jwks(&upstream.url(), &server.uri())
        .provider("jwks_refresh_seconds", 1)
        .provider("jwks_max_bytes", 65536);
    let proxy = Proxy::start(&config).await;
    let hundred_mib = 100 << 20;
    let faults = [
        (
            "garbage",
            JwksMode::Answer(200, "application/json", "\u{1}\u{2}{{{not json".into()),
        ),
        (
            "html",
            JwksMode::Answer(200, "text/html", "<html><body>Login</body></html>".into()),
        ),
        (
            "json without keys",
            JwksMode::Answer(200, "application/json", "{\"kys\":[]}".into()),
        ),
        (
            "500",
            JwksMode::Answer(500, "text/plain", "internal error".into()),
        ),
        ("100 MiB body", JwksMode::Endless(hundred_mib)),
    ];
    for (what, mode) in faults {
        let errors_before = jwks_errors(&proxy.metrics().await);
        server.set(mode);
        let deadline = Instant::now() + ANSWER_WITHIN;
        while jwks_errors(&proxy.metrics().await) < errors_before + 1.0 {
            assert!(
                Instant::now() < deadline,
                "{what}: no failed fetch counted; stderr:\n{}",
                proxy.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let echo = expect_echo(proxy.get_with_token("/", &fresh(&good)).await).await;
        assert_eq!(echo.header("x-user-id"), Some("alice"), "{what}");
        assert_eq!(proxy.admin_get("/readyz").await.status(), 200, "{what}");
    }
    let sent = server.body_bytes();
    eprintln!(
        "100 MiB JWKS body: {sent} bytes written before claimgate hung up (cap 65536; the rest \
         sat in socket buffers)"
    );
    assert!(
        sent < hundred_mib / 4,
        "{sent} bytes of the 100 MiB body were read"
    );
    assert!(proxy.stderr().contains("exceeds jwks_max_bytes"));

    // Fetching still works afterwards: a rotated key is picked up.
    server.set(JwksMode::Serve(jwks(&[&good, &rotated]).to_string()));
    let deadline = Instant::now() + ANSWER_WITHIN;
    while status_of(&proxy, &fresh(&rotated)).await != 200 {
        assert!(Instant::now() < deadline, "the rotated key never loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Down for good: refused connections are counted, the cached keys keep serving.
    let errors_before = jwks_errors(&proxy.metrics().await);
    drop(server);
    let deadline = Instant::now() + ANSWER_WITHIN;
    while jwks_errors(&proxy.metrics().await) < errors_before + 1.0 {
        assert!(Instant::now() < deadline, "refused fetch not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    expect_echo(proxy.get_with_token("/", &fresh(&rotated)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_jwks_refresh_holds_no_request() {
    let key = SigningKey::es256("known");
    let upstream = EchoUpstream::start().await;
    let server = FaultyJwks::start(JwksMode::Serve(jwks(&[&key]).to_string())).await;
    let config = TestConfig::jwks(&upstream.url(), &server.uri())
        .provider("jwks_refresh_seconds", 1)
        .provider("jwks_timeout_ms", 60_000);
    let proxy = Proxy::start(&config).await;
    server.set(JwksMode::Stall);
    let deadline = Instant::now() + ANSWER_WITHIN;
    while server.stalled() == 0 {
        assert!(Instant::now() < deadline, "no background refresh started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every answer arrives while the refresh is still held open by the JWKS server.
    for i in 0..20 {
        let echo = expect_echo(proxy.get_with_token("/", &fresh(&key)).await).await;
        assert_eq!(echo.header("x-user-id"), Some("alice"));
        assert!(
            server.stalled() > 0,
            "request {i} was answered only after the refresh ended"
        );
    }
    server.set(JwksMode::Serve(jwks(&[&key]).to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_flood_is_rate_limited_and_valid_traffic_unaffected() {
    const FLOOD_FOR: Duration = Duration::from_secs(6);
    const MIN_REFRESH_SECONDS: u64 = 2;
    let key = SigningKey::es256("known");
    let attacker = Arc::new(SigningKey::es256("attacker"));
    let upstream = EchoUpstream::start().await;
    let server = FaultyJwks::start(JwksMode::Serve(jwks(&[&key]).to_string())).await;
    let config = TestConfig::jwks(&upstream.url(), &server.uri())
        .provider("jwks_min_refresh_seconds", MIN_REFRESH_SECONDS);
    let proxy = Arc::new(Proxy::start(&config).await);
    let hits_before = server.hits();
    let started = Instant::now();

    let mut flooders = Vec::new();
    for task in 0..6 {
        let (proxy, attacker) = (proxy.clone(), attacker.clone());
        flooders.push(tokio::spawn(async move {
            let (mut sent, mut refused) = (0u64, 0u64);
            while started.elapsed() < FLOOD_FOR {
                let mut header = attacker.header();
                header["kid"] = format!("random-{task}-{sent}-{}", rand_suffix()).into();
                let token = attacker.sign_raw(&header, &Claims::new().to_value());
                sent += 1;
                if status_of(&proxy, &token).await == 401 {
                    refused += 1;
                }
            }
            (sent, refused)
        }));
    }
    let key = Arc::new(key);
    let mut valid = Vec::new();
    for _ in 0..2 {
        let (proxy, key) = (proxy.clone(), key.clone());
        valid.push(tokio::spawn(async move {
            let (mut sent, mut ok) = (0u64, 0u64);
            while started.elapsed() < FLOOD_FOR {
                sent += 1;
                if status_of(&proxy, &fresh(&key)).await == 200 {
                    ok += 1;
                }
            }
            (sent, ok)
        }));
    }
    let (mut valid_sent, mut valid_ok) = (0, 0);
    for task in valid {
        let (sent, ok) = task.await.unwrap();
        valid_sent += sent;
        valid_ok += ok;
    }
    let (mut flood_sent, mut flood_refused) = (0, 0);
    for flooder in flooders {
        let (sent, refused) = flooder.await.unwrap();
        flood_sent += sent;
        flood_refused += refused;
    }
    let elapsed = started.elapsed();
    let fetches = server.hits() - hits_before;
    eprintln!(
        "unknown-kid flood over {elapsed:?}: {flood_sent} flood requests ({flood_refused} \
         answered 401), {fetches} JWKS fetches (min refresh {MIN_REFRESH_SECONDS} s); valid \
         requests meanwhile: {valid_ok}/{valid_sent} succeeded"
    );
    assert_eq!(flood_refused, flood_sent, "a flood token was not refused");
    assert_eq!(
        valid_ok, valid_sent,
        "valid requests failed during the flood"
    );
    assert!(valid_sent > 0);
    let allowed = elapsed.as_secs() / MIN_REFRESH_SECONDS + 2;
    assert!(
        fetches as u64 <= allowed,
        "{fetches} JWKS fetches in {elapsed:?} (at most {allowed} expected)"
    );
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}
