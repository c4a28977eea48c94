//! Client certificates on the proxy listener (`tls.client_ca_file`, `tls.client_auth`), made
//! here with rcgen and never unverified: with `required`, a client without a certificate, or with
//! one from another CA, gets no HTTP answer at all; a verified client's subject and SANs reach
//! rules and headers as `%%request.client_cert.subject` / `.san`; with `optional`, a client
//! without a certificate is served but has no such facts.

mod common;

use common::certs::{self, Pair, TestCa};
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{DnType, SanType};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

struct Setup {
    proxy: Proxy,
    server_ca: TestCa,
    client_ca: TestCa,
    token: String,
    _jwks: JwksServer,
    _upstream: EchoUpstream,
    _dir: tempfile::TempDir,
}

async fn setup(client_auth: &str) -> Setup {
    let server_ca = TestCa::new("claimgate server CA");
    let client_ca = TestCa::new("claimgate client CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = server_ca.leaf().write(dir.path(), "tls");
    let client_ca_file = client_ca.write(dir.path(), "clients.pem");
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let config = TestConfig::jwks(&upstream.url(), &jwks_server.uri())
        .set(
            "/tls",
            json!({
                "cert_file": cert_file,
                "key_file": key_file,
                "client_ca_file": client_ca_file,
                "client_auth": client_auth,
            }),
        )
        .set(
            "/forward/headers/X-Client-Subject",
            json!({"from": "%%request.client_cert.subject", "required": false}),
        )
        .set(
            "/forward/headers/X-Client-San",
            json!({"from": "%%request.client_cert.san", "required": false}),
        )
        .set(
            "/rules",
            json!([{
                "name": "admin-workload",
                "match": {"path": "/admin"},
                "allow_when": {"%%request.client_cert.san": "spiffe://acme.test/admin"},
            }]),
        );
    let proxy = Proxy::start(&config).await;
    Setup {
        proxy,
        server_ca,
        client_ca,
        token: key.sign(&Claims::new()),
        _jwks: jwks_server,
        _upstream: upstream,
        _dir: dir,
    }
}

/// A client leaf named `cn` with a SPIFFE URI and a DNS name among its SANs.
fn workload(ca: &TestCa, cn: &str, spiffe: &str) -> Pair {
    ca.leaf_with(&[], |params| {
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "acme");
        params.subject_alt_names = vec![
            SanType::URI(spiffe.try_into().unwrap()),
            SanType::DnsName(format!("{cn}.acme.test").try_into().unwrap()),
        ];
    })
}

/// One GET over a fresh TLS connection, presenting `client` if given: the status and the
/// upstream's echo, or the error that ended the exchange.
async fn get(
    setup: &Setup,
    client: Option<&Pair>,
    path: &str,
) -> Result<(u16, serde_json::Value), String> {
    let config = certs::client_config(&setup.server_ca, client);
    let addr = setup.proxy.url.trim_start_matches("http://");
    let tcp = within("connect", TcpStream::connect(addr)).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let connector = TlsConnector::from(Arc::new(config));
    let tls = within("TLS handshake", connector.connect(name, tcp)).await?;
    let (mut sender, conn) = within(
        "HTTP/1 handshake",
        hyper::client::conn::http1::handshake(TokioIo::new(tls)),
    )
    .await?;
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {}", setup.token))
        // A client cannot speak for its certificate.
        .header("x-client-subject", "CN=forged")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = within("response head", sender.send_request(request)).await?;
    let status = response.status().as_u16();
    let body = within("response body", response.into_body().collect()).await?;
    Ok((
        status,
        serde_json::from_slice(&body.to_bytes()).unwrap_or_default(),
    ))
}

/// `step`'s result, its error as text. A step that makes no progress fails the test rather than
/// passing for a refusal, or hanging the run.
async fn within<T, E: ToString>(
    step: &str,
    future: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_secs(10), future).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => panic!("{step}: no progress within 10 s"),
    }
}

/// The one value of `name` the upstream saw (the echo fails the test on two copies).
fn header(echo: &serde_json::Value, name: &str) -> Option<String> {
    Echo::from_json(echo).header(name).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates_are_verified_and_reach_rules_and_headers() {
    let setup = setup("required").await;
    let billing = workload(&setup.client_ca, "billing", "spiffe://acme.test/billing");
    let admin = workload(&setup.client_ca, "admin", "spiffe://acme.test/admin");
    let stranger_ca = TestCa::new("someone else's CA");
    let stranger = workload(&stranger_ca, "admin", "spiffe://acme.test/admin");

    // No certificate, or one from another CA: the handshake fails, nothing is answered.
    let refused = get(&setup, None, "/hello").await;
    assert!(
        refused.is_err(),
        "served without a client cert: {refused:?}"
    );
    let refused = get(&setup, Some(&stranger), "/hello").await;
    assert!(
        refused.is_err(),
        "served a cert from another CA: {refused:?}"
    );
    // The client reads the server's alert before the server counts the failure: poll.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = setup.proxy.metrics().await;
        let failures = metric(&metrics, "claimgate_tls_handshake_errors_total", &[]).unwrap();
        if failures >= 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{failures} handshake failures counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A verified client: its names reach the upstream, the client's own copy never does.
    let (status, echo) = get(&setup, Some(&billing), "/hello").await.unwrap();
    assert_eq!(status, 200, "{echo}");
    assert_eq!(
        header(&echo, "x-client-subject"),
        Some("CN=billing, O=acme".to_owned())
    );
    assert_eq!(
        header(&echo, "x-client-san"),
        Some("spiffe://acme.test/billing,billing.acme.test".to_owned())
    );
    assert_eq!(header(&echo, "x-user-id"), Some("alice".to_owned()));

    // The rule reads the SAN: only the admin workload may call /admin.
    let (status, _) = get(&setup, Some(&billing), "/admin").await.unwrap();
    assert_eq!(status, 403);
    let (status, echo) = get(&setup, Some(&admin), "/admin").await.unwrap();
    assert_eq!(status, 200, "{echo}");
    assert_eq!(
        header(&echo, "x-client-subject"),
        Some("CN=admin, O=acme".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificates_let_anonymous_clients_in_without_facts() {
    let setup = setup("optional").await;
    let admin = workload(&setup.client_ca, "admin", "spiffe://acme.test/admin");

    let (status, echo) = get(&setup, None, "/hello").await.unwrap();
    assert_eq!(status, 200, "{echo}");
    assert_eq!(header(&echo, "x-client-subject"), None);
    assert_eq!(header(&echo, "x-client-san"), None);
    let (status, _) = get(&setup, None, "/admin").await.unwrap();
    assert_eq!(status, 403);

    // A presented certificate is still verified.
    let stranger = workload(&TestCa::new("other"), "admin", "spiffe://acme.test/admin");
    assert!(get(&setup, Some(&stranger), "/hello").await.is_err());

    let (status, echo) = get(&setup, Some(&admin), "/admin").await.unwrap();
    assert_eq!(status, 200, "{echo}");
    assert_eq!(
        header(&echo, "x-client-subject"),
        Some("CN=admin, O=acme".to_owned())
    );
}

#[test]
fn client_auth_without_a_ca_is_a_config_error() {
    let config = TestConfig::hmac("http://127.0.0.1:9", "0123456789abcdef0123456789abcdef")
        .set(
            "/tls",
            json!({"cert_file": "/nonexistent.crt", "key_file": "/nonexistent.key", "client_auth": "required"}),
        );
    let (code, stderr) = check_config(&config);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("tls.client_auth") && stderr.contains("tls.client_ca_file"),
        "{stderr}"
    );
}
