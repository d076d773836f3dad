//! Compiling `[[gateway.routes]]`: hosts, path, methods and headers into matchers, exactly one action, the
//! upgrade list, and whatever the caller attaches to each route. Every error names its key
//! (`gateway.routes[2].upstream: no upstream named "apii"`).

use bytes::Bytes;
use ferry_config::{GatewayConfig, RouteConfig};
use http::{HeaderName, HeaderValue, Method, StatusCode};

use crate::host::normalize_host;
use crate::table::{HostPattern, PathMatch, PathRewrite, Piece};
use crate::{Action, ListenerNames, Route, RouteError, RouteTable};

impl RouteTable {
    /// Compile and check the routes of `config` (upstream names are checked against its pools; listener names
    /// against the main listener's only, unbound: see [`RouteTable::compile_with`]).
    pub fn compile(config: &GatewayConfig) -> Result<Self, RouteError> {
        RouteTable::compile_with(config, &ListenerNames::default(), |_, _| {
            Ok::<(), RouteError>(())
        })
    }
}

impl<X> RouteTable<X> {
    /// [`RouteTable::compile`] with the node's `listeners` (a route's `listeners` must name them; the bound ones
    /// are what requests are compared with), attaching to each route what `extra` makes of its config (`extra`
    /// gets the route's key, `gateway.routes[N]`, for its errors); it runs after the route's own checks passed.
    pub fn compile_with<E: From<RouteError>>(
        config: &GatewayConfig,
        listeners: &ListenerNames,
        mut extra: impl FnMut(&str, &RouteConfig) -> Result<X, E>,
    ) -> Result<Self, E> {
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, r) in config.routes.iter().enumerate() {
            let key = format!("gateway.routes[{i}]");
            let mut route = compile_route(i, &key, r, config)?;
            route.listeners = route_listeners(&key, r, listeners)?;
            let extra = extra(&key, r)?;
            routes.push(Route {
                name: route.name,
                hosts: route.hosts,
                path: route.path,
                path_match: route.path_match,
                rewrite: route.rewrite,
                methods: route.methods,
                headers: route.headers,
                listeners: route.listeners,
                listener_names: r.listeners.clone(),
                action: route.action,
                strip_prefix: route.strip_prefix,
                max_body_size: route.max_body_size,
                require_client_cert: route.require_client_cert,
                upgrades: route.upgrades,
                extra,
            });
        }
        let by_host = routes.iter().any(|r| !r.hosts.is_empty());
        let by_listener = routes.iter().any(|r| r.listeners.is_some());
        Ok(RouteTable {
            routes,
            by_host,
            by_listener,
            allow_encoded_slashes: config.allow_encoded_slashes,
        })
    }
}

/// The bound addresses of the listeners route `r` names (`None`: it names none, every listener); an unknown name
/// is refused with the route and the name.
fn route_listeners(
    key: &str,
    r: &RouteConfig,
    known: &ListenerNames,
) -> Result<Option<Box<[std::net::SocketAddr]>>, RouteError> {
    if r.listeners.is_empty() {
        return Ok(None);
    }
    let mut bound = Vec::with_capacity(r.listeners.len());
    for name in &r.listeners {
        let Some(addr) = known.lookup(name) else {
            let route = r
                .name
                .as_deref()
                .map(|n| format!("route {n:?}: "))
                .unwrap_or_default();
            let names: Vec<&str> = known.names().collect();
            return Err(RouteError::Config {
                path: format!("{key}.listeners"),
                message: format!(
                    "{route}no listener named {name:?} (server.listen is \"main\"; the names are {})",
                    names.join(", ")
                ),
            });
        };
        // a name not bound (a config being checked) limits the route all the same
        if let Some(addr) = addr.filter(|a| !bound.contains(a)) {
            bound.push(addr);
        }
    }
    Ok(Some(bound.into_boxed_slice()))
}

