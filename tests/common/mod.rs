//! The integration-test harness shared by every test file: keys and tokens ([`keys`]), the JWKS
//! and upstream servers ([`servers`]), the config builder, and [`Proxy`], which runs the real
//! `claimgate` binary as a child process.

// Each test file is its own crate and uses a different subset of the harness.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod faulty;
pub mod front;
pub mod keys;
pub mod load;
pub mod mongo;
pub mod one_rule;
pub mod raw;
pub mod revocation;
pub mod servers;
pub mod userdata;

pub use keys::{jwks, Claims, SigningKey};
pub use mongo::{MongoServer, TestDb};
pub use servers::{dead_url, expect_jwks_fetch, sha256_hex, Echo, EchoUpstream, JwksServer};
pub use userdata::*;

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_claimgate");

/// A port that was free a moment ago: bind :0, read it, release it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client that never uses an environment proxy and never follows redirects, so tests see
/// exactly what claimgate answered.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// `claimgate check` on `config` (written to a temporary file): the exit code and stderr.
pub fn check_config(config: &TestConfig) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("claimgate.yaml");
    std::fs::write(&path, config.yaml()).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The proxy config as a JSON value, rendered to YAML for the binary. Defaults follow the
/// documented example so each test states only what it is about.
#[derive(Clone, Debug)]
pub struct TestConfig(pub Value);

impl TestConfig {
    /// One provider `test` verifying asymmetric tokens against `jwks_uri`.
    pub fn jwks(upstream: &str, jwks_uri: &str) -> Self {
        let mut c = Self::base(upstream);
        c.0["providers"][0]["jwks_uri"] = json!(jwks_uri);
        c.0["providers"][0]["algorithms"] = json!(["RS256", "PS256", "ES256", "EdDSA"]);
        c
    }

    /// One provider `test` verifying HS256 tokens with a shared secret.
    pub fn hmac(upstream: &str, secret: &str) -> Self {
        let mut c = Self::base(upstream);
        c.0["providers"][0]["signing_keys"] = json!([secret]);
        c.0["providers"][0]["algorithms"] = json!(["HS256"]);
        c
    }

    fn base(upstream: &str) -> Self {
        Self(json!({
            "upstream": {"url": upstream, "timeout_ms": 30000},
            "max_token_bytes": 8192,
            // Tests stop the proxy with SIGTERM; only tests/drain.rs is about the drain's delay.
            "shutdown": {"delay_seconds": 0, "grace_seconds": 5},
            "providers": [{
                "name": "test",
                "issuer": keys::ISSUER,
                "audience": [keys::AUDIENCE],
                "require_any_audience": false,
                "clock_skew_seconds": 60,
                "user_id_claim": "sub",
                "jwks_min_refresh_seconds": 1,
                "jwks_refresh_seconds": 300,
                "token_from": [
                    {"header": "Authorization"},
                    {"cookie": "access_token"},
                    {"query": "access_token"},
                ],
                "metadata_fields": [
                    {"name": "user.name", "field_name": "name", "required": true},
                    {"name": "email", "required": false},
                    {"name": "groups", "required": false},
                ],
            }],
            "forward": {
                "headers": {
                    "X-User-Id": "%%user.id",
                    "X-User-Name": "%%user.data.name",
                    "X-User-Roles": {
                        "from": "%%token.realm_access.roles", "encoding": "csv", "required": false,
                    },
                },
                "user_header": "X-Claimgate-User",
                "pass_authorization": true,
            },
        }))
    }

