//! Hosts as routing compares them: the request's host (`:authority` or `Host`) lowercased, without port and
//! without a trailing dot.

use http::Request;

/// `host[:port]` or `[v6]:port` without the port (a port is all digits, possibly none).
pub(crate) fn strip_port(hostport: &str) -> &str {
    if let Some(rest) = hostport.strip_prefix('[') {
        // [v6]:port
        return match rest.find(']') {
            Some(end) => &hostport[..end + 2],
            None => hostport,
        };
    }
    match hostport.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => hostport,
    }
}

/// The request's host, lowercased, without port and trailing dot: the URI authority (HTTP/2, absolute form)
/// or else the `Host` header; `None` when it names none (or an empty one).
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    let raw = match req.uri().authority() {
        Some(a) => a.host().to_owned(),
        None => {
            let v = req.headers().get(http::header::HOST)?.to_str().ok()?;
            strip_port(v.trim()).to_owned()
        }
    };
    let host = raw.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
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
}
