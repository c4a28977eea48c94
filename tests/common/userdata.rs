//! The custom-user-data milestone: a proxy wired to a user data source (a MongoDB test database
//! or a watched file), rules and `/userinfo`, plus the assertions those tests share.

use super::mongo::TestDb;
use super::{
    decode_user_header, expect_echo, expect_reject, jwks, Claims, Echo, EchoUpstream, JwksServer,
    Proxy, SigningKey, TestConfig,
};
use serde_json::{json, Value};
use std::future::Future;
use std::time::{Duration, Instant};

/// How long a change to the source may take to show (the contract says within ~1 s; polled).
pub const SEEN_WITHIN: Duration = Duration::from_secs(2);

/// The contract's `user_data` section for the MongoDB source, reading `database` on
/// `${MONGODB_URI}` (the proxy gets that variable in its environment).
pub fn mongo_section(database: &str) -> Value {
    json!({
        "source": "mongodb",
        "uri": "${MONGODB_URI}",
        "database": database,
        "collection": "users",
        "user_id_field": "user_id",
        "required": false,
        "blocked_field": "blocked",
        "expiration_field": "expirationDate",
        "cache": {"max_entries": 100000, "ttl_seconds": 300},
        "on_unavailable": "serve_cached",
        "custom_data_max_bytes": 8192,
    })
}

/// The contract's `user_data` section for the file source.
pub fn file_section(path: &std::path::Path) -> Value {
    json!({
        "source": "file",
        "path": path.to_str().unwrap(),
        "user_id_field": "user_id",
        "required": false,
        "blocked_field": "blocked",
        "expiration_field": "expirationDate",
    })
}

/// Adds the contract's forward headers on top of the harness defaults.
pub fn with_custom_data_headers(config: TestConfig) -> TestConfig {
    config.set(
        "/forward/headers/X-User-Group",
        "%%user.custom_data.userGroup",
    )
}

/// A proxy with user data, the key that signs its tokens and the upstream it forwards to.
pub struct UdEnv {
    // Field order is drop order: the proxy stops before its database goes.
    pub proxy: Proxy,
    pub key: SigningKey,
    pub upstream: EchoUpstream,
    _jwks: JwksServer,
    pub db: Option<TestDb>,
}

impl UdEnv {
    /// A MongoDB-backed proxy on `db` (whose `users.user_id` gets an index). `configure` gets the
    /// harness config with `user_data` = [`mongo_section`] and the X-User-Group header set.
    pub async fn mongo(db: TestDb, configure: impl FnOnce(TestConfig) -> TestConfig) -> Self {
        db.index("users", "user_id").await;
        let uri = db.uri.clone();
        let section = mongo_section(&db.name);
        Self::start(Some(db), &[("MONGODB_URI", &uri)], |c| {
            configure(with_custom_data_headers(c.set("/user_data", section)))
        })
        .await
    }

    /// A proxy without a database (the file source); `configure` sets `user_data` itself.
    pub async fn file(configure: impl FnOnce(TestConfig) -> TestConfig) -> Self {
        Self::start(None, &[], |c| configure(with_custom_data_headers(c))).await
    }

    async fn start(
        db: Option<TestDb>,
        env: &[(&str, &str)],
        configure: impl FnOnce(TestConfig) -> TestConfig,
    ) -> Self {
        let key = SigningKey::es256("ec");
        let upstream = EchoUpstream::start().await;
        let jwks_server = JwksServer::start(jwks(&[&key])).await;
        let config = configure(TestConfig::jwks(&upstream.url(), &jwks_server.uri()));
        let proxy = Proxy::spawn(&config, &[], env);
        proxy.wait_ready().await;
        Self {
            proxy,
            key,
            upstream,
            _jwks: jwks_server,
            db,
        }
    }

    pub fn db(&self) -> &TestDb {
        self.db.as_ref().expect("this env has no database")
    }

    /// A valid token for user `id` (the `sub` claim).
    pub fn token(&self, id: &str) -> String {
        self.key.sign(&Claims::new().set("sub", id))
    }

    /// GET `path` as user `id`.
    pub async fn get_as(&self, id: &str, path: &str) -> reqwest::Response {
        self.proxy.get_with_token(path, &self.token(id)).await
    }

