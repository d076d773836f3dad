//! The `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host` headers a proxy adds.
//!
//! `X-Forwarded-For` gets the client address appended to any chain the client sent (as nginx's
//! `$proxy_add_x_forwarded_for` does); `-Proto` and `-Host` are replaced by what this node saw, so a client cannot
//! pretend to have used TLS or another host.

use crate::ClientInfo;
use ferry_proto::headers::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use http::{HeaderMap, HeaderValue};

/// Set the forwarding headers for a request from `client` whose `Host` was `host`.
pub fn set_forwarded(headers: &mut HeaderMap, client: &ClientInfo, host: Option<&HeaderValue>) {
    let ip = client.remote_addr.ip().to_string();
    let chain = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    let value = if chain.is_empty() {
        ip
    } else {
        format!("{chain}, {ip}")
    };
    headers.remove(X_FORWARDED_FOR);
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(client.proto()));
    headers.remove(X_FORWARDED_HOST);
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "example.com");
    }
}
