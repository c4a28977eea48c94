//! Verifying a compact JWS: size, structure, header, issuer routing, algorithm allow-list, key
//! choice, signature, then the time and audience claims.
//!
//! `jku`, `x5u`, `jwk` and `x5c` header parameters are never read: keys only ever come from the
//! provider's configured JWKS or secrets.

mod strict_json;
mod times;

use crate::claims::ClaimPath;
use crate::config::{KeyError, ProviderConfig, TokenSource};
use crate::error::Reject;
use crate::explain::{note, step, Trace};
use crate::jwks::{Alg, KeyStore, Lookup, VerifyKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use strict_json::{parse_object, StrictError};
use times::check_times;
pub use times::now_seconds;

pub struct ProviderVerifier {
    pub index: usize,
    pub name: Arc<str>,
    pub issuer: String,
    pub keys: Arc<KeyStore>,
    pub sources: Vec<TokenSource>,
    algorithms: Vec<Alg>,
    audience: Vec<String>,
    require_any_audience: bool,
    skew: u64,
    user_id: ClaimPath,
    user_id_claim: String,
}

/// A token whose signature and claims checked out.
#[derive(Debug)]
pub struct Verified {
    pub user_id: String,
    pub claims: Arc<Map<String, Value>>,
    pub proof: Proof,
}

/// What a cached verification must still satisfy to be reused; small on purpose, since the
/// verified-token cache holds one per token.
#[derive(Debug, Clone)]
pub struct Proof {
    pub provider: usize,
    /// The token's `exp`: no cached use of this verification may outlive it.
    pub exp: u64,
    pub key: Arc<VerifyKey>,
}

pub fn parse_algorithms(names: &[String], key: &str) -> Result<Vec<Alg>, KeyError> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            name.parse::<Alg>().map_err(|()| {
                let hint = if name.eq_ignore_ascii_case("none") {
                    "`none` is never accepted".to_owned()
                } else {
                    format!("unsupported algorithm {name:?}")
                };
                KeyError::new(format!("{key}[{i}]"), hint)
            })
        })
        .collect()
}

impl ProviderVerifier {
    pub fn new(index: usize, p: &ProviderConfig, keys: Arc<KeyStore>) -> Result<Self, KeyError> {
        let algorithms =
            parse_algorithms(&p.algorithms, &format!("providers[{index}].algorithms"))?;
        if p.signing_keys.is_empty() && algorithms.iter().any(|a| a.is_hmac()) {
            return Err(KeyError::new(
                format!("providers[{index}].algorithms"),
                "HS256/384/512 need `signing_keys`; HMAC keys are never taken from a JWKS",
            ));
        }
        let user_id = ClaimPath::parse(&p.user_id_claim)
            .map_err(|e| KeyError::new(format!("providers[{index}].user_id_claim"), e))?;
        Ok(Self {
            index,
            name: Arc::from(p.name.as_str()),
            issuer: p.issuer.clone(),
            keys,
            sources: p.token_from.clone(),
            algorithms,
            audience: p.audience.clone(),
            require_any_audience: p.require_any_audience,
            skew: p.clock_skew_seconds,
            user_id,
            user_id_claim: p.user_id_claim.clone(),
        })
    }

    pub fn algorithms(&self) -> &[Alg] {
        &self.algorithms
    }
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Vec<String>>,
}

/// The parts of a token that are known before any key is used.
struct Parsed<'t> {
    signing_input: &'t str,
    signature: Vec<u8>,
    alg: Alg,
    kid: Option<String>,
    claims: Map<String, Value>,
}

