//! The parts of an Atlas App Services app export that `import-atlas` reads, as typed structs.
//!
//! Atlas files carry many fields claimgate has no use for, so the open objects (a provider, its
//! `config`, `custom_user_data.json`) ignore unknown keys and `mod.rs` lists the ones it dropped;
//! only `metadata_fields[]` entries, whose shape Atlas fixes, deny them.

use crate::config::ConfigError;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

pub const PROVIDERS: &str = "auth/providers.json";
pub const CUSTOM_USER_DATA: &str = "auth/custom_user_data.json";

/// One entry of `auth/providers.json` whose `type` is `custom-token`.
#[derive(Debug, Deserialize)]
pub struct CustomTokenProvider {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub config: CustomTokenConfig,
    #[serde(default)]
    pub secret_config: SecretConfig,
    #[serde(default)]
    pub metadata_fields: Vec<MetadataField>,
}

/// Known keys of a provider entry; any other is reported as not carried over.
pub const PROVIDER_KEYS: &[&str] = &[
    "name",
    "type",
    "disabled",
    "config",
    "secret_config",
    "metadata_fields",
];

#[derive(Debug, Default, Deserialize)]
pub struct CustomTokenConfig {
    #[serde(default)]
    pub audience: Option<Audience>,
    #[serde(default, rename = "requireAnyAudience")]
    pub require_any_audience: bool,
    #[serde(default, rename = "signingAlgorithm")]
    pub signing_algorithm: Option<String>,
    #[serde(default, rename = "useJWKURI")]
    pub use_jwk_uri: bool,
    #[serde(default, rename = "jwkURI")]
    pub jwk_uri: Option<String>,
}

pub const CONFIG_KEYS: &[&str] = &[
    "audience",
    "requireAnyAudience",
    "signingAlgorithm",
    "useJWKURI",
    "jwkURI",
];

/// Atlas accepts one audience as a string or several as a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn into_list(self) -> Vec<String> {
        match self {
            Audience::One(s) if s.is_empty() => Vec::new(),
            Audience::One(s) => vec![s],
            Audience::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct SecretConfig {
    /// Names of App Services Secrets, not their values: the export never contains those.
    #[serde(default, rename = "signingKeys")]
    pub signing_keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataField {
    pub name: String,
    #[serde(default)]
    pub field_name: Option<String>,
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Deserialize)]
pub struct CustomUserData {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub mongo_service_name: Option<String>,
    #[serde(default)]
    pub database_name: Option<String>,
    #[serde(default)]
    pub collection_name: Option<String>,
    #[serde(default)]
    pub user_id_field: Option<String>,
    #[serde(default)]
    pub on_user_creation_function_name: Option<String>,
}

pub const CUSTOM_USER_DATA_KEYS: &[&str] = &[
    "enabled",
    "mongo_service_name",
    "database_name",
    "collection_name",
    "user_id_field",
    "on_user_creation_function_name",
];

/// An error about `file` (relative to the export directory) at `key`.
pub fn error(
    dir: &Path,
    file: &str,
    key: impl Into<String>,
    reason: impl Into<String>,
) -> ConfigError {
    ConfigError {
        file: dir.join(file),
        key: key.into(),
        reason: reason.into(),
    }
}

/// Reads and parses a JSON file of the export; a missing file is an error naming it.
pub fn read_json(dir: &Path, file: &str) -> Result<Value, ConfigError> {
    let path: PathBuf = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| error(dir, file, "", format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| error(dir, file, "", format!("not valid JSON: {e}")))
}

/// Deserializes `value` (found at `prefix` in `file`) into `T`, naming the exact failing key.
pub fn typed<T: DeserializeOwned>(
    dir: &Path,
    file: &str,
    prefix: &str,
    value: Value,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let key = join_key(prefix, if inner == "." { "" } else { &inner });
        error(dir, file, key, e.into_inner().to_string())
    })
}

/// `prefix` + `rest` with the separator serde_path_to_error uses (none before `[i]`).
pub fn join_key(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (_, true) => prefix.to_owned(),
        _ if rest.starts_with('[') => format!("{prefix}{rest}"),
        _ => format!("{prefix}.{rest}"),
    }
}

/// The keys of `value` (an object) that are not in `known`, in file order.
pub fn unknown_keys(value: &Value, known: &[&str]) -> Vec<String> {
    value
        .as_object()
        .map(|m| {
            m.keys()
                .filter(|k| !known.contains(&k.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The source of an App Services function: `functions/NAME.js` (current exports) or
/// `functions/NAME/source.js` (older realm-cli exports).
pub fn function_source(dir: &Path, name: &str) -> Result<(String, String), ConfigError> {
    let candidates = [
        format!("functions/{name}.js"),
        format!("functions/{name}/source.js"),
    ];
    for file in &candidates {
        if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
            return Ok((file.clone(), text));
        }
    }
    Err(error(
        dir,
        CUSTOM_USER_DATA,
        "on_user_creation_function_name",
        format!(
            "function {name:?} not found in the export (looked for {} and {})",
            candidates[0], candidates[1]
        ),
    ))
}
