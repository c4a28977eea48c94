//! Evaluating a compiled expression against one request's [`Context`].

use super::{CmpOp, Cond, Node, Operand};
use crate::expansion::{Context, Expansion};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cmp::Ordering;

impl Node {
    pub(super) fn eval(&self, ctx: &Context<'_>) -> bool {
        match self {
            Node::Const(b) => *b,
            Node::All(nodes) => nodes.iter().all(|n| n.eval(ctx)),
            Node::Any(nodes) => nodes.iter().any(|n| n.eval(ctx)),
            Node::Not(node) => !node.eval(ctx),
            Node::Field { left, cond } => {
                let value = left.resolve(ctx);
                cond.eval(value.as_deref(), ctx)
            }
        }
    }

    pub(super) fn uses(&self, pred: &dyn Fn(&Expansion) -> bool) -> bool {
        match self {
            Node::Const(_) => false,
            Node::All(nodes) | Node::Any(nodes) => nodes.iter().any(|n| n.uses(pred)),
            Node::Not(node) => node.uses(pred),
            Node::Field { left, cond } => left.uses(pred) || cond.uses(pred),
        }
    }
}

impl Cond {
    fn eval(&self, field: Option<&Value>, ctx: &Context<'_>) -> bool {
        match self {
            Cond::Eq(op) => equals(field, op, ctx),
            Cond::Ne(op) => !equals(field, op, ctx),
            Cond::In(op) => is_in(field, op, ctx),
            Cond::Nin(op) => !is_in(field, op, ctx),
            Cond::Exists(wanted) => field.is_some() == *wanted,
            Cond::Cmp(cmp, op) => match (field, op.resolve(ctx)) {
                (Some(field), Some(value)) => {
                    let holds = |v: &Value| compare(v, &value).is_some_and(|o| cmp.accepts(o));
                    match field {
                        Value::Array(items) => items.iter().any(holds),
                        _ => holds(field),
                    }
                }
                _ => false,
            },
            Cond::All(conds) => conds.iter().all(|c| c.eval(field, ctx)),
            Cond::Any(conds) => conds.iter().any(|c| c.eval(field, ctx)),
            Cond::Not(cond) => !cond.eval(field, ctx),
            Cond::Nested(node) => {
                field.is_some_and(|field| matches_value(field, &Value::Bool(node.eval(ctx))))
            }
        }
    }

    fn uses(&self, pred: &dyn Fn(&Expansion) -> bool) -> bool {
        match self {
            Cond::Eq(op) | Cond::Ne(op) | Cond::In(op) | Cond::Nin(op) | Cond::Cmp(_, op) => {
                op.uses(pred)
            }
            Cond::Exists(_) => false,
            Cond::All(conds) | Cond::Any(conds) => conds.iter().any(|c| c.uses(pred)),
            Cond::Not(cond) => cond.uses(pred),
            Cond::Nested(node) => node.uses(pred),
        }
    }
}

fn equals(field: Option<&Value>, op: &Operand, ctx: &Context<'_>) -> bool {
    match (field, op.resolve(ctx)) {
        (Some(field), Some(value)) => matches_value(field, &value),
        _ => false,
    }
}

fn is_in(field: Option<&Value>, op: &Operand, ctx: &Context<'_>) -> bool {
    field.is_some_and(|field| {
        op.list(ctx)
            .iter()
            .any(|candidate| matches_value(field, candidate))
    })
}

impl CmpOp {
    fn accepts(self, ordering: Ordering) -> bool {
        match self {
            CmpOp::Gt => ordering == Ordering::Greater,
            CmpOp::Gte => ordering != Ordering::Less,
            CmpOp::Lt => ordering == Ordering::Less,
            CmpOp::Lte => ordering != Ordering::Greater,
        }
    }
}

impl Operand {
    /// The runtime value; `None` when an expansion inside is absent.
    fn resolve<'s>(&'s self, ctx: &Context<'s>) -> Option<Cow<'s, Value>> {
        match self {
            Operand::Literal(v) => Some(Cow::Borrowed(v)),
            Operand::Expansion(e) => e.resolve(ctx),
            Operand::Array(items) => items
                .iter()
                .map(|o| o.resolve(ctx).map(Cow::into_owned))
                .collect::<Option<Vec<_>>>()
                .map(|items| Cow::Owned(Value::Array(items))),
            Operand::Object(fields) => fields
                .iter()
                .map(|(k, o)| Some((k.clone(), o.resolve(ctx)?.into_owned())))
                .collect::<Option<Map<_, _>>>()
                .map(|map| Cow::Owned(Value::Object(map))),
        }
    }

    /// The candidates of `%in`: array items (absent expansions among them are skipped), or the
    /// one value an expansion resolved to.
    fn list<'s>(&'s self, ctx: &Context<'s>) -> Vec<Cow<'s, Value>> {
        match self {
            Operand::Array(items) => items.iter().filter_map(|o| o.resolve(ctx)).collect(),
            _ => match self.resolve(ctx) {
                None => Vec::new(),
                Some(Cow::Borrowed(Value::Array(items))) => {
                    items.iter().map(Cow::Borrowed).collect()
                }
                Some(Cow::Owned(Value::Array(items))) => {
                    items.into_iter().map(Cow::Owned).collect()
                }
                Some(one) => vec![one],
            },
        }
    }

    fn uses(&self, pred: &dyn Fn(&Expansion) -> bool) -> bool {
        match self {
            Operand::Literal(_) => false,
            Operand::Expansion(e) => pred(e),
            Operand::Array(items) => items.iter().any(|o| o.uses(pred)),
            Operand::Object(fields) => fields.iter().any(|(_, o)| o.uses(pred)),
        }
    }
}

/// MongoDB query equality: the field equals the value, or the field is an array with an element
/// equal to it.
fn matches_value(field: &Value, value: &Value) -> bool {
    json_eq(field, value)
        || matches!(field, Value::Array(items) if items.iter().any(|item| json_eq(item, value)))
}

/// Deep equality where numbers compare by value (`1 == 1.0`), as BSON numbers do.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => compare(a, b) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| json_eq(a, b)))
        }
        _ => a == b,
    }
}

/// Order between two numbers or two strings; other pairs do not compare.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                Some(x.cmp(&y))
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                Some(x.cmp(&y))
            } else {
                x.as_f64()?.partial_cmp(&y.as_f64()?)
            }
        }
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}
