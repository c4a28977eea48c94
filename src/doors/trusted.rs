//! `forward_auth.trusted_proxies`: which callers may ask a forward-auth door at all, judged by
//! the connection's peer address (which a client cannot choose), never by anything it sends.

use crate::config::KeyError;
use crate::error::Reject;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Compiles `forward_auth.trusted_proxies`.
    pub fn compile(cidrs: &[String]) -> Result<Self, KeyError> {
        cidrs
            .iter()
            .enumerate()
            .map(|(i, text)| {
                parse_cidr(text).ok_or_else(|| {
                    KeyError::new(
                        format!("forward_auth.trusted_proxies[{i}]"),
                        format!("is not an IP address or CIDR such as 10.0.0.0/8 (got {text:?})"),
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// `untrusted_proxy` unless `peer` is in one of the networks.
    pub fn check(&self, peer: SocketAddr) -> Result<(), Reject> {
        let ip = peer.ip().to_canonical();
        if self.0.iter().any(|net| net.contains(&ip)) {
            Ok(())
        } else {
            Err(Reject::UntrustedProxy)
        }
    }
}

/// `10.0.0.0/8`, `fd00::/8`, or a single address.
fn parse_cidr(text: &str) -> Option<IpNet> {
    let text = text.trim();
    match text.parse::<IpNet>() {
        Ok(net) => Some(net.trunc()),
        Err(_) => text.parse::<IpAddr>().ok().map(IpNet::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_single_addresses_parse() {
        let net = parse_cidr("10.1.2.3/8").unwrap();
        assert!(net.contains(&"10.200.0.1".parse::<IpAddr>().unwrap()));
        assert!(!net.contains(&"11.0.0.1".parse::<IpAddr>().unwrap()));
        let one = parse_cidr("::1").unwrap();
        assert!(one.contains(&"::1".parse::<IpAddr>().unwrap()));
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("pod-network").is_none());
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_networks() {
        let trusted = TrustedProxies::compile(&["127.0.0.1/32".into()]).unwrap();
        assert!(trusted
            .check("[::ffff:127.0.0.1]:1".parse().unwrap())
            .is_ok());
        assert_eq!(
            trusted.check("10.0.0.1:1".parse().unwrap()),
            Err(Reject::UntrustedProxy)
        );
        let e = TrustedProxies::compile(&["127.0.0.1/32".into(), "nope".into()]);
        assert_eq!(e.err().unwrap().key, "forward_auth.trusted_proxies[1]");
    }
}
