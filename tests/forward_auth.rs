//! `mode: forward_auth` through the real binary: behind real nginx (`auth_request`) and Caddy
//! (`forward_auth`) with the README's configurations, and with exactly the headers Traefik's
//! `forwardAuth` and Envoy's `ext_authz` HTTP service send. The answer must be 200 with the
//! identity headers (and nothing a client sent), or the proxy mode's own rejection.

mod common;

use common::front::FrontProxy;
use common::raw::{self, RawResponse};
use common::*;
use serde_json::json;

struct Env {
    key: SigningKey,
    upstream: EchoUpstream,
    _jwks: JwksServer,
    claimgate: Proxy,
}

/// claimgate in forward-auth mode: `/admin` needs `role: admin`, `/public` nothing, `/opt` an
/// optional token; identity headers `X-User-Id` and `X-Claimgate-User`.
async fn setup(original_request: &str, edit: impl FnOnce(TestConfig) -> TestConfig) -> Env {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let mut config = TestConfig::jwks(&upstream.url(), &jwks_server.uri())
        .set("/mode", "forward_auth")
        .set("/forward_auth/original_request", original_request)
        .set("/forward/headers", json!({"X-User-Id": "%%user.id"}))
        .set("/userinfo/path", "/.claimgate/userinfo")
        .set(
            "/rules",
            json!([
                {"name": "admins", "match": {"path_prefix": "/admin"},
                 "allow_when": {"%%token.role": "admin"}},
                {"match": {"path_prefix": "/public"}, "auth": "none"},
                {"match": {"path_prefix": "/opt"}, "auth": "optional"},
            ]),
        );
    // Nothing is forwarded in this mode, so the upstream is the front proxy's business.
    config.0.as_object_mut().unwrap().remove("upstream");
    let claimgate = Proxy::start(&edit(config)).await;
    Env {
        key,
        upstream,
        _jwks: jwks_server,
        claimgate,
    }
}

impl Env {
    fn bearer(&self, role: &str) -> String {
        let token = self.key.sign(&Claims::new().set("role", role));
        format!("Authorization: Bearer {token}")
    }

    fn claimgate_addr(&self) -> &str {
        self.claimgate.url.trim_start_matches("http://")
    }

    fn upstream_addr(&self) -> String {
        self.upstream.url().trim_start_matches("http://").to_owned()
    }
}

fn header<'r>(resp: &'r RawResponse, name: &str) -> Option<&'r str> {
    resp.head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn expect(resp: &RawResponse, status: u16, reason: &str, what: &str) {
    assert_eq!(resp.status, status, "{what}: {resp:?}");
    assert_eq!(resp.reason().as_deref(), Some(reason), "{what}: {resp:?}");
    if status == 401 {
        assert!(
            header(resp, "www-authenticate").is_some(),
            "{what}: {resp:?}"
        );
    }
}

/// What the upstream saw, from the echo in the body of a 200 that went through a front proxy.
fn echoed(resp: &RawResponse, what: &str) -> Echo {
    assert_eq!(resp.status, 200, "{what}: {resp:?}");
    Echo::from_json(&serde_json::from_str(&resp.body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_injects_identity_and_overwrites_client_copies() {
    let env = setup("x_original_uri", |c| c).await;
    let Some(nginx) = FrontProxy::nginx(env.claimgate_addr(), &env.upstream_addr()).await else {
        panic!("nginx is not installed: run `.ci/run` (it installs it) or apt-get install nginx");
    };
    let forged = ["X-User-Id: mallory".to_owned()];
    let resp = raw::get(
        &nginx.url,
        "/api/x?y=1",
        &[env.bearer("user"), forged[0].clone()],
    )
    .await;
    let echo = echoed(&resp, &format!("valid token; nginx log:\n{}", nginx.log()));
    assert_eq!(echo.header("x-user-id"), Some("alice"));
    let user = decode_user_header(echo.header("x-claimgate-user").unwrap());
    assert_eq!(user["id"], "alice");
    assert_eq!(
        (echo.path.as_str(), echo.query.as_deref()),
        ("/api/x", Some("y=1"))
    );

    // Anonymous: claimgate answers 200 without identity headers, and the forged one is gone.
    let resp = raw::get(&nginx.url, "/public/x", &forged).await;
    let echo = echoed(&resp, "anonymous route");
    assert!(!echo.has_header("x-user-id"), "{echo:?}");
    assert!(!echo.has_header("x-claimgate-user"), "{echo:?}");
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
        header(&resp, "www-authenticate"),
        Some("Bearer realm=\"claimgate\"")
    );
    let resp = raw::get(
        &nginx.url,
        "/api/x",
        &["Authorization: Bearer a.b.c".into()],
    )
    .await;
    expect(&resp, 401, "malformed", "bad token");
    let challenge = header(&resp, "www-authenticate").unwrap();
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
        panic!("caddy is not installed: run `.ci/run` (it installs it) or apt-get install caddy");
    };
    let forged = [
        "X-User-Id: mallory".to_owned(),
        "X-Claimgate-User: e30".to_owned(),
    ];
    let mut headers = forged.to_vec();
    headers.push(env.bearer("user"));
    let resp = raw::get(&caddy.url, "/api/x?y=1", &headers).await;
    let echo = echoed(&resp, &format!("valid token; caddy log:\n{}", caddy.log()));
    assert_eq!(echo.header("x-user-id"), Some("alice"));
    assert_eq!(
        decode_user_header(echo.header("x-claimgate-user").unwrap())["id"],
        "alice"
    );

    // Anonymous: no identity header at all (neither the client's nor a placeholder's text).
    let resp = raw::get(&caddy.url, "/public/x", &forged).await;
    let echo = echoed(&resp, "anonymous route");
    assert!(!echo.has_header("x-user-id"), "{echo:?}");
    assert!(!echo.has_header("x-claimgate-user"), "{echo:?}");

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
