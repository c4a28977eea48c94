//! The bypasses found in review (issue 9), each tried through the real binary the way an
//! attacker would, most with a raw socket: the request must be refused before the upstream
//! sees it, or reach it without the smuggled identity, token or path.

mod common;

use common::raw::{self, RawResponse};
use common::*;
use serde_json::json;

struct Env {
    key: SigningKey,
    upstream: EchoUpstream,
    _jwks: JwksServer,
    proxy: Proxy,
}

/// `/admin` needs a token with `role: admin`; `/public` needs nothing.
fn admin_rules(ignore_case: bool) -> serde_json::Value {
    json!([
        {"name": "admins", "match": {"path_prefix": "/admin", "ignore_case": ignore_case},
         "allow_when": {"%%token.role": "admin"}},
        {"match": {"path_prefix": "/public"}, "auth": "none"},
    ])
}

async fn setup(config: impl FnOnce(TestConfig) -> TestConfig) -> Env {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let config = config(TestConfig::jwks(&upstream.url(), &jwks_server.uri()));
    let proxy = Proxy::start(&config).await;
    Env {
        key,
        upstream,
        _jwks: jwks_server,
        proxy,
    }
}

impl Env {
    fn token(&self, role: &str) -> String {
        self.key.sign(&Claims::new().set("role", role))
    }

    fn bearer(&self, role: &str) -> String {
        format!("Authorization: Bearer {}", self.token(role))
    }

    async fn get(&self, path: &str, headers: &[String]) -> RawResponse {
        raw::get(&self.proxy.url, path, headers).await
    }
}

