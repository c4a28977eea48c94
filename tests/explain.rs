//! `POST /explain` and `claimgate explain` through the real binary: one test per decision kind,
//! each checking the step that decided, and that the token is never echoed back whole.

mod common;

use common::keys::{Claims, SigningKey};
use common::servers::{dead_url, JwksServer};
use common::{Proxy, TestConfig, BIN};
use serde_json::{json, Value};

const SECRET: &str = "explain-test-secret-explain-test-secret";

fn config() -> TestConfig {
    TestConfig::hmac(&dead_url(), SECRET).set(
        "/rules",
        json!([
            {"name": "admins", "match": {"path_prefix": "/admin"},
             "allow_when": {"%or": [{"%%token.realm_access.roles": "root"}, {"%%user.id": "bob"}]}},
            {"name": "items", "match": {"path_prefix": "/items"}, "scopes": ["write"]},
            {"name": "open", "match": {"path_prefix": "/"},
             "allow_when": {"%%token.email": {"%exists": true}}},
        ]),
    )
}

async fn explain(proxy: &Proxy, body: Value) -> (u16, Value) {
    let resp = proxy
        .client
        .post(format!("{}/explain", proxy.admin_url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    if let Some(token) = body["token"].as_str() {
        assert!(
            !text.contains(token),
            "the answer holds the whole token: {text}"
        );
    }
    (status, serde_json::from_str(&text).unwrap())
}

fn check<'a>(answer: &'a Value, name: &str) -> &'a Value {
    answer["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["check"] == name))
        .unwrap_or_else(|| panic!("no check {name}: {answer:#}"))
}

fn sign(claims: &Claims) -> String {
    SigningKey::hs256(SECRET).sign(claims)
}

#[tokio::test]
async fn allow_shows_every_step_and_the_headers() {
    let proxy = Proxy::start(&config()).await;
    let token = sign(&Claims::new());
    let (status, answer) = explain(
        &proxy,
        json!({"token": token, "method": "GET", "path": "/docs", "headers": {"x-a": "1"}}),
    )
    .await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer["decision"], "allow");
    assert_eq!(answer["status"], 200);
    assert!(answer.get("reason").is_none());
    assert_eq!(answer["token"]["prefix"], json!(&token[..8]));
    assert_eq!(
        answer["token"]["sha256"],
        json!(common::servers::sha256_hex(token.as_bytes()))
    );
    assert_eq!(answer["source"], "header:Authorization");
    assert_eq!(answer["provider"], "test");
    for name in [
        "token_size",
        "structure",
        "iss",
        "alg",
        "kid",
        "signature",
        "exp",
        "nbf",
        "iat",
        "aud",
        "user_id",
        "metadata",
        "token_source",
        "allow_when",
        "headers",
    ] {
        assert_eq!(check(&answer, name)["result"], "pass", "{name}: {answer:#}");
    }
    assert_eq!(check(&answer, "alg")["detail"]["alg"], "HS256");
    assert_eq!(check(&answer, "user_data")["result"], "skipped");
    assert_eq!(check(&answer, "revocation")["reason"], "not_configured");
    assert_eq!(check(&answer, "route")["detail"]["auth"], "required");
    assert_eq!(answer["metadata"]["name"], "Alice", "{answer:#}");
    assert_eq!(answer["user_data"], Value::Null);
    assert_eq!(answer["rule"]["name"], "open");
    assert_eq!(answer["rule"]["allow_when"][0]["value"], true);
    assert_eq!(answer["headers"]["x-user-id"], "alice");
    assert_eq!(answer["headers"]["x-user-roles"], "admin,dev");
    let headers = answer["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"] == "headers");
    assert_eq!(headers.count(), 1, "{answer:#}");
}

#[tokio::test]
async fn expired_token_shows_exp_with_the_clock() {
    let proxy = Proxy::start(&config()).await;
    let token = sign(&Claims::new().exp_in(-3600));
    let (status, answer) = explain(&proxy, json!({"token": token, "path": "/docs"})).await;
    assert_eq!(status, 200);
    assert_eq!(answer["decision"], "deny");
    assert_eq!(answer["status"], 401);
    assert_eq!(answer["reason"], "token_expired");
    let exp = check(&answer, "exp");
    assert_eq!(exp["result"], "fail");
    assert_eq!(exp["reason"], "token_expired");
    assert!(exp["detail"]["now"].as_u64().unwrap() > exp["detail"]["value"].as_u64().unwrap());
    assert_eq!(exp["detail"]["skew_seconds"], 60);
    assert_eq!(check(&answer, "signature")["result"], "pass");
    assert_eq!(check(&answer, "aud")["result"], "skipped");
    assert_eq!(answer["headers"], json!({}));
}

