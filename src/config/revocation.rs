//! The `revocation` section: a MongoDB collection listing revoked token ids (`jti`).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationConfig {
    /// In `database` (default: `user_data.database`), on the `user_data.uri` server.
    pub collection: String,
    #[serde(default = "default_jti_field")]
    pub jti_field: String,
    #[serde(default)]
    pub database: Option<String>,
    /// A date (or epoch seconds) after which the entry no longer matters: the tokens it revokes
    /// have expired. Past entries are dropped from memory; without it entries stay until deleted.
    #[serde(default)]
    pub expires_field: Option<String>,
    /// Bound on the entries held in memory. Beyond it the list is incomplete and tokens carrying
    /// a `jti` are refused (503) rather than risk admitting a revoked one.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
}

fn default_jti_field() -> String {
    "jti".to_owned()
}

fn default_max_entries() -> usize {
    1_000_000
}
