//! `mode: forward_auth` through the real binary: behind real nginx (`auth_request`) and Caddy
//! (`forward_auth`) with the README's configurations, and with exactly the headers Traefik's
//! `forwardAuth` and Envoy's `ext_authz` HTTP service send. The answer must be 200 with the
//! identity headers (and nothing a client sent), or the proxy mode's own rejection.

mod common;

use common::front::{assert_no_identity, echoed, setup, traefik, Env, FrontProxy};
use common::raw::{self, RawResponse};
use common::*;
use serde_json::json;

fn expect(resp: &RawResponse, status: u16, reason: &str, what: &str) {
    assert_eq!(resp.status, status, "{what}: {resp:?}");
    assert_eq!(resp.reason().as_deref(), Some(reason), "{what}: {resp:?}");
    if status == 401 {
        assert!(
            resp.header("www-authenticate").is_some(),
            "{what}: {resp:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_injects_identity_and_overwrites_client_copies() {
    let env = setup("x_original_uri", |c| c).await;
    let Some(nginx) = FrontProxy::nginx(env.claimgate_addr(), &env.upstream_addr()).await else {
        panic!("nginx is not installed: run `.ci/run` (it installs it) or apt-get install nginx");
    };
    // nginx itself drops the `_` spellings (`underscores_in_headers off`, its default).
    let forged = [
        "X-User-Id: mallory",
        "X_User_Id: mallory",
        "X-User_Id: mallory",
    ]
    .map(String::from);
    let mut headers = forged.to_vec();
    headers.push(env.bearer("user"));
    let resp = raw::get(&nginx.url, "/api/x?y=1", &headers).await;
    let echo = echoed(&resp, &format!("valid token; nginx log:\n{}", nginx.log()));
    assert_eq!(echo.header("x-user-id"), Some("alice"));
    assert!(
        !echo.has_header("x_user_id") && !echo.has_header("x-user_id"),
        "{echo:?}"
    );
    let user = decode_user_header(echo.header("x-claimgate-user").unwrap());
    assert_eq!(user["id"], "alice");
    assert_eq!(
        (echo.path.as_str(), echo.query.as_deref()),
        ("/api/x", Some("y=1"))
    );

    // Anonymous: claimgate answers 200 without identity headers, and the forged one is gone.
    let resp = raw::get(&nginx.url, "/public/x", &forged).await;
    let echo = echoed(&resp, "anonymous route");
    assert_no_identity(&echo);
    let resp = raw::get(&nginx.url, "/opt/x", &forged).await;
    assert!(!echoed(&resp, "optional, no token").has_header("x-user-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_delivers_claimgate_rejections_with_body_and_challenge() {
    let env = setup("x_original_uri", |c| c).await;
    let Some(nginx) = FrontProxy::nginx(env.claimgate_addr(), &env.upstream_addr()).await else {
        panic!("nginx is not installed: run `.ci/run` (it installs it) or apt-get install nginx");
    };
    let resp = raw::get(&nginx.url, "/api/x", &[]).await;
    expect(&resp, 401, "token_missing", "no token");
    assert_eq!(
        resp.header("www-authenticate"),
        Some("Bearer realm=\"claimgate\"")
    );
    let resp = raw::get(
        &nginx.url,
        "/api/x",
        &["Authorization: Bearer a.b.c".into()],
    )
    .await;
    expect(&resp, 401, "malformed", "bad token");
    let challenge = resp.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "{resp:?}"
    );
    let resp = raw::get(&nginx.url, "/admin/panel", &[env.bearer("user")]).await;
    expect(&resp, 403, "forbidden", "rule denies");

    // The client's own X-Original-URI is overwritten by nginx: /admin is judged, not /public.
    let lie = [
        "X-Original-URI: /public/x".to_owned(),
        "X-Original-Method: GET".to_owned(),
    ];
    let resp = raw::get(&nginx.url, "/admin/panel", &lie).await;
    expect(&resp, 401, "token_missing", "client-sent X-Original-URI");
    // The subrequest location is internal: clients cannot call it.
    assert_eq!(raw::get(&nginx.url, "/_claimgate", &lie).await.status, 404);
    assert!(
        env.upstream.requests().is_empty(),
        "{:?}",
        env.upstream.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_injects_identity_and_passes_rejections() {
    let env = setup("x_forwarded", |c| c).await;
    let Some(caddy) = FrontProxy::caddy(env.claimgate_addr(), &env.upstream_addr()).await else {
        // `.ci/run` installs Debian's caddy; where that package is unavailable, say so loudly.
        eprintln!("SKIPPED caddy_forward_auth_*: no caddy binary (apt-get install caddy)");
        return;
    };
    let forged = [
        "X-User-Id: mallory",
        "X-Claimgate-User: e30",
        "X_User_Id: mallory",
        "X-User_Id: mallory",
    ]
    .map(String::from);
    let mut headers = forged.to_vec();
    headers.push(env.bearer("user"));
    let resp = raw::get(&caddy.url, "/api/x?y=1", &headers).await;
    let echo = echoed(&resp, &format!("valid token; caddy log:\n{}", caddy.log()));
    assert_eq!(echo.header("x-user-id"), Some("alice"));
    assert!(
        !echo.has_header("x_user_id") && !echo.has_header("x-user_id"),
        "{echo:?}"
    );
    assert_eq!(
        decode_user_header(echo.header("x-claimgate-user").unwrap())["id"],
        "alice"
    );

    // Anonymous: no identity header at all (neither the client's nor a placeholder's text).
    let resp = raw::get(&caddy.url, "/public/x", &forged).await;
    let echo = echoed(&resp, "anonymous route");
    assert_no_identity(&echo);

    let before = env.upstream.requests().len();
    let resp = raw::get(
        &caddy.url,
        "/api/x",
        &["Authorization: Bearer a.b.c".into()],
    )
    .await;
    expect(&resp, 401, "malformed", "bad token");
    let resp = raw::get(&caddy.url, "/admin/x", &[env.bearer("user")]).await;
    expect(&resp, 403, "forbidden", "rule denies");
    let lie = ["X-Forwarded-Uri: /public/x".to_owned()];
    let resp = raw::get(&caddy.url, "/admin/x", &lie).await;
    expect(&resp, 401, "token_missing", "client-sent X-Forwarded-Uri");
    assert_eq!(env.upstream.requests().len(), before);
}

/// `method path` straight to claimgate, as a front proxy's subrequest.
async fn subrequest(env: &Env, method: &str, path: &str, headers: &[String]) -> RawResponse {
    raw::request(&env.claimgate.url, method, path, headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_forward_auth_headers_get_200_with_identity_and_nothing_else() {
    let env = setup("x_forwarded", |c| c).await;
    let mut headers = traefik("DELETE", "/api/x?y=1");
    headers.extend([
        env.bearer("user"),
        "Cookie: session=secret".into(),
        "X-Echo-Me: 1".into(),
        "X-User-Id: mallory".into(),
    ]);
    // Traefik asks with GET whatever the original method; the original one is judged.
    let resp = subrequest(&env, "GET", "/", &headers).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("x-user-id"), Some("alice"));
    assert!(resp.header("x-claimgate-user").is_some(), "{resp:?}");
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    for name in [
        "authorization",
        "cookie",
        "set-cookie",
        "x-echo-me",
        "x-forwarded-uri",
    ] {
        assert!(resp.header(name).is_none(), "200 carries {name}: {resp:?}");
    }
    assert!(resp.body.is_empty(), "{resp:?}");

    let resp = subrequest(&env, "GET", "/", &traefik("GET", "/public/x")).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.header("x-user-id").is_none(), "anonymous: {resp:?}");
    let resp = subrequest(&env, "GET", "/", &traefik("GET", "/api/x")).await;
    expect(&resp, 401, "token_missing", "no token");
    // A query-parameter token is read from the original URI's query.
    let token = env.bearer("user").replace("Authorization: Bearer ", "");
    let uri = format!("/api/x?access_token={token}");
    let resp = subrequest(&env, "GET", "/", &traefik("GET", &uri)).await;
    assert_eq!(resp.header("x-user-id"), Some("alice"), "{resp:?}");
    // Rules judge the original method and path, not the subrequest's.
    let mut headers = traefik("POST", "/admin/users");
    headers.push(env.bearer("user"));
    let resp = subrequest(&env, "GET", "/public/x", &headers).await;
    expect(&resp, 403, "forbidden", "rule on the original path");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_ext_authz_http_subrequest_is_judged_without_its_prefix() {
    let env = setup("subrequest", |c| {
        c.set("/forward_auth/path_prefix", "/_authz")
    })
    .await;
    let resp = subrequest(&env, "POST", "/_authz/api/x?y=1", &[env.bearer("user")]).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("x-user-id"), Some("alice"));
    let resp = subrequest(&env, "GET", "/_authz/admin/x", &[env.bearer("user")]).await;
    expect(&resp, 403, "forbidden", "prefix stripped, /admin judged");
    let resp = subrequest(&env, "GET", "/_authz/admin/x", &[env.bearer("admin")]).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let resp = subrequest(&env, "GET", "/_authz/api/x", &[]).await;
    expect(&resp, 401, "token_missing", "no token");
    // Stripped first, then normalized exactly as in proxy mode.
    let resp = subrequest(&env, "GET", "/_authz/public/..;/admin/x", &[]).await;
    expect(&resp, 400, "bad_path", "..; under the prefix");
    let resp = subrequest(&env, "GET", "/_authz/public/../admin/x", &[]).await;
    expect(
        &resp,
        401,
        "token_missing",
        "dot segments resolved before judging",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_outside_trusted_proxies_are_refused_before_anything_else() {
    let env = setup("x_original_uri", |c| {
        c.set("/forward_auth/trusted_proxies", json!(["10.0.0.0/8"]))
    })
    .await;
    let headers = [
        "X-Original-Method: GET".to_owned(),
        "X-Original-URI: /public/x".to_owned(),
        "X-Forwarded-For: 10.1.2.3".to_owned(),
        env.bearer("admin"),
    ];
    let resp = subrequest(&env, "GET", "/", &headers).await;
    expect(&resp, 403, "untrusted_proxy", "peer 127.0.0.1");
    assert!(resp.header("www-authenticate").is_none(), "{resp:?}");
    let resp = subrequest(&env, "GET", "/", &[]).await;
    expect(
        &resp,
        403,
        "untrusted_proxy",
        "even before the headers are read",
    );
    // Counted like any refusal, by the same Decider::record as the proxy door.
    let text = env.claimgate.metrics().await;
    let count = metric(
        &text,
        "claimgate_requests_total",
        &[("outcome", "untrusted_proxy")],
    );
    assert_eq!(count, Some(2.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_original_requests_are_400_never_200() {
    let env = setup("x_original_uri", |c| c).await;
    let m = |v: &str| format!("X-Original-Method: {v}");
    let u = |v: &str| format!("X-Original-URI: {v}");
    let long = format!("/public/{}", "a".repeat(8 * 1024));
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("no method", vec![u("/public/x")]),
        ("no URI", vec![m("GET")]),
        ("not a path", vec![m("GET"), u("public/x")]),
        ("absolute URL", vec![m("GET"), u("http://h/public/x")]),
        ("bad escape", vec![m("GET"), u("/public/%zz")]),
        ("over 8 KiB", vec![m("GET"), u(&long)]),
        ("two URIs", vec![m("GET"), u("/public/x"), u("/admin")]),
        ("other convention only", traefik("GET", "/public/x")),
    ];
    for (what, headers) in cases {
        let resp = subrequest(&env, "GET", "/public/x", &headers).await;
        expect(&resp, 400, "bad_original_request", what);
    }
    let resp = subrequest(&env, "GET", "/", &[m("GET"), u("/public/..;/admin")]).await;
    expect(&resp, 400, "bad_path", "..; in the original path");

    let env = setup("x_original_url", |c| c).await;
    for url in ["//host/public/x", "/public/x", "ftp://h/public/x"] {
        let headers = [m("GET"), format!("X-Original-URL: {url}")];
        let resp = subrequest(&env, "GET", "/", &headers).await;
        expect(&resp, 400, "bad_original_request", url);
    }
    let headers = [
        m("GET"),
        "X-Original-URL: https://app.example.com/public/x".into(),
    ];
    assert_eq!(subrequest(&env, "GET", "/", &headers).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_is_answered_as_the_decision_gives_it() {
    let env = setup("x_original_uri", |c| c).await;
    let headers = [
        "X-Original-Method: GET".into(),
        "X-Original-URI: /.claimgate/userinfo".into(),
        env.bearer("user"),
    ];
    let resp = subrequest(&env, "GET", "/", &headers).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let body: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(body["id"], "alice");
}

#[test]
fn forward_auth_config_errors_name_their_key() {
    let base = "providers:\n  - {name: a, issuer: 'https://a', jwks_uri: 'https://a/jwks'}\n";
    let check = |yaml: String| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let cases = [
        ("mode: forward_auth\n", "forward_auth.original_request"),
        (
            "mode: forward_auth\nforward_auth: {trusted_proxies: [10.0.0.0/8]}\n",
            "forward_auth.original_request",
        ),
        ("", "upstream: is required with `mode: proxy`"),
        (
            "mode: forward_auth\nforward_auth: {original_request: x_forwarded, trusted_proxies: [pods]}\n",
            "forward_auth.trusted_proxies[0]",
        ),
    ];
    for (head, key) in cases {
        let err = check(format!("{head}{base}"));
        assert!(err.contains(key), "{head:?} must name {key}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subrequest_body_is_never_needed() {
    let env = setup("x_forwarded", |c| c.set("/forward_auth/max_body_bytes", 4)).await;
    let host = env.claimgate_addr();
    for body in ["abc", "more than four bytes"] {
        let request = format!(
            "POST / HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-Method: POST\r\n\
             X-Forwarded-Uri: /public/x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let resp = raw::send(&env.claimgate.url, request.as_bytes()).await;
        assert_eq!(resp.status, 200, "{body:?}: {resp:?}");
    }
}
