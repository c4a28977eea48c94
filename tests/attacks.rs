//! The attack suite of issue 11, through the real binary, a real JWKS server and a real
//! upstream, every request written to a raw socket as an attacker would. Each attack must get its
//! 4xx (401 with a `WWW-Authenticate` challenge, or the 400/431 stated), never a 200 or a 5xx, and
//! the upstream must see nothing.
//!
//! Attacks proven elsewhere (not repeated here):
//!
//! | attack                                        | test                                                              |
//! |-----------------------------------------------|-------------------------------------------------------------------|
//! | duplicate member names in header or claims    | `token_hardening::duplicate_member_names_are_malformed_at_any_depth` |
//! | invalid UTF-8 inside the decoded header/claims | `token_hardening::invalid_utf8_anywhere_in_header_or_claims_is_malformed` |
//! | RSA keys under 2048 bits, `use: enc` keys     | `token_hardening::weak_and_encryption_keys_are_ignored_with_a_warning` |
//! | two tokens (two headers, header + cookie …)   | `bypasses::more_than_one_token_is_ambiguous`                      |
//! | a head over `limits.max_header_bytes` (431)   | `server_hardening::oversized_request_head_gets_431_and_never_reaches_upstream` |
//!
//! Everything else of the list is in the case lists (`attacks/cases.rs`): one proxy per provider set-up,
//! one loop over the cases.

#[path = "attacks/cases.rs"]
mod cases;
mod common;
#[path = "attacks/forge.rs"]
mod forge;

use cases::*;

use common::raw::{self, RawResponse};
use common::*;
use forge::*;
use jsonwebtoken::Algorithm;
use serde_json::json;

struct Attack {
    name: String,
    /// The request line's target.
    path: String,
    /// Header lines (without CRLF), as raw bytes: tokens need not be UTF-8.
    headers: Vec<Vec<u8>>,
    status: u16,
    reason: &'static str,
}

fn bearer(
    name: impl Into<String>,
    token: impl AsRef<[u8]>,
    status: u16,
    reason: &'static str,
) -> Attack {
    Attack {
        name: name.into(),
        path: "/".into(),
        headers: vec![[b"Authorization: Bearer ", token.as_ref()].concat()],
        status,
        reason,
    }
}

fn unauthorized(name: impl Into<String>, token: impl AsRef<[u8]>, reason: &'static str) -> Attack {
    bearer(name, token, 401, reason)
}

