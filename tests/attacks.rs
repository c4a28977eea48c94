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
//! Everything else of the issue's list is in the case lists below: one proxy per provider set-up,
//! one loop over the cases.

mod common;
#[path = "attacks/forge.rs"]
mod forge;

use common::keys::{b64url, signing_input, AUDIENCE, ISSUER};
use common::raw::{self, RawResponse};
use common::*;
use forge::*;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

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

/// `claims` with `name` replaced by raw JSON text (`null`, `1e300`, `"x"`…), which a `Value`
/// cannot always express.
fn claims_with_raw(claims: &Claims, name: &str, raw: &str) -> Vec<u8> {
    let mut text = claims.clone().remove(name).to_value().to_string();
    text.pop();
    format!("{text},\"{name}\":{raw}}}").into_bytes()
}

struct Keys {
    rsa: SigningKey,
    ec: SigningKey,
    ec384: SigningKey,
    /// Published only by the attacker's server.
    evil: SigningKey,
}

fn algorithm_cases(k: &Keys) -> Vec<Attack> {
    let claims = Claims::new();
    let mut out = Vec::new();
    let valid = k.ec.sign(&claims);
    for alg in ["none", "None", "NONE", "nOnE", "NoNe", "none "] {
        let header = json!({"typ": "JWT", "alg": alg});
        let input = signing_input(&header, &claims.to_value());
        out.push(unauthorized(
            format!("alg {alg:?}, no signature"),
            format!("{input}."),
            "alg_not_allowed",
        ));
        let signed = format!("{input}.{}", b64url(&signature(&valid)));
        out.push(unauthorized(
            format!("alg {alg:?}, a signature"),
            signed,
            "alg_not_allowed",
        ));
    }
    let no_alg = token(
        &json!({"typ": "JWT", "kid": "ec"}),
        &claims.to_value(),
        &signature(&valid),
    );
    out.push(unauthorized("no alg", no_alg, "malformed"));
    // Stripped signatures: the part gone, or present and empty.
    for key in [&k.rsa, &k.ec] {
        let full = key.sign(&claims);
        let (input, _) = full.rsplit_once('.').unwrap();
        out.push(unauthorized(
            format!("{} without signature part", key.kid),
            input,
            "malformed",
        ));
        out.push(unauthorized(
            format!("{} empty signature", key.kid),
            format!("{input}."),
            "bad_signature",
        ));
    }
    // Algorithm confusion: the public key as an HMAC secret, with and without its kid.
    for key in [&k.rsa, &k.ec] {
        for (form, secret) in public_key_forms(key) {
            for alg in ["HS256", "HS384", "HS512"] {
                for kid in [key.kid.as_str(), ""] {
                    let forged = hmac_token(alg, &secret, kid, &claims);
                    let name = format!("{alg} with {}'s {form} as secret, kid {kid:?}", key.kid);
                    out.push(unauthorized(name, forged, "alg_not_allowed"));
                }
            }
        }
    }
    // A key used with an algorithm of another size: the ES256 key under ES384.
    let mut header = k.ec.header();
    header["alg"] = json!("ES384");
    let forged = k.ec384.sign_raw(&header, &claims.to_value());
    out.push(unauthorized(
        "ES384 token naming the ES256 key",
        forged,
        "key_alg_mismatch",
    ));
    out
}

fn kid_cases(k: &Keys) -> Vec<Attack> {
    let claims = Claims::new().to_value();
    let mut out = Vec::new();
    for kid in [
        "../../../../etc/passwd",
        "/dev/null",
        "..\\..\\windows\\win.ini",
        "' OR '1'='1",
        "ec' --",
        "ec\u{0}",
        "\u{0}",
        "EC",
        "ec ",
        "*",
        &"k".repeat(5 * 1024),
    ] {
        let mut header = k.ec.header();
        header["kid"] = json!(kid);
        let name = format!("kid {:?}", kid.chars().take(24).collect::<String>());
        out.push(unauthorized(
            name,
            k.ec.sign_raw(&header, &claims),
            "unknown_kid",
        ));
    }
    // 10 KiB of kid is over max_token_bytes (8 KiB): refused before any decoding.
    let mut header = k.ec.header();
    header["kid"] = json!("k".repeat(10 * 1024));
    out.push(unauthorized(
        "kid of 10 KiB",
        k.ec.sign_raw(&header, &claims),
        "token_too_large",
    ));
    for (name, kid) in [
        ("number", json!(1)),
        ("array", json!(["ec"])),
        ("object", json!({"kid": "ec"})),
    ] {
        let mut header = k.ec.header();
        header["kid"] = kid;
        out.push(unauthorized(
            format!("kid as {name}"),
            k.ec.sign_raw(&header, &claims),
            "malformed",
        ));
    }
    out
}

