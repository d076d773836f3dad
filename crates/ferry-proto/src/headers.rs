//! Header rules: which headers are hop-by-hop (never forwarded), and the names Ferry itself adds.

use http::header::{HeaderMap, HeaderName, CONNECTION};

/// Ferry's own error code on every error response it generates.
pub const FERRY_ERROR: HeaderName = HeaderName::from_static("ferry-error");
/// The request id, generated or propagated.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Remove hop-by-hop headers, including every header named in `Connection`.
///
/// `TE: trailers` is the one hop-by-hop value that is re-added by the caller where trailers must survive; this
/// function reports whether the client asked for trailers so that it can.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    // Most requests carry none of these and most responses only `Connection: keep-alive` (or `close`): look at
    // the names without allocating, and handle that common response without parsing names.
    let mut hop_by_hop = headers.keys().filter(|n| is_hop_by_hop(n));
    let Some(first) = hop_by_hop.next() else {
        return false;
    };
    let connection_only = first == CONNECTION && hop_by_hop.next().is_none();
    if connection_only && connection_names_no_header(headers) {
        headers.remove(CONNECTION);
        return false;
    }
    let mut present: Vec<HeaderName> = Vec::new();
    for name in headers.keys().filter(|n| is_hop_by_hop(n)) {
        present.push(name.clone());
    }
    if present.is_empty() {
        return false;
    }
    let wants_trailers = headers
        .get_all(http::header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    for value in headers.get_all(CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',') {
            if let Ok(name) = HeaderName::from_bytes(token.trim().as_bytes()) {
                if !is_hop_by_hop(&name) {
                    present.push(name);
                }
            }
        }
    }
    for name in present {
        headers.remove(name);
    }
    wants_trailers
}

/// Give a message's header values a memory block of their own: copy them all into one new block, shared by them
/// alone, and point each value at its bytes there. Returns whether anything was copied.
///
/// hyper parses a message head in place: each header value it hands over is a slice of the connection's read
/// buffer, and keeps that whole buffer alive while it lives. A buffer that a large body grew holds about
/// 400 KiB. That is harmless while the message is in flight, but an HTTP/2 connection's HPACK encoder keeps the
/// values it indexes (`date`, `server`, `content-type`, ...) in its dynamic table for as long as the
/// connection lives. So an answer forwarded on a long-lived HTTP/2 connection (a tunnel, a client's HTTP/2
/// connection) kept the origin connection's read buffer alive long after that connection was idle or closed:
/// the connector held about 5 MB of such buffers after a load (docs/performance.md, "Memory after load").
/// The copy is one allocation of the values' total length (a few hundred bytes).
pub fn detach_values(headers: &mut HeaderMap) -> bool {
    let total: usize = headers.values().map(|v| v.len()).sum();
    if total == 0 {
        return false;
    }
    let mut block = bytes::BytesMut::with_capacity(total);
    for value in headers.values() {
        block.extend_from_slice(value.as_bytes());
    }
    let mut block = block.freeze();
    for value in headers.values_mut() {
        let bytes = block.split_to(value.len());
        // the bytes were a valid value a moment ago, so this does not fail; if it ever did, the value stays
        if let Ok(mut copy) = http::HeaderValue::from_maybe_shared(bytes) {
            copy.set_sensitive(value.is_sensitive());
            *value = copy;
        }
    }
    true
}

/// Join the `Cookie` fields of a request into one, separated by `; ` (RFC 9113 §8.2.3): HTTP/2 clients may send
/// each cookie as a field of its own ("crumbs"), which an HTTP/1.1 origin must receive as one header. Returns
/// whether anything was joined. A request with one `Cookie` field or none is left as it is, without allocating.
pub fn join_cookie_crumbs(headers: &mut HeaderMap) -> bool {
    use http::header::{HeaderValue, COOKIE};
    let mut crumbs = headers.get_all(COOKIE).iter();
    if crumbs.next().is_none() || crumbs.next().is_none() {
        return false;
    }
    let mut joined: Vec<u8> = Vec::new();
    for crumb in headers.get_all(COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(crumb.as_bytes());
    }
    // Each crumb was a valid field value, and so is their join with "; ".
    match HeaderValue::from_bytes(&joined) {
        Ok(value) => {
            headers.insert(COOKIE, value);
            true
        }
        Err(_) => false,
    }
}

/// Whether every `Connection` token is `keep-alive` or `close`, the options that name no header of the message
/// (a `Keep-Alive` header would be hop-by-hop itself).
fn connection_names_no_header(headers: &HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().all(|value| {
        value.as_bytes().split(|b| *b == b',').all(|token| {
            let token = token.trim_ascii();
            token.eq_ignore_ascii_case(b"keep-alive") || token.eq_ignore_ascii_case(b"close")
        })
    })
}

