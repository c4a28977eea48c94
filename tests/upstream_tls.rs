//! TLS towards the upstream and towards JWKS endpoints, through the real binary, with
//! certificates generated here (rcgen). Verification is never turned off: a private CA must be
//! named (`upstream.tls.ca_file`, `providers[].tls.ca_file`), and an unknown issuer, an expired
//! certificate or a wrong host name each fail the request with 502 and a log naming the reason.

mod common;

use common::certs::{acceptor, TestCa};
use common::*;
use std::time::{Duration, Instant};

struct Setup {
    key: SigningKey,
    _jwks: JwksServer,
    jwks_uri: String,
    dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let key = SigningKey::es256("ec");
    let jwks = JwksServer::start(jwks(&[&key])).await;
    let jwks_uri = jwks.uri();
    Setup {
        key,
        _jwks: jwks,
        jwks_uri,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    fn config(&self, upstream_url: &str) -> TestConfig {
        TestConfig::jwks(upstream_url, &self.jwks_uri)
    }

    fn token(&self) -> String {
        self.key.sign(&Claims::new())
    }
}

/// `https://localhost:PORT` of a TLS server (the certificate decides what verifies).
fn localhost_url(upstream: &EchoUpstream) -> String {
    upstream.url().replace("127.0.0.1", "localhost")
}

/// Waits (up to 10 s) until the proxy's stderr contains `needle`, then returns it.
async fn wait_log(proxy: &Proxy, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = proxy.stderr();
        if log.contains(needle) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "log never said {needle:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request that must fail at the upstream handshake: 502 and a warning naming `reason`.
async fn expect_refused(config: &TestConfig, token: &str, reason: &str) {
    let proxy = Proxy::start(config).await;
    let resp = proxy.get_with_token("/hello", token).await;
    expect_reject(resp, 502, "upstream_unavailable").await;
    let log = wait_log(&proxy, "upstream request failed").await;
    let line = log
        .lines()
        .find(|l| l.contains("upstream request failed"))
        .unwrap();
    assert!(
        line.contains(reason),
        "the warning must name {reason:?}: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_with_its_ca_gets_the_identity() {
    let s = setup().await;
    let ca = TestCa::new("test-ca");
    let upstream = EchoUpstream::start_tls(acceptor(&ca.leaf(), None)).await;
    let ca_file = ca.write(s.dir.path(), "ca.pem");
    // By DNS name (SNI) and by IP address (no SNI, checked against the IP SAN).
    for url in [localhost_url(&upstream), upstream.url()] {
        let config = s
            .config(&url)
            .set("/upstream/tls/ca_file", ca_file.to_str());
        let proxy = Proxy::start(&config).await;
        let echo = expect_echo(proxy.get_with_token("/hello", &s.token()).await).await;
        assert_eq!(echo.path, "/hello");
        assert_eq!(
            echo.version, "HTTP/1.1",
            "protocol http1 offers http/1.1 only"
        );
        assert!(
            echo.header("x-user-id").is_some(),
            "identity headers reach it"
        );
        // It describes how the client reached claimgate, not claimgate's hop to the upstream.
        assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_and_auto_with_an_https_url_speak_http2_over_tls() {
    let s = setup().await;
    let ca = TestCa::new("test-ca");
    let upstream = EchoUpstream::start_tls(acceptor(&ca.leaf(), None)).await;
    let config = s
        .config(&localhost_url(&upstream))
        .set("/upstream/protocol", "h2c")
        .set(
            "/upstream/tls/ca_file",
            ca.write(s.dir.path(), "ca.pem").to_str(),
        );
    let proxy = Proxy::start(&config).await;
    let echo = expect_echo(proxy.get_with_token("/hello", &s.token()).await).await;
    assert_eq!(echo.version, "HTTP/2.0");
    assert!(echo.header("x-user-id").is_some());
    drop(proxy);

    // `auto` follows the client: HTTP/1.1 stays HTTP/1.1 (ALPN http/1.1), HTTP/2 goes as h2.
    let proxy = Proxy::start(&config.set("/upstream/protocol", "auto")).await;
    let echo = expect_echo(proxy.get_with_token("/hello", &s.token()).await).await;
    assert_eq!(echo.version, "HTTP/1.1");
    assert_eq!(h2c_get(&proxy, &s.token()).await.version, "HTTP/2.0");
}

/// GET /hello from a cleartext HTTP/2 (prior knowledge) client.
async fn h2c_get(proxy: &Proxy, token: &str) -> Echo {
    use http_body_util::{BodyExt, Empty};
    let addr = proxy.url.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(format!("{}/hello", proxy.url))
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Echo::from_json(&serde_json::from_slice(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_roots_refuse_a_private_ca() {
    let s = setup().await;
    let ca = TestCa::new("test-ca");
    let upstream = EchoUpstream::start_tls(acceptor(&ca.leaf(), None)).await;
    expect_refused(
        &s.config(&localhost_url(&upstream)),
        &s.token(),
        "UnknownIssuer",
    )
    .await;
    assert!(upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_upstream_certificate_is_refused() {
    let s = setup().await;
    let ca = TestCa::new("test-ca");
    let expired = ca.leaf_with(&["localhost"], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let upstream = EchoUpstream::start_tls(acceptor(&expired, None)).await;
    let config = s.config(&localhost_url(&upstream)).set(
        "/upstream/tls/ca_file",
        ca.write(s.dir.path(), "ca.pem").to_str(),
    );
    expect_refused(&config, &s.token(), "certificate expired").await;
    assert!(upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_is_refused() {
    let s = setup().await;
    let ca = TestCa::new("test-ca");
    let other = ca.leaf_with(&["other.example"], |_| {});
    let upstream = EchoUpstream::start_tls(acceptor(&other, None)).await;
    let config = s.config(&localhost_url(&upstream)).set(
        "/upstream/tls/ca_file",
        ca.write(s.dir.path(), "ca.pem").to_str(),
    );
    expect_refused(&config, &s.token(), "certificate not valid for name").await;
    assert!(upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_upstream_needs_the_client_certificate() {
    let s = setup().await;
    let ca = TestCa::new("test-ca");
    let upstream = EchoUpstream::start_tls(acceptor(&ca.leaf(), Some(&ca))).await;
    let client = ca.leaf_with(&["claimgate.test"], |_| {});
    let (cert_file, key_file) = client.write(s.dir.path(), "client");
    let base = s.config(&localhost_url(&upstream)).set(
        "/upstream/tls/ca_file",
        ca.write(s.dir.path(), "ca.pem").to_str(),
    );

    let with = base
        .clone()
        .set("/upstream/tls/cert_file", cert_file.to_str())
        .set("/upstream/tls/key_file", key_file.to_str());
    let proxy = Proxy::start(&with).await;
    let echo = expect_echo(proxy.get_with_token("/hello", &s.token()).await).await;
    assert!(echo.header("x-user-id").is_some());
    drop(proxy);

    let proxy = Proxy::start(&base).await;
    let resp = proxy.get_with_token("/hello", &s.token()).await;
    expect_reject(resp, 502, "upstream_unavailable").await;
    // TLS 1.3: the server refuses after the handshake, so the alert arrives with the request.
    let log = wait_log(&proxy, "upstream request failed").await;
    assert!(log.contains("CertificateRequired"), "{log}");
    assert_eq!(
        upstream.requests().len(),
        1,
        "only the request with the certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_over_https_needs_the_provider_ca() {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let ca = TestCa::new("issuer-ca");
    let jwks_server = JwksServer::start_tls(jwks(&[&key]), acceptor(&ca.leaf(), None)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::jwks(&upstream.url(), &jwks_server.uri());

    let with_ca = config.clone().provider(
        "tls",
        serde_json::json!({"ca_file": ca.write(dir.path(), "ca.pem")}),
    );
    let proxy = Proxy::start(&with_ca).await;
    expect_echo(proxy.get_with_token("/", &key.sign(&Claims::new())).await).await;
    drop(proxy);

    let proxy = Proxy::spawn(&config, &[], &[]);
    proxy.wait_up().await;
    let log = wait_log(&proxy, "JWKS fetch failed").await;
    assert!(
        log.contains("UnknownIssuer"),
        "the log must name the issuer problem:\n{log}"
    );
    assert_eq!(proxy.admin_get("/readyz").await.status(), 503);
    let resp = proxy.get_with_token("/", &key.sign(&Claims::new())).await;
    expect_reject(resp, 503, "keys_unavailable").await;
}

#[tokio::test]
async fn bad_tls_files_are_startup_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let base = TestConfig::jwks("https://localhost:8443", "http://127.0.0.1:1/jwks.json");
    let cases = [
        (
            base.clone()
                .provider("tls", serde_json::json!({"ca_file": missing})),
            "providers[0].tls.ca_file",
        ),
        (
            base.clone()
                .provider("tls", serde_json::json!({"ca_file": not_pem})),
            "providers[0].tls.ca_file",
        ),
        (
            base.clone().set("/upstream/tls/ca_file", missing.to_str()),
            "upstream.tls.ca_file",
        ),
        (
            base.clone()
                .set("/upstream/tls/cert_file", not_pem.to_str()),
            "upstream.tls.key_file",
        ),
        (
            TestConfig::jwks("http://localhost:8080", "http://127.0.0.1:1/jwks.json")
                .set("/upstream/tls/ca_file", not_pem.to_str()),
            "upstream.tls",
        ),
        (base.clone().set("/upstream/tls/insecure", true), "insecure"),
    ];
    for (config, key) in cases {
        let (code, stderr) = check_config(&config);
        assert_eq!(code, Some(2), "check must refuse ({key}): {stderr}");
        assert!(stderr.contains(key), "stderr must name {key}: {stderr}");
    }
}
