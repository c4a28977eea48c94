//! Atlas App Services JSON rule expressions, parsed once at config load and evaluated per request.
//!
//! Semantics follow the App Services "Rule Expressions" reference (docs-app-services,
//! `source/rules/expressions.txt`):
//! - An expression is `true`, `false` or an object; every field of an object must hold ("AND").
//! - Field names are expansions (`%%user.custom_data.roles`) or operators. Operators may be
//!   written with `%` or `$` (`%in` and `$in` are the same operator).
//! - A field's value is an operator document (`{"%in": [...]}`) applied to the field, an embedded
//!   expression (an object with `%%` fields; the field must equal its boolean result, as in
//!   `{"%%true": {...}}`), or a value (literal or expansion) the field must equal.
//! - Arrays on the field side match element-wise, as in MongoDB queries: `{"%%x": "a"}` holds when
//!   `%%x` is `"a"` or an array containing `"a"` (Atlas: `{"%%user.custom_data.readPartitions":
//!   "%%partition"}` "if the partition value is listed in the readPartitions field").
//! - A field that resolves to nothing (or JSON `null`) is absent: equality, `%in` and comparisons
//!   fail; `%exists: false`, `%ne` and `%nin` (the exact negations) hold.

mod eval;
mod explain;
#[cfg(test)]
mod tests;

use crate::expansion::{Context, Expansion, Scope};
use serde_json::Value;

/// A compiled `allow_when`.
#[derive(Debug, Clone)]
pub struct Expr {
    node: Node,
    /// As configured, for [`Expr::explain`].
    source: Value,
}

#[derive(Debug, Clone)]
enum Node {
    Const(bool),
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Field { left: Operand, cond: Cond },
}

/// What must hold for one field's value.
#[derive(Debug, Clone)]
enum Cond {
    Eq(Operand),
    Ne(Operand),
    In(Operand),
    Nin(Operand),
    Exists(bool),
    Cmp(CmpOp, Operand),
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    /// An embedded expression as the value: the field must equal its boolean result.
    Nested(Box<Node>),
}

#[derive(Debug, Clone, Copy)]
enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// A value side: a literal, an expansion, or a literal array/object with expansions inside.
#[derive(Debug, Clone)]
enum Operand {
    Literal(Value),
    Expansion(Expansion),
    Array(Vec<Operand>),
    Object(Vec<(String, Operand)>),
}

const LOGICAL: &[&str] = &["and", "or", "nor", "not"];
const FIELD_OPS: &[&str] = &[
    "in", "nin", "exists", "eq", "ne", "gt", "gte", "lt", "lte", "and", "or", "nor", "not",
];

/// `%in` → `Some("in")`; `%%user.id` and plain names → `None`.
fn operator_name(key: &str) -> Option<&str> {
    if key.starts_with("%%") {
        return None;
    }
    key.strip_prefix('%').or_else(|| key.strip_prefix('$'))
}

fn unknown_operator(key: &str, known: &[&str]) -> String {
    let known: Vec<String> = known.iter().map(|k| format!("%{k}")).collect();
    format!(
        "unknown or unsupported operator {key:?} here (supported: {})",
        known.join(", ")
    )
}

fn at(location: &str, reason: String) -> String {
    if location.is_empty() {
        reason
    } else {
        format!("at {location}: {reason}")
    }
}

impl Expr {
    /// Parses and checks an expression; the error names the place inside it (the caller adds the
    /// config key).
    pub fn parse(value: &Value, scope: Scope) -> Result<Self, String> {
        Ok(Self {
            node: parse_node(value, scope, "")?,
            source: value.clone(),
        })
    }

    pub fn eval(&self, ctx: &Context<'_>) -> bool {
        self.node.eval(ctx)
    }

    /// Whether any expansion in it refers to the user's document or permissions.
    pub fn needs_user_data(&self) -> bool {
        self.node.uses(&Expansion::needs_user_data)
    }

    /// Whether the expression reads any verified claim (`%%token`).
    pub fn needs_claims(&self) -> bool {
        self.node.uses(&Expansion::needs_claims)
    }

    /// Whether the expression reads the mapped metadata fields (`%%user.data`).
    pub fn needs_mapped_data(&self) -> bool {
        self.node.uses(&Expansion::needs_mapped_data)
    }
}

fn parse_node(value: &Value, scope: Scope, loc: &str) -> Result<Node, String> {
    let map = match value {
        Value::Bool(b) => return Ok(Node::Const(*b)),
        Value::Object(map) => map,
        other => {
            return Err(at(
                loc,
                format!("an expression must be an object or a boolean, not {other}"),
            ))
        }
    };
    let mut nodes = Vec::with_capacity(map.len());
    for (key, value) in map {
        let here = if loc.is_empty() {
            key.clone()
        } else {
            format!("{loc}.{key}")
        };
        let node = match operator_name(key) {
            Some(name @ ("and" | "or" | "nor")) => {
                let items = parse_list(value, &here, |v, l| parse_node(v, scope, l))?;
                match name {
                    "and" => Node::All(items),
                    "or" => Node::Any(items),
                    _ => Node::Not(Box::new(Node::Any(items))),
                }
            }
            Some("not") => Node::Not(Box::new(parse_node(value, scope, &here)?)),
            Some(name) if FIELD_OPS.contains(&name) => {
                return Err(at(
                    &here,
                    format!(
                    "{key:?} must be applied to a field, e.g. {{\"%%user.id\": {{{key:?}: ...}}}}"
                ),
                ))
            }
            Some(_) => return Err(at(&here, unknown_operator(key, LOGICAL))),
            None if key.starts_with("%%") => Node::Field {
                left: parse_expansion(key, scope).map_err(|e| at(loc, e))?,
                cond: parse_cond(value, scope, &here)?,
            },
            None => {
                return Err(at(
                    &here,
                    format!(
                        "field {key:?} is neither an expansion nor an operator; claimgate has no \
                         document to read it from (use e.g. \"%%token.{key}\")"
                    ),
                ))
            }
        };
        nodes.push(node);
    }
    Ok(match nodes.len() {
        1 => nodes.remove(0),
        _ => Node::All(nodes),
    })
}

