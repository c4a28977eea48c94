//! A provider's key set as loaded from one JWKS document (or its HMAC secrets).

use super::keys::{Alg, Jwk, VerifyKey};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

/// A provider's usable keys at one point in time; replaced whole on refresh.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Arc<VerifyKey>>,
    by_kid: HashMap<String, usize>,
}

pub enum Lookup<'a> {
    Found(&'a [Arc<VerifyKey>]),
    UnknownKid,
}

impl KeySet {
    pub fn new(keys: Vec<VerifyKey>) -> Self {
        let keys: Vec<_> = keys.into_iter().map(Arc::new).collect();
        let by_kid = keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| Some((k.kid.clone()?, i)))
            .collect();
        Self { keys, by_kid }
    }

    /// Parses a JWKS document; unusable keys are returned as warnings rather than failing the set.
    pub fn from_jwks(body: &[u8], allowed: &[Alg]) -> Result<(Self, Vec<String>), String> {
        #[derive(Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc =
            serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        let mut warnings = Vec::new();
        for (i, raw) in doc.keys.into_iter().enumerate() {
            let parsed = serde_json::from_value::<Jwk>(raw)
                .map_err(|e| e.to_string())
                .and_then(|jwk| {
                    VerifyKey::from_jwk(&jwk, allowed).map_err(|e| match &jwk.kid {
                        Some(kid) => format!("kid {kid:?}: {e}"),
                        None => format!("no kid: {e}"),
                    })
                });
            match parsed {
                Ok(key) => keys.push(key),
                Err(why) => warnings.push(format!("keys[{i}]: {why}")),
            }
        }
        if keys.is_empty() {
            return Err(format!(
                "no usable key in the JWKS ({})",
                warnings.join("; ")
            ));
        }
        Ok((Self::new(keys), warnings))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// With a `kid`, exactly that key; without one, every key (tried in turn, as Envoy does).
    pub fn lookup(&self, kid: Option<&str>) -> Lookup<'_> {
        match kid {
            Some(kid) => match self.by_kid.get(kid) {
                Some(&i) => Lookup::Found(std::slice::from_ref(&self.keys[i])),
                None => Lookup::UnknownKid,
            },
            None => Lookup::Found(&self.keys),
        }
    }

    /// Whether `key` (same kid, same material) is still part of this set: a cached verification
    /// is only valid while the key that made it is still published.
    pub fn contains(&self, key: &VerifyKey) -> bool {
        match &key.kid {
            Some(kid) => self
                .by_kid
                .get(kid)
                .is_some_and(|&i| self.keys[i].fingerprint == key.fingerprint),
            None => self.keys.iter().any(|k| k.fingerprint == key.fingerprint),
        }
    }
}
