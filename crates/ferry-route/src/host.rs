//! Hosts as routing compares them, whether they come from a request (`:authority` or `Host`) or from a route's
//! `hosts`: a host name (letters, digits, `-`, `_`, `.`) or an IP literal in brackets, with an optional port;
//! compared lowercased, without the port and without trailing dots. A request whose host is not of that form
//! names no host (only routes without `hosts` can take it); a route naming one is refused.

use http::Request;

/// A host as routing compares it: surrounding whitespace, the port and trailing dots removed, lowercased; `None`
/// when `raw` is not `host[:port]` (a port is digits, possibly none).
pub fn normalize_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let (host, port) = if raw.starts_with('[') {
        let end = raw.find(']')?;
        let (literal, rest) = raw.split_at(end + 1);
        let inner = literal.get(1..end).unwrap_or_default();
        let ip_chars = inner
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if inner.is_empty() || !ip_chars {
            return None;
        }
        (literal, rest)
    } else {
        let (name, rest) = raw.split_at(raw.find(':').unwrap_or(raw.len()));
        let name = name.trim_end_matches('.');
        let name_chars = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if name.is_empty() || !name_chars {
            return None;
        }
        (name, rest)
    };
    if !port.is_empty() && !port.strip_prefix(':')?.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

/// The request's host as routing compares it ([`normalize_host`]): the URI authority (HTTP/2, absolute form) or
/// else the `Host` header; `None` when it names none, or no valid one.
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    match req.uri().authority() {
        Some(a) => normalize_host(a.as_str()),
        None => normalize_host(req.headers().get(http::header::HOST)?.to_str().ok()?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_from_authority_or_header() {
        let req = Request::builder()
            .uri("/x")
            .header("host", "WWW.Example.com.:8443")
            .body(())
            .expect("req");
        assert_eq!(request_host(&req).as_deref(), Some("www.example.com"));
        let req = Request::builder()
            .uri("https://h2.example.com/x")
            .body(())
            .expect("req");
        assert_eq!(request_host(&req).as_deref(), Some("h2.example.com"));
        let req = Request::builder()
            .uri("/x")
            .header("host", "[::1]:80")
            .body(())
            .expect("req");
        assert_eq!(request_host(&req).as_deref(), Some("[::1]"));
        let req = Request::builder()
            .uri("/x")
            .header("host", ":80")
            .body(())
            .expect("req");
        assert_eq!(request_host(&req), None);
    }

    /// Found by the `routes` fuzz target: `*.example.com:443` kept its port (and `example.com.:80` its dot), so
    /// that no request ever matched it; `a.:.b` was the host `a.:.b` in `Host` but `a.` in the URI.
    #[test]
    fn one_reading_for_requests_and_routes() {
        assert_eq!(
            normalize_host(" Example.COM.:8080 ").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            normalize_host("Example.com:").as_deref(),
            Some("example.com")
        );
        assert_eq!(normalize_host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host("10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(normalize_host("in_ternal").as_deref(), Some("in_ternal"));
        for bad in [
            "",
            ".",
            ":80",
            "a.com:x",
            "a.:.b",
            "a:80:90",
            "user@host",
            "a b",
            "[]",
            "[::1",
            "[x]",
            "ä.com",
            "*.a.com",
        ] {
            assert_eq!(normalize_host(bad), None, "{bad:?}");
        }
        let req = Request::builder()
            .uri("http://a.:.b/x")
            .header("host", "a.:.b")
            .body(())
            .expect("req");
        assert_eq!(request_host(&req), None);
    }
}
