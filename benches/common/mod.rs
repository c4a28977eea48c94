//! Key generation and token minting shared by the benches (`hot_path`, `mint`).
//!
//! Keys are generated fresh with aws-lc-rs on every run; tokens are signed with
//! `jsonwebtoken::encode`, the way an issuer would, so claimgate sees ordinary tokens.

#![allow(dead_code)] // each bench uses a different part of this module

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use claimgate::app::App;
use claimgate::jwks::{Alg, KeySet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const AUDIENCE: &str = "claimgate-bench";
/// Long enough for claimgate's 32-byte minimum.
pub const HMAC_SECRET: &str = "bench-secret-0123456789abcdef-0123456789";

/// A signing key with the matching public JWK.
pub struct Signer {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub encoding: EncodingKey,
    /// The public JWK (absent for HMAC).
    pub jwk: Option<Value>,
    /// RSA only: big-endian modulus and exponent without leading zeros, and the PKCS#1
    /// `RSAPublicKey` DER, for the raw-primitive and backend benches.
    pub rsa_n: Vec<u8>,
    pub rsa_e: Vec<u8>,
    pub rsa_pkcs1_public: Vec<u8>,
    /// EC/Ed25519 only: the raw public key bytes as aws-lc-rs expects them.
    pub public_raw: Vec<u8>,
}

pub fn rsa_2048(kid: &str) -> Signer {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("generate RSA-2048");
    let pkcs8 = pair.as_der().expect("PKCS#8 of the RSA key");
    // jsonwebtoken's aws-lc backend wants a bare PKCS#1 RSAPrivateKey.
    let pkcs1_private = pkcs8_inner(pkcs8.as_ref()).to_vec();
    let pkcs1_public = pair.public_key().as_ref().to_vec();
    let (n, e) = rsa_public_components(&pkcs1_public);
    let jwk = json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(&n), "e": URL_SAFE_NO_PAD.encode(&e),
    });
    Signer {
        alg: Algorithm::RS256,
        kid: Some(kid.to_owned()),
        encoding: EncodingKey::from_rsa_der(&pkcs1_private),
        jwk: Some(jwk),
        rsa_n: n,
        rsa_e: e,
        rsa_pkcs1_public: pkcs1_public,
        public_raw: Vec::new(),
    }
}

pub fn es256(kid: &str) -> Signer {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .expect("generate P-256");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .expect("load P-256");
    let point = pair.public_key().as_ref().to_vec();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    });
    Signer {
        alg: Algorithm::ES256,
        kid: Some(kid.to_owned()),
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: Some(jwk),
        rsa_n: Vec::new(),
        rsa_e: Vec::new(),
        rsa_pkcs1_public: Vec::new(),
        public_raw: point,
    }
}

pub fn ed25519(kid: &str) -> Signer {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("generate Ed25519");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("load Ed25519");
    let public = pair.public_key().as_ref().to_vec();
    let jwk = json!({
        "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&public),
    });
    Signer {
        alg: Algorithm::EdDSA,
        kid: Some(kid.to_owned()),
        encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwk: Some(jwk),
        rsa_n: Vec::new(),
        rsa_e: Vec::new(),
        rsa_pkcs1_public: Vec::new(),
        public_raw: public,
    }
}

pub fn hs256() -> Signer {
    Signer {
        alg: Algorithm::HS256,
        kid: None,
        encoding: EncodingKey::from_secret(HMAC_SECRET.as_bytes()),
        jwk: None,
        rsa_n: Vec::new(),
        rsa_e: Vec::new(),
        rsa_pkcs1_public: Vec::new(),
        public_raw: Vec::new(),
    }
}

impl Signer {
    /// The raw aws-lc-rs public key of an asymmetric signer: what the primitive benches verify with.
    pub fn parsed_public_key(&self) -> signature::ParsedPublicKey {
        match self.alg {
            Algorithm::RS256 => signature::RsaPublicKeyComponents {
                n: &self.rsa_n,
                e: &self.rsa_e,
            }
            .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
            .expect("RSA key"),
            Algorithm::ES256 => signature::ParsedPublicKey::new(
                &signature::ECDSA_P256_SHA256_FIXED,
                &self.public_raw,
            )
            .expect("EC key"),
            Algorithm::EdDSA => {
                signature::ParsedPublicKey::new(&signature::ED25519, &self.public_raw)
                    .expect("Ed25519 key")
            }
            other => panic!("no raw public key for {other:?}"),
        }
    }

