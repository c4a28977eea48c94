//! What reaches the upstream for an accepted request: identity headers, stripped spoofs, token
//! sources, bodies, and the gateway errors when the upstream misbehaves.

mod common;

use bytes::Bytes;
use common::*;
use http_body::Frame;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

struct Env {
    key: SigningKey,
    upstream: EchoUpstream,
    _jwks: JwksServer,
    proxy: Proxy,
}

async fn setup(config: impl FnOnce(TestConfig) -> TestConfig) -> Env {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let proxy = Proxy::start(&config(TestConfig::jwks(
        &upstream.url(),
        &jwks_server.uri(),
    )))
    .await;
    Env {
        key,
        upstream,
        _jwks: jwks_server,
        proxy,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_request_carries_identity_and_forwarding_headers() {
    let env = setup(|c| c).await;
    let token = env.key.sign(&Claims::new());
    let resp = env
        .proxy
        .client
        .post(format!("{}/api/items?x=1&y=two", env.proxy.url))
        .bearer_auth(&token)
        .body("hello")
        .send()
        .await
        .unwrap();
    let echo = expect_echo(resp).await;
    assert_eq!(echo.method, "POST");
    assert_eq!(echo.path, "/api/items");
    assert_eq!(echo.query.as_deref(), Some("x=1&y=two"));
    assert_eq!(echo.body_len, 5);
    assert_eq!(echo.header("x-user-id"), Some("alice"));
    assert_eq!(echo.header("x-user-name"), Some("Alice"));
    assert_eq!(echo.header("x-user-roles"), Some("admin,dev"));
    let auth = format!("Bearer {token}");
    assert_eq!(echo.header("authorization"), Some(auth.as_str()));
    let user = decode_user_header(echo.header("x-claimgate-user").unwrap());
    assert_eq!(user["id"], "alice");
    assert_eq!(user["provider"], "test");
    assert_eq!(user["data"]["groups"], json!(["admins", "devs"]));
    assert_eq!(echo.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
    let host = env.proxy.url.trim_start_matches("http://");
    assert_eq!(echo.header("x-forwarded-host"), Some(host));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_is_dropped_when_pass_authorization_is_false() {
    let env = setup(|c| c.set("/forward/pass_authorization", false)).await;
    let token = env.key.sign(&Claims::new());
    let echo = expect_echo(env.proxy.get_with_token("/", &token).await).await;
    assert!(!echo.has_header("authorization"), "{:?}", echo.headers);
    assert_eq!(echo.header("x-user-id"), Some("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_supplied_identity_headers_never_reach_upstream() {
    let env = setup(|c| c).await;
    let spoofed_user = base64_json(&json!({"id": "admin", "provider": "test", "data": {}}));
    // No realm_access: the optional X-User-Roles mapping yields nothing, and the client's copy
    // must still not get through.
    let token = env.key.sign(&Claims::new().remove("realm_access"));
    let resp = env
        .proxy
        .get("/")
        .bearer_auth(&token)
        .header("X-User-Id", "admin")
        .header("x-user-id", "root")
        .header("X-USER-NAME", "Mallory")
        .header("X-User-Roles", "superuser")
        .header("X-Claimgate-User", &spoofed_user)
        .send()
        .await
        .unwrap();
    let echo = expect_echo(resp).await;
    assert_eq!(echo.header("x-user-id"), Some("alice"));
    assert_eq!(echo.header("x-user-name"), Some("Alice"));
    assert!(!echo.has_header("x-user-roles"), "{:?}", echo.headers);
    let user = decode_user_header(echo.header("x-claimgate-user").unwrap());
    assert_eq!(user["id"], "alice");

    // A rejected request with spoofed headers reaches nothing at all.
    let expired = env.key.sign(&Claims::new().exp_in(-3600));
    let resp = env
        .proxy
        .get("/")
        .bearer_auth(&expired)
        .header("X-User-Id", "admin")
        .send()
        .await
        .unwrap();
    expect_reject(resp, 401, "token_expired").await;
    assert_eq!(env.upstream.requests().len(), 1);
}

fn base64_json(v: &serde_json::Value) -> String {
    common::keys::b64url(v.to_string().as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_id_claim_and_required_header_mapping() {
    let env = setup(|c| {
        c.provider("user_id_claim", "email").set(
            "/forward/headers/X-Tenant",
            json!({"from": "%%token.tenant", "required": true}),
        )
    })
    .await;
    let token = env.key.sign(&Claims::new().set("tenant", "acme"));
    let echo = expect_echo(env.proxy.get_with_token("/", &token).await).await;
    assert_eq!(echo.header("x-user-id"), Some("alice@example.test"));
    assert_eq!(echo.header("x-tenant"), Some("acme"));
    let user = decode_user_header(echo.header("x-claimgate-user").unwrap());
    assert_eq!(user["id"], "alice@example.test");

    // A required mapping with nothing to map is a missing claim, not an empty header.
    let token = env.key.sign(&Claims::new());
    expect_reject(
        env.proxy.get_with_token("/", &token).await,
        401,
        "claim_missing",
    )
    .await;
    assert_eq!(env.upstream.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_taken_from_cookie() {
    let env = setup(|c| c).await;
    let token = env.key.sign(&Claims::new());
    let resp = env
        .proxy
        .get("/c")
        .header("Cookie", format!("theme=dark; access_token={token}; x=y"))
        .send()
        .await
        .unwrap();
    assert_eq!(expect_echo(resp).await.header("x-user-id"), Some("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_taken_from_query() {
    let env = setup(|c| c).await;
    let token = env.key.sign(&Claims::new());
    let resp = env
        .proxy
        .get(&format!("/q?page=2&access_token={token}"))
        .send()
        .await
        .unwrap();
    let echo = expect_echo(resp).await;
    assert_eq!(echo.header("x-user-id"), Some("alice"));
    assert_eq!(echo.path, "/q");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfigured_token_source_is_not_used() {
    let env = setup(|c| c.provider("token_from", json!([{"header": "Authorization"}]))).await;
    let token = env.key.sign(&Claims::new());
    let resp = env
        .proxy
        .get(&format!("/?access_token={token}"))
        .send()
        .await
        .unwrap();
    expect_reject(resp, 401, "token_missing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502() {
    let key = SigningKey::es256("ec");
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let proxy = Proxy::start(&TestConfig::jwks(&dead_url(), &jwks_server.uri())).await;
    let resp = proxy.get_with_token("/", &key.sign(&Claims::new())).await;
    expect_reject(resp, 502, "upstream_unavailable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_slower_than_timeout_is_504() {
    let env = setup(|c| c.set("/upstream/timeout_ms", 500)).await;
    env.upstream.set_delay(Duration::from_secs(5));
    let resp = env
        .proxy
        .get_with_token("/", &env.key.sign(&Claims::new()))
        .await;
    expect_reject(resp, 504, "upstream_timeout").await;
}

/// A body of `total` bytes sent as many chunks with no length known up front, so it goes out
/// with chunked transfer encoding and the proxy cannot buffer it by Content-Length.
struct Chunked {
    remaining: usize,
    chunk: Bytes,
}

impl http_body::Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len());
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
}

const BIG: usize = 20 * 1024 * 1024 + 17;

fn pattern_chunk() -> Bytes {
    (0..65_536u32)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<_>>()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_chunked_request_body_streams_through_intact() {
    let env = setup(|c| c).await;
    let chunk = pattern_chunk();
    let mut expected = Vec::with_capacity(BIG);
    while expected.len() < BIG {
        let n = (BIG - expected.len()).min(chunk.len());
        expected.extend_from_slice(&chunk[..n]);
    }
    let stream = tokio::net::TcpStream::connect(env.proxy.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::post("/upload")
        .header("host", env.proxy.url.trim_start_matches("http://"))
        .header(
            "authorization",
            format!("Bearer {}", env.key.sign(&Claims::new())),
        )
        .body(Chunked {
            remaining: BIG,
            chunk,
        })
        .unwrap();
    let resp = sender.send_request(request).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo = Echo::from_json(&serde_json::from_slice(&body).unwrap());
    assert_eq!(echo.body_len, BIG as u64);
    assert_eq!(echo.body_sha256, sha256_hex(&expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_sized_request_body_passes_intact() {
    let env = setup(|c| c).await;
    let body: Vec<u8> = (0..BIG).map(|i| (i % 253) as u8).collect();
    let digest = sha256_hex(&body);
    let resp = env
        .proxy
        .client
        .put(format!("{}/blob", env.proxy.url))
        .bearer_auth(env.key.sign(&Claims::new()))
        .body(body)
        .send()
        .await
        .unwrap();
    let echo = expect_echo(resp).await;
    assert_eq!(echo.method, "PUT");
    assert_eq!(echo.body_len, BIG as u64);
    assert_eq!(echo.body_sha256, digest);
}
