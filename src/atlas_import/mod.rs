//! `claimgate import-atlas DIR`: an Atlas App Services app export (its `custom-token` provider
//! and custom user data settings) turned into an equivalent claimgate config.
//!
//! Reading (`export`) and writing (`render`) are apart so that every judgement about what maps and
//! what does not is made here, once, and the renderer only has to spell it as commented YAML.

mod export;
mod render;

use crate::config::ConfigError;
use export::{
    error, function_source, join_key, read_json, typed, unknown_keys, CustomTokenProvider,
    CustomUserData, MetadataField, CONFIG_KEYS, CUSTOM_USER_DATA, CUSTOM_USER_DATA_KEYS, PROVIDERS,
    PROVIDER_KEYS,
};
use serde_json::Value;
use std::path::Path;

/// What the export maps to, plus everything that could not be carried over (as comment text).
#[derive(Debug)]
pub struct Imported {
    pub provider: Provider,
    pub user_data: Option<UserData>,
    /// Settings of the app that have no place in the config (other providers, ...).
    pub not_carried: Vec<String>,
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub disabled: bool,
    pub verification: Verification,
    pub audience: Vec<String>,
    /// `audience` is the App ID because the provider set none (Atlas's default).
    pub audience_is_app_id: bool,
    pub require_any_audience: bool,
    pub metadata_fields: Vec<MetadataField>,
    pub not_carried: Vec<String>,
}

#[derive(Debug)]
pub enum Verification {
    JwkUri(String),
    /// (environment variable, Atlas Secret name) per signing key, in Atlas's order.
    Hs256(Vec<(String, String)>),
}

#[derive(Debug)]
pub struct UserData {
    pub mongo_service_name: String,
    pub database: String,
    pub collection: String,
    pub user_id_field: String,
    /// (function name, file it was read from, its source).
    pub creation: Option<(String, String, String)>,
    pub not_carried: Vec<String>,
}

/// Reads the export in `dir` and returns the claimgate YAML text.
pub fn import(dir: &Path) -> Result<String, ConfigError> {
    let imported = read_export(dir)?;
    Ok(render::render(&imported, dir))
}

pub fn read_export(dir: &Path) -> Result<Imported, ConfigError> {
    let mut not_carried = Vec::new();
    let provider = read_provider(dir, &mut not_carried)?;
    let user_data = read_user_data(dir, &mut not_carried)?;
    Ok(Imported {
        provider,
        user_data,
        not_carried,
    })
}

/// `auth/providers.json` is an object keyed by provider name in current exports and an array in
/// older ones; both are accepted, and error keys follow the file's own shape.
fn read_provider(dir: &Path, not_carried: &mut Vec<String>) -> Result<Provider, ConfigError> {
    let root = read_json(dir, PROVIDERS)?;
    let entries: Vec<(String, Option<String>, Value)> = match root {
        Value::Object(map) => map
            .into_iter()
            .map(|(k, v)| (k.clone(), Some(k), v))
            .collect(),
        Value::Array(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("[{i}]"), None, v))
            .collect(),
        _ => {
            return Err(error(
                dir,
                PROVIDERS,
                "",
                "expected an object of providers (or an array of them)",
            ))
        }
    };
    let mut found: Option<(String, Value)> = None;
    for (key, map_key, entry) in entries {
        if !entry.is_object() {
            return Err(error(dir, PROVIDERS, key, "expected an object"));
        }
        let kind = match entry.get("type") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(error(
                    dir,
                    PROVIDERS,
                    join_key(&key, "type"),
                    "expected a string",
                ))
            }
            None => map_key
                .clone()
                .ok_or_else(|| error(dir, PROVIDERS, join_key(&key, "type"), "missing"))?,
        };
        if kind == "custom-token" {
            if found.is_some() {
                return Err(error(
                    dir,
                    PROVIDERS,
                    key,
                    "a second custom-token provider (Atlas allows one)",
                ));
            }
            found = Some((key, entry));
        } else if entry.get("disabled") != Some(&Value::Bool(true)) {
            not_carried.push(format!(
                "Atlas provider {key:?} (type {kind:?}): claimgate only admits JWTs of the custom-token provider"
            ));
        }
    }
    let Some((key, entry)) = found else {
        return Err(error(
            dir,
            PROVIDERS,
            "",
            "no provider of type \"custom-token\" (Custom JWT authentication): nothing to import",
        ));
    };
    let dropped = unknown_keys(&entry, PROVIDER_KEYS);
    let dropped_config = entry
        .get("config")
        .map(|c| unknown_keys(c, CONFIG_KEYS))
        .unwrap_or_default();
    let p: CustomTokenProvider = typed(dir, PROVIDERS, &key, entry)?;
    let mut provider_notes: Vec<String> = dropped
        .iter()
        .map(|k| format!("{key}.{k}: no claimgate equivalent"))
        .collect();
    provider_notes.extend(
        dropped_config
            .iter()
            .map(|k| format!("{key}.config.{k}: no claimgate equivalent")),
    );
    let verification = verification(dir, &key, &p)?;
    let mut audience = p.config.audience.map(|a| a.into_list()).unwrap_or_default();
    let audience_is_app_id = audience.is_empty() && {
        audience.extend(app_id(dir));
        !audience.is_empty()
    };
    Ok(Provider {
        name: p.name.clone().unwrap_or_else(|| "custom-token".to_owned()),
        disabled: p.disabled,
        verification,
        audience,
        audience_is_app_id,
        require_any_audience: p.config.require_any_audience,
        metadata_fields: p.metadata_fields,
        not_carried: provider_notes,
    })
}

