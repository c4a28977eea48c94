//! Token surgery for the attack suite: hand-built headers and signatures no issuer would produce.

use super::common::keys::b64url;
use super::common::{Claims, SigningKey};
use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

/// The order n of P-256 and of P-384 (big-endian): `s` and `n - s` verify alike.
const P256_ORDER: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
const P384_ORDER: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf\
                          581a0db248b0a77aecec196accc52973";

/// `header.payload.signature` from JSON values and raw signature bytes.
pub fn token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(signature)
    )
}

/// A token MACed with `secret` under `alg` (HS256/384/512): the algorithm-confusion forgery when
/// the secret is a provider's public key.
pub fn hmac_token(alg: &str, secret: &[u8], kid: &str, claims: &Claims) -> String {
    let header = serde_json::json!({"typ": "JWT", "alg": alg, "kid": kid});
    let input = super::common::keys::signing_input(&header, &claims.to_value());
    let algorithm = match alg {
        "HS256" => hmac::HMAC_SHA256,
        "HS384" => hmac::HMAC_SHA384,
        _ => hmac::HMAC_SHA512,
    };
    let tag = hmac::sign(&hmac::Key::new(algorithm, secret), input.as_bytes());
    format!("{input}.{}", b64url(tag.as_ref()))
}

/// The signature bytes of a compact token.
pub fn signature(token: &str) -> Vec<u8> {
    let encoded = token.rsplit('.').next().unwrap_or_default();
    URL_SAFE_NO_PAD.decode(encoded).unwrap()
}

/// `token` with its signature replaced by `signature`.
pub fn resigned(token: &str, signature: &[u8]) -> String {
    let (input, _) = token.rsplit_once('.').unwrap();
    format!("{input}.{}", b64url(signature))
}

/// A raw (r || s) ECDSA signature as the ASN.1 DER `SEQUENCE { INTEGER r, INTEGER s }` that
/// X.509 and most crypto libraries use, and JWS does not (RFC 7518 §3.4).
pub fn raw_to_der(raw: &[u8]) -> Vec<u8> {
    let integer = |bytes: &[u8]| {
        let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
        let mut out = vec![0x02];
        // A leading 1 bit would make the INTEGER negative.
        let pad = trimmed.first().is_none_or(|b| *b >= 0x80);
        out.push((trimmed.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(&trimmed);
        out
    };
    let (r, s) = raw.split_at(raw.len() / 2);
    let body = [integer(r), integer(s)].concat();
    let mut out = vec![0x30];
    if body.len() >= 0x80 {
        out.push(0x81);
    }
    out.push(body.len() as u8);
    out.extend_from_slice(&body);
    out
}

/// The same ECDSA signature with `s` replaced by `n - s`: the "high-S twin" that verifies for the
/// same message and key, so a token with it is the same identity (ECDSA is malleable).
pub fn high_s_twin(raw: &[u8]) -> Vec<u8> {
    let order = hex(if raw.len() == 64 {
        P256_ORDER
    } else {
        P384_ORDER
    });
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut twin = vec![0u8; s.len()];
    let mut borrow = 0i16;
    for i in (0..s.len()).rev() {
        let mut d = i16::from(order[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        twin[i] = d as u8;
    }
    [r, &twin].concat()
}

/// The curve order itself as r and s: zero modulo n, like the all-zeros signature.
pub fn order_as_signature(len: usize) -> Vec<u8> {
    let order = hex(if len == 64 { P256_ORDER } else { P384_ORDER });
    [order.clone(), order].concat()
}

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

/// The provider's public key in the three forms an algorithm-confusion attacker tries as an HMAC
/// secret: PEM, DER (SubjectPublicKeyInfo) and the published JWK as JSON text.
pub fn public_key_forms(key: &SigningKey) -> [(&'static str, Vec<u8>); 3] {
    [
        ("PEM", key.public_pem().into_bytes()),
        ("DER", key.public_der().to_vec()),
        ("JWK", key.jwk().to_string().into_bytes()),
    ]
}
