//! Token verification as a client sees it: which tokens reach the upstream and which get a 401
//! with which reason code.

mod common;

use common::keys::{hs256_with_secret, tamper_payload, unsigned_token};
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;

/// Starts an echo upstream, a JWKS server publishing `keys`, and a proxy using them.
async fn setup(keys: &[&SigningKey], config: impl FnOnce(TestConfig) -> TestConfig) -> Env {
    let upstream = EchoUpstream::start().await;
    let jwks_server = JwksServer::start(jwks(keys)).await;
    let proxy = Proxy::start(&config(TestConfig::jwks(
        &upstream.url(),
        &jwks_server.uri(),
    )))
    .await;
    Env {
        upstream,
        _jwks: jwks_server,
        proxy,
    }
}

/// A 401 with this reason code for `token` on `/`.
async fn rejected(env: &Env, token: &str, reason: &str) {
    expect_reject(env.proxy.get_with_token("/", token).await, 401, reason).await;
}

struct Env {
    upstream: EchoUpstream,
    _jwks: JwksServer,
    proxy: Proxy,
}

/// The identity every default-claims token must produce upstream.
fn assert_alice(echo: &Echo) {
    assert_eq!(echo.header("x-user-id"), Some("alice"));
    assert_eq!(echo.header("x-user-name"), Some("Alice"));
    let user = decode_user_header(echo.header("x-claimgate-user").expect("user header"));
    assert_eq!(user["id"], "alice");
    assert_eq!(user["provider"], "test");
    assert_eq!(user["data"]["name"], "Alice");
    assert_eq!(user["data"]["email"], "alice@example.test");
    // Arrays must survive as arrays, not be flattened to a string.
    assert_eq!(user["data"]["groups"], json!(["admins", "devs"]));
}

