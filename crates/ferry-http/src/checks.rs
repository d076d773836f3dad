//! Checks of a request head that every request passes before it is routed, whatever answers it: what RFC 9112
//! requires a server to refuse, and which protocols a request may upgrade to.

use ferry_proto::{ErrorCode, ErrorReply};
use http::{header, Request, Version};

/// Why a request head is refused before routing: more than one `Host` (RFC 9112 §3.2: routing and the upstream
/// could each believe another), or an HTTP/1.1 request without one (the same section requires 400).
pub fn host_problem<B>(req: &Request<B>) -> Option<ErrorReply> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Some(ErrorReply::new(
            ErrorCode::BadRequest,
            "the request has more than one Host header",
        ));
    }
    if first.is_none() && req.version() == Version::HTTP_11 {
        return Some(ErrorReply::new(
            ErrorCode::BadRequest,
            "an HTTP/1.1 request needs a Host header",
        ));
    }
    None
}

/// The protocol a request asks to upgrade to when it is one of `allowed` (lowercase tokens such as
/// `websocket`); `None` when it asks for none or for another one, which is then ignored (RFC 9110 §7.8 lets a
/// server ignore `Upgrade`; the header is hop-by-hop and goes no further). `h2c` is never upgraded to: HTTP/2
/// comes by ALPN or prior knowledge, and an h2c pipe would bypass every route rule and path check.
pub fn allowed_upgrade<B>(req: &Request<B>, allowed: &[String]) -> Option<String> {
    let protocol = crate::upgrade_protocol(req)?;
    let name = protocol.split('/').next().unwrap_or_default();
    (name != "h2c" && allowed.iter().any(|a| a == &protocol || a == name)).then_some(protocol)
}

/// [`host_problem`] as a response (Ferry's `400 bad_request`, logged), for the listener's router to return.
pub fn refuse_head<B>(req: &Request<B>) -> Option<http::Response<crate::Body>> {
    let reply = host_problem(req)?;
    let request_id = crate::request_id(req);
    tracing::info!(request_id, path = req.uri().path(), code = %reply.code, "request refused: {}", reply.message);
    Some(crate::error_response(&reply, &request_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().version(version).uri("/x");
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn hosts() {
        assert!(host_problem(&req(Version::HTTP_11, &["a"])).is_none());
        assert!(host_problem(&req(Version::HTTP_11, &["a", "b"])).is_some());
        assert!(host_problem(&req(Version::HTTP_11, &["a", "a"])).is_some());
        assert!(host_problem(&req(Version::HTTP_11, &[])).is_some());
        assert!(host_problem(&req(Version::HTTP_10, &[])).is_none());
        assert!(host_problem(&req(Version::HTTP_2, &[])).is_none());
        assert!(host_problem(&req(Version::HTTP_2, &["a", "b"])).is_some());
    }

    #[test]
    fn upgrades() {
        let up = |p: &str| {
            Request::builder()
                .header("connection", "Upgrade")
                .header("upgrade", p)
                .body(())
                .expect("request")
        };
        let ws = vec!["websocket".to_owned()];
        assert_eq!(
            allowed_upgrade(&up("WebSocket"), &ws).as_deref(),
            Some("websocket")
        );
        assert_eq!(allowed_upgrade(&up("h2c"), &ws), None);
        assert_eq!(allowed_upgrade(&up("foo"), &ws), None);
        let all = vec!["websocket".to_owned(), "h2c".to_owned(), "foo".to_owned()];
        assert_eq!(allowed_upgrade(&up("h2c"), &all), None, "h2c never");
        assert_eq!(
            allowed_upgrade(&up("foo/2"), &all).as_deref(),
            Some("foo/2")
        );
    }
}
