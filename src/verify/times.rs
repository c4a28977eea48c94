//! The time claims `exp`, `nbf` and `iat` (RFC 7519 §2 NumericDate).

use crate::error::Reject;
use serde_json::{Map, Value};
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
/// token.
pub fn check_times(claims: &Map<String, Value>, now: u64, skew: u64) -> Result<u64, Reject> {
    let exp = numeric_date(claims, "exp")?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    let exp = exp.ok_or_else(|| Reject::ClaimMissing("exp".into()))?;
    if now >= exp.saturating_add(skew) {
        return Err(Reject::TokenExpired);
    }
    if [nbf, iat]
        .into_iter()
        .flatten()
        .any(|t| t > now.saturating_add(skew))
    {
        return Err(Reject::TokenNotYetValid);
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
        check_times(&map, NOW, 60)
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
}
