//! Hot reload through the real binary under load: keep-alive client loops send all along while
//! valid and invalid configs are loaded by `POST /reload`, `SIGHUP` and a file watch (a
//! ConfigMap-style symlink swap). Every request sent gets the right answer, none a connection
//! error; a valid config takes effect, an invalid one is refused with the key and reason and the
//! old one keeps serving; the JWKS keys stay warm.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Env {
    proxy: Proxy,
    config: TestConfig,
    key: SigningKey,
    jwks: JwksServer,
    _upstream: EchoUpstream,
}

/// `/probe` is allowed for tokens whose `role` is `role`.
fn with_probe_role(config: &TestConfig, role: &str) -> TestConfig {
    config.clone().set(
        "/rules",
        json!([{"name": "probe", "match": {"path_prefix": "/probe"},
                "allow_when": {"%%token.role": role}}]),
    )
}

async fn start(watch: bool) -> Env {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let config = TestConfig::jwks(&upstream.url(), &jwks_server.uri()).set("/reload/watch", watch);
    let config = with_probe_role(&config, "a");
    let proxy = Proxy::start(&config).await;
    // What the harness filled in must stay, or the reload would be refused as a restart.
    let on_disk: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&proxy.config_path).unwrap()).unwrap();
    let config = TestConfig(on_disk);
    Env {
        proxy,
        config,
        key,
        jwks: jwks_server,
        _upstream: upstream,
    }
}

impl Env {
    fn write(&self, text: &str) {
        let tmp = self.proxy.config_path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.proxy.config_path).unwrap();
    }

    async fn post_reload(&self) -> (u16, Value) {
        let resp = self
            .proxy
            .client
            .post(format!("{}/reload", self.proxy.admin_url))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    async fn probe(&self) -> u16 {
        let token = self.key.sign(&Claims::new().set("role", "a"));
        self.proxy
            .get_with_token("/probe", &token)
            .await
            .status()
            .as_u16()
    }

    /// Polls `/probe` until it answers `status` (bounded).
    async fn probe_becomes(&self, status: u16, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.probe().await;
            if got == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/probe still {got}\n{}",
                self.proxy.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_load_swap_valid_configs_and_refuse_invalid_ones() {
    let env = start(false).await;
    let token = env.key.sign(&Claims::new());
    assert_eq!(env.probe().await, 200);
    let jwks_fetches = env.jwks.hits();
    let readyz: Value = env
        .proxy
        .client
        .get(format!("{}/readyz", env.proxy.admin_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hash_before = readyz["config"]["hash"].clone();
    assert!(
        hash_before.as_str().is_some_and(|h| h.len() == 16),
        "{readyz}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let loops = load::keep_alive_loops(&env.proxy.url, "/hello", &token, 4, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. valid, by POST /reload: /probe now needs role b.
    env.write(&with_probe_role(&env.config, "b").yaml());
    let (status, body) = env.post_reload().await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["hash"], hash_before);
    assert_eq!(env.probe().await, 403);

    // 2. invalid: an unknown key. The file, key and reason come back; the old config serves.
    env.write(
        &with_probe_role(&env.config, "a")
            .set("/providers/0/audiance", "x")
            .yaml(),
    );
    let (status, body) = env.post_reload().await;
    assert_eq!(status, 422, "{body}");
    assert!(body["key"].as_str().unwrap().contains("audiance"), "{body}");
    assert_eq!(body["file"], json!(env.proxy.config_path));
    assert_eq!(env.probe().await, 403);

    // 3. valid, by SIGHUP: back to role a.
    env.write(&with_probe_role(&env.config, "a").yaml());
    env.proxy.signal("HUP");
    env.probe_becomes(200, Duration::from_secs(5)).await;

    // 4. invalid: broken YAML, by SIGHUP (logged and counted; nothing changes).
    env.write("providers: [\n");
    env.proxy.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.probe().await, 200);

    // 5. a changed listen address needs a restart: refused, naming the key.
    env.write(
        &with_probe_role(&env.config, "b")
            .set("/listen", "127.0.0.1:1")
            .yaml(),
    );
    let (status, body) = env.post_reload().await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["key"], "listen");
    assert_eq!(env.probe().await, 200);

    stop.store(true, Ordering::SeqCst);
    let load::Counts {
        sent, ok, failures, ..
    } = load::total(loops).await;
    assert!(failures.is_empty(), "{failures:?}\n{}", env.proxy.stderr());
    println!("reload: {sent} requests sent during 5 reloads, {ok} answered 200");
    assert_eq!(sent, ok);

    let metrics = env.proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "claimgate_config_reloads_total",
            &[("result", "ok")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "claimgate_config_reloads_total",
            &[("result", "error")]
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(&metrics, "claimgate_config_info", &[]),
        Some(1.0),
        "one hash only"
    );
    // The provider did not change: its keys carried over, no fetch was needed.
    assert_eq!(env.jwks.hits(), jwks_fetches);
    let stderr = env.proxy.stderr();
    assert!(stderr.contains("audiance"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_config_follows_a_configmap_symlink_swap() {
    let env = start(true).await;
    assert_eq!(env.probe().await, 200);
    // Kubernetes mounts a ConfigMap key as a symlink into a `..data` directory it swaps.
    let dir = env.proxy.config_path.parent().unwrap().to_owned();
    let data = dir.join("v2");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(
        data.join("claimgate.yaml"),
        with_probe_role(&env.config, "b").yaml(),
    )
    .unwrap();
    let link = dir.join("claimgate.yaml.link");
    std::os::unix::fs::symlink(data.join("claimgate.yaml"), &link).unwrap();
    std::fs::rename(&link, &env.proxy.config_path).unwrap();
    env.probe_becomes(403, Duration::from_secs(10)).await;
}
