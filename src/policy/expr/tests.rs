//! Expression semantics, one operator at a time, against a fixed user.

use super::Expr;
use crate::claims::Identity;
use crate::expansion::{Context, RequestFacts, Scope};
use crate::packed_json::PackedJson;
use serde_json::{json, Value};
use std::sync::Arc;

fn identity() -> Identity {
    Identity {
        id: "u1".into(),
        provider: Arc::from("corp"),
        data: Arc::new(
            json!({"email": "ann@example.com", "groups": ["eng", "ops"]})
                .as_object()
                .cloned()
                .unwrap(),
        ),
        token: Arc::new(
            json!({"sub": "u1", "level": 3, "org": {"team": {"name": "core"}}, "scope": "read"})
                .as_object()
                .cloned()
                .unwrap(),
        ),
    }
}

fn custom_data() -> Value {
    json!({
        "roles": ["editor", "admin"],
        "canRead": true,
        "age": 42,
        "ratio": 0.5,
        "name": "Ann",
        "owner": "u1",
        "profile": {"tier": "gold", "limits": {"rps": 10}},
        "nothing": null,
        "pair": [1, 2],
    })
}

fn permissions() -> Value {
    json!(["read:all", "write:own"])
}

/// Evaluates `expr` for the fixed user, with user data, as `GET /api/x` from 10.0.0.7.
fn eval(expr: Value) -> bool {
    let identity = identity();
    let custom = PackedJson::pack(&custom_data());
    let perms = permissions();
    let ctx = Context {
        identity: &identity,
        custom_data: Some(custom.root()),
        permissions: Some(&perms),
        request: Some(RequestFacts {
            client_cert: None,
            method: "GET",
            path: "/api/x",
            remote_ip: "10.0.0.7".parse().unwrap(),
        }),
    };
    let scope = Scope {
        user_data: true,
        request: true,
    };
    Expr::parse(&expr, scope)
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
        .eval(&ctx)
}

fn holds(expr: Value) {
    assert!(eval(expr.clone()), "expected to hold: {expr}");
}

fn fails(expr: Value) {
    assert!(!eval(expr.clone()), "expected to fail: {expr}");
}

#[test]
fn literal_equality_of_strings_numbers_and_bools() {
    holds(json!({"%%user.custom_data.name": "Ann"}));
    fails(json!({"%%user.custom_data.name": "ann"}));
    holds(json!({"%%user.custom_data.age": 42}));
    holds(json!({"%%user.custom_data.age": 42.0}));
    fails(json!({"%%user.custom_data.age": "42"}));
    holds(json!({"%%user.custom_data.canRead": true}));
    fails(json!({"%%user.custom_data.canRead": false}));
    holds(json!({"%%user.custom_data.profile": {"tier": "gold", "limits": {"rps": 10}}}));
    fails(json!({"%%user.custom_data.profile": {"tier": "gold"}}));
    holds(json!(true));
    fails(json!(false));
    holds(json!({}));
}

#[test]
fn arrays_match_element_wise() {
    holds(json!({"%%user.custom_data.roles": "admin"}));
    fails(json!({"%%user.custom_data.roles": "owner"}));
    holds(json!({"%%user.custom_data.roles": ["editor", "admin"]}));
    fails(json!({"%%user.custom_data.roles": ["admin", "editor"]}));
    holds(json!({"%%user.data.groups": "ops"}));
    holds(json!({"%%user.permissions": "read:all"}));
    holds(json!({"%%user.custom_data.roles.1": "admin"}));
}

#[test]
fn packed_custom_data_compares_in_place_as_a_value_would() {
    // Objects match whatever their field order; numbers by value, inside arrays too.
    holds(json!({"%%user.custom_data.profile": {"limits": {"rps": 10}, "tier": "gold"}}));
    holds(json!({"%%user.custom_data.profile": {"limits": {"rps": 10.0}, "tier": "gold"}}));
    fails(json!({"%%user.custom_data.profile": {"limits": {"rps": 10}, "tier": "gold", "x": 1}}));
    holds(json!({"%%user.custom_data.pair": [1.0, 2]}));
    fails(json!({"%%user.custom_data.pair": [1, 2, 3]}));
    fails(json!({"%%user.custom_data.pair": [1]}));
    // Packed on both sides.
    holds(json!({"%%user.custom_data.profile": "%%user.custom_data.profile"}));
    fails(json!({"%%user.custom_data.profile": "%%user.custom_data.profile.limits"}));
    holds(json!({"%%user.custom_data.age": {"%gt": "%%user.custom_data.profile.limits.rps"}}));
    holds(json!({"%%user.custom_data.name": {"%lt": "Bob"}}));
    holds(json!({"%%user.custom_data.pair": {"%gte": 2}}));
    fails(json!({"%%user.custom_data.pair": {"%gt": 2}}));
}

#[test]
fn nested_dotted_paths() {
    holds(json!({"%%user.custom_data.profile.tier": "gold"}));
    holds(json!({"%%user.custom_data.profile.limits.rps": 10}));
    holds(json!({"%%token.org.team.name": "core"}));
    fails(json!({"%%token.org.team.name": "edge"}));
    fails(json!({"%%token.org.missing.name": "core"}));
}

#[test]
fn expansions_on_the_value_side() {
    holds(json!({"%%token.sub": "%%user.id"}));
    holds(json!({"%%user.custom_data.owner": "%%user.id"}));
    fails(json!({"%%user.custom_data.name": "%%user.id"}));
    holds(json!({"%%user.custom_data.roles": {"%in": "%%user.custom_data.roles"}}));
    holds(json!({"%%user.id": {"%in": ["x", "%%token.sub"]}}));
    holds(json!({"%%user.custom_data.pair": [1, "%%user.custom_data.pair.1"]}));
    // An absent value on the right never equals anything, not even an absent field.
    fails(json!({"%%user.custom_data.missing": "%%user.custom_data.also_missing"}));
    fails(json!({"%%user.id": ["%%user.custom_data.missing"]}));
}

