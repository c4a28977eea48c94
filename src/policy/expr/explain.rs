//! The value of every sub-expression of an `allow_when`, for `/explain`. Each value comes from
//! the one evaluator ([`Node::eval`]); this only pairs compiled nodes with the configured text
//! they were parsed from, walking both the way [`super::parse_node`] built one from the other.

use super::{operator_name, Expr, Node};
use crate::expansion::Context;
use serde_json::{Map, Value};

impl Expr {
    /// The whole expression first, then each sub-expression (logical operators and field
    /// conditions) depth first, each with what it evaluated to for `ctx`.
    pub fn explain(&self, ctx: &Context<'_>) -> Vec<(String, bool)> {
        let mut out = vec![(self.source.to_string(), self.node.eval(ctx))];
        if let Value::Object(map) = &self.source {
            if map.len() > 1 || map.keys().any(|k| operator_name(k).is_some()) {
                walk_members(map, &self.node, ctx, &mut out);
            }
        }
        // A one-operator expression is its own first member: list it once.
        out.dedup();
        out
    }
}

/// `map` parsed into `node`: one member is its own node, several are `All` in map order.
fn walk_members(
    map: &Map<String, Value>,
    node: &Node,
    ctx: &Context<'_>,
    out: &mut Vec<(String, bool)>,
) {
    match (map.len(), node) {
        (1, node) => {
            if let Some((key, value)) = map.iter().next() {
                walk_member(key, value, node, ctx, out);
            }
        }
        (_, Node::All(nodes)) if nodes.len() == map.len() => {
            for ((key, value), node) in map.iter().zip(nodes) {
                walk_member(key, value, node, ctx, out);
            }
        }
        _ => {}
    }
}

fn walk_member(
    key: &str,
    value: &Value,
    node: &Node,
    ctx: &Context<'_>,
    out: &mut Vec<(String, bool)>,
) {
    let mut text = Map::new();
    text.insert(key.to_owned(), value.clone());
    out.push((Value::Object(text).to_string(), node.eval(ctx)));
    let items = match (operator_name(key), node, value) {
        (Some("and"), Node::All(items), Value::Array(src))
        | (Some("or"), Node::Any(items), Value::Array(src)) => items.iter().zip(src).collect(),
        (Some("nor"), Node::Not(inner), Value::Array(src)) => match &**inner {
            Node::Any(items) => items.iter().zip(src).collect(),
            _ => Vec::new(),
        },
        (Some("not"), Node::Not(inner), src) => vec![(&**inner, src)],
        _ => Vec::new(),
    };
    for (node, src) in items {
        match src {
            Value::Object(map) => {
                if map.len() == 1 {
                    if let Some((k, v)) = map.iter().next() {
                        walk_member(k, v, node, ctx, out);
                    }
                } else {
                    out.push((src.to_string(), node.eval(ctx)));
                    walk_members(map, node, ctx, out);
                }
            }
            other => out.push((other.to_string(), node.eval(ctx))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Expr;
    use crate::claims::Identity;
    use crate::expansion::{Context, Scope};
    use crate::packed_json::PackedJson;
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn every_sub_expression_is_listed_with_its_value() {
        let identity = Identity {
            id: "u1".into(),
            provider: Arc::from("corp"),
            data: Arc::default(),
            token: Arc::new(json!({"level": 3}).as_object().cloned().unwrap_or_default()),
        };
        let custom = PackedJson::pack(&json!({"roles": ["editor"]}));
        let ctx = Context {
            identity: &identity,
            custom_data: Some(custom.root()),
            permissions: None,
            request: None,
        };
        let scope = Scope {
            user_data: true,
            request: true,
        };
        let source = json!({
            "%%user.custom_data.roles": "editor",
            "%or": [{"%%token.level": {"%gt": 5}}, {"%%user.id": "u2"}],
        });
        let expr = Expr::parse(&source, scope).unwrap();
        let explained = expr.explain(&ctx);
        let expected = [
            (source.to_string(), false),
            (r#"{"%%user.custom_data.roles":"editor"}"#.to_owned(), true),
            (
                r#"{"%or":[{"%%token.level":{"%gt":5}},{"%%user.id":"u2"}]}"#.to_owned(),
                false,
            ),
            (r#"{"%%token.level":{"%gt":5}}"#.to_owned(), false),
            (r#"{"%%user.id":"u2"}"#.to_owned(), false),
        ];
        assert_eq!(explained, expected);
        assert_eq!(explained[0].1, expr.eval(&ctx));
    }
}
