//! The names of a listener client certificate that rustls has already verified, as rules and
//! headers read them: `%%request.client_cert.subject` (RFC 4514 string, e.g. `CN=app,O=acme`) and
//! `%%request.client_cert.san` (a list: DNS names, URIs such as SPIFFE IDs, e-mail addresses and
//! IP addresses, as strings).
//!
//! Only the inline proxy door fills these: behind forward-auth or ext_authz, the TLS peer is
//! the front proxy, not the client, so its certificate must not pass for the client's.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub subject: String,
    pub san: Vec<String>,
}

impl ClientCert {
    /// Reads the leaf certificate's names; `None` when it does not parse (rustls accepted it, so
    /// that would be a parser gap: the request then carries no client-certificate facts).
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let subject = cert.subject().to_string();
        let mut san = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(n) | GeneralName::RFC822Name(n) => san.push(n.to_string()),
                    GeneralName::URI(n) => san.push(n.to_string()),
                    GeneralName::IPAddress(bytes) => san.extend(ip_text(bytes)),
                    _ => {}
                }
            }
        }
        Some(Self { subject, san })
    }
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}
