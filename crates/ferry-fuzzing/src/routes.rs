//! Fuzz target `routes`: the gateway's route table (`ferry-route`) on arbitrary route configs and requests.
//!
//! The first byte picks a mode: even, the rest chooses a `[gateway]` config (hosts, paths, methods, headers,
//! actions, drawn from pieces that often match each other, and often wrong) and then requests; odd, the rest
//! is a routes file (TOML) up to the first NUL byte, and the bytes after it choose the requests. Compiling never
//! panics and a refusal names its key; for a table that compiles, every route's prefix is a normal path, and for
//! each request:
//! - it is refused exactly when its path cannot be normalised ([`ferry_proto::normalize`]);
//! - the route it gets is the one a model of docs/gateway.md's rule picks (written here from the docs, not from
//!   the code): the request's host (a host name or `[IP]`, optional port; else none) lowercased, without port
//!   and trailing dot, against the routes' `hosts` (read alike; exact beats the longest `*.` suffix beats none), then the longest prefix that matches
//!   the normalised path at a segment boundary, then the most methods/headers constraints, then file order;
//! - the route's prefix really matches the normalised path at a segment boundary, and `strip_prefix` leaves
//!   what follows it (or `/`);
//! - the host's case, a port, a trailing dot, and whether it comes as `Host` or in the URI change nothing.

use ferry_config::{GatewayConfig, RedirectConfig, RespondConfig, RouteConfig, UpstreamConfig};
use ferry_proto::normalize::normalize_path;
use ferry_route::{RouteTable, Routed};
use http::{HeaderMap, Method, Request};

use crate::input::Input;

/// Hosts routes name: exact, wildcards, with case, ports and dots that routing ignores, and some that are wrong.
const CONFIG_HOSTS: &[&str] = &[
    "a.example.com",
    "*.example.com",
    "example.com",
    "*.a.example.com",
    "b.example.com",
    "A.Example.COM",
    "example.com.",
    "a.example.com:8080",
    "*.example.com:443",
    "*.Example.com.",
    "example.com.:80",
    "[::1]",
    "[::1]:8080",
    "127.0.0.1",
    " b.example.com ",
    "*.com",
    "*.",
    "*",
    "a.*.com",
    "a.:.b",
    "user@a.example.com",
    "bücher.example",
    "[::1",
    "*.[::1]",
    "in_ternal",
];

/// Segments route prefixes and request paths are made of.
const SEGMENTS: &[&str] = &[
    "api", "v1", "a", "b", "admin", "..", ".", "", "%2e", "%2E%2e", "%61pi", "%2F", "%5c", "%00",
    "%zz", "%7e", "~x", "a;b", "A",
];

/// Values of a route's `path`.
const CONFIG_PATHS: &[&str] = &[
    "/",
    "/api",
    "/api/",
    "/api/v1",
    "/a",
    "/a/b",
    "/api/../admin",
    "/%61pi",
    "/api//v1",
    "api",
    "/API",
    "/a;b",
    "/%7Ex",
    "/a%2Fb",
    "/admin",
    "/api/v1/",
    "/./a",
    "/a?b",
    "/a#b",
];

const HEADER_NAMES: &[&str] = &["x-env", "X-Canary", "bad name", "x-env "];
const HEADER_VALUES: &[&str] = &["prod", "dev", "*", "", "Prod"];
const METHODS: &[&str] = &["GET", "post", "PUT", "BAD METHOD", "", " DELETE "];

/// Run the target on one input.
pub fn routes(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let mut input = Input::new(rest);
        let config = config_from(&mut input);
        check(&config, &mut input);
    } else {
        let (text, lookups) = match rest.iter().position(|&b| b == 0) {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, &[][..]),
        };
        let Ok(text) = std::str::from_utf8(text) else {
            return;
        };
        let Ok(config) = toml::from_str::<GatewayConfig>(text) else {
            return;
        };
        check(&config, &mut Input::new(lookups));
    }
}

