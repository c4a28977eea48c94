use super::headers::X_FORWARDED_FOR;
use super::*;
use crate::echo::serve_echo;
use crate::error::full;
use crate::server::serve;
use bytes::Bytes;
use http::header::HeaderMap;
use http_body_util::StreamBody;
use hyper::body::Frame;
use serde_json::Value;
use std::future::pending;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

async fn start_echo() -> SocketAddr {
    let (listener, addr) = bind().await;
    tokio::spawn(serve_echo(listener, pending()));
    addr
}

fn upstream(url: String, timeout_ms: u64) -> UpstreamConfig {
    UpstreamConfig {
        url,
        timeout_ms,
        connect_timeout_ms: 1_000,
        protocol: Default::default(),
        tls: None,
    }
}

/// What the real proxy does at its end: forward, and turn a refusal into its response.
async fn start_proxy(upstream: UpstreamConfig) -> SocketAddr {
    let forwarder = Arc::new(Forwarder::new(&upstream).unwrap());
    let (listener, addr) = bind().await;
    let handler = move |req: Request<Incoming>, peer: SocketAddr| {
        let forwarder = forwarder.clone();
        async move {
            match forwarder.forward(req, peer).await {
                Ok(response) => response,
                Err(reject) => reject.into_response(),
            }
        }
    };
    tokio::spawn(serve(listener, Default::default(), handler, pending()));
    addr
}

fn client(http2_only: bool) -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new())
        .http2_only(http2_only)
        .build_http()
}

async fn send(
    client: &Client<HttpConnector, Body>,
    req: Request<Body>,
) -> (Version, StatusCode, Value) {
    let response = client.request(req).await.unwrap();
    let (version, status) = (response.version(), response.status());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (version, status, serde_json::from_slice(&bytes).unwrap())
}

fn get(addr: SocketAddr) -> Request<Body> {
    Request::get(format!("http://{addr}/"))
        .body(full(""))
        .unwrap()
}

#[tokio::test]
async fn forwards_path_query_and_forwarded_headers_but_no_hop_by_hop() {
    let echo = start_echo().await;
    let proxy = start_proxy(upstream(format!("http://{echo}/base/"), 5_000)).await;
    let req = Request::get(format!("http://{proxy}/x/y?a=1&b=two"))
        .header("host", "app.example")
        .header("connection", "close, x-secret-hop")
        .header("x-secret-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-kept", "yes")
        .body(full(""))
        .unwrap();
    let (_, status, echoed) = send(&client(false), req).await;
    assert_eq!(status, 200);
    assert_eq!(echoed["method"], "GET");
    assert_eq!(echoed["path"], "/base/x/y");
    assert_eq!(echoed["query"], "a=1&b=two");
    let headers = &echoed["headers"];
    assert_eq!(headers["host"], "app.example");
    assert_eq!(headers["x-forwarded-host"], "app.example");
    assert_eq!(headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-kept"], "yes");
    for gone in ["x-secret-hop", "keep-alive", "connection"] {
        assert!(headers.get(gone).is_none(), "{gone} reached the upstream");
    }
}

#[tokio::test]
async fn upstream_uri_keeps_path_and_query_under_the_base_path() {
    let bare = Forwarder::new(&upstream("http://up:3000".into(), 1)).unwrap();
    let uri = bare.upstream_uri(&"/a/b?c=d".parse().unwrap()).unwrap();
    assert_eq!(uri, "http://up:3000/a/b?c=d");
    let based = Forwarder::new(&upstream("http://up:3000/api".into(), 1)).unwrap();
    let uri = based
        .upstream_uri(&"http://client/a?c".parse().unwrap())
        .unwrap();
    assert_eq!(uri, "http://up:3000/api/a?c");
    let tls = Forwarder::new(&upstream("https://up:8443/api".into(), 1)).unwrap();
    let uri = tls.upstream_uri(&"/a?c".parse().unwrap()).unwrap();
    assert_eq!(uri, "https://up:8443/api/a?c");
    for bad in ["ftp://up", "up:3000", "http://u:p@up", "http://up/?q=1"] {
        let error = Forwarder::new(&upstream(bad.into(), 1)).err().unwrap();
        assert_eq!(error.key, "upstream.url", "{bad}");
    }
}

#[tokio::test]
async fn nothing_listening_is_upstream_unavailable() {
    let (listener, addr) = bind().await;
    drop(listener);
    let proxy = start_proxy(upstream(format!("http://{addr}"), 5_000)).await;
    let (_, status, body) = send(&client(false), get(proxy)).await;
    assert_eq!(status, 502);
    assert_eq!(body["reason"], "upstream_unavailable");
}

#[tokio::test]
async fn silent_upstream_is_upstream_timeout() {
    let (listener, addr) = bind().await;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let proxy = start_proxy(upstream(format!("http://{addr}"), 200)).await;
    let started = Instant::now();
    let (_, status, body) = send(&client(false), get(proxy)).await;
    assert_eq!(status, 504);
    assert_eq!(body["reason"], "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn large_body_streams_through_with_exact_length() {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 80;
    let echo = start_echo().await;
    let proxy = start_proxy(upstream(format!("http://{echo}"), 5_000)).await;
    let frames = (0..CHUNKS).map(|_| Ok(Frame::data(Bytes::from(vec![7u8; CHUNK]))));
    let body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
    let req = Request::post(format!("http://{proxy}/upload"))
        .body(body)
        .unwrap();
    let (_, status, echoed) = send(&client(false), req).await;
    assert_eq!(status, 200);
    assert_eq!(echoed["body_bytes"], (CHUNK * CHUNKS) as u64);
}

#[tokio::test]
async fn h2c_client_is_served_and_forwarded_as_http1() {
    let echo = start_echo().await;
    let proxy = start_proxy(upstream(format!("http://{echo}"), 5_000)).await;
    let req = Request::post(format!("http://{proxy}/h2?x=1"))
        .body(full("hello"))
        .unwrap();
    let (version, status, echoed) = send(&client(true), req).await;
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(status, 200);
    assert_eq!(echoed["path"], "/h2");
    assert_eq!(echoed["body_bytes"], 5);
    assert_eq!(echoed["headers"]["host"], proxy.to_string());
    assert_eq!(echoed["headers"]["x-forwarded-host"], proxy.to_string());
}

/// Reads byte by byte so nothing after the head (tunnel bytes) is consumed.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap().to_ascii_lowercase()
}

async fn start_upgrade_upstream() -> SocketAddr {
    let (listener, addr) = bind().await;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let head = read_head(&mut stream).await;
                if !(head.contains("connection: upgrade") && head.contains("upgrade: echo")) {
                    let refusal = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
                    let _ = stream.write_all(refusal).await;
                    return;
                }
                let switch = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n";
                stream.write_all(switch).await.unwrap();
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_removed() {
    let (listener, addr) = bind().await;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            read_head(&mut stream).await;
            let response = b"HTTP/1.1 200 OK\r\nConnection: x-up-secret\r\nX-Up-Secret: 1\r\n\
                Keep-Alive: timeout=5\r\nX-Up-Kept: 1\r\nContent-Length: 2\r\n\r\nok";
            let _ = stream.write_all(response).await;
        }
    });
    let proxy = start_proxy(upstream(format!("http://{addr}"), 5_000)).await;
    let response = client(false).request(get(proxy)).await.unwrap();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "ok");
    assert_eq!(headers["x-up-kept"], "1");
    for gone in ["x-up-secret", "keep-alive", "connection"] {
        assert!(headers.get(gone).is_none(), "{gone} reached the client");
    }
}

