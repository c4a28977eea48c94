//! The `verified_token_cache` section: how many verified tokens are remembered, bounded by the
//! heap their entries really hold (and optionally by their number too).

use super::KeyError;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCacheConfig {
    #[serde(default = "super::default_true")]
    pub enabled: bool,
    /// The heap the cached sessions may hold, weighed per entry from what it really keeps.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// An optional second bound: both hold when both are set.
    #[serde(default)]
    pub max_entries: Option<u64>,
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: default_max_bytes(),
            max_entries: None,
        }
    }
}

impl TokenCacheConfig {
    /// A zero bound with the cache enabled would cache nothing while looking enabled: say so
    /// rather than run a cache that only costs a hash per request.
    pub(super) fn validate(&self) -> Result<(), KeyError> {
        if !self.enabled {
            return Ok(());
        }
        if self.max_bytes == 0 {
            return Err(KeyError::new(
                "verified_token_cache.max_bytes",
                "must be at least 1 while the cache is enabled (set enabled: false to turn it off)",
            ));
        }
        if self.max_entries == Some(0) {
            return Err(KeyError::new(
                "verified_token_cache.max_entries",
                "must be at least 1 while the cache is enabled (leave it out to bound by max_bytes only)",
            ));
        }
        Ok(())
    }
}

/// 32 MiB: about 100 000 lean sessions, a quarter of the 128 MiB process budget (the user data
/// cache gets a similar share).
fn default_max_bytes() -> u64 {
    32 * 1024 * 1024
}

#[cfg(test)]
mod tests {
    use crate::config::{parse_str, Config, KeyError};

    const MINIMAL: &str = "upstream: {url: 'http://127.0.0.1:3000'}\nproviders:\n  - {name: a, issuer: 'https://a', jwks_uri: 'https://a/jwks'}\n";

    fn parse(cache: &str) -> Result<Config, KeyError> {
        parse_str(
            &format!("{MINIMAL}verified_token_cache: {cache}\n"),
            &|_| None,
        )
    }

    #[test]
    fn defaults_bound_by_bytes_only() {
        let c = parse_str(MINIMAL, &|_| None).unwrap().verified_token_cache;
        assert!(c.enabled);
        assert_eq!(c.max_bytes, 32 << 20);
        assert_eq!(c.max_entries, None);
    }

    #[test]
    fn both_bounds_are_accepted() {
        let c = parse("{max_bytes: 1048576, max_entries: 500}").unwrap();
        assert_eq!(c.verified_token_cache.max_bytes, 1 << 20);
        assert_eq!(c.verified_token_cache.max_entries, Some(500));
    }

    #[test]
    fn zero_bounds_are_refused_only_while_enabled() {
        let e = parse("{max_bytes: 0}").unwrap_err();
        assert_eq!(e.key, "verified_token_cache.max_bytes");
        let e = parse("{max_entries: 0}").unwrap_err();
        assert_eq!(e.key, "verified_token_cache.max_entries");
        assert!(parse("{enabled: false, max_bytes: 0, max_entries: 0}").is_ok());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = parse("{max_byte: 10}").unwrap_err();
        assert_eq!(e.key, "verified_token_cache.max_byte");
    }
}
