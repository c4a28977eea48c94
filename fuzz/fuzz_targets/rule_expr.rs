//! Rule expressions (`allow_when`): parsing with every expansion in scope, then evaluation against
//! a fixed request context (identity, mapped data, claims, custom user data, permissions, request).
//!
//! Input: the expression as JSON; optionally a NUL byte and a JSON document that replaces the
//! fixed custom user data.

#![no_main]

use claimgate::claims::Identity;
use claimgate::expansion::{Context, RequestFacts, Scope};
use claimgate::policy::Expr;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use std::sync::{Arc, OnceLock};

struct Fixture {
    identity: Identity,
    custom_data: Value,
    permissions: Value,
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture {
        identity: Identity {
            id: "ann".into(),
            provider: Arc::from("fuzz"),
            data: object(json!({"email": "ann@example.com", "tier": "gold", "age": 42})),
            token: Arc::new(object(json!({
                "sub": "ann", "iss": "https://issuer.fuzz.example/", "aud": ["a", "b"],
                "exp": 4102444800u64, "groups": ["readers", "writers"], "scope": ["openid", "api:read"],
                "org": {"id": "org-42", "tier": "gold", "seats": 10.5}, "n": null, "t": true,
            }))),
        },
        custom_data: json!({
            "user_id": "ann", "roles": ["reader", "admin"], "canRead": true, "userGroup": "ops",
            "readPartitions": ["p1", "p2"], "limits": {"max": 3, "min": -1.5}, "blocked": false,
            "nested": [[1, 2], {"a": [null, "x"]}], "empty": {}, "none": null,
        }),
        permissions: json!({"read": ["p1"], "write": [], "admin": false}),
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let at = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let Ok(expr_json) = serde_json::from_slice::<Value>(&data[..at]) else {
        return;
    };
    let custom = data
        .get(at + 1..)
        .and_then(|rest| serde_json::from_slice::<Value>(rest).ok());
    let scope = Scope {
        user_data: true,
        request: true,
    };
    let Ok(expr) = Expr::parse(&expr_json, scope) else {
        return;
    };
    let _ = (
        expr.needs_user_data(),
        expr.needs_claims(),
        expr.needs_mapped_data(),
    );
    let ctx = Context {
        identity: &f.identity,
        custom_data: Some(custom.as_ref().unwrap_or(&f.custom_data)),
        permissions: Some(&f.permissions),
        request: Some(RequestFacts {
            method: "GET",
            path: "/reports/2026",
            remote_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        }),
    };
    let first = expr.eval(&ctx);
    // Evaluation reads the context and nothing else: twice is the same answer.
    assert_eq!(first, expr.eval(&ctx));
    // Without user data (an `auth: optional` request with no token) it must still answer.
    let _ = expr.eval(&Context {
        custom_data: None,
        permissions: None,
        ..ctx
    });
});
