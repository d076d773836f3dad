//! The forwarding headers a proxy sends on: `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and
//! `Forwarded` (RFC 7239), by one rule for the relay and the gateway's routes alike ([`set_forwarding`]).
//!
//! From a client in `trusted_proxies` (marked on the request with [`TrustedPeer`]) the incoming
//! `X-Forwarded-For` chain and `Forwarded` elements are kept and extended, and its `X-Forwarded-Proto`/`-Host`
//! kept; from anyone else all of them are replaced by what this node saw, so that a client cannot forge its
//! address, scheme or host. `X-Real-IP` from a client is removed.

use crate::ClientInfo;
use ferry_proto::headers::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use http::header::FORWARDED;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// A request extension: the connection's peer is in `trusted_proxies`, so its forwarding headers are believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedPeer;

const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Set `X-Forwarded-For/-Proto/-Host` and `Forwarded` for a request from `client` that named `host`
/// (`Host` or `:authority`, port included). `trusted`: the client is a known front proxy.
///
/// On every proxied request: no `format!`, and from an untrusted client two allocations (the address text, which
/// becomes `X-Forwarded-For`, and the `Forwarded` element); `X-Forwarded-Host` shares the `Host` value's bytes.
pub fn set_forwarding(
    headers: &mut HeaderMap,
    client: &ClientInfo,
    host: Option<&HeaderValue>,
    trusted: bool,
) {
    let ip = client.remote_addr.ip();
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let ip_text = ip_text(ip);
    let (xff_chain, fwd_chain) = if trusted {
        (
            joined(headers, &X_FORWARDED_FOR),
            joined(headers, &FORWARDED),
        )
    } else {
        (String::new(), String::new())
    };
    let keep_proto = trusted && headers.contains_key(X_FORWARDED_PROTO);
    let keep_host = trusted && headers.contains_key(X_FORWARDED_HOST);
    // only a host of visible ASCII is passed on
    let host = host.filter(|h| h.to_str().is_ok());
    // `insert` replaces every value a name had, so a header that is set anew is not removed first.
    headers.remove(X_REAL_IP);
    if !keep_proto {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(client.proto()));
    }
    if !keep_host {
        replace(headers, X_FORWARDED_HOST, host.cloned());
    }
    // Forwarded (RFC 7239): for=<ip>;proto=<scheme>[;host="<host>"], an IPv6 address quoted in brackets.
    let host = host.and_then(|h| h.to_str().ok()).filter(|h| {
        h.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    });
    let mut element =
        String::with_capacity(fwd_chain.len() + ip_text.len() + host.map_or(0, str::len) + 32);
    if !fwd_chain.is_empty() {
        element.push_str(&fwd_chain);
        element.push_str(", ");
    }
    element.push_str("for=");
    match ip {
        IpAddr::V4(_) => element.push_str(&ip_text),
        IpAddr::V6(_) => {
            element.push_str("\"[");
            element.push_str(&ip_text);
            element.push_str("]\"");
        }
    }
    element.push_str(";proto=");
    element.push_str(client.proto());
    if let Some(h) = host {
        element.push_str(";host=\"");
        element.push_str(h);
        element.push('"');
    }
    replace(headers, FORWARDED, HeaderValue::try_from(element).ok());
    // last: the address text becomes the value itself when there is no chain to extend
    replace(headers, X_FORWARDED_FOR, chain_value(xff_chain, ip_text));
}

/// Set `name` to `value` alone, or remove it when there is no value: what the client sent never survives. One
/// lookup either way (`insert` replaces every earlier value), where removing first would cost two.
pub fn replace(headers: &mut HeaderMap, name: HeaderName, value: Option<HeaderValue>) {
    match value {
        Some(v) => {
            headers.insert(name, v);
        }
        None => {
            headers.remove(name);
        }
    }
}

/// An address as text, as `Display` writes it; IPv4 (nearly every client) without the formatting machinery,
/// which costs more than the rest of the forwarding headers together.
pub fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut out = String::with_capacity(15);
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
            out
        }
        IpAddr::V6(v6) => v6.to_string(),
    }
}

/// The values of every `name` header, trimmed, empty ones left out, joined with `", "`; empty (and no allocation)
/// when there is none, the common case.
pub fn joined(headers: &HeaderMap, name: &HeaderName) -> String {
    let mut out = String::new();
    for value in headers.get_all(name) {
        let Ok(value) = value.to_str() else { continue };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(value);
    }
    out
}

/// `chain, last` as a header value, built in `chain`'s buffer; `last` itself when `chain` is empty.
pub fn chain_value(mut chain: String, last: String) -> Option<HeaderValue> {
    if chain.is_empty() {
        return HeaderValue::try_from(last).ok();
    }
    chain.push_str(", ");
    chain.push_str(&last);
    HeaderValue::try_from(chain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_is_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: IpAddr = ip.parse().expect("address");
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn appends_and_replaces() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.2"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        let client = ClientInfo {
            remote_addr: "127.0.0.1:5000".parse().expect("addr"),
            local_addr: "127.0.0.1:443".parse().expect("addr"),
            tls: false,
            listener: "127.0.0.1:443".parse().expect("addr"),
        };
        set_forwarding(
            &mut h,
            &client,
            Some(&HeaderValue::from_static("example.com")),
            true,
        );
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(h.get_all(X_FORWARDED_FOR).iter().count(), 1);
        set_forwarding(
            &mut h,
            &client,
            Some(&HeaderValue::from_static("example.com")),
            false,
        );
        assert_eq!(h[X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "example.com");
    }

    #[test]
    fn a_forged_host_goes_when_the_request_names_none() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_HOST, HeaderValue::from_static("evil.example"));
        h.append(X_FORWARDED_HOST, HeaderValue::from_static("evil2.example"));
        let client = ClientInfo {
            remote_addr: "127.0.0.1:5000".parse().expect("addr"),
            local_addr: "127.0.0.1:443".parse().expect("addr"),
            tls: true,
            listener: "127.0.0.1:443".parse().expect("addr"),
        };
        set_forwarding(&mut h, &client, None, false);
        assert!(!h.contains_key(X_FORWARDED_HOST));
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_FOR], "127.0.0.1");
    }
}
