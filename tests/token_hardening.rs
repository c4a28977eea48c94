//! Tokens built to be read two ways (duplicate names, out-of-range times, invalid UTF-8,
//! identities that would collide in a header) and key sources built to exhaust or confuse the
//! proxy (oversized JWKS, weak or encryption keys).

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A 1024-bit RSA modulus (public only; `openssl genrsa 1024`), e = 65537. No private key is
/// needed: a key below 2048 bits must never be loaded, so a token naming it gets `unknown_kid`,
/// whatever its signature.
const RSA_1024_N: &str = "paHsqPHNM9BOfHQ0Jhx4O5Pyey4BZBuEzPqPInRghwore7hTCdJB24qF3BVON0Vk828adgYYwScHht9eMZ90bPVGk-2E8mIG1wTCA-duKTk_EGh_JFH1WSgA9jC-K-v4BzWQwt8YjrsPITyQhASbWDYVPfzHZ0UhrVqrD0qAgz8";

struct Env {
    upstream: EchoUpstream,
    _jwks: JwksServer,
    proxy: Proxy,
}

async fn setup(key: &SigningKey) -> Env {
    let upstream = EchoUpstream::start().await;
    let jwks_server = JwksServer::start(jwks(&[key])).await;
    let proxy = Proxy::start(&TestConfig::jwks(&upstream.url(), &jwks_server.uri())).await;
    Env {
        upstream,
        _jwks: jwks_server,
        proxy,
    }
}

/// `value` as JSON text with `extra` spliced in before the closing brace: the only way to get a
/// member name twice, or bytes that are not UTF-8, into a header or payload.
fn spliced(value: &Value, extra: &[u8]) -> Vec<u8> {
    let mut text = value.to_string().into_bytes();
    text.pop();
    text.extend_from_slice(extra);
    text.push(b'}');
    text
}

fn claims_with(claims: &Claims, extra: &[u8]) -> Vec<u8> {
    spliced(&claims.to_value(), extra)
}