/// Whether `name` is a hop-by-hop header (RFC 9110 §7.6.1, plus the legacy ones proxies also drop).
///
/// `Trailer` is deliberately not one: it announces the trailer fields of the message itself, end to end, and
/// an HTTP/1.1 encoder only sends trailers that `Trailer` announced. A string match, run on every header of every
/// relayed message: cheaper than comparing `HeaderName`s one by one.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Whether a header name belongs to Ferry's internal tunnel vocabulary (`ferry-*`), which never reaches a target
/// or a client from the outside.
pub fn is_internal(name: &HeaderName) -> bool {
    name.as_str().starts_with("ferry-") && *name != FERRY_ERROR
}

/// Remove every header that `unwanted` selects, without allocating when none does (the common case).
pub fn remove_where(headers: &mut HeaderMap, unwanted: impl Fn(&HeaderName) -> bool) {
    if !headers.keys().any(&unwanted) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| unwanted(n)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// Where a value's bytes are, as an address range.
    fn span(value: &HeaderValue) -> std::ops::Range<usize> {
        let start = value.as_bytes().as_ptr() as usize;
        start..start + value.len()
    }

    #[test]
    fn detached_values_keep_their_bytes_and_leave_the_buffer_they_were_cut_from() {
        // a parsed head, as hyper hands it over: the values are slices of one read buffer
        let buffer = bytes::Bytes::from_static(b"date: Mon\r\nserver: origin\r\nx-secret: s3\r\n");
        let mut headers = HeaderMap::new();
        for (name, at) in [("date", 6..9), ("server", 19..25), ("x-secret", 37..39)] {
            let value = HeaderValue::from_maybe_shared(buffer.slice(at)).expect("value");
            headers.append(name, value);
        }
        headers
            .get_mut("x-secret")
            .expect("secret")
            .set_sensitive(true);
        let cut_from = buffer.as_ptr() as usize..buffer.as_ptr() as usize + buffer.len();
        assert!(headers.values().all(|v| cut_from.contains(&span(v).start)));

        assert!(detach_values(&mut headers));
        assert_eq!(headers["date"], "Mon");
        assert_eq!(headers["server"], "origin");
        assert_eq!(headers["x-secret"], "s3");
        assert!(headers["x-secret"].is_sensitive());
        assert!(!headers["server"].is_sensitive());
        for value in headers.values() {
            assert!(
                !cut_from.contains(&span(value).start),
                "{value:?} still in the read buffer"
            );
        }
        // one block of their own, side by side
        let spans: Vec<_> = headers.values().map(span).collect();
        assert!(
            spans.windows(2).all(|w| w[0].end == w[1].start),
            "{spans:?}"
        );

        assert!(!detach_values(&mut HeaderMap::new()), "nothing to copy");
    }

    #[test]
    fn removes_what_is_selected() {
        let mut h = HeaderMap::new();
        for (n, v) in [("ferry-target", "a"), ("ferry-error", "b"), ("x-keep", "c")] {
            h.append(n, HeaderValue::from_static(v));
        }
        remove_where(&mut h, is_internal);
        assert!(!h.contains_key("ferry-target"));
        assert!(h.contains_key("ferry-error") && h.contains_key("x-keep"));
        remove_where(&mut h, |n| n.as_str().starts_with("ferry-"));
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn strips_listed_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        assert!(strip_hop_by_hop(&mut h));
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn connection_alone_is_removed_and_names_in_it_still_are() {
        for value in ["keep-alive", "Close", " keep-alive , close "] {
            let mut h = HeaderMap::new();
            h.insert("connection", HeaderValue::from_static(value));
            h.insert("x-kept", HeaderValue::from_static("1"));
            assert!(!strip_hop_by_hop(&mut h), "{value}");
            assert_eq!(h.len(), 1, "{value}");
            assert!(h.contains_key("x-kept"), "{value}");
        }
        // `Connection` the only hop-by-hop header, but naming another one: that one goes too.
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.append("connection", HeaderValue::from_static("x-other"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        assert!(!strip_hop_by_hop(&mut h));
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn internal_headers() {
        assert!(is_internal(&HeaderName::from_static("ferry-target")));
        assert!(!is_internal(&HeaderName::from_static("ferry-error")));
        assert!(!is_internal(&HeaderName::from_static("x-ferry")));
    }

    #[test]
    fn cookie_crumbs_are_joined_into_one_field() {
        let mut h = HeaderMap::new();
        assert!(!join_cookie_crumbs(&mut h));
        h.append(http::header::COOKIE, "a=1".parse().expect("value"));
        assert!(!join_cookie_crumbs(&mut h), "one field stays as it is");
        h.append(http::header::COOKIE, "b=2".parse().expect("value"));
        h.append(http::header::COOKIE, "c=3".parse().expect("value"));
        assert!(join_cookie_crumbs(&mut h));
        let all: Vec<_> = h.get_all(http::header::COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3"]);
    }
}