fn parse(token: &str) -> Result<Parsed<'_>, Reject> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        let what = if token.split('.').count() == 5 {
            "encrypted tokens (JWE) are not supported"
        } else {
            "a JWT has three dot-separated parts"
        };
        return Err(Reject::Malformed(what));
    };
    let header_bytes = decode_b64(header_b64, "header is not base64url")?;
    let header = parse_object(&header_bytes).map_err(|e| match e {
        StrictError::NotUtf8 => Reject::Malformed("header is not UTF-8"),
        StrictError::DuplicateMember => Reject::Malformed("duplicate member name in the header"),
        StrictError::NotJson | StrictError::NotObject => {
            Reject::Malformed("header is not a JSON object")
        }
    })?;
    let header: Header = serde_json::from_value(Value::Object(header))
        .map_err(|_| Reject::Malformed("header alg, kid or crit has the wrong type"))?;
    let alg_name = header.alg.ok_or(Reject::Malformed("header has no alg"))?;
    let alg = alg_name
        .parse::<Alg>()
        .map_err(|()| Reject::AlgNotAllowed(alg_name.clone()))?;
    // RFC 7515 §4.1.11: we implement no extensions, so any critical parameter is unknown.
    if let Some(crit) = header.crit {
        let name = crit.into_iter().next().unwrap_or_default();
        return Err(Reject::CritUnsupported(name));
    }
    let payload = decode_b64(payload_b64, "payload is not base64url")?;
    let claims = parse_object(&payload).map_err(|e| match e {
        StrictError::NotUtf8 => Reject::Malformed("claims are not UTF-8"),
        StrictError::DuplicateMember => Reject::Malformed("duplicate member name in the claims"),
        StrictError::NotJson | StrictError::NotObject => {
            Reject::Malformed("payload is not a JSON object")
        }
    })?;
    let signature = decode_b64(signature_b64, "signature is not base64url")?;
    Ok(Parsed {
        signing_input: &token[..header_b64.len() + 1 + payload_b64.len()],
        signature,
        alg,
        kid: header.kid,
        claims,
    })
}

fn decode_b64(text: &str, what: &'static str) -> Result<Vec<u8>, Reject> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| Reject::Malformed(what))
}

/// Verifies tokens against the configured providers; chooses the provider by the `iss` claim.
pub struct Verifier {
    pub providers: Vec<ProviderVerifier>,
    max_token_bytes: usize,
}

impl Verifier {
    pub fn new(providers: Vec<ProviderVerifier>, max_token_bytes: usize) -> Self {
        Self {
            providers,
            max_token_bytes,
        }
    }

    pub fn max_token_bytes(&self) -> usize {
        self.max_token_bytes
    }

    pub async fn verify(&self, token: &str) -> Result<Verified, Reject> {
        self.verify_traced(token, None).await
    }

    /// [`Verifier::verify`], reporting each check to `trace` as it runs (see [`crate::explain`]).
    pub async fn verify_traced(
        &self,
        token: &str,
        mut trace: Option<&mut Trace>,
    ) -> Result<Verified, Reject> {
        let t = &mut trace;
        let max = self.max_token_bytes;
        let size = if token.len() > max {
            Err(Reject::TokenTooLarge)
        } else {
            Ok(())
        };
        step(
            t,
            "token_size",
            size,
            |_| json!({"bytes": token.len(), "max": max}),
        )?;
        let parsed = match parse(token) {
            // An algorithm name claimgate does not know is the alg check failing, not the shape.
            Err(reject @ Reject::AlgNotAllowed(_)) => {
                note(t, |t| t.pass("structure", Value::Null));
                return step(t, "alg", Err(reject), |_| Value::Null);
            }
            parsed => step(t, "structure", parsed, |_| Value::Null)?,
        };
        // `iss` is read before the signature is checked, but only to pick whose keys to use.
        let iss = parsed.claims.get("iss").and_then(Value::as_str);
        let provider = iss
            .and_then(|iss| self.providers.iter().find(|p| p.issuer == iss))
            .ok_or(Reject::IssuerUnknown);
        let provider = step(
            t,
            "iss",
            provider,
            |p| json!({"iss": iss, "provider": p.ok().map(|p| &*p.name)}),
        )?;
        note(t, |t| t.provider = Some(provider.name.to_string()));
        let alg = if provider.algorithms.contains(&parsed.alg) {
            Ok(())
        } else {
            Err(Reject::AlgNotAllowed(parsed.alg.name().to_owned()))
        };
        step(t, "alg", alg, |_| {
            let allowed: Vec<&str> = provider.algorithms.iter().map(|a| a.name()).collect();
            json!({"alg": parsed.alg.name(), "allowed": allowed})
        })?;
        let key = self.check_signature(provider, &parsed).await;
        note(t, |t| trace_signature(t, &parsed, &key));
        let key = key?;
        let now = now_seconds();
        let exp = check_times(&parsed.claims, now, provider.skew, t)?;
        let aud = check_audience(provider, &parsed.claims);
        if provider.audience.is_empty() {
            note(t, |t| t.skip("aud", "not_configured"));
        } else {
            step(t, "aud", aud, |_| {
                json!({
                    "aud": parsed.claims.get("aud"),
                    "configured": provider.audience,
                    "require_any_audience": provider.require_any_audience,
                })
            })?;
        }
        let user_id = match provider.user_id.get_in(&parsed.claims) {
            // A control character in an identity could split or fold a header, and the header
            // encoding only needs to be injective for the identities that remain. `is_control` is
            // Unicode category Cc: C0 (TAB, CR, LF, NUL included), DEL and C1 (U+0080–U+009F).
            Some(Value::String(s)) if s.chars().any(char::is_control) => {
                Err(Reject::ClaimInvalid(provider.user_id_claim.clone()))
            }
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(Reject::ClaimMissing(provider.user_id_claim.clone())),
        };
        let user_id = step(
            t,
            "user_id",
            user_id,
            |id| json!({"claim": provider.user_id_claim, "value": id.ok()}),
        )?;
        let mut claims = parsed.claims;
        crate::scopes::normalize(&mut claims);
        Ok(Verified {
            user_id,
            claims: Arc::new(claims),
            proof: Proof {
                provider: provider.index,
                exp,
                key,
            },
        })
    }

