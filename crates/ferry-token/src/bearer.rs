//! The credential of an `Authorization: Bearer …` header (RFC 6750 §2.1), as the tunnel endpoint, the relay's
//! client check and the management API read it.

/// The token of an `Authorization` header value: the scheme `Bearer` (case-insensitive, RFC 7235), one space,
/// then the token with surrounding whitespace removed; `None` for another scheme or an empty token.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The bearer token of a request's `Authorization` header ([`bearer_token`]); `None` without one, or when the
/// header is not visible ASCII.
pub fn bearer_token_in(headers: &http::HeaderMap) -> Option<&str> {
    bearer_token(headers.get(http::header::AUTHORIZATION)?.to_str().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token(" BEARER abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer\tabc"), None);
        assert_eq!(bearer_token(""), None);
        let mut headers = http::HeaderMap::new();
        assert_eq!(bearer_token_in(&headers), None);
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer x.y.z"),
        );
        assert_eq!(bearer_token_in(&headers), Some("x.y.z"));
    }
}
