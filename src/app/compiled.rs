//! One config compiled into everything a request reads (the decision, the front doors), built
//! beside the running one on reload and swapped whole: a request loads it once and never sees
//! half of two configs. Warm parts whose config section did not change carry over.

use super::workers::Door;
use crate::claims::MetadataMapping;
use crate::config::{Config, KeyError, Mode};
use crate::decision::Decider;
use crate::doors::ext_authz::ExtAuthz;
use crate::doors::forward_auth::ForwardAuth;
use crate::drain::Tunnels;
use crate::forward::{Forwarder, UpstreamTls};
use crate::headers::HeaderPlan;
use crate::jwks::KeyStore;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::revocation::Revocation;
use crate::telemetry::Telemetry;
use crate::token_cache::TokenCache;
use crate::userdata::UserData;
use crate::userinfo::Userinfo;
use crate::verify::{parse_algorithms, ProviderVerifier, Verifier};
use std::sync::Arc;
use std::time::Duration;

pub struct Compiled {
    pub config: Config,
    pub decider: Arc<Decider>,
    /// One per proxy worker thread: in proxy mode each has its own upstream connection pool, so
    /// a request and the pooled connection it uses are driven by the same thread.
    pub(super) doors: Vec<Door>,
    /// Envoy ext_authz over gRPC, with its address (`forward_auth.grpc_listen`).
    pub ext_authz: Option<(Arc<ExtAuthz>, std::net::SocketAddr)>,
    /// One per provider, same order.
    pub key_stores: Vec<Arc<KeyStore>>,
}

/// What every compiled config shares with the process around it.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub tunnels: Tunnels,
    /// Whether clients reach the listener over TLS (`X-Forwarded-Proto`).
    pub behind_tls: bool,
}

/// Whether two config sections are the same. The sections are plain data whose `Debug` output
/// lists every field (maps are ordered), so equal text means equal settings.
fn same<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

