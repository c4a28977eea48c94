//! The authorize step: which rule a request falls under (first match wins), whether that rule
//! needs a token, and whether its `allow_when` expression holds for the caller.
//!
//! Matching:
//! - `path_prefix` is segment-aware: `/admin` matches `/admin`, `/admin/` and `/admin/x`, never
//!   `/administrator`. A trailing `/` in the prefix is ignored (`/admin/` is `/admin`), and `/`
//!   matches every path.
//! - `path` is an exact match.
//! - Paths are compared after [`judge`] (so `/public/../admin` is matched as `/admin`, and
//!   spellings some upstream reads differently are refused), case-sensitively unless the rule
//!   sets `ignore_case` (for upstreams that route case-insensitively: IIS, some Spring setups).
//! - `methods` compare case-insensitively; an empty list matches every method.
//! - A rule with no match fields matches everything; no matching rule means "token required".
//!
//! `auth` (acted on by the caller): `none` ignores any token and injects no identity; `optional`
//! uses a valid token when one is sent, lets a request without one through, and still answers 401
//! for an invalid one; `required` (the default) needs a valid token. `allow_when` is only allowed
//! with `required`, since without a verified token there is no user to check.

mod expr;
mod path;

pub use expr::Expr;
pub use path::{check_unruled, judge, normalize_path, JudgedPath};

use crate::config::{AuthMode, KeyError, PathsConfig, RuleConfig, RuleMatch};
use crate::error::Reject;
use crate::expansion::{Context, Scope};
use crate::explain::{note, step, Trace};
use crate::scopes::Required;

/// The compiled `rules` section.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    allow_semicolons: bool,
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The configured `name`, or `rules[i]`.
    pub name: String,
    pub auth: AuthMode,
    matcher: Matcher,
    allow_when: Option<Expr>,
    scopes: Required,
}

#[derive(Debug, Clone)]
struct Matcher {
    /// Without its trailing `/`; empty for `/`.
    prefix: Option<String>,
    path: Option<String>,
    /// Upper-cased; empty = any.
    methods: Vec<String>,
    ignore_case: bool,
}

impl Policy {
    /// `user_data` says whether a `user_data` section is configured; without one,
    /// `%%user.custom_data` and `%%user.permissions` are config errors.
    pub fn compile(
        rules: &[RuleConfig],
        paths: &PathsConfig,
        user_data: bool,
    ) -> Result<Self, KeyError> {
        let scope = Scope {
            user_data,
            request: true,
        };
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, rule)| Rule::compile(rule, &format!("rules[{i}]"), scope))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            rules,
            allow_semicolons: paths.allow_semicolons,
        })
    }

    /// The path the rules judge, and the URI to forward if it must change. Without rules no
    /// spelling changes a decision, so only the always-refused ones are checked.
    pub fn judge(&self, uri: &http::Uri) -> Result<JudgedPath, Reject> {
        if self.rules.is_empty() {
            check_unruled(uri.path())?;
            return Ok(JudgedPath {
                forward: None,
                judged: uri.path().to_owned(),
            });
        }
        judge(uri, self.allow_semicolons)
    }

    /// The first rule matching the request, or `None` (then a valid token is required and
    /// nothing more).
    pub fn route(&self, method: &http::Method, path: &str) -> Option<&Rule> {
        let path = normalize_path(path);
        self.rules
            .iter()
            .find(|rule| rule.matcher.matches(method.as_str(), &path))
    }

    /// Whether any rule's expression refers to `%%user.custom_data` or `%%user.permissions`.
    pub fn needs_user_data(&self) -> bool {
        self.rules.iter().any(Rule::needs_user_data)
    }

    /// Whether any rule reads the token's claims at request time.
    pub fn needs_claims(&self) -> bool {
        self.rules.iter().any(Rule::needs_claims)
    }

    /// Whether any rule reads the mapped metadata fields at request time.
    pub fn needs_mapped_data(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.allow_when.as_ref().is_some_and(Expr::needs_mapped_data))
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

impl Rule {
    fn compile(cfg: &RuleConfig, key: &str, scope: Scope) -> Result<Self, KeyError> {
        let name = match &cfg.name {
            Some(name) if name.trim().is_empty() => {
                return Err(KeyError::new(format!("{key}.name"), "must not be empty"))
            }
            Some(name) => name.clone(),
            None => key.to_owned(),
        };
        let matcher = Matcher::compile(&cfg.matches, &format!("{key}.match"))?;
        let allow_when =
            match &cfg.allow_when {
                None => None,
                Some(_) if cfg.auth != AuthMode::Required => return Err(KeyError::new(
                    format!("{key}.allow_when"),
                    "needs `auth: required` (without a verified token there is no user to check)",
                )),
                Some(value) => Some(
                    Expr::parse(value, scope)
                        .map_err(|e| KeyError::new(format!("{key}.allow_when"), e))?,
                ),
            };
        let scopes = Required::new(&cfg.scopes, &cfg.scopes_any, key)?;
        if !scopes.is_empty() && cfg.auth != AuthMode::Required {
            return Err(KeyError::new(
                format!("{key}.scopes"),
                "needs `auth: required` (without a verified token no scope is granted)",
            ));
        }
        Ok(Self {
            name,
            auth: cfg.auth,
            matcher,
            allow_when,
            scopes,
        })
    }