    async fn check_signature(
        &self,
        provider: &ProviderVerifier,
        parsed: &Parsed<'_>,
    ) -> Result<Arc<VerifyKey>, Reject> {
        let keys = provider.keys.keys().ok_or(Reject::KeysUnavailable)?;
        let kid = parsed.kid.as_deref();
        if let Lookup::Found(candidates) = keys.lookup(kid) {
            return verify_with(candidates, parsed);
        }
        // An unknown kid usually means the issuer rotated keys since we last looked.
        let refreshed = provider
            .keys
            .refresh_for_unknown_kid()
            .await
            .ok_or(Reject::UnknownKid)?;
        match refreshed.lookup(kid) {
            Lookup::Found(candidates) => verify_with(candidates, parsed),
            Lookup::UnknownKid => Err(Reject::UnknownKid),
        }
    }

    /// Whether a cached verification may still be used: not expired and its key still published.
    pub fn still_valid(&self, proof: &Proof, now: u64) -> bool {
        now < proof.exp
            && self.providers[proof.provider]
                .keys
                .keys()
                .is_some_and(|set| set.contains(&proof.key))
    }
}

/// The `kid` and `signature` checks, from the one result of [`Verifier::check_signature`].
fn trace_signature(trace: &mut Trace, parsed: &Parsed<'_>, key: &Result<Arc<VerifyKey>, Reject>) {
    let kid = json!({"kid": parsed.kid});
    match key {
        Err(reject @ (Reject::UnknownKid | Reject::KeysUnavailable)) => {
            trace.fail("kid", reject, kid)
        }
        Err(reject) => {
            trace.pass("kid", kid);
            trace.fail("signature", reject, json!({"alg": parsed.alg.name()}));
        }
        Ok(_) => {
            trace.pass("kid", kid);
            trace.pass("signature", json!({"alg": parsed.alg.name()}));
        }
    }
}

fn verify_with(
    candidates: &[Arc<VerifyKey>],
    parsed: &Parsed<'_>,
) -> Result<Arc<VerifyKey>, Reject> {
    let mut any_fits = false;
    for key in candidates {
        match key.verify(
            parsed.alg,
            parsed.signing_input.as_bytes(),
            &parsed.signature,
        ) {
            Some(true) => return Ok(key.clone()),
            Some(false) => any_fits = true,
            None => {}
        }
    }
    Err(if any_fits {
        Reject::BadSignature
    } else {
        Reject::KeyAlgMismatch
    })
}

/// Atlas semantics: every configured audience must be in `aud`, or any one of them with
/// `require_any_audience`; an empty list disables the check.
fn check_audience(provider: &ProviderVerifier, claims: &Map<String, Value>) -> Result<(), Reject> {
    if provider.audience.is_empty() {
        return Ok(());
    }
    let present: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let has = |a: &String| present.contains(&a.as_str());
    let ok = if provider.require_any_audience {
        provider.audience.iter().any(has)
    } else {
        provider.audience.iter().all(has)
    };
    if ok {
        Ok(())
    } else {
        Err(Reject::AudienceMismatch)
    }
}
