//! Faults (issue 11): the servers claimgate depends on stopped, slowed or corrupted while the real
//! binary runs, and clients that hold on to connections. Each bullet of the issue, and the test
//! that proves it (here unless a file is named):
//!
//! | Fault | Test |
//! |---|---|
//! | JWKS down at startup: `/readyz` 503, requests 503 + `Retry-After`, serving within one refresh once up | `jwks_down_at_startup_is_served_within_one_refresh_of_coming_up`; HTTP 500 variant: `jwks::proxy_is_unready_until_jwks_first_loads` |
//! | JWKS down later: cached keys keep working, a metric counts failures | `bad_jwks_answers_are_counted_and_the_last_good_keys_kept`; `jwks::cached_keys_keep_working_when_jwks_server_goes_away` |
//! | Slow JWKS: no request waits on a background refresh | `a_stalled_jwks_refresh_holds_no_request` |
//! | JWKS garbage / HTML / 500 / 100 MiB body (capped, last good keys kept) | `bad_jwks_answers_are_counted_and_the_last_good_keys_kept`; `token_hardening::oversized_jwks_is_refused_and_the_last_good_keys_kept` |
//! | Flood of random unknown `kid`s: fetches rate-limited, valid traffic unaffected (measured) | `unknown_kid_flood_is_rate_limited_and_valid_traffic_unaffected`; `jwks::unknown_kids_do_not_cause_a_refetch_storm` |
//! | MongoDB down | `user_data_outage::cached_users_survive_an_outage_and_new_users_wait_for_mongodb` |
//! | MongoDB slow: lookup timeout → `on_unavailable`, never a hung request | `slow_mongodb_lookups_end_in_the_on_unavailable_policy` |
//! | MongoDB restarted mid-load | `mongodb_restart_under_load_answers_every_request` |
//! | Change stream killed: resumes, no update lost | `a_cut_change_stream_resumes_without_losing_an_update` |
//! | Upstream refused: 502 | `forward::upstream_down_is_502` |
//! | Upstream reset mid-body | `upstream_reset_mid_body_is_not_passed_off_as_a_whole_response` |
//! | Upstream slow: 504 after `timeout_ms` | `forward::upstream_slower_than_timeout_is_504` |
//! | Slow-reading client | `a_slow_reading_client_gets_backpressure_not_buffering` |
//! | Upstream response over the header limit: 502 | `upstream_response_head_over_the_limit_is_502` |
//! | Slowloris headers, dropped after `limits.header_read_timeout_ms` (default 10 000, from accept) | `server_hardening::partial_request_head_is_closed_after_header_read_timeout`, `server_hardening::silent_connection_is_closed_after_header_read_timeout`; default: `config::load::tests::minimal_config_gets_documented_defaults` |
//! | 2 000 idle connections | `two_thousand_idle_connections_do_not_stop_service` |
//! | Headers over `limits.max_header_bytes`: 431 | `server_hardening::oversized_request_head_gets_431_and_never_reaches_upstream` |
//! | More than `limits.max_connections`: wait or refuse, existing unaffected | `max_connections_wait_keeps_new_connections_in_the_backlog`, `max_connections_refuse_closes_new_connections_at_once` |

mod common;

use common::faulty::{pattern_byte, FaultyJwks, JwksMode, RawUpstream, TcpFault, UpstreamFault};
use common::*;
use mongodb::bson::doc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound for "never a hung request": far above every timeout configured here.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

fn addr(proxy: &Proxy) -> String {
    proxy.url.trim_start_matches("http://").to_owned()
}

/// A token nobody sent before, so the verified-token cache cannot answer for the key store.
fn fresh(key: &SigningKey) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    key.sign(&Claims::new().set("jti", format!("t{}", N.fetch_add(1, Ordering::SeqCst))))
}

async fn status_of(proxy: &Proxy, token: &str) -> u16 {
    let request = proxy.get_with_token("/", token);
    let resp = tokio::time::timeout(ANSWER_WITHIN, request)
        .await
        .expect("the request hung");
    resp.status().as_u16()
}

