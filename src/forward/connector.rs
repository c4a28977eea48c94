//! The connector under the upstream pools: plain TCP for an `http://` upstream, rustls
//! (aws-lc-rs) on top for an `https://` one.
//!
//! The server name comes from the URL host (hyper-rustls): a DNS name is sent as SNI and must be
//! in the certificate; an IP address sends no SNI and must be an IP SAN. Verification is never
//! turned off.

use crate::config::{KeyError, UpstreamTlsConfig};
use crate::tls::{read_certificates, read_private_key};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use std::sync::Arc;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

pub type Connector = HttpsConnector<HttpConnector>;

/// The application protocol a pool speaks, offered by ALPN over TLS.
#[derive(Debug, Clone, Copy)]
pub enum Alpn {
    Http1,
    H2,
}

/// The TLS client settings shared by both pools, read once from `upstream.tls`.
#[derive(Clone)]
pub struct UpstreamTls {
    config: Arc<ClientConfig>,
}

impl UpstreamTls {
    /// Reads the CA and client certificate files; a bad file is a startup error naming its key.
    pub fn new(cfg: Option<&UpstreamTlsConfig>) -> Result<Self, KeyError> {
        let cfg = cfg.cloned().unwrap_or_default();
        let mut roots = RootCertStore::empty();
        match &cfg.ca_file {
            Some(path) => {
                for cert in read_certificates(path, "upstream.tls.ca_file")? {
                    roots.add(cert).map_err(|e| {
                        KeyError::new(
                            "upstream.tls.ca_file",
                            format!("{} holds an unusable CA certificate: {e}", path.display()),
                        )
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| KeyError::new("upstream.tls", format!("cannot set up TLS: {e}")))?
            .with_root_certificates(roots);
        let config = match (&cfg.cert_file, &cfg.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certificates(cert, "upstream.tls.cert_file")?;
                let key = read_private_key(key, "upstream.tls.key_file")?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    KeyError::new(
                        "upstream.tls.key_file",
                        format!("does not fit upstream.tls.cert_file: {e}"),
                    )
                })?
            }
            (Some(_), None) => {
                return Err(KeyError::new(
                    "upstream.tls.key_file",
                    "is required with upstream.tls.cert_file",
                ))
            }
            (None, Some(_)) => {
                return Err(KeyError::new(
                    "upstream.tls.cert_file",
                    "is required with upstream.tls.key_file",
                ))
            }
        };
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// Wraps `http` so that `https://` URIs get TLS offering `alpn`; `http://` ones pass through.
    pub fn connector(&self, mut http: HttpConnector, alpn: Alpn) -> Connector {
        // HttpConnector refuses non-http URIs unless told the TLS layer above handles them.
        http.enforce_http(false);
        let mut config = (*self.config).clone();
        config.alpn_protocols = match alpn {
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::H2 => vec![b"h2".to_vec()],
        };
        HttpsConnector::from((http, Arc::new(config)))
    }
}