    /// Whether checking this rule needs the user's document or permissions loaded.
    pub fn needs_user_data(&self) -> bool {
        self.allow_when.as_ref().is_some_and(Expr::needs_user_data)
    }

    /// Whether the rule reads the token's claims at request time (scopes live there).
    fn needs_claims(&self) -> bool {
        !self.scopes.is_empty() || self.allow_when.as_ref().is_some_and(Expr::needs_claims)
    }

    /// Scopes first (`ScopeMissing`, naming what would do), then `allow_when`
    /// (`Forbidden(name)`); `Ok` when the rule asks for neither.
    pub fn check(&self, ctx: &Context<'_>) -> Result<(), Reject> {
        self.check_traced(ctx, &mut None)
    }

    /// [`Rule::check`], reporting the scopes and each `allow_when` sub-expression to `trace`.
    pub fn check_traced(
        &self,
        ctx: &Context<'_>,
        trace: &mut Option<&mut Trace>,
    ) -> Result<(), Reject> {
        if self.scopes.is_empty() {
            note(trace, |t| t.skip("scopes", "not_configured"));
        } else {
            step(
                trace,
                "scopes",
                self.scopes.check(ctx),
                |_| serde_json::json!({ "rule": self.name }),
            )?;
        }
        let Some(expr) = &self.allow_when else {
            note(trace, |t| t.skip("allow_when", "not_configured"));
            return Ok(());
        };
        let holds = match trace.as_deref_mut() {
            Some(t) => {
                let values = expr.explain(ctx);
                let holds = values.first().is_some_and(|(_, v)| *v);
                if let Some(rule) = &mut t.rule {
                    rule.allow_when = values;
                }
                holds
            }
            None => expr.eval(ctx),
        };
        let result = if holds {
            Ok(())
        } else {
            Err(Reject::Forbidden(self.name.clone()))
        };
        step(
            trace,
            "allow_when",
            result,
            |_| serde_json::json!({ "rule": self.name }),
        )
    }
}

impl Matcher {
    fn compile(cfg: &RuleMatch, key: &str) -> Result<Self, KeyError> {
        let slash_path = |field: &str, value: &Option<String>| match value {
            Some(p) if !p.starts_with('/') => Err(KeyError::new(
                format!("{key}.{field}"),
                format!("must start with `/` (got {p:?})"),
            )),
            Some(p) if normalize_path(p) != p.as_str() => Err(KeyError::new(
                format!("{key}.{field}"),
                format!(
                    "{p:?} is not in normal form (requests are matched as {:?})",
                    normalize_path(p)
                ),
            )),
            _ => Ok(()),
        };
        slash_path("path_prefix", &cfg.path_prefix)?;
        slash_path("path", &cfg.path)?;
        if cfg.path_prefix.is_some() && cfg.path.is_some() {
            return Err(KeyError::new(
                format!("{key}.path"),
                "set at most one of `path` and `path_prefix`",
            ));
        }
        let methods = cfg
            .methods
            .iter()
            .enumerate()
            .map(|(i, m)| match http::Method::from_bytes(m.as_bytes()) {
                Ok(_) => Ok(m.to_ascii_uppercase()),
                Err(_) => Err(KeyError::new(
                    format!("{key}.methods[{i}]"),
                    format!("{m:?} is not an HTTP method"),
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            prefix: cfg
                .path_prefix
                .as_ref()
                .map(|p| p.trim_end_matches('/').to_owned()),
            path: cfg.path.clone(),
            methods,
            ignore_case: cfg.ignore_case,
        })
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok =
            self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method));
        let same = |a: &str, b: &str| {
            if self.ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        let path_ok = match (&self.prefix, &self.path) {
            (Some(prefix), _) => {
                prefix.is_empty()
                    || path.get(..prefix.len()).is_some_and(|head| {
                        let rest = &path[prefix.len()..];
                        same(head, prefix) && (rest.is_empty() || rest.starts_with('/'))
                    })
            }
            (None, Some(exact)) => same(path, exact),
            (None, None) => true,
        };
        method_ok && path_ok
    }
}

#[cfg(test)]
mod tests;