#[test]
fn in_and_nin() {
    holds(json!({"%%user.id": {"%in": ["u0", "u1"]}}));
    fails(json!({"%%user.id": {"%in": ["u0", "u2"]}}));
    holds(json!({"%%user.id": {"$in": ["u1"]}}));
    // An array field is in the list when any element is.
    holds(json!({"%%user.custom_data.roles": {"%in": ["admin"]}}));
    fails(json!({"%%user.custom_data.roles": {"%in": ["owner", "guest"]}}));
    holds(json!({"%%user.id": {"%nin": ["u0", "u2"]}}));
    fails(json!({"%%user.id": {"%nin": ["u1"]}}));
    fails(json!({"%%user.custom_data.roles": {"%nin": ["admin"]}}));
    holds(json!({"%%user.custom_data.roles": {"%nin": ["owner"]}}));
    // An absent field is in no list; %nin is its exact negation.
    fails(json!({"%%user.custom_data.missing": {"%in": ["x"]}}));
    holds(json!({"%%user.custom_data.missing": {"%nin": ["x"]}}));
    // An expansion that is not an array is a one-element list; an absent one is empty.
    holds(json!({"%%token.sub": {"%in": "%%user.id"}}));
    fails(json!({"%%token.sub": {"%in": "%%user.custom_data.missing"}}));
}

#[test]
fn exists() {
    holds(json!({"%%user.custom_data.name": {"%exists": true}}));
    fails(json!({"%%user.custom_data.name": {"%exists": false}}));
    holds(json!({"%%user.custom_data.missing": {"%exists": false}}));
    fails(json!({"%%user.custom_data.missing": {"$exists": true}}));
    // JSON null counts as absent, as in Atlas.
    holds(json!({"%%user.custom_data.nothing": {"%exists": "%%false"}}));
    fails(json!({"%%user.custom_data.missing": "x"}));
}

#[test]
fn and_or_not_nor() {
    let admin = json!({"%%user.custom_data.roles": "admin"});
    let owner = json!({"%%user.custom_data.roles": "owner"});
    holds(json!({"%and": [admin, {"%%user.id": "u1"}]}));
    fails(json!({"%and": [admin, owner]}));
    holds(json!({"%or": [owner, admin]}));
    fails(json!({"%or": [owner, {"%%user.id": "u2"}]}));
    holds(json!({"$or": [owner, admin]}));
    holds(json!({"%not": owner}));
    fails(json!({"%not": admin}));
    holds(json!({"%nor": [owner, {"%%user.id": "u2"}]}));
    fails(json!({"%nor": [owner, admin]}));
    // An embedded expression is compared, as a boolean, with the field.
    holds(json!({"%%true": {"%%user.id": "u1", "%%user.custom_data.canRead": true}}));
    fails(json!({"%%true": {"%%user.id": "u2"}}));
    holds(json!({"%%false": {"%%user.id": "u2"}}));
    holds(json!({"%%user.custom_data.canRead": {"%%user.id": "u1"}}));
    // Several fields in one object must all hold.
    holds(json!({"%%user.id": "u1", "%%user.custom_data.canRead": true}));
    fails(json!({"%%user.id": "u1", "%%user.custom_data.canRead": false}));
}

#[test]
fn field_level_logic_and_comparisons() {
    holds(json!({"%%user.custom_data.age": {"%and": [{"$gt": 0}, {"$lte": 42}]}}));
    fails(json!({"%%user.custom_data.age": {"%and": [{"$gt": 0}, {"$lt": 42}]}}));
    holds(json!({"%%user.custom_data.age": {"%or": [{"%lt": 0}, {"%gte": 40}]}}));
    holds(json!({"%%user.custom_data.roles": {"%not": {"%in": ["guest"]}}}));
    fails(json!({"%%user.custom_data.roles": {"%not": "admin"}}));
    holds(json!({"%%user.custom_data.age": {"%gt": 41, "%lt": 43}}));
    holds(json!({"%%user.custom_data.ratio": {"%lt": 1}}));
    holds(json!({"%%user.custom_data.name": {"%gte": "Ann", "%lt": "Bob"}}));
    fails(json!({"%%user.custom_data.name": {"%gt": 1}}));
    holds(json!({"%%user.custom_data.pair": {"%gt": 1}}));
    holds(json!({"%%user.custom_data.name": {"%eq": "Ann"}}));
    holds(json!({"%%user.custom_data.name": {"%ne": "Bob"}}));
    holds(json!({"%%user.custom_data.missing": {"%ne": "Bob"}}));
    fails(json!({"%%user.custom_data.missing": {"%gt": 0}}));
    holds(json!({"%%token.level": {"%gte": 3}}));
}

#[test]
fn request_expansions() {
    holds(json!({"%%request.method": "GET"}));
    fails(json!({"%%request.method": "POST"}));
    holds(json!({"%%request.path": "/api/x"}));
    holds(json!({"%%request.remoteIPAddress": {"%in": ["10.0.0.7", "10.0.0.8"]}}));
    fails(json!({"%%request.remoteIPAddress": "10.0.0.8"}));
    // Without request facts the expansions are absent.
    let identity = identity();
    let ctx = Context {
        identity: &identity,
        custom_data: None,
        permissions: None,
        request: None,
    };
    let scope = Scope {
        user_data: false,
        request: true,
    };
    let expr = Expr::parse(&json!({"%%request.method": {"%exists": false}}), scope).unwrap();
    assert!(expr.eval(&ctx));
}
