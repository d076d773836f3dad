//! The route table: compiling `[[gateway.routes]]` into matchers and choosing the most specific route for a
//! request.
//!
//! The rule (also in docs/gateway.md): among the routes whose every constraint matches, the winner is the one
//! with, compared in this order,
//! 1. the best host match: an exact host beats a `*.` wildcard, which beats a route without hosts; between two
//!    wildcards the longer suffix wins (`*.api.example.com` beats `*.example.com`);
//! 2. the longest path prefix (`/api/v1` beats `/api` beats `/`);
//! 3. the most constraints besides host and path: a method list counts one, each header one;
//! 4. the earliest in the file.

use crate::client_cert::CertHeaders;
use crate::ratelimit::RateLimiter;
use crate::EdgeError;
use bytes::Bytes;
use ferry_config::{GatewayConfig, RouteConfig};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use std::sync::Arc;

/// What a route does with the requests it wins.
#[derive(Debug, Clone)]
pub enum Action {
    /// Proxy to the named upstream pool.
    Upstream(String),
    /// Send through the relay to a tenant's target.
    Relay { tenant: String, target: String },
    /// Answer with a redirect to `to` (plus the request's path and query when `keep_path`).
    Redirect {
        to: String,
        status: StatusCode,
        keep_path: bool,
    },
    /// Answer with a fixed response.
    Respond {
        status: StatusCode,
        body: Bytes,
        content_type: HeaderValue,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// The suffix with its leading dot: `*.example.com` is stored as `.example.com`.
    Wildcard(String),
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    hosts: Vec<HostPattern>,
    /// Normalised prefix: starts with `/`; `/` matches everything.
    path: String,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, Option<HeaderValue>)>,
    pub action: Action,
    pub strip_prefix: bool,
    pub max_body_size: Option<u64>,
    /// The client-certificate headers this route sends upstream.
    pub cert_headers: CertHeaders,
    pub rate_limit: Option<Arc<RateLimiter>>,
    /// Refuse requests whose connection presented no verified client certificate.
    pub require_client_cert: bool,
    /// The `Upgrade` protocols passed on (lowercase).
    pub upgrades: Vec<String>,
}

/// How well a route matched; larger is more specific. Compared field by field, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Specificity {
    /// 2 exact host, 1 wildcard, 0 any host.
    host_rank: u8,
    /// Length of the wildcard suffix (0 otherwise).
    host_len: usize,
    path_len: usize,
    constraints: usize,
}

/// The compiled routes, in file order.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Whether any route matches on host: if none does, a request's host is not worked out (two allocations).
    by_host: bool,
}

/// The request facts routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RouteInput<'a> {
    /// Lowercased, without port or trailing dot; `None` when the request names no host.
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a http::HeaderMap,
}

impl RouteTable {
    /// Compile and check the routes; `pools` are the configured upstream names (for reference checks).
    pub fn compile(config: &GatewayConfig) -> Result<Self, EdgeError> {
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| compile_route(i, r, config))
            .collect::<Result<Vec<_>, _>>()?;
        let by_host = routes.iter().any(|r| !r.hosts.is_empty());
        Ok(Self { routes, by_host })
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// The client-certificate header names routes send beyond the default family (configured names), removed
    /// from every incoming request along with that family. Usually empty, so that checking a request's headers
    /// against it costs nothing.
    pub fn cert_header_family(&self) -> Vec<HeaderName> {
        let mut names: Vec<HeaderName> = self
            .routes
            .iter()
            .flat_map(|r| r.cert_headers.family().cloned())
            .filter(|n| !crate::client_cert::is_default_family(n.as_str()))
            .collect();
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        names
    }

