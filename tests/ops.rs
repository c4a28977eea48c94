//! What an operator sees: metrics, admin endpoints, logs that never leak a token, dev mode.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_allowed_requests_and_reject_reasons() {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let server = JwksServer::start(jwks(&[&key])).await;
    let proxy = Proxy::start(&TestConfig::jwks(&upstream.url(), &server.uri())).await;
    assert_eq!(proxy.admin_get("/healthz").await.status(), 200);

    for _ in 0..2 {
        expect_echo(proxy.get_with_token("/", &key.sign(&Claims::new())).await).await;
    }
    let expired = key.sign(&Claims::new().exp_in(-3600));
    expect_reject(
        proxy.get_with_token("/", &expired).await,
        401,
        "token_expired",
    )
    .await;
    expect_reject(proxy.get("/").send().await.unwrap(), 401, "token_missing").await;

    let text = proxy.metrics().await;
    let count = |outcome| metric(&text, "claimgate_requests_total", &[("outcome", outcome)]);
    assert_eq!(count("allowed"), Some(2.0), "metrics:\n{text}");
    assert_eq!(count("token_expired"), Some(1.0), "metrics:\n{text}");
    assert_eq!(count("token_missing"), Some(1.0), "metrics:\n{text}");
    let fetched = metric(
        &text,
        "claimgate_jwks_fetches_total",
        &[("provider", "test"), ("result", "ok")],
    );
    assert!(fetched.unwrap_or(0.0) >= 1.0, "metrics:\n{text}");
    assert_eq!(
        metric(&text, "claimgate_jwks_keys", &[("provider", "test")]),
        Some(1.0),
        "metrics:\n{text}"
    );
}

/// Drives accepted and rejected requests through every token source with verbose logging, then
/// checks that no token ever appears whole in the logs.
async fn assert_logs_never_contain_tokens(log_format: &str) {
    let key = SigningKey::rsa("rs", Algorithm::RS256);
    let upstream = EchoUpstream::start().await;
    let server = JwksServer::start(jwks(&[&key])).await;
    let config = TestConfig::jwks(&upstream.url(), &server.uri());
    let proxy = Proxy::spawn(
        &config,
        &["--log-format", log_format],
        &[("RUST_LOG", "debug"), ("CLAIMGATE_LOG", "debug")],
    );
    proxy.wait_ready().await;

    let good = key.sign(&Claims::new().set("sub", "log-test-user"));
    let expired = key.sign(&Claims::new().exp_in(-3600));
    let tampered = common::keys::tamper_payload(&good, &Claims::new().to_value());
    let stranger = SigningKey::rsa("stranger", Algorithm::RS256).sign(&Claims::new());
    let tokens = [&good, &expired, &tampered, &stranger];
    for token in tokens {
        proxy.get_with_token("/", token).await;
        proxy
            .get("/")
            .header("Cookie", format!("access_token={token}"))
            .send()
            .await
            .unwrap();
        proxy
            .get(&format!("/search?q=1&access_token={token}"))
            .send()
            .await
            .unwrap();
    }
    // A malformed header also must not be echoed verbatim into the logs.
    let junk = format!("{}.{}", "A".repeat(300), "B".repeat(300));
    proxy.get_with_token("/", &junk).await;
    proxy.terminate();

    let logs = proxy.stderr();
    assert!(
        !logs.trim().is_empty(),
        "the proxy logged nothing at debug level"
    );
    for token in tokens.iter().map(|t| t.as_str()).chain([junk.as_str()]) {
        assert!(
            !logs.contains(token),
            "a whole token appears in the {log_format} logs:\n{logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_never_contain_a_token() {
    assert_logs_never_contain_tokens("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_never_contain_a_token() {
    assert_logs_never_contain_tokens("json").await;
}

/// `claimgate --dev`, moved off its fixed 8080/9901 with `--listen`/`--admin-listen` so the test
/// cannot collide with anything else on the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_mints_a_token_that_passes_its_own_proxy() {
    let client = http_client();
    // Free ports are picked by binding and releasing them, so a parallel test can take one before
    // the binary binds it; a dev process that exits early is retried on fresh ports.
    let mut started = None;
    for _attempt in 0..3 {
        let (proxy, admin) = (
            format!("http://127.0.0.1:{}", free_port()),
            format!("http://127.0.0.1:{}", free_port()),
        );
        let child = std::process::Command::new(BIN)
            .arg("--dev")
            .args(["--listen", proxy.trim_start_matches("http://")])
            .args(["--admin-listen", admin.trim_start_matches("http://")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut guard = KillOnDrop(child);
        for _ in 0..150 {
            if guard.0.try_wait().unwrap().is_some() {
                break;
            }
            let url = format!("{admin}/dev/token?sub=alice&name=Alice");
            if let Ok(r) = client.get(url).send().await {
                if r.status() == 200 {
                    let token = r.text().await.unwrap().trim().to_owned();
                    started = Some((proxy.clone(), admin.clone(), token, guard));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if started.is_some() {
            break;
        }
    }
    let (proxy, admin, token, _guard) = started.expect("dev admin never served /dev/token");
    let jwks = client.get(format!("{admin}/dev/jwks.json")).send().await;
    let jwks: serde_json::Value = jwks.unwrap().json().await.unwrap();
    assert!(!jwks["keys"].as_array().unwrap().is_empty(), "{jwks}");
    let resp = client
        .get(format!("{proxy}/dev-check"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("alice"), "echo should show the user: {text}");
    let resp = client.get(format!("{proxy}/")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

/// Kills the dev-mode child even when an assertion fails, so its fixed ports are released.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
