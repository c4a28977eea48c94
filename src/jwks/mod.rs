//! Per-provider signing keys: fetched from the JWKS (or built from HMAC secrets), cached,
//! refreshed in the background before they go stale, and refetched on an unknown `kid` at most
//! once per `jwks_min_refresh_seconds`. A failed fetch never drops the last good keys.

mod key_set;
pub mod keys;

use crate::config::{KeyError, ProviderConfig};
use crate::error::error_chain;
use crate::metrics::{Metrics, ProviderLabel};
pub use key_set::{KeySet, Lookup};
pub use keys::{Alg, VerifyKey};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

enum Source {
    Static,
    Jwks {
        uri: String,
    },
    Discovery {
        issuer: String,
        jwks_uri: tokio::sync::OnceCell<String>,
    },
}

pub struct KeyStore {
    provider: String,
    source: Source,
    allowed: Vec<Alg>,
    client: reqwest::Client,
    current: RwLock<Option<Arc<KeySet>>>,
    /// When the keys were last loaded; static keys never age.
    loaded_at: Mutex<Option<Instant>>,
    last_attempt: Mutex<Option<Instant>>,
    /// Bumped on every completed fetch, so a request that waited for an in-flight fetch can tell
    /// that it need not start another.
    generation: AtomicU64,
    fetch_lock: tokio::sync::Mutex<()>,
    min_refresh: Duration,
    default_refresh: Duration,
    max_refresh: Duration,
    max_staleness: Duration,
    /// `jwks_max_bytes`: caps the JWKS and discovery bodies, which come from a third party.
    max_bytes: usize,
    metrics: Arc<Metrics>,
}

impl KeyStore {
    pub fn new(
        index: usize,
        p: &ProviderConfig,
        allowed: Vec<Alg>,
        client: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> Result<Self, KeyError> {
        let source = if let Some(uri) = &p.jwks_uri {
            Source::Jwks { uri: uri.clone() }
        } else if p.discovery {
            Source::Discovery {
                issuer: p.issuer.trim_end_matches('/').to_owned(),
                jwks_uri: tokio::sync::OnceCell::new(),
            }
        } else {
            Source::Static
        };
        let current = match source {
            Source::Static => {
                let keys: Vec<VerifyKey> = p
                    .signing_keys
                    .iter()
                    .filter_map(|secret| VerifyKey::hmac(secret.as_bytes(), &allowed))
                    .collect();
                if keys.is_empty() {
                    return Err(KeyError::new(
                        format!("providers[{index}].algorithms"),
                        "signing_keys need at least one of HS256, HS384, HS512 in algorithms",
                    ));
                }
                Some(Arc::new(KeySet::new(keys)))
            }
            _ => None,
        };
        metrics
            .jwks_keys
            .get_or_create(&ProviderLabel {
                provider: p.name.clone(),
            })
            .set(current.as_ref().map_or(0, |k| k.len() as i64));
        Ok(Self {
            provider: p.name.clone(),
            source,
            allowed,
            client,
            current: RwLock::new(current),
            loaded_at: Mutex::new(None),
            last_attempt: Mutex::new(None),
            generation: AtomicU64::new(0),
            fetch_lock: tokio::sync::Mutex::new(()),
            min_refresh: Duration::from_secs(p.jwks_min_refresh_seconds),
            default_refresh: Duration::from_secs(p.jwks_refresh_seconds),
            max_refresh: Duration::from_secs(p.jwks_max_refresh_seconds),
            max_staleness: Duration::from_secs(p.jwks_max_staleness_seconds),
            max_bytes: p.jwks_max_bytes,
            metrics,
        })
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Replaces the key set directly, as a successful fetch would (benches and tests use it to
    /// avoid a JWKS server).
    pub fn install(&self, set: KeySet) {
        self.metrics
            .jwks_keys
            .get_or_create(&ProviderLabel {
                provider: self.provider.clone(),
            })
            .set(set.len() as i64);
        if let Ok(mut current) = self.current.write() {
            *current = Some(Arc::new(set));
        }
        if let Ok(mut at) = self.loaded_at.lock() {
            *at = Some(Instant::now());
        }
    }

    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.current.read().ok()?.clone()
    }

    fn is_remote(&self) -> bool {
        !matches!(self.source, Source::Static)
    }

    /// Ready means: keys are loaded and not older than the configured max staleness.
    pub fn is_ready(&self) -> bool {
        if self.keys().is_none() {
            return false;
        }
        !self.is_remote() || self.key_age().is_some_and(|age| age <= self.max_staleness)
    }

    pub fn key_age(&self) -> Option<Duration> {
        self.loaded_at.lock().ok()?.map(|at| at.elapsed())
    }

    /// Called when a token names a kid we do not know. Returns the keys to retry with, if a
    /// fetch happened (here or concurrently) since the caller looked.
    pub async fn refresh_for_unknown_kid(&self) -> Option<Arc<KeySet>> {
        if !self.is_remote() {
            return None;
        }
        let seen = self.generation.load(Ordering::Acquire);
        let _guard = self.fetch_lock.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return self.keys();
        }
        let recently = self
            .last_attempt
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < self.min_refresh);
        if recently {
            return None;
        }
        match self.fetch_locked().await {
            Ok(_) => self.keys(),
            Err(_) => None,
        }
    }

