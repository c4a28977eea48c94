//! The `file` user data source: a JSON or YAML array of documents, watched for changes.

mod common;

use common::*;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// The file source polls; the contract says an edit shows within about 1-2 s.
const FILE_SEEN_WITHIN: Duration = Duration::from_secs(3);

fn write_json(path: &Path, users: serde_json::Value) {
    std::fs::write(path, serde_json::to_vec_pretty(&users).unwrap()).unwrap();
}

/// Replaces the file the way editors and config management do: write a sibling, then rename.
fn replace_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_file_users_and_live_edits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.json");
    write_json(
        &path,
        json!([
            {"user_id": "alice", "userGroup": "v1", "profile": {"tier": "gold"}},
            {"user_id": "bob", "userGroup": "b", "blocked": true},
            {"user_id": "carol", "userGroup": "c", "expirationDate": "2001-01-01T00:00:00Z"},
        ]),
    );
    let section = file_section(&path);
    let env = UdEnv::file(|c| c.set("/user_data", section)).await;

    let echo = env.echo_as("alice").await;
    assert_eq!(echo.header("x-user-group"), Some("v1"));
    let custom = custom_data(&echo);
    assert_eq!(
        custom["profile"],
        json!({"tier": "gold"}),
        "custom_data: {custom}"
    );
    expect_reject(env.get_as("bob", "/").await, 403, "user_blocked").await;
    expect_reject(env.get_as("carol", "/").await, 403, "user_expired").await;
    let echo = env.echo_as("dave").await;
    assert!(!echo.has_header("x-user-group"), "{:?}", echo.headers);

    // Edit in place: change a field, unblock bob, add dave.
    write_json(
        &path,
        json!([
            {"user_id": "alice", "userGroup": "v2", "profile": {"tier": "gold"}},
            {"user_id": "bob", "userGroup": "b", "blocked": false},
            {"user_id": "carol", "userGroup": "c", "expirationDate": "2001-01-01T00:00:00Z"},
            {"user_id": "dave", "userGroup": "d"},
        ]),
    );
    let took = wait_for_group(&env, "alice", Some("v2"), FILE_SEEN_WITHIN).await;
    eprintln!("in-place edit seen after {took:?}");
    wait_for_group(&env, "bob", Some("b"), FILE_SEEN_WITHIN).await;
    wait_for_group(&env, "dave", Some("d"), FILE_SEEN_WITHIN).await;

    // Replace by rename: alice changes again, dave is gone.
    let replaced = json!([
        {"user_id": "alice", "userGroup": "v3"},
        {"user_id": "bob", "userGroup": "b"},
    ]);
    replace_atomically(&path, &replaced.to_string());
    let took = wait_for_group(&env, "alice", Some("v3"), FILE_SEEN_WITHIN).await;
    eprintln!("replace-by-rename seen after {took:?}");
    wait_for_group(&env, "dave", None, FILE_SEEN_WITHIN).await;
    let custom = custom_data(&env.echo_as("alice").await);
    assert!(
        custom.get("profile").is_none(),
        "stale custom_data: {custom}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_file_with_required_user_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.yaml");
    std::fs::write(
        &path,
        "- user_id: alice\n  userGroup: yaml\n  roles: [reader]\n",
    )
    .unwrap();
    let mut section = file_section(&path);
    section["required"] = json!(true);
    let env = UdEnv::file(|c| c.set("/user_data", section)).await;

    let echo = env.echo_as("alice").await;
    assert_eq!(echo.header("x-user-group"), Some("yaml"));
    assert_eq!(custom_data(&echo)["roles"], json!(["reader"]));
    expect_reject(env.get_as("erin", "/").await, 403, "no_user_data").await;

    std::fs::write(
        &path,
        "- user_id: alice\n  userGroup: yaml\n- user_id: erin\n  userGroup: added\n",
    )
    .unwrap();
    let took = wait_for_group(&env, "erin", Some("added"), FILE_SEEN_WITHIN).await;
    eprintln!("added user seen after {took:?}");
    assert_eq!(env.upstream.requests().len(), 2);
}
