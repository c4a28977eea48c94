//! `--dev`: a self-contained setup with a built-in issuer (fresh ES256 key each start, JWKS on the
//! admin port) and the built-in echo upstream. None of this exists outside `--dev`.

use crate::config::{
    AdminConfig, Config, ForwardConfig, HeaderMapping, MetadataField, Mode, OnUnavailable,
    ProviderConfig, TokenCacheConfig, TokenSource, UpstreamConfig, UserCreationConfig,
    UserDataCacheConfig, UserDataConfig, UserDataSource, UserinfoConfig,
};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};
use std::net::SocketAddr;

pub const AUDIENCE: &str = "claimgate-dev";

pub struct DevIssuer {
    pub issuer: String,
    kid: String,
    key: EncodingKey,
    jwks: String,
}

impl DevIssuer {
    pub fn generate(admin: SocketAddr) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| format!("cannot generate the dev key: {e}"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|e| format!("cannot load the dev key: {e}"))?;
        // An uncompressed P-256 point: 0x04 || x (32) || y (32).
        let point = pair.public_key().as_ref();
        let (x, y) = (&point[1..33], &point[33..65]);
        let kid = format!("dev-{}", &URL_SAFE_NO_PAD.encode(&point[1..7]));
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]})
        .to_string();
        Ok(Self {
            issuer: format!("http://{admin}/dev"),
            kid,
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwks,
        })
    }

    pub fn jwks(&self) -> String {
        self.jwks.clone()
    }

    /// Mints a token; every query parameter becomes a string claim, `ttl` (seconds) sets `exp`.
    pub fn mint(&self, params: &[(String, String)]) -> Result<String, String> {
        let now = crate::verify::now_seconds();
        let mut ttl = 3600;
        let mut claims = Map::new();
        claims.insert("sub".into(), json!("dev-user"));
        for (k, v) in params {
            match k.as_str() {
                "ttl" => {
                    ttl = v
                        .parse::<u64>()
                        .map_err(|_| format!("ttl must be seconds, got {v:?}"))?
                }
                "iss" | "aud" | "exp" | "iat" => {
                    return Err(format!("{k} is set by the dev issuer"))
                }
                _ => {
                    claims.insert(k.clone(), Value::String(v.clone()));
                }
            }
        }
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("aud".into(), json!(AUDIENCE));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + ttl));
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| format!("cannot sign: {e}"))
    }
}

/// Writes the dev user data file (edit it while the proxy runs: changes apply within a second).
pub fn write_users_file() -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("claimgate-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("users.json");
    let users = json!([
        {"user_id": "alice", "roles": ["admin", "reader"], "userGroup": "staff"},
        {"user_id": "bob", "roles": ["reader"], "userGroup": "guests", "blocked": true}
    ]);
    let text = serde_json::to_string_pretty(&users).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// The config `--dev` runs with: the dev issuer's JWKS on the admin port, the echo upstream.
pub fn config(
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
    users_file: &std::path::Path,
    issuer: &DevIssuer,
) -> Config {
    let mut forward = ForwardConfig::default();
    forward.headers.insert(
        "X-User-Name".into(),
        HeaderMapping::Short("%%user.data.name".into()),
    );
    forward.headers.insert(
        "X-User-Roles".into(),
        HeaderMapping::Short("%%user.custom_data.roles".into()),
    );
    Config {
        listen,
        mode: Mode::Proxy,
        upstream: Some(UpstreamConfig {
            url: format!("http://{upstream}"),
            timeout_ms: 30_000,
            connect_timeout_ms: 5_000,
            protocol: Default::default(),
            tls: None,
        }),
        forward_auth: None,
        admin: AdminConfig { listen: admin },
        providers: vec![ProviderConfig {
            name: "dev".into(),
            issuer: issuer.issuer.clone(),
            jwks_uri: Some(format!("http://{admin}/dev/jwks.json")),
            discovery: false,
            signing_keys: Vec::new(),
            audience: vec![AUDIENCE.into()],
            require_any_audience: false,
            algorithms: vec!["ES256".into()],
            clock_skew_seconds: 60,
            user_id_claim: "sub".into(),
            token_from: vec![
                TokenSource::Header("Authorization".into()),
                TokenSource::Cookie("access_token".into()),
                TokenSource::Query("access_token".into()),
            ],
            metadata_fields: vec![
                MetadataField {
                    name: "name".into(),
                    field_name: None,
                    required: false,
                },
                MetadataField {
                    name: "email".into(),
                    field_name: None,
                    required: false,
                },
            ],
            jwks_min_refresh_seconds: 5,
            jwks_refresh_seconds: 300,
            jwks_max_refresh_seconds: 3600,
            jwks_max_staleness_seconds: 86_400,
            jwks_timeout_ms: 2_000,
            jwks_max_bytes: 1024 * 1024,
            tls: None,
        }],
        forward: Some(forward),
        max_token_bytes: 8192,
        verified_token_cache: TokenCacheConfig::default(),
        user_data: Some(UserDataConfig {
            source: UserDataSource::File,
            uri: None,
            database: None,
            collection: None,
            path: Some(users_file.to_owned()),
            user_id_field: "user_id".into(),
            required: false,
            blocked_field: Some("blocked".into()),
            expiration_field: Some("expirationDate".into()),
            tokens_valid_after_field: None,
            on_user_creation: Some(UserCreationConfig {
                document: json!({"roles": ["reader"]})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            }),
            cache: UserDataCacheConfig::default(),
            on_unavailable: OnUnavailable::ServeCached,
            roles: None,
            custom_data_max_bytes: 8192,
            timeout_ms: 2_000,
        }),
        revocation: None,
        rules: Vec::new(),
        userinfo: Some(UserinfoConfig {
            path: "/.claimgate/userinfo".into(),
            properties: vec!["roles".into(), "userGroup".into()],
        }),
        limits: Default::default(),
        paths: Default::default(),
        tls: None,
        // Nothing routes around a laptop: Ctrl-C stops at once (open requests still finish).
        reload: Default::default(),
        shutdown: crate::config::ShutdownConfig {
            delay_seconds: 0,
            grace_seconds: 5,
        },
        access_log: true,
        tracing: None,
    }
}
