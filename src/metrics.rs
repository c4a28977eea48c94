//! Prometheus metrics. Label values for request outcomes are created once at startup so that the
//! hot path increments a ready counter instead of hashing a label set.

use crate::error::Reject;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabel {
    pub provider: String,
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    outcomes: HashMap<&'static str, Counter>,
    pub request_duration: Histogram,
    pub jwks_fetches: Family<FetchLabel, Counter>,
    pub jwks_keys: Family<ProviderLabel, Gauge>,
    pub jwks_key_age_seconds: Family<ProviderLabel, Gauge<f64, AtomicU64>>,
    pub token_cache_entries: Gauge,
    /// Heap the verified-token cache holds: its entries' weights plus the workers' copies.
    pub token_cache_bytes: Gauge,
    pub token_cache_hits: Counter,
    pub token_cache_misses: Counter,
    pub token_cache_hit_ratio: Gauge<f64, AtomicU64>,
    pub tls_handshake_errors: Counter,
    /// Open connections on the proxy listener (`limits.max_connections`).
    pub connections_open: Gauge,
    /// Connections closed at once because `limits.max_connections` were open (`refuse`).
    pub connections_refused: Counter,
    pub user_data: UserDataMetrics,
    pub revocation: RevocationMetrics,
    pub config: crate::reload::ConfigMetrics,
}

