//! Envoy ext_authz over gRPC (`forward_auth.grpc_listen`) through the real binary, asked by a
//! tonic client of `envoy-types`' generated `AuthorizationClient` exactly as Envoy (or Istio's
//! `envoyExtAuthzGrpc` provider) asks: the original request in `attributes.request.http`.

mod common;

use common::front::{setup, Env};
use common::raw;
use common::*;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use tonic::transport::Channel;

/// claimgate with only the gRPC door configured (no `original_request`), as in
/// config/k8s/istio-ext-authz.yaml; `trusted` replaces `trusted_proxies` when given.
async fn start(trusted: Option<&str>) -> (Env, AuthorizationClient<Channel>) {
    let port = free_port();
    let env = setup("subrequest", |mut c| {
        let fa = c.0["forward_auth"].as_object_mut().unwrap();
        fa.remove("original_request");
        fa.insert("grpc_listen".into(), json!(format!("127.0.0.1:{port}")));
        if let Some(cidr) = trusted {
            fa.insert("trusted_proxies".into(), json!([cidr]));
        }
        c
    })
    .await;
    let client = AuthorizationClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("the gRPC listener is up once /readyz is");
    (env, client)
}

fn check_request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([(":path".to_owned(), path.to_owned())])
        .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            // What the caller claims about the client; claimgate must never trust it.
            source: Some(Peer::default()),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
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

async fn check(client: &mut AuthorizationClient<Channel>, request: CheckRequest) -> CheckResponse {
    client
        .check(request)
        .await
        .expect("a CheckResponse")
        .into_inner()
}

fn allowed(resp: &CheckResponse) -> &OkHttpResponse {
    assert_eq!(resp.status.as_ref().map(|s| s.code), Some(0), "{resp:?}");
    match &resp.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("not an OkHttpResponse: {other:?}"),
    }
}

fn denied(resp: &CheckResponse, http: i32, grpc: i32, reason: &str) -> Value {
    let status = resp.status.as_ref().expect("status");
    assert_eq!(
        (status.code, status.message.as_str()),
        (grpc, reason),
        "{resp:?}"
    );
    let Some(HttpResponse::DeniedResponse(d)) = &resp.http_response else {
        panic!("not a DeniedHttpResponse: {resp:?}");
    };
    assert_eq!(d.status.as_ref().map(|s| s.code), Some(http), "{d:?}");
    assert_eq!(header(&d.headers, "content-type"), Some("application/json"));
    let body: Value = serde_json::from_str(&d.body).expect("a JSON body");
    if grpc != 7 || reason != "answered_by_claimgate" {
        assert_eq!(body["reason"], reason, "{body}");
    }
    body
}

fn header<'h>(headers: &'h [HeaderValueOption], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == name)
        .map(|h| h.value.as_str())
}

#[allow(deprecated)]
fn assert_overwrites(headers: &[HeaderValueOption]) {
    for h in headers {
        assert_eq!(h.append.as_ref().map(|a| a.value), Some(false), "{h:?}");
        assert_eq!(
            h.append_action,
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            "{h:?}"
        );
    }
}

