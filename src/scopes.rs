//! OAuth scopes as every gateway checks them: granted by `scope` (a space-separated string,
//! RFC 8693 §4.2 / RFC 9068) or `scp` (an array or a string: Okta, Entra ID), normalized once at
//! verification into the `scopes` claim (an array, `%%token.scopes`), and required per rule.

use crate::config::KeyError;
use crate::error::Reject;
use crate::expansion::Context;
use serde_json::{Map, Value};

/// The claim the normalized scopes are stored under, replacing any `scopes` claim the token had.
pub const CLAIM: &str = "scopes";

/// Sets `scopes` to the union of `scope` and `scp`, in order, without repeats.
pub fn normalize(claims: &mut Map<String, Value>) {
    let mut granted: Vec<Value> = Vec::new();
    let mut add = |scope: &str| {
        if !granted.iter().any(|g| g.as_str() == Some(scope)) {
            granted.push(Value::String(scope.to_owned()));
        }
    };
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(text)) => text.split_ascii_whitespace().for_each(&mut add),
            Some(Value::Array(items)) if name == "scp" => items
                .iter()
                .filter_map(Value::as_str)
                .flat_map(str::split_ascii_whitespace)
                .for_each(&mut add),
            _ => {}
        }
    }
    claims.insert(CLAIM.to_owned(), Value::Array(granted));
}

/// A rule's `scopes` (all needed) and `scopes_any` (one is enough).
#[derive(Debug, Clone, Default)]
pub struct Required {
    all: Vec<String>,
    any: Vec<String>,
}

impl Required {
    /// `rule_key` is the rule's config key (`rules[2]`); an error names the offending entry.
    /// Scopes are single tokens (RFC 6749 §3.3), so they can be quoted in the challenge.
    pub fn new(all: &[String], any: &[String], rule_key: &str) -> Result<Self, KeyError> {
        for (field, list) in [("scopes", all), ("scopes_any", any)] {
            for (i, scope) in list.iter().enumerate() {
                let printable = scope
                    .bytes()
                    .all(|b| b == b'!' || (0x23..=0x7e).contains(&b));
                if scope.is_empty() || !printable || scope.contains('\\') {
                    return Err(KeyError::new(
                        format!("{rule_key}.{field}[{i}]"),
                        format!(
                            "{scope:?} is not a scope (printable ASCII without spaces, quotes \
                             or backslashes)"
                        ),
                    ));
                }
            }
        }
        Ok(Self {
            all: all.to_vec(),
            any: any.to_vec(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty() && self.any.is_empty()
    }

    /// `Err(ScopeMissing(what would do))` unless the token grants every `scopes` entry and, when
    /// `scopes_any` is set, at least one of those.
    pub fn check(&self, ctx: &Context<'_>) -> Result<(), Reject> {
        if self.is_empty() {
            return Ok(());
        }
        let granted: Vec<&str> = match ctx.identity.token.get(CLAIM) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let has = |scope: &String| granted.contains(&scope.as_str());
        let missing: Vec<String> = self.all.iter().filter(|s| !has(s)).cloned().collect();
        if !missing.is_empty() {
            return Err(Reject::ScopeMissing(missing));
        }
        if !self.any.is_empty() && !self.any.iter().any(has) {
            return Err(Reject::ScopeMissing(self.any.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scopes(claims: Value) -> Value {
        let Value::Object(mut map) = claims else {
            unreachable!()
        };
        normalize(&mut map);
        map[CLAIM].clone()
    }

    #[test]
    fn scope_and_scp_are_read_in_every_shape() {
        assert_eq!(scopes(json!({"scope": "a  b a"})), json!(["a", "b"]));
        assert_eq!(scopes(json!({"scp": ["a", "b c"]})), json!(["a", "b", "c"]));
        assert_eq!(scopes(json!({"scp": "x y"})), json!(["x", "y"]));
        assert_eq!(
            scopes(json!({"scope": "a", "scp": ["a", "b"]})),
            json!(["a", "b"])
        );
        assert_eq!(
            scopes(json!({"scope": ["a"], "scopes": ["admin"]})),
            json!([])
        );
        assert_eq!(scopes(json!({"scope": 1})), json!([]));
    }

    #[test]
    fn scope_names_are_single_tokens() {
        assert!(Required::new(&["read:items".into()], &[], "rules[0]").is_ok());
        for bad in ["", "a b", "a\"b", "a\\b", "é"] {
            let err = Required::new(&[], &[bad.into()], "rules[1]").unwrap_err();
            assert_eq!(err.key, "rules[1].scopes_any[0]", "{bad:?}");
        }
    }
}
