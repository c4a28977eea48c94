//! Typed configuration, parsed once at startup and passed down.
//!
//! The YAML shape is a public contract (see README "Config reference"); every struct denies unknown
//! keys so a typo is a startup error, never a silently ignored setting.

mod forward_auth;
mod load;
mod revocation;
mod rules;
mod telemetry;
mod token_cache;
mod userdata;

mod listener_tls;
mod operations;
pub use forward_auth::{ForwardAuthConfig, Mode, OriginalRequestSource};
pub use listener_tls::{ClientAuth, TlsConfig};
pub use load::{load_file, parse_str, ConfigError, KeyError};
pub use operations::{ReloadConfig, ShutdownConfig};
pub use revocation::RevocationConfig;
pub use rules::{AuthMode, RuleConfig, RuleMatch, UserinfoConfig};
pub use telemetry::TracingConfig;
pub use token_cache::TokenCacheConfig;
pub use userdata::{
    OnUnavailable, RolesConfig, UserCreationConfig, UserDataCacheConfig, UserDataConfig,
    UserDataSource,
};

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `proxy` (default) forwards admitted requests; `forward_auth` only answers whether to.
    #[serde(default)]
    pub mode: Mode,
    /// Required in `proxy` mode, unused in `forward_auth` mode.
    #[serde(default)]
    pub upstream: Option<UpstreamConfig>,
    #[serde(default)]
    pub forward_auth: Option<ForwardAuthConfig>,
    #[serde(default)]
    pub admin: AdminConfig,
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub forward: Option<ForwardConfig>,
    /// Tokens longer than this are refused before any base64 or crypto work.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    #[serde(default)]
    pub verified_token_cache: TokenCacheConfig,
    #[serde(default)]
    pub user_data: Option<UserDataConfig>,
    /// Revoked `jti`s, kept in memory from a MongoDB collection (needs `user_data.source: mongodb`).
    #[serde(default)]
    pub revocation: Option<RevocationConfig>,
    /// First match wins; a request no rule matches needs a valid token and nothing more.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub userinfo: Option<UserinfoConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub paths: PathsConfig,
    /// Serve the proxy listener over TLS.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub reload: ReloadConfig,
    /// One log line per request (target `claimgate::access`).
    #[serde(default = "default_access_log")]
    pub access_log: bool,
    /// OTLP trace export; unset, no spans exist.
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
}

fn default_access_log() -> bool {
    true
}

/// Bounds on what a client may make the proxy hold before a request is admitted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// From accept until a full request head has arrived (also between keep-alive requests).
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Request line plus headers; more is 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Open connections on the proxy listener; 0 leaves only the descriptor limit.
    #[serde(default)]
    pub max_connections: usize,
    /// What a connection beyond `max_connections` gets.
    #[serde(default)]
    pub on_max_connections: OnMaxConnections,
}

/// `wait` leaves new connections in the kernel's backlog until one closes (clients see latency,
/// not errors); `refuse` accepts and closes them at once (they fail fast and can retry elsewhere).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMaxConnections {
    #[default]
    Wait,
    Refuse,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: default_header_read_timeout_ms(),
            max_header_bytes: default_max_header_bytes(),
            max_connections: 0,
            on_max_connections: OnMaxConnections::default(),
        }
    }
}

/// How request paths are judged when rules are configured.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsConfig {
    /// Accept `;` path parameters; rules then judge each segment without its `;...` part.
    #[serde(default)]
    pub allow_semicolons: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub url: String,
    #[serde(default = "default_upstream_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Trust and client certificate for an `https://` upstream.
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
}

/// How claimgate checks an `https://` upstream and proves itself to it. Verification is always
/// on: there is deliberately no switch to turn it off.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM CA certificates that replace the built-in (webpki) roots: a private CA should not
    /// widen trust to every public one.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate chain for mTLS to the upstream; needs `key_file`.
    #[serde(default)]
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM private key for `cert_file`.
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
}

/// Trust for a provider's JWKS and discovery fetches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderTlsConfig {
    /// PEM CA certificates trusted in addition to the built-in roots (a private issuer, e.g. an
    /// in-cluster Keycloak).
    pub ca_file: std::path::PathBuf,
}

