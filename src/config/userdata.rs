//! The `user_data` section: where each verified user's custom data document comes from, and how
//! it is cached, created and checked.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserDataSource {
    Mongodb,
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnUnavailable {
    #[default]
    ServeCached,
    Deny,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserDataConfig {
    pub source: UserDataSource,
    /// `mongodb` only.
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default)]
    pub collection: Option<String>,
    /// `file` only: a JSON or YAML array of user documents, watched for changes.
    #[serde(default)]
    pub path: Option<std::path::PathBuf>,
    #[serde(default = "default_user_id_field")]
    pub user_id_field: String,
    /// No document for a verified user → 403 "no user data".
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub blocked_field: Option<String>,
    #[serde(default)]
    pub expiration_field: Option<String>,
    /// A date (or epoch seconds) in the user's document: tokens issued (`iat`) before it are
    /// refused as revoked ("log out everywhere").
    #[serde(default)]
    pub tokens_valid_after_field: Option<String>,
    #[serde(default)]
    pub on_user_creation: Option<UserCreationConfig>,
    #[serde(default)]
    pub cache: UserDataCacheConfig,
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
    #[serde(default)]
    pub roles: Option<RolesConfig>,
    /// Largest `custom_data` carried in the user header; larger documents are left out (logged
    /// and counted), never truncated.
    #[serde(default = "default_custom_data_max_bytes")]
    pub custom_data_max_bytes: usize,
    /// Bound on one lookup against the source.
    #[serde(default = "default_user_data_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserCreationConfig {
    pub document: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserDataCacheConfig {
    /// Bound on the heap the cached users take, weighed by each entry's measured size (document,
    /// permissions and the cache's own bookkeeping).
    #[serde(default = "default_user_cache_bytes")]
    pub max_bytes: u64,
    /// Optional second bound on the number of users; both bounds hold.
    #[serde(default)]
    pub max_entries: Option<u64>,
    #[serde(default = "default_user_cache_ttl")]
    pub ttl_seconds: u64,
}

impl Default for UserDataCacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_user_cache_bytes(),
            max_entries: None,
            ttl_seconds: default_user_cache_ttl(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesConfig {
    pub collection: String,
    #[serde(default = "default_role_id_field")]
    pub id_field: String,
    #[serde(default = "default_permissions_field")]
    pub permissions_field: String,
}

fn default_user_id_field() -> String {
    "user_id".to_owned()
}
fn default_custom_data_max_bytes() -> usize {
    8192
}
fn default_user_data_timeout_ms() -> u64 {
    2_000
}
/// 20 MiB: about 38 000 users of load.sh's shape (packed documents weigh ~520 B with their
/// entry). RSS grows by ~1.3 KB per cached user under load, more than the weighed bytes (malloc
/// chunk overhead on seven small allocations per user, and the fragmentation that many
/// long-lived small chunks cause among the fetches' short-lived ones), so with the verified-token
/// cache's 32 MiB the process stays under 128 MiB; 32 MiB of packed users took it to 135 MiB.
fn default_user_cache_bytes() -> u64 {
    20 * 1024 * 1024
}
fn default_user_cache_ttl() -> u64 {
    300
}
fn default_role_id_field() -> String {
    "roleId".to_owned()
}
fn default_permissions_field() -> String {
    "permissions".to_owned()
}