fn route_from(input: &mut Input<'_>) -> RouteConfig {
    let mut route = RouteConfig::default();
    for _ in 0..input.small(3) {
        if let Some(h) = input.pick(CONFIG_HOSTS) {
            route.hosts.push((*h).to_owned());
        }
    }
    route.path = match input.small(4) {
        0 => None,
        1 => {
            let mut path = String::new();
            for _ in 0..=input.small(3) {
                path.push('/');
                path.push_str(input.pick(SEGMENTS).copied().unwrap_or_default());
            }
            Some(path)
        }
        _ => input.pick(CONFIG_PATHS).map(|p| (*p).to_owned()),
    };
    if input.small(3) == 0 {
        for _ in 0..=input.small(2) {
            if let Some(m) = input.pick(METHODS) {
                route.methods.push((*m).to_owned());
            }
        }
    }
    for _ in 0..input.small(3).saturating_sub(1) {
        if let (Some(n), Some(v)) = (input.pick(HEADER_NAMES), input.pick(HEADER_VALUES)) {
            route.headers.insert((*n).to_owned(), (*v).to_owned());
        }
    }
    let respond = Some(RespondConfig {
        status: 200,
        body: String::new(),
        content_type: None,
    });
    match input.small(10) {
        0 => route.relay = Some("acme/app".into()),
        1 => route.relay = Some("acme".into()),
        2 => route.upstream = Some("u".into()),
        3 => route.upstream = Some("missing".into()),
        4 => {
            route.redirect = Some(RedirectConfig {
                to: "https://example.org".into(),
                status: if input.bool() { 308 } else { 200 },
                keep_path: input.bool(),
            })
        }
        5 => {}
        6 => {
            route.respond = respond;
            route.relay = Some("acme/app".into());
        }
        _ => route.respond = respond,
    }
    route.strip_prefix = input.bool();
    if input.small(8) == 0 {
        route.upgrades = Some(vec![
            if input.bool() { "h2c" } else { "WebSocket" }.to_owned()
        ]);
    }
    route
}

/// A `[gateway]` config chosen by the input.
fn config_from(input: &mut Input<'_>) -> GatewayConfig {
    let mut config = GatewayConfig {
        allow_encoded_slashes: input.small(4) == 0,
        ..GatewayConfig::default()
    };
    config
        .upstreams
        .insert("u".into(), UpstreamConfig::default());
    for _ in 0..=input.small(6) {
        config.routes.push(route_from(input));
    }
    config
}

/// A host as routing compares it, as docs/gateway.md says: a host name (letters, digits, `-`, `_`, `.`) or an
/// IP literal in brackets, with an optional port; lowercased, without the port and without trailing dots; `None`
/// when it is not of that form (the request then names no host).
fn model_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let (host, port) = match raw.strip_prefix('[') {
        Some(inside) => {
            let (ip, port) = inside.split_once(']')?;
            let ip_ok = !ip.is_empty()
                && ip
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
            (ip_ok.then(|| format!("[{ip}]"))?, port)
        }
        None => {
            let (name, port) = match raw.split_once(':') {
                Some((name, port)) => (name, port),
                None => (raw, ""),
            };
            let name = name.trim_end_matches('.');
            let name_ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            // the port without its colon
            (name_ok.then(|| name.to_owned())?, port)
        }
    };
    let digits = match (raw.starts_with('['), port) {
        (true, "") => "",
        (true, port) => port.strip_prefix(':')?,
        (false, port) => port,
    };
    digits
        .chars()
        .all(|c| c.is_ascii_digit())
        .then(|| host.to_ascii_lowercase())
}

/// A route's host pattern as docs/gateway.md says it is read: `*.` and a host (a wildcard: the suffix with its
/// dot), or a host.
enum ModelPattern {
    Exact(String),
    Suffix(String),
}

