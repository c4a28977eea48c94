//! OAuth scopes per rule through the real binary: `scope` and `scp` in their shapes, the 403
//! with the RFC 6750 `scope` attribute, `%%token.scopes` in headers, and the config checks.

mod common;

use common::*;
use serde_json::json;

async fn setup() -> (SigningKey, EchoUpstream, JwksServer, Proxy) {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let config = TestConfig::jwks(&upstream.url(), &jwks_server.uri())
        .set(
            "/rules",
            json!([
                {"name": "items", "match": {"path_prefix": "/items"}, "scopes": ["read", "write"]},
                {"name": "ops", "match": {"path_prefix": "/ops"}, "scopes_any": ["admin", "ops"]},
            ]),
        )
        .set("/forward/headers/X-Scopes", "%%token.scopes");
    let proxy = Proxy::start(&config).await;
    (key, upstream, jwks_server, proxy)
}

async fn expect_scope_missing(resp: reqwest::Response, scopes: &str) {
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = expect_reject(resp, 403, "scope_missing").await;
    assert_eq!(body["error"], "insufficient_scope");
    assert_eq!(
        challenge,
        format!(
            "Bearer error=\"insufficient_scope\", error_description=\"missing scope: {scopes}\", \
             scope=\"{scopes}\""
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_require_scopes_from_scope_or_scp() {
    let (key, upstream, _jwks, proxy) = setup().await;
    let token = |claims: Claims| key.sign(&claims);

    let both = token(Claims::new().set("scope", "openid read write"));
    let echo = expect_echo(proxy.get_with_token("/items/1", &both).await).await;
    assert_eq!(echo.header("x-scopes"), Some("openid,read,write"));
    let okta = token(Claims::new().set("scp", json!(["read", "write"])));
    expect_echo(proxy.get_with_token("/items", &okta).await).await;

    let read_only = token(Claims::new().set("scope", "read"));
    expect_scope_missing(proxy.get_with_token("/items", &read_only).await, "write").await;
    let none = token(Claims::new());
    expect_scope_missing(proxy.get_with_token("/items", &none).await, "read write").await;
    // A `scopes` claim of the token's own is replaced by the normalized one, never trusted.
    let forged = token(Claims::new().set("scopes", json!(["read", "write"])));
    expect_scope_missing(proxy.get_with_token("/items", &forged).await, "read write").await;

    let entra = token(Claims::new().set("scp", "ops"));
    expect_echo(proxy.get_with_token("/ops/x", &entra).await).await;
    expect_scope_missing(proxy.get_with_token("/ops", &read_only).await, "admin ops").await;
    assert_eq!(upstream.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_need_auth_required_and_scope_tokens() {
    for (rule, key) in [
        (
            json!({"auth": "none", "scopes": ["read"]}),
            "rules[0].scopes",
        ),
        (json!({"scopes_any": ["a b"]}), "rules[0].scopes_any[0]"),
    ] {
        let config = TestConfig::hmac("http://127.0.0.1:9", "secret-secret-secret-secret-32by")
            .set("/rules", json!([rule]));
        let (code, stderr) = check_config(&config);
        assert_ne!(code, Some(0), "{rule}: {stderr}");
        assert!(stderr.contains(key), "{rule}: {stderr}");
    }
}
