//! The access log through the real binary in `--log-format json`: one line per request with its
//! fields, never the token, and `X-Request-Id` kept, replaced or generated, returned to the
//! client and forwarded upstream.

mod common;

use common::*;
use serde_json::Value;

/// The `claimgate::access` lines of the proxy's JSON log, as their `fields` objects.
fn access_lines(logs: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "claimgate::access")
        .map(|v| v["fields"].clone())
        .collect()
}

fn is_generated(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_json_line_per_request_with_request_ids() {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let server = JwksServer::start(jwks(&[&key])).await;
    // A rule turns path normalization on: the line has the path the rules judged.
    let config = TestConfig::jwks(&upstream.url(), &server.uri()).set(
        "/rules",
        serde_json::json!([{"match": {"path_prefix": "/"}, "auth": "required"}]),
    );
    let proxy = Proxy::spawn(&config, &["--log-format", "json"], &[]);
    proxy.wait_ready().await;
    let token = key.sign(&Claims::new().set("sub", "alice"));

    // 1. Allowed, valid id kept: forwarded upstream and returned.
    let resp = proxy
        .get("/a/./b//c?q=1")
        .bearer_auth(&token)
        .header("X-Request-Id", "client-id-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "client-id-1");
    let echo = expect_echo(resp).await;
    assert_eq!(echo.header("x-request-id"), Some("client-id-1"));

    // 2. Allowed, invalid id (a space) replaced by a generated one, the same both ways.
    let resp = proxy
        .get("/x")
        .bearer_auth(&token)
        .header("X-Request-Id", "has space")
        .send()
        .await
        .unwrap();
    let returned = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(is_generated(&returned), "{returned}");
    assert_eq!(
        expect_echo(resp).await.header("x-request-id"),
        Some(&*returned)
    );

    // 3. Rejected, no id: one is generated and returned on the rejection too.
    let resp = proxy.get("/denied").send().await.unwrap();
    let rejected_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(is_generated(&rejected_id), "{rejected_id}");
    expect_reject(resp, 401, "token_missing").await;

    // 4. An id over 128 characters is replaced.
    let long = "a".repeat(129);
    let resp = proxy
        .get("/long")
        .bearer_auth(&token)
        .header("X-Request-Id", &long)
        .send()
        .await
        .unwrap();
    let long_replaced = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(is_generated(&long_replaced), "{long_replaced}");
    expect_echo(resp).await;
    assert_eq!(upstream.requests().len(), 3);

    proxy.terminate();
    let logs = proxy.stderr();
    assert!(!logs.contains(&token), "the token is in the log:\n{logs}");
    let lines = access_lines(&logs);
    assert_eq!(lines.len(), 4, "one access line per request:\n{logs}");

    let first = &lines[0];
    assert_eq!(first["method"], "GET");
    // The normalized path the rules judged; the query is not logged.
    assert_eq!(first["path"], "/a/b/c", "{first}");
    assert_eq!(first["status"], 200);
    assert_eq!(first["reason"], "allowed");
    assert_eq!(first["user"], "alice");
    assert_eq!(first["provider"], "test");
    assert_eq!(first["request_id"], "client-id-1");
    assert!(first["latency_us"].as_u64().is_some(), "{first}");
    let upstream_us = first["upstream_latency_us"]
        .as_u64()
        .expect("upstream latency");
    assert!(
        upstream_us <= first["latency_us"].as_u64().unwrap(),
        "{first}"
    );
    // The echo upstream answers JSON describing the request: its body is what was sent.
    assert!(first["bytes"].as_u64().unwrap() > 0, "{first}");

    assert_eq!(lines[1]["request_id"], returned.as_str());
    let denied = &lines[2];
    assert_eq!(denied["path"], "/denied");
    assert_eq!(denied["status"], 401);
    assert_eq!(denied["reason"], "token_missing");
    assert_eq!(denied["user"], "");
    assert_eq!(denied["request_id"], rejected_id.as_str());
    assert!(denied.get("upstream_latency_us").is_none(), "{denied}");
    assert!(denied["bytes"].as_u64().unwrap() > 0, "{denied}");
    assert_eq!(lines[3]["request_id"], long_replaced.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_false_writes_no_line_but_keeps_request_ids() {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let server = JwksServer::start(jwks(&[&key])).await;
    let config = TestConfig::jwks(&upstream.url(), &server.uri()).set("/access_log", false);
    let proxy = Proxy::spawn(&config, &["--log-format", "json"], &[]);
    proxy.wait_ready().await;
    let resp = proxy
        .get("/")
        .bearer_auth(key.sign(&Claims::new()))
        .header("X-Request-Id", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "kept");
    assert_eq!(expect_echo(resp).await.header("x-request-id"), Some("kept"));
    proxy.terminate();
    let logs = proxy.stderr();
    assert!(access_lines(&logs).is_empty(), "{logs}");
}
