//! TLS for the proxy listener: rustls (aws-lc-rs), HTTP/2 and HTTP/1.1 by ALPN, and a
//! certificate that is re-read when its files change on disk, without dropping a connection: a
//! handshake picks up whatever pair is current. A broken new pair is logged and the old one keeps
//! serving.

use crate::client_cert::ClientCert;
use crate::config::{ClientAuth, KeyError, TlsConfig};
use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::danger::ClientCertVerifier;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{RootCertStore, ServerConfig, ServerConnection};
use tokio_rustls::TlsAcceptor;

/// The current certificate, swapped whole when the files change.
#[derive(Debug)]
struct Current {
    key: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.load_full())
    }
}

/// The listener's TLS: an acceptor whose certificate follows the files.
pub struct Tls {
    pub acceptor: TlsAcceptor,
    handshake_errors: Counter,
    current: Arc<Current>,
    cert_file: PathBuf,
    key_file: PathBuf,
    reload: Duration,
    /// The bytes the current pair was loaded from, to notice a change.
    loaded: std::sync::Mutex<(Vec<u8>, Vec<u8>)>,
}

impl Tls {
    /// Loads the pair once (a bad pair is a startup error naming the file and reason).
    pub fn new(cfg: &TlsConfig, handshake_errors: Counter) -> Result<Self, KeyError> {
        let (cert_pem, key_pem) = read_pair(&cfg.cert_file, &cfg.key_file)?;
        let key = certified_key(&cert_pem, &key_pem)?;
        let current = Arc::new(Current {
            key: ArcSwap::from_pointee(key),
        });
        let provider = Arc::new(aws_lc_rs::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| KeyError::new("tls", format!("cannot set up TLS: {e}")))?;
        let builder = match client_verifier(cfg, provider)? {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            handshake_errors,
            current,
            cert_file: cfg.cert_file.clone(),
            key_file: cfg.key_file.clone(),
            reload: Duration::from_secs(cfg.reload_seconds.max(1)),
            loaded: std::sync::Mutex::new((cert_pem, key_pem)),
        })
    }

    /// A client that cannot complete a handshake only loses its own connection; it is counted
    /// (`claimgate_tls_handshake_errors_total`) and logged at debug, since scanners make many.
    pub fn handshake_failed(&self, peer: std::net::SocketAddr, error: &str) {
        self.handshake_errors.inc();
        tracing::debug!(%peer, error, "TLS handshake failed");
    }

    /// Re-reads the files every `reload_seconds` until `stop` turns true. Reading the contents
    /// (not the modification time) catches Kubernetes' symlink swap of a mounted Secret.
    pub async fn watch_files(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.reload) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            self.reload_if_changed();
        }
    }

    /// Swaps in the pair on disk if it differs from the loaded one and is valid.
    pub fn reload_if_changed(&self) {
        let Ok(mut loaded) = self.loaded.lock() else {
            return;
        };
        let pair = match read_pair(&self.cert_file, &self.key_file) {
            Ok(pair) if pair == *loaded => return,
            Ok(pair) => pair,
            Err(error) => {
                tracing::error!(key = %error.key, reason = %error.reason, "cannot re-read the TLS certificate; the previous one keeps serving");
                return;
            }
        };
        match certified_key(&pair.0, &pair.1) {
            Ok(key) => {
                self.current.key.store(Arc::new(key));
                *loaded = pair;
                tracing::info!(cert_file = %self.cert_file.display(), "TLS certificate reloaded");
            }
            Err(error) => {
                tracing::error!(key = %error.key, reason = %error.reason, "new TLS certificate refused; the previous one keeps serving");
                // Not remembered as loaded: a fixed file with the same bytes as before is fine.
            }
        }
    }
}

/// The verified client's certificate names, when the client presented one.
pub fn client_cert(connection: &ServerConnection) -> Option<Arc<ClientCert>> {
    let leaf = connection.peer_certificates()?.first()?;
    ClientCert::from_der(leaf).map(Arc::new)
}

/// With `tls.client_ca_file`, client certificates must chain to those CAs (webpki rules: time,
/// key usage for client auth); `optional` also lets a client without a certificate in.
fn client_verifier(
    cfg: &TlsConfig,
    provider: Arc<tokio_rustls::rustls::crypto::CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, KeyError> {
    let Some(ca_file) = &cfg.client_ca_file else {
        return Ok(None);
    };
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(ca_file, "tls.client_ca_file")? {
        roots.add(cert).map_err(|e| {
            KeyError::new(
                "tls.client_ca_file",
                format!(
                    "{} holds a certificate that is not a usable CA: {e}",
                    ca_file.display()
                ),
            )
        })?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = match cfg.client_auth.unwrap_or(ClientAuth::Required) {
        ClientAuth::Required => builder,
        ClientAuth::Optional => builder.allow_unauthenticated(),
    };
    builder.build().map(Some).map_err(|e| {
        KeyError::new(
            "tls.client_ca_file",
            format!("cannot verify clients with it: {e}"),
        )
    })
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
    let read = |path: &Path, field: &str| {
        std::fs::read(path).map_err(|e| {
            KeyError::new(
                format!("tls.{field}"),
                format!("cannot read {}: {e}", path.display()),
            )
        })
    };
    Ok((read(cert, "cert_file")?, read(key, "key_file")?))
}

/// Parses the PEM pair and checks that the key belongs to the leaf certificate.
fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, KeyError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            KeyError::new(
                "tls.cert_file",
                format!("is not a PEM certificate chain: {e}"),
            )
        })?;
    if chain.is_empty() {
        return Err(KeyError::new("tls.cert_file", "holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        KeyError::new(
            "tls.key_file",
            format!("is not a PEM private key (PKCS#8, RSA or EC): {e}"),
        )
    })?;
    let provider = aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| KeyError::new("tls.key_file", format!("does not fit tls.cert_file: {e}")))
}

/// Reads a PEM file of one or more certificates (a CA bundle or a chain, leaf first); `key` is
/// the config key named in the error.
pub fn read_certificates(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, KeyError> {
    let pem = std::fs::read(path)
        .map_err(|e| KeyError::new(key, format!("cannot read {}: {e}", path.display())))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            KeyError::new(
                key,
                format!("{} is not a PEM certificate file: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(KeyError::new(
            key,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn read_private_key(path: &Path, key: &str) -> Result<PrivateKeyDer<'static>, KeyError> {
    let pem = std::fs::read(path)
        .map_err(|e| KeyError::new(key, format!("cannot read {}: {e}", path.display())))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        KeyError::new(
            key,
            format!(
                "{} is not a PEM private key (PKCS#8, RSA or EC): {e}",
                path.display()
            ),
        )
    })
}
