//! A rule that reads a cached user document compares it in place: evaluating it allocates
//! nothing, whether its conditions hold or fail, for `%in` on an array, string and object
//! equality, comparisons, request facts and expansions on the value side.

use claimgate::expansion::{Context, RequestFacts};
use claimgate::packed_json::PackedJson;
use serde_json::{json, Value};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
#[path = "common/one_rule.rs"]
mod one_rule;

use counting_alloc::{thread_allocations, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Checks the rule for `GET /reports` by user `ann` with `document` as custom data: whether it
/// allowed, and how many allocations 100 checks made on this thread.
fn check(allow_when: Value, document: &Value) -> (bool, u64) {
    let policy = one_rule::policy(allow_when);
    let identity = one_rule::ann();
    let document = PackedJson::pack(document);
    let ctx = Context {
        identity: &identity,
        custom_data: Some(document.root()),
        permissions: None,
        request: Some(RequestFacts {
            method: "GET",
            path: "/reports",
            remote_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            client_cert: None,
        }),
    };
    let rule = policy
        .route(&http::Method::GET, "/reports")
        .expect("a rule matches");
    let allowed = rule.check(&ctx).is_ok();
    let before = thread_allocations();
    for _ in 0..100 {
        assert_eq!(rule.check(&ctx).is_ok(), allowed);
    }
    (allowed, thread_allocations() - before)
}

fn user() -> Value {
    json!({
        "user_id": "ann",
        "owner": "ann",
        "roles": ["reader", "admin"],
        "plan": "pro",
        "canRead": true,
        "profile": {"tier": "gold", "limits": {"rps": 10}},
    })
}

#[test]
fn an_allowing_rule_on_custom_data_allocates_nothing() {
    let rule = json!({"%and": [
        {"%%user.custom_data.roles": {"%in": ["admin", "ops"]}},
        {"%%user.custom_data.roles": "reader"},
        {"%%user.custom_data.plan": "pro"},
        {"%%user.custom_data.canRead": true},
        {"%%user.custom_data.profile": {"limits": {"rps": 10}, "tier": "gold"}},
        {"%%user.custom_data.profile.limits.rps": {"%gte": 5}},
        {"%%user.custom_data.owner": "%%user.id"},
        {"%%request.method": {"%in": ["GET", "HEAD"]}},
        {"%%user.id": {"%in": "%%user.custom_data.user_id"}},
    ]});
    assert_eq!(check(rule, &user()), (true, 0));
}

#[test]
fn conditions_that_fail_allocate_nothing_either() {
    // Under `%not`, so that every condition is evaluated and fails while the rule allows: a
    // denial's answer names its rule, and that one string is the only allocation it makes.
    let rule = json!({"%not": {"%or": [
        {"%%user.custom_data.roles": {"%in": ["owner"]}},
        {"%%user.custom_data.plan": "free"},
        {"%%user.custom_data.profile": {"tier": "gold"}},
        {"%%user.custom_data.profile.limits.rps": {"%gt": 10}},
        {"%%user.custom_data.missing": {"%exists": true}},
        {"%%request.method": "POST"},
    ]}});
    assert_eq!(check(rule, &user()), (true, 0));
}
