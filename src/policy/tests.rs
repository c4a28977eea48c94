//! Routing, checking and config errors of whole rules.

use super::*;
use crate::claims::Identity;
use crate::config::{AuthMode, KeyError, PathsConfig, RuleConfig, RuleMatch};
use crate::packed_json::PackedJson;
use http::Method;
use serde_json::{json, Value};
use std::sync::Arc;

fn compile(rules: &[RuleConfig], user_data: bool) -> Result<Policy, KeyError> {
    Policy::compile(rules, &PathsConfig::default(), user_data)
}

#[test]
fn ignore_case_matches_any_letter_case() {
    let mut admin = rule(Some("/admin"), &[], AuthMode::Required, None);
    admin.matches.ignore_case = true;
    let mut exact = rule(None, &[], AuthMode::None, None);
    exact.matches.path = Some("/Health".into());
    exact.matches.ignore_case = true;
    let p = compile(&[admin, exact], false).unwrap();
    for path in ["/admin", "/ADMIN/panel", "/Admin/"] {
        assert_eq!(
            p.route(&Method::GET, path).unwrap().name,
            "rules[0]",
            "{path}"
        );
    }
    assert!(p.route(&Method::GET, "/ADMINISTRATOR").is_none());
    assert_eq!(p.route(&Method::GET, "/health").unwrap().name, "rules[1]");
    let strict = compile(
        &[rule(Some("/admin"), &[], AuthMode::Required, None)],
        false,
    )
    .unwrap();
    assert!(strict.route(&Method::GET, "/ADMIN/panel").is_none());
}

fn identity() -> Identity {
    Identity {
        id: "u1".into(),
        provider: Arc::from("corp"),
        data: Arc::default(),
        token: Arc::new(serde_json::Map::new()),
    }
}

fn custom_data() -> Value {
    json!({"roles": ["editor", "admin"], "canRead": true})
}

fn rule(
    prefix: Option<&str>,
    methods: &[&str],
    auth: AuthMode,
    allow: Option<Value>,
) -> RuleConfig {
    RuleConfig {
        name: None,
        matches: RuleMatch {
            path_prefix: prefix.map(str::to_owned),
            path: None,
            methods: methods.iter().map(|m| m.to_string()).collect(),
            ignore_case: false,
        },
        auth,
        allow_when: allow,
        scopes: Vec::new(),
        scopes_any: Vec::new(),
    }
}

/// The issue's example rules.
fn example() -> Policy {
    let rules = vec![
        rule(Some("/public"), &["GET"], AuthMode::None, None),
        rule(
            Some("/admin"),
            &[],
            AuthMode::Required,
            Some(json!({"%%user.custom_data.roles": {"%in": ["admin"]}})),
        ),
        RuleConfig {
            name: Some("readers".into()),
            ..rule(
                Some("/"),
                &[],
                AuthMode::Required,
                Some(json!({"%%user.custom_data.canRead": true})),
            )
        },
    ];
    compile(&rules, true).unwrap()
}

fn routed(policy: &Policy, method: Method, path: &str) -> Option<String> {
    policy.route(&method, path).map(|r| r.name.clone())
}

#[test]
fn first_match_wins_with_segment_aware_prefixes() {
    let p = example();
    assert_eq!(
        routed(&p, Method::GET, "/public").as_deref(),
        Some("rules[0]")
    );
    assert_eq!(
        routed(&p, Method::GET, "/public/a/b").as_deref(),
        Some("rules[0]")
    );
    assert_eq!(
        routed(&p, Method::POST, "/public/a").as_deref(),
        Some("readers")
    );
    assert_eq!(
        routed(&p, Method::GET, "/publication").as_deref(),
        Some("readers")
    );
    assert_eq!(
        routed(&p, Method::GET, "/admin").as_deref(),
        Some("rules[1]")
    );
    assert_eq!(
        routed(&p, Method::GET, "/admin/").as_deref(),
        Some("rules[1]")
    );
    assert_eq!(
        routed(&p, Method::DELETE, "/admin/x").as_deref(),
        Some("rules[1]")
    );
    assert_eq!(
        routed(&p, Method::GET, "/administrator").as_deref(),
        Some("readers")
    );
    assert_eq!(routed(&p, Method::GET, "/").as_deref(), Some("readers"));
    // Equivalent spellings cannot reach a laxer rule.
    assert_eq!(
        routed(&p, Method::GET, "/public/../admin").as_deref(),
        Some("rules[1]")
    );
    assert_eq!(
        routed(&p, Method::GET, "//admin").as_deref(),
        Some("rules[1]")
    );
    assert_eq!(
        routed(&p, Method::GET, "/%61dmin/x").as_deref(),
        Some("rules[1]")
    );
    assert_eq!(
        p.route(&Method::GET, "/public").map(|r| r.auth),
        Some(AuthMode::None)
    );
    assert!(p.needs_user_data());
}

