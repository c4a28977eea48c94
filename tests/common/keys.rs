//! Key minting and token signing. Every key is generated at test time, so no private key is ever
//! committed and each test has keys no other test can accidentally share.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "api";

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A private key plus the public JWK a provider would publish for it.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    /// SubjectPublicKeyInfo DER; what a confused verifier might use as an HMAC secret.
    public_der: Vec<u8>,
}

impl SigningKey {
    /// RSA-2048 for RS* or PS* (the same key type serves both padding schemes).
    pub fn rsa(kid: &str, alg: Algorithm) -> Self {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA keygen");
        let pkcs8 = pair.as_der().expect("RSA PKCS#8").as_ref().to_vec();
        let components = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        let public_der = pair.public_key().as_der().unwrap().as_ref().to_vec();
        // jsonwebtoken's aws-lc backend parses RSA keys as PKCS#1 `RSAPrivateKey`, while aws-lc
        // only exports PKCS#8, which wraps exactly that structure in an OCTET STRING.
        let encoding = EncodingKey::from_rsa_der(&pkcs8_private_key(&pkcs8));
        let jwk = json!({
            "kty": "RSA", "use": "sig", "kid": kid, "alg": alg_name(alg),
            "n": b64url(&components.n), "e": b64url(&components.e),
        });
        Self::new(kid, alg, encoding, jwk, public_der)
    }

    pub fn es256(kid: &str) -> Self {
        Self::ec(kid, Algorithm::ES256)
    }

    pub fn es384(kid: &str) -> Self {
        Self::ec(kid, Algorithm::ES384)
    }

    fn ec(kid: &str, alg: Algorithm) -> Self {
        let (signing, crv, len) = match alg {
            Algorithm::ES256 => (&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32),
            _ => (&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48),
        };
        let pair = EcdsaKeyPair::generate(signing).expect("EC keygen");
        let pkcs8 = pair.to_pkcs8v1().expect("EC PKCS#8");
        // Uncompressed SEC1 point: 0x04 || x || y.
        let point = pair.public_key().as_ref();
        let (x, y) = point[1..].split_at(len);
        let jwk = json!({
            "kty": "EC", "use": "sig", "kid": kid, "alg": alg_name(alg), "crv": crv,
            "x": b64url(x), "y": b64url(y),
        });
        let public_der = pair.public_key().as_der().unwrap().as_ref().to_vec();
        Self::new(
            kid,
            alg,
            EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
            public_der,
        )
    }

    pub fn ed25519(kid: &str) -> Self {
        let pair = Ed25519KeyPair::generate().expect("Ed25519 keygen");
        let pkcs8 = pair.to_pkcs8v1().expect("Ed25519 PKCS#8");
        let raw = pair.public_key().as_ref().to_vec();
        // jsonwebtoken's Jwk::from_encoding_key has no EdDSA support, so the OKP JWK is built here.
        let jwk = json!({
            "kty": "OKP", "use": "sig", "kid": kid, "alg": "EdDSA", "crv": "Ed25519",
            "x": b64url(&raw),
        });
        let public_der = pair.public_key().as_der().unwrap().as_ref().to_vec();
        Self::new(
            kid,
            Algorithm::EdDSA,
            EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk,
            public_der,
        )
    }

    /// An HS256 key; `secret` is what goes into the provider's `signing_keys`.
    pub fn hs256(secret: &str) -> Self {
        let jwk = json!({"kty": "oct", "k": b64url(secret.as_bytes())});
        let encoding = EncodingKey::from_secret(secret.as_bytes());
        Self::new("", Algorithm::HS256, encoding, jwk, Vec::new())
    }

