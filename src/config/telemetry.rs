//! `tracing:`: the OTLP trace export (see `crate::telemetry`).

use serde::Deserialize;

/// `tracing:` (named after what it configures; the `tracing` crate is something else).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// OTLP/HTTP base URL (e.g. `http://otel-collector:4318`); spans go to `/v1/traces`.
    pub otlp_endpoint: String,
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

fn default_service_name() -> String {
    "claimgate".to_owned()
}
