//! Reading a token's `iss` before anything is checked, only to choose which verifier checks it (a node that
//! accepts both the built-in issuer's tokens and an external provider's).

use base64::Engine as _;

use crate::TokenError;

/// The `iss` of a JWT, read without checking anything: the verifier it picks then checks everything, `iss`
/// included.
pub fn unverified_issuer(token: &str) -> Result<String, TokenError> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or(TokenError::Malformed("not a JWT"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed("bad base64url encoding"))?;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let iss: Iss = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::Malformed("bad JSON in header or claims"))?;
    iss.iss
        .ok_or(TokenError::Malformed("a required claim is missing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issuer_is_read_without_checks() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!("{}.{}.sig", b64("{}"), b64(r#"{"iss":"https://idp"}"#));
        assert_eq!(
            unverified_issuer(&token).ok().as_deref(),
            Some("https://idp")
        );
        for junk in ["", "a", "a.b", "a.%.c"] {
            assert!(unverified_issuer(junk).is_err(), "{junk}");
        }
        let no_iss = format!("x.{}.y", b64(r#"{"sub":"a"}"#));
        assert!(matches!(
            unverified_issuer(&no_iss),
            Err(TokenError::Malformed(_))
        ));
    }
}
