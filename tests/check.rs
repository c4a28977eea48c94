//! `claimgate check --config FILE`: the operator's pre-flight. A broken config must name the file
//! and the exact key, so the fix is obvious without reading the source.

mod common;

use common::BIN;
use std::path::Path;
use std::process::{Command, Output};

const GOOD: &str = r#"
listen: 127.0.0.1:18080
upstream: { url: "http://127.0.0.1:18081", timeout_ms: 30000 }
admin: { listen: "127.0.0.1:19901" }
max_token_bytes: 8192
providers:
  - name: test
    issuer: "https://issuer.test"
    jwks_uri: "http://127.0.0.1:18082/jwks.json"
    audience: ["api"]
    require_any_audience: false
    algorithms: ["RS256", "PS256", "ES256", "EdDSA"]
    clock_skew_seconds: 60
    user_id_claim: sub
    jwks_min_refresh_seconds: 1
    jwks_refresh_seconds: 300
    token_from: [ {header: Authorization}, {cookie: access_token}, {query: access_token} ]
    metadata_fields:
      - { name: "user.name", field_name: "name", required: true }
      - { name: "email", required: false }
forward:
  headers:
    X-User-Id: "%%user.id"
    X-User-Name: "%%user.data.name"
    X-User-Roles: { from: "%%token.realm_access.roles", encoding: csv, required: false }
  user_header: X-Claimgate-User
  pass_authorization: true
"#;

/// Runs `claimgate check` on `yaml` written to a temp file; the variable NOPE is never set.
fn check(yaml: &str) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("NOPE")
        .output()
        .unwrap();
    (out, dir)
}

fn assert_config_error(yaml: &str, key: &str, reason_part: &str) {
    let (out, dir) = check(yaml);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {stderr}");
    let file = dir.path().join("broken.yaml");
    assert!(
        stderr.contains(&*file.to_string_lossy()),
        "stderr must name the file {}: {stderr}",
        file.display()
    );
    assert!(stderr.contains(key), "stderr must name {key}: {stderr}");
    assert!(
        stderr.contains(reason_part),
        "stderr must say why ({reason_part}): {stderr}"
    );
}

#[test]
fn good_config_prints_ok() {
    let (out, _dir) = check(GOOD);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check failed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn good_hmac_config_with_env_secret_prints_ok() {
    let yaml = GOOD.replace(
        r#"jwks_uri: "http://127.0.0.1:18082/jwks.json""#,
        r#"signing_keys: ["${CLAIMGATE_TEST_SECRET}"]"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hmac.yaml");
    std::fs::write(
        &path,
        yaml.replace("\"RS256\", \"PS256\", \"ES256\", \"EdDSA\"", "HS256"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .env("CLAIMGATE_TEST_SECRET", "s".repeat(40))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check failed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn unknown_key_is_named() {
    let yaml = GOOD.replace("jwks_uri:", "jwks_url:");
    assert_config_error(&yaml, "providers[0].jwks_url", "jwks_url");
}

#[test]
fn missing_environment_variable_is_named() {
    let yaml = GOOD.replace(
        r#"jwks_uri: "http://127.0.0.1:18082/jwks.json""#,
        r#"signing_keys: ["${NOPE}"]"#,
    );
    assert_config_error(&yaml, "providers[0].signing_keys[0]", "NOPE");
}

#[test]
fn jwks_uri_and_signing_keys_together_are_refused() {
    let yaml = GOOD.replace(
        r#"jwks_uri: "http://127.0.0.1:18082/jwks.json""#,
        "jwks_uri: \"http://127.0.0.1:18082/jwks.json\"\n    signing_keys: [\"0123456789abcdef0123456789abcdef\"]",
    );
    assert_config_error(&yaml, "providers[0].jwks_uri", "signing_keys");
}

#[test]
fn running_with_a_broken_config_fails_fast_with_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, GOOD.replace("jwks_uri:", "jwks_url:")).unwrap();
    let out = run_with_timeout(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a broken config");
    assert!(stderr.contains("providers[0].jwks_url"), "{stderr}");
}

/// Runs the proxy itself (not `check`); kills it after 10 s so a proxy that wrongly starts
/// cannot hang the test run.
fn run_with_timeout(config: &Path) -> Output {
    let child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        // Only kill if the child is still ours and running: a send means it was reaped.
        if finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .is_err()
        {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    out
}