fn compile_route(
    i: usize,
    key: &str,
    r: &RouteConfig,
    config: &GatewayConfig,
) -> Result<Route, RouteError> {
    let invalid = |field: &str, message: String| RouteError::Config {
        path: if field.is_empty() {
            key.to_owned()
        } else {
            format!("{key}.{field}")
        },
        message,
    };
    let name = r.name.clone().unwrap_or_else(|| format!("route-{i}"));
    let mut hosts = Vec::new();
    for h in &r.hosts {
        // read as the request's host is: without case, port or trailing dot
        let pattern = match h.trim().strip_prefix("*.") {
            Some(suffix) => normalize_host(suffix)
                .filter(|s| !s.starts_with('['))
                .map(|s| HostPattern::Wildcard(format!(".{s}"))),
            None => normalize_host(h).map(HostPattern::Exact),
        };
        let Some(pattern) = pattern else {
            return Err(invalid(
                "hosts",
                format!(
                    "{h:?} is neither a host (name or [IP], optional port) nor a `*.` wildcard"
                ),
            ));
        };
        hosts.push(pattern);
    }
    let (path, path_match) = match (&r.path, &r.path_exact, &r.path_regex) {
        (None, None, None) => ("/".to_owned(), PathMatch::Prefix),
        (Some(p), None, None) => (p.clone(), PathMatch::Prefix),
        (None, Some(p), None) => (p.clone(), PathMatch::Exact),
        (None, None, Some(source)) => {
            let re = regex::RegexBuilder::new(source)
                // a pattern is config, but a huge one would cost every request: keep it small
                .size_limit(1 << 20)
                .build()
                .map_err(|e| invalid("path_regex", format!("{source:?}: {e}")))?;
            (source.clone(), PathMatch::Regex(re))
        }
        _ => {
            return Err(invalid(
                "",
                "a route has at most one of path, path_exact, path_regex".to_owned(),
            ))
        }
    };
    if !matches!(path_match, PathMatch::Regex(_)) && !path.starts_with('/') {
        let field = if r.path_exact.is_some() {
            "path_exact"
        } else {
            "path"
        };
        return Err(invalid(field, format!("{path:?} must start with /")));
    }
    let rewrite = match (&r.rewrite, &r.replace_prefix, &path_match) {
        (None, None, _) => PathRewrite::Keep,
        (Some(_), Some(_), _) => {
            return Err(invalid(
                "",
                "a route has at most one of rewrite, replace_prefix".to_owned(),
            ))
        }
        (Some(template), None, PathMatch::Regex(re)) => PathRewrite::Template(
            template_pieces(template, re).map_err(|message| invalid("rewrite", message))?,
        ),
        (Some(_), None, _) => {
            return Err(invalid(
                "rewrite",
                "needs path_regex (its captures fill the template); with a prefix path use replace_prefix"
                    .to_owned(),
            ))
        }
        (None, Some(with), PathMatch::Prefix) => {
            if !with.is_empty() && !with.starts_with('/') {
                return Err(invalid(
                    "replace_prefix",
                    format!("{with:?} must start with / (or be empty)"),
                ));
            }
            if with.contains(['?', '#']) {
                return Err(invalid(
                    "replace_prefix",
                    format!("{with:?}: only the path is replaced; the query goes on as it came"),
                ));
            }
            PathRewrite::ReplacePrefix(with.clone())
        }
        (None, Some(_), _) => {
            return Err(invalid(
                "replace_prefix",
                "needs a prefix path (with path_regex use rewrite)".to_owned(),
            ))
        }
    };
    if r.strip_prefix && !matches!(rewrite, PathRewrite::Keep) {
        return Err(invalid(
            "strip_prefix",
            "cannot be combined with replace_prefix or rewrite".to_owned(),
        ));
    }
    if r.strip_prefix && !matches!(path_match, PathMatch::Prefix) {
        return Err(invalid(
            "strip_prefix",
            "needs a prefix path (with path_regex use rewrite)".to_owned(),
        ));
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
        .collect::<Result<Vec<_>, RouteError>>()?;
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
    if let Some(dir) = &r.static_dir {
        if !dir.is_absolute() {
            return Err(invalid(
                "static_dir",
                format!("{} must be an absolute path", dir.display()),
            ));
        }
        if !dir.is_dir() {
            return Err(invalid(
                "static_dir",
                format!("{} is not a directory", dir.display()),
            ));
        }
        actions.push(Action::Static(dir.clone()));
    }
    if actions.len() != 1 {
        return Err(invalid(
            "",
            "a route needs exactly one of upstream, relay, redirect, respond, static_dir"
                .to_owned(),
        ));
    }
    let action = actions.remove(0);
    if r.buffer_request_body {
        if !matches!(action, Action::Upstream(_)) {
            return Err(invalid(
                "buffer_request_body",
                "only upstream routes buffer request bodies".to_owned(),
            ));
        }
        let limit = match r.max_body_size {
            None => config.default_max_body_size(),
            Some(0) => None,
            Some(n) => Some(n),
        };
        if limit.is_none() {
            return Err(invalid(
                "buffer_request_body",
                "needs a request body limit (the route's or [gateway] max_body_size, not 0): buffered bodies are kept in memory or on disk whole".to_owned(),
            ));
        }
    }
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
        name,
        hosts,
        path,
        path_match,
        rewrite,
        methods,
        headers,
        listeners: None,
        listener_names: Vec::new(),
        action,
        strip_prefix: r.strip_prefix,
        max_body_size: match r.max_body_size {
            None => config.default_max_body_size(),
            Some(0) => None,
            Some(n) => Some(n),
        },
        require_client_cert: r.require_client_cert,
        upgrades,
        extra: (),
    })
}

