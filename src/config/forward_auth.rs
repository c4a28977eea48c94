//! `mode` and the `forward_auth` section: claimgate as the authorization service of another
//! proxy (nginx `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth`, Envoy `ext_authz`).

use serde::Deserialize;

/// What the proxy listener does with an admitted request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Forward it to `upstream.url` with the identity headers.
    #[default]
    Proxy,
    /// Forward nothing: answer the front proxy's subrequest with 200 and the identity headers.
    ForwardAuth,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthConfig {
    /// Which headers describe the original request. Optional here only so that its absence is
    /// reported under its own key by validation rather than as a serde error on the section.
    #[serde(default)]
    pub original_request: Option<OriginalRequestSource>,
    /// Peers (by connection address, never by header) allowed to ask.
    #[serde(default = "default_trusted_proxies")]
    pub trusted_proxies: Vec<String>,
    /// `subrequest` only: the prefix the front proxy puts before the original path.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The most body bytes claimgate reads (and throws away) from a subrequest.
    #[serde(default)]
    pub max_body_bytes: u64,
    /// Where to serve Envoy's ext_authz gRPC `Check` (`envoy.service.auth.v3.Authorization`),
    /// beside the HTTP listener.
    #[serde(default)]
    pub grpc_listen: Option<std::net::SocketAddr>,
}

/// One header convention; each reads its own headers and ignores every other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginalRequestSource {
    /// `X-Forwarded-Method` + `X-Forwarded-Uri` (Traefik, Caddy).
    XForwarded,
    /// `X-Original-Method` + `X-Original-URI` (nginx `auth_request`).
    XOriginalUri,
    /// `X-Original-Method` + `X-Original-URL` (ingress-nginx `auth-url`).
    XOriginalUrl,
    /// The subrequest's own method and path (Envoy `ext_authz` HTTP service).
    Subrequest,
}

fn default_trusted_proxies() -> Vec<String> {
    vec!["127.0.0.1/32".to_owned(), "::1/128".to_owned()]
}

/// The checks that tie `mode`, `upstream` and `forward_auth` together.
pub(super) fn validate(config: &super::Config) -> Result<(), super::KeyError> {
    use super::KeyError;
    match (config.mode, &config.forward_auth) {
        (Mode::Proxy, None) | (Mode::ForwardAuth, Some(_)) => {}
        (Mode::Proxy, Some(_)) => {
            return Err(KeyError::new(
                "forward_auth",
                "is only used with `mode: forward_auth`",
            ))
        }
        (Mode::ForwardAuth, None) => {
            return Err(KeyError::new(
                "forward_auth.original_request",
                "is required with `mode: forward_auth` (one of x_forwarded, x_original_uri, \
                 x_original_url, subrequest)",
            ))
        }
    }
    if config.mode == Mode::Proxy && config.upstream.is_none() {
        return Err(KeyError::new(
            "upstream",
            "is required with `mode: proxy` (the default)",
        ));
    }
    let Some(fa) = &config.forward_auth else {
        return Ok(());
    };
    if fa.original_request.is_none() && fa.grpc_listen.is_none() {
        return Err(KeyError::new(
            "forward_auth.original_request",
            "is required with `mode: forward_auth` unless only `forward_auth.grpc_listen` is \
             asked (one of x_forwarded, x_original_uri, x_original_url, subrequest)",
        ));
    }
    if let Some(addr) = fa.grpc_listen {
        for (key, other) in [
            ("listen", config.listen),
            ("admin.listen", config.admin.listen),
        ] {
            if addr == other {
                return Err(KeyError::new(
                    "forward_auth.grpc_listen",
                    format!("is the same address as `{key}` ({addr})"),
                ));
            }
        }
    }
    if fa.trusted_proxies.is_empty() {
        return Err(KeyError::new(
            "forward_auth.trusted_proxies",
            "must list at least one CIDR (no caller could ever be answered)",
        ));
    }
    if let Some(prefix) = &fa.path_prefix {
        if fa.original_request != Some(OriginalRequestSource::Subrequest) {
            return Err(KeyError::new(
                "forward_auth.path_prefix",
                "is only used with `original_request: subrequest`",
            ));
        }
        if !prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains(['?', '%', '#']) {
            return Err(KeyError::new(
                "forward_auth.path_prefix",
                format!("must start with `/`, not end with `/`, and hold no `?`, `%` or `#` (got {prefix:?})"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{parse_str, KeyError};

    const PROVIDERS: &str =
        "providers:\n  - {name: a, issuer: 'https://a', jwks_uri: 'https://a/j'}\n";

    fn error(head: &str) -> KeyError {
        parse_str(&format!("{head}{PROVIDERS}"), &|_| None).unwrap_err()
    }

    #[test]
    fn mode_upstream_and_forward_auth_must_agree() {
        let e = error("mode: forward_auth\n");
        assert_eq!(e.key, "forward_auth.original_request");
        let e = error("mode: forward_auth\nforward_auth: {max_body_bytes: 10}\n");
        assert_eq!(e.key, "forward_auth.original_request");
        assert_eq!(error("").key, "upstream");
        let e =
            error("upstream: {url: 'http://u'}\nforward_auth: {original_request: x_forwarded}\n");
        assert_eq!(e.key, "forward_auth");
        let e = error("mode: forward_auth\nforward_auth: {original_request: x_forwarded_uri}\n");
        assert!(e.reason.contains("unknown variant"), "{e:?}");
    }

    #[test]
    fn path_prefix_is_for_subrequest_and_a_clean_prefix() {
        let fa = |rest: &str| format!("mode: forward_auth\nforward_auth: {{{rest}}}\n");
        let e = error(&fa("original_request: x_forwarded, path_prefix: /_authz"));
        assert_eq!(e.key, "forward_auth.path_prefix");
        for prefix in ["_authz", "/_authz/", "/a?b"] {
            let e = error(&fa(&format!(
                "original_request: subrequest, path_prefix: '{prefix}'"
            )));
            assert_eq!(e.key, "forward_auth.path_prefix", "{prefix}");
        }
        let ok = format!(
            "{}{PROVIDERS}",
            fa("original_request: subrequest, path_prefix: /_authz")
        );
        let config = parse_str(&ok, &|_| None).unwrap();
        assert!(config.upstream.is_none());
        assert_eq!(
            error(&fa("original_request: subrequest, trusted_proxies: []")).key,
            "forward_auth.trusted_proxies"
        );
    }

    #[test]
    fn grpc_listen_alone_is_enough_and_must_be_its_own_port() {
        let fa = |rest: &str| format!("mode: forward_auth\nforward_auth: {{{rest}}}\n");
        let ok = format!("{}{PROVIDERS}", fa("grpc_listen: '127.0.0.1:9191'"));
        let config = parse_str(&ok, &|_| None).unwrap();
        let fa_config = config.forward_auth.unwrap();
        assert_eq!(
            fa_config.grpc_listen,
            Some("127.0.0.1:9191".parse().unwrap())
        );
        assert!(fa_config.original_request.is_none());
        let e = error(&format!(
            "listen: '127.0.0.1:9191'\n{}",
            fa("grpc_listen: '127.0.0.1:9191'")
        ));
        assert_eq!(e.key, "forward_auth.grpc_listen");
        assert!(e.reason.contains("`listen`"), "{e:?}");
        let e = error(&fa("grpc_listen: 'localhost'"));
        assert_eq!(e.key, "forward_auth.grpc_listen", "{e:?}");
        let e =
            error("upstream: {url: 'http://u'}\nforward_auth: {grpc_listen: '127.0.0.1:9191'}\n");
        assert_eq!(e.key, "forward_auth");
    }
}
