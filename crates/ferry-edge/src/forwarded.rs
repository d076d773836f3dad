//! The forwarding headers the gateway sends upstream, and which incoming ones it believes.
//!
//! From a client in `trusted_proxies` the incoming `X-Forwarded-For` chain and `Forwarded` elements are kept
//! and extended, and its `X-Forwarded-Proto`/`-Host` kept; from anyone else all of them are replaced by what this
//! node saw, so that a client cannot forge its address, scheme or host.

use crate::EdgeError;
use http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// The `trusted_proxies` list.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn parse(list: &[String]) -> Result<Self, EdgeError> {
        list.iter()
            .enumerate()
            .map(|(i, s)| {
                let s = s.trim();
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| EdgeError::Config {
                        path: format!("gateway.trusted_proxies[{i}]"),
                        message: format!("{s:?} is neither an address nor a CIDR range"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// The forwarding rule, shared with the relay (`ferry_http::forwarded`): replace from untrusted clients, extend
/// from trusted proxies.
pub use ferry_http::forwarded::set_forwarding;

/// Remove the client-certificate header family (`X-SSL-Client-*`, `X-SSL-Protocol`, `X-Forwarded-Client-Cert`,
/// and the `extra` names routes are configured to send) from a request, so that a client cannot forge what only
/// the TLS layer may say. Kept from trusted proxies. Runs on every request: it allocates only when there is
/// something to remove.
pub fn strip_client_cert_headers(headers: &mut HeaderMap, extra: &[http::HeaderName]) {
    ferry_proto::headers::remove_where(headers, |n| {
        crate::client_cert::is_default_family(n.as_str()) || extra.contains(n)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_http::ClientInfo;
    use ferry_proto::headers::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
    use http::{header::FORWARDED, HeaderValue};

    fn client(addr: &str) -> ClientInfo {
        ClientInfo {
            remote_addr: addr.parse().expect("addr"),
            local_addr: ([192, 0, 2, 80], 443).into(),
            tls: true,
            listener: ([192, 0, 2, 80], 443).into(),
        }
    }

    fn forged() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        h.insert(X_FORWARDED_HOST, HeaderValue::from_static("evil.example"));
        h.insert(FORWARDED, HeaderValue::from_static("for=1.2.3.4"));
        h.insert("x-real-ip", HeaderValue::from_static("1.2.3.4"));
        h
    }

    #[test]
    fn untrusted_clients_get_their_headers_replaced() {
        let mut h = forged();
        set_forwarding(
            &mut h,
            &client("192.0.2.7:5000"),
            Some(&HeaderValue::from_static("www.example.com")),
            false,
        );
        assert_eq!(h[X_FORWARDED_FOR], "192.0.2.7");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_HOST], "www.example.com");
        assert_eq!(
            h[FORWARDED],
            "for=192.0.2.7;proto=https;host=\"www.example.com\""
        );
        assert!(!h.contains_key("x-real-ip"));
    }

    #[test]
    fn every_forged_value_goes_and_a_forged_host_too_when_the_request_names_none() {
        let mut h = forged();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("5.6.7.8"));
        h.append(FORWARDED, HeaderValue::from_static("for=5.6.7.8"));
        set_forwarding(&mut h, &client("192.0.2.7:5000"), None, false);
        assert_eq!(h.get_all(X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[X_FORWARDED_FOR], "192.0.2.7");
        assert_eq!(h.get_all(FORWARDED).iter().count(), 1);
        assert_eq!(h[FORWARDED], "for=192.0.2.7;proto=https");
        assert!(!h.contains_key(X_FORWARDED_HOST));
    }

    #[test]
    fn a_host_that_is_not_visible_ascii_is_not_passed_on() {
        let mut h = forged();
        let host =
            HeaderValue::from_bytes(b"caf\xc3\xa9.example").expect("obs-text is a valid value");
        set_forwarding(&mut h, &client("192.0.2.7:5000"), Some(&host), false);
        assert!(!h.contains_key(X_FORWARDED_HOST));
        assert_eq!(h[FORWARDED], "for=192.0.2.7;proto=https");
        let quoted = HeaderValue::from_static("a\"b.example");
        set_forwarding(&mut h, &client("192.0.2.7:5000"), Some(&quoted), false);
        assert_eq!(h[X_FORWARDED_HOST], "a\"b.example");
        assert_eq!(h[FORWARDED], "for=192.0.2.7;proto=https");
    }

    #[test]
    fn trusted_proxies_are_extended() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8".into(), "::1".into()]).expect("parse");
        assert!(trusted.contains("10.1.2.3".parse().expect("ip")));
        assert!(trusted.contains("::1".parse().expect("ip")));
        assert!(!trusted.contains("192.0.2.1".parse().expect("ip")));
        let mut h = forged();
        set_forwarding(
            &mut h,
            &client("10.0.0.9:5000"),
            Some(&HeaderValue::from_static("www.example.com")),
            true,
        );
        assert_eq!(h[X_FORWARDED_FOR], "1.2.3.4, 10.0.0.9");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "evil.example");
        assert_eq!(
            h[FORWARDED],
            "for=1.2.3.4, for=10.0.0.9;proto=https;host=\"www.example.com\""
        );
        let mut h = HeaderMap::new();
        set_forwarding(&mut h, &client("[2001:db8::1]:5000"), None, false);
        assert_eq!(h[FORWARDED], "for=\"[2001:db8::1]\";proto=https");
    }

    #[test]
    fn client_cert_headers_are_stripped() {
        let mut h = HeaderMap::new();
        for n in [
            "x-ssl-client-verify",
            "x-ssl-client-s-dn",
            "x-ssl-client-cert",
            "x-ssl-protocol",
            "x-forwarded-client-cert",
            "x-ssl-other",
            "x-client-dn",
        ] {
            h.append(n, HeaderValue::from_static("forged"));
        }
        strip_client_cert_headers(&mut h, &[http::HeaderName::from_static("x-client-dn")]);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-ssl-other"));
    }

    #[test]
    fn bad_entries_name_their_index() {
        let e = TrustedProxies::parse(&["10.0.0.0/8".into(), "nope".into()]).expect_err("bad");
        assert!(
            e.to_string().starts_with("gateway.trusted_proxies[1]"),
            "{e}"
        );
    }
}
