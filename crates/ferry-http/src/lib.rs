//! HTTP plumbing shared by the gateway and the relay, which never depend on each other.
//!
//! Owns: the request body type handlers take, the boxed body type, error responses in Ferry's one format, the forwarding headers, request facts the
//! listener attaches to each request ([`ClientInfo`]), a body wrapper that enforces a size limit, and one that
//! holds a guard until a body ends, checks every request head passes before routing ([`checks`]: `Host`,
//! upgrades), the HTTP/1.1 client of one plain-HTTP origin ([`client`]), and the runtime per core that public
//! connections are served on ([`cores`]). Does not own: listeners, routing, tunnels.
#![forbid(unsafe_code)]

pub mod body;
pub mod checks;
pub mod client;
pub mod cores;
pub mod forwarded;

pub use body::{
    empty, full, Body, BoxError, ClientBody, Counted, Guarded, RequestBody, SizeLimited,
};

use ferry_proto::headers::{FERRY_ERROR, X_REQUEST_ID};
use ferry_proto::ErrorReply;
use http::{header, HeaderValue, Request, Response};
use std::net::SocketAddr;

/// Facts about the client connection, attached by the listener to every request as an extension.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    /// The client's address: the peer's, or the one a PROXY protocol header named.
    pub remote_addr: SocketAddr,
    /// The address the client connected to (this side of the connection): the destination a PROXY protocol
    /// header sent upstream names.
    pub local_addr: SocketAddr,
    /// Whether the client reached Ferry over TLS.
    pub tls: bool,
    /// Which listener the connection came in on: the address that listener is bound to (as configured, or with
    /// the port the OS picked), which stays while the listener does, across reloads that rename or change it.
    /// Routes limited to some listeners (`listeners = [...]`) compare it. Unlike `local_addr`, an address of
    /// the listener itself, not of the connection (`0.0.0.0:80` for a listener bound to every address).
    pub listener: SocketAddr,
}

