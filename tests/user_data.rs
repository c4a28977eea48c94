//! Custom user data from MongoDB through the real binary: forwarded headers and the user header,
//! Atlas' duplicate rules, live updates and deletes, blocked/expired users, user creation and the
//! custom_data size limit.

mod common;

use common::*;
use futures_util::future::join_all;
use mongodb::bson::{doc, oid::ObjectId, DateTime};
use serde_json::json;
use std::time::{Duration, SystemTime};

async fn mongo_env(configure: impl FnOnce(TestConfig) -> TestConfig) -> UdEnv {
    UdEnv::mongo(TestDb::shared().await, configure).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_data_reaches_forward_headers_and_the_user_header() {
    let env =
        mongo_env(|c| c.set("/forward/headers/X-Tier", "%%user.custom_data.profile.tier")).await;
    env.db()
        .insert_user(doc! {
            "user_id": "alice", "userGroup": "staff", "canRead": true,
            "profile": {"tier": "gold", "seats": 3},
        })
        .await;

    let resp = env
        .proxy
        .get("/api")
        .bearer_auth(env.token("alice"))
        .header("X-User-Group", "root")
        .send()
        .await
        .unwrap();
    let echo = expect_echo(resp).await;
    assert_eq!(echo.header("x-user-id"), Some("alice"));
    assert_eq!(echo.header("x-user-group"), Some("staff"));
    assert_eq!(echo.header("x-tier"), Some("gold"));
    let user = decode_user_header(echo.header("x-claimgate-user").unwrap());
    assert_eq!(user["id"], "alice");
    assert_eq!(user["provider"], "test");
    assert_eq!(user["data"]["email"], "alice@example.test");
    let custom = &user["custom_data"];
    assert_eq!(custom["userGroup"], "staff", "user header: {user}");
    assert_eq!(custom["canRead"], true, "user header: {user}");
    assert_eq!(custom["profile"], json!({"tier": "gold", "seats": 3}));
    assert_eq!(custom["user_id"], "alice", "user header: {user}");

    // A user without a document: no custom header, and the client's copy does not get through.
    let resp = env
        .proxy
        .get("/")
        .bearer_auth(env.token("nobody"))
        .header("X-User-Group", "root")
        .header("X-Tier", "platinum")
        .send()
        .await
        .unwrap();
    let echo = expect_echo(resp).await;
    assert_eq!(echo.header("x-user-id"), Some("nobody"));
    assert!(!echo.has_header("x-user-group"), "{:?}", echo.headers);
    assert!(!echo.has_header("x-tier"), "{:?}", echo.headers);
    assert_no_custom_fields(&custom_data(&echo));

    // alice twice more: at least the second comes from the cache (a late change event for her
    // insert may still evict the first). The ratio gauge agrees with the counters.
    for _ in 0..2 {
        assert_eq!(env.get_as("alice", "/api").await.status(), 200);
    }
    let metrics = env.proxy.metrics().await;
    let value = |name| metric(&metrics, name, &[]).unwrap_or_else(|| panic!("{name}: {metrics}"));
    let hits = value("claimgate_user_data_cache_hits_total");
    let misses = value("claimgate_user_data_cache_misses_total");
    assert!(hits >= 1.0 && misses >= 2.0, "hits {hits}, misses {misses}");
    let ratio = value("claimgate_user_data_cache_hit_ratio");
    assert!(
        (ratio - hits / (hits + misses)).abs() < 1e-9,
        "hit ratio {ratio}"
    );
}

/// A user without a document has no custom data: `custom_data` is absent, null or `{}`.
fn assert_no_custom_fields(custom: &serde_json::Value) {
    let empty = custom.is_null() || custom.as_object().is_some_and(|m| m.is_empty());
    assert!(empty, "expected no custom data, got {custom}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_documents_first_inserted_wins_and_a_string_id_beats_an_object_id() {
    let env = mongo_env(|c| c).await;
    let db = env.db();
    db.insert_user(doc! {"user_id": "dup", "userGroup": "first"})
        .await;
    db.insert_user(doc! {"user_id": "dup", "userGroup": "second"})
        .await;
    db.insert_user(doc! {"user_id": "dup", "userGroup": "third"})
        .await;
    assert_eq!(
        env.echo_as("dup").await.header("x-user-group"),
        Some("first")
    );

    // 24 hex digits: the id matches both a string and an ObjectId. The ObjectId document is older
    // (lower _id), and still the string-typed match wins.
    let oid = ObjectId::new();
    let hex = oid.to_hex();
    db.insert_user(doc! {"user_id": oid, "userGroup": "object-id"})
        .await;
    db.insert_user(doc! {"user_id": hex.as_str(), "userGroup": "string"})
        .await;
    let echo = env.echo_as(&hex).await;
    assert_eq!(echo.header("x-user-id"), Some(hex.as_str()));
    assert_eq!(echo.header("x-user-group"), Some("string"));

    // With only an ObjectId-typed document, that one is the user's.
    let only = ObjectId::new();
    db.insert_user(doc! {"user_id": only, "userGroup": "object-id-only"})
        .await;
    let echo = env.echo_as(&only.to_hex()).await;
    assert_eq!(echo.header("x-user-group"), Some("object-id-only"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_or_delete_is_seen_by_the_next_requests() {
    let env = mongo_env(|c| c).await;
    let users = env.db().users();
    env.db()
        .insert_user(doc! {"user_id": "alice", "userGroup": "v1"})
        .await;
    let echo = env.echo_as("alice").await;
    assert_eq!(echo.header("x-user-group"), Some("v1"));

    let filter = doc! {"user_id": "alice"};
    let set_v2 = doc! {"$set": {"userGroup": "v2", "extra": 1}};
    users.update_one(filter.clone(), set_v2).await.unwrap();
    let took = wait_for_group(&env, "alice", Some("v2"), SEEN_WITHIN).await;
    eprintln!("update seen after {took:?}");
    let custom = custom_data(&env.echo_as("alice").await);
    assert_eq!(custom["extra"], 1, "custom_data after the update: {custom}");

    users.delete_one(filter).await.unwrap();
    let took = wait_for_group(&env, "alice", None, SEEN_WITHIN).await;
    eprintln!("delete seen after {took:?}");
    assert_no_custom_fields(&custom_data(&env.echo_as("alice").await));

    // A document inserted later for a user the proxy already knows as "none" is picked up too.
    env.db()
        .insert_user(doc! {"user_id": "alice", "userGroup": "v3"})
        .await;
    wait_for_group(&env, "alice", Some("v3"), SEEN_WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_user_data_refuses_users_without_a_document() {
    let env = mongo_env(|c| c.set("/user_data/required", true)).await;
    let resp = env.get_as("ghost", "/").await;
    let body = expect_reject(resp, 403, "no_user_data").await;
    assert_eq!(body["error"], "insufficient_scope", "body: {body}");
    assert!(env.upstream.requests().is_empty());

    env.db()
        .insert_user(doc! {"user_id": "ghost", "userGroup": "found"})
        .await;
    wait_for_group(&env, "ghost", Some("found"), SEEN_WITHIN).await;

    env.db()
        .users()
        .delete_one(doc! {"user_id": "ghost"})
        .await
        .unwrap();
    wait_for_status(&env, "ghost", 403, "no_user_data", SEEN_WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_and_expired_users_are_refused() {
    let env = mongo_env(|c| c).await;
    let day = Duration::from_secs(86_400);
    let past = DateTime::from_system_time(SystemTime::now() - day);
    let future = DateTime::from_system_time(SystemTime::now() + day);
    for document in [
        doc! {"user_id": "blocked", "blocked": true, "userGroup": "b"},
        doc! {"user_id": "unblocked", "blocked": false, "userGroup": "u"},
        doc! {"user_id": "expired", "expirationDate": past, "userGroup": "e"},
        doc! {"user_id": "current", "expirationDate": future, "userGroup": "c"},
    ] {
        env.db().insert_user(document).await;
    }
    expect_reject(env.get_as("blocked", "/").await, 403, "user_blocked").await;
    expect_reject(env.get_as("expired", "/").await, 403, "user_expired").await;
    let echo = env.echo_as("unblocked").await;
    assert_eq!(echo.header("x-user-group"), Some("u"));
    let echo = env.echo_as("current").await;
    assert_eq!(echo.header("x-user-group"), Some("c"));
    assert_eq!(env.upstream.requests().len(), 2);

    // Unblocking is a document update like any other.
    env.db()
        .users()
        .update_one(
            doc! {"user_id": "blocked"},
            doc! {"$set": {"blocked": false}},
        )
        .await
        .unwrap();
    wait_for_group(&env, "blocked", Some("b"), SEEN_WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_create_exactly_one_document() {
    let env = mongo_env(|c| {
        c.set(
            "/user_data/on_user_creation",
            json!({"document": {"roles": ["reader"], "userGroup": "new"}}),
        )
    })
    .await;
    let token = env.token("newbie");
    let requests = (0..50).map(|_| env.proxy.get_with_token("/", &token));
    let responses = join_all(requests).await;
    for resp in responses {
        let echo = expect_echo(resp).await;
        assert_eq!(echo.header("x-user-group"), Some("new"));
        let custom = custom_data(&echo);
        assert_eq!(custom["roles"], json!(["reader"]), "custom_data: {custom}");
        assert_eq!(custom["user_id"], "newbie", "custom_data: {custom}");
    }

    let users = env.db().users();
    let stored: Vec<_> = {
        use futures_util::TryStreamExt;
        let cursor = users.find(doc! {"user_id": "newbie"}).await.unwrap();
        cursor.try_collect().await.unwrap()
    };
    assert_eq!(stored.len(), 1, "documents for newbie: {stored:?}");
    assert_eq!(stored[0].get_str("userGroup").unwrap(), "new");
    let roles = stored[0].get_array("roles").unwrap();
    assert_eq!(roles.len(), 1, "{stored:?}");
    assert_eq!(users.count_documents(doc! {}).await.unwrap(), 1);
    let created = env.counter("claimgate_user_data_users_created_total").await;
    assert_eq!(created, 1.0);

    // A user that already has a document is not touched.
    env.db()
        .insert_user(doc! {"user_id": "old", "userGroup": "existing"})
        .await;
    let echo = env.echo_as("old").await;
    assert_eq!(echo.header("x-user-group"), Some("existing"));
    assert_eq!(users.count_documents(doc! {}).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_custom_data_is_left_out_of_the_user_header() {
    let env = mongo_env(|c| c.set("/user_data/custom_data_max_bytes", 512)).await;
    let oversize = "claimgate_user_data_custom_data_oversize_total";
    env.db()
        .insert_user(doc! {"user_id": "big", "userGroup": "g-big", "blob": "x".repeat(2000)})
        .await;
    env.db()
        .insert_user(doc! {"user_id": "small", "userGroup": "g-small"})
        .await;

    let echo = env.echo_as("small").await;
    assert_eq!(custom_data(&echo)["userGroup"], "g-small");
    assert_eq!(env.counter(oversize).await, 0.0);

    let echo = env.echo_as("big").await;
    // Headers mapped from the document still work; only the user header leaves it out.
    assert_eq!(echo.header("x-user-group"), Some("g-big"));
    let user = decode_user_header(echo.header("x-claimgate-user").unwrap());
    assert_eq!(user["id"], "big");
    assert!(
        user.get("custom_data").is_none(),
        "custom_data should be left out: {user}"
    );
    assert_eq!(env.counter(oversize).await, 1.0);
}