fn verification(
    dir: &Path,
    key: &str,
    p: &CustomTokenProvider,
) -> Result<Verification, ConfigError> {
    let alg_key = join_key(key, "config.signingAlgorithm");
    let alg = p.config.signing_algorithm.as_deref();
    if p.config.use_jwk_uri {
        if !matches!(alg, None | Some("RS256")) {
            return Err(error(
                dir,
                PROVIDERS,
                alg_key,
                "a JWK URI goes with RS256 in Atlas",
            ));
        }
        let uri = p.config.jwk_uri.clone().filter(|u| !u.is_empty());
        let uri = uri.ok_or_else(|| {
            error(
                dir,
                PROVIDERS,
                join_key(key, "config.jwkURI"),
                "required when useJWKURI is true",
            )
        })?;
        return Ok(Verification::JwkUri(uri));
    }
    match alg {
        Some("HS256") => {}
        Some("RS256") => {
            return Err(error(
                dir,
                PROVIDERS,
                alg_key,
                "RS256 with manually specified keys has no claimgate equivalent \
                 (signing_keys are HMAC secrets): publish the public key as a JWKS and set useJWKURI",
            ))
        }
        Some(other) => {
            return Err(error(
                dir,
                PROVIDERS,
                alg_key,
                format!("{other:?}: Atlas accepts HS256 or RS256"),
            ))
        }
        None => {
            return Err(error(
                dir,
                PROVIDERS,
                alg_key,
                "required when useJWKURI is not true",
            ))
        }
    }
    if p.secret_config.signing_keys.is_empty() {
        return Err(error(
            dir,
            PROVIDERS,
            join_key(key, "secret_config.signingKeys"),
            "no signing keys: HS256 needs at least one Secret name",
        ));
    }
    let mut keys: Vec<(String, String)> = Vec::new();
    for secret in &p.secret_config.signing_keys {
        let mut var = env_name(secret);
        let base = var.clone();
        let mut n = 2;
        while keys.iter().any(|(v, _)| *v == var) {
            var = format!("{base}_{n}");
            n += 1;
        }
        keys.push((var, secret.clone()));
    }
    Ok(Verification::Hs256(keys))
}

/// The App ID from `realm_config.json` (or `config.json` in older exports). Only used to keep
/// Atlas's default audience, so an unreadable file just means no default.
fn app_id(dir: &Path) -> Option<String> {
    ["realm_config.json", "config.json"]
        .iter()
        .find_map(|file| {
            let value = read_json(dir, file).ok()?;
            let id = value.get("app_id")?.as_str()?;
            (!id.is_empty()).then(|| id.to_owned())
        })
}

/// An Atlas Secret name as an environment variable: `jwtSigningKey` → `JWT_SIGNING_KEY`.
pub fn env_name(secret: &str) -> String {
    let mut out = String::new();
    let mut prev_lower_or_digit = false;
    for c in secret.chars() {
        if c.is_ascii_uppercase() && prev_lower_or_digit {
            out.push('_');
        }
        prev_lower_or_digit = c.is_ascii_lowercase() || c.is_ascii_digit();
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_uppercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let trimmed = out.trim_matches('_');
    if trimmed.is_empty() {
        "JWT_SIGNING_KEY".to_owned()
    } else {
        trimmed.to_owned()
    }
}

fn read_user_data(
    dir: &Path,
    not_carried: &mut Vec<String>,
) -> Result<Option<UserData>, ConfigError> {
    let value = read_json(dir, CUSTOM_USER_DATA)?;
    if !value.is_object() {
        return Err(error(dir, CUSTOM_USER_DATA, "", "expected an object"));
    }
    let dropped = unknown_keys(&value, CUSTOM_USER_DATA_KEYS);
    let c: CustomUserData = typed(dir, CUSTOM_USER_DATA, "", value)?;
    if !c.enabled {
        not_carried.push(
            "custom user data is disabled in Atlas (auth/custom_user_data.json enabled: false): no user_data section"
                .to_owned(),
        );
        return Ok(None);
    }
    let required = |v: Option<String>, key: &str| {
        v.filter(|s| !s.is_empty())
            .ok_or_else(|| error(dir, CUSTOM_USER_DATA, key, "required when enabled is true"))
    };
    let mongo_service_name = required(c.mongo_service_name, "mongo_service_name")?;
    let database = required(c.database_name, "database_name")?;
    let collection = required(c.collection_name, "collection_name")?;
    let user_id_field = required(c.user_id_field, "user_id_field")?;
    let creation = match c.on_user_creation_function_name.filter(|s| !s.is_empty()) {
        Some(name) => {
            let (file, source) = function_source(dir, &name)?;
            Some((name, file, source))
        }
        None => None,
    };
    Ok(Some(UserData {
        mongo_service_name,
        database,
        collection,
        user_id_field,
        creation,
        not_carried: dropped
            .iter()
            .map(|k| format!("{CUSTOM_USER_DATA}: {k}: no claimgate equivalent"))
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::env_name;

    #[test]
    fn secret_names_become_environment_variables() {
        assert_eq!(env_name("jwtSigningKey"), "JWT_SIGNING_KEY");
        assert_eq!(env_name("jwt-key-2024"), "JWT_KEY_2024");
        assert_eq!(env_name("SIGNING_KEY"), "SIGNING_KEY");
        assert_eq!(env_name("key1Old"), "KEY1_OLD");
        assert_eq!(env_name("--"), "JWT_SIGNING_KEY");
    }
}
