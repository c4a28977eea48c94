//! The MongoDB source against the shared test server.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_id_is_found_and_cached() {
    let t = TestDb::new().await;
    t.users()
        .insert_one(doc! { "user_id": "alice", "name": "Alice", "at": DateTime::from_millis(0) })
        .await
        .unwrap();
    let r = Running::start(&t.config(json!({}))).await;
    let alice = r.doc("alice").await.unwrap();
    assert_eq!(alice["name"], "Alice");
    assert_eq!(alice["at"], "1970-01-01T00:00:00Z");
    assert!(alice["_id"].is_string(), "ObjectId becomes hex: {alice}");
    assert_eq!(r.doc("nobody").await, None);
    r.doc("alice").await;
    r.doc("nobody").await;
    assert_eq!(r.metrics.cache_misses.get(), 2);
    assert_eq!(
        r.metrics.cache_hits.get(),
        2,
        "negative entries are cached too"
    );
    assert_eq!(r.data.cache_entries(), 2);
    r.stop().await;
    t.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_follow_atlas_rules() {
    let t = TestDb::new().await;
    let hex = "64b7f0c2a1b2c3d4e5f60718";
    let oid = ObjectId::parse_str(hex).unwrap();
    let users = t.users();
    users
        .insert_one(doc! { "user_id": oid, "n": 1 })
        .await
        .unwrap();
    users
        .insert_one(doc! { "user_id": hex, "n": 2 })
        .await
        .unwrap();
    users
        .insert_one(doc! { "user_id": hex, "n": 3 })
        .await
        .unwrap();
    users
        .insert_one(doc! { "user_id": "bob", "n": 4 })
        .await
        .unwrap();
    users
        .insert_one(doc! { "user_id": "bob", "n": 5 })
        .await
        .unwrap();
    let other = ObjectId::new();
    users
        .insert_one(doc! { "user_id": other, "n": 6 })
        .await
        .unwrap();
    let r = Running::start(&t.config(json!({}))).await;
    assert_eq!(r.doc(hex).await.unwrap()["n"], 2, "string beats ObjectId");
    assert_eq!(r.doc("bob").await.unwrap()["n"], 4, "first inserted wins");
    let d = r.doc(&other.to_hex()).await.unwrap();
    assert_eq!(d["n"], 6, "ObjectId-typed id matches");
    assert_eq!(d["user_id"], other.to_hex());
    r.stop().await;
    t.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_the_cache_through_the_change_stream() {
    let t = TestDb::new().await;
    let users = t.users();
    users
        .insert_one(doc! { "user_id": "u1", "plan": "free" })
        .await
        .unwrap();
    let r = Running::start(&t.config(json!({ "cache": { "ttl_seconds": 3600 } }))).await;
    assert_eq!(r.doc("u1").await.unwrap()["plan"], "free");

    users
        .update_one(doc! { "user_id": "u1" }, doc! { "$set": { "plan": "pro" } })
        .await
        .unwrap();
    let took = r
        .eventually("u1", |rec| field(rec, "plan") == Some(json!("pro")))
        .await;
    assert!(took < Duration::from_secs(1), "update took {took:?}");

    users
        .replace_one(
            doc! { "user_id": "u1" },
            doc! { "user_id": "u1", "plan": "team" },
        )
        .await
        .unwrap();
    r.eventually("u1", |rec| field(rec, "plan") == Some(json!("team")))
        .await;

    users.delete_one(doc! { "user_id": "u1" }).await.unwrap();
    let took = r.eventually("u1", |rec| rec.document.is_none()).await;
    assert!(took < Duration::from_secs(1), "delete took {took:?}");

    // The negative entry just cached must give way to an insert.
    users
        .insert_one(doc! { "user_id": "u1", "plan": "back" })
        .await
        .unwrap();
    r.eventually("u1", |rec| field(rec, "plan") == Some(json!("back")))
        .await;
    assert!(r.metrics.change_events.get() >= 4);
    r.stop().await;
    t.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_is_created_exactly_once() {
    let t = TestDb::new().await;
    t.users().drop_indexes().await.unwrap();
    t.index("users", "user_id", true).await;
    let cfg = t.config(json!({ "on_user_creation": { "document": { "roles": ["reader"] } } }));
    // Several instances, as several replicas of the sidecar would be, each with many requests.
    let mut instances = Vec::new();
    for _ in 0..5 {
        instances.push(Running::start(&cfg).await);
    }
    let mut lookups = Vec::new();
    for i in 0..50 {
        let data = instances[i % instances.len()].data.clone();
        lookups.push(tokio::spawn(async move { data.lookup("newbie").await }));
    }
    for lookup in lookups {
        let record = lookup.await.unwrap().unwrap();
        let doc = record
            .document
            .as_ref()
            .expect("the record includes the new document")
            .to_value();
        assert_eq!(doc["roles"], json!(["reader"]));
        assert_eq!(doc["user_id"], "newbie");
    }
    let count = t
        .users()
        .count_documents(doc! { "user_id": "newbie" })
        .await
        .unwrap();
    assert_eq!(count, 1);
    let created: u64 = instances
        .iter()
        .map(|r| r.metrics.users_created.get())
        .sum();
    assert_eq!(created, 1);
    for r in instances {
        r.stop().await;
    }
    t.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_and_expired_flags() {
    let t = TestDb::new().await;
    let past = DateTime::from_millis(1_000_000);
    let future = DateTime::from_millis(4_102_444_800_000);
    let users = t.users();
    users
        .insert_one(doc! { "user_id": "ok", "blocked": false, "expirationDate": future })
        .await
        .unwrap();
    users
        .insert_one(doc! { "user_id": "blk", "blocked": true })
        .await
        .unwrap();
    users
        .insert_one(doc! { "user_id": "old", "expirationDate": past })
        .await
        .unwrap();
    users
        .insert_one(doc! { "user_id": "old2", "expirationDate": "2001-02-03T04:05:06Z" })
        .await
        .unwrap();
    users
        .insert_one(doc! { "user_id": "old3", "expirationDate": 1_000_i64 })
        .await
        .unwrap();
    let cfg = t.config(json!({
        "blocked_field": "blocked", "expiration_field": "expirationDate", "required": true
    }));
    let r = Running::start(&cfg).await;
    let check = |user: &'static str| {
        let r = &r;
        async move {
            let record = r.data.lookup(user).await.unwrap();
            r.data.admit(&record).map_err(|e| e.code())
        }
    };
    assert_eq!(check("ok").await, Ok(()));
    assert_eq!(check("blk").await, Err("user_blocked"));
    assert_eq!(check("old").await, Err("user_expired"));
    assert_eq!(check("old2").await, Err("user_expired"));
    assert_eq!(check("old3").await, Err("user_expired"));
    assert_eq!(check("ghost").await, Err("no_user_data"));
    r.stop().await;
    t.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_resolve_to_permissions() {
    let t = TestDb::new().await;
    t.index("roles", "roleId", true).await;
    let roles = t.db.collection::<Document>("roles");
    roles
        .insert_one(doc! { "roleId": "reader", "permissions": ["read"] })
        .await
        .unwrap();
    roles
        .insert_one(doc! { "roleId": "writer", "permissions": ["read", "write"] })
        .await
        .unwrap();
    t.users()
        .insert_one(doc! { "user_id": "w", "roles": ["writer", "reader", "unknown"] })
        .await
        .unwrap();
    let r = Running::start(&t.config(json!({ "roles": { "collection": "roles" } }))).await;
    let w = r.data.lookup("w").await.unwrap();
    assert_eq!(w.permissions.as_deref(), Some(&json!(["read", "write"])));
    let nobody = r.data.lookup("nobody").await.unwrap();
    assert_eq!(nobody.permissions.as_deref(), Some(&json!([])));

    roles
        .update_one(
            doc! { "roleId": "reader" },
            doc! { "$push": { "permissions": "list" } },
        )
        .await
        .unwrap();
    r.eventually("w", |rec| {
        rec.permissions.as_deref() == Some(&json!(["read", "write", "list"]))
    })
    .await;
    r.stop().await;
    t.drop().await;
}