fn model_pattern(raw: &str) -> Option<ModelPattern> {
    match raw.trim().strip_prefix("*.") {
        Some(rest) => model_host(rest)
            .filter(|h| !h.starts_with('['))
            .map(|h| ModelPattern::Suffix(format!(".{h}"))),
        None => model_host(raw).map(ModelPattern::Exact),
    }
}

/// How a route matched in the model: (host rank, wildcard suffix length, prefix length, constraints).
type Rank = (u8, usize, usize, usize);

/// The route docs/gateway.md's rule picks for a request (host as [`model_host`] makes it, the normalised path).
fn model_pick(
    config: &GatewayConfig,
    host: Option<&str>,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Option<usize> {
    let mut best: Option<(Rank, usize)> = None;
    'routes: for (i, route) in config.routes.iter().enumerate() {
        let (host_rank, host_len) = if route.hosts.is_empty() {
            (0, 0)
        } else {
            let Some(host) = host else {
                continue;
            };
            let mut best_host = None;
            for pattern in &route.hosts {
                let rank = match model_pattern(pattern) {
                    Some(ModelPattern::Suffix(suffix)) => (host.len() > suffix.len()
                        && host.ends_with(&suffix))
                    .then_some((1, suffix.len())),
                    Some(ModelPattern::Exact(exact)) => (exact == host).then_some((2, 0)),
                    None => panic!("a table compiled with host {pattern:?}"),
                };
                best_host = best_host.max(rank);
            }
            match best_host {
                Some(rank) => rank,
                None => continue,
            }
        };
        let prefix = route.path.as_deref().unwrap_or("/");
        let on_boundary = prefix == "/"
            || path.strip_prefix(prefix).is_some_and(|rest| {
                prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/')
            });
        if !on_boundary {
            continue;
        }
        if !route.methods.is_empty()
            && !route
                .methods
                .iter()
                .any(|m| m.trim().to_ascii_uppercase() == method.as_str())
        {
            continue;
        }
        for (name, want) in &route.headers {
            let name = name.trim().to_ascii_lowercase();
            let mut values = headers
                .iter()
                .filter(|(n, _)| n.as_str() == name)
                .map(|(_, v)| v.as_bytes());
            let ok = if want == "*" {
                values.next().is_some()
            } else {
                values.any(|v| v == want.as_bytes())
            };
            if !ok {
                continue 'routes;
            }
        }
        let constraints = usize::from(!route.methods.is_empty()) + route.headers.len();
        let path_len = if prefix == "/" { 0 } else { prefix.len() };
        let rank = (host_rank, host_len, path_len, constraints);
        if best.is_none_or(|(b, _)| rank > b) {
            best = Some((rank, i));
        }
    }
    best.map(|(_, i)| i)
}

/// A request chosen by the input: a host near one the routes name (or none), a path near one they name.
struct Lookup {
    host: Option<String>,
    /// Where the host goes: the `Host` header, the URI's authority, or both (the URI then names another host
    /// in `Host`, which must be ignored).
    place: u8,
    path: String,
    method: Method,
    headers: HeaderMap,
}

