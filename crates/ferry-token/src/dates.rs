//! NumericDates (RFC 7519 §2): reading `exp` for what a verifier returns, and checking `nbf` where
//! `jsonwebtoken` does not. `jsonwebtoken` checks `nbf` only when it can read it as a number from 0 below 2^64,
//! and silently skips any other value (a string, `true`, `1e300`); Ferry refuses a token whose `nbf` is not a
//! number, and one whose `nbf` is a number too far ahead, whatever its size.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::{TokenError, LEEWAY};

/// A NumericDate in whole seconds, as `jsonwebtoken` reads `exp` when it checks it: an integer, or a number from 0
/// below 2^64, rounded.
pub(crate) fn numeric_date(value: &Value) -> Option<u64> {
    if let Some(n) = value.as_u64() {
        return Some(n);
    }
    let f = value.as_f64()?;
    (f.is_finite() && f >= 0.0 && f < u64::MAX as f64).then(|| f.round() as u64)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Check `nbf` of decoded claims: absent or null, or a number no further ahead than [`LEEWAY`].
pub(crate) fn check_not_before(claims: &Value) -> Result<(), TokenError> {
    let nbf = match claims.get("nbf") {
        None | Some(Value::Null) => return Ok(()),
        Some(nbf) => nbf,
    };
    let ahead = now_secs().saturating_add(LEEWAY.as_secs());
    let too_late = if let Some(n) = nbf.as_u64() {
        n > ahead
    } else if nbf.as_i64().is_some() {
        // negative: before 1970
        false
    } else {
        let f = nbf
            .as_f64()
            .ok_or(TokenError::Malformed("the nbf claim is not a number"))?;
        f.round() > ahead as f64
    };
    if too_late {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn not_before_is_a_number_not_too_far_ahead() {
        let now = now_secs();
        for ok in [
            json!({}),
            json!({"nbf": null}),
            json!({"nbf": now}),
            json!({"nbf": -5}),
            json!({"nbf": now as f64 + 10.5}),
            json!({"nbf": 0.0}),
        ] {
            assert!(check_not_before(&ok).is_ok(), "{ok}");
        }
        // Found by the `tokens` fuzz target: jsonwebtoken skips what it cannot read as a u64.
        for ahead in [
            json!({"nbf": 1e300}),
            json!({"nbf": now + 3600}),
            json!({"nbf": u64::MAX}),
        ] {
            assert!(
                matches!(check_not_before(&ahead), Err(TokenError::NotYetValid)),
                "{ahead}"
            );
        }
        for malformed in [
            json!({"nbf": "0"}),
            json!({"nbf": true}),
            json!({"nbf": [1]}),
        ] {
            assert!(
                matches!(check_not_before(&malformed), Err(TokenError::Malformed(_))),
                "{malformed}"
            );
        }
    }

    #[test]
    fn numeric_dates_round_like_jsonwebtoken() {
        assert_eq!(numeric_date(&json!(5)), Some(5));
        assert_eq!(numeric_date(&json!(5.5)), Some(6));
        assert_eq!(numeric_date(&json!(-1)), None);
        assert_eq!(numeric_date(&json!(1e300)), None);
        assert_eq!(numeric_date(&json!("5")), None);
    }
}