    fn new(kid: &str, alg: Algorithm, encoding: EncodingKey, jwk: Value, der: Vec<u8>) -> Self {
        Self {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk,
            public_der: der,
        }
    }

    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// The public key as PEM, the form the classic RS256→HS256 confusion attack uses as secret.
    pub fn public_pem(&self) -> String {
        let b64 = STANDARD.encode(&self.public_der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    pub fn public_der(&self) -> &[u8] {
        &self.public_der
    }

    /// A normal token: `{"typ":"JWT","alg":..,"kid":..}` signed with `jsonwebtoken::encode`.
    pub fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(self.alg);
        header.typ = Some("JWT".to_owned());
        if !self.kid.is_empty() {
            header.kid = Some(self.kid.clone());
        }
        jsonwebtoken::encode(&header, &claims.to_value(), &self.encoding).expect("encode")
    }

    /// A token with a hand-written header, correctly signed with this key (for `crit` and such).
    pub fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        let input = signing_input(header, claims);
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, self.alg).expect("sign");
        format!("{input}.{sig}")
    }

    /// A token from exact header and payload bytes, correctly signed with this key: for JSON a
    /// `Value` cannot express (duplicate member names, invalid UTF-8, numbers like `1e300`).
    pub fn sign_bytes(&self, header: &[u8], payload: &[u8]) -> String {
        let input = format!("{}.{}", b64url(header), b64url(payload));
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, self.alg).expect("sign");
        format!("{input}.{sig}")
    }

    /// This key's base64url signature over `input` as it is: for signing inputs that are not
    /// `header.payload` in base64url (RFC 7797 unencoded payloads).
    pub fn sign_input(&self, input: &[u8]) -> String {
        jsonwebtoken::crypto::sign(input, &self.encoding, self.alg).expect("sign")
    }

    /// The default header `sign` would use, to be modified and passed to `sign_raw`.
    pub fn header(&self) -> Value {
        json!({"typ": "JWT", "alg": alg_name(self.alg), "kid": self.kid})
    }
}

pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
    }
}

pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// An unsecured JWT (`alg: none`, empty signature), RFC 7519 §6.
pub fn unsigned_token(claims: &Claims) -> String {
    let header = json!({"typ": "JWT", "alg": "none"});
    format!("{}.", signing_input(&header, &claims.to_value()))
}

/// An HS256 token MACed with an arbitrary secret, e.g. an RSA public key (alg confusion).
pub fn hs256_with_secret(secret: &[u8], kid: Option<&str>, claims: &Claims) -> String {
    let mut header = json!({"typ": "JWT", "alg": "HS256"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    let input = signing_input(&header, &claims.to_value());
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64url(tag.as_ref()))
}

/// Replaces the payload of a signed token, keeping header and signature (a tampered token).
pub fn tamper_payload(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let payload = b64url(claims.to_string().as_bytes());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

/// Extracts the PKCS#1 `RSAPrivateKey` from a PKCS#8 v1 `PrivateKeyInfo`:
/// SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING privateKey }.
fn pkcs8_private_key(der: &[u8]) -> Vec<u8> {
    let (tag, info, _) = der_tlv(der);
    assert_eq!(tag, 0x30, "PrivateKeyInfo is a SEQUENCE");
    let (_, _, rest) = der_tlv(info); // version
    let (_, _, rest) = der_tlv(rest); // algorithm identifier
    let (tag, key, _) = der_tlv(rest);
    assert_eq!(tag, 0x04, "privateKey is an OCTET STRING");
    key.to_vec()
}

/// Splits one DER TLV off `input`: (tag, contents, rest).
fn der_tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let (len, header) = if input[1] < 0x80 {
        (usize::from(input[1]), 2)
    } else {
        let n = usize::from(input[1] & 0x7f);
        let len = input[2..2 + n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    (tag, &input[header..header + len], &input[header + len..])
}

/// Token claims with defaults that pass the harness's default provider config; each test
/// overrides only what it is about.
#[derive(Clone, Debug)]
pub struct Claims(Map<String, Value>);

impl Default for Claims {
    fn default() -> Self {
        let now = now();
        let value = json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "user": {"name": "Alice"},
            "email": "alice@example.test",
            "groups": ["admins", "devs"],
            "realm_access": {"roles": ["admin", "dev"]},
        });
        match value {
            Value::Object(map) => Self(map),
            _ => unreachable!(),
        }
    }
}

impl Claims {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    pub fn remove(mut self, key: &str) -> Self {
        self.0.remove(key);
        self
    }

    /// `exp` relative to now (negative: already expired).
    pub fn exp_in(self, seconds: i64) -> Self {
        self.set("exp", now() + seconds)
    }

    /// `nbf` relative to now (positive: not valid yet).
    pub fn nbf_in(self, seconds: i64) -> Self {
        self.set("nbf", now() + seconds)
    }

    pub fn to_value(&self) -> Value {
        Value::Object(self.0.clone())
    }
}
