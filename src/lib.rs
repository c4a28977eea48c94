//! claimgate: a reverse-proxy sidecar that lets through only requests carrying a valid JWT and
//! tells the upstream who the caller is.
//!
//! The request path is in [`proxy`]; each step is a module with one job.

pub mod config;
pub mod echo;
pub mod error;
pub mod forward;
pub mod server;
