//! What `POST /explain` and `claimgate explain` report: a [`Trace`] the one decision in
//! [`crate::decision`] fills in as it runs, when the door hands it one. The request path passes
//! none, so every hook below is a branch on `None` and nothing is allocated.

use crate::config::TokenSource;
use crate::error::Reject;
use crate::packed_json::PackedJson;
use crate::userdata::UserRecord;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Every check the decision can report, in the order it runs them. Those a run did not reach
/// are listed as `skipped` ("not_reached"), so an answer always shows the whole pipeline.
pub const CHECKS: &[&str] = &[
    "request",
    "route",
    "token",
    "token_size",
    "structure",
    "iss",
    "alg",
    "kid",
    "signature",
    "exp",
    "nbf",
    "iat",
    "aud",
    "user_id",
    "metadata",
    "token_source",
    "user_data",
    "revocation",
    "scopes",
    "allow_when",
    "headers",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Skipped,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Check {
    pub check: &'static str,
    pub result: Outcome,
    /// The reason code: a [`Reject::code`] on failure, a short word on skip, none on pass.
    pub reason: Option<&'static str>,
    pub detail: Value,
}

/// The user data document a decision used.
#[derive(Debug, Clone)]
pub struct UserDataUsed {
    pub document: Option<Value>,
    pub from_cache: bool,
    pub age_seconds: Option<u64>,
}

/// The rule that matched, with the value of every sub-expression of its `allow_when`.
#[derive(Debug, Clone)]
pub struct RuleUsed {
    pub name: String,
    pub allow_when: Vec<(String, bool)>,
}

/// One decision, step by step.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub source: Option<String>,
    pub provider: Option<String>,
    pub checks: Vec<Check>,
    pub metadata: Option<Map<String, Value>>,
    pub user_data: Option<UserDataUsed>,
    pub rule: Option<RuleUsed>,
}

impl Trace {
    pub fn pass(&mut self, check: &'static str, detail: Value) {
        self.push(check, Outcome::Pass, None, detail);
    }

    pub fn fail(&mut self, check: &'static str, reject: &Reject, detail: Value) {
        let mut detail = detail;
        if detail.is_null() {
            detail = json!({ "description": reject.description() });
        } else if let Value::Object(map) = &mut detail {
            map.insert("description".into(), reject.description().into());
        }
        self.push(check, Outcome::Fail, Some(reject.code()), detail);
    }

    pub fn skip(&mut self, check: &'static str, why: &'static str) {
        self.push(check, Outcome::Skipped, Some(why), Value::Null);
    }

    /// The user data document the decision used; `cached` is what the cache held before the
    /// lookup: the record came from the cache when the lookup returned that very record.
    pub fn used_user_data(
        &mut self,
        record: &Arc<UserRecord>,
        cached: Option<(Arc<UserRecord>, Duration)>,
    ) {
        let cached = cached.filter(|(c, _)| Arc::ptr_eq(c, record));
        self.user_data = Some(UserDataUsed {
            document: record.document.as_ref().map(PackedJson::to_value),
            from_cache: cached.is_some(),
            age_seconds: cached.map(|(_, age)| age.as_secs()),
        });
    }

    /// Records `result` as `check`'s outcome and hands it back, for `?` at the call site.
    pub fn step<T>(
        &mut self,
        check: &'static str,
        result: Result<T, Reject>,
        detail: impl FnOnce(Result<&T, &Reject>) -> Value,
    ) -> Result<T, Reject> {
        match &result {
            Ok(value) => {
                let detail = detail(Ok(value));
                self.pass(check, detail)
            }
            Err(reject) => {
                let detail = detail(Err(reject));
                self.fail(check, reject, detail)
            }
        }
        result
    }

    fn push(
        &mut self,
        check: &'static str,
        result: Outcome,
        reason: Option<&'static str>,
        detail: Value,
    ) {
        self.checks.push(Check {
            check,
            result,
            reason,
            detail,
        });
    }

    /// The checks in [`CHECKS`] order, each one the run did not reach listed as skipped.
    pub fn finished_checks(&self) -> Vec<Check> {
        let mut out: Vec<Check> = Vec::with_capacity(CHECKS.len());
        for name in CHECKS {
            let mut seen = self.checks.iter().filter(|c| c.check == *name).peekable();
            if seen.peek().is_none() {
                out.push(Check {
                    check: name,
                    result: Outcome::Skipped,
                    reason: Some("not_reached"),
                    detail: Value::Null,
                });
            }
            out.extend(seen.cloned());
        }
        out
    }

