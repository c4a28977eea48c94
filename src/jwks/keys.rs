//! Verification keys: JWKs and HMAC secrets parsed once into ready-to-use crypto keys.
//!
//! Keys are parsed when a key set is loaded, not per request: an RSA key built from `n`/`e` on
//! every verification would cost more than the signature check itself.

use aws_lc_rs::{hmac, signature};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use std::fmt;
use std::str::FromStr;

/// The JWS algorithms claimgate verifies; `none` is deliberately absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl Alg {
    pub const ALL: [Alg; 12] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }

    pub fn is_hmac(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }

    fn rsa_params(self) -> Option<&'static signature::RsaParameters> {
        Some(match self {
            Alg::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Alg::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Alg::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Alg::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
            Alg::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
            Alg::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
            _ => return None,
        })
    }

    fn hmac_algorithm(self) -> Option<hmac::Algorithm> {
        Some(match self {
            Alg::HS256 => hmac::HMAC_SHA256,
            Alg::HS384 => hmac::HMAC_SHA384,
            Alg::HS512 => hmac::HMAC_SHA512,
            _ => return None,
        })
    }
}

impl FromStr for Alg {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Alg::ALL.into_iter().find(|a| a.name() == s).ok_or(())
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

enum Verifier {
    Public(signature::ParsedPublicKey),
    // Boxed: an HMAC key holds precomputed pads and would bloat every public-key entry.
    Hmac(Box<hmac::Key>),
}

/// One key, pre-parsed for each algorithm it is allowed to verify. Restricting a key to the
/// algorithms its type (and its `alg`, when the JWK names one) permits is what rules out
/// RS/HS confusion: an RSA key simply has no HMAC verifier.
pub struct VerifyKey {
    pub kid: Option<String>,
    /// SHA-256 of the key material: identifies "the same key" across JWKS refreshes.
    pub(super) fingerprint: [u8; 32],
    verifiers: Vec<(Alg, Verifier)>,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algs: Vec<_> = self.verifiers.iter().map(|(a, _)| a.name()).collect();
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("algs", &algs)
            .finish()
    }
}

impl VerifyKey {
    pub fn supports(&self, alg: Alg) -> bool {
        self.verifiers.iter().any(|(a, _)| *a == alg)
    }

    /// `Some(true)` verified, `Some(false)` bad signature, `None` this key cannot do `alg`.
    pub fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> Option<bool> {
        let (_, verifier) = self.verifiers.iter().find(|(a, _)| *a == alg)?;
        Some(match verifier {
            Verifier::Public(key) => key.verify_sig(message, sig).is_ok(),
            Verifier::Hmac(key) => hmac::verify(key, message, sig).is_ok(),
        })
    }

    pub fn hmac(secret: &[u8], allowed: &[Alg]) -> Option<Self> {
        let verifiers: Vec<_> = allowed
            .iter()
            .filter_map(|alg| {
                Some((
                    *alg,
                    Verifier::Hmac(Box::new(hmac::Key::new(alg.hmac_algorithm()?, secret))),
                ))
            })
            .collect();
        (!verifiers.is_empty()).then_some(Self {
            kid: None,
            fingerprint: fingerprint(&[b"oct", secret]),
            verifiers,
        })
    }