#[tokio::test]
async fn bad_signature_is_a_401_at_the_signature_check() {
    let proxy = Proxy::start(&config()).await;
    let token = SigningKey::hs256("another-secret-another-secret-another").sign(&Claims::new());
    let (_, answer) = explain(&proxy, json!({"token": token})).await;
    assert_eq!(answer["decision"], "deny");
    assert_eq!(answer["status"], 401);
    assert_eq!(answer["reason"], "bad_signature");
    assert_eq!(check(&answer, "kid")["result"], "pass");
    assert_eq!(check(&answer, "signature")["result"], "fail");
    assert_eq!(check(&answer, "exp")["result"], "skipped");
    assert_eq!(check(&answer, "exp")["reason"], "not_reached");
    assert_eq!(answer["metadata"], Value::Null);
}

#[tokio::test]
async fn issuer_algorithm_and_audience_failures_name_their_check() {
    let proxy = Proxy::start(&config().provider("audience", json!(["api"]))).await;
    let cases = [
        (
            Claims::new().set("iss", "https://other.test"),
            "iss",
            "issuer_unknown",
        ),
        (
            Claims::new().set("aud", "elsewhere"),
            "aud",
            "audience_mismatch",
        ),
    ];
    for (claims, name, reason) in cases {
        let (_, answer) = explain(&proxy, json!({"token": sign(&claims)})).await;
        assert_eq!(answer["reason"], reason, "{answer:#}");
        assert_eq!(check(&answer, name)["result"], "fail");
        assert_eq!(check(&answer, name)["reason"], reason);
    }
    let (_, answer) = explain(&proxy, json!({"token": sign(&Claims::new())})).await;
    assert_eq!(
        check(&answer, "aud")["detail"]["configured"],
        json!(["api"])
    );
    // An RS256 token for an HS256-only provider: refused at the alg check, before any key.
    let rsa = SigningKey::rsa("k1", jsonwebtoken::Algorithm::RS256).sign(&Claims::new());
    let (_, answer) = explain(&proxy, json!({"token": rsa})).await;
    assert_eq!(answer["reason"], "alg_not_allowed");
    assert_eq!(check(&answer, "alg")["result"], "fail");
    assert_eq!(check(&answer, "alg")["detail"]["allowed"], json!(["HS256"]));
    assert_eq!(check(&answer, "kid")["reason"], "not_reached");
    // Not a JWT at all.
    let (_, answer) = explain(&proxy, json!({"token": "not-a-jwt"})).await;
    assert_eq!(answer["reason"], "malformed");
    assert_eq!(check(&answer, "structure")["result"], "fail");
    assert_eq!(answer["provider"], Value::Null);
}