fn request_bytes(base_url: &str, attack: &Attack) -> Vec<u8> {
    let host = base_url.trim_start_matches("http://");
    let mut out = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n",
        attack.path
    )
    .into_bytes();
    for line in &attack.headers {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Sends every attack and checks its answer; the upstream count is checked after each one, so a
/// failure names the attack that got through. Every failure is listed before the test fails.
async fn refuse_all(proxy: &Proxy, upstream: &EchoUpstream, attacks: &[Attack]) {
    let mut failures = Vec::new();
    for attack in attacks {
        let before = upstream.requests().len();
        let resp = raw::send(&proxy.url, &request_bytes(&proxy.url, attack)).await;
        let reason = resp.reason();
        let challenge = resp.header("www-authenticate");
        let wrong = if resp.status != attack.status {
            Some(format!(
                "status {} instead of {}",
                resp.status, attack.status
            ))
        } else if !attack.reason.is_empty() && reason.as_deref() != Some(attack.reason) {
            Some(format!("reason {reason:?} instead of {:?}", attack.reason))
        } else if resp.status == 401 && !challenge.is_some_and(|c| c.starts_with("Bearer ")) {
            Some("a 401 without a Bearer challenge".to_owned())
        } else if upstream.requests().len() != before {
            Some("reached the upstream".to_owned())
        } else {
            None
        };
        if let Some(wrong) = wrong {
            failures.push(format!("{}: {wrong}; {}", attack.name, resp.body));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} attacks were not refused as expected:\n{}",
        failures.len(),
        attacks.len(),
        failures.join("\n")
    );
}

async fn accepted(proxy: &Proxy, what: &str, token: &str) -> RawResponse {
    let line = format!("Authorization: Bearer {token}");
    let resp = raw::get(&proxy.url, "/", &[line]).await;
    assert_eq!(resp.status, 200, "{what}: {resp:?}");
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_are_refused_and_never_forwarded() {
    let keys = Keys {
        rsa: SigningKey::rsa("rs", Algorithm::RS256),
        ec: SigningKey::es256("ec"),
        ec384: SigningKey::es384("ec384"),
        evil: SigningKey::es256("evil"),
    };
    let upstream = EchoUpstream::start().await;
    let server = JwksServer::start(jwks(&[&keys.rsa, &keys.ec, &keys.ec384])).await;
    let attacker = JwksServer::start(jwks(&[&keys.evil])).await;
    let config = TestConfig::jwks(&upstream.url(), &server.uri()).provider(
        "algorithms",
        json!(["RS256", "PS256", "ES256", "ES384", "EdDSA"]),
    );
    let proxy = Proxy::start(&config).await;

    let attacks: Vec<Attack> = [
        algorithm_cases(&keys),
        kid_cases(&keys),
        key_header_cases(&keys, &attacker.uri()),
        structure_cases(&keys),
        encoding_cases(&keys),
        ecdsa_cases(&keys),
        claim_cases(&keys),
    ]
    .into_iter()
    .flatten()
    .collect();
    refuse_all(&proxy, &upstream, &attacks).await;
    assert_eq!(
        attacker.hits(),
        0,
        "the attacker's key server was contacted"
    );
    assert!(upstream.requests().is_empty());

    // The same set-up accepts what it should, so the refusals above are not a broken proxy.
    for key in [&keys.rsa, &keys.ec, &keys.ec384] {
        accepted(&proxy, &key.kid, &key.sign(&Claims::new())).await;
    }
    // A fractional NumericDate inside the range is valid (RFC 7519 §2).
    let header = keys.ec.header().to_string().into_bytes();
    let now = common::keys::now();
    for (name, raw) in [
        ("exp", format!("{}.5", now + 600)),
        ("nbf", format!("{}.25", now - 10)),
        ("iat", format!("{}.75", now - 10)),
    ] {
        let token = keys
            .ec
            .sign_bytes(&header, &claims_with_raw(&Claims::new(), name, &raw));
        accepted(&proxy, &format!("{name}: {raw}"), &token).await;
    }
    // ECDSA is malleable: (r, n - s) verifies like (r, s). The twin is the same identity, signed
    // by the same key over the same claims, so it is accepted as such.
    for key in [&keys.ec, &keys.ec384] {
        let valid = key.sign(&Claims::new().set("sub", "twin"));
        let twin = resigned(&valid, &high_s_twin(&signature(&valid)));
        assert_ne!(twin, valid);
        accepted(&proxy, "high-S twin", &twin).await;
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), 8);
    assert_eq!(seen[6].header("x-user-id"), Some("twin"));
    assert_eq!(attacker.hits(), 0);
}

/// Two providers with their own JWKS: a token claiming issuer A, signed with B's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_one_issuer_signed_with_anothers_key_is_refused() {
    let a = SigningKey::es256("a-ec");
    let b = SigningKey::es256("b-ec");
    let b_rsa = SigningKey::rsa("b-rs", Algorithm::RS256);
    let upstream = EchoUpstream::start().await;
    let server_a = JwksServer::start(jwks(&[&a])).await;
    let server_b = JwksServer::start(jwks(&[&b, &b_rsa])).await;
    let issuer_b = "https://issuer-b.test";
    let config = TestConfig::jwks(&upstream.url(), &server_a.uri());
    let mut second = config.0["providers"][0].clone();
    second["name"] = json!("b");
    second["issuer"] = json!(issuer_b);
    second["jwks_uri"] = json!(server_b.uri());
    let mut config = config;
    config.0["providers"].as_array_mut().unwrap().push(second);
    let proxy = Proxy::start(&config).await;

    let for_a = Claims::new();
    let mut header_b_as_a = b.header();
    header_b_as_a["kid"] = json!(a.kid);
    let mut no_kid = b.header();
    no_kid.as_object_mut().unwrap().remove("kid");
    let attacks = vec![
        unauthorized("A's issuer, B's key and kid", b.sign(&for_a), "unknown_kid"),
        unauthorized(
            "A's issuer, B's RSA key and kid",
            b_rsa.sign(&for_a),
            "unknown_kid",
        ),
        unauthorized(
            "A's issuer, B's key, A's kid",
            b.sign_raw(&header_b_as_a, &for_a.to_value()),
            "bad_signature",
        ),
        unauthorized(
            "A's issuer, B's key, no kid",
            b.sign_raw(&no_kid, &for_a.to_value()),
            "bad_signature",
        ),
        unauthorized(
            "B's issuer, A's key",
            a.sign(&Claims::new().set("iss", issuer_b)),
            "unknown_kid",
        ),
    ];
    refuse_all(&proxy, &upstream, &attacks).await;
    accepted(&proxy, "A", &a.sign(&for_a)).await;
    accepted(&proxy, "B", &b.sign(&Claims::new().set("iss", issuer_b))).await;
    accepted(
        &proxy,
        "B RSA",
        &b_rsa.sign(&Claims::new().set("iss", issuer_b)),
    )
    .await;
    assert_eq!(upstream.requests().len(), 3);
}