    /// Parses a JWK; `Err` says why it is unusable (logged, the rest of the set still loads).
    pub fn from_jwk(jwk: &Jwk, allowed: &[Alg]) -> Result<Self, String> {
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err(format!(
                "use {:?} is not \"sig\"",
                jwk.use_.as_deref().unwrap_or("")
            ));
        }
        let declared = match jwk.alg.as_deref() {
            Some(name) => Some(
                name.parse::<Alg>()
                    .map_err(|()| format!("unsupported alg {name:?}"))?,
            ),
            None => None,
        };
        let candidates: Vec<Alg> = allowed
            .iter()
            .copied()
            .filter(|a| declared.is_none_or(|d| d == *a))
            .collect();
        let material = [
            jwk.kty.as_bytes(),
            jwk.n.as_deref().unwrap_or("").as_bytes(),
            jwk.e.as_deref().unwrap_or("").as_bytes(),
            jwk.crv.as_deref().unwrap_or("").as_bytes(),
            jwk.x.as_deref().unwrap_or("").as_bytes(),
            jwk.y.as_deref().unwrap_or("").as_bytes(),
        ];
        let verifiers = match jwk.kty.as_str() {
            "RSA" => {
                let n = b64(&jwk.n, "n")?;
                let e = b64(&jwk.e, "e")?;
                let n = strip_leading_zeros(&n);
                // aws-lc parses a short modulus happily and only refuses it per signature, which
                // would leave a useless key counted as loaded and every token bad_signature.
                let bits = rsa_bits(&n);
                if !(2048..=8192).contains(&bits) {
                    return Err(format!(
                        "RSA key is {bits} bits (2048 to 8192 are accepted)"
                    ));
                }
                let components = signature::RsaPublicKeyComponents {
                    n,
                    e: strip_leading_zeros(&e),
                };
                let mut out = Vec::new();
                for alg in candidates {
                    if let Some(params) = alg.rsa_params() {
                        let key = components
                            .to_parsed_public_key(params)
                            .map_err(|e| format!("invalid RSA key: {e}"))?;
                        out.push((alg, Verifier::Public(key)));
                    }
                }
                out
            }
            "EC" => {
                let (alg, verification, len): (
                    _,
                    &'static signature::EcdsaVerificationAlgorithm,
                    _,
                ) = match jwk.crv.as_deref() {
                    Some("P-256") => (Alg::ES256, &signature::ECDSA_P256_SHA256_FIXED, 32),
                    Some("P-384") => (Alg::ES384, &signature::ECDSA_P384_SHA384_FIXED, 48),
                    other => return Err(format!("unsupported EC curve {other:?}")),
                };
                if !candidates.contains(&alg) {
                    Vec::new()
                } else {
                    let (x, y) = (b64(&jwk.x, "x")?, b64(&jwk.y, "y")?);
                    if x.len() != len || y.len() != len {
                        return Err("EC coordinates have the wrong length".into());
                    }
                    let mut point = Vec::with_capacity(1 + 2 * len);
                    point.push(0x04);
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    let key = signature::ParsedPublicKey::new(verification, point)
                        .map_err(|e| format!("invalid EC key: {e}"))?;
                    vec![(alg, Verifier::Public(key))]
                }
            }
            "OKP" => {
                if jwk.crv.as_deref() != Some("Ed25519") {
                    return Err(format!("unsupported OKP curve {:?}", jwk.crv));
                }
                if !candidates.contains(&Alg::EdDSA) {
                    Vec::new()
                } else {
                    let key =
                        signature::ParsedPublicKey::new(&signature::ED25519, b64(&jwk.x, "x")?)
                            .map_err(|e| format!("invalid Ed25519 key: {e}"))?;
                    vec![(Alg::EdDSA, Verifier::Public(key))]
                }
            }
            // Symmetric secrets never come from a published JWKS: accepting them would let anyone
            // who can read the JWKS mint tokens.
            "oct" => return Err("symmetric (oct) keys are not accepted from a JWKS".into()),
            other => return Err(format!("unsupported kty {other:?}")),
        };
        if verifiers.is_empty() {
            return Err("no allowed algorithm fits this key".into());
        }
        Ok(Self {
            kid: jwk.kid.clone(),
            fingerprint: fingerprint(&material),
            verifiers,
        })
    }
}

fn fingerprint(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        // Length-prefixed so that moving bytes between fields changes the fingerprint.
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn b64(field: &Option<String>, name: &str) -> Result<Vec<u8>, String> {
    let text = field
        .as_deref()
        .ok_or_else(|| format!("missing {name:?}"))?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| format!("{name:?} is not base64url"))
}

/// The modulus size in bits; `n` has no leading zero bytes.
fn rsa_bits(n: &[u8]) -> usize {
    n.first()
        .map_or(0, |first| n.len() * 8 - first.leading_zeros() as usize)
}

fn strip_leading_zeros(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

/// The fields of a JWK that matter for verification; others are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
}
