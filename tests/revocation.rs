//! Revocation (issue 11) through the real binary: two claimgate processes on one MongoDB, with
//! tokens they have already verified and cached. `tokens_valid_after` on the user's document and
//! a `jti` in the revocation collection each reach both within a second, through the change
//! streams; newer tokens and other tokens keep working; the config is checked up front.

mod common;

use common::revocation::{Pair, WITHIN};
use common::*;
use mongodb::bson::{doc, DateTime};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, SystemTime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_valid_after_logs_a_user_out_of_every_instance() {
    let pair = Pair::start(async |db: &TestDb| {
        db.insert_user(doc! {"user_id": "alice", "userGroup": "staff"})
            .await;
    })
    .await;
    let issued = keys::now() - 30;
    let old = pair.token(Claims::new().set("iat", issued));
    let no_iat = pair.token(Claims::new().remove("iat"));
    pair.accepted_by_both(&old).await;
    pair.accepted_by_both(&no_iat).await;

    // "Log out everywhere": the instant is now, as an Atlas function would store it.
    let instant = DateTime::now();
    pair.db
        .users()
        .update_one(
            doc! {"user_id": "alice"},
            doc! {"$set": {"tokensValidAfter": instant}},
        )
        .await
        .unwrap();
    let took = pair.wait_both(&old, 401, "token_revoked").await;
    eprintln!("tokens_valid_after seen by both after at most {took:?}");
    pair.refused_by_both(&old).await;
    // Without `iat` a token cannot show it is newer: refused too.
    pair.refused_by_both(&no_iat).await;

    // A token issued after the instant (iat in whole seconds, rounded up past it) is accepted.
    let after = instant.timestamp_millis().div_euclid(1000) + 1;
    let fresh = pair.token(Claims::new().set("iat", after));
    pair.accepted_by_both(&fresh).await;
    // Another user is not affected.
    pair.accepted_by_both(&pair.token(Claims::new().set("sub", "bob").set("iat", issued)))
        .await;

    for i in 0..2 {
        let by_check = pair
            .metric(
                i,
                "claimgate_token_revoked_total",
                &[("check", "tokens_valid_after")],
            )
            .await;
        let by_reason = pair
            .metric(
                i,
                "claimgate_requests_total",
                &[("outcome", "token_revoked")],
            )
            .await;
        assert!(
            by_check >= 2.0 && by_reason >= by_check,
            "proxy {i}: {by_check}, {by_reason}"
        );
    }

    // Clearing the field (null) lifts it: the old token works again.
    pair.db
        .users()
        .update_one(
            doc! {"user_id": "alice"},
            doc! {"$set": {"tokensValidAfter": null}},
        )
        .await
        .unwrap();
    pair.wait_both(&old, 200, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_valid_after_as_epoch_seconds_and_unreadable_values() {
    let now = keys::now();
    let pair = Pair::start(async |db: &TestDb| {
        db.insert_user(doc! {"user_id": "secs", "tokensValidAfter": now - 10})
            .await;
        db.insert_user(doc! {"user_id": "typo", "tokensValidAfter": "not a date"})
            .await;
    })
    .await;
    let token = |sub: &str, iat: i64| pair.token(Claims::new().set("sub", sub).set("iat", iat));
    pair.refused_by_both(&token("secs", now - 20)).await;
    pair.accepted_by_both(&token("secs", now - 10)).await;
    // A value that is not a date fails closed: every token of that user is refused.
    pair.refused_by_both(&token("typo", now)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_jti_is_refused_by_every_instance() {
    let in_an_hour = DateTime::from_system_time(SystemTime::now() + Duration::from_secs(3600));
    let pair = Pair::start(async |db: &TestDb| {
        // Listed before the proxies start: the first full read has it.
        db.coll("revoked")
            .insert_one(doc! {"jti": "listed-early", "expiresAt": in_an_hour})
            .await
            .unwrap();
    })
    .await;
    let with_jti = |jti: &str| pair.token(Claims::new().set("sub", "carol").set("jti", jti));
    pair.refused_by_both(&with_jti("listed-early")).await;

    let token = with_jti("t-1");
    let other = with_jti("t-2");
    let without = pair.token(Claims::new().set("sub", "carol"));
    pair.accepted_by_both(&token).await;
    pair.accepted_by_both(&other).await;

    let revoked = pair.db.coll("revoked");
    revoked
        .insert_one(doc! {"jti": "t-1", "expiresAt": in_an_hour})
        .await
        .unwrap();
    let took = pair.wait_both(&token, 401, "token_revoked").await;
    eprintln!("jti revocation seen by both after at most {took:?}");
    pair.refused_by_both(&token).await;
    pair.accepted_by_both(&other).await;
    pair.accepted_by_both(&without).await;
    for i in 0..2 {
        let by_check = pair
            .metric(i, "claimgate_token_revoked_total", &[("check", "jti")])
            .await;
        assert!(by_check >= 3.0, "proxy {i}: {by_check}");
        let entries = pair.metric(i, "claimgate_revocation_entries", &[]).await;
        assert_eq!(entries, 2.0, "proxy {i}");
    }

    // The list follows deletes too: the entry goes, the token works again.
    revoked.delete_one(doc! {"jti": "t-1"}).await.unwrap();
    pair.wait_both(&token, 200, "").await;
    // An entry already past its expiry lists nothing (its tokens are expired anyway).
    let past = DateTime::from_system_time(SystemTime::now() - Duration::from_secs(60));
    revoked
        .insert_one(doc! {"jti": "t-2", "expiresAt": past})
        .await
        .unwrap();
    revoked.insert_one(doc! {"jti": "marker"}).await.unwrap();
    pair.wait_both(&with_jti("marker"), 401, "token_revoked")
        .await;
    pair.accepted_by_both(&other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_keeps_the_last_list_or_refuses_as_on_unavailable_says() {
    let server = tokio::task::spawn_blocking(MongoServer::dedicated)
        .await
        .unwrap();
    let db = TestDb::on(&server.uri()).await;
    let policy = |i| if i == 0 { "serve_cached" } else { "deny" };
    let pair = Pair::on(
        db,
        |i, c| {
            c.set("/user_data/timeout_ms", 1000)
                .set("/user_data/on_unavailable", policy(i))
        },
        async |db: &TestDb| {
            db.coll("revoked")
                .insert_one(doc! {"jti": "listed"})
                .await
                .unwrap();
        },
    )
    .await;
    let with_jti = |jti: &str| pair.token(Claims::new().set("sub", "carol").set("jti", jti));
    let (listed, ok) = (with_jti("listed"), with_jti("ok"));
    let plain = pair.token(Claims::new().set("sub", "carol"));
    pair.refused_by_both(&listed).await;
    pair.accepted_by_both(&ok).await;
    pair.accepted_by_both(&plain).await;
    let [cached, deny] = &pair.proxies;

    server.stop().await;
    // serve_cached: the last known list keeps being applied.
    expect_reject(
        cached.get_with_token("/", &listed).await,
        401,
        "token_revoked",
    )
    .await;
    expect_echo(cached.get_with_token("/", &ok).await).await;
    // deny: once the stream has been down past timeout_ms, an unlisted jti cannot be vouched
    // for; a listed one is still revoked, and a token without jti is not the list's business.
    let (_, took) = poll(WITHIN, "deny refusing an unlisted jti", || async {
        let resp = deny.get_with_token("/", &ok).await;
        let got = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        if got == 503 && text.contains("revocation_unavailable") {
            Ok(())
        } else {
            Err(format!("status {got}: {text}"))
        }
    })
    .await;
    eprintln!("deny refused an unlisted jti {took:?} after the stop returned");
    let resp = deny.get_with_token("/", &ok).await;
    assert!(resp.headers().contains_key("retry-after"));
    expect_reject(resp, 503, "revocation_unavailable").await;
    expect_reject(
        deny.get_with_token("/", &listed).await,
        401,
        "token_revoked",
    )
    .await;
    expect_echo(deny.get_with_token("/", &plain).await).await;
    expect_echo(cached.get_with_token("/", &ok).await).await;

    // No restart here: the test server comes back empty and silently accepts the old resume
    // token without replaying anything to it (a real replica set keeps its oplog, or refuses the
    // token, which starts a new stream and a full read). Back up only so the test database can be
    // dropped.
    server.restart().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forward_auth_door_refuses_revoked_tokens_too() {
    let db = TestDb::shared().await;
    db.index("users", "user_id").await;
    let now = keys::now();
    let after = DateTime::from_millis((now - 10) * 1000);
    db.insert_user(doc! {"user_id": "alice", "tokensValidAfter": after})
        .await;
    db.coll("revoked")
        .insert_one(doc! {"jti": "gone"})
        .await
        .unwrap();
    let mut section = mongo_section(&db.name);
    section["uri"] = json!(db.uri);
    let env = front::setup("x_forwarded", |c| {
        c.set("/user_data", section)
            .set("/user_data/tokens_valid_after_field", "tokensValidAfter")
            .set("/revocation", json!({"collection": "revoked"}))
    })
    .await;
    let ask = async |claims: Claims| {
        let mut headers = front::traefik("GET", "/api/x");
        headers.push(format!("Authorization: Bearer {}", env.key.sign(&claims)));
        raw::request(&env.claimgate.url, "GET", "/", &headers).await
    };
    let refused = |resp: &raw::RawResponse| {
        assert_eq!(resp.status, 401, "{resp:?}");
        assert!(
            resp.body.contains("\"reason\":\"token_revoked\""),
            "{resp:?}"
        );
        let challenge = resp.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\""),
            "{resp:?}"
        );
    };
    refused(&ask(Claims::new().set("iat", now - 20)).await);
    assert_eq!(ask(Claims::new().set("iat", now)).await.status, 200);
    refused(&ask(Claims::new().set("sub", "bob").set("jti", "gone")).await);
    let resp = ask(Claims::new().set("sub", "bob").set("jti", "kept")).await;
    assert_eq!(resp.status, 200, "{resp:?}");
}

/// `claimgate check` on the harness config with `patch` applied.
fn check(patch: impl FnOnce(TestConfig) -> TestConfig) -> (i32, String) {
    let config = patch(TestConfig::jwks(
        "http://127.0.0.1:9",
        "http://127.0.0.1:9/jwks",
    ));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revocation.yaml");
    std::fs::write(&path, config.yaml()).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .env("MONGODB_URI", "mongodb://127.0.0.1:9/")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let named = stderr.contains(&*path.to_string_lossy());
    assert!(named || out.status.success(), "names the file: {stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn revocation_config_errors_name_the_key() {
    let list = json!({"collection": "revoked"});
    let cases = [
        (
            check(|c| c.set("/revocation", list.clone())),
            "revocation",
            "source: mongodb",
        ),
        (
            check(|c| {
                c.set(
                    "/user_data",
                    json!({"source": "file", "path": "/nonexistent.json"}),
                )
                .set("/revocation", list.clone())
            }),
            "revocation",
            "source: mongodb",
        ),
        (
            check(|c| {
                c.set("/user_data", mongo_section("db")).set(
                    "/revocation",
                    json!({"collection": "revoked", "max_entries": 0}),
                )
            }),
            "revocation.max_entries",
            "greater than 0",
        ),
        (
            check(|c| {
                c.set("/user_data", mongo_section("db")).set(
                    "/revocation",
                    json!({"collection": "revoked", "max_bytes": 0}),
                )
            }),
            "revocation.max_bytes",
            "greater than 0",
        ),
        (
            check(|c| {
                c.set("/user_data", mongo_section("db")).set(
                    "/revocation",
                    json!({"collection": "revoked", "jti_feld": "x"}),
                )
            }),
            "revocation",
            "jti_feld",
        ),
    ];
    for ((code, stderr), key, reason) in cases {
        assert_eq!(code, 2, "exit code; stderr: {stderr}");
        assert!(stderr.contains(key), "names {key}: {stderr}");
        assert!(stderr.contains(reason), "says why ({reason}): {stderr}");
    }
    let (code, stderr) = check(|c| {
        c.set("/user_data", mongo_section("db"))
            .set("/user_data/tokens_valid_after_field", "tokensValidAfter")
            .set("/revocation", list.clone())
    });
    assert_eq!(code, 0, "a valid section passes: {stderr}");
}