impl Compiled {
    /// Compiles `config`; with `previous`, reuses its warm parts where their sections match.
    /// Does no network I/O, so `claimgate check` can run it too.
    pub fn build(
        config: Config,
        shared: &Shared,
        previous: Option<&Compiled>,
    ) -> Result<Self, KeyError> {
        let metrics = &shared.metrics;
        let timeout = Duration::from_millis(
            config
                .providers
                .iter()
                .map(|p| p.jwks_timeout_ms)
                .max()
                .unwrap_or(5000),
        );
        let default_client = jwks_client(timeout, &[], "providers")?;
        // One client per distinct CA file, so a private CA only widens trust for the providers
        // that name it; the others share the default client (and its connection pool).
        let mut ca_clients: std::collections::BTreeMap<std::path::PathBuf, reqwest::Client> =
            std::collections::BTreeMap::new();

        let mut providers = Vec::with_capacity(config.providers.len());
        let mut mappings = Vec::with_capacity(config.providers.len());
        let mut key_stores = Vec::with_capacity(config.providers.len());
        let mut sources = Vec::new();
        for (i, p) in config.providers.iter().enumerate() {
            let algorithms =
                parse_algorithms(&p.algorithms, &format!("providers[{i}].algorithms"))?;
            let client = match &p.tls {
                None => default_client.clone(),
                Some(tls) => match ca_clients.get(&tls.ca_file) {
                    Some(client) => client.clone(),
                    None => {
                        let key = format!("providers[{i}].tls.ca_file");
                        let certs = crate::tls::read_certificates(&tls.ca_file, &key)?;
                        let client = jwks_client(timeout, &certs, &key)?;
                        ca_clients.insert(tls.ca_file.clone(), client.clone());
                        client
                    }
                },
            };
            // Same provider at the same place: its keys (and their refresh) carry over.
            let kept = previous.and_then(|prev| {
                let same = prev.config.providers.get(i).is_some_and(|old| same(old, p));
                same.then(|| prev.key_stores.get(i).cloned()).flatten()
            });
            let store = match kept {
                Some(store) => store,
                None => Arc::new(KeyStore::new(i, p, algorithms, client, metrics.clone())?),
            };
            providers.push(ProviderVerifier::new(i, p, store.clone())?);
            mappings.push(MetadataMapping::compile(
                &p.metadata_fields,
                &format!("providers[{i}]"),
            )?);
            key_stores.push(store);
            for source in &p.token_from {
                if !sources.contains(source) {
                    sources.push(source.clone());
                }
            }
        }
        let forward = config.forward.clone().unwrap_or_default();
        let kept = |section: bool| previous.filter(|_| section);
        // The user data cache and its change stream carry over while `user_data` is unchanged.
        let same_user_data = previous.is_some_and(|p| same(&p.config.user_data, &config.user_data));
        let user_data = match (&config.user_data, kept(same_user_data)) {
            (Some(_), Some(prev)) => prev.decider.user_data.clone(),
            (Some(cfg), None) => Some(Arc::new(UserData::new(cfg, metrics.user_data.clone())?)),
            (None, _) => None,
        };
        let same_revocation = same_user_data
            && previous.is_some_and(|p| same(&p.config.revocation, &config.revocation));
        let revocation = match (&config.revocation, kept(same_revocation)) {
            (Some(_), Some(prev)) => prev.decider.revocation.clone(),
            (Some(cfg), None) => Some(Arc::new(Revocation::new(
                cfg,
                user_data.as_deref(),
                metrics.revocation.clone(),
            )?)),
            (None, _) => None,
        };
        let custom_data_limit = config.user_data.as_ref().map(|u| u.custom_data_max_bytes);
        let headers = HeaderPlan::compile(
            &forward,
            custom_data_limit,
            metrics.user_data.custom_data_oversize.clone(),
        )?;
        let has_user_data = user_data.is_some();
        let policy = Policy::compile(&config.rules, &config.paths, has_user_data)?;
        let keep_claims = policy.needs_claims() || headers.needs_claims;
        let userinfo = match &config.userinfo {
            Some(cfg) => Some(Userinfo::compile(cfg, has_user_data)?),
            None => None,
        };
        let keep_mapped_data =
            policy.needs_mapped_data() || headers.needs_mapped_data || userinfo.is_some();
        // A cached session holds what the providers, mappings and header plan made of a token:
        // it carries over only if none of what shaped it changed; otherwise it is flushed.
        let same_sessions = same_user_data
            && previous.is_some_and(|p| {
                let (a, b) = (&p.config, &config);
                same(&a.providers, &b.providers)
                    && same(&a.forward, &b.forward)
                    && same(&a.rules, &b.rules)
                    && same(&a.userinfo, &b.userinfo)
                    && same(&a.verified_token_cache, &b.verified_token_cache)
                    && a.max_token_bytes == b.max_token_bytes
            });
        let token_cache = match kept(same_sessions) {
            Some(prev) => prev.decider.token_cache.clone(),
            None => Arc::new(TokenCache::new(
                &config.verified_token_cache,
                metrics.clone(),
            )),
        };
        // One exporter per `tracing` section: a reload that keeps it keeps the exporter.
        let same_tracing = previous.is_some_and(|p| same(&p.config.tracing, &config.tracing));
        let telemetry = match (&config.tracing, kept(same_tracing)) {
            (Some(_), Some(prev)) => prev.decider.telemetry.clone(),
            (Some(tracing), None) => Some(Arc::new(Telemetry::install(tracing)?)),
            (None, _) => None,
        };
        let decider = Arc::new(Decider {
            verifier: Verifier::new(providers, config.max_token_bytes),
            mappings,
            sources,
            headers,
            token_cache,
            user_data,
            revocation,
            policy,
            keep_claims,
            keep_mapped_data,
            userinfo,
            metrics: metrics.clone(),
            access_log: config.access_log,
            telemetry,
        });
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let doors = match (config.mode, &config.upstream, &config.forward_auth) {
            (Mode::Proxy, Some(upstream), _) => {
                let upstream_tls = UpstreamTls::new(upstream.tls.as_ref())?;
                (0..workers)
                    .map(|_| {
                        let forwarder = Forwarder::with_tls(upstream, &upstream_tls)?
                            .behind_tls(shared.behind_tls)
                            .with_tunnels(shared.tunnels.clone());
                        Ok(Door::Proxy(Arc::new(forwarder)))
                    })
                    .collect::<Result<_, _>>()?
            }
            (Mode::ForwardAuth, _, Some(forward_auth)) => {
                if !decider.headers.pass_authorization {
                    return Err(KeyError::new(
                        "forward.pass_authorization",
                        "cannot be false with `mode: forward_auth`: claimgate forwards nothing, \
                         so only the front proxy can remove the token",
                    ));
                }
                let door = Arc::new(ForwardAuth::compile(forward_auth)?);
                vec![Door::ForwardAuth(door); workers]
            }
            (Mode::Proxy, None, _) => {
                return Err(KeyError::new("upstream", "is required with `mode: proxy`"))
            }
            (Mode::ForwardAuth, _, None) => {
                return Err(KeyError::new(
                    "forward_auth.original_request",
                    "is required with `mode: forward_auth`",
                ))
            }
        };
        let ext_authz = match (config.mode, &config.forward_auth) {
            (Mode::ForwardAuth, Some(fa)) => match fa.grpc_listen {
                Some(addr) => Some((Arc::new(ExtAuthz::compile(fa)?), addr)),
                None => None,
            },
            _ => None,
        };
        Ok(Self {
            config,
            decider,
            doors,
            ext_authz,
            key_stores,
        })
    }
}

/// The HTTP client for JWKS and discovery fetches, trusting `extra_roots` on top of the
/// built-in ones. `key` names the config key a failure is reported under.
fn jwks_client(
    timeout: Duration,
    extra_roots: &[tokio_rustls::rustls::pki_types::CertificateDer<'static>],
    key: &str,
) -> Result<reqwest::Client, KeyError> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("claimgate/", env!("CARGO_PKG_VERSION")));
    for der in extra_roots {
        let cert = reqwest::Certificate::from_der(der.as_ref())
            .map_err(|e| KeyError::new(key, format!("holds an unusable CA certificate: {e}")))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| KeyError::new(key, format!("cannot build the JWKS HTTP client: {e}")))
}