fn jwks_errors(metrics: &str) -> f64 {
    let labels = [("provider", "test"), ("result", "error")];
    metric(metrics, "claimgate_jwks_fetches_total", &labels).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_down_at_startup_is_served_within_one_refresh_of_coming_up() {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    // Nothing listens there yet: connection refused.
    let port = free_port();
    let uri = format!("http://127.0.0.1:{port}/jwks.json");
    let config = TestConfig::jwks(&upstream.url(), &uri).provider("jwks_min_refresh_seconds", 2);
    let proxy = Proxy::spawn(&config, &[], &[]);
    proxy.wait_up().await;
    let deadline = Instant::now() + ANSWER_WITHIN;
    while jwks_errors(&proxy.metrics().await) < 1.0 {
        assert!(Instant::now() < deadline, "no failed fetch counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(proxy.admin_get("/readyz").await.status(), 503);
    let resp = proxy.get_with_token("/", &fresh(&key)).await;
    let retry_after = resp.headers().get("retry-after").cloned();
    expect_reject(resp, 503, "keys_unavailable").await;
    assert!(retry_after.is_some(), "503 without Retry-After");

    let server = FaultyJwks::start_at(port, JwksMode::Serve(jwks(&[&key]).to_string())).await;
    let up = Instant::now();
    while status_of(&proxy, &fresh(&key)).await != 200 {
        assert!(
            up.elapsed() < ANSWER_WITHIN,
            "not serving after the JWKS came up; stderr:\n{}",
            proxy.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("serving {:?} after the JWKS came up", up.elapsed());
    // Within one refresh: the first fetch that reached the server loaded the keys (requests
    // without keys never fetch; the first-load retries back off to jwks_min_refresh_seconds).
    assert_eq!(server.hits(), 1, "fetches before serving");
    assert_eq!(proxy.admin_get("/readyz").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jwks_answers_are_counted_and_the_last_good_keys_kept() {
    let (good, rotated) = (SigningKey::es256("good"), SigningKey::es256("rotated"));
    let upstream = EchoUpstream::start().await;
    let server = FaultyJwks::start(JwksMode::Serve(jwks(&[&good]).to_string())).await;
    let config = TestConfig::jwks(&upstream.url(), &server.uri())
        .provider("jwks_refresh_seconds", 1)
        .provider("jwks_max_bytes", 65536);
    let proxy = Proxy::start(&config).await;
    let hundred_mib = 100 << 20;
    let faults = [
        (
            "garbage",
            JwksMode::Answer(200, "application/json", "\u{1}\u{2}{{{not json".into()),
        ),
        (
            "html",
            JwksMode::Answer(200, "text/html", "<html><body>Login</body></html>".into()),
        ),
        (
            "json without keys",
            JwksMode::Answer(200, "application/json", "{\"kys\":[]}".into()),
        ),
        (
            "500",
            JwksMode::Answer(500, "text/plain", "internal error".into()),
        ),
        ("100 MiB body", JwksMode::Endless(hundred_mib)),
    ];
    for (what, mode) in faults {
        let errors_before = jwks_errors(&proxy.metrics().await);
        server.set(mode);
        let deadline = Instant::now() + ANSWER_WITHIN;
        while jwks_errors(&proxy.metrics().await) < errors_before + 1.0 {
            assert!(
                Instant::now() < deadline,
                "{what}: no failed fetch counted; stderr:\n{}",
                proxy.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let echo = expect_echo(proxy.get_with_token("/", &fresh(&good)).await).await;
        assert_eq!(echo.header("x-user-id"), Some("alice"), "{what}");
        assert_eq!(proxy.admin_get("/readyz").await.status(), 200, "{what}");
    }
    let sent = server.body_bytes();
    eprintln!(
        "100 MiB JWKS body: {sent} bytes written before claimgate hung up (cap 65536; the rest \
         sat in socket buffers)"
    );
    assert!(
        sent < hundred_mib / 4,
        "{sent} bytes of the 100 MiB body were read"
    );
    assert!(proxy.stderr().contains("exceeds jwks_max_bytes"));

    // Fetching still works afterwards: a rotated key is picked up.
    server.set(JwksMode::Serve(jwks(&[&good, &rotated]).to_string()));
    let deadline = Instant::now() + ANSWER_WITHIN;
    while status_of(&proxy, &fresh(&rotated)).await != 200 {
        assert!(Instant::now() < deadline, "the rotated key never loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Down for good: refused connections are counted, the cached keys keep serving.
    let errors_before = jwks_errors(&proxy.metrics().await);
    drop(server);
    let deadline = Instant::now() + ANSWER_WITHIN;
    while jwks_errors(&proxy.metrics().await) < errors_before + 1.0 {
        assert!(Instant::now() < deadline, "refused fetch not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    expect_echo(proxy.get_with_token("/", &fresh(&rotated)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_jwks_refresh_holds_no_request() {
    let key = SigningKey::es256("known");
    let upstream = EchoUpstream::start().await;
    let server = FaultyJwks::start(JwksMode::Serve(jwks(&[&key]).to_string())).await;
    let config = TestConfig::jwks(&upstream.url(), &server.uri())
        .provider("jwks_refresh_seconds", 1)
        .provider("jwks_timeout_ms", 60_000);
    let proxy = Proxy::start(&config).await;
    server.set(JwksMode::Stall);
    let deadline = Instant::now() + ANSWER_WITHIN;
    while server.stalled() == 0 {
        assert!(Instant::now() < deadline, "no background refresh started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every answer arrives while the refresh is still held open by the JWKS server.
    for i in 0..20 {
        let echo = expect_echo(proxy.get_with_token("/", &fresh(&key)).await).await;
        assert_eq!(echo.header("x-user-id"), Some("alice"));
        assert!(
            server.stalled() > 0,
            "request {i} was answered only after the refresh ended"
        );
    }
    server.set(JwksMode::Serve(jwks(&[&key]).to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_flood_is_rate_limited_and_valid_traffic_unaffected() {
    const FLOOD_FOR: Duration = Duration::from_secs(6);
    const MIN_REFRESH_SECONDS: u64 = 2;
    let key = SigningKey::es256("known");
    let attacker = Arc::new(SigningKey::es256("attacker"));
    let upstream = EchoUpstream::start().await;
    let server = FaultyJwks::start(JwksMode::Serve(jwks(&[&key]).to_string())).await;
    let config = TestConfig::jwks(&upstream.url(), &server.uri())
        .provider("jwks_min_refresh_seconds", MIN_REFRESH_SECONDS);
    let proxy = Arc::new(Proxy::start(&config).await);
    let hits_before = server.hits();
    let started = Instant::now();

    let mut flooders = Vec::new();
    for task in 0..6 {
        let (proxy, attacker) = (proxy.clone(), attacker.clone());
        flooders.push(tokio::spawn(async move {
            let (mut sent, mut refused) = (0u64, 0u64);
            while started.elapsed() < FLOOD_FOR {
                let mut header = attacker.header();
                header["kid"] = format!("random-{task}-{sent}-{}", rand_suffix()).into();
                let token = attacker.sign_raw(&header, &Claims::new().to_value());
                sent += 1;
                if status_of(&proxy, &token).await == 401 {
                    refused += 1;
                }
            }
            (sent, refused)
        }));
    }
    let key = Arc::new(key);
    let mut valid = Vec::new();
    for _ in 0..2 {
        let (proxy, key) = (proxy.clone(), key.clone());
        valid.push(tokio::spawn(async move {
            let (mut sent, mut ok) = (0u64, 0u64);
            while started.elapsed() < FLOOD_FOR {
                sent += 1;
                if status_of(&proxy, &fresh(&key)).await == 200 {
                    ok += 1;
                }
            }
            (sent, ok)
        }));
    }
    let (mut valid_sent, mut valid_ok) = (0, 0);
    for task in valid {
        let (sent, ok) = task.await.unwrap();
        valid_sent += sent;
        valid_ok += ok;
    }
    let (mut flood_sent, mut flood_refused) = (0, 0);
    for flooder in flooders {
        let (sent, refused) = flooder.await.unwrap();
        flood_sent += sent;
        flood_refused += refused;
    }
    let elapsed = started.elapsed();
    let fetches = server.hits() - hits_before;
    eprintln!(
        "unknown-kid flood over {elapsed:?}: {flood_sent} flood requests ({flood_refused} \
         answered 401), {fetches} JWKS fetches (min refresh {MIN_REFRESH_SECONDS} s); valid \
         requests meanwhile: {valid_ok}/{valid_sent} succeeded"
    );
    assert_eq!(flood_refused, flood_sent, "a flood token was not refused");
    assert_eq!(
        valid_ok, valid_sent,
        "valid requests failed during the flood"
    );
    assert!(valid_sent > 0);
    let allowed = elapsed.as_secs() / MIN_REFRESH_SECONDS + 2;
    assert!(
        fetches as u64 <= allowed,
        "{fetches} JWKS fetches in {elapsed:?} (at most {allowed} expected)"
    );
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

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

/// Inserts `user` once the change stream is open and waits for its insert event: an event that
/// arrived after the first lookup would drop the cached document again (rightly: it may be
/// newer), and the test needs it cached.
async fn insert_and_settle(env: &UdEnv, user: mongodb::bson::Document) {
    let events = || async { env.counter("claimgate_user_data_change_events_total").await };
    let mut n = 0;
    while events().await < 1.0 {
        assert!(n < 100, "the change stream never delivered an event");
        env.db()
            .coll("users")
            .update_one(doc! {"user_id": "warm-up"}, doc! {"$set": {"n": n}})
            .upsert(true)
            .await
            .unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = events().await;
    env.db().insert_user(user).await;
    let deadline = Instant::now() + ANSWER_WITHIN;
    while events().await <= before {
        assert!(Instant::now() < deadline, "the insert event never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_mongodb_lookups_end_in_the_on_unavailable_policy() {
    let target = tokio::task::spawn_blocking(shared_mongo_addr)
        .await
        .unwrap();
    let relay = TcpFault::start(target).await;
    let env = mongo_behind(&relay, 500).await;
    insert_and_settle(&env, doc! {"user_id": "alice", "userGroup": "cached"}).await;
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
    insert_and_settle(&env, doc! {"user_id": "alice", "userGroup": "before"}).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_body_is_not_passed_off_as_a_whole_response() {
    let key = SigningKey::es256("ec");
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let upstream = RawUpstream::start(UpstreamFault::ResetMidBody {
        announced: 1 << 20,
        sent: 64 << 10,
    })
    .await;
    let proxy = Proxy::start(&TestConfig::jwks(&upstream.url(), &jwks_server.uri())).await;
    let resp = proxy.get_with_token("/", &fresh(&key)).await;
    // The head was already relayed; what matters is that the body ends in an error.
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(ANSWER_WITHIN, resp.bytes())
        .await
        .expect("the client was left waiting for the rest of the body");
    assert!(
        body.is_err(),
        "a truncated body ({} bytes of 1 MiB) was delivered as complete",
        body.map(|b| b.len()).unwrap_or(0)
    );
    // The proxy is fine afterwards.
    assert_eq!(proxy.admin_get("/healthz").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_response_head_over_the_limit_is_502() {
    let key = SigningKey::es256("ec");
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let upstream = RawUpstream::start(UpstreamFault::HugeHead(1 << 20)).await;
    let proxy = Proxy::start(&TestConfig::jwks(&upstream.url(), &jwks_server.uri())).await;
    let token = fresh(&key);
    let request = proxy.get_with_token("/", &token);
    let resp = tokio::time::timeout(ANSWER_WITHIN, request).await.unwrap();
    expect_reject(resp, 502, "upstream_unavailable").await;
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reading_client_gets_backpressure_not_buffering() {
    const BODY: u64 = 256 << 20;
    let key = SigningKey::es256("ec");
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let upstream = RawUpstream::start(UpstreamFault::LargeBody(BODY)).await;
    let proxy = Proxy::start(&TestConfig::jwks(&upstream.url(), &jwks_server.uri())).await;
    let rss_before = proxy.rss_kib().unwrap();

    let mut slow = TcpStream::connect(addr(&proxy)).await.unwrap();
    let request = format!(
        "GET /big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        fresh(&key)
    );
    slow.write_all(request.as_bytes()).await.unwrap();
    let mut first = vec![0u8; 4096];
    let n = slow.read(&mut first).await.unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    // The client stops reading. Whatever the upstream manages to write now sits in socket
    // buffers and claimgate's small per-connection buffers, never in a growing queue.
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = upstream.written.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    let rss_stalled = proxy.rss_kib().unwrap();
    eprintln!(
        "slow client: upstream wrote {} KiB of {} KiB then stalled; proxy RSS {rss_before} → \
         {rss_stalled} KiB",
        last >> 10,
        BODY >> 10
    );
    assert!(last < BODY / 4, "{last} bytes were taken from the upstream");
    assert!(
        rss_stalled < rss_before + 32 * 1024,
        "RSS grew from {rss_before} to {rss_stalled} KiB"
    );
    // Other clients are served meanwhile (their own upstream connection, same big answer).
    let resp = proxy.get_with_token("/other", &fresh(&key)).await;
    assert_eq!(resp.status(), 200);
    drop(resp);

    // The slow client then reads everything, intact.
    let text = String::from_utf8_lossy(&first[..n]).into_owned();
    let head_len = text.find("\r\n\r\n").unwrap() + 4;
    let mut offset = 0u64;
    for byte in &first[head_len..n] {
        assert_eq!(*byte, pattern_byte(offset));
        offset += 1;
    }
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = tokio::time::timeout(ANSWER_WITHIN, slow.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        for byte in &buf[..n] {
            assert_eq!(*byte, pattern_byte(offset), "at offset {offset}");
            offset += 1;
        }
    }
    assert_eq!(offset, BODY, "body length");
}

/// Writes `GET /` with `token` on a kept-alive connection and returns the status.
async fn request_on(stream: &mut TcpStream, token: &str) -> Option<u16> {
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    read_response(stream).await
}

/// Reads one response with a Content-Length body; None when the connection closes first.
async fn read_response(stream: &mut TcpStream) -> Option<u16> {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text.get(9..12)?.parse().ok();
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

const SECRET: &str = "a-test-secret-that-is-longer-than-32-bytes";

fn hmac_token() -> String {
    SigningKey::hs256(SECRET).sign(&Claims::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_do_not_stop_service() {
    const IDLE: usize = 2000;
    let upstream = EchoUpstream::start().await;
    let config =
        TestConfig::hmac(&upstream.url(), SECRET).set("/limits/header_read_timeout_ms", 120_000);
    let proxy = Proxy::start(&config).await;
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(addr(&proxy)).await.unwrap());
    }
    let deadline = Instant::now() + ANSWER_WITHIN;
    loop {
        let open = metric(&proxy.metrics().await, "claimgate_connections_open", &[]).unwrap_or(0.0);
        if open >= IDLE as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {open} connections accepted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    for _ in 0..20 {
        expect_echo(proxy.get_with_token("/", &hmac_token()).await).await;
    }
    eprintln!(
        "{IDLE} idle connections open: 20 requests served in {:?}, proxy RSS {} KiB",
        started.elapsed(),
        proxy.rss_kib().unwrap_or(0)
    );
    drop(idle);
    let deadline = Instant::now() + ANSWER_WITHIN;
    loop {
        let open = metric(&proxy.metrics().await, "claimgate_connections_open", &[]).unwrap_or(0.0);
        if open < 10.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} connections still counted open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Four connections that each completed a request, on a proxy with `max_connections: 4`.
async fn four_busy_connections(on_max: &str) -> (Proxy, EchoUpstream, Vec<TcpStream>) {
    let upstream = EchoUpstream::start().await;
    let config = TestConfig::hmac(&upstream.url(), SECRET)
        .set("/limits/max_connections", 4)
        .set("/limits/on_max_connections", on_max);
    let proxy = Proxy::start(&config).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(addr(&proxy)).await.unwrap();
        assert_eq!(request_on(&mut stream, &hmac_token()).await, Some(200));
        held.push(stream);
    }
    let open = metric(&proxy.metrics().await, "claimgate_connections_open", &[]);
    assert_eq!(open, Some(4.0));
    (proxy, upstream, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_wait_keeps_new_connections_in_the_backlog() {
    let (proxy, _upstream, mut held) = four_busy_connections("wait").await;
    // The fifth connects (the kernel's backlog takes it) and sends its request.
    let mut fifth = TcpStream::connect(addr(&proxy)).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        hmac_token()
    );
    fifth.write_all(request.as_bytes()).await.unwrap();
    let waiting = tokio::spawn(async move {
        let status = read_response(&mut fifth).await;
        (status, Instant::now())
    });
    // The existing connections are served meanwhile, and the fifth is not.
    for stream in &mut held {
        assert_eq!(request_on(stream, &hmac_token()).await, Some(200));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "the fifth connection was served over the limit"
    );
    let refused = metric(
        &proxy.metrics().await,
        "claimgate_connections_refused_total",
        &[],
    );
    assert_eq!(refused, Some(0.0));
    // One closes: the fifth is accepted and answered.
    let closed_at = Instant::now();
    drop(held.pop());
    let (status, answered_at) = tokio::time::timeout(ANSWER_WITHIN, waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, Some(200));
    assert!(answered_at >= closed_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuse_closes_new_connections_at_once() {
    let (proxy, upstream, mut held) = four_busy_connections("refuse").await;
    let seen = upstream.requests().len();
    let mut fifth = TcpStream::connect(addr(&proxy)).await.unwrap();
    let status = tokio::time::timeout(ANSWER_WITHIN, request_on(&mut fifth, &hmac_token()))
        .await
        .expect("the fifth connection was left hanging");
    assert_eq!(status, None, "the fifth connection got an answer");
    assert_eq!(upstream.requests().len(), seen);
    let refused = metric(
        &proxy.metrics().await,
        "claimgate_connections_refused_total",
        &[],
    );
    assert_eq!(refused, Some(1.0));
    for stream in &mut held {
        assert_eq!(request_on(stream, &hmac_token()).await, Some(200));
    }
    assert!(proxy.stderr().contains("limits.max_connections reached"));
    // A slot frees up: the next connection is served.
    drop(held.pop());
    let deadline = Instant::now() + ANSWER_WITHIN;
    loop {
        let mut stream = TcpStream::connect(addr(&proxy)).await.unwrap();
        if request_on(&mut stream, &hmac_token()).await == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "no slot freed after a close");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
