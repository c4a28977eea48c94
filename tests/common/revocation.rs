//! Revocation tests: two claimgate processes on one MongoDB database, with `user_data`
//! (`tokens_valid_after_field: tokensValidAfter`) and a `revocation` list in `revoked`.

use super::mongo::TestDb;
use super::{
    expect_echo, expect_reject, jwks, metric, mongo_section, poll, Claims, EchoUpstream,
    JwksServer, Proxy, SigningKey, TestConfig,
};
use serde_json::json;
use std::time::Duration;

/// Bound of the polls below: the contract is "within a second"; this only stops a broken build
/// from hanging (the poll ends as soon as the change is seen).
pub const WITHIN: Duration = Duration::from_secs(5);

/// Two proxies on one database, one JWKS and one upstream. Field order is drop order: the
/// proxies stop before their database goes.
pub struct Pair {
    pub proxies: [Proxy; 2],
    pub key: SigningKey,
    pub upstream: EchoUpstream,
    _jwks: JwksServer,
    pub db: TestDb,
}

impl Pair {
    pub async fn start(before: impl AsyncFnOnce(&TestDb)) -> Self {
        Self::on(TestDb::shared().await, |_, c| c, before).await
    }

    /// Two proxies on `db`; `configure` gets each proxy's index and the shared config.
    pub async fn on(
        db: TestDb,
        configure: impl Fn(usize, TestConfig) -> TestConfig,
        before: impl AsyncFnOnce(&TestDb),
    ) -> Self {
        db.index("users", "user_id").await;
        db.index("revoked", "jti").await;
        before(&db).await;
        let key = SigningKey::es256("ec");
        let upstream = EchoUpstream::start().await;
        let jwks_server = JwksServer::start(jwks(&[&key])).await;
        let config = TestConfig::jwks(&upstream.url(), &jwks_server.uri())
            .set("/user_data", mongo_section(&db.name))
            .set("/user_data/tokens_valid_after_field", "tokensValidAfter")
            .set(
                "/revocation",
                json!({"collection": "revoked", "jti_field": "jti", "expires_field": "expiresAt"}),
            );
        let env = [("MONGODB_URI", db.uri.as_str())];
        let proxies = [0, 1].map(|i| Proxy::spawn(&configure(i, config.clone()), &[], &env));
        for proxy in &proxies {
            proxy.wait_ready().await;
        }
        Self {
            proxies,
            key,
            upstream,
            _jwks: jwks_server,
            db,
        }
    }

    pub fn token(&self, claims: Claims) -> String {
        self.key.sign(&claims)
    }

    /// Both proxies forward `token`, twice each (the second from the verified-token cache).
    pub async fn accepted_by_both(&self, token: &str) {
        for proxy in &self.proxies {
            for _ in 0..2 {
                expect_echo(proxy.get_with_token("/", token).await).await;
            }
        }
    }

    /// Both proxies refuse `token` as revoked, and the upstream sees none of it.
    pub async fn refused_by_both(&self, token: &str) {
        let seen = self.upstream.requests().len();
        for proxy in &self.proxies {
            let resp = proxy.get_with_token("/", token).await;
            let body = expect_reject(resp, 401, "token_revoked").await;
            assert_eq!(body["error_description"], "token has been revoked");
        }
        assert_eq!(
            self.upstream.requests().len(),
            seen,
            "a revoked token reached the upstream"
        );
    }

    /// Polls each proxy until `token` gets `status` (and `reason`); returns the slowest delay.
    pub async fn wait_both(&self, token: &str, status: u16, reason: &str) -> Duration {
        let mut slowest = Duration::ZERO;
        for (i, proxy) in self.proxies.iter().enumerate() {
            let what = format!("proxy {i} answering {status} {reason}");
            let (_, took) = poll(WITHIN, &what, || async {
                let resp = proxy.get_with_token("/", token).await;
                let got = resp.status().as_u16();
                let text = resp.text().await.unwrap();
                let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                if got == status && (status == 200 || body["reason"] == reason) {
                    Ok(())
                } else {
                    Err(format!("status {got}: {text}"))
                }
            })
            .await;
            slowest = slowest.max(took);
        }
        slowest
    }

    pub async fn metric(&self, i: usize, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.proxies[i].metrics().await, name, labels).unwrap_or(0.0)
    }
}