/// A 1 MiB token is refused by the head limit before anything decodes it, wherever it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_token_is_431_before_decoding() {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let server = JwksServer::start(jwks(&[&key])).await;
    let proxy = Proxy::start(&TestConfig::jwks(&upstream.url(), &server.uri())).await;
    let huge = key.sign(&Claims::new().set("pad", "x".repeat(1 << 20)));
    assert!(huge.len() > 1 << 20);
    let attacks = [
        bearer("Authorization", &huge, 431, ""),
        Attack {
            name: "cookie".into(),
            path: "/".into(),
            headers: vec![format!("Cookie: access_token={huge}").into_bytes()],
            status: 431,
            reason: "",
        },
        Attack {
            name: "query".into(),
            path: format!("/?access_token={huge}"),
            headers: Vec::new(),
            status: 431,
            reason: "",
        },
    ];
    refuse_all(&proxy, &upstream, &attacks).await;
    accepted(&proxy, "small", &key.sign(&Claims::new())).await;
}

/// Framing an upstream could read differently from claimgate (RFC 9112 §6.3, §5.2, §5.1): each
/// is a 400 that forwards nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_framings_are_400_and_never_forwarded() {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let server = JwksServer::start(jwks(&[&key])).await;
    let proxy = Proxy::start(&TestConfig::jwks(&upstream.url(), &server.uri())).await;
    let auth = format!("Authorization: Bearer {}", key.sign(&Claims::new()));
    let host = proxy.url.trim_start_matches("http://").to_owned();
    // A second request hidden in the body: read as a request of its own, it would skip the
    // first one's judgement (or ride on its token).
    let hidden = format!("GET /hidden HTTP/1.1\r\nHost: {host}\r\nX-Smuggled: 1\r\n\r\n");
    let chunked = format!("0\r\n\r\n{hidden}");
    let post = |headers: &str, body: &str| {
        format!("POST /form HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n{headers}\r\n\r\n{body}")
    };
    let long = 4 + hidden.len();
    let cases = [
        (
            "two different Content-Length",
            post(
                &format!("Content-Length: 4\r\nContent-Length: {long}"),
                &format!("abcd{hidden}"),
            ),
        ),
        (
            "a Content-Length list that disagrees",
            post(
                &format!("Content-Length: 4, {long}"),
                &format!("abcd{hidden}"),
            ),
        ),
        (
            "Content-Length with a sign",
            post("Content-Length: +4", "abcd"),
        ),
        (
            "Transfer-Encoding not ending in chunked",
            post("Transfer-Encoding: chunked, identity", &chunked),
        ),
        (
            "Transfer-Encoding of another coding",
            post("Transfer-Encoding: xchunked", &chunked),
        ),
        ("obsolete line folding", post("X-Folded: a\r\n b", "")),
        (
            "folded Transfer-Encoding",
            post("Transfer-Encoding:\r\n chunked", &chunked),
        ),
        (
            "a space inside a header name",
            post("Content Length: 4", "abcd"),
        ),
        (
            "a space before the colon",
            post("Content-Length : 4", "abcd"),
        ),
        (
            "a bare CR in a header",
            post("X-A: a\rTransfer-Encoding: chunked", &chunked),
        ),
    ];
    let mut failures = Vec::new();
    for (what, request) in cases {
        let resp = raw::send(&proxy.url, request.as_bytes()).await;
        let forwarded = upstream.requests();
        if resp.status != 400 || !forwarded.is_empty() {
            failures.push(format!(
                "{what}: {} and {} forwarded",
                resp.status,
                forwarded.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Content-Length together with Transfer-Encoding (either order): hyper (1.12) applies
    // RFC 9112 §6.1 before claimgate sees the request: chunked framing wins, the Content-Length
    // is dropped, and the connection is closed after the answer. The one request is judged and
    // forwarded with its (empty) chunked body; the bytes after it are never read as a request.
    for (what, framing) in [
        (
            "Content-Length then Transfer-Encoding",
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked",
                chunked.len()
            ),
        ),
        (
            "Transfer-Encoding then Content-Length",
            format!(
                "Transfer-Encoding: chunked\r\nContent-Length: {}",
                chunked.len()
            ),
        ),
    ] {
        let before = upstream.requests().len();
        let resp = raw::send(&proxy.url, post(&framing, &chunked).as_bytes()).await;
        assert_eq!(resp.status, 200, "{what}: {resp:?}");
        assert_eq!(resp.header("connection"), Some("close"), "{what}: {resp:?}");
        let seen = upstream.requests();
        assert_eq!(seen.len(), before + 1, "{what}: {seen:?}");
        let echo = &seen[before];
        assert_eq!((echo.path.as_str(), echo.body_len), ("/form", 0), "{what}");
        assert!(!echo.has_header("content-length"), "{what}: {echo:?}");
    }
    assert!(upstream.requests().iter().all(|e| e.path != "/hidden"));
    let ok = post("Content-Length: 4", "abcd");
    assert_eq!(raw::send(&proxy.url, ok.as_bytes()).await.status, 200);
    assert_eq!(upstream.requests().len(), 3);
}