fn lookup_from(input: &mut Input<'_>, config: &GatewayConfig) -> Lookup {
    let configured_hosts: Vec<&str> = config
        .routes
        .iter()
        .flat_map(|r| r.hosts.iter().map(String::as_str))
        .collect();
    let host = match input.small(6) {
        0 => None,
        1 => input
            .pick(&[
                "x.a.example.com",
                "example.org",
                "EXAMPLE.COM",
                "a.b.example.com",
            ])
            .map(|h| (*h).to_owned()),
        _ => input.pick(&configured_hosts).map(|h| {
            let label = input
                .pick(&["x", "a", "deep.a", "B"])
                .copied()
                .unwrap_or("x");
            h.replacen('*', label, 1)
        }),
    };
    let place = input.small(3) as u8;
    let configured_paths: Vec<&str> = config
        .routes
        .iter()
        .filter_map(|r| r.path.as_deref())
        .filter(|p| p.starts_with('/'))
        .collect();
    let base = match input.small(3) {
        0 => String::new(),
        _ => input
            .pick(&configured_paths)
            .map(|p| (*p).to_owned())
            .unwrap_or_default(),
    };
    let tail: Vec<&str> = SEGMENTS.iter().copied().chain(["/", "x", "//"]).collect();
    let mut path = base;
    for _ in 0..input.small(4) {
        if let Some(piece) = input.pick(&tail) {
            path.push('/');
            path.push_str(piece);
        }
    }
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let method = match input.small(5) {
        0 => Method::POST,
        1 => Method::PUT,
        2 => Method::from_bytes(b"get").unwrap_or(Method::GET),
        _ => Method::GET,
    };
    let mut headers = HeaderMap::new();
    for _ in 0..input.small(3) {
        let (Some(n), Some(v)) = (input.pick(HEADER_NAMES), input.pick(HEADER_VALUES)) else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(n.trim().as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            headers.append(n, v);
        }
    }
    Lookup {
        host,
        place,
        path,
        method,
        headers,
    }
}

/// `host` with each letter's case flipped where `mask` says, a port and a trailing dot when asked.
fn disguise(host: &str, mask: u8, port: bool, dot: bool) -> String {
    let mut out: String = host
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 8) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    if dot && !out.ends_with(']') {
        out.push('.');
    }
    if port {
        out.push_str(":8443");
    }
    out
}

/// The request of `lookup`, its host written as `host` and placed as `place` says; `None` when it does not make
/// a valid request.
fn request(lookup: &Lookup, host: Option<&str>, place: u8) -> Option<Request<()>> {
    let uri = match (host, place) {
        (Some(h), 1 | 2) => format!("http://{h}{}", lookup.path),
        _ => lookup.path.clone(),
    };
    let mut builder = Request::builder().method(lookup.method.clone()).uri(uri);
    match (host, place) {
        (Some(h), 0) => builder = builder.header(http::header::HOST, h),
        (Some(_), 2) => builder = builder.header(http::header::HOST, "elsewhere.example.org"),
        _ => {}
    }
    let mut req = builder.body(()).ok()?;
    if req.uri().path() != lookup.path {
        // a host with `/`, `?` or `#` in it ate part of the URI
        return None;
    }
    for (n, v) in &lookup.headers {
        req.headers_mut().append(n, v.clone());
    }
    Some(req)
}

/// Compile `config` and check lookups chosen by `input` against it.
fn check(config: &GatewayConfig, input: &mut Input<'_>) {
    let table = match RouteTable::compile(config) {
        Ok(table) => table,
        Err(error) => {
            let message = error.to_string();
            assert!(message.starts_with("gateway.routes["), "{message}");
            return;
        }
    };
    for route in table.iter() {
        let prefix = route.path();
        assert!(prefix.starts_with('/'), "{prefix:?}");
    }
    for _ in 0..=input.small(8) {
        let lookup = lookup_from(input, config);
        check_lookup(config, &table, &lookup, input);
    }
}