    /// Sets a value by JSON-pointer path (`/providers/0/audience`), creating objects on the way.
    pub fn set(mut self, pointer: &str, value: impl Into<Value>) -> Self {
        let mut node = &mut self.0;
        let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
        for part in &parts[..parts.len() - 1] {
            node = match node {
                Value::Array(items) => &mut items[part.parse::<usize>().unwrap()],
                _ => node
                    .as_object_mut()
                    .unwrap()
                    .entry(part.to_string())
                    .or_insert_with(|| json!({})),
            };
        }
        let last = parts[parts.len() - 1];
        match node {
            Value::Array(items) => items[last.parse::<usize>().unwrap()] = value.into(),
            _ => {
                node.as_object_mut()
                    .unwrap()
                    .insert(last.to_owned(), value.into());
            }
        }
        self
    }

    /// Shorthand for `set("/providers/0/<key>", value)`.
    pub fn provider(self, key: &str, value: impl Into<Value>) -> Self {
        self.set(&format!("/providers/0/{key}"), value)
    }

    pub fn yaml(&self) -> String {
        serde_yaml_ng::to_string(&self.0).unwrap()
    }
}

/// The claimgate binary running as a child process on free ports. Killed on drop.
pub struct Proxy {
    child: Mutex<Option<Child>>,
    _dir: tempfile::TempDir,
    pub config_path: PathBuf,
    stderr_path: PathBuf,
    /// `http://127.0.0.1:PORT` of the proxy listener.
    pub url: String,
    pub admin_url: String,
    pub client: reqwest::Client,
}

impl Proxy {
    /// Starts the proxy and waits until `/readyz` says 200.
    ///
    /// `free_port` releases the port before the proxy binds it, so another test may take it in
    /// between: a proxy that exits because its address is in use is started again on new ports.
    pub async fn start(config: &TestConfig) -> Self {
        let mut proxy = Self::spawn(config, &[], &[]);
        for _ in 0..5 {
            let deadline = Instant::now() + Duration::from_secs(2);
            while proxy.exit_status().is_none() && Instant::now() < deadline {
                let ready = proxy.client.get(format!("{}/readyz", proxy.admin_url));
                if ready.send().await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let lost_port =
                proxy.exit_status().is_some() && proxy.stderr().contains("Address already in use");
            if !lost_port {
                break;
            }
            proxy = Self::spawn(config, &[], &[]);
        }
        proxy.wait_ready().await;
        proxy
    }

    /// Starts the proxy without waiting. `listen` and `admin.listen` are filled in here.
    pub fn spawn(config: &TestConfig, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_wrapped(config, &[], args, env)
    }

    /// Like [`Proxy::spawn`], with BIN run through `wrapper` (e.g. `["prlimit", "--nofile=64:64"]`)
    /// for tests that need the process started under different limits. The wrapper must `exec`
    /// BIN so that killing the child kills the proxy.
    pub fn spawn_wrapped(
        config: &TestConfig,
        wrapper: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let (port, admin_port) = (free_port(), free_port());
        let config = config
            .clone()
            .set("/listen", format!("127.0.0.1:{port}"))
            .set("/admin/listen", format!("127.0.0.1:{admin_port}"));
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("claimgate.yaml");
        std::fs::write(&config_path, config.yaml()).unwrap();
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut cmd = Command::new(program);
                cmd.args(wrapper_args).arg(BIN);
                cmd
            }
            None => Command::new(BIN),
        };
        cmd.arg("--config").arg(&config_path).args(args);
        // An inherited proxy setting would route the JWKS fetches away from the test server.
        for var in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn claimgate");
        Self {
            child: Mutex::new(Some(child)),
            _dir: dir,
            config_path,
            stderr_path,
            url: format!("http://127.0.0.1:{port}"),
            admin_url: format!("http://127.0.0.1:{admin_port}"),
            client: http_client(),
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(Child::id)
    }

