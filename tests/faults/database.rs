//! MongoDB slowed, restarted under load, and its change stream cut.

use super::*;

/// A user-data proxy on a fresh database of the shared server, reaching MongoDB through `relay`.
async fn mongo_behind(relay: &TcpFault, timeout_ms: u64) -> UdEnv {
    let db = TestDb::shared().await;
    let uri = format!("mongodb://{}/?directConnection=true", relay.host_port());
    UdEnv::mongo(db, |c| {
        c.set("/user_data/uri", uri)
            .set("/user_data/timeout_ms", timeout_ms)
    })
    .await
}

fn shared_mongo_addr() -> std::net::SocketAddr {
    let uri = MongoServer::shared_uri();
    let host = uri.trim_start_matches("mongodb://");
    let host = host.split(['/', '?']).next().unwrap();
    std::net::ToSocketAddrs::to_socket_addrs(host)
        .unwrap()
        .next()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_mongodb_lookups_end_in_the_on_unavailable_policy() {
    let target = tokio::task::spawn_blocking(shared_mongo_addr)
        .await
        .unwrap();
    let relay = TcpFault::start(target).await;
    let env = mongo_behind(&relay, 500).await;
    env.insert_and_settle(doc! {"user_id": "alice", "userGroup": "cached"})
        .await;
    assert_eq!(
        env.echo_as("alice").await.header("x-user-group"),
        Some("cached")
    );

    // Every byte to and from MongoDB now takes 3 s: far over user_data.timeout_ms (500).
    relay.set_delay(Duration::from_secs(3));
    let started = Instant::now();
    for user in ["bob", "carol"] {
        let request = env.get_as(user, "/");
        let resp = tokio::time::timeout(ANSWER_WITHIN, request)
            .await
            .expect("a lookup against a slow MongoDB hung the request");
        expect_reject(resp, 503, "user_data_unavailable").await;
    }
    // serve_cached: the cached user is still served, with the cached data.
    assert_eq!(
        env.echo_as("alice").await.header("x-user-group"),
        Some("cached")
    );
    eprintln!(
        "two uncached lookups and one cached answer took {:?}",
        started.elapsed()
    );
    assert!(env.counter("claimgate_user_data_lookup_errors_total").await >= 1.0);

    relay.set_delay(Duration::ZERO);
    env.db()
        .insert_user(doc! {"user_id": "bob", "userGroup": "back"})
        .await;
    wait_for_group(&env, "bob", Some("back"), ANSWER_WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_change_stream_resumes_without_losing_an_update() {
    let target = tokio::task::spawn_blocking(shared_mongo_addr)
        .await
        .unwrap();
    let relay = TcpFault::start(target).await;
    let env = mongo_behind(&relay, 1000).await;
    env.insert_and_settle(doc! {"user_id": "alice", "userGroup": "before"})
        .await;
    assert_eq!(
        env.echo_as("alice").await.header("x-user-group"),
        Some("before")
    );
    // The change stream works before the cut.
    env.db()
        .users()
        .update_one(
            doc! {"user_id": "alice"},
            doc! {"$set": {"userGroup": "streamed"}},
        )
        .await
        .unwrap();
    wait_for_group(&env, "alice", Some("streamed"), SEEN_WITHIN).await;

    // Every connection to MongoDB (change stream included) dies; new ones are refused.
    relay.cut();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Written straight to the server while claimgate cannot see it.
    env.db()
        .users()
        .update_one(
            doc! {"user_id": "alice"},
            doc! {"$set": {"userGroup": "during"}},
        )
        .await
        .unwrap();
    // Served from the cache meanwhile (the old value, or the new one: never an error).
    let status = status_of(&env.proxy, &env.token("alice")).await;
    assert_eq!(status, 200);
    relay.restore();
    let took = wait_for_group(&env, "alice", Some("during"), ANSWER_WITHIN).await;
    eprintln!("update made during the outage seen {took:?} after the relay came back");
    // And the resumed stream keeps delivering.
    env.db()
        .users()
        .update_one(
            doc! {"user_id": "alice"},
            doc! {"$set": {"userGroup": "after"}},
        )
        .await
        .unwrap();
    wait_for_group(&env, "alice", Some("after"), ANSWER_WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_restart_under_load_answers_every_request() {
    let server = tokio::task::spawn_blocking(MongoServer::dedicated)
        .await
        .unwrap();
    let db = TestDb::on(&server.uri()).await;
    let db_name = db.name.clone();
    let env = Arc::new(UdEnv::mongo(db, |c| c.set("/user_data/timeout_ms", 1000)).await);
    env.db()
        .insert_user(doc! {"user_id": "alice", "userGroup": "cached"})
        .await;
    env.echo_as("alice").await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for task in 0..3 {
        let (env, stop) = (env.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                // The cached user, and users never seen before (a lookup each).
                let user = if n % 2 == 0 {
                    "alice".to_owned()
                } else {
                    format!("new-{task}-{n}")
                };
                n += 1;
                let status = status_of(&env.proxy, &env.token(&user)).await;
                *statuses.entry(status).or_default() += 1;
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart().await;
    let db = TestDb::named(&server.uri(), &db_name).await;
    db.index("users", "user_id").await;
    db.insert_user(doc! {"user_id": "bob", "userGroup": "back"})
        .await;
    wait_for_group(&env, "bob", Some("back"), Duration::from_secs(30)).await;
    stop.store(true, Ordering::SeqCst);
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    for task in load {
        for (status, count) in task.await.unwrap() {
            *statuses.entry(status).or_default() += count;
        }
    }
    eprintln!("statuses during the MongoDB restart: {statuses:?}");
    for status in statuses.keys() {
        assert!(
            [200, 503].contains(status),
            "unexpected status {status} during the restart: {statuses:?}"
        );
    }
    assert!(
        statuses.get(&503).copied().unwrap_or(0) > 0,
        "the outage was never seen"
    );
    assert_eq!(
        env.echo_as("alice").await.header("x-user-group"),
        Some("cached")
    );
}