async fn accepts(key: SigningKey) {
    let env = setup(&[&key], |c| c).await;
    let token = key.sign(&Claims::new());
    let echo = expect_echo(env.proxy.get_with_token("/hello", &token).await).await;
    assert_alice(&echo);
    assert_eq!(echo.path, "/hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_token_reaches_upstream_with_identity() {
    accepts(SigningKey::rsa("rs", Algorithm::RS256)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ps256_token_reaches_upstream_with_identity() {
    accepts(SigningKey::rsa("ps", Algorithm::PS256)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_token_reaches_upstream_with_identity() {
    accepts(SigningKey::es256("ec")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_token_reaches_upstream_with_identity() {
    accepts(SigningKey::ed25519("ed")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_token_with_signing_keys_reaches_upstream() {
    let secret = "a-test-secret-that-is-longer-than-32-bytes";
    let upstream = EchoUpstream::start().await;
    let proxy = Proxy::start(&TestConfig::hmac(&upstream.url(), secret)).await;
    let token = SigningKey::hs256(secret).sign(&Claims::new());
    assert_alice(&expect_echo(proxy.get_with_token("/", &token).await).await);

    // A second secret in `signing_keys` is accepted too (rotation).
    let next = "the-next-secret-during-rotation-0123456789";
    let config =
        TestConfig::hmac(&upstream.url(), secret).provider("signing_keys", json!([secret, next]));
    let rotating = Proxy::start(&config).await;
    let token = SigningKey::hs256(next).sign(&Claims::new());
    expect_echo(rotating.get_with_token("/", &token).await).await;

    // Same claims, different secret: the MAC does not verify.
    let forged = SigningKey::hs256("another-secret-that-is-longer-than-32-bytes!");
    let resp = proxy
        .get_with_token("/", &forged.sign(&Claims::new()))
        .await;
    expect_reject(resp, 401, "bad_signature").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_gets_bearer_challenge() {
    let key = SigningKey::es256("ec");
    let env = setup(&[&key], |c| c).await;
    let resp = env.proxy.get("/").send().await.unwrap();
    expect_reject(resp, 401, "token_missing").await;
    assert!(env.upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_not_yet_valid_tokens_are_rejected_beyond_skew() {
    let key = SigningKey::es256("ec");
    let env = setup(&[&key], |c| c).await;
    let expired = key.sign(&Claims::new().exp_in(-120));
    rejected(&env, &expired, "token_expired").await;
    let early = key.sign(&Claims::new().nbf_in(300));
    let resp = env.proxy.get_with_token("/", &early).await;
    expect_reject(resp, 401, "token_not_yet_valid").await;
    assert!(env.upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_within_clock_skew_are_accepted() {
    let key = SigningKey::es256("ec");
    let env = setup(&[&key], |c| c).await;
    // 60 s skew: expired 20 s ago and valid from 20 s in the future both still pass.
    let token = key.sign(&Claims::new().exp_in(-20).nbf_in(20));
    assert_alice(&expect_echo(env.proxy.get_with_token("/", &token).await).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_issuer_is_rejected() {
    let key = SigningKey::es256("ec");
    let env = setup(&[&key], |c| c).await;
    let token = key.sign(&Claims::new().set("iss", "https://evil.test"));
    rejected(&env, &token, "issuer_unknown").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listed_audience_is_required_by_default() {
    let key = SigningKey::es256("ec");
    let env = setup(&[&key], |c| {
        c.provider("audience", json!(["api", "billing"]))
    })
    .await;
    let p = &env.proxy;
    let partial = key.sign(&Claims::new().set("aud", json!(["api"])));
    expect_reject(
        p.get_with_token("/", &partial).await,
        401,
        "audience_mismatch",
    )
    .await;
    let other = key.sign(&Claims::new().set("aud", "other"));
    expect_reject(
        p.get_with_token("/", &other).await,
        401,
        "audience_mismatch",
    )
    .await;
    let all = key.sign(&Claims::new().set("aud", json!(["billing", "x", "api"])));
    expect_echo(p.get_with_token("/", &all).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_listed_audience_suffices_when_configured() {
    let key = SigningKey::es256("ec");
    let env = setup(&[&key], |c| {
        c.provider("audience", json!(["api", "billing"]))
            .provider("require_any_audience", true)
    })
    .await;
    let p = &env.proxy;
    let one = key.sign(&Claims::new().set("aud", "billing"));
    expect_echo(p.get_with_token("/", &one).await).await;
    let other = key.sign(&Claims::new().set("aud", json!(["other", "x"])));
    expect_reject(
        p.get_with_token("/", &other).await,
        401,
        "audience_mismatch",
    )
    .await;
    let none = key.sign(&Claims::new().remove("aud"));
    expect_reject(p.get_with_token("/", &none).await, 401, "audience_mismatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_payload_fails_signature_check() {
    let key = SigningKey::rsa("rs", Algorithm::RS256);
    let env = setup(&[&key], |c| c).await;
    let token = key.sign(&Claims::new());
    let forged = tamper_payload(&token, &Claims::new().set("sub", "admin").to_value());
    rejected(&env, &forged, "bad_signature").await;
    assert!(env.upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_is_rejected() {
    let key = SigningKey::rsa("rs", Algorithm::RS256);
    let env = setup(&[&key], |c| c).await;
    let token = unsigned_token(&Claims::new());
    rejected(&env, &token, "alg_not_allowed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_signed_with_rsa_public_key_is_rejected() {
    let key = SigningKey::rsa("rs", Algorithm::RS256);
    let env = setup(&[&key], |c| c).await;
    for secret in [key.public_pem().into_bytes(), key.public_der().to_vec()] {
        let token = hs256_with_secret(&secret, Some("rs"), &Claims::new());
        let resp = env.proxy.get_with_token("/", &token).await;
        expect_reject(resp, 401, "alg_not_allowed").await;
    }
    assert!(env.upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_with_rsa_key_is_rejected_even_if_hs256_is_listed() {
    // A provider that lists HS256 next to a JWKS must still never use an RSA JWK as HMAC secret.
    let key = SigningKey::rsa("rs", Algorithm::RS256);
    let upstream = EchoUpstream::start().await;
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let config = TestConfig::jwks(&upstream.url(), &jwks_server.uri())
        .provider("algorithms", json!(["RS256", "HS256"]));
    let proxy = Proxy::spawn(&config, &[], &[]);
    let check = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&proxy.config_path)
        .output()
        .unwrap();
    if !check.status.success() {
        // Refusing such a config outright is an acceptable (stricter) answer, but only for this
        // reason: any other failure would hide a broken proxy behind an early return.
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert!(
            stderr.contains("providers[0].algorithms") || stderr.contains("HS256"),
            "check failed for an unrelated reason: {stderr}"
        );
        return;
    }
    proxy.wait_ready().await;
    let token = hs256_with_secret(key.public_pem().as_bytes(), Some("rs"), &Claims::new());
    let resp = proxy.get_with_token("/", &token).await;
    expect_reject(resp, 401, "key_alg_mismatch").await;
    assert!(upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_crit_header_is_rejected() {
    let key = SigningKey::rsa("rs", Algorithm::RS256);
    let env = setup(&[&key], |c| c).await;
    let mut header = key.header();
    header["crit"] = json!(["urn:example:must-understand"]);
    header["urn:example:must-understand"] = json!(true);
    let token = key.sign_raw(&header, &Claims::new().to_value());
    rejected(&env, &token, "crit_unsupported").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_token_is_refused() {
    let key = SigningKey::es256("ec");
    let env = setup(&[&key], |c| c.set("/max_token_bytes", 1024)).await;
    let token = key.sign(&Claims::new().set("padding", "x".repeat(2000)));
    assert!(token.len() > 1024);
    rejected(&env, &token, "token_too_large").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_token_is_malformed() {
    let key = SigningKey::es256("ec");
    let env = setup(&[&key], |c| c).await;
    for garbage in ["not-a-jwt", "a.b.c", "...."] {
        let resp = env.proxy.get_with_token("/", garbage).await;
        expect_reject(resp, 401, "malformed").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_required_metadata_field_is_rejected() {
    let key = SigningKey::es256("ec");
    let env = setup(&[&key], |c| c).await;
    let token = key.sign(&Claims::new().remove("user"));
    rejected(&env, &token, "claim_missing").await;
    // Optional fields may be absent.
    let token = key.sign(&Claims::new().remove("email").remove("groups"));
    let echo = expect_echo(env.proxy.get_with_token("/", &token).await).await;
    let user = decode_user_header(echo.header("x-claimgate-user").unwrap());
    assert_eq!(user["data"]["name"], "Alice");
    assert!(user["data"].get("email").is_none_or(|v| v.is_null()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_token_is_rejected_once_it_expires() {
    // The verified-token cache must never outlive the token's own `exp`.
    let key = SigningKey::es256("ec");
    let env = setup(&[&key], |c| c.provider("clock_skew_seconds", 0)).await;
    let token = key.sign(&Claims::new().exp_in(2));
    expect_echo(env.proxy.get_with_token("/", &token).await).await;
    expect_echo(env.proxy.get_with_token("/", &token).await).await;
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    rejected(&env, &token, "token_expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn algorithm_outside_the_allow_list_is_rejected() {
    // ES384 is a valid, well-signed token, but the provider only lists ES256 among the ECs.
    let key = SigningKey::es384("p384");
    let usable = SigningKey::es256("p256");
    let env = setup(&[&usable, &key], |c| c).await;
    let token = key.sign(&Claims::new());
    rejected(&env, &token, "alg_not_allowed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_scheme_is_case_insensitive() {
    let key = SigningKey::es256("ec");
    let env = setup(&[&key], |c| c).await;
    let token = key.sign(&Claims::new());
    for scheme in ["bearer", "BEARER"] {
        let resp = env
            .proxy
            .get("/")
            .header("Authorization", format!("{scheme} {token}"))
            .send()
            .await
            .unwrap();
        assert_alice(&expect_echo(resp).await);
    }
}

/// Cached sessions drop the mapped fields unless something reads them later: a rule on
/// `%%user.data` must still see them when the same token comes back (a cache hit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_on_a_mapped_field_holds_for_repeated_tokens() {
    let key = SigningKey::rsa("rs", Algorithm::RS256);
    let rule = json!([{"name": "alices", "match": {"path_prefix": "/"},
        "allow_when": {"%%user.data.name": "Alice"}}]);
    let env = setup(&[&key], |c| c.set("/rules", rule)).await;
    let alice = key.sign(&Claims::new());
    let bob = key.sign(
        &Claims::new()
            .set("sub", "bob")
            .set("user", json!({"name": "Bob"})),
    );
    for _ in 0..2 {
        assert_alice(&expect_echo(env.proxy.get_with_token("/x", &alice).await).await);
        let denied = env.proxy.get_with_token("/x", &bob).await;
        assert_eq!(denied.status(), 403);
    }
    let hits = metric(
        &env.proxy.metrics().await,
        "claimgate_token_cache_hits_total",
        &[],
    );
    assert_eq!(hits, Some(2.0), "the second round must come from the cache");
}