/// Key-carrying header parameters, all pointing at or holding the attacker's key.
fn key_header_cases(k: &Keys, attacker_url: &str) -> Vec<Attack> {
    let claims = Claims::new().to_value();
    let evil_cert = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        k.evil.public_der(),
    );
    let mut out = Vec::new();
    for (param, value) in [
        ("jku", json!(attacker_url)),
        ("x5u", json!(attacker_url)),
        ("jwk", k.evil.jwk()),
        ("x5c", json!([evil_cert])),
    ] {
        let mut header = k.evil.header();
        header[param] = value;
        // The attacker's own kid: unknown to the provider.
        let name = format!("{param} with the attacker's kid");
        out.push(unauthorized(
            name,
            k.evil.sign_raw(&header, &claims),
            "unknown_kid",
        ));
        // The provider's kid, the attacker's signature.
        header["kid"] = json!(k.ec.kid);
        let name = format!("{param} with the provider's kid");
        out.push(unauthorized(
            name,
            k.evil.sign_raw(&header, &claims),
            "bad_signature",
        ));
        // No kid: every provider key is tried, none fits.
        header.as_object_mut().unwrap().remove("kid");
        let name = format!("{param} without kid");
        out.push(unauthorized(
            name,
            k.evil.sign_raw(&header, &claims),
            "bad_signature",
        ));
    }
    out
}

fn structure_cases(k: &Keys) -> Vec<Attack> {
    let claims = Claims::new();
    let value = claims.to_value();
    let mut out = Vec::new();
    for (name, crit, reason) in [
        (
            "crit unknown",
            json!(["urn:example:must-understand"]),
            "crit_unsupported",
        ),
        ("crit exp", json!(["exp"]), "crit_unsupported"),
        ("crit empty", json!([]), "crit_unsupported"),
        ("crit as a string", json!("b64"), "malformed"),
    ] {
        let mut header = k.ec.header();
        header["crit"] = crit;
        header["urn:example:must-understand"] = json!(true);
        out.push(unauthorized(name, k.ec.sign_raw(&header, &value), reason));
    }
    // RFC 7797 unencoded payloads, signed by the provider's own key over the raw JSON: claimgate
    // implements no `b64: false`, so with `crit` it is refused as such, and without `crit` the
    // parameter is ignored and the token read (and refused) as an ordinary JWS.
    let payload = value.to_string();
    for crit in [true, false] {
        let mut header = k.ec.header();
        header["b64"] = json!(false);
        if crit {
            header["crit"] = json!(["b64"]);
        }
        let header_b64 = b64url(header.to_string().as_bytes());
        let sig =
            k.ec.sign_input(format!("{header_b64}.{payload}").as_bytes());
        let (reason_detached, reason_encoded) = match crit {
            true => ("crit_unsupported", "crit_unsupported"),
            false => ("malformed", "bad_signature"),
        };
        // The raw JSON holds dots (in `iss`), so it never even splits into three parts.
        let name = format!("b64 false (crit {crit}), raw payload");
        out.push(unauthorized(
            name,
            format!("{header_b64}.{payload}.{sig}"),
            "malformed",
        ));
        let name = format!("b64 false (crit {crit}), detached payload");
        out.push(unauthorized(
            name,
            format!("{header_b64}..{sig}"),
            reason_detached,
        ));
        let encoded = format!("{header_b64}.{}.{sig}", b64url(payload.as_bytes()));
        let name = format!("b64 false (crit {crit}), payload encoded after signing");
        out.push(unauthorized(name, encoded, reason_encoded));
    }
    // JWE compact serialization: five parts.
    for alg in ["RSA-OAEP-256", "dir", "ECDH-ES"] {
        let header = json!({"alg": alg, "enc": "A256GCM", "kid": "rs"});
        let jwe = [
            header.to_string().as_str(),
            "key",
            "iv",
            "ciphertext",
            "tag",
        ]
        .map(|p| b64url(p.as_bytes()))
        .join(".");
        out.push(unauthorized(format!("JWE {alg}"), jwe, "malformed"));
    }
    // Nested JWT: a valid token as the payload of another, both signed by the provider's key.
    let inner = k.ec.sign(&claims);
    let mut header = k.ec.header();
    header["cty"] = json!("JWT");
    let nested =
        k.ec.sign_bytes(header.to_string().as_bytes(), inner.as_bytes());
    out.push(unauthorized("nested JWT (cty JWT)", nested, "malformed"));
    out.push(unauthorized(
        "four parts",
        format!("{inner}.x"),
        "malformed",
    ));
    out.push(unauthorized(
        "two tokens joined",
        format!("{inner}.{inner}"),
        "malformed",
    ));
    out
}