#[tokio::test]
async fn upgrade_round_trips_raw_bytes() {
    let upstream_addr = start_upgrade_upstream().await;
    let proxy = start_proxy(upstream(format!("http://{upstream_addr}"), 5_000)).await;
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request =
        b"GET /ws HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n";
    stream.write_all(request).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut stream))
        .await
        .unwrap();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    assert!(head.contains("connection: upgrade"), "{head}");
    let message = b"ping through the tunnel";
    stream.write_all(message).await.unwrap();
    let mut echoed = vec![0u8; message.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, message);
}

#[test]
fn connection_listed_headers_go_before_identity_injection() {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONNECTION,
        HeaderValue::from_static("x-user-id, Upgrade, close"),
    );
    headers.insert("x-user-id", HeaderValue::from_static("spoofed"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    strip_connection_listed(&mut headers);
    assert!(headers.get("x-user-id").is_none());
    assert_eq!(headers[header::CONNECTION], "upgrade");

    // What `forward` does later must not undo the caller's injection.
    headers.insert("x-user-id", HeaderValue::from_static("injected"));
    assert_eq!(requested_upgrade(&headers).unwrap(), "websocket");
    strip_hop_by_hop(&mut headers);
    assert_eq!(headers["x-user-id"], "injected");
    assert!(headers.get(header::UPGRADE).is_none());
}

#[test]
fn forwarded_for_uses_the_plain_ipv4_of_a_mapped_peer() {
    let mut headers = HeaderMap::new();
    headers.append(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
    headers.append(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.2"));
    append_forwarded_for(&mut headers, "[::ffff:192.0.2.9]:5000".parse().unwrap());
    assert_eq!(headers[X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2, 192.0.2.9");
}

#[tokio::test]
async fn http1_target_is_origin_form_under_the_base_path() {
    let get = Method::GET;
    let bare = Forwarder::new(&upstream("http://up:3000".into(), 1)).unwrap();
    let uri = bare.origin_form(&"/a/b?c=d".parse().unwrap(), &get);
    assert_eq!(uri.unwrap(), "/a/b?c=d");
    let uri = bare.origin_form(&"*".parse().unwrap(), &Method::OPTIONS);
    assert_eq!(uri.unwrap(), "*");
    let based = Forwarder::new(&upstream("http://up:3000/api/".into(), 1)).unwrap();
    let uri = based.origin_form(&"http://client/a?c".parse().unwrap(), &get);
    assert_eq!(uri.unwrap(), "/api/a?c");
    let uri = based.origin_form(&"client:443".parse().unwrap(), &Method::CONNECT);
    assert_eq!(uri.unwrap(), "up:3000");
    assert_eq!(based.default_host, "up:3000");
    let tls = Forwarder::new(&upstream("https://up:443".into(), 1)).unwrap();
    assert_eq!(tls.default_host, "up");
}
