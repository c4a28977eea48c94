//! Faults (issue 11): the servers claimgate depends on stopped, slowed or corrupted while the real
//! binary runs, and clients that hold on to connections. Each bullet of the issue, and the test
//! that proves it (in `tests/faults/`: `key_set`, `database`, `upstream`, `clients`, unless
//! another test file is named):
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

// The crate root of a test is tests/faults.rs, so its modules need their paths spelled out.
#[path = "faults/clients.rs"]
mod clients;
#[path = "faults/database.rs"]
mod database;
#[path = "faults/key_set.rs"]
mod key_set;
#[path = "faults/upstream.rs"]
mod upstream;

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