/// A 401 with this reason, whose description contains `detail`.
async fn rejected(env: &Env, token: &str, reason: &str, detail: &str) {
    let body = expect_reject(env.proxy.get_with_token("/", token).await, 401, reason).await;
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(
        description.contains(detail),
        "{description:?} lacks {detail:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_member_names_are_malformed_at_any_depth() {
    let key = SigningKey::es256("ec");
    let env = setup(&key).await;
    let header = key.header().to_string().into_bytes();
    let sign = |payload: Vec<u8>| key.sign_bytes(&header, &payload);

    // The splicing itself yields an acceptable token.
    let plain = sign(claims_with(&Claims::new(), b""));
    expect_echo(env.proxy.get_with_token("/", &plain).await).await;

    let claims_dup = "duplicate member name in the claims";
    // serde_json keeps the last: this was forwarded as `admin`.
    let second_sub = sign(claims_with(&Claims::new(), br#","sub":"admin""#));
    rejected(&env, &second_sub, "malformed", claims_dup).await;
    // A second `exp` revived an expired token.
    let revived = sign(claims_with(
        &Claims::new().exp_in(-3600),
        format!(r#","exp":{}"#, keys::now() + 3600).as_bytes(),
    ));
    rejected(&env, &revived, "malformed", claims_dup).await;
    // Nested, and spelled with an escape: still the same name.
    let nested = sign(spliced(
        &Claims::new().remove("user").to_value(),
        br#","user":{"name":"Alice","n\u0061me":"Mallory"}"#,
    ));
    rejected(&env, &nested, "malformed", claims_dup).await;

    let header_dup = key.sign_bytes(
        &spliced(&key.header(), br#","kid":"other""#),
        &claims_with(&Claims::new(), b""),
    );
    rejected(
        &env,
        &header_dup,
        "malformed",
        "duplicate member name in the header",
    )
    .await;
    assert_eq!(env.upstream.requests().len(), 1, "only the plain token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_claims_outside_numeric_date_range_are_malformed() {
    let key = SigningKey::es256("ec");
    let env = setup(&key).await;
    let header = key.header().to_string().into_bytes();
    let with_time = |claim: &str, raw: &str| {
        let claims = Claims::new().remove(claim);
        let extra = format!(r#","{claim}":{raw}"#);
        key.sign_bytes(&header, &claims_with(&claims, extra.as_bytes()))
    };

    // `1e300` and 2^63 used to read as u64::MAX: never expiring, cached forever.
    for raw in [
        "1e300",
        "9223372036854775808",
        "18446744073709551615",
        "253402300800",
        "-1",
        "-0.5",
        r#""4102444800""#,
        "true",
        "[4102444800]",
    ] {
        let token = with_time("exp", raw);
        let detail = "exp is not a NumericDate between 0 and 253402300799";
        rejected(&env, &token, "malformed", detail).await;
    }
    for claim in ["nbf", "iat"] {
        let detail = format!("{claim} is not a NumericDate between 0 and 253402300799");
        for raw in ["1e300", "-1", r#""0""#] {
            rejected(&env, &with_time(claim, raw), "malformed", &detail).await;
        }
    }

    // The last second of year 9999 is a date; a fraction is a valid NumericDate.
    expect_echo(
        env.proxy
            .get_with_token("/", &with_time("exp", "253402300799"))
            .await,
    )
    .await;
    let fractional = format!("{}.75", keys::now() + 600);
    expect_echo(
        env.proxy
            .get_with_token("/", &with_time("exp", &fractional))
            .await,
    )
    .await;
    // `null` counts as absent, like a missing `exp`.
    let null_exp = with_time("exp", "null");
    rejected(&env, &null_exp, "claim_missing", "exp").await;
    assert_eq!(env.upstream.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_anywhere_in_header_or_claims_is_malformed() {
    let key = SigningKey::es256("ec");
    let env = setup(&key).await;
    let claims = claims_with(&Claims::new(), b"");
    // An unknown header member used to be skipped without looking at its bytes.
    for extra in [&b",\"x-junk\":\"\xff\""[..], b",\"\xc3\x28\":1"] {
        let token = key.sign_bytes(&spliced(&key.header(), extra), &claims);
        rejected(&env, &token, "malformed", "header is not UTF-8").await;
    }
    let header = key.header().to_string().into_bytes();
    for extra in [&b",\"note\":\"\xed\xa0\x80\""[..], b",\"\xff\":1"] {
        let token = key.sign_bytes(&header, &claims_with(&Claims::new(), extra));
        rejected(&env, &token, "malformed", "claims are not UTF-8").await;
    }
    assert!(env.upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_the_user_id_are_claim_invalid() {
    let key = SigningKey::es256("ec");
    let env = setup(&key).await;
    for sub in [
        "\u{1}bob",
        "bob\r\nX-Admin: 1",
        "bob\0",
        "a\tb",
        "bob\u{7f}",
        "\u{85}bob",
    ] {
        let token = key.sign(&Claims::new().set("sub", sub));
        rejected(&env, &token, "claim_invalid", "claim sub").await;
    }
    assert!(env.upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_identity_values_never_share_a_header() {
    let key = SigningKey::es256("ec");
    let env = setup(&key).await;
    let user_id = |sub: &'static str| {
        let token = key.sign(&Claims::new().set("sub", sub));
        let proxy = &env.proxy;
        async move {
            let echo = expect_echo(proxy.get_with_token("/", &token).await).await;
            echo.header("x-user-id").unwrap().to_owned()
        }
    };
    // Each pair collided under the base64url fallback.
    assert_eq!(user_id("José").await, "UTF-8''Jos%C3%A9");
    assert_eq!(user_id("Sm9zw6k").await, "Sm9zw6k");
    assert_eq!(user_id("AWJvYg").await, "AWJvYg");
    // A plain value shaped like an encoded one is encoded too, so it cannot pass for `José`.
    assert_eq!(
        user_id("UTF-8''Jos%C3%A9").await,
        "UTF-8''UTF-8%27%27Jos%25C3%25A9"
    );
    // Leading space would be stripped by the upstream's parser.
    assert_eq!(user_id(" bob").await, "UTF-8''%20bob");
    assert_eq!(user_id("bob").await, "bob");

    // Other values are encoded, not refused: only the user id is an identity.
    let name = Claims::new().set("user", json!({"name": "Al\u{1}ice"}));
    let echo = expect_echo(env.proxy.get_with_token("/", &key.sign(&name)).await).await;
    assert_eq!(echo.header("x-user-name"), Some("UTF-8''Al%01ice"));
}

/// A JWKS endpoint that streams `chunks` chunks of 1 KiB with no Content-Length.
async fn chunked_jwks_server(
    chunks: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                            Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("400\r\n{}\r\n", " ".repeat(1024));
                for _ in 0..chunks {
                    if stream.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = stream.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    (url, hits)
}

async fn wait_for_log(proxy: &Proxy, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.stderr().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in stderr:\n{}",
            proxy.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_jwks_is_refused_and_the_last_good_keys_kept() {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let server = JwksServer::start(jwks(&[&key])).await;
    let config = TestConfig::jwks(&upstream.url(), &server.uri()).provider("jwks_max_bytes", 2048);
    let proxy = Proxy::start(&config).await;
    let token = key.sign(&Claims::new());
    expect_echo(proxy.get_with_token("/", &token).await).await;

    // Rotation to a set that is over the limit: the fetch fails, the old key keeps working.
    let rotated = SigningKey::es256("rotated");
    let mut big = jwks(&[&key, &rotated]);
    big["padding"] = json!("x".repeat(4096));
    server.set_jwks(big);
    // Past jwks_min_refresh_seconds (1), so that the unknown kid may refetch.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let hits = server.hits();
    let resp = proxy
        .get_with_token("/", &rotated.sign(&Claims::new()))
        .await;
    expect_reject(resp, 401, "unknown_kid").await;
    assert!(server.hits() > hits, "unknown kid did not refetch");
    wait_for_log(&proxy, "exceeds jwks_max_bytes (2048 bytes)").await;
    assert!(proxy.stderr().contains("(Content-Length)"));
    expect_echo(proxy.get_with_token("/", &token).await).await;
    expect_jwks_fetch(&proxy, "error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_jwks_over_the_limit_leaves_the_proxy_unready() {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    // 64 KiB without Content-Length against a 4 KiB limit.
    let (uri, hits) = chunked_jwks_server(64).await;
    let config = TestConfig::jwks(&upstream.url(), &uri).provider("jwks_max_bytes", 4096);
    let proxy = Proxy::spawn(&config, &[], &[]);
    proxy.wait_up().await;
    wait_for_log(&proxy, "exceeds jwks_max_bytes (4096 bytes)").await;
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert!(
        !proxy.stderr().contains("(Content-Length)"),
        "the server sent none"
    );
    assert_eq!(proxy.admin_get("/readyz").await.status(), 503);
    let resp = proxy.get_with_token("/", &key.sign(&Claims::new())).await;
    expect_reject(resp, 503, "keys_unavailable").await;
    assert!(upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_and_encryption_keys_are_ignored_with_a_warning() {
    let good = SigningKey::rsa("good", Algorithm::RS256);
    let enc = SigningKey::rsa("enc", Algorithm::RS256);
    let mut enc_jwk = enc.jwk();
    enc_jwk["use"] = json!("enc");
    let weak_jwk = json!({
        "kty": "RSA", "use": "sig", "kid": "weak", "alg": "RS256", "n": RSA_1024_N, "e": "AQAB",
    });
    let set = json!({"keys": [good.jwk(), enc_jwk, weak_jwk]});
    let upstream = EchoUpstream::start().await;
    let server = JwksServer::start(set).await;
    let proxy = Proxy::start(&TestConfig::jwks(&upstream.url(), &server.uri())).await;

    let echo = expect_echo(proxy.get_with_token("/", &good.sign(&Claims::new())).await).await;
    assert_eq!(echo.header("x-user-id"), Some("alice"));
    let resp = proxy.get_with_token("/", &enc.sign(&Claims::new())).await;
    expect_reject(resp, 401, "unknown_kid").await;
    // Were the 1024-bit key loaded, this would be bad_signature rather than unknown_kid.
    let mut header = good.header();
    header["kid"] = json!("weak");
    let weak = good.sign_raw(&header, &Claims::new().to_value());
    expect_reject(proxy.get_with_token("/", &weak).await, 401, "unknown_kid").await;

    let log = proxy.stderr();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("skipping unusable JWKS key"))
        .collect();
    let names = |needle: &str| {
        warnings
            .iter()
            .any(|l| l.contains(needle) && l.contains("test"))
    };
    assert!(
        names(r#"kid "enc": use "enc" is not "sig""#),
        "stderr:\n{log}"
    );
    assert!(
        names(r#"kid "weak": RSA key is 1024 bits"#),
        "stderr:\n{log}"
    );
    let metrics = proxy.metrics().await;
    let keys = metric(&metrics, "claimgate_jwks_keys", &[("provider", "test")]);
    assert_eq!(keys, Some(1.0), "metrics:\n{metrics}");
}