    pub fn checks_json(&self) -> Value {
        self.finished_checks()
            .into_iter()
            .map(|c| {
                json!({
                    "check": c.check,
                    "result": c.result.as_str(),
                    "reason": c.reason,
                    "detail": c.detail,
                })
            })
            .collect()
    }
}

/// How a token source reads in an answer: `header:Authorization`, `cookie:session`...
pub fn source_name(source: &TokenSource) -> String {
    match source {
        TokenSource::Header(name) => format!("header:{name}"),
        TokenSource::Cookie(name) => format!("cookie:{name}"),
        TokenSource::Query(name) => format!("query:{name}"),
    }
}

/// Runs `f` on the trace when there is one: the request path's hooks cost a branch.
#[inline]
pub fn note(trace: &mut Option<&mut Trace>, f: impl FnOnce(&mut Trace)) {
    if let Some(trace) = trace.as_deref_mut() {
        f(trace)
    }
}

/// [`Trace::step`] when there is a trace; `result` unchanged otherwise.
#[inline]
pub fn step<T>(
    trace: &mut Option<&mut Trace>,
    check: &'static str,
    result: Result<T, Reject>,
    detail: impl FnOnce(Result<&T, &Reject>) -> Value,
) -> Result<T, Reject> {
    match trace.as_deref_mut() {
        Some(trace) => trace.step(check, result, detail),
        None => result,
    }
}

/// Records `result` only if it failed (the caller reports the pass once, later).
#[inline]
pub fn failed<T>(
    trace: &mut Option<&mut Trace>,
    check: &'static str,
    result: Result<T, Reject>,
) -> Result<T, Reject> {
    if let (Some(trace), Err(reject)) = (trace.as_deref_mut(), &result) {
        trace.fail(check, reject, Value::Null);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreached_checks_are_listed_as_skipped_in_order() {
        let mut trace = Trace::default();
        trace.pass("route", json!({"rule": null}));
        trace.fail("token", &Reject::TokenMissing, Value::Null);
        let checks = trace.finished_checks();
        assert_eq!(checks.len(), CHECKS.len());
        assert_eq!(checks[0].check, "request");
        assert_eq!(checks[0].result, Outcome::Skipped);
        assert_eq!(checks[1].result, Outcome::Pass);
        assert_eq!(checks[2].result, Outcome::Fail);
        assert_eq!(checks[2].reason, Some("token_missing"));
        assert!(checks[2].detail["description"].is_string());
        assert!(checks[3..].iter().all(|c| c.result == Outcome::Skipped));
    }

    #[test]
    fn step_records_the_result_and_returns_it() {
        let mut none: Option<&mut Trace> = None;
        assert_eq!(
            step(&mut none, "exp", Ok::<_, Reject>(1), |_| json!({})),
            Ok(1)
        );
        let mut trace = Trace::default();
        let r = step(
            &mut Some(&mut trace),
            "aud",
            Err::<(), _>(Reject::AudienceMismatch),
            |_| json!({"configured": ["api"]}),
        );
        assert_eq!(r, Err(Reject::AudienceMismatch));
        assert_eq!(trace.checks[0].reason, Some("audience_mismatch"));
        assert_eq!(trace.checks[0].detail["configured"], json!(["api"]));
    }

    #[test]
    fn user_data_is_from_the_cache_only_when_the_lookup_returned_the_cached_record() {
        let record = |group: &str| {
            Arc::new(UserRecord {
                document: Some(PackedJson::pack(&json!({ "group": group }))),
                permissions: None,
                blocked: false,
                expires_at: None,
                tokens_valid_after: None,
            })
        };
        let cached = record("a");
        let mut trace = Trace::default();
        trace.used_user_data(&cached, Some((cached.clone(), Duration::from_secs(7))));
        let used = trace.user_data.clone().unwrap();
        assert!(used.from_cache);
        assert_eq!(used.age_seconds, Some(7));
        assert_eq!(used.document, Some(json!({"group": "a"})));

        // A stale entry was refetched: the document used is the new one, not from the cache.
        let fresh = record("b");
        trace.used_user_data(&fresh, Some((cached, Duration::from_secs(400))));
        let used = trace.user_data.unwrap();
        assert!(!used.from_cache);
        assert_eq!(used.age_seconds, None);
        assert_eq!(used.document, Some(json!({"group": "b"})));
    }
}
