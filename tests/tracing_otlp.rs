//! W3C trace context through the real binary: without `tracing.otlp_endpoint`, `traceparent` and
//! `tracestate` reach the upstream unchanged and a malformed `traceparent` is no reason to refuse;
//! with it, the spans arrive at an in-test OTLP/HTTP receiver (protobuf decoded) under the
//! caller's trace, and the upstream continues the trace under the `forward` span.

mod common;

use common::servers::HttpServer;
use common::*;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_reaches_the_upstream_and_a_malformed_one_is_no_problem() {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let server = JwksServer::start(jwks(&[&key])).await;
    let proxy = Proxy::start(&TestConfig::jwks(&upstream.url(), &server.uri())).await;
    let token = key.sign(&Claims::new());

    let echo = expect_echo(
        proxy
            .get("/")
            .bearer_auth(&token)
            .header("traceparent", TRACEPARENT)
            .header("tracestate", "vendor=opaque,other=1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(echo.header("traceparent"), Some(TRACEPARENT));
    assert_eq!(echo.header("tracestate"), Some("vendor=opaque,other=1"));

    for malformed in [
        "garbage",
        "00-zz-00-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736",
    ] {
        let echo = expect_echo(
            proxy
                .get("/")
                .bearer_auth(&token)
                .header("traceparent", malformed)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(echo.header("traceparent"), Some(malformed));
    }
    // A rejection is a rejection whatever the trace context says.
    let resp = proxy
        .get("/")
        .header("traceparent", "garbage")
        .send()
        .await
        .unwrap();
    expect_reject(resp, 401, "token_missing").await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_http_under_the_callers_trace() {
    let received: Arc<Mutex<Vec<(String, Span)>>> = Arc::default();
    let sink = received.clone();
    let receiver = HttpServer::start(Arc::new(
        move |req: hyper::Request<hyper::body::Incoming>| {
            let sink = sink.clone();
            Box::pin(async move {
                let path = req.uri().path().to_owned();
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let export =
                    ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                let spans = export
                    .resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                    .flat_map(|s| s.spans);
                sink.lock()
                    .unwrap()
                    .extend(spans.map(|span| (path.clone(), span)));
                hyper::Response::new(Full::new(bytes::Bytes::new()))
            })
        },
    ))
    .await;

    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let server = JwksServer::start(jwks(&[&key])).await;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    std::fs::write(&users, r#"[{"user_id": "alice", "userGroup": "g"}]"#).unwrap();
    let config = TestConfig::jwks(&upstream.url(), &server.uri())
        .set("/user_data", file_section(&users))
        .set(
            "/tracing",
            serde_json::json!({"otlp_endpoint": receiver.url(), "service_name": "claimgate-test"}),
        );
    let proxy = Proxy::spawn(&config, &[], &[("OTEL_BSP_SCHEDULE_DELAY", "100")]);
    proxy.wait_ready().await;

    let echo = expect_echo(
        proxy
            .get("/")
            .bearer_auth(key.sign(&Claims::new().set("sub", "alice")))
            .header("traceparent", TRACEPARENT)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let sent = echo.header("traceparent").expect("a traceparent upstream");
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(
        parts[1], "4bf92f3577b34da6a3ce929d0e0e4736",
        "same trace: {sent}"
    );
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "the upstream's parent is claimgate's span"
    );

    // A bounded wait for the batch (100 ms schedule), not a timed assertion.
    let deadline = Instant::now() + Duration::from_secs(20);
    let wanted = ["verify", "user_data", "authorize", "forward"];
    let spans = loop {
        let spans = received.lock().unwrap().clone();
        if wanted
            .iter()
            .all(|w| spans.iter().any(|(_, s)| s.name == *w))
        {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans received: {:?}\nstderr:\n{}",
            spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>(),
            proxy.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for name in wanted {
        let (path, span) = spans.iter().find(|(_, s)| s.name == name).unwrap();
        assert_eq!(path, "/v1/traces");
        assert_eq!(
            hex(&span.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "{name}"
        );
        assert_eq!(hex(&span.parent_span_id), "00f067aa0ba902b7", "{name}");
    }
    let forward = &spans.iter().find(|(_, s)| s.name == "forward").unwrap().1;
    assert_eq!(
        hex(&forward.span_id),
        parts[2],
        "the upstream continues under `forward`"
    );
    proxy.terminate();
}
