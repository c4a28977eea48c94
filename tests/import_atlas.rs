//! `claimgate import-atlas DIR` on Atlas App Services exports written from the Atlas
//! documentation's examples: the output must pass `claimgate check` as is (with its `${...}`
//! variables set), carry the provider and user data settings over, and run.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{Claims, EchoUpstream, JwksServer, Proxy, SigningKey, TestConfig, BIN};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!!";

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/atlas")
        .join(case)
}

fn import(dir: &Path) -> Output {
    Command::new(BIN)
        .arg("import-atlas")
        .arg(dir)
        .output()
        .unwrap()
}

/// Imports `case`, checks the output with `claimgate check` (variables set), and returns the
/// YAML text and its parsed form.
fn import_and_check(case: &str) -> (String, Value, tempfile::TempDir) {
    let out = import(&fixture(case));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "import-atlas {case}: {stderr}");
    let yaml = String::from_utf8(out.stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("claimgate.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let check = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .env("JWT_ISSUER", "https://auth.example.com/")
        .env("JWT_SIGNING_KEY", SECRET)
        .env("JWT_SIGNING_KEY_OLD", format!("{SECRET}-old"))
        .env("MONGODB_URI", "mongodb://127.0.0.1:27017/")
        .output()
        .unwrap();
    assert_eq!(
        (
            check.status.code(),
            String::from_utf8_lossy(&check.stdout).trim()
        ),
        (Some(0), "ok"),
        "claimgate check on the import of {case}: {}\n{yaml}",
        String::from_utf8_lossy(&check.stderr)
    );
    let parsed: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    (yaml, parsed, dir)
}

#[test]
fn jwk_uri_provider_is_carried_over() {
    let (yaml, c, _dir) = import_and_check("jwk_uri");
    let p = &c["providers"][0];
    assert_eq!(p["name"], "custom-token");
    assert_eq!(p["issuer"], "${JWT_ISSUER}");
    assert_eq!(
        p["jwks_uri"],
        "https://auth.example.com/.well-known/jwks.json"
    );
    assert_eq!(p["algorithms"], json!(["RS256"]));
    assert_eq!(p["audience"], json!(["myapp-abcde"]));
    assert_eq!(p["require_any_audience"], false);
    assert_eq!(
        p["metadata_fields"],
        json!([
            {"name": "user_data.name", "field_name": "name", "required": true},
            {"name": "user_data.aliases", "field_name": "aliases", "required": false},
            {"name": "https://example\\.com/tenant", "field_name": "tenant", "required": false},
            {"name": "email", "required": false},
        ])
    );
    assert!(c.get("user_data").is_none(), "user data disabled: {yaml}");
    assert!(yaml.contains("does not check `iss`"), "{yaml}");
    assert!(
        yaml.contains("\"anon-user\""),
        "other providers listed: {yaml}"
    );
    assert!(yaml.contains("enabled: false"), "{yaml}");
}

#[test]
fn signing_keys_become_environment_references() {
    let (yaml, c, _dir) = import_and_check("signing_keys");
    let p = &c["providers"][0];
    assert_eq!(p["algorithms"], json!(["HS256"]));
    assert_eq!(
        p["signing_keys"],
        json!(["${JWT_SIGNING_KEY}", "${JWT_SIGNING_KEY_OLD}"])
    );
    assert!(p.get("jwks_uri").is_none());
    assert_eq!(p["audience"], json!(["myapp-abcde", "myapp-staging"]));
    assert_eq!(p["require_any_audience"], true);
    assert_eq!(
        p["metadata_fields"],
        json!([
            {"name": "email", "required": true},
            {"name": "name.firstName", "field_name": "firstName", "required": false},
        ])
    );
    assert!(
        yaml.contains("# Atlas Secret \"jwtSigningKeyOld\""),
        "{yaml}"
    );
    assert!(
        yaml.contains("Not carried over: custom-token.redirect_uris"),
        "{yaml}"
    );
}

#[test]
fn user_creation_function_becomes_a_document_with_its_source_quoted() {
    let (yaml, c, _dir) = import_and_check("user_creation");
    let ud = &c["user_data"];
    assert_eq!(ud["source"], "mongodb");
    assert_eq!(ud["uri"], "${MONGODB_URI}");
    assert_eq!(ud["database"], "AuthExample");
    assert_eq!(ud["collection"], "Users");
    assert_eq!(ud["user_id_field"], "user_id");
    assert_eq!(ud["on_user_creation"], json!({"document": {}}));
    // No audience in Atlas: its default, the App ID, is kept.
    assert_eq!(c["providers"][0]["audience"], json!(["authexample-abcde"]));
    assert!(yaml.contains("Atlas then required the App ID"), "{yaml}");
    assert!(yaml.contains("\"mongodb-atlas\""), "service named: {yaml}");
    let source =
        std::fs::read_to_string(fixture("user_creation/functions/onUserCreation.js")).unwrap();
    for line in source.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            yaml.contains(&format!("#   {line}\n")),
            "function line {line:?} quoted: {yaml}"
        );
    }
    // A disabled Atlas provider is not worth a note; an enabled one is.
    assert!(!yaml.contains("local-userpass"), "{yaml}");
}