fn check_lookup(
    config: &GatewayConfig,
    table: &RouteTable,
    lookup: &Lookup,
    input: &mut Input<'_>,
) {
    let Some(req) = request(lookup, lookup.host.as_deref(), lookup.place) else {
        return;
    };
    let result = table.find_normalized(&req);
    if table.is_empty() {
        // without routes nothing is looked at, not even the path
        assert_eq!(result, Ok(None));
        return;
    }
    let normalized = normalize_path(req.uri().path(), config.allow_encoded_slashes);
    let (routed, path) = match (&result, &normalized) {
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            return;
        }
        (Ok(routed), Ok(path)) => (routed.clone(), path.to_string()),
        _ => panic!(
            "{:?}: routed {result:?}, normalised {normalized:?}",
            req.uri()
        ),
    };
    // The host as docs/gateway.md says routing sees it.
    let host = match (lookup.host.as_deref(), req.uri().authority()) {
        (_, Some(authority)) => model_host(authority.as_str()),
        (Some(h), None) => model_host(h),
        (None, None) => None,
    };
    let expected = model_pick(config, host.as_deref(), &path, req.method(), req.headers());
    assert_eq!(
        routed.as_ref().map(|r| r.index),
        expected,
        "{} {:?} host {host:?} (normalised path {path:?}): routed {routed:?}, the rule says {expected:?}\n{config:#?}",
        req.method(),
        req.uri(),
    );
    if let Some(Routed {
        index,
        path: new_path,
    }) = &routed
    {
        let route = table
            .get(*index)
            .unwrap_or_else(|| panic!("route {index} missing"));
        // the path the request carries on: the normalised one (`None`: it already is)
        assert_eq!(new_path.as_deref().unwrap_or(req.uri().path()), path);
        let prefix = route.path();
        let on_boundary = prefix == "/"
            || path.strip_prefix(prefix).is_some_and(|rest| {
                prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/')
            });
        assert!(on_boundary, "prefix {prefix:?} does not match {path:?}");
        let forward = route.forward_path(&path);
        assert!(forward.starts_with('/'), "forwarded {forward:?}");
        if route.strip_prefix && prefix != "/" {
            let kept = prefix.trim_end_matches('/');
            let rest = path.get(kept.len()..).unwrap_or_default();
            assert_eq!(forward, if rest.is_empty() { "/" } else { rest });
        } else {
            assert_eq!(forward, path);
        }
    }
    // The host's case, a port, a trailing dot and its place change nothing.
    if let Some(h) = lookup.host.as_deref().and_then(model_host) {
        let disguised = disguise(&h, input.byte(), input.bool(), input.bool());
        if let Some(req) = request(lookup, Some(&disguised), input.small(3) as u8) {
            let again = table.find_normalized(&req).map(|r| r.map(|r| r.index));
            assert_eq!(
                again,
                Ok(routed.as_ref().map(|r| r.index)),
                "{h:?} written as {disguised:?} ({:?})",
                req.uri()
            );
        }
    }
}

/// The seeds of `fuzz/corpus/routes/`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let file = |text: &str, lookups: &[u8]| {
        let mut v = vec![1u8];
        v.extend_from_slice(text.as_bytes());
        v.push(0);
        v.extend_from_slice(lookups);
        v
    };
    let docs = r#"
allow_encoded_slashes = false

[[routes]]
name = "api"
hosts = ["api.example.com", "*.example.com"]
path = "/v1"
methods = ["GET", "POST"]
headers = { "x-env" = "prod" }
strip_prefix = true
respond = { status = 200, body = "api" }

[[routes]]
path = "/static/"
redirect = { to = "https://cdn.example.com", status = 308 }

[[routes]]
path = "/"
relay = "acme/app"
"#;
    vec![
        ("structured-zeros", vec![0; 64]),
        ("structured-mixed", (0u8..=255).step_by(7).collect()),
        ("structured-hosts", vec![0, 0, 2, 1, 7, 1, 1, 0, 9, 2, 4, 5, 0, 1, 3, 1, 8, 2, 0, 4, 1, 2, 3, 1, 0, 5]),
        ("file-docs-example", file(docs, &[3, 2, 1, 0, 4, 1, 2, 2, 7, 1, 0, 3])),
        (
            "file-wildcards",
            file(
                "[[routes]]\nhosts = [\"*.a.example.com\"]\nrespond = {}\n[[routes]]\nhosts = [\"*.example.com\"]\npath = \"/api\"\nrespond = {}\n",
                &[5, 4, 4, 2, 1, 0, 2, 9, 1, 1],
            ),
        ),
    ]
}
