//! W3C trace context through the real binary: `traceparent` and `tracestate` reach the upstream
//! unchanged, and a malformed `traceparent` is passed on as sent, never a reason to refuse.
//! (The OTLP export of `tracing.otlp_endpoint` is not built yet: see the README, "Traces".)

mod common;

use common::*;

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