/// The generated provider admits a token and maps its metadata as Atlas did. Only the addresses
/// an export cannot know are changed: the JWKS and upstream of this test.
#[tokio::test]
async fn imported_config_admits_a_token_with_mapped_metadata() {
    let (_yaml, mut c, _dir) = import_and_check("jwk_uri");
    let key = SigningKey::rsa("k1", Algorithm::RS256);
    let jwks = JwksServer::start(common::jwks(&[&key])).await;
    let upstream = EchoUpstream::start().await;
    c["providers"][0]["jwks_uri"] = json!(jwks.uri());
    c["upstream"]["url"] = json!(upstream.url());
    let issuer = "https://auth.example.com/";
    let proxy = Proxy::spawn(&TestConfig(c), &[], &[("JWT_ISSUER", issuer)]);
    proxy.wait_ready().await;
    let claims = Claims::new()
        .set("iss", issuer)
        .set("sub", "24601")
        .set("aud", "myapp-abcde")
        .set(
            "user_data",
            json!({"name": "Jean", "aliases": ["M. Madeleine"]}),
        )
        .set("https://example.com/tenant", "acme")
        .set("email", "jean@example.test")
        .exp_in(300);
    let resp = proxy
        .client
        .get(format!("{}/x", proxy.url))
        .bearer_auth(key.sign(&claims))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", proxy.stderr());
    let echo = upstream.requests().pop().unwrap();
    let header = echo.header("x-claimgate-user").unwrap();
    let user: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(user["id"], "24601");
    assert_eq!(
        user["data"],
        json!({"name": "Jean", "aliases": ["M. Madeleine"], "tenant": "acme", "email": "jean@example.test"})
    );

    // `user_data.name` is required, as it was in Atlas.
    let without = claims.remove("user_data");
    let resp = proxy
        .client
        .get(format!("{}/x", proxy.url))
        .bearer_auth(key.sign(&without))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

/// A copy of `case` with `file` replaced by `content` (or removed when `None`).
fn broken(case: &str, file: &str, content: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(case), dir.path());
    let target = dir.path().join(file);
    match content {
        Some(text) => std::fs::write(target, text).unwrap(),
        None => std::fs::remove_file(target).unwrap(),
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

fn assert_import_error(dir: &Path, expected: &str) {
    let out = import(dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {stderr}");
    assert!(out.stdout.is_empty(), "no partial config on stdout");
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in: {stderr}"
    );
}

#[test]
fn missing_providers_file_is_named() {
    let dir = broken("jwk_uri", "auth/providers.json", None);
    assert_import_error(dir.path(), "auth/providers.json: cannot read");
}

#[test]
fn missing_function_source_is_named() {
    let dir = broken("user_creation", "functions/onUserCreation.js", None);
    assert_import_error(
        dir.path(),
        "auth/custom_user_data.json: on_user_creation_function_name: function \"onUserCreation\" not found",
    );
}

#[test]
fn metadata_fields_not_an_array_is_named() {
    let providers = r#"{"custom-token": {"type": "custom-token", "config": {"useJWKURI": true,
        "jwkURI": "https://a.example/jwks.json"}, "metadata_fields": {"name": "email"}}}"#;
    let dir = broken("jwk_uri", "auth/providers.json", Some(providers));
    assert_import_error(
        dir.path(),
        "auth/providers.json: custom-token.metadata_fields: invalid type: map, expected a sequence",
    );
}

/// Older exports hold the providers as an array: the key is then its index.
#[test]
fn jwk_uri_not_a_string_is_named() {
    let providers = r#"[{"name": "anon-user", "type": "anon-user"},
        {"name": "custom-token", "type": "custom-token",
         "config": {"useJWKURI": true, "signingAlgorithm": "RS256", "jwkURI": 42}}]"#;
    let dir = broken("jwk_uri", "auth/providers.json", Some(providers));
    assert_import_error(
        dir.path(),
        "auth/providers.json: [1].config.jwkURI: invalid type: integer `42`, expected a string",
    );
}

#[test]
fn no_custom_token_provider_is_an_error() {
    let providers = r#"{"anon-user": {"name": "anon-user", "type": "anon-user"}}"#;
    let dir = broken("jwk_uri", "auth/providers.json", Some(providers));
    assert_import_error(
        dir.path(),
        "auth/providers.json: no provider of type \"custom-token\"",
    );
}

#[test]
fn enabled_user_data_without_a_collection_is_named() {
    let ud = r#"{"enabled": true, "mongo_service_name": "mongodb-atlas",
        "database_name": "app", "user_id_field": "user_id"}"#;
    let dir = broken("jwk_uri", "auth/custom_user_data.json", Some(ud));
    assert_import_error(
        dir.path(),
        "auth/custom_user_data.json: collection_name: required when enabled is true",
    );
}