    /// Fetches now (serialised with other fetches) and returns how long the keys may be cached.
    pub async fn refresh(&self) -> Result<Duration, String> {
        let _guard = self.fetch_lock.lock().await;
        self.fetch_locked().await
    }

    async fn fetch_locked(&self) -> Result<Duration, String> {
        if let Ok(mut at) = self.last_attempt.lock() {
            *at = Some(Instant::now());
        }
        let result = self.fetch_once().await;
        self.metrics.jwks_fetch(&self.provider, result.is_ok());
        self.generation.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok((set, ttl, warnings)) => {
                for warning in warnings {
                    tracing::warn!(provider = %self.provider, %warning, "skipping unusable JWKS key");
                }
                self.install(set);
                tracing::debug!(provider = %self.provider, ttl_seconds = ttl.as_secs(), "JWKS loaded");
                Ok(ttl)
            }
            Err(why) => {
                tracing::warn!(provider = %self.provider, error = %why, "JWKS fetch failed; keeping the last good keys");
                Err(why)
            }
        }
    }

    async fn fetch_once(&self) -> Result<(KeySet, Duration, Vec<String>), String> {
        let uri = match &self.source {
            Source::Static => return Err("static keys are never fetched".into()),
            Source::Jwks { uri } => uri.clone(),
            Source::Discovery { issuer, jwks_uri } => jwks_uri
                .get_or_try_init(|| self.discover(issuer))
                .await?
                .clone(),
        };
        let response = self
            .client
            .get(&uri)
            .send()
            .await
            .map_err(|e| format!("GET {uri}: {}", error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {uri}: HTTP {status}"));
        }
        let ttl = self.cache_ttl(response.headers());
        let body = self.read_capped(response, &uri).await?;
        let (set, warnings) = KeySet::from_jwks(&body, &self.allowed)?;
        Ok((set, ttl, warnings))
    }

    async fn discover(&self, issuer: &str) -> Result<String, String> {
        let url = format!("{issuer}/.well-known/openid-configuration");
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
        let body = self.read_capped(response, &url).await?;
        let doc: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))?;
        doc.get("jwks_uri")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("{url} has no jwks_uri"))
    }

    /// The body, or an error as soon as more than `jwks_max_bytes` is announced or has arrived:
    /// a hostile or broken endpoint must not make claimgate buffer without bound.
    async fn read_capped(
        &self,
        mut response: reqwest::Response,
        url: &str,
    ) -> Result<Vec<u8>, String> {
        let limit = self.max_bytes;
        let too_large =
            |what: String| format!("GET {url}: body {what} exceeds jwks_max_bytes ({limit} bytes)");
        if let Some(announced) = response.content_length() {
            if announced > limit as u64 {
                return Err(too_large(format!("of {announced} bytes (Content-Length)")));
            }
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?
        {
            if body.len() + chunk.len() > limit {
                return Err(too_large(format!(
                    "of more than {} bytes",
                    body.len() + chunk.len()
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Honours `Cache-Control: max-age` within [min_refresh, max_refresh].
    fn cache_ttl(&self, headers: &reqwest::header::HeaderMap) -> Duration {
        let max_age = headers
            .get_all(reqwest::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|d| d.trim().strip_prefix("max-age="))
            .find_map(|n| n.trim_matches('"').parse::<u64>().ok());
        max_age
            .map(Duration::from_secs)
            .unwrap_or(self.default_refresh)
            .clamp(self.min_refresh, self.max_refresh)
    }

    /// Keeps the keys fresh until `shutdown` fires: the first load retries with backoff, later
    /// refreshes happen at 90% of the cache time.
    pub async fn run_refresh(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        if !self.is_remote() {
            return;
        }
        let mut backoff = Duration::from_millis(250);
        loop {
            let wait = match self.refresh().await {
                Ok(ttl) => {
                    backoff = Duration::from_millis(250);
                    ttl.mul_f64(0.9)
                }
                Err(_) => {
                    let wait = backoff;
                    backoff = (backoff * 2).min(self.min_refresh.max(Duration::from_secs(1)));
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    pub fn update_age_metric(&self) {
        if let Some(age) = self.key_age() {
            self.metrics
                .jwks_key_age_seconds
                .get_or_create(&ProviderLabel {
                    provider: self.provider.clone(),
                })
                .set(age.as_secs_f64());
        }
    }
}