    pub fn jwks(&self) -> String {
        json!({ "keys": [self.jwk.clone().expect("asymmetric key")] }).to_string()
    }

    /// A token shaped like a typical IdP access token (~450 bytes of claims).
    pub fn mint(&self, issuer: &str, user: usize, now: u64, ttl: u64) -> String {
        self.mint_distinct(issuer, user, user, now, ttl)
    }

    /// [`Signer::mint`] for `user`, made distinct from the user's other tokens by `serial` (`jti`).
    pub fn mint_distinct(
        &self,
        issuer: &str,
        user: usize,
        serial: usize,
        now: u64,
        ttl: u64,
    ) -> String {
        let claims = json!({
            "iss": issuer,
            "sub": format!("user-{user:06}"),
            "aud": AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": format!("bench-{serial}-{now}"),
            "name": format!("Bench User {user}"),
            "email": format!("user{user}@example.com"),
            "email_verified": true,
            "groups": ["readers", "writers", "bench"],
            "org": { "id": "org-42", "tier": "enterprise" },
            "scope": "openid profile email api:read api:write",
        });
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("sign token")
    }
}

pub fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// One DER TLV: (tag, contents, rest).
fn der_tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let first = input[1] as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let count = first & 0x7f;
        let len = input[2..2 + count]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, 2 + count)
    };
    (tag, &input[header..header + len], &input[header + len..])
}

/// The `privateKey` OCTET STRING of a PKCS#8 `PrivateKeyInfo` (for RSA: the PKCS#1 key).
fn pkcs8_inner(pkcs8: &[u8]) -> &[u8] {
    let (tag, info, _) = der_tlv(pkcs8);
    assert_eq!(tag, 0x30, "PKCS#8 is a SEQUENCE");
    let (_, _version, rest) = der_tlv(info);
    let (_, _algorithm, rest) = der_tlv(rest);
    let (tag, key, _) = der_tlv(rest);
    assert_eq!(tag, 0x04, "PKCS#8 privateKey is an OCTET STRING");
    key
}

/// `n` and `e` of a PKCS#1 `RSAPublicKey`, without leading zeros.
fn rsa_public_components(pkcs1: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (_, seq, _) = der_tlv(pkcs1);
    let (_, n, rest) = der_tlv(seq);
    let (_, e, _) = der_tlv(rest);
    let strip = |b: &[u8]| b[b.iter().take_while(|x| **x == 0).count()..].to_vec();
    (strip(n), strip(e))
}

pub const ISSUER: &str = "https://issuer.bench.example/";

/// An app with one provider for `alg`, its keys installed directly (no JWKS server).
pub fn app_for(signer: &Signer, alg: &str) -> App {
    let keys = if alg == "HS256" {
        format!("signing_keys: ['{}']", HMAC_SECRET)
    } else {
        "jwks_uri: 'http://127.0.0.1:9/jwks.json'".to_owned()
    };
    let yaml = format!(
        "listen: 127.0.0.1:0
upstream: {{url: 'http://127.0.0.1:9'}}
providers:
  - name: bench
    issuer: '{ISSUER}'
    {keys}
    audience: ['{aud}']
    algorithms: [{alg}]
    metadata_fields:
      - {{name: name}}
      - {{name: email, required: true}}
      - {{name: org.tier, field_name: tier}}
",
        aud = AUDIENCE
    );
    let config = claimgate::config::parse_str(&yaml, &|_| None).expect("bench config parses");
    let app = App::build(config, None).expect("bench config builds");
    if signer.jwk.is_some() {
        let allowed = [alg.parse::<Alg>().expect("known alg")];
        let (set, warnings) = KeySet::from_jwks(signer.jwks().as_bytes(), &allowed).expect("JWKS");
        assert!(warnings.is_empty(), "{warnings:?}");
        app.key_stores[0].install(set);
    }
    app
}

pub fn split(token: &str) -> (&[u8], Vec<u8>) {
    let dot = token.rfind('.').expect("three parts");
    let signature = URL_SAFE_NO_PAD
        .decode(&token[dot + 1..])
        .expect("base64url");
    (&token.as_bytes()[..dot], signature)
}