/// The pieces of a `rewrite` template: text, `$N` or `${N}` (a group by number), `${name}` (a named group),
/// `$$` (a `$`). Written by hand rather than with `Captures::expand`, which reads `$1a` as a group named `1a` and
/// puts nothing in for a group that does not exist: here every reference is checked against the expression when
/// the config is read, and the error names the key.
fn template_pieces(template: &str, re: &regex::Regex) -> Result<Vec<Piece>, String> {
    if template.contains(['?', '#']) {
        return Err(format!(
            "{template:?}: a rewrite changes the path only; the query goes on as it came"
        ));
    }
    if !template.starts_with('/') && !template.starts_with('$') {
        return Err(format!("{template:?} must start with / (or a capture)"));
    }
    let group = |reference: &str| -> Result<usize, String> {
        let index = match reference.parse::<usize>() {
            Ok(n) => n,
            Err(_) => re
                .capture_names()
                .position(|n| n == Some(reference))
                .ok_or_else(|| {
                    format!("{template:?}: path_regex has no group named {reference:?}")
                })?,
        };
        if index >= re.captures_len() {
            return Err(format!(
                "{template:?}: path_regex has no group {index} (it has {})",
                re.captures_len() - 1
            ));
        }
        Ok(index)
    };
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (reference, next) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("{template:?}: `${{` without its `}}`"))?;
            (&inner[..end], &inner[end + 1..])
        } else if let Some(next) = after.strip_prefix('$') {
            text.push('$');
            rest = next;
            continue;
        } else {
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(format!(
                    "{template:?}: `$` starts $N, ${{N}} or ${{name}} (`$$` for a `$`)"
                ));
            }
            (&after[..digits], &after[digits..])
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(Piece::Group(group(reference)?));
        rest = next;
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{path_matches, RouteInput};
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
            arrival: crate::Arrival::Unknown,
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
    fn requests_are_routed_by_their_normalised_path() {
        let t = table(vec![
            RouteConfig {
                path: Some("/gw/admin".into()),
                ..respond("admin")
            },
            RouteConfig {
                path: Some("/gw".into()),
                ..respond("gw")
            },
        ]);
        let route = |uri: &str| {
            let req = http::Request::builder().uri(uri).body(()).expect("req");
            t.find_normalized(&req)
        };
        assert_eq!(
            route("/gw/x/../%61dmin/"),
            Ok(Some(crate::Routed {
                index: 0,
                path: Some("/gw/admin/".into())
            }))
        );
        assert_eq!(
            route("/gw/x"),
            Ok(Some(crate::Routed {
                index: 1,
                path: None
            }))
        );
        assert_eq!(route("/other"), Ok(None));
        assert!(route("/gw/../../x").is_err());
        let empty: RouteTable = RouteTable::default();
        assert_eq!(empty.find_normalized(&http::Request::new(())), Ok(None));
    }

    #[test]
    fn routes_of_other_listeners_do_not_exist_for_a_request() {
        use crate::{Arrival, ListenerNames};
        let main: std::net::SocketAddr = "0.0.0.0:443".parse().expect("addr");
        let http: std::net::SocketAddr = "0.0.0.0:80".parse().expect("addr");
        let internal: std::net::SocketAddr = "127.0.0.1:8081".parse().expect("addr");
        let names = ListenerNames::bound(
            main,
            [("http".to_owned(), http), ("internal".to_owned(), internal)],
        );
        let config = GatewayConfig {
            routes: vec![
                respond("app"),
                RouteConfig {
                    path: Some("/admin".into()),
                    listeners: vec!["internal".into()],
                    ..respond("admin")
                },
                RouteConfig {
                    path: Some("/.well-known/acme-challenge/".into()),
                    listeners: vec!["http".into(), "main".into()],
                    ..respond("acme")
                },
                RouteConfig {
                    path_exact: Some("/admin/x".into()),
                    listeners: vec!["main".into()],
                    ..respond("main-only")
                },
            ],
            ..GatewayConfig::default()
        };
        let t: RouteTable =
            RouteTable::compile_with(&config, &names, |_, _| Ok::<(), RouteError>(()))
                .expect("compile");
        assert!(t.by_listener());
        assert_eq!(t.get(1).expect("route").listeners(), ["internal"]);
        assert!(t.get(0).expect("route").listeners().is_empty());
        let pick = |path: &str, arrival: Arrival| {
            let req = http::Request::builder().uri(path).body(()).expect("req");
            t.find_normalized_on(&req, arrival)
                .expect("routed")
                .and_then(|r| t.get(r.index))
                .map(|r| r.name.clone())
        };
        let name = |s: &str| Some(s.to_owned());
        // the more specific route exists on its listener only: elsewhere the next matching one wins
        assert_eq!(pick("/admin/y", Arrival::On(internal)), name("admin"));
        assert_eq!(pick("/admin/y", Arrival::On(main)), name("app"));
        assert_eq!(pick("/admin/x", Arrival::On(main)), name("main-only"));
        assert_eq!(pick("/admin/x", Arrival::On(internal)), name("admin"));
        assert_eq!(
            pick("/.well-known/acme-challenge/t", Arrival::On(http)),
            name("acme")
        );
        assert_eq!(
            pick("/.well-known/acme-challenge/t", Arrival::On(internal)),
            name("app")
        );
        // a listener not known (no ClientInfo): the routes of every listener only
        assert_eq!(pick("/admin/y", Arrival::Unknown), name("app"));
        assert_eq!(pick("/admin/x", Arrival::Unknown), name("app"));
        // a redirecting listener: only the routes that name it; no route of every listener
        assert_eq!(
            pick("/.well-known/acme-challenge/t", Arrival::OnlyNamed(http)),
            name("acme")
        );
        assert_eq!(pick("/other", Arrival::OnlyNamed(http)), None);
        assert_eq!(
            pick("/admin/y", Arrival::OnlyNamed(internal)),
            name("admin")
        );

        // a table without such routes does not look at listeners
        let plain = table(vec![respond("app")]);
        assert!(!plain.by_listener());
        let req = http::Request::builder().uri("/x").body(()).expect("req");
        assert!(plain
            .find_normalized_on(&req, Arrival::On(internal))
            .expect("routed")
            .is_some());
    }

    #[test]
    fn unknown_listener_names_are_refused_with_the_route_and_the_name() {
        use crate::ListenerNames;
        let routes = vec![
            respond("app"),
            RouteConfig {
                listeners: vec!["main".into(), "internl".into()],
                ..respond("admin")
            },
        ];
        let config = GatewayConfig {
            routes,
            ..GatewayConfig::default()
        };
        let mut server = ferry_config::ServerConfig::default();
        server.listeners.push(ferry_config::ExtraListener {
            name: Some("internal".into()),
            ..ferry_config::ExtraListener::default()
        });
        let names = ListenerNames::of_config(&server);
        let e = RouteTable::compile_with(&config, &names, |_, _| Ok::<(), RouteError>(()))
            .expect_err("unknown name")
            .to_string();
        assert_eq!(
            e,
            "gateway.routes[1].listeners: route \"admin\": no listener named \"internl\" (server.listen is \"main\"; the names are main, internal)"
        );
        // the names of a config that is only checked (nothing bound) are known all the same
        let mut fixed = config.clone();
        fixed.routes[1].listeners = vec!["internal".into()];
        let t: RouteTable =
            RouteTable::compile_with(&fixed, &names, |_, _| Ok::<(), RouteError>(()))
                .expect("known");
        assert!(t.by_listener());
        // without the node's names, only main is known
        let e = RouteTable::compile(&fixed)
            .expect_err("not known")
            .to_string();
        assert!(e.contains("no listener named \"internal\""), "{e}");
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

    /// nginx's `location` order: `=` beats `~` beats the longest prefix; among regexes the first in the file.
    #[test]
    fn exact_beats_regex_beats_prefix_and_regexes_go_by_file_order() {
        let t = table(vec![
            RouteConfig {
                path: Some("/users".into()),
                ..respond("prefix")
            },
            RouteConfig {
                path_regex: Some(r"^/users/(\d+)$".into()),
                ..respond("regex-id")
            },
            RouteConfig {
                path_regex: Some(r"^/users/".into()),
                ..respond("regex-any")
            },
            RouteConfig {
                path_exact: Some("/users/me".into()),
                ..respond("exact")
            },
            RouteConfig {
                path_regex: Some(r"(?i)\.PNG$".into()),
                ..respond("images")
            },
        ]);
        let get = |p| pick(&t, None, p, Method::GET, &[]);
        assert_eq!(get("/users").as_deref(), Some("prefix"));
        assert_eq!(get("/users/42").as_deref(), Some("regex-id"));
        assert_eq!(get("/users/ann").as_deref(), Some("regex-any"));
        assert_eq!(get("/users/me").as_deref(), Some("exact"));
        assert_eq!(get("/users/me/x").as_deref(), Some("regex-any"));
        assert_eq!(get("/img/a.png").as_deref(), Some("images"));
        assert_eq!(get("/users/a.png").as_deref(), Some("regex-any"));
        assert_eq!(get("/other"), None);
        // an exact path is exact: no trailing slash, no more segments
        let t = table(vec![RouteConfig {
            path_exact: Some("/login".into()),
            ..respond("login")
        }]);
        assert_eq!(
            pick(&t, None, "/login", Method::GET, &[]).as_deref(),
            Some("login")
        );
        assert_eq!(pick(&t, None, "/login/", Method::GET, &[]), None);
        assert_eq!(pick(&t, None, "/login/x", Method::GET, &[]), None);
    }

    #[test]
    fn rewrites_fill_captures_and_cannot_climb_out() {
        let t = table(vec![
            RouteConfig {
                path_regex: Some(r"^/u/(?<id>\d+)/(.*)$".into()),
                rewrite: Some("/users/${id}/$2$$".into()),
                ..respond("regex")
            },
            RouteConfig {
                path_regex: Some(r"^/join/([^/]*)/([^/]*)$".into()),
                rewrite: Some("/$1$2/x".into()),
                ..respond("join")
            },
            RouteConfig {
                path: Some("/api".into()),
                replace_prefix: Some("/v2/".into()),
                ..respond("replace")
            },
            RouteConfig {
                path: Some("/docs/".into()),
                replace_prefix: Some("/static".into()),
                ..respond("replace-slash")
            },
        ]);
        let path = |i: usize, p: &'static str| {
            t.get(i)
                .expect("route")
                .upstream_path(p, false)
                .map(|c| c.into_owned())
        };
        assert_eq!(path(0, "/u/7/a/b").as_deref(), Ok("/users/7/a/b$"));
        assert_eq!(path(1, "/join/a/b").as_deref(), Ok("/ab/x"));
        // captures of a normalised path put together into `..`: resolved, and above the root refused
        let dots = table(vec![
            RouteConfig {
                path_regex: Some(r"^/p/(\.)a$".into()),
                rewrite: Some("/q/$1$1/x".into()),
                ..respond("inside")
            },
            RouteConfig {
                path_regex: Some(r"^/p/(\.)b$".into()),
                rewrite: Some("/$1$1/x".into()),
                ..respond("above")
            },
        ]);
        let dot = |i: usize, p: &'static str| {
            dots.get(i)
                .expect("route")
                .upstream_path(p, false)
                .map(|c| c.into_owned())
        };
        assert_eq!(dot(0, "/p/.a").as_deref(), Ok("/x"));
        assert!(dot(1, "/p/.b").is_err());
        assert_eq!(path(2, "/api/x/y").as_deref(), Ok("/v2/x/y"));
        assert_eq!(path(2, "/api").as_deref(), Ok("/v2/"));
        assert_eq!(path(3, "/docs/a.html").as_deref(), Ok("/static/a.html"));
    }

    #[test]
    fn path_kinds_and_rewrites_are_checked_with_their_key() {
        let err = |r: RouteConfig| {
            RouteTable::compile(&GatewayConfig {
                routes: vec![r],
                ..GatewayConfig::default()
            })
            .expect_err("refused")
            .to_string()
        };
        for (route, want) in [
            (
                RouteConfig {
                    path: Some("/a".into()),
                    path_exact: Some("/a".into()),
                    ..respond("x")
                },
                "gateway.routes[0]: a route has at most one of path",
            ),
            (
                RouteConfig {
                    path_regex: Some("([".into()),
                    ..respond("x")
                },
                "gateway.routes[0].path_regex",
            ),
            (
                RouteConfig {
                    path_exact: Some("login".into()),
                    ..respond("x")
                },
                "gateway.routes[0].path_exact",
            ),
            (
                RouteConfig {
                    path_regex: Some("^/(a)$".into()),
                    rewrite: Some("/$2".into()),
                    ..respond("x")
                },
                "gateway.routes[0].rewrite: \"/$2\": path_regex has no group 2",
            ),
            (
                RouteConfig {
                    path_regex: Some("^/(a)$".into()),
                    rewrite: Some("/${nope}".into()),
                    ..respond("x")
                },
                "no group named \"nope\"",
            ),
            (
                RouteConfig {
                    path_regex: Some("^/(a)$".into()),
                    rewrite: Some("/$x".into()),
                    ..respond("x")
                },
                "gateway.routes[0].rewrite",
            ),
            (
                RouteConfig {
                    path_regex: Some("^/(a)$".into()),
                    rewrite: Some("/b?x=$1".into()),
                    ..respond("x")
                },
                "the query goes on as it came",
            ),
            (
                RouteConfig {
                    path: Some("/a".into()),
                    rewrite: Some("/b".into()),
                    ..respond("x")
                },
                "gateway.routes[0].rewrite: needs path_regex",
            ),
            (
                RouteConfig {
                    path_regex: Some("^/a".into()),
                    replace_prefix: Some("/b".into()),
                    ..respond("x")
                },
                "gateway.routes[0].replace_prefix: needs a prefix path",
            ),
            (
                RouteConfig {
                    path: Some("/a".into()),
                    replace_prefix: Some("/b".into()),
                    strip_prefix: true,
                    ..respond("x")
                },
                "gateway.routes[0].strip_prefix",
            ),
        ] {
            let e = err(route);
            assert!(e.contains(want), "{e} should contain {want}");
        }
    }
}
