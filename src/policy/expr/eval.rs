//! Evaluating a compiled expression against one request's [`Context`].
//!
//! Values are read through [`Json`], so a user's packed custom data is compared in place.

use super::{CmpOp, Cond, Node, Operand};
use crate::expansion::{Context, Expansion};
use crate::json_view::{Json, Resolved, Shape};
use serde_json::{Map, Number, Value};
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
                cond.eval(value.as_ref().map(Resolved::json), ctx)
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
    fn eval(&self, field: Option<Json<'_>>, ctx: &Context<'_>) -> bool {
        match self {
            Cond::Eq(op) => equals(field, op, ctx),
            Cond::Ne(op) => !equals(field, op, ctx),
            Cond::In(op) => is_in(field, op, ctx),
            Cond::Nin(op) => !is_in(field, op, ctx),
            Cond::Exists(wanted) => field.is_some() == *wanted,
            Cond::Cmp(cmp, op) => match (field, op.resolve(ctx)) {
                (Some(field), Some(value)) => {
                    let value = value.json().shape();
                    let holds = |v: Shape| compare(&v, &value).is_some_and(|o| cmp.accepts(o));
                    match field.shape() {
                        Shape::Array(mut items) => items.any(|item| holds(item.shape())),
                        one => holds(one),
                    }
                }
                _ => false,
            },
            Cond::All(conds) => conds.iter().all(|c| c.eval(field, ctx)),
            Cond::Any(conds) => conds.iter().any(|c| c.eval(field, ctx)),
            Cond::Not(cond) => !cond.eval(field, ctx),
            Cond::Nested(node) => {
                let holds = Shape::Bool(node.eval(ctx));
                field.is_some_and(|field| matches_value(&field.shape(), &holds))
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

fn equals(field: Option<Json<'_>>, op: &Operand, ctx: &Context<'_>) -> bool {
    match (field, op.resolve(ctx)) {
        (Some(field), Some(value)) => matches_value(&field.shape(), &value.json().shape()),
        _ => false,
    }
}

fn is_in(field: Option<Json<'_>>, op: &Operand, ctx: &Context<'_>) -> bool {
    field.is_some_and(|field| {
        // Read out once: a packed field is decoded here, not again for every candidate.
        let field = field.shape();
        op.any_candidate(ctx, |candidate| matches_value(&field, &candidate.shape()))
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
    fn resolve<'s>(&'s self, ctx: &Context<'s>) -> Option<Resolved<'s>> {
        match self {
            Operand::Literal(v) => Some(Resolved::Borrowed(v)),
            Operand::Expansion(e) => e.resolve_json(ctx),
            Operand::Array(items) => items
                .iter()
                .map(|o| o.resolve(ctx).map(Resolved::into_value))
                .collect::<Option<Vec<_>>>()
                .map(|items| Resolved::Owned(Value::Array(items))),
            Operand::Object(fields) => fields
                .iter()
                .map(|(k, o)| Some((k.clone(), o.resolve(ctx)?.into_value())))
                .collect::<Option<Map<_, _>>>()
                .map(|map| Resolved::Owned(Value::Object(map))),
        }
    }

    /// Whether a candidate of `%in` passes `check`: the array's items (absent expansions among
    /// them are skipped), or the items of the array an expansion resolved to, or that one value.
    fn any_candidate(&self, ctx: &Context<'_>, mut check: impl FnMut(Json<'_>) -> bool) -> bool {
        match self {
            Operand::Array(items) => items
                .iter()
                .any(|o| o.resolve(ctx).is_some_and(|c| check(c.json()))),
            _ => self.resolve(ctx).is_some_and(|resolved| {
                let one = resolved.json();
                match one.shape() {
                    Shape::Array(mut items) => items.any(check),
                    _ => check(one),
                }
            }),
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
fn matches_value(field: &Shape<'_>, value: &Shape<'_>) -> bool {
    json_eq(field.clone(), value.clone())
        || match field {
            Shape::Array(items) => items
                .clone()
                .any(|item| json_eq(item.shape(), value.clone())),
            _ => false,
        }
}

/// Deep equality where numbers compare by value (`1 == 1.0`), as BSON numbers do.
fn json_eq(a: Shape<'_>, b: Shape<'_>) -> bool {
    match (a, b) {
        (Shape::Null, Shape::Null) => true,
        (Shape::Bool(x), Shape::Bool(y)) => x == y,
        (Shape::Number(x), Shape::Number(y)) => compare_numbers(&x, &y) == Some(Ordering::Equal),
        (Shape::String(x), Shape::String(y)) => x == y,
        (Shape::Array(mut x), Shape::Array(mut y)) => loop {
            match (x.next(), y.next()) {
                (None, None) => break true,
                (Some(a), Some(b)) if json_eq(a.shape(), b.shape()) => {}
                _ => break false,
            }
        },
        (Shape::Object(x), Shape::Object(y)) => {
            x.count() == y.count()
                && x.all(|key, a| y.get(key).is_some_and(|b| json_eq(a.shape(), b.shape())))
        }
        _ => false,
    }
}

/// Order between two numbers or two strings; other pairs do not compare.
fn compare(a: &Shape<'_>, b: &Shape<'_>) -> Option<Ordering> {
    match (a, b) {
        (Shape::Number(x), Shape::Number(y)) => compare_numbers(x, y),
        (Shape::String(x), Shape::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn compare_numbers(x: &Number, y: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
        Some(x.cmp(&y))
    } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
        Some(x.cmp(&y))
    } else {
        x.as_f64()?.partial_cmp(&y.as_f64()?)
    }
}