fn parse_list<T>(
    value: &Value,
    loc: &str,
    item: impl Fn(&Value, &str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    match value {
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, v)| item(v, &format!("{loc}[{i}]")))
            .collect(),
        _ => Err(at(loc, "expects a non-empty array".to_owned())),
    }
}

fn parse_cond(value: &Value, scope: Scope, loc: &str) -> Result<Cond, String> {
    let map = match value {
        Value::Object(map) if map.keys().any(|k| k.starts_with("%%")) => {
            return Ok(Cond::Nested(Box::new(parse_node(value, scope, loc)?)))
        }
        Value::Object(map) if map.keys().any(|k| operator_name(k).is_some()) => map,
        _ => return Ok(Cond::Eq(parse_operand(value, scope, loc)?)),
    };
    if let Some(field) = map.keys().find(|k| operator_name(k).is_none()) {
        return Err(at(
            loc,
            format!("{field:?} mixes a field with operators in one object"),
        ));
    }
    let mut conds = Vec::with_capacity(map.len());
    for (key, value) in map {
        let here = format!("{loc}.{key}");
        let name = operator_name(key).unwrap_or_default();
        let cond = match name {
            "eq" => Cond::Eq(parse_operand(value, scope, &here)?),
            "ne" => Cond::Ne(parse_operand(value, scope, &here)?),
            "in" => Cond::In(parse_in_list(value, scope, &here)?),
            "nin" => Cond::Nin(parse_in_list(value, scope, &here)?),
            "exists" => Cond::Exists(match value {
                Value::Bool(b) => *b,
                Value::String(s) if s == "%%true" => true,
                Value::String(s) if s == "%%false" => false,
                _ => return Err(at(&here, "expects true or false".to_owned())),
            }),
            "gt" => Cond::Cmp(CmpOp::Gt, parse_operand(value, scope, &here)?),
            "gte" => Cond::Cmp(CmpOp::Gte, parse_operand(value, scope, &here)?),
            "lt" => Cond::Cmp(CmpOp::Lt, parse_operand(value, scope, &here)?),
            "lte" => Cond::Cmp(CmpOp::Lte, parse_operand(value, scope, &here)?),
            "and" => Cond::All(parse_list(value, &here, |v, l| parse_cond(v, scope, l))?),
            "or" => Cond::Any(parse_list(value, &here, |v, l| parse_cond(v, scope, l))?),
            "nor" => Cond::Not(Box::new(Cond::Any(parse_list(value, &here, |v, l| {
                parse_cond(v, scope, l)
            })?))),
            "not" => Cond::Not(Box::new(parse_cond(value, scope, &here)?)),
            _ => return Err(at(&here, unknown_operator(key, FIELD_OPS))),
        };
        conds.push(cond);
    }
    Ok(match conds.len() {
        1 => conds.remove(0),
        _ => Cond::All(conds),
    })
}

/// `%in`/`%nin` take a literal array or an expansion (resolving to an array, or to one value).
fn parse_in_list(value: &Value, scope: Scope, loc: &str) -> Result<Operand, String> {
    match value {
        Value::Array(_) => parse_operand(value, scope, loc),
        Value::String(s) if s.starts_with("%%") => parse_operand(value, scope, loc),
        _ => Err(at(loc, "expects an array or an expansion".to_owned())),
    }
}

fn parse_expansion(text: &str, scope: Scope) -> Result<Operand, String> {
    match text {
        "%%true" => Ok(Operand::Literal(Value::Bool(true))),
        "%%false" => Ok(Operand::Literal(Value::Bool(false))),
        _ => Expansion::parse(text, scope).map(Operand::Expansion),
    }
}

fn parse_operand(value: &Value, scope: Scope, loc: &str) -> Result<Operand, String> {
    let operand = match value {
        Value::String(s) if s.starts_with("%%") => {
            parse_expansion(s, scope).map_err(|e| at(loc, e))?
        }
        Value::Array(items) => {
            let items = items
                .iter()
                .enumerate()
                .map(|(i, v)| parse_operand(v, scope, &format!("{loc}[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            if items.iter().all(|o| matches!(o, Operand::Literal(_))) {
                Operand::Literal(value.clone())
            } else {
                Operand::Array(items)
            }
        }
        Value::Object(map) => {
            let fields = map
                .iter()
                .map(|(k, v)| Ok((k.clone(), parse_operand(v, scope, &format!("{loc}.{k}"))?)))
                .collect::<Result<Vec<_>, String>>()?;
            if fields.iter().all(|(_, o)| matches!(o, Operand::Literal(_))) {
                Operand::Literal(value.clone())
            } else {
                Operand::Object(fields)
            }
        }
        _ => Operand::Literal(value.clone()),
    };
    Ok(operand)
}