/// How requests travel to the upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 whatever the client spoke (over TLS: ALPN `http/1.1`).
    #[default]
    Http1,
    /// HTTP/2 whatever the client spoke: gRPC services. Cleartext with prior knowledge for an
    /// `http://` URL; with an `https://` URL it is HTTP/2 over TLS (ALPN `h2`).
    H2c,
    /// The client's protocol: HTTP/2 clients over HTTP/2 (h2c, or h2 over TLS), the others over
    /// HTTP/1.1.
    Auto,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    pub issuer: String,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Find `jwks_uri` at `issuer/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery: bool,
    /// HMAC secrets (HS256/384/512); several allow rotation, as Atlas `signingKeys` do.
    #[serde(default)]
    pub signing_keys: Vec<String>,
    #[serde(default)]
    pub audience: Vec<String>,
    #[serde(default)]
    pub require_any_audience: bool,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
    #[serde(default = "default_user_id_claim")]
    pub user_id_claim: String,
    // A parsed YAML value only reads enums as `!tags`; this makes `{header: Authorization}` work.
    #[serde(
        default = "default_token_from",
        with = "serde_yaml_ng::with::singleton_map_recursive"
    )]
    pub token_from: Vec<TokenSource>,
    #[serde(default)]
    pub metadata_fields: Vec<MetadataField>,
    /// Lower bound between two JWKS fetches (unknown-kid refetches and Cache-Control alike).
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh_seconds: u64,
    /// Refresh period when the JWKS response carries no usable Cache-Control max-age.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_seconds: u64,
    /// Upper bound for an honoured Cache-Control max-age.
    #[serde(default = "default_jwks_max_refresh")]
    pub jwks_max_refresh_seconds: u64,
    /// Keys older than this (since the last successful fetch) make `/readyz` fail.
    #[serde(default = "default_jwks_max_staleness")]
    pub jwks_max_staleness_seconds: u64,
    #[serde(default = "default_jwks_timeout_ms")]
    pub jwks_timeout_ms: u64,
    /// JWKS and discovery response bodies larger than this are refused (the last good keys stay).
    #[serde(default = "default_jwks_max_bytes")]
    pub jwks_max_bytes: usize,
    /// Extra trust for the JWKS and discovery fetches.
    #[serde(default)]
    pub tls: Option<ProviderTlsConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum TokenSource {
    Header(String),
    Cookie(String),
    Query(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataField {
    pub name: String,
    #[serde(default)]
    pub field_name: Option<String>,
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderMapping>,
    #[serde(default)]
    pub user_header: Option<String>,
    #[serde(default = "default_true")]
    pub pass_authorization: bool,
}

impl Default for ForwardConfig {
    /// What runs when the config has no `forward` section at all.
    fn default() -> Self {
        let mut headers = BTreeMap::new();
        headers.insert(
            "X-User-Id".to_owned(),
            HeaderMapping::Short("%%user.id".to_owned()),
        );
        Self {
            headers,
            user_header: Some("X-Claimgate-User".to_owned()),
            pass_authorization: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HeaderMapping {
    Short(String),
    Long(HeaderMappingLong),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMappingLong {
    pub from: String,
    #[serde(default)]
    pub encoding: Option<HeaderEncoding>,
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderEncoding {
    Csv,
    Json,
    Base64url,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}
fn default_max_token_bytes() -> usize {
    8192
}
fn default_upstream_timeout_ms() -> u64 {
    30_000
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_owned()]
}
fn default_clock_skew() -> u64 {
    60
}
fn default_user_id_claim() -> String {
    "sub".to_owned()
}
fn default_token_from() -> Vec<TokenSource> {
    vec![TokenSource::Header("Authorization".to_owned())]
}
fn default_jwks_min_refresh() -> u64 {
    30
}
fn default_jwks_refresh() -> u64 {
    300
}
fn default_jwks_max_refresh() -> u64 {
    86_400
}
fn default_jwks_max_staleness() -> u64 {
    86_400
}
fn default_jwks_timeout_ms() -> u64 {
    5_000
}
fn default_jwks_max_bytes() -> usize {
    1024 * 1024
}
fn default_header_read_timeout_ms() -> u64 {
    10_000
}
fn default_max_header_bytes() -> usize {
    64 * 1024
}
fn default_true() -> bool {
    true
}
