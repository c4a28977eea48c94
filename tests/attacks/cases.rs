//! The token attacks of `forged_tokens_are_refused_and_never_forwarded`, one list per class.

use crate::common::keys::{b64url, signing_input, ISSUER};
use crate::common::{Claims, SigningKey};
use crate::forge::*;
use crate::{unauthorized, Attack};
use serde_json::json;

/// `claims` with `name` replaced by raw JSON text (`null`, `1e300`, `"x"`…), which a `Value`
/// cannot always express.
pub fn claims_with_raw(claims: &Claims, name: &str, raw: &str) -> Vec<u8> {
    let mut text = claims.clone().remove(name).to_value().to_string();
    text.pop();
    format!("{text},\"{name}\":{raw}}}").into_bytes()
}

pub struct Keys {
    pub rsa: SigningKey,
    pub ec: SigningKey,
    pub ec384: SigningKey,
    /// Published only by the attacker's server.
    pub evil: SigningKey,
}

pub fn algorithm_cases(k: &Keys) -> Vec<Attack> {
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

pub fn kid_cases(k: &Keys) -> Vec<Attack> {
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
pub fn key_header_cases(k: &Keys, attacker_url: &str) -> Vec<Attack> {
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

pub fn structure_cases(k: &Keys) -> Vec<Attack> {
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

pub fn encoding_cases(k: &Keys) -> Vec<Attack> {
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

pub fn ecdsa_cases(k: &Keys) -> Vec<Attack> {
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

pub fn claim_cases(k: &Keys) -> Vec<Attack> {
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