#[tokio::test]
async fn rule_denied_shows_each_sub_expression() {
    let proxy = Proxy::start(&config()).await;
    let token = sign(&Claims::new());
    let (_, answer) = explain(&proxy, json!({"token": token, "path": "/admin/users"})).await;
    assert_eq!(answer["decision"], "deny");
    assert_eq!(answer["status"], 403);
    assert_eq!(answer["reason"], "forbidden");
    assert_eq!(check(&answer, "allow_when")["result"], "fail");
    assert_eq!(answer["rule"]["name"], "admins");
    let values: Vec<(String, bool)> = answer["rule"]["allow_when"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["expression"].as_str().unwrap().to_owned(),
                e["value"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(values.len(), 3, "{values:?}");
    assert!(values.iter().all(|(_, v)| !v), "{values:?}");
    assert!(values[0].0.starts_with(r#"{"%or":"#), "{values:?}");
    assert_eq!(values[1].0, r#"{"%%token.realm_access.roles":"root"}"#);
    assert_eq!(values[2].0, r#"{"%%user.id":"bob"}"#);

    // The same route for bob: the second branch holds.
    let token = sign(&Claims::new().set("sub", "bob"));
    let (_, answer) = explain(&proxy, json!({"token": token, "path": "/admin/users"})).await;
    assert_eq!(answer["decision"], "allow", "{answer:#}");
    assert_eq!(answer["rule"]["allow_when"][0]["value"], true);
    assert_eq!(answer["rule"]["allow_when"][2]["value"], true);
}

#[tokio::test]
async fn missing_scope_is_a_403_at_the_scopes_check() {
    let proxy = Proxy::start(&config()).await;
    let token = sign(&Claims::new().set("scope", "read"));
    let (_, answer) = explain(
        &proxy,
        json!({"token": token, "method": "POST", "path": "/items"}),
    )
    .await;
    assert_eq!(answer["status"], 403);
    assert_eq!(answer["reason"], "scope_missing");
    assert_eq!(check(&answer, "scopes")["result"], "fail");
    assert_eq!(answer["rule"]["name"], "items");
    assert_eq!(check(&answer, "allow_when")["result"], "skipped");
}

#[tokio::test]
async fn bad_bodies_are_400_with_the_reason_and_only_post_is_allowed() {
    let proxy = Proxy::start(&config()).await;
    let post = |body: &'static str| {
        proxy
            .client
            .post(format!("{}/explain", proxy.admin_url))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for (body, reason) in [
        ("{\"method\": \"GET\"}", "missing field `token`"),
        ("not json", "request body"),
        (
            "{\"token\": \"a.b.c\", \"tokn\": 1}",
            "unknown field `tokn`",
        ),
        (
            "{\"token\": \"a.b.c\", \"path\": \"docs\"}",
            "must start with `/`",
        ),
    ] {
        let resp = post(body).await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let answer: Value = resp.json().await.unwrap();
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(reason), "{body}: {error}");
    }
    let resp = proxy.admin_get("/explain").await;
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    // Other admin paths still refuse POST.
    let resp = proxy
        .client
        .post(format!("{}/metrics", proxy.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
}

#[tokio::test]
async fn explain_does_not_fill_the_verified_token_cache() {
    let proxy = Proxy::start(&config()).await;
    let token = sign(&Claims::new());
    let (_, first) = explain(&proxy, json!({"token": token, "path": "/docs"})).await;
    let (_, second) = explain(&proxy, json!({"token": token, "path": "/docs"})).await;
    // A cached verification would skip the checks; both runs verify for real.
    for answer in [&first, &second] {
        assert_eq!(check(answer, "signature")["result"], "pass");
    }
    let metrics = proxy.metrics().await;
    let entries = common::metric(&metrics, "claimgate_token_cache_entries", &[]);
    assert!(entries.unwrap_or(0.0) == 0.0, "{metrics}");
}

fn run_cli(config: &TestConfig, args: &[&str]) -> (Option<i32>, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("claimgate.yaml");
    let mut config = config.clone();
    config = config
        .set("/listen", "127.0.0.1:1")
        .set("/admin/listen", "127.0.0.1:1");
    std::fs::write(&path, config.yaml()).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("explain")
        .arg("--config")
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let answer = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code(), answer, format!("{stdout}{stderr}"))
}

#[test]
fn cli_explains_with_an_hmac_provider() {
    let token = sign(&Claims::new());
    let (code, answer, output) = run_cli(
        &config(),
        &[
            "--token", &token, "--method", "GET", "--path", "/docs", "--header", "X-A: 1",
        ],
    );
    assert_eq!(code, Some(0), "{output}");
    assert!(!output.contains(&token));
    assert_eq!(answer["decision"], "allow");
    assert_eq!(answer["headers"]["x-user-id"], "alice");

    let (code, answer, output) = run_cli(&config(), &["--token", &token, "--path", "/admin"]);
    assert_eq!(code, Some(1), "{output}");
    assert_eq!(answer["reason"], "forbidden");
}

#[tokio::test]
async fn cli_explains_with_a_jwks_provider() {
    let key = SigningKey::rsa("k1", jsonwebtoken::Algorithm::RS256);
    let jwks = JwksServer::start(common::keys::jwks(&[&key])).await;
    let config = TestConfig::jwks(&dead_url(), &jwks.uri());
    let token = key.sign(&Claims::new());
    let (code, answer, output) =
        tokio::task::spawn_blocking(move || run_cli(&config, &["--token", &token, "--path", "/x"]))
            .await
            .unwrap();
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(answer["decision"], "allow");
    assert_eq!(check(&answer, "kid")["detail"]["kid"], "k1");
    assert_eq!(check(&answer, "alg")["detail"]["alg"], "RS256");
    assert!(jwks.hits() >= 1);
}

/// The user data document used, first read from MongoDB, then (same user again) from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_data_shows_the_document_and_whether_it_came_from_the_cache() {
    use common::mongo::TestDb;
    use common::userdata::UdEnv;
    let env = UdEnv::mongo(TestDb::shared().await, |c| {
        c.set(
            "/rules",
            json!([{"name": "staff", "match": {"path_prefix": "/"},
                    "allow_when": {"%%user.custom_data.userGroup": "staff"}}]),
        )
    })
    .await;
    env.insert_and_settle(mongodb::bson::doc! {"user_id": "carol", "userGroup": "staff"})
        .await;
    let token = env.token("carol");
    let (_, first) = explain(&env.proxy, json!({"token": token, "path": "/x"})).await;
    assert_eq!(first["decision"], "allow", "{first:#}");
    assert_eq!(first["user_data"]["document"]["userGroup"], "staff");
    assert_eq!(first["user_data"]["from_cache"], false);
    assert_eq!(first["user_data"]["age_seconds"], Value::Null);
    assert_eq!(first["headers"]["x-user-group"], "staff");
    assert_eq!(check(&first, "user_data")["result"], "pass");
    let (_, second) = explain(&env.proxy, json!({"token": token, "path": "/x"})).await;
    assert_eq!(second["user_data"]["from_cache"], true, "{second:#}");
    assert!(second["user_data"]["age_seconds"].is_u64());
    assert_eq!(second["rule"]["allow_when"][0]["value"], true);
}
