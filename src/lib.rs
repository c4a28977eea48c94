//! claimgate: a reverse-proxy sidecar that lets through only requests carrying a valid JWT and
//! tells the upstream who the caller is.
//!
//! The request path is in [`proxy`]; each step is a module with one job.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod atlas_import;
pub mod cache_sizing;
pub mod claims;
pub mod client_cert;
pub mod config;
pub mod decision;
pub mod dev;
pub mod doors;
pub mod drain;
pub mod echo;
pub mod error;
pub mod expansion;
pub mod explain;
pub mod extract;
pub mod forward;
pub mod headers;
pub mod json_view;
pub mod jwks;
pub mod log_safe;
pub mod metrics;
pub mod packed_json;
pub mod policy;
pub mod reload;
pub mod revocation;
pub mod scopes;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod token_cache;
pub mod upgrade;
pub mod userdata;
pub mod userinfo;
pub mod verify;
