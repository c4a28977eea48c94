//! One `allow_when` rule on every path, and a user to check it for, without a proxy: for the tests
//! that evaluate rules directly (`tests/properties.rs`, `tests/rule_allocations.rs`). Part of
//! `common`, and included by `#[path]` where a binary keeps the rest of the harness out.
#![allow(dead_code)]

use claimgate::claims::Identity;
use claimgate::config::RuleConfig;
use claimgate::policy::Policy;
use serde_json::{json, Value};
use std::sync::Arc;

/// A policy of one rule: every path, allowed when `allow_when` holds.
pub fn policy(allow_when: Value) -> Policy {
    let rules: Vec<RuleConfig> = serde_json::from_value(json!([
        {"match": {"path_prefix": "/"}, "allow_when": allow_when}
    ]))
    .expect("rules deserialize");
    Policy::compile(&rules, &Default::default(), true).expect("rules compile")
}

/// User `ann` of provider `corp`, with no claims or mapped data.
pub fn ann() -> Identity {
    Identity {
        id: "ann".into(),
        provider: Arc::from("corp"),
        data: Arc::default(),
        token: Arc::default(),
    }
}
