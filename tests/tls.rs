//! The proxy listener over TLS, with certificates generated here (rcgen) and verification never
//! turned off: requests with a valid token pass over HTTP/1.1 and, by ALPN, HTTP/2; a wrong CA or
//! host name fails; a rotated certificate is served without dropping open connections; a broken
//! new pair keeps the old one; a failed handshake is counted and harms nothing else.

mod common;

use common::certs::TestCa;
use common::*;
use rcgen::DnType;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A leaf for `127.0.0.1` and `localhost` named `name`: (certificate PEM, key PEM).
fn leaf(ca: &TestCa, name: &str) -> (String, String) {
    let pair = ca.leaf_with(&["127.0.0.1", "localhost"], |params| {
        params.distinguished_name.push(DnType::CommonName, name)
    });
    (pair.cert, pair.key)
}

fn write_pair(dir: &Path, (cert, key): &(String, String)) {
    // Written beside and renamed, as a Secret update lands: a reader never sees half a file.
    for (name, text) in [("tls.crt", cert), ("tls.key", key)] {
        let tmp = dir.join(format!(".{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

fn connector(ca_pem: &str, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    let der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
    roots.add(der).unwrap();
    let provider = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider();
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

use tokio_rustls::rustls::pki_types::pem::PemObject;

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(addr: &str, ca_pem: &str, host: &str, alpn: &[&[u8]]) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(host.to_owned()).unwrap();
    connector(ca_pem, alpn).connect(name, tcp).await
}

/// The common name of the certificate the server presented.
fn presented_cn(stream: &Tls) -> String {
    let der = &stream.get_ref().1.peer_certificates().unwrap()[0];
    let text = String::from_utf8_lossy(der.as_ref()).into_owned();
    ["leaf-one", "leaf-two"]
        .into_iter()
        .find(|cn| text.contains(cn))
        .unwrap_or("?")
        .to_owned()
}

/// One HTTP/1.1 request on an open TLS stream (keep-alive); returns the status and body.
async fn request(stream: &mut Tls, token: &str) -> (u16, String) {
    let head =
        format!("GET /hello HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            if body.len() >= length {
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                return (status, body.to_owned());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_rotates_and_survives_bad_input() {
    let ca = TestCa::new("claimgate test CA");
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), &leaf(&ca, "leaf-one"));
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let config = TestConfig::jwks(&upstream.url(), &jwks_server.uri()).set(
        "/tls",
        serde_json::json!({
            "cert_file": dir.path().join("tls.crt"),
            "key_file": dir.path().join("tls.key"),
            "reload_seconds": 1,
        }),
    );
    let proxy = Proxy::start(&config).await;
    let addr = proxy.url.trim_start_matches("http://").to_owned();
    let token = key.sign(&Claims::new());

    // HTTP/1.1 and HTTP/2 by ALPN, verified against the CA.
    let mut kept = connect(&addr, &ca.pem, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(kept.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = request(&mut kept, &token).await;
    assert_eq!(status, 200, "{body}");
    let echo = Echo::from_json(&serde_json::from_str(&body).unwrap());
    assert_eq!(echo.header("x-user-id"), Some("alice"));
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    let h2 = connect(&addr, &ca.pem, "127.0.0.1", &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(h2),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!(
        "https://localhost:{}/h2",
        addr.rsplit(':').next().unwrap()
    ))
    .header("authorization", format!("Bearer {token}"))
    .body(http_body_util::Empty::<bytes::Bytes>::new())
    .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);

    // Verification stays on: another CA, or a name the certificate does not hold, fails.
    let other = TestCa::new("someone else");
    let error = connect(&addr, &other.pem, "localhost", &[])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
    let error = connect(&addr, &ca.pem, "example.com", &[])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not valid for name"), "{error}");

    // Rotation: new connections get the new certificate; the open one keeps working.
    assert_eq!(presented_cn(&kept), "leaf-one");
    write_pair(dir.path(), &leaf(&ca, "leaf-two"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let fresh = connect(&addr, &ca.pem, "localhost", &[]).await.unwrap();
        if presented_cn(&fresh) == "leaf-two" {
            break;
        }
        assert!(Instant::now() < deadline, "certificate not reloaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(request(&mut kept, &token).await.0, 200);

    // A broken new pair is refused; the last good one keeps serving.
    std::fs::write(dir.path().join("tls.crt"), "not a certificate").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !proxy.stderr().contains("the previous one keeps serving") {
        assert!(
            Instant::now() < deadline,
            "broken pair not reported: {}",
            proxy.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh = connect(&addr, &ca.pem, "localhost", &[]).await.unwrap();
    assert_eq!(presented_cn(&fresh), "leaf-two");

    // Plain HTTP on the TLS port: that connection fails, is counted, and nothing else suffers.
    let answer = raw::send(&proxy.url, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(answer.status, 0, "{answer:?}");
    let metrics = proxy.metrics().await;
    let errors = metric(&metrics, "claimgate_tls_handshake_errors_total", &[]).unwrap();
    assert!(errors >= 1.0, "{metrics}");
    let mut again = connect(&addr, &ca.pem, "localhost", &[]).await.unwrap();
    assert_eq!(request(&mut again, &token).await.0, 200);
    assert!(!proxy.stderr().contains(&token), "a token reached the log");
}