impl ClientInfo {
    pub fn proto(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

/// TLS facts of a client connection, attached by the listener (as `Arc<TlsInfo>`) to every request of a TLS
/// connection, beside [`ClientInfo`].
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub protocol: Option<&'static str>,
    /// The client's certificate chain (DER, leaf first) as presented; empty when the client sent none.
    pub client_chain: Vec<Vec<u8>>,
    /// Why the presented chain did not verify against the listener's CA bundle (`optional` listeners let such
    /// clients in, as nginx's `optional_no_ca` does, so that the upstream learns `FAILED:reason`); `None` when
    /// it verified or none was sent.
    pub client_verify_error: Option<String>,
}

impl TlsInfo {
    /// Whether the client presented a certificate that verified against the listener's CA bundle.
    pub fn client_verified(&self) -> bool {
        !self.client_chain.is_empty() && self.client_verify_error.is_none()
    }
}

/// A request body limit set by whoever routed the request before its handler (a gateway route's
/// `max_body_size`), in bytes, as a request extension: the relay applies the smaller of it and its own, to bodies
/// that declare their length and to streamed ones alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit(pub u64);

/// The request id of a request: a well-formed incoming `x-request-id`, else a new one.
pub fn request_id<B>(req: &Request<B>) -> String {
    req.headers()
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| ferry_proto::is_valid_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(ferry_proto::new_request_id)
}

/// Ferry's error response: the code's status, `ferry-error`, `x-request-id`, a one-line text body, and the headers
/// the code or the reply carries (`Retry-After`, `WWW-Authenticate`, `Allow`).
pub fn error_response(reply: &ErrorReply, request_id: &str) -> Response<Body> {
    error_response_with(reply, request_id, full)
}

/// [`error_response`] with a body type of the caller's (the connector answers on a tunnel stream): the one place an
/// [`ErrorReply`] becomes a response.
pub fn error_response_with<B>(
    reply: &ErrorReply,
    request_id: &str,
    body: impl FnOnce(String) -> B,
) -> Response<B> {
    let mut resp = Response::new(body(reply.body(request_id)));
    *resp.status_mut() = reply.code.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(FERRY_ERROR, HeaderValue::from_static(reply.code.as_str()));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(X_REQUEST_ID, v);
    }
    if let Some(secs) = reply.retry_after_secs() {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(challenge) = reply.code.www_authenticate() {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    if let Some(allow) = reply.allow {
        h.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

/// A whole HTTP/1.1 error response as bytes, for a connection refused before any request was read: the
/// [`error_response`] of `reply`, with `Connection: close` and `Content-Length`.
pub fn error_response_bytes(reply: &ErrorReply, request_id: &str) -> bytes::Bytes {
    let resp = error_response_with(reply, request_id, |b| b);
    let status = resp.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in resp.headers() {
        if let Ok(v) = value.to_str() {
            out.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let body = resp.into_body();
    out.push_str(&format!(
        "connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ));
    bytes::Bytes::from(out)
}

/// The size of a request head as it arrived, near enough for a limit: request line plus `name: value\r\n` lines.
pub fn head_size<B>(req: &Request<B>) -> usize {
    let line = req.method().as_str().len() + uri_len(req.uri()) + 12;
    req.headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

/// The length of `uri` as `Display` writes it, without writing it (this runs on every request).
fn uri_len(uri: &http::Uri) -> usize {
    uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path().len()
        + uri.query().map_or(0, |q| q.len() + 1)
}

/// The protocol a client asks to upgrade to (`Connection: upgrade` plus `Upgrade: <protocol>`), lowercased.
pub fn upgrade_protocol<B>(req: &Request<B>) -> Option<String> {
    let connection_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return None;
    }
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
}

/// The body length a message's `Content-Length` declares, if it has one that parses: for refusing a body over a
/// limit before reading it. Framing that disagrees with itself is [`has_ambiguous_framing`]'s to refuse.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Whether `Content-Length` and `Transfer-Encoding` are both present, or `Content-Length` appears with differing
/// values: framing a proxy must refuse (request smuggling).
pub fn has_ambiguous_framing<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    // both cases need a `Content-Length`: most requests (GETs) have none and cost one lookup
    let mut lengths = h.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = lengths.next() else {
        return false;
    };
    h.contains_key(header::TRANSFER_ENCODING) || lengths.any(|v| v != first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::ErrorCode;

    #[test]
    fn declared_length_reads_a_parsable_content_length_only() {
        let with = |value: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static(value));
            declared_length(&headers)
        };
        assert_eq!(with("42"), Some(42));
        assert_eq!(with(" 7 "), Some(7));
        assert_eq!(with("-1"), None);
        assert_eq!(with("ten"), None);
        assert_eq!(with("99999999999999999999999"), None, "beyond u64");
        assert_eq!(declared_length(&http::HeaderMap::new()), None);
    }

    #[test]
    fn uri_len_is_the_displayed_length() {
        for uri in [
            "/",
            "/a/b?x=1&y",
            "http://example.com",
            "https://example.com:8443/p?q",
            "example.com:443",
            "*",
        ] {
            let uri: http::Uri = uri.parse().expect("uri");
            assert_eq!(uri_len(&uri), uri.to_string().len(), "{uri}");
        }
    }

    #[test]
    fn error_response_has_code_header_and_body() {
        let r = error_response(&ErrorReply::new(ErrorCode::TenantBusy, "busy"), "rid1");
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[FERRY_ERROR], "tenant_busy");
        assert_eq!(r.headers()[X_REQUEST_ID], "rid1");
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn error_response_carries_the_headers_of_its_code_and_reply() {
        let r = error_response(&ErrorReply::new(ErrorCode::Unauthorized, "no"), "rid");
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
        let r = error_response(&ErrorReply::method_not_allowed("POST", "post"), "rid");
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[header::ALLOW], "POST");
        assert_eq!(r.headers()[FERRY_ERROR], "method_not_allowed");
        let reply = ErrorReply::new(ErrorCode::RouteRateLimited, "slow down").with_retry_after(9);
        let r = error_response(&reply, "rid");
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "9");
        let r = error_response(&ErrorReply::new(ErrorCode::RequestTimeout, "idle"), "rid");
        assert_eq!(r.status(), 408);
    }

    #[test]
    fn error_response_bytes_is_the_same_response_closed() {
        let reply = ErrorReply::new(ErrorCode::TooManyConnections, "full");
        let bytes = error_response_bytes(&reply, "rid9");
        let text = std::str::from_utf8(&bytes).expect("utf-8");
        assert!(
            text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(
            text.contains("ferry-error: too_many_connections\r\n"),
            "{text}"
        );
        assert!(text.contains("retry-after: 1\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        let body = reply.body("rid9");
        assert!(text.ends_with(&format!("content-length: {}\r\n\r\n{body}", body.len())));
    }

    #[test]
    fn detects_upgrades_and_framing() {
        let req = Request::builder()
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "WebSocket")
            .body(())
            .expect("request");
        assert_eq!(upgrade_protocol(&req).as_deref(), Some("websocket"));
        let req = Request::builder()
            .header("upgrade", "websocket")
            .body(())
            .expect("request");
        assert_eq!(upgrade_protocol(&req), None);

        let req = Request::builder()
            .header("content-length", "3")
            .header("transfer-encoding", "chunked")
            .body(())
            .expect("request");
        assert!(has_ambiguous_framing(&req));
        let req = Request::builder()
            .header("content-length", "3")
            .header("content-length", "4")
            .body(())
            .expect("request");
        assert!(has_ambiguous_framing(&req));
        let req = Request::builder()
            .header("content-length", "3")
            .body(())
            .expect("request");
        assert!(!has_ambiguous_framing(&req));
    }

    #[test]
    fn request_id_reuses_valid_incoming() {
        let req = Request::builder()
            .header(X_REQUEST_ID, "abc-123")
            .body(())
            .expect("request");
        assert_eq!(request_id(&req), "abc-123");
        let req = Request::builder()
            .header(X_REQUEST_ID, "bad id")
            .body(())
            .expect("request");
        assert_ne!(request_id(&req), "bad id");
    }
}
