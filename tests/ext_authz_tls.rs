//! The ext_authz gRPC listener runs on claimgate's own server: it speaks the listener's TLS (with
//! client-certificate verification, i.e. mTLS from Envoy) and obeys `limits.*` like the proxy
//! listener. Certificates are made here (rcgen); verification is never turned off.

mod common;

use common::certs::{self, Pair, TestCa};
use common::front::setup;
use common::*;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// A gRPC client over TLS (h2 by ALPN) trusting `ca`, presenting `identity` if given.
fn client(
    port: u16,
    ca: &TestCa,
    identity: Option<&Pair>,
) -> AuthorizationClient<Client<Https, tonic::body::Body>> {
    let config = certs::client_config(ca, identity);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http2()
        .build();
    let http = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector);
    let origin = format!("https://localhost:{port}").parse().unwrap();
    AuthorizationClient::with_origin(http, origin)
}

fn check_request(path: &str, authorization: &str) -> CheckRequest {
    let headers = [("authorization".to_owned(), authorization.to_owned())].into();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: path.into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_listener_speaks_mtls_and_obeys_the_listener_limits() {
    let server_ca = TestCa::new("claimgate server CA");
    let envoy_ca = TestCa::new("mesh CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = server_ca.leaf().write(dir.path(), "tls");
    let client_ca_file = envoy_ca.write(dir.path(), "mesh.pem");
    let port = free_port();
    let env = setup("subrequest", |mut c| {
        let fa = c.0["forward_auth"].as_object_mut().unwrap();
        fa.remove("original_request");
        fa.insert("grpc_listen".into(), json!(format!("127.0.0.1:{port}")));
        c.set(
            "/tls",
            json!({"cert_file": cert_file, "key_file": key_file, "client_ca_file": client_ca_file}),
        )
        .set("/limits/header_read_timeout_ms", 500)
    })
    .await;
    let envoy = envoy_ca.leaf_with(&["envoy.mesh.test"], |_| {});
    let line = env.bearer("user");
    let bearer = line.trim_start_matches("Authorization: ").to_owned();

    // Envoy with its mesh certificate gets the decision over TLS.
    let mut mesh = client(port, &server_ca, Some(&envoy));
    let resp = mesh
        .check(check_request("/hello", &bearer))
        .await
        .expect("a CheckResponse over mTLS")
        .into_inner();
    assert_eq!(resp.status.map(|s| s.code), Some(0));
    let resp = mesh
        .check(check_request("/hello", "Bearer nope"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.status.map(|s| s.code), Some(16), "UNAUTHENTICATED");

    // Without a client certificate, or in cleartext, nothing is answered.
    let mut anonymous = client(port, &server_ca, None);
    let refused = anonymous.check(check_request("/hello", &bearer)).await;
    assert!(refused.is_err(), "{refused:?}");
    let mut plain = AuthorizationClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let refused = plain.check(check_request("/hello", &bearer)).await;
    assert!(refused.is_err(), "{refused:?}");

    // A silent connection is closed after limits.header_read_timeout_ms, as on the proxy port.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a silent connection stayed open for {:?}: {read:?}",
        started.elapsed()
    );
}
