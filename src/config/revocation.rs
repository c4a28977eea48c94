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
    /// Bound on the heap the list takes (its two hash tables and the strings they hold). Beyond
    /// it the list is incomplete and tokens carrying a `jti` are refused (503) rather than risk
    /// admitting a revoked one.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Optional second bound on the entries held in memory, with the same rule; both hold.
    #[serde(default)]
    pub max_entries: Option<usize>,
}

fn default_jti_field() -> String {
    "jti".to_owned()
}

/// 16 MiB: about 60 000 listed `jti`s of 36 characters (~270 bytes each), far more than the
/// unexpired revocations a deployment usually holds, and small next to the 20 MiB user data and
/// 32 MiB token caches under the 128 MiB RSS budget.
fn default_max_bytes() -> usize {
    16 * 1024 * 1024
}