#[test]
fn methods_exact_paths_and_defaults() {
    let lower = Method::from_bytes(b"get").unwrap();
    let p = compile(
        &[rule(None, &["get", "Head"], AuthMode::Optional, None)],
        false,
    )
    .unwrap();
    assert!(p.route(&Method::GET, "/x").is_some());
    assert!(p.route(&lower, "/x").is_some());
    assert!(p.route(&Method::HEAD, "/x").is_some());
    assert!(p.route(&Method::POST, "/x").is_none());
    assert!(!p.needs_user_data());

    let exact = RuleConfig {
        matches: RuleMatch {
            path: Some("/health".into()),
            ..RuleMatch::default()
        },
        ..rule(None, &[], AuthMode::None, None)
    };
    let p = compile(&[exact], false).unwrap();
    assert!(p.route(&Method::GET, "/health").is_some());
    assert!(p.route(&Method::GET, "/health/x").is_none());
    assert!(p.route(&Method::GET, "/healthz").is_none());

    let trailing = compile(&[rule(Some("/api/"), &[], AuthMode::Required, None)], false).unwrap();
    assert!(trailing.route(&Method::GET, "/api").is_some());
    assert!(trailing.route(&Method::GET, "/apix").is_none());

    // A rule without match fields matches everything; no rules → no match (token required).
    let all = compile(&[rule(None, &[], AuthMode::Required, None)], false).unwrap();
    assert!(all.route(&Method::PUT, "/anything").is_some());
    assert!(compile(&[], false)
        .unwrap()
        .route(&Method::GET, "/")
        .is_none());
}

fn check(rule: &Rule, custom: Option<&Value>) -> Result<(), Reject> {
    let identity = identity();
    let custom = custom.map(PackedJson::pack);
    let ctx = Context {
        identity: &identity,
        custom_data: custom.as_ref().map(PackedJson::root),
        permissions: None,
        request: None,
    };
    rule.check(&ctx)
}

#[test]
fn check_allows_or_forbids_with_the_rule_name() {
    let p = example();
    let mut custom = custom_data();
    let admin = p.route(&Method::GET, "/admin").unwrap();
    assert_eq!(check(admin, Some(&custom)), Ok(()));
    custom["roles"] = json!(["editor"]);
    assert_eq!(
        check(admin, Some(&custom)),
        Err(Reject::Forbidden("rules[1]".into()))
    );
    let readers = p.route(&Method::GET, "/x").unwrap();
    assert_eq!(check(readers, Some(&custom)), Ok(()));
    // No user document: the field is absent and equality fails.
    assert_eq!(
        check(readers, None),
        Err(Reject::Forbidden("readers".into()))
    );
    let public = p.route(&Method::GET, "/public").unwrap();
    assert_eq!(check(public, None), Ok(()));
    assert!(!public.needs_user_data() && admin.needs_user_data());
}

fn compile_err(allow: Value, user_data: bool) -> KeyError {
    let rules = [
        rule(Some("/a"), &[], AuthMode::Required, None),
        rule(Some("/b"), &[], AuthMode::Required, Some(allow)),
    ];
    compile(&rules, user_data).unwrap_err()
}

