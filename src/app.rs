//! Building the running proxy from a parsed config (everything here happens once, at startup),
//! and running its listeners until shutdown.

use crate::admin::Admin;
use crate::claims::MetadataMapping;
use crate::config::{Config, KeyError, Mode};
use crate::decision::Decider;
use crate::dev::DevIssuer;
use crate::doors::ext_authz::{self, ExtAuthz};
use crate::doors::forward_auth::ForwardAuth;
use crate::drain::{Draining, Tunnels};
use crate::forward::{Forwarder, UpstreamTls};
use crate::headers::HeaderPlan;
use crate::jwks::KeyStore;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::revocation::Revocation;
use crate::server::ServerLimits;
use crate::telemetry::Telemetry;
use crate::tls::Tls;
use crate::token_cache::TokenCache;
use crate::userdata::UserData;
use crate::userinfo::Userinfo;
use crate::verify::{parse_algorithms, ProviderVerifier, Verifier};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use workers::{spawn_proxy_workers, stopped, Door};

mod workers;

pub struct App {
    pub config: Config,
    /// What each proxy worker thread serves: in proxy mode its own upstream connection pool, so
    /// a request and the pooled connection it uses are driven by the same thread.
    doors: Vec<Door>,
    pub decider: Arc<Decider>,
    pub admin: Arc<Admin>,
    pub key_stores: Vec<Arc<KeyStore>>,
    /// The proxy listener's TLS, when configured.
    pub tls: Option<Arc<Tls>>,
    /// Envoy ext_authz over gRPC, with its address (`forward_auth.grpc_listen`).
    ext_authz: Option<(Arc<ExtAuthz>, std::net::SocketAddr)>,
    /// Set at the first SIGTERM/SIGINT: `/readyz` turns 503 and HTTP/1 connections close.
    pub draining: Draining,
    tunnels: Tunnels,
}

impl App {
    /// Compiles the config into the request path. Does no network I/O, so `claimgate check` can
    /// run it too.
    pub fn build(config: Config, dev: Option<DevIssuer>) -> Result<Self, KeyError> {
        let metrics = Arc::new(Metrics::new());
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
            let store = Arc::new(KeyStore::new(i, p, algorithms, client, metrics.clone())?);
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
        let user_data = match &config.user_data {
            Some(cfg) => Some(Arc::new(UserData::new(cfg, metrics.user_data.clone())?)),
            None => None,
        };
        let revocation = match &config.revocation {
            Some(cfg) => Some(Arc::new(Revocation::new(
                cfg,
                user_data.as_deref(),
                metrics.revocation.clone(),
            )?)),
            None => None,
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
        let token_cache = TokenCache::new(
            config.verified_token_cache.enabled,
            config.verified_token_cache.max_entries,
            metrics.clone(),
        );
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
            telemetry: match &config.tracing {
                Some(tracing) => Some(Arc::new(Telemetry::install(tracing)?)),
                None => None,
            },
        });
        let draining = Draining::default();
        let admin = Arc::new(Admin {
            decider: decider.clone(),
            key_stores: key_stores.clone(),
            metrics: metrics.clone(),
            dev,
            draining: draining.clone(),
        });
        let tls = match &config.tls {
            Some(cfg) => Some(Arc::new(Tls::new(
                cfg,
                metrics.tls_handshake_errors.clone(),
            )?)),
            None => None,
        };
        let tunnels = Tunnels::default();
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let doors = match (config.mode, &config.upstream, &config.forward_auth) {
            (Mode::Proxy, Some(upstream), _) => {
                let upstream_tls = UpstreamTls::new(upstream.tls.as_ref())?;
                (0..workers)
                    .map(|_| {
                        let forwarder = Forwarder::with_tls(upstream, &upstream_tls)?
                            .behind_tls(tls.is_some())
                            .with_tunnels(tunnels.clone());
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
            doors,
            decider,
            admin,
            key_stores,
            tls,
            ext_authz,
            draining,
            tunnels,
        })
    }

    /// Where the ext_authz gRPC listener is to be bound, if there is one.
    pub fn grpc_listen(&self) -> Option<std::net::SocketAddr> {
        self.ext_authz.as_ref().map(|(_, addr)| *addr)
    }

    /// Serves the proxy and admin listeners (and the ext_authz gRPC listener, bound at
    /// [`App::grpc_listen`]) and keeps keys fresh until `shutdown` resolves.
    pub async fn run(
        self,
        proxy_listener: TcpListener,
        admin_listener: TcpListener,
        grpc_listener: Option<TcpListener>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (stop_tx, stop_rx) = watch::channel(false);
        for store in &self.key_stores {
            tokio::spawn(store.clone().run_refresh(stop_rx.clone()));
        }
        if let Some(user_data) = &self.decider.user_data {
            tokio::spawn(user_data.clone().run(stop_rx.clone()));
        }
        if let Some(revocation) = &self.decider.revocation {
            tokio::spawn(revocation.clone().run(stop_rx.clone()));
        }
        if let Some(tls) = &self.tls {
            tokio::spawn(tls.clone().watch_files(stop_rx.clone()));
        }
        let shutdown_cfg = self.config.shutdown;
        let limits = ServerLimits {
            drain_grace: Duration::from_secs(shutdown_cfg.grace_seconds),
            ..ServerLimits::from(&self.config.limits)
        };
        let admin = self.admin.clone();
        let admin_task = tokio::spawn(crate::server::serve(
            admin_listener,
            limits,
            move |req, _peer| {
                let admin = admin.clone();
                async move { admin.handle(req).await }
            },
            stopped(stop_rx.clone()),
        ));
        let grpc_task = match (&self.ext_authz, grpc_listener) {
            (Some((door, _)), Some(listener)) => Some(tokio::spawn(ext_authz::serve(
                door.clone(),
                self.decider.clone(),
                listener,
                limits,
                self.tls.clone(),
                stopped(stop_rx.clone()),
            ))),
            _ => None,
        };
        let workers = spawn_proxy_workers(
            self.decider.clone(),
            self.doors,
            proxy_listener,
            limits,
            self.tls.clone(),
            (self.draining.clone(), self.tunnels.clone()),
            &stop_rx,
        );
        shutdown.await;
        self.draining.start();
        tracing::info!(
            delay_seconds = shutdown_cfg.delay_seconds,
            grace_seconds = shutdown_cfg.grace_seconds,
            "draining: /readyz answers 503; still accepting until the delay ends"
        );
        tokio::time::sleep(Duration::from_secs(shutdown_cfg.delay_seconds)).await;
        tracing::info!("drain stop point: listeners closed; requests in flight may finish");
        let _ = stop_tx.send(true);
        let _ = admin_task.await;
        if let Some(task) = grpc_task {
            let _ = task.await;
        }
        for worker in workers {
            let _ = tokio::task::spawn_blocking(move || worker.join()).await;
        }
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