/// Metrics of revocation (issue 11). Refusals are also in `requests{outcome="token_revoked"}`;
/// these say which check refused.
#[derive(Default, Clone)]
pub struct RevocationMetrics {
    /// `iat` before the user's `tokens_valid_after` (or no `iat` while it is set).
    pub refused_valid_after: Counter,
    /// `jti` in the revocation list.
    pub refused_jti: Counter,
    /// Entries of the revocation list held in memory.
    pub entries: Gauge,
    /// Heap bytes of the revocation list (bounded by `revocation.max_bytes`).
    pub bytes: Gauge,
    /// 1 while the list is over `revocation.max_bytes` or `max_entries` (tokens with a `jti` get
    /// 503).
    pub overflow: Gauge,
    /// Change-stream events applied to the revocation list.
    pub change_events: Counter,
    /// Full reads of the revocation collection (startup, after a lost stream, overflow retries).
    pub loads: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabel {
    check: &'static str,
}

/// Metrics of the user data step (issue: custom user data).
#[derive(Default, Clone)]
pub struct UserDataMetrics {
    pub cache_entries: Gauge,
    /// Heap bytes held by the user data cache (bounded by `user_data.cache.max_bytes`).
    pub cache_bytes: Gauge,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    /// Hits / lookups since start, computed when metrics are scraped.
    pub cache_hit_ratio: Gauge<f64, AtomicU64>,
    /// Requests served from cache while the source was unreachable.
    pub stale_serves: Counter,
    pub lookup_errors: Counter,
    /// Change-stream events applied to the cache.
    pub change_events: Counter,
    pub users_created: Counter,
    /// User headers sent without `custom_data` because it exceeded `custom_data_max_bytes`.
    pub custom_data_oversize: Counter,
}

pub const ALLOWED: &str = "allowed";

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("claimgate");
        let requests = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "requests",
            "Requests by outcome: allowed, or the reason code of the rejection",
            requests.clone(),
        );
        let outcomes = std::iter::once(ALLOWED)
            .chain(Reject::ALL_CODES.iter().copied())
            .map(|outcome| {
                (
                    outcome,
                    requests.get_or_create(&OutcomeLabel { outcome }).clone(),
                )
            })
            .collect();
        let request_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        registry.register(
            "request_duration_seconds",
            "Time from request arrival to response headers (including the upstream)",
            request_duration.clone(),
        );
        let jwks_fetches = Family::<FetchLabel, Counter>::default();
        registry.register(
            "jwks_fetches",
            "JWKS fetches by provider and result",
            jwks_fetches.clone(),
        );
        let jwks_keys = Family::<ProviderLabel, Gauge>::default();
        registry.register(
            "jwks_keys",
            "Usable keys loaded per provider",
            jwks_keys.clone(),
        );
        let jwks_key_age_seconds = Family::<ProviderLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "jwks_key_age_seconds",
            "Seconds since the provider's keys were last fetched successfully",
            jwks_key_age_seconds.clone(),
        );
        let token_cache_entries = Gauge::default();
        registry.register(
            "token_cache_entries",
            "Entries in the verified-token cache",
            token_cache_entries.clone(),
        );
        let token_cache_bytes = Gauge::default();
        registry.register(
            "token_cache_bytes",
            "Heap bytes held by the verified-token cache (weighed entries and per-worker copies)",
            token_cache_bytes.clone(),
        );
        let token_cache_hits = Counter::default();
        registry.register(
            "token_cache_hits",
            "Verified-token cache hits",
            token_cache_hits.clone(),
        );
        let token_cache_misses = Counter::default();
        registry.register(
            "token_cache_misses",
            "Verified-token cache misses",
            token_cache_misses.clone(),
        );
        let token_cache_hit_ratio = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "token_cache_hit_ratio",
            "Verified-token cache hits / lookups since start",
            token_cache_hit_ratio.clone(),
        );
        let tls_handshake_errors = Counter::default();
        registry.register(
            "tls_handshake_errors",
            "TLS handshakes on the proxy listener that failed or timed out",
            tls_handshake_errors.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Open connections on the proxy listener",
            connections_open.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Proxy connections closed at once because limits.max_connections were open",
            connections_refused.clone(),
        );
        let user_data = UserDataMetrics::default();
        let u = &user_data;
        registry.register(
            "user_data_cache_entries",
            "Entries in the user data cache",
            u.cache_entries.clone(),
        );
        registry.register(
            "user_data_cache_bytes",
            "Heap bytes held by the user data cache",
            u.cache_bytes.clone(),
        );
        registry.register(
            "user_data_cache_hit_ratio",
            "User data cache hits / lookups since start",
            u.cache_hit_ratio.clone(),
        );
        let counters = [
            (
                "user_data_cache_hits",
                "User data cache hits",
                &u.cache_hits,
            ),
            (
                "user_data_cache_misses",
                "User data cache misses",
                &u.cache_misses,
            ),
            (
                "user_data_stale_serves",
                "Requests served from cached user data while the source was unreachable",
                &u.stale_serves,
            ),
            (
                "user_data_lookup_errors",
                "Failed user data lookups",
                &u.lookup_errors,
            ),
            (
                "user_data_change_events",
                "Change stream events applied to the user data cache",
                &u.change_events,
            ),
            (
                "user_data_users_created",
                "Documents inserted by on_user_creation",
                &u.users_created,
            ),
            (
                "user_data_custom_data_oversize",
                "User headers sent without custom_data because it exceeded custom_data_max_bytes",
                &u.custom_data_oversize,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        let revocation = register_revocation(&mut registry);
        let config = crate::reload::ConfigMetrics::register(&mut registry);
        Self {
            registry,
            config,
            outcomes,
            user_data,
            revocation,
            request_duration,
            jwks_fetches,
            jwks_keys,
            jwks_key_age_seconds,
            token_cache_entries,
            token_cache_bytes,
            token_cache_hits,
            token_cache_misses,
            token_cache_hit_ratio,
            tls_handshake_errors,
            connections_open,
            connections_refused,
        }
    }

    /// Registers metrics owned by another module (user data, policy) under the same prefix.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn count_outcome(&self, outcome: &str) {
        if let Some(counter) = self.outcomes.get(outcome) {
            counter.inc();
        }
    }

    pub fn jwks_fetch(&self, provider: &str, ok: bool) {
        self.jwks_fetches
            .get_or_create(&FetchLabel {
                provider: provider.to_owned(),
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        set_ratio(
            &self.token_cache_hit_ratio,
            &self.token_cache_hits,
            &self.token_cache_misses,
        );
        let u = &self.user_data;
        set_ratio(&u.cache_hit_ratio, &u.cache_hits, &u.cache_misses);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn register_revocation(registry: &mut Registry) -> RevocationMetrics {
    let refusals = Family::<CheckLabel, Counter>::default();
    registry.register(
        "token_revoked",
        "Tokens refused as revoked, by check: tokens_valid_after or jti",
        refusals.clone(),
    );
    let refused = |check| refusals.get_or_create(&CheckLabel { check }).clone();
    let r = RevocationMetrics {
        refused_valid_after: refused("tokens_valid_after"),
        refused_jti: refused("jti"),
        ..RevocationMetrics::default()
    };
    registry.register(
        "revocation_entries",
        "Entries of the revocation list held in memory",
        r.entries.clone(),
    );
    registry.register(
        "revocation_bytes",
        "Heap bytes of the revocation list held in memory",
        r.bytes.clone(),
    );
    registry.register(
        "revocation_overflow",
        "1 while the revocation list exceeds revocation.max_bytes or max_entries (tokens with a jti get 503)",
        r.overflow.clone(),
    );
    registry.register(
        "revocation_change_events",
        "Change stream events applied to the revocation list",
        r.change_events.clone(),
    );
    registry.register(
        "revocation_loads",
        "Full reads of the revocation collection",
        r.loads.clone(),
    );
    r
}

/// Hits / lookups, left unset until the first lookup.
fn set_ratio(ratio: &Gauge<f64, AtomicU64>, hits: &Counter, misses: &Counter) {
    let hits = hits.get();
    let lookups = hits + misses.get();
    if lookups > 0 {
        ratio.set(hits as f64 / lookups as f64);
    }
}
