//! The `tls` section: the proxy listener's certificate and client-certificate verification.

use serde::Deserialize;

/// The proxy listener's certificate; both files are re-read when they change on disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM: the certificate chain, leaf first.
    pub cert_file: std::path::PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: std::path::PathBuf,
    /// How often the files are checked for a change (cert-manager rotates Secrets in place).
    #[serde(default = "default_tls_reload_seconds")]
    pub reload_seconds: u64,
    /// PEM: the CAs a client certificate must chain to. Set, it turns client verification on.
    #[serde(default)]
    pub client_ca_file: Option<std::path::PathBuf>,
    /// `required` (the default once `client_ca_file` is set) or `optional`.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
}

/// Whether a listener client must present a certificate. A presented one is always verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    Optional,
    Required,
}

fn default_tls_reload_seconds() -> u64 {
    10
}