#[test]
fn expression_errors_name_the_rule_key() {
    let cases = [
        (json!({"%%user.id": {"%foo": 1}}), "%foo"),
        (json!({"%foo": []}), "%foo"),
        (json!({"%%user.nope": "x"}), "unknown expansion"),
        (json!({"%%user.id": "%%user.nope"}), "unknown expansion"),
        (
            json!({"%%user.id": {"%in": ["%%values.x"]}}),
            "unknown expansion",
        ),
        (json!({"%in": ["x"]}), "must be applied to a field"),
        (
            json!({"owner": "x"}),
            "neither an expansion nor an operator",
        ),
        (json!({"%%user.id": {"%in": "x"}}), "array or an expansion"),
        (json!({"%%user.id": {"%exists": 1}}), "true or false"),
        (json!({"%and": []}), "non-empty array"),
        (json!({"%%user.id": {"%in": ["x"], "y": 1}}), "mixes"),
        (json!("yes"), "object or a boolean"),
        (
            json!({"%%user.id": {"%function": {"name": "f"}}}),
            "unsupported",
        ),
    ];
    for (expr, reason) in cases {
        let e = compile_err(expr.clone(), true);
        assert_eq!(e.key, "rules[1].allow_when", "{expr}");
        assert!(e.reason.contains(reason), "{expr}: {}", e.reason);
    }
    let e = compile_err(
        json!({"%or": [{"%%user.id": "a"}, {"%%user.nope": 1}]}),
        true,
    );
    assert!(e.reason.starts_with("at %or[1]: "), "{}", e.reason);
}

#[test]
fn user_data_expansions_need_a_user_data_section() {
    for expr in [
        json!({"%%user.custom_data.roles": "admin"}),
        json!({"%%user.permissions": "read"}),
        json!({"%%user.id": "%%user.custom_data.owner"}),
    ] {
        let e = compile_err(expr.clone(), false);
        assert_eq!(e.key, "rules[1].allow_when", "{expr}");
        assert!(e.reason.contains("user_data"), "{expr}: {}", e.reason);
    }
    assert!(compile(
        &[rule(
            None,
            &[],
            AuthMode::Required,
            Some(json!({"%%user.id": "x"}))
        )],
        false
    )
    .is_ok());
}

#[test]
fn match_and_rule_errors_name_their_key() {
    let err = |r: RuleConfig| compile(&[r], true).unwrap_err();
    let base = || rule(None, &[], AuthMode::Required, None);
    assert_eq!(
        err(rule(Some("admin"), &[], AuthMode::Required, None)).key,
        "rules[0].match.path_prefix"
    );
    assert_eq!(
        err(rule(Some("/a/../b"), &[], AuthMode::Required, None)).key,
        "rules[0].match.path_prefix"
    );
    assert_eq!(
        err(rule(None, &["GE T"], AuthMode::Required, None)).key,
        "rules[0].match.methods[0]"
    );
    let both = RuleConfig {
        matches: RuleMatch {
            path_prefix: Some("/a".into()),
            path: Some("/a".into()),
            methods: vec![],
            ignore_case: false,
        },
        ..base()
    };
    assert_eq!(err(both).key, "rules[0].match.path");
    let unnamed = RuleConfig {
        name: Some(" ".into()),
        ..base()
    };
    assert_eq!(err(unnamed).key, "rules[0].name");
    for auth in [AuthMode::None, AuthMode::Optional] {
        let e = err(rule(None, &[], auth, Some(json!({"%%user.id": "x"}))));
        assert_eq!(e.key, "rules[0].allow_when");
    }
}

#[test]
fn rules_parse_from_yaml_config() {
    let text = r#"
upstream: {url: 'http://127.0.0.1:3000'}
providers:
  - {name: a, issuer: 'https://a', jwks_uri: 'https://a/jwks'}
user_data: {source: file, path: /tmp/users.json}
rules:
  - match: { path_prefix: "/public", methods: [GET] }
    auth: none
  - match: { path_prefix: "/admin" }
    allow_when: { "%%user.custom_data.roles": { "%in": ["admin"] } }
  - match: { path_prefix: "/" }
    allow_when: { "%%user.custom_data.canRead": true }
"#;
    let config = crate::config::parse_str(text, &|_| None).unwrap();
    let p = compile(&config.rules, config.user_data.is_some()).unwrap();
    assert_eq!(p.rules().len(), 3);
    assert_eq!(
        routed(&p, Method::GET, "/admin/x").as_deref(),
        Some("rules[1]")
    );
    assert_eq!(p.rules()[0].auth, AuthMode::None);
    assert_eq!(p.rules()[1].auth, AuthMode::Required);
}
