//! The time claims `exp`, `nbf` and `iat` (RFC 7519 §2 NumericDate).

use crate::error::Reject;
use crate::explain::{note, step, Trace};
use serde_json::{json, Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// 9999-12-31T23:59:59Z. Anything later is not a date an issuer means: `exp: 1e300` used to read
/// as `u64::MAX`, a token that never expires and never leaves the verified-token cache.
pub const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

pub fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The claim as whole seconds. `exp: null` is "not there" (`claim_missing`, like a token without
/// `exp`); a null `nbf` or `iat` is not a NumericDate and is refused like any other non-number,
/// as Envoy does: skipping it would let a token opt out of its not-before check. A fractional
/// NumericDate is valid and truncated.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, Reject> {
    let out_of_range = Reject::Malformed(match name {
        "exp" => "exp is not a NumericDate between 0 and 253402300799",
        "nbf" => "nbf is not a NumericDate between 0 and 253402300799",
        _ => "iat is not a NumericDate between 0 and 253402300799",
    });
    let seconds = match claims.get(name) {
        None => return Ok(None),
        Some(Value::Null) if name == "exp" => return Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(whole) => Some(whole),
            // `-0.0 >= 0.0` holds: negative zero is zero. NaN and infinities cannot come out of
            // serde_json, but fail the range check anyway.
            None => n
                .as_f64()
                .filter(|f| *f >= 0.0 && *f < (MAX_NUMERIC_DATE + 1) as f64)
                .map(|f| f.trunc() as u64),
        },
        Some(_) => None,
    };
    match seconds {
        Some(s) if s <= MAX_NUMERIC_DATE => Ok(Some(s)),
        _ => Err(out_of_range),
    }
}