fn expect(resp: &RawResponse, status: u16, reason: &str, what: &str) {
    assert_eq!(resp.status, status, "{what}: {resp:?}");
    assert_eq!(resp.reason().as_deref(), Some(reason), "{what}: {resp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_other_than_websocket_are_refused_and_never_forwarded() {
    let env = setup(|c| c.set("/rules", admin_rules(false))).await;
    let host = env.proxy.url.trim_start_matches("http://").to_owned();
    for (path, upgrade, auth) in [
        ("/api", "h2c", env.bearer("reader")),
        ("/api", "websocket, h2c", env.bearer("reader")),
        ("/api", "h2c, websocket", env.bearer("reader")),
        ("/api", "TLS/1.2", env.bearer("reader")),
        ("/public/x", "h2c", "X-Nothing: 1".to_owned()),
    ] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade, HTTP2-Settings\r\n\
             Upgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n{auth}\r\n\r\n"
        );
        let resp = raw::send(&env.proxy.url, request.as_bytes()).await;
        expect(&resp, 400, "bad_upgrade", upgrade);
    }
    assert!(
        env.upstream.requests().is_empty(),
        "an upgrade reached the upstream"
    );

    // A WebSocket upgrade is judged like any request on its route.
    let websocket = [
        "Connection: Upgrade".to_owned(),
        "Upgrade: websocket".to_owned(),
        "Sec-WebSocket-Version: 13".to_owned(),
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".to_owned(),
    ];
    let resp = env.get("/admin/ws", &websocket).await;
    expect(&resp, 401, "token_missing", "websocket without a token");
    let mut with_token = websocket.to_vec();
    with_token.push(env.bearer("reader"));
    let resp = env.get("/admin/ws", &with_token).await;
    expect(&resp, 403, "forbidden", "websocket with a reader token");
    assert!(env.upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_parameters_and_lookalike_segments_are_refused() {
    let env = setup(|c| c.set("/rules", admin_rules(false))).await;
    let reader = [env.bearer("reader")];
    for path in [
        "/admin;x=1/panel",
        "/admin;/panel",
        "/admin./panel",
        "/admin%2e/panel",
        "/admin%20/panel",
        "/admin%09/panel",
        "/admin%00/panel",
        "/%u0061dmin/panel",
        "/admin%2Fpanel",
    ] {
        expect(&env.get(path, &reader).await, 400, "bad_path", path);
    }
    for path in [
        "/public/..;/admin/panel",
        "/public/..;x=1/admin/panel",
        "/public;x/a",
    ] {
        expect(&env.get(path, &[]).await, 400, "bad_path", path);
    }
    assert!(
        env.upstream.requests().is_empty(),
        "{:?}",
        env.upstream.requests()
    );

    // What the rules resolve themselves still works and reaches the upstream resolved.
    let resp = env.get("/public/../admin/panel", &reader).await;
    expect(
        &resp,
        403,
        "forbidden",
        "dot segments are resolved before judging",
    );
    let resp = env.get("/public/x/../%61bout", &[]).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(env.upstream.requests()[0].path, "/public/about");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_semicolons_are_judged_without_parameters_and_forwarded_with_them() {
    let env = setup(|c| {
        c.set("/rules", admin_rules(false))
            .set("/paths/allow_semicolons", true)
    })
    .await;
    let path = "/admin;jsessionid=1/panel";
    let resp = env.get(path, &[env.bearer("reader")]).await;
    expect(&resp, 403, "forbidden", "reader on /admin;x/panel");
    let resp = env.get(path, &[env.bearer("admin")]).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(env.upstream.requests()[0].path, path);
    // Climbing after the parameters go stays refused.
    let resp = env.get("/public/..;/admin/panel", &[]).await;
    expect(&resp, 400, "bad_path", "..; with allow_semicolons");
    assert_eq!(env.upstream.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_case_rules_match_any_letter_case() {
    let env = setup(|c| c.set("/rules", admin_rules(true))).await;
    for path in ["/ADMIN/panel", "/Admin", "/aDmIn/x"] {
        let resp = env.get(path, &[env.bearer("reader")]).await;
        expect(&resp, 403, "forbidden", path);
    }
    assert!(env.upstream.requests().is_empty());
    let resp = env.get("/ADMIN/panel", &[env.bearer("admin")]).await;
    assert_eq!(resp.status, 200, "{resp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_spellings_of_identity_headers_are_stripped() {
    let env = setup(|c| c.set("/rules", admin_rules(false))).await;
    let spoofs = [
        "X_User_Id: admin",
        "X-User_Id: admin",
        "x_user-name: Mallory",
        "x_claimgate_user: eyJpZCI6ImFkbWluIn0",
    ];
    for path in ["/api", "/public/x"] {
        let mut headers: Vec<String> = spoofs.iter().map(|s| s.to_string()).collect();
        headers.push(env.bearer("reader"));
        let resp = env.get(path, &headers).await;
        assert_eq!(resp.status, 200, "{path}: {resp:?}");
    }
    let seen = env.upstream.requests();
    assert_eq!(seen.len(), 2);
    for echo in &seen {
        for name in echo.headers.keys() {
            assert!(
                !name.contains('_'),
                "{name} reached the upstream: {:?}",
                echo.headers
            );
        }
    }
    assert_eq!(seen[0].header("x-user-id"), Some("alice"));
    assert!(
        !seen[1].has_header("x-user-id"),
        "auth: none injects no identity"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_one_token_is_ambiguous() {
    let env = setup(|c| c).await;
    let valid = env.token("reader");
    let forged = common::keys::unsigned_token(&Claims::new().set("sub", "admin"));
    let cases = [
        (
            "/",
            vec![
                format!("Authorization: Bearer {valid}"),
                format!("Authorization: Bearer {forged}"),
            ],
        ),
        (
            "/",
            vec![
                format!("Authorization: Bearer {valid}"),
                format!("Cookie: access_token={valid}"),
            ],
        ),
        (
            "/?access_token=x",
            vec![format!("Cookie: access_token={valid}")],
        ),
        (
            &*format!("/?access_token={valid}"),
            vec![format!("Authorization: Bearer {valid}")],
        ),
        (
            "/",
            vec![format!(
                "Cookie: access_token={valid}; access_token={forged}"
            )],
        ),
        (
            "/",
            vec![
                format!("Authorization: Bearer {valid}"),
                "Authorization: Basic eDp5".into(),
            ],
        ),
    ];
    for (path, headers) in &cases {
        let resp = env.get(path, headers).await;
        expect(
            &resp,
            400,
            "token_ambiguous",
            &format!("{path} {headers:?}"),
        );
    }
    assert!(env.upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_removed_from_every_source_without_pass_authorization() {
    let env = setup(|c| {
        c.set("/forward/pass_authorization", false)
            .set("/rules", admin_rules(false))
    })
    .await;
    let token = env.token("reader");
    let cookie = format!("Cookie: theme=dark; access_token={token}; lang=en");
    for (path, headers) in [
        ("/api?a=1".to_owned(), vec![cookie.clone()]),
        (format!("/api?a=1&access_token={token}&b=2"), vec![]),
        (format!("/public/x?access_token={token}"), vec![]),
        ("/public/x".to_owned(), vec![cookie.clone()]),
        (
            "/public/x".to_owned(),
            vec![format!("Authorization: Bearer {token}")],
        ),
    ] {
        let resp = env.get(&path, &headers).await;
        assert_eq!(resp.status, 200, "{path}: {resp:?}");
    }
    let seen = env.upstream.requests();
    assert_eq!(seen.len(), 5);
    for echo in &seen {
        let everything = format!("{:?} {:?}", echo.query, echo.headers);
        assert!(
            !everything.contains(&token),
            "the token reached the upstream: {everything}"
        );
        assert!(!echo.has_header("authorization"));
    }
    assert_eq!(seen[0].header("cookie"), Some("theme=dark; lang=en"));
    assert_eq!(seen[0].header("x-user-id"), Some("alice"));
    assert_eq!(seen[1].query.as_deref(), Some("a=1&b=2"));
    assert_eq!(seen[2].query, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacker_text_cannot_forge_a_log_line() {
    let env = setup(|c| c).await;
    let forged =
        "RS256\n2026-12-02T00:00:00.000000Z  INFO claimgate::proxy: FORGED request allowed";
    let header = json!({"alg": forged, "typ": "JWT", "kid": "ec"});
    let token = env.key.sign_raw(&header, &Claims::new().to_value());
    let resp = env.proxy.get_with_token("/", &token).await;
    expect_reject(resp, 401, "alg_not_allowed").await;
    env.proxy.terminate();
    let log = env.proxy.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("FORGED")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("request rejected"), "{log}");
    assert!(
        lines[0].contains(r#"detail="algorithm RS256\n2026"#),
        "{log}"
    );
}
