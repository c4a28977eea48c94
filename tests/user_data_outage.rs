//! MongoDB going away and coming back, on a server of this test's own: cached users keep working,
//! new users get 503 `user_data_unavailable`, and service resumes once MongoDB is back.

mod common;

use common::*;
use mongodb::bson::doc;
use std::time::Duration;

/// How long the proxy may take to reconnect after the server is back.
const RECONNECT_WITHIN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_users_survive_an_outage_and_new_users_wait_for_mongodb() {
    let server = tokio::task::spawn_blocking(MongoServer::dedicated)
        .await
        .unwrap();
    let db = TestDb::on(&server.uri()).await;
    let db_name = db.name.clone();
    let env = UdEnv::mongo(db, |c| c.set("/user_data/timeout_ms", 1000)).await;
    env.db()
        .insert_user(doc! {"user_id": "alice", "userGroup": "cached"})
        .await;
    let echo = env.echo_as("alice").await;
    assert_eq!(echo.header("x-user-group"), Some("cached"));

    server.stop().await;

    // The cached user is served from the cache, with the cached data.
    for _ in 0..3 {
        let echo = env.echo_as("alice").await;
        assert_eq!(echo.header("x-user-group"), Some("cached"));
    }
    // A user never seen before cannot be judged.
    let resp = env.get_as("bob", "/").await;
    let retry_after = resp.headers().get("retry-after").cloned();
    expect_reject(resp, 503, "user_data_unavailable").await;
    assert!(retry_after.is_some(), "503 without Retry-After");
    let resp = env.get_as("bob", "/").await;
    expect_reject(resp, 503, "user_data_unavailable").await;
    assert_eq!(
        env.upstream.requests().len(),
        4,
        "the 503s reached upstream"
    );

    // Back, empty (mongo.sh keeps no data across a stop): re-insert.
    server.restart().await;
    let db = TestDb::named(&server.uri(), &db_name).await;
    db.index("users", "user_id").await;
    db.insert_user(doc! {"user_id": "alice", "userGroup": "cached"})
        .await;
    db.insert_user(doc! {"user_id": "bob", "userGroup": "back"})
        .await;
    let took = wait_for_group(&env, "bob", Some("back"), RECONNECT_WITHIN).await;
    eprintln!("new user served {took:?} after the restart");
    let echo = env.echo_as("alice").await;
    assert_eq!(echo.header("x-user-group"), Some("cached"));

    // Changes made after the restart reach the proxy again (its change stream is re-opened).
    db.users()
        .update_one(
            doc! {"user_id": "bob"},
            doc! {"$set": {"userGroup": "updated"}},
        )
        .await
        .unwrap();
    let took = wait_for_group(&env, "bob", Some("updated"), RECONNECT_WITHIN).await;
    eprintln!("update after the restart seen after {took:?}");
}
