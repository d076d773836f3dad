//! The `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host` headers a proxy adds.
//!
//! `X-Forwarded-For` gets the client address appended to any chain the client sent (as nginx's
//! `$proxy_add_x_forwarded_for` does); `-Proto` and `-Host` are replaced by what this node saw, so a client cannot
//! pretend to have used TLS or another host.

use crate::ClientInfo;
use ferry_proto::headers::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Set the forwarding headers for a request from `client` whose `Host` was `host`.
pub fn set_forwarded(headers: &mut HeaderMap, client: &ClientInfo, host: Option<&HeaderValue>) {
    let chain = joined(headers, &X_FORWARDED_FOR);
    replace(
        headers,
        X_FORWARDED_FOR,
        chain_value(chain, ip_text(client.remote_addr.ip())),
    );
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(client.proto()));
    replace(headers, X_FORWARDED_HOST, host.cloned());
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
            tls: false,
        };
        set_forwarded(
            &mut h,
            &client,
            Some(&HeaderValue::from_static("example.com")),
        );
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(h.get_all(X_FORWARDED_FOR).iter().count(), 1);
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
            tls: true,
        };
        set_forwarded(&mut h, &client, None);
        assert!(!h.contains_key(X_FORWARDED_HOST));
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_FOR], "127.0.0.1");
    }
}