fn www_authenticate(resp: &CheckResponse) -> Option<&str> {
    match &resp.http_response {
        Some(HttpResponse::DeniedResponse(DeniedHttpResponse { headers, .. })) => {
            header(headers, "www-authenticate")
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_checks_set_identity_headers_over_client_copies() {
    let (env, mut client) = start(None).await;
    let token = env.key.sign(&Claims::new().set("role", "user"));
    let bearer = format!("Bearer {token}");
    let req = check_request(
        "GET",
        "/api/x?y=1",
        &[
            ("authorization", &bearer),
            ("x-user-id", "mallory"),
            ("x_user_id", "mallory"),
        ],
    );
    let resp = check(&mut client, req).await;
    let ok = allowed(&resp);
    assert_eq!(header(&ok.headers, "x-user-id"), Some("alice"));
    let user = decode_user_header(header(&ok.headers, "x-claimgate-user").unwrap());
    assert_eq!(user["id"], "alice");
    assert_overwrites(&ok.headers);
    // The exact names are overwritten, never removed; the `_` spelling the client sent is.
    assert_eq!(ok.headers_to_remove, vec!["x_user_id".to_owned()], "{ok:?}");

    // Newer Envoys send `header_map` (raw values) instead of the `headers` map.
    let mut req = check_request("GET", "/api/x", &[]);
    let http = req.attributes.as_mut().unwrap().request.as_mut().unwrap();
    http.http.as_mut().unwrap().header_map = Some(HeaderMap {
        headers: vec![HeaderValue {
            key: "authorization".into(),
            value: String::new(),
            raw_value: bearer.clone().into_bytes(),
        }],
    });
    let resp = check(&mut client, req).await;
    assert_eq!(header(&allowed(&resp).headers, "x-user-id"), Some("alice"));

    // A token in the query, for the provider's `query: access_token` source.
    let req = check_request("GET", &format!("/api/x?access_token={token}"), &[]);
    let resp = check(&mut client, req).await;
    assert_eq!(header(&allowed(&resp).headers, "x-user-id"), Some("alice"));

    // Anonymous route: nothing is set, so even the exact name the client sent is removed.
    let req = check_request("GET", "/public/x", &[("x-user-id", "mallory")]);
    let resp = check(&mut client, req).await;
    let ok = allowed(&resp);
    assert!(ok.headers.is_empty(), "{ok:?}");
    assert_eq!(ok.headers_to_remove, vec!["x-user-id".to_owned()]);

    // Counted like every other door's answers.
    let metrics = env.claimgate.metrics().await;
    let allowed = metric(
        &metrics,
        "claimgate_requests_total",
        &[("outcome", "allowed")],
    );
    assert_eq!(allowed, Some(4.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_denied_responses_with_the_matching_grpc_code() {
    let (env, mut client) = start(None).await;
    let resp = check(&mut client, check_request("GET", "/api/x", &[])).await;
    let body = denied(&resp, 401, 16, "token_missing");
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(www_authenticate(&resp), Some("Bearer realm=\"claimgate\""));
    if let Some(HttpResponse::DeniedResponse(d)) = &resp.http_response {
        assert_overwrites(&d.headers);
    }

    let bearer = format!(
        "Bearer {}",
        env.key.sign(&Claims::new().set("role", "user"))
    );
    let req = check_request("GET", "/admin/x", &[("authorization", &bearer)]);
    denied(&check(&mut client, req).await, 403, 7, "forbidden");

    let req = check_request("GET", "/api/..;/admin", &[("authorization", &bearer)]);
    denied(&check(&mut client, req).await, 400, 3, "bad_path");

    // No `attributes.request.http`: never OK.
    let resp = check(&mut client, CheckRequest::default()).await;
    denied(&resp, 400, 3, "bad_original_request");
    let req = check_request("GET", "api/x", &[("authorization", &bearer)]);
    denied(
        &check(&mut client, req).await,
        400,
        3,
        "bad_original_request",
    );

    // The HTTP port of a gRPC-only config has no original request to read: 400, never 200.
    let resp = raw::get(
        &env.claimgate.url,
        "/api/x",
        &[format!("Authorization: {bearer}")],
    )
    .await;
    assert_eq!(resp.status, 400, "{resp:?}");
    assert_eq!(resp.reason().as_deref(), Some("bad_original_request"));

    // /userinfo is answered by claimgate itself: a 200 "denied" response with the JSON.
    let req = check_request("GET", "/.claimgate/userinfo", &[("authorization", &bearer)]);
    let body = denied(
        &check(&mut client, req).await,
        200,
        7,
        "answered_by_claimgate",
    );
    assert_eq!(body["id"], "alice", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_outside_trusted_proxies_are_refused_whatever_they_claim() {
    let (env, mut client) = start(Some("10.0.0.0/8")).await;
    let bearer = format!(
        "Bearer {}",
        env.key.sign(&Claims::new().set("role", "admin"))
    );
    let mut req = check_request("GET", "/api/x", &[("authorization", &bearer)]);
    // `attributes.source` names a trusted address; only the connection's peer counts.
    let attributes = req.attributes.as_mut().unwrap();
    attributes.source = Some(Peer {
        principal: "10.1.2.3".into(),
        ..Default::default()
    });
    let resp = check(&mut client, req).await;
    denied(&resp, 403, 7, "untrusted_proxy");
    assert_eq!(www_authenticate(&resp), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_listener_stops_with_the_others() {
    let (env, mut client) = start(None).await;
    let resp = check(&mut client, check_request("GET", "/public/x", &[])).await;
    allowed(&resp);
    // The client keeps its HTTP/2 connection open: SIGTERM must still end the process well
    // before `terminate` falls back to SIGKILL (5 s).
    let started = std::time::Instant::now();
    let env = tokio::task::spawn_blocking(move || {
        env.claimgate.terminate();
        env
    })
    .await
    .unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "took {:?}; stderr:\n{}",
        started.elapsed(),
        env.claimgate.stderr()
    );
    assert!(client
        .check(check_request("GET", "/public/x", &[]))
        .await
        .is_err());
}
