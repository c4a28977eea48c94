//! The built-in upstream of `claimgate --dev`: it answers with what it received, so a developer
//! can see exactly which headers claimgate injected without running a real backend.

use crate::error::{full, Body};
use crate::server;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Map, Value};
use std::future::Future;
use std::net::SocketAddr;
use tokio::net::TcpListener;

pub async fn serve_echo(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    server::serve(listener, server::ServerLimits::default(), echo, shutdown).await;
}

async fn echo(req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
    let (parts, mut body) = req.into_parts();
    let mut headers = Map::new();
    for name in parts.headers.keys() {
        let joined = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        headers.insert(name.as_str().to_owned(), Value::String(joined));
    }
    // Counted frame by frame rather than collected, so a large upload costs no memory here.
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_bytes += data.len() as u64;
                }
            }
            Err(error) => {
                let payload = json!({ "error": format!("reading request body: {error}") });
                return json_response(StatusCode::BAD_REQUEST, &payload);
            }
        }
    }
    let payload = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body_bytes,
    });
    json_response(StatusCode::OK, &payload)
}

fn json_response(status: StatusCode, payload: &Value) -> Response<Body> {
    let mut response = Response::new(full(payload.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
