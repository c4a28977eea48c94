//! Reading a config file: `${VAR}` expansion, typed parsing with the failing key's path, and the
//! checks that need more than one key at a time.

use super::Config;
use std::fmt;
use std::path::{Path, PathBuf};

/// A config problem, always naming the file, the key path (`providers[0].jwks_uri`) and why.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// A problem found while compiling an already-parsed config; the file is added by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub key: String,
    pub reason: String,
}

impl KeyError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub fn in_file(self, file: &Path) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            key: self.key,
            reason: self.reason,
        }
    }
}

pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        key: String::new(),
        reason: format!("cannot read: {e}"),
    })?;
    parse_str(&text, &|name| std::env::var(name).ok()).map_err(|e| e.in_file(path))
}

/// Parses YAML text; `env` resolves `${VAR}` (injected so tests need not touch the process env).
pub fn parse_str(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, KeyError> {
    let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
        .map_err(|e| KeyError::new("", format!("invalid YAML: {e}")))?;
    // Expansion happens on parsed strings, not on the raw text, so a variable's value can never
    // inject YAML structure.
    expand_env(&mut value, &mut String::new(), env)?;
    let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        KeyError::new(key, e.into_inner().to_string())
    })?;
    validate(&config)?;
    Ok(config)
}

fn expand_env(
    value: &mut serde_yaml_ng::Value,
    path: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), KeyError> {
    use serde_yaml_ng::Value;
    match value {
        Value::String(s) if s.contains("${") => {
            *s = expand_str(s, env).map_err(|r| KeyError::new(path.clone(), r))?
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                expand_env(item, path, env)?;
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k.as_str().unwrap_or("?"));
                expand_env(v, path, env)?;
                path.truncate(len);
            }
        }
        Value::Tagged(tagged) => expand_env(&mut tagged.value, path, env)?,
        _ => {}
    }
    Ok(())
}

fn expand_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated `${{` in {s:?}"))?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid environment variable name {name:?}"));
        }
        let value = env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn validate(config: &Config) -> Result<(), KeyError> {
    super::forward_auth::validate(config)?;
    config.verified_token_cache.validate()?;
    if let Some(upstream) = &config.upstream {
        validate_upstream(upstream)?;
    }
    if let Some(tls) = &config.tls {
        if tls.client_auth.is_some() && tls.client_ca_file.is_none() {
            return Err(KeyError::new(
                "tls.client_auth",
                "needs tls.client_ca_file (the CAs client certificates are verified against)",
            ));
        }
    }
    if config.providers.is_empty() {
        return Err(KeyError::new(
            "providers",
            "at least one provider is required",
        ));
    }
    if config.max_token_bytes < 64 {
        return Err(KeyError::new("max_token_bytes", "must be at least 64"));
    }
    if config.limits.header_read_timeout_ms == 0 {
        return Err(KeyError::new(
            "limits.header_read_timeout_ms",
            "must be greater than 0",
        ));
    }
    // hyper's HTTP/1 read buffer, which enforces the cap, has this floor and a u32 HTTP/2 field.
    if !(8192..=16 << 20).contains(&config.limits.max_header_bytes) {
        return Err(KeyError::new(
            "limits.max_header_bytes",
            "must be between 8192 and 16777216",
        ));
    }
    let mut issuers = std::collections::HashSet::new();
    for (i, p) in config.providers.iter().enumerate() {
        let key = |k: &str| format!("providers[{i}].{k}");
        if p.name.is_empty() {
            return Err(KeyError::new(key("name"), "must not be empty"));
        }
        if p.issuer.is_empty() {
            return Err(KeyError::new(key("issuer"), "must not be empty"));
        }
        if !issuers.insert(p.issuer.as_str()) {
            return Err(KeyError::new(
                key("issuer"),
                format!(
                    "issuer {:?} is used by two providers; tokens are routed by `iss`",
                    p.issuer
                ),
            ));
        }
        let sources = usize::from(p.jwks_uri.is_some())
            + usize::from(p.discovery)
            + usize::from(!p.signing_keys.is_empty());
        if sources != 1 {
            return Err(KeyError::new(
                key("jwks_uri"),
                "set exactly one of `jwks_uri`, `discovery: true` or `signing_keys`",
            ));
        }
        if let Some(uri) = &p.jwks_uri {
            if !(uri.starts_with("https://") || uri.starts_with("http://")) {
                return Err(KeyError::new(
                    key("jwks_uri"),
                    format!("must be an http(s) URL (got {uri:?})"),
                ));
            }
        }
        if p.discovery && !(p.issuer.starts_with("https://") || p.issuer.starts_with("http://")) {
            return Err(KeyError::new(
                key("issuer"),
                "discovery needs an http(s) issuer URL",
            ));
        }
        for (j, secret) in p.signing_keys.iter().enumerate() {
            if secret.len() < 32 {
                return Err(KeyError::new(
                    format!("providers[{i}].signing_keys[{j}]"),
                    "HMAC secrets must be at least 32 bytes (RFC 7518 §3.2)",
                ));
            }
        }
        if p.algorithms.is_empty() {
            return Err(KeyError::new(
                key("algorithms"),
                "must list at least one algorithm",
            ));
        }
        if p.token_from.is_empty() {
            return Err(KeyError::new(
                key("token_from"),
                "must list at least one source",
            ));
        }
        if p.jwks_min_refresh_seconds == 0 {
            return Err(KeyError::new(
                key("jwks_min_refresh_seconds"),
                "must be greater than 0",
            ));
        }
        // 0 would make every fetch fail: a provider that can never load keys.
        if p.jwks_max_bytes == 0 {
            return Err(KeyError::new(
                key("jwks_max_bytes"),
                "must be greater than 0",
            ));
        }
        if p.jwks_max_refresh_seconds < p.jwks_min_refresh_seconds {
            return Err(KeyError::new(
                key("jwks_max_refresh_seconds"),
                "must not be below jwks_min_refresh_seconds",
            ));
        }
    }
    Ok(())
}