/// Returns the raw `exp` (the skew only widens acceptance, never cache lifetime). A token without
/// `exp` is refused: a bearer token that never expires cannot be revoked. All three claims are
/// range-checked before any is compared, so a malformed `iat` is `malformed` even on an expired
/// token. Each claim's outcome goes to `trace` with the clock values it was judged against.
pub fn check_times(
    claims: &Map<String, Value>,
    now: u64,
    skew: u64,
    trace: &mut Option<&mut Trace>,
) -> Result<u64, Reject> {
    let dates = ["exp", "nbf", "iat"].map(|name| (name, numeric_date(claims, name)));
    let clock = |name: &str, value: Option<u64>| json!({"claim": name, "value": value, "raw": claims.get(name), "now": now, "skew_seconds": skew});
    for (name, date) in &dates {
        if let Err(reject) = date {
            note(trace, |t| t.fail(name, reject, clock(name, None)));
            return Err(reject.clone());
        }
    }
    let [(_, exp), (_, nbf), (_, iat)] = dates.map(|(n, d)| (n, d.ok().flatten()));
    let expired = match exp {
        None => Err(Reject::ClaimMissing("exp".into())),
        Some(exp) if now >= exp.saturating_add(skew) => Err(Reject::TokenExpired),
        Some(exp) => Ok(exp),
    };
    let exp = step(trace, "exp", expired, |_| clock("exp", exp))?;
    for (name, date) in [("nbf", nbf), ("iat", iat)] {
        match date {
            Some(t) if t > now.saturating_add(skew) => {
                let reject = Reject::TokenNotYetValid;
                note(trace, |tr| tr.fail(name, &reject, clock(name, date)));
                return Err(reject);
            }
            Some(_) => note(trace, |tr| tr.pass(name, clock(name, date))),
            None => note(trace, |tr| tr.skip(name, "absent")),
        }
    }
    Ok(exp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;

    fn check(claims: Value) -> Result<u64, Reject> {
        let Value::Object(map) = claims else {
            unreachable!()
        };
        check_times(&map, NOW, 60, &mut None)
    }

    fn malformed(claim: &str) -> Reject {
        let all = [
            "exp is not a NumericDate between 0 and 253402300799",
            "nbf is not a NumericDate between 0 and 253402300799",
            "iat is not a NumericDate between 0 and 253402300799",
        ];
        Reject::Malformed(all.into_iter().find(|m| m.starts_with(claim)).unwrap())
    }

    #[test]
    fn in_range_dates_are_accepted_and_fractions_truncated() {
        assert_eq!(check(json!({"exp": NOW + 10})), Ok(NOW + 10));
        assert_eq!(check(json!({"exp": (NOW + 10) as f64 + 0.9})), Ok(NOW + 10));
        assert_eq!(
            check(json!({"exp": NOW + 10, "nbf": 0, "iat": -0.0})),
            Ok(NOW + 10)
        );
        // The very last second of year 9999 is still a date.
        assert_eq!(
            check(json!({"exp": MAX_NUMERIC_DATE})),
            Ok(MAX_NUMERIC_DATE)
        );
        assert_eq!(
            check(json!({"exp": MAX_NUMERIC_DATE as f64 + 0.5})),
            Ok(MAX_NUMERIC_DATE)
        );
    }

    #[test]
    fn out_of_range_or_non_numbers_are_malformed() {
        for bad in [
            json!(1e300),
            json!(MAX_NUMERIC_DATE + 1),
            json!((MAX_NUMERIC_DATE + 1) as f64),
            json!(u64::MAX),
            json!(-1),
            json!(-0.5),
            json!("1700000600"),
            json!(true),
            json!([NOW]),
            json!({"t": NOW}),
        ] {
            assert_eq!(check(json!({ "exp": bad })), Err(malformed("exp")), "{bad}");
            let with = |claim: &str| json!({"exp": NOW + 10, claim: bad.clone()});
            assert_eq!(check(with("nbf")), Err(malformed("nbf")), "{bad}");
            assert_eq!(check(with("iat")), Err(malformed("iat")), "{bad}");
        }
    }

    #[test]
    fn null_exp_is_missing_and_null_nbf_or_iat_malformed() {
        assert_eq!(
            check(json!({"exp": null})),
            Err(Reject::ClaimMissing("exp".into()))
        );
        let nbf = check(json!({"exp": NOW + 10, "nbf": null}));
        assert_eq!(nbf, Err(malformed("nbf")));
        let iat = check(json!({"exp": NOW + 10, "iat": null}));
        assert_eq!(iat, Err(malformed("iat")));
    }

    #[test]
    fn expiry_and_not_before_still_apply() {
        assert_eq!(check(json!({"exp": NOW - 61})), Err(Reject::TokenExpired));
        assert_eq!(
            check(json!({"exp": NOW + 600, "nbf": NOW + 61})),
            Err(Reject::TokenNotYetValid)
        );
        assert_eq!(
            check(json!({"exp": NOW + 600, "iat": NOW + 61})),
            Err(Reject::TokenNotYetValid)
        );
    }

    #[test]
    fn trace_shows_each_time_claim_with_the_clock() {
        let Value::Object(map) = json!({"exp": NOW - 61, "iat": NOW - 100}) else {
            unreachable!()
        };
        let mut trace = Trace::default();
        let result = check_times(&map, NOW, 60, &mut Some(&mut trace));
        assert_eq!(result, Err(Reject::TokenExpired));
        assert_eq!(trace.checks.len(), 1);
        let exp = &trace.checks[0];
        assert_eq!((exp.check, exp.reason), ("exp", Some("token_expired")));
        assert_eq!(exp.detail["value"], json!(NOW - 61));
        assert_eq!(exp.detail["now"], json!(NOW));
        assert_eq!(exp.detail["skew_seconds"], json!(60));

        let Value::Object(map) = json!({"exp": NOW + 10, "nbf": NOW + 61}) else {
            unreachable!()
        };
        let mut trace = Trace::default();
        let result = check_times(&map, NOW, 60, &mut Some(&mut trace));
        assert_eq!(result, Err(Reject::TokenNotYetValid));
        let names: Vec<_> = trace.checks.iter().map(|c| (c.check, c.result)).collect();
        use crate::explain::Outcome::{Fail, Pass};
        assert_eq!(names, [("exp", Pass), ("nbf", Fail)]);
        assert_eq!(trace.checks[1].detail["value"], json!(NOW + 61));

        let Value::Object(map) = json!({"exp": NOW + 10}) else {
            unreachable!()
        };
        let mut trace = Trace::default();
        assert_eq!(
            check_times(&map, NOW, 60, &mut Some(&mut trace)),
            Ok(NOW + 10)
        );
        let names: Vec<_> = trace.checks.iter().map(|c| (c.check, c.reason)).collect();
        assert_eq!(
            names,
            [
                ("exp", None),
                ("nbf", Some("absent")),
                ("iat", Some("absent"))
            ]
        );
    }
}