    /// `method path` as user `id`.
    pub async fn send_as(&self, method: &str, id: &str, path: &str) -> reqwest::Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let url = format!("{}{path}", self.proxy.url);
        let request = self.proxy.client.request(method, url);
        request.bearer_auth(self.token(id)).send().await.unwrap()
    }

    /// GET `/` as `id`, expect it forwarded, and return what the upstream saw.
    pub async fn echo_as(&self, id: &str) -> Echo {
        expect_echo(self.get_as(id, "/").await).await
    }

    /// A counter from the admin `/metrics` (0 when absent).
    /// Inserts `user` once the change stream is open and waits for its insert event: an event that
    /// arrived after the first lookup would drop the cached document again (rightly: it may be
    /// newer), and the test needs it cached.
    pub async fn insert_and_settle(&self, user: mongodb::bson::Document) {
        let events = || async {
            self.counter("claimgate_user_data_change_events_total")
                .await
        };
        let mut n = 0;
        while events().await < 1.0 {
            assert!(n < 100, "the change stream never delivered an event");
            self.db()
                .coll("users")
                .update_one(
                    mongodb::bson::doc! {"user_id": "warm-up"},
                    mongodb::bson::doc! {"$set": {"n": n}},
                )
                .upsert(true)
                .await
                .unwrap();
            n += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = events().await;
        self.db().insert_user(user).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while events().await <= before {
            assert!(Instant::now() < deadline, "the insert event never arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn counter(&self, name: &str) -> f64 {
        super::metric(&self.proxy.metrics().await, name, &[]).unwrap_or(0.0)
    }
}

/// The `custom_data` of the user header the upstream received (`Value::Null` when absent).
pub fn custom_data(echo: &Echo) -> Value {
    let header = echo
        .header("x-claimgate-user")
        .expect("no X-Claimgate-User reached the upstream");
    decode_user_header(header)
        .get("custom_data")
        .cloned()
        .unwrap_or(Value::Null)
}

/// Asserts a 403 by rule `rule`: reason `forbidden` and the RFC 6750 `insufficient_scope`
/// challenge naming the rule.
pub async fn expect_forbidden(resp: reqwest::Response, rule: &str) {
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = expect_reject(resp, 403, "forbidden").await;
    assert_eq!(body["error"], "insufficient_scope", "body: {body}");
    assert_eq!(
        challenge.as_deref(),
        Some(
            format!(
                "Bearer error=\"insufficient_scope\", error_description=\"access denied by rule {rule}\""
            )
            .as_str()
        ),
        "challenge; body: {body}"
    );
}

/// Calls `probe` every 100 ms until it returns `Some`, or panics after `within` with the last
/// observation (`describe`d by the probe's `Err`).
pub async fn poll<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(found) => return (found, start.elapsed()),
            Err(last) if start.elapsed() > within => {
                panic!("{what}: not seen within {within:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Polls GET `/` as `id` until X-User-Group reads `want` (`None`: absent); returns how long it
/// took.
pub async fn wait_for_group(
    env: &UdEnv,
    id: &str,
    want: Option<&str>,
    within: Duration,
) -> Duration {
    let what = format!("X-User-Group of {id} becoming {want:?}");
    let token = env.token(id);
    poll(within, &what, || async {
        let resp = env.proxy.get_with_token("/", &token).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        if status != 200 {
            return Err(format!("status {status}: {text}"));
        }
        let echo = Echo::from_json(&serde_json::from_str(&text).unwrap());
        let got = echo.header("x-user-group").map(str::to_owned);
        if got.as_deref() == want {
            Ok(())
        } else {
            Err(format!("X-User-Group {got:?}"))
        }
    })
    .await
    .1
}

/// Polls GET `/` as `id` until the answer has `status` (and, for rejections, reason `reason`).
pub async fn wait_for_status(env: &UdEnv, id: &str, status: u16, reason: &str, within: Duration) {
    let what = format!("GET / as {id} answering {status} {reason}");
    let token = env.token(id);
    poll(within, &what, || async {
        let resp = env.proxy.get_with_token("/", &token).await;
        let got = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let reason_ok = status == 200 || body["reason"] == reason;
        if got == status && reason_ok {
            Ok(())
        } else {
            Err(format!("status {got}: {text}"))
        }
    })
    .await;
}