fn encoding_cases(k: &Keys) -> Vec<Attack> {
    let valid = k.ec.sign(&Claims::new());
    let parts: Vec<&str> = valid.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    let mut out = Vec::new();
    let mut malformed =
        |name: &str, token: Vec<u8>| out.push(unauthorized(name, token, "malformed"));
    malformed("'+' in the header", format!("+{h}.{p}.{s}").into_bytes());
    malformed("'/' in the payload", format!("{h}.{p}/.{s}").into_bytes());
    malformed("'*' in the signature", format!("{h}.{p}.{s}*").into_bytes());
    malformed(
        "padding on the header",
        format!("{h}=.{p}.{s}").into_bytes(),
    );
    malformed(
        "padding on the signature",
        format!("{h}.{p}.{s}==").into_bytes(),
    );
    malformed(
        "space in the payload",
        format!("{h}.{} {}.{s}", &p[..8], &p[8..]).into_bytes(),
    );
    malformed(
        "tab in the signature",
        format!("{h}.{p}.{}\t{}", &s[..8], &s[8..]).into_bytes(),
    );
    malformed(
        "percent-encoded payload",
        format!("{h}.%{p}.{s}").into_bytes(),
    );
    // 64 bytes are 86 characters whose last one carries 4 unused bits; setting one is another
    // spelling of the same signature, and must not be a second valid token.
    let last = s.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let index = alphabet.find(last).unwrap();
    let sloppy = alphabet.as_bytes()[index | 1] as char;
    malformed(
        "non-canonical last character",
        format!("{h}.{p}.{}{sloppy}", &s[..s.len() - 1]).into_bytes(),
    );
    // Bytes that are not UTF-8 (nor ASCII) in the token itself.
    malformed("0xff in the token", [b"\xff", valid.as_bytes()].concat());
    malformed(
        "Latin-1 in the payload part",
        [h.as_bytes(), b".\xe9", p.as_bytes(), b".", s.as_bytes()].concat(),
    );
    malformed(
        "UTF-8 in the signature part",
        format!("{h}.{p}.{s}é").into_bytes(),
    );
    out.push(unauthorized(
        "over max_token_bytes",
        k.ec.sign(&Claims::new().set("pad", "x".repeat(9000))),
        "token_too_large",
    ));
    out
}

fn ecdsa_cases(k: &Keys) -> Vec<Attack> {
    let mut out = Vec::new();
    for key in [&k.ec, &k.ec384] {
        let valid = key.sign(&Claims::new());
        let raw = signature(&valid);
        let n = raw.len();
        let cases = [
            ("all zeros", vec![0u8; n]),
            ("r = s = n", order_as_signature(n)),
            (
                "r = 0, s valid",
                [vec![0u8; n / 2], raw[n / 2..].to_vec()].concat(),
            ),
            ("one byte short", raw[..n - 1].to_vec()),
            ("one byte long", [raw.clone(), vec![0]].concat()),
            ("twice the length", [raw.clone(), raw.clone()].concat()),
            ("DER form", raw_to_der(&raw)),
            (
                "r and s swapped",
                [raw[n / 2..].to_vec(), raw[..n / 2].to_vec()].concat(),
            ),
        ];
        for (what, sig) in cases {
            let name = format!("{} signature {what}", key.kid);
            out.push(unauthorized(name, resigned(&valid, &sig), "bad_signature"));
        }
    }
    out
}

fn claim_cases(k: &Keys) -> Vec<Attack> {
    let header = k.ec.header().to_string().into_bytes();
    let claims = Claims::new();
    let mut out = Vec::new();
    for name in ["exp", "nbf", "iat"] {
        for raw in [
            r#""4102444800""#,
            "true",
            "false",
            "null",
            "1e300",
            "-1",
            "-1e10",
            "253402300800",
            "9223372036854775808",
            "[4102444800]",
            "{}",
        ] {
            let reason = match (name, raw) {
                // A required claim that is null is missing, as before this suite.
                ("exp", "null") => "claim_missing",
                _ => "malformed",
            };
            let token =
                k.ec.sign_bytes(&header, &claims_with_raw(&claims, name, raw));
            out.push(unauthorized(format!("{name}: {raw}"), token, reason));
        }
    }
    for raw in [
        format!("[\"{ISSUER}\"]"),
        "null".into(),
        format!("{{\"iss\":\"{ISSUER}\"}}"),
        "1".into(),
        "\"\"".into(),
        format!("\"{ISSUER}/\""),
        format!("\"{}\"", ISSUER.to_uppercase()),
    ] {
        let token =
            k.ec.sign_bytes(&header, &claims_with_raw(&claims, "iss", &raw));
        out.push(unauthorized(format!("iss: {raw}"), token, "issuer_unknown"));
    }
    let no_iss = k.ec.sign(&claims.clone().remove("iss"));
    out.push(unauthorized("no iss", no_iss, "issuer_unknown"));
    for raw in [
        "null",
        r#"{"api":true}"#,
        r#"[["api"]]"#,
        r#"[{"aud":"api"}]"#,
        "1",
        "true",
        r#""API""#,
        r#""api ""#,
        r#""api,other""#,
    ] {
        let token =
            k.ec.sign_bytes(&header, &claims_with_raw(&claims, "aud", raw));
        out.push(unauthorized(
            format!("aud: {raw}"),
            token,
            "audience_mismatch",
        ));
    }
    out
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