    /// Resident memory in KiB (`VmRSS` from /proc), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Everything the proxy wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn exit_status(&self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.lock().unwrap();
        child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    /// Polls an admin path until it answers `status`; panics with the proxy's stderr on timeout
    /// or if the process exits.
    pub async fn wait_admin(&self, path: &str, status: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.exit_status() {
                panic!(
                    "claimgate exited ({exit}) before {path} answered {status}; stderr:\n{}",
                    self.stderr()
                );
            }
            let url = format!("{}{path}", self.admin_url);
            let answer = self.client.get(&url).timeout(Duration::from_secs(2));
            let last = match answer.send().await {
                Ok(r) if r.status().as_u16() == status => return,
                Ok(r) => format!("status {}", r.status()),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                panic!(
                    "{path} did not answer {status} within {timeout:?} (last: {last}); \
                     stderr:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_ready(&self) {
        self.wait_admin("/readyz", 200, Duration::from_secs(15))
            .await
    }

    /// Waits until the admin server answers `/healthz` (the process is up, maybe not ready).
    pub async fn wait_up(&self) {
        self.wait_admin("/healthz", 200, Duration::from_secs(15))
            .await
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.admin_url))
            .send()
            .await
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
        let resp = self.admin_get("/metrics").await;
        assert_eq!(resp.status(), 200, "/metrics");
        resp.text().await.unwrap()
    }

    /// A request builder for `path` on the proxy listener.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.url))
    }

    /// GET `path` with `Authorization: Bearer <token>`.
    pub async fn get_with_token(&self, path: &str, token: &str) -> reqwest::Response {
        self.get(path).bearer_auth(token).send().await.unwrap()
    }

    /// Sends `signal` (e.g. `"TERM"`) to the proxy process.
    pub fn signal(&self, signal: &str) {
        let guard = self.child.lock().unwrap();
        let child = guard.as_ref().expect("the proxy is running");
        let status = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `within` for the process to exit; its status, or `None` if still running.
    pub async fn wait_exit(&self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the proxy with SIGTERM (graceful, so logs are flushed), SIGKILL after 5 s.
    pub fn terminate(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            stop_gracefully(&mut child, Duration::from_secs(5));
        }
    }
}

/// Stops `child` with SIGTERM, SIGKILL if it is still running after `grace`. Graceful so that
/// logs are flushed, and so that a master process (nginx) takes its workers down with it: a
/// SIGKILLed nginx master leaves its workers running.
pub fn stop_gracefully(child: &mut Child, grace: Duration) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Asserts a 200 from the echo upstream and returns what the upstream received.
pub async fn expect_echo(resp: reqwest::Response) -> Echo {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(
        status, 200,
        "expected the request to reach upstream; body: {text}"
    );
    Echo::from_json(&serde_json::from_str(&text).unwrap())
}

/// Asserts a rejection with `status` and `reason` code; checks the RFC 6750 challenge on 401s and
/// returns the JSON body.
pub async fn expect_reject(resp: reqwest::Response, status: u16, reason: &str) -> Value {
    let got = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "status; body: {text}");
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("reject body is not JSON ({e}): {text}"));
    assert_eq!(body["reason"], reason, "reason code; body: {text}");
    if status == 401 {
        let challenge = challenge.expect("401 without WWW-Authenticate");
        if reason == "token_missing" {
            assert_eq!(challenge, "Bearer realm=\"claimgate\"");
        } else {
            assert!(
                challenge.starts_with("Bearer error=\"invalid_token\", error_description=\""),
                "challenge: {challenge}"
            );
            assert_eq!(body["error"], "invalid_token");
        }
    }
    body
}

/// Sum of the samples of `name` whose labels include every `(key, value)` in `labels`, or None
/// when no sample matches. Label order and extra labels do not matter.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        let matches = labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        if matches {
            let value: f64 = value.split_whitespace().next().unwrap().parse().unwrap();
            total = Some(total.unwrap_or(0.0) + value);
        }
    }
    total
}

/// Decodes the `X-Claimgate-User` header (base64url without padding, JSON).
pub fn decode_user_header(value: &str) -> Value {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .unwrap_or_else(|e| panic!("X-Claimgate-User is not unpadded base64url ({e}): {value}"));
    serde_json::from_slice(&bytes).unwrap()
}