fn validate_upstream(upstream: &super::UpstreamConfig) -> Result<(), KeyError> {
    let https = upstream.url.starts_with("https://");
    if !(https || upstream.url.starts_with("http://")) {
        return Err(KeyError::new(
            "upstream.url",
            format!(
                "must be an http:// or https:// URL (got {:?})",
                upstream.url
            ),
        ));
    }
    if upstream.tls.is_some() {
        // Settings that would silently do nothing are refused.
        if !https {
            return Err(KeyError::new(
                "upstream.tls",
                "needs an https:// upstream.url",
            ));
        }
        // A cert_file without key_file (or the reverse) is refused where the pair is loaded,
        // in forward/connector.rs.
    }
    if upstream.url.parse::<http::Uri>().is_err() {
        return Err(KeyError::new("upstream.url", "is not a valid URL"));
    }
    if upstream.timeout_ms == 0 {
        return Err(KeyError::new(
            "upstream.timeout_ms",
            "must be greater than 0",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, KeyError> {
        parse_str(text, &|name| (name == "SECRET").then(|| "s".repeat(40)))
    }

    const MINIMAL: &str = "upstream: {url: 'http://127.0.0.1:3000'}\nproviders:\n  - {name: a, issuer: 'https://a', jwks_uri: 'https://a/jwks'}\n";

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9901");
        assert_eq!(c.providers[0].algorithms, vec!["RS256"]);
        assert_eq!(c.providers[0].clock_skew_seconds, 60);
        assert_eq!(c.providers[0].jwks_min_refresh_seconds, 30);
        assert_eq!(c.max_token_bytes, 8192);
        assert!(c.forward.is_none());
        assert_eq!(c.limits.header_read_timeout_ms, 10_000);
        assert_eq!(c.limits.max_connections, 0);
        assert_eq!(
            c.limits.on_max_connections,
            crate::config::OnMaxConnections::Wait
        );
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let e = parse(&MINIMAL.replace("jwks_uri:", "jwks_url:")).unwrap_err();
        assert_eq!(e.key, "providers[0].jwks_url");
        assert!(
            e.reason.contains("unknown field `jwks_url`"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn env_expansion_and_missing_variable() {
        let ok = "upstream: {url: 'http://127.0.0.1:3000'}\nproviders:\n  - {name: a, issuer: 'https://a', signing_keys: ['${SECRET}'], algorithms: [HS256]}\n";
        assert_eq!(parse(ok).unwrap().providers[0].signing_keys[0].len(), 40);
        let e = parse(&ok.replace("SECRET", "NOPE")).unwrap_err();
        assert_eq!(e.key, "providers[0].signing_keys[0]");
        assert!(e.reason.contains("NOPE is not set"));
    }

    #[test]
    fn exactly_one_key_source() {
        let e =
            parse(&MINIMAL.replace("jwks_uri: 'https://a/jwks'", "discovery: false")).unwrap_err();
        assert_eq!(e.key, "providers[0].jwks_uri");
    }
}

#[cfg(test)]
mod example_files {
    use super::*;

    /// The shipped examples are documentation; they must keep loading with the real structs.
    #[test]
    fn shipped_examples_parse_and_compile() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let env = |name: &str| Some(format!("{name}-value-long-enough-for-an-hmac-secret"));
            let config = parse_str(&text, &env)
                .unwrap_or_else(|e| panic!("{}: {}: {}", path.display(), e.key, e.reason));
            crate::app::App::build(config, None)
                .unwrap_or_else(|e| panic!("{}: {}: {}", path.display(), e.key, e.reason));
            seen += 1;
        }
        assert!(seen >= 2, "expected example configs in {dir}");
    }

    #[test]
    fn token_sources_are_written_as_one_key_maps() {
        let text = "upstream: {url: 'http://127.0.0.1:3000'}\nproviders:\n  - {name: a, issuer: 'https://a', jwks_uri: 'https://a/j', token_from: [{header: Authorization}, {cookie: c}, {query: q}]}\n";
        let c = parse_str(text, &|_| None).unwrap();
        assert_eq!(
            c.providers[0].token_from,
            vec![
                crate::config::TokenSource::Header("Authorization".into()),
                crate::config::TokenSource::Cookie("c".into()),
                crate::config::TokenSource::Query("q".into()),
            ]
        );
    }
}
