//! A gRPC service behind claimgate (`upstream.protocol: h2c`), with a real tonic server and
//! client: unary and server-streaming calls carry the identity as metadata, and refused calls
//! get the gRPC status a gRPC client understands instead of a JSON body.

mod common;

use common::*;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// What the gRPC server saw of each call: its `x-user-id` and whether it had a token.
type Seen = Arc<Mutex<Vec<(Option<String>, bool)>>>;

async fn grpc_upstream() -> (String, Seen) {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let service = InterceptedService::new(health, move |req: Request<()>| {
        let meta = req.metadata();
        let user = meta
            .get("x-user-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        record
            .lock()
            .unwrap()
            .push((user, meta.contains_key("authorization")));
        Ok::<_, Status>(req)
    });
    let port = free_port();
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve(([127, 0, 0, 1], port).into()),
    );
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (url, seen)
}

fn call<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut req = Request::new(message);
    if let Some(token) = token {
        let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        req.metadata_mut().insert("authorization", value);
    }
    req
}

fn check() -> HealthCheckRequest {
    HealthCheckRequest {
        service: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_pass_with_identity_and_refusals_are_grpc_statuses() {
    let key = SigningKey::es256("ec");
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let (upstream, seen) = grpc_upstream().await;
    let config = TestConfig::jwks(&upstream, &jwks_server.uri())
        .set("/upstream/protocol", "h2c")
        .set(
            "/rules",
            json!([{"name": "watchers", "match": {"path": "/grpc.health.v1.Health/Watch"},
                    "allow_when": {"%%token.role": "admin"}}]),
        );
    let proxy = Proxy::start(&config).await;
    let channel = Channel::from_shared(proxy.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let reader = key.sign(&Claims::new().set("role", "reader"));
    let admin = key.sign(&Claims::new().set("role", "admin"));

    // Unary, allowed.
    let answer = client.check(call(check(), Some(&reader))).await.unwrap();
    assert_eq!(answer.into_inner().status, ServingStatus::Serving as i32);
    // Server streaming, allowed: the first message arrives through the proxy.
    let mut stream = client
        .watch(call(check(), Some(&admin)))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    drop(stream);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        for (user, had_token) in seen.iter() {
            assert_eq!(user.as_deref(), Some("alice"));
            assert!(had_token);
        }
    }

    // Refused: no token, a bad token, a rule that does not hold.
    let cases = [
        (None, Code::Unauthenticated, "token_missing"),
        (Some("not.a.token"), Code::Unauthenticated, "malformed"),
    ];
    for (token, code, reason) in cases {
        let status = client.check(call(check(), token)).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().starts_with(reason), "{status:?}");
    }
    let status = client
        .watch(call(check(), Some(&reader)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().starts_with("forbidden"), "{status:?}");
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "a refused call reached the server"
    );
}