    /// The index of the most specific route matching `input`, if any.
    pub fn find(&self, input: &RouteInput<'_>) -> Option<usize> {
        let mut best: Option<(Specificity, usize)> = None;
        for (i, route) in self.routes.iter().enumerate() {
            let Some(spec) = route.matches(input) else {
                continue;
            };
            // strictly greater: on a tie the earlier route stays
            if best.is_none_or(|(b, _)| spec > b) {
                best = Some((spec, i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// Routing for a request: its host (`:authority` or `Host`), path, method and headers.
    pub fn find_request<B>(&self, req: &Request<B>) -> Option<usize> {
        // runs on every request, also on a node without gateway routes
        if self.routes.is_empty() {
            return None;
        }
        let host = if self.by_host {
            request_host(req)
        } else {
            None
        };
        self.find(&RouteInput {
            host: host.as_deref(),
            path: req.uri().path(),
            method: req.method(),
            headers: req.headers(),
        })
    }
}

impl Route {
    fn matches(&self, input: &RouteInput<'_>) -> Option<Specificity> {
        let (host_rank, host_len) = if self.hosts.is_empty() {
            (0, 0)
        } else {
            let host = input.host?;
            self.hosts
                .iter()
                .filter_map(|p| match p {
                    HostPattern::Exact(h) => (h == host).then_some((2u8, h.len())),
                    HostPattern::Wildcard(suffix) => (host.len() > suffix.len()
                        && host.ends_with(suffix.as_str()))
                    .then_some((1u8, suffix.len())),
                })
                .max()?
        };
        // exact hosts compare by rank only: two exact matches of the same host tie
        let host_len = if host_rank == 2 { 0 } else { host_len };
        if !path_matches(&self.path, input.path) {
            return None;
        }
        if !self.methods.is_empty() && !self.methods.contains(input.method) {
            return None;
        }
        for (name, want) in &self.headers {
            let mut values = input.headers.get_all(name).iter();
            let ok = match want {
                None => values.next().is_some(),
                Some(v) => values.any(|got| got == v),
            };
            if !ok {
                return None;
            }
        }
        Some(Specificity {
            host_rank,
            host_len,
            path_len: if self.path == "/" { 0 } else { self.path.len() },
            constraints: usize::from(!self.methods.is_empty()) + self.headers.len(),
        })
    }

    /// The path to forward: the request path, without the matched prefix when `strip_prefix` is set.
    pub fn forward_path<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        if !self.strip_prefix || self.path == "/" {
            return path.into();
        }
        let prefix = self.path.trim_end_matches('/');
        let rest = path.get(prefix.len()..).unwrap_or("");
        if rest.is_empty() {
            "/".into()
        } else {
            rest.into()
        }
    }
}

/// `/api` matches `/api`, `/api/` and `/api/x`, not `/apix`; a prefix ending in `/` matches what starts with it.
fn path_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    if !path.starts_with(prefix) {
        return false;
    }
    prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'
}

/// The request's host, lowercased, without port and trailing dot: the URI authority (HTTP/2, absolute form)
/// or else the `Host` header.
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

fn strip_port(hostport: &str) -> &str {
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

fn compile_route(i: usize, r: &RouteConfig, config: &GatewayConfig) -> Result<Route, EdgeError> {
    let key = format!("gateway.routes[{i}]");
    let invalid = |field: &str, message: String| EdgeError::Config {
        path: if field.is_empty() {
            key.clone()
        } else {
            format!("{key}.{field}")
        },
        message,
    };
    let name = r.name.clone().unwrap_or_else(|| format!("route-{i}"));
    let mut hosts = Vec::new();
    for h in &r.hosts {
        let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
        if let Some(suffix) = h.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                return Err(invalid("hosts", format!("bad wildcard host {h:?}")));
            }
            hosts.push(HostPattern::Wildcard(format!(".{suffix}")));
        } else if h.is_empty() || h.contains('*') || h.contains('/') {
            return Err(invalid(
                "hosts",
                format!("{h:?} is neither a host nor a `*.` wildcard"),
            ));
        } else {
            hosts.push(HostPattern::Exact(strip_port(&h).to_owned()));
        }
    }
    let path = r.path.clone().unwrap_or_else(|| "/".to_owned());
    if !path.starts_with('/') {
        return Err(invalid("path", format!("{path:?} must start with /")));
    }
    let methods = r
        .methods
        .iter()
        .map(|m| {
            Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
                .map_err(|_| invalid("methods", format!("{m:?} is not a method")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let headers = r
        .headers
        .iter()
        .map(|(n, v)| {
            let name = HeaderName::from_bytes(n.trim().as_bytes())
                .map_err(|_| invalid("headers", format!("{n:?} is not a header name")))?;
            let value = if v == "*" {
                None
            } else {
                Some(
                    HeaderValue::from_str(v)
                        .map_err(|_| invalid("headers", format!("{v:?} is not a header value")))?,
                )
            };
            Ok((name, value))
        })
        .collect::<Result<Vec<_>, EdgeError>>()?;
    let mut actions = Vec::new();
    if let Some(u) = &r.upstream {
        if !config.upstreams.contains_key(u) {
            return Err(invalid("upstream", format!("no upstream named {u:?}")));
        }
        actions.push(Action::Upstream(u.clone()));
    }
    if let Some(rt) = &r.relay {
        let (tenant, target) = rt
            .split_once('/')
            .filter(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains('/'))
            .ok_or_else(|| invalid("relay", format!("{rt:?} is not tenant/target")))?;
        ferry_proto::TenantName::new(tenant.to_owned())
            .map_err(|e| invalid("relay", e.to_string()))?;
        ferry_proto::TargetName::new(target.to_owned())
            .map_err(|e| invalid("relay", e.to_string()))?;
        actions.push(Action::Relay {
            tenant: tenant.to_owned(),
            target: target.to_owned(),
        });
    }
    if let Some(rd) = &r.redirect {
        let status = StatusCode::from_u16(rd.status)
            .ok()
            .filter(|s| matches!(s.as_u16(), 301 | 302 | 303 | 307 | 308))
            .ok_or_else(|| {
                invalid(
                    "redirect.status",
                    format!("{} is not 301, 302, 303, 307 or 308", rd.status),
                )
            })?;
        HeaderValue::from_str(&rd.to)
            .map_err(|_| invalid("redirect.to", format!("{:?} is not a header value", rd.to)))?;
        actions.push(Action::Redirect {
            to: rd.to.clone(),
            status,
            keep_path: rd.keep_path,
        });
    }
    if let Some(rs) = &r.respond {
        let status = StatusCode::from_u16(rs.status)
            .map_err(|_| invalid("respond.status", format!("{} is not a status", rs.status)))?;
        let ct = rs
            .content_type
            .as_deref()
            .unwrap_or("text/plain; charset=utf-8");
        let content_type = HeaderValue::from_str(ct).map_err(|_| {
            invalid(
                "respond.content_type",
                format!("{ct:?} is not a header value"),
            )
        })?;
        actions.push(Action::Respond {
            status,
            body: Bytes::from(rs.body.clone()),
            content_type,
        });
    }
    if actions.len() != 1 {
        return Err(invalid(
            "",
            "a route needs exactly one of upstream, relay, redirect, respond".to_owned(),
        ));
    }
    let action = actions.remove(0);
    let cert_headers =
        CertHeaders::compile(&key, r.client_cert_headers, &r.client_cert_header_names)?;
    let rate_limit = r
        .rate_limit
        .as_ref()
        .map(|c| RateLimiter::new(&key, c).map(Arc::new))
        .transpose()?;
    let upgrades = match &r.upgrades {
        None => vec!["websocket".to_owned()],
        Some(list) => list
            .iter()
            .map(|p| {
                let p = p.trim().to_ascii_lowercase();
                if p.is_empty() || p.split('/').next() == Some("h2c") {
                    Err(invalid(
                        "upgrades",
                        format!("{p:?}: h2c (and an empty name) cannot be upgraded to"),
                    ))
                } else {
                    Ok(p)
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(Route {
        upgrades,
        cert_headers,
        rate_limit,
        name,
        hosts,
        path,
        methods,
        headers,
        action,
        strip_prefix: r.strip_prefix,
        max_body_size: r.max_body_size,
        require_client_cert: r.require_client_cert,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_config::RespondConfig;
    use http::HeaderMap;

    fn respond(name: &str) -> RouteConfig {
        RouteConfig {
            name: Some(name.to_owned()),
            respond: Some(RespondConfig {
                status: 200,
                body: name.to_owned(),
                content_type: None,
            }),
            ..RouteConfig::default()
        }
    }

    fn table(routes: Vec<RouteConfig>) -> RouteTable {
        RouteTable::compile(&GatewayConfig {
            routes,
            ..GatewayConfig::default()
        })
        .expect("compile")
    }

    fn pick(
        t: &RouteTable,
        host: Option<&str>,
        path: &str,
        method: Method,
        h: &[(&str, &str)],
    ) -> Option<String> {
        let mut headers = HeaderMap::new();
        for (n, v) in h {
            headers.append(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        t.find(&RouteInput {
            host,
            path,
            method: &method,
            headers: &headers,
        })
        .and_then(|i| t.get(i))
        .map(|r| r.name.clone())
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any() {
        let t = table(vec![
            respond("any"),
            RouteConfig {
                hosts: vec!["*.example.com".into()],
                ..respond("wild")
            },
            RouteConfig {
                hosts: vec!["*.api.example.com".into()],
                ..respond("wild-longer")
            },
            RouteConfig {
                hosts: vec!["www.example.com".into()],
                ..respond("exact")
            },
        ]);
        let get = |h| pick(&t, Some(h), "/", Method::GET, &[]);
        assert_eq!(get("www.example.com").as_deref(), Some("exact"));
        assert_eq!(get("shop.example.com").as_deref(), Some("wild"));
        assert_eq!(get("a.b.example.com").as_deref(), Some("wild"));
        assert_eq!(get("v1.api.example.com").as_deref(), Some("wild-longer"));
        // the apex is not matched by its wildcard
        assert_eq!(get("example.com").as_deref(), Some("any"));
        assert_eq!(get("other.org").as_deref(), Some("any"));
        assert_eq!(
            pick(&t, None, "/", Method::GET, &[]).as_deref(),
            Some("any")
        );
    }

    #[test]
    fn host_outranks_path_and_path_outranks_constraints() {
        let t = table(vec![
            RouteConfig {
                path: Some("/api/v1".into()),
                ..respond("long-path-any-host")
            },
            RouteConfig {
                hosts: vec!["a.example.com".into()],
                ..respond("exact-host-root")
            },
            RouteConfig {
                path: Some("/api".into()),
                methods: vec!["POST".into()],
                headers: [("x-env".to_owned(), "prod".to_owned())].into(),
                ..respond("short-path-constrained")
            },
        ]);
        assert_eq!(
            pick(&t, Some("a.example.com"), "/api/v1/x", Method::GET, &[]).as_deref(),
            Some("exact-host-root")
        );
        assert_eq!(
            pick(
                &t,
                Some("b.example.com"),
                "/api/v1/x",
                Method::POST,
                &[("x-env", "prod")]
            )
            .as_deref(),
            Some("long-path-any-host")
        );
        assert_eq!(
            pick(
                &t,
                Some("b.example.com"),
                "/api/x",
                Method::POST,
                &[("x-env", "prod")]
            )
            .as_deref(),
            Some("short-path-constrained")
        );
        assert_eq!(
            pick(
                &t,
                Some("b.example.com"),
                "/api/x",
                Method::POST,
                &[("x-env", "dev")]
            ),
            None
        );
    }

    #[test]
    fn constraints_break_ties_then_file_order() {
        let t = table(vec![
            RouteConfig {
                path: Some("/app".into()),
                ..respond("plain")
            },
            RouteConfig {
                path: Some("/app".into()),
                methods: vec!["get".into()],
                ..respond("get")
            },
            RouteConfig {
                path: Some("/app".into()),
                methods: vec!["GET".into()],
                headers: [("x-canary".to_owned(), "*".to_owned())].into(),
                ..respond("get-canary")
            },
            RouteConfig {
                path: Some("/app".into()),
                ..respond("plain-later")
            },
        ]);
        assert_eq!(
            pick(&t, None, "/app", Method::POST, &[]).as_deref(),
            Some("plain")
        );
        assert_eq!(
            pick(&t, None, "/app/x", Method::GET, &[]).as_deref(),
            Some("get")
        );
        assert_eq!(
            pick(&t, None, "/app", Method::GET, &[("x-canary", "anything")]).as_deref(),
            Some("get-canary")
        );
    }

    #[test]
    fn path_prefixes_match_on_segments() {
        assert!(path_matches("/api", "/api"));
        assert!(path_matches("/api", "/api/"));
        assert!(path_matches("/api", "/api/x"));
        assert!(!path_matches("/api", "/apix"));
        assert!(path_matches("/api/", "/api/x"));
        assert!(!path_matches("/api/", "/api"));
        assert!(path_matches("/", "/anything"));
    }

    #[test]
    fn strip_prefix_keeps_a_leading_slash() {
        let t = table(vec![RouteConfig {
            path: Some("/api".into()),
            strip_prefix: true,
            ..respond("r")
        }]);
        let r = t.get(0).expect("route");
        assert_eq!(r.forward_path("/api/x/y"), "/x/y");
        assert_eq!(r.forward_path("/api"), "/");
        let t = table(vec![RouteConfig {
            path: Some("/api/".into()),
            strip_prefix: true,
            ..respond("r")
        }]);
        assert_eq!(t.get(0).expect("route").forward_path("/api/x"), "/x");
    }

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
    }

    #[test]
    fn bad_routes_name_their_key() {
        let err = |routes: Vec<RouteConfig>| {
            RouteTable::compile(&GatewayConfig {
                routes,
                ..GatewayConfig::default()
            })
            .expect_err("must fail")
            .to_string()
        };
        let e = err(vec![respond("ok"), RouteConfig::default()]);
        assert!(
            e.starts_with("gateway.routes[1]: a route needs exactly one"),
            "{e}"
        );
        let e = err(vec![RouteConfig {
            upstream: Some("nope".into()),
            ..RouteConfig::default()
        }]);
        assert!(
            e.contains("gateway.routes[0].upstream: no upstream named \"nope\""),
            "{e}"
        );
        let e = err(vec![RouteConfig {
            relay: Some("only-tenant".into()),
            ..RouteConfig::default()
        }]);
        assert!(e.contains("routes[0].relay"), "{e}");
        let e = err(vec![RouteConfig {
            path: Some("api".into()),
            ..respond("x")
        }]);
        assert!(e.contains("routes[0].path"), "{e}");
        let e = err(vec![RouteConfig {
            hosts: vec!["a.*.com".into()],
            ..respond("x")
        }]);
        assert!(e.contains("routes[0].hosts"), "{e}");
    }
}
