//! The `reload` and `shutdown` sections: how the running process takes a new config and how it
//! stops.

use serde::Deserialize;

/// Hot reload (`SIGHUP` and `POST /reload` always work; see `crate::reload`).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Also reload when the config file's contents change on disk (checked every second,
    /// through symlinks, so a Kubernetes ConfigMap update is seen).
    #[serde(default)]
    pub watch: bool,
}

/// The drain after SIGTERM/SIGINT (see `crate::drain`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Keep accepting this long after the signal (with `/readyz` at 503), for endpoints
    /// controllers and load balancers to stop sending.
    #[serde(default = "default_shutdown_delay")]
    pub delay_seconds: u64,
    /// From the stop point, how long requests in flight (and WebSocket tunnels) may still take.
    #[serde(default = "default_shutdown_grace")]
    pub grace_seconds: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            delay_seconds: default_shutdown_delay(),
            grace_seconds: default_shutdown_grace(),
        }
    }
}

fn default_shutdown_delay() -> u64 {
    5
}

fn default_shutdown_grace() -> u64 {
    25
}
