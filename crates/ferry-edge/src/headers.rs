//! Header control per route: values with variables (`$remote_addr`, `$host`, `$request_id`, `$ssl_client_s_dn`,
//! `$http_NAME`, …), the request and response edits (`remove`, then `set`, then `add`), the `Host` sent upstream,
//! and HSTS. Templates are compiled when the config is read (an unknown variable is an error with its key) and
//! rendered against the request before it is taken apart, so that `$http_NAME` reads what the client sent.

use crate::client_cert::{field, nginx_values};
use crate::template::Part;
use crate::EdgeError;
use ferry_config::{HeaderEdits, RouteConfig};
use ferry_http::{ClientInfo, TlsInfo};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use std::sync::OnceLock;

/// A value a template can read from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    /// The address of the peer (`$remote_addr`) and its port (`$remote_port`).
    RemoteAddr,
    RemotePort,
    /// `http` or `https`.
    Scheme,
    /// The host the request names, lowercased, without port (`$host`).
    Host,
    /// The host as the client sent it, port included (`$http_host`).
    HttpHost,
    RequestId,
    /// Path and query as received (normalised path), `$request_uri`.
    RequestUri,
    /// The normalised path, `$uri`.
    Uri,
    RequestMethod,
    /// The route's name, `$route`.
    Route,
    /// One of the client-certificate values ([`field`]).
    Cert(usize),
    /// A request header, `$http_x_user` for `X-User`.
    Header(HeaderName),
}

/// The variables a template may name, and what each reads.
const NAMED: [(&str, Var); 19] = [
    ("remote_addr", Var::RemoteAddr),
    ("remote_port", Var::RemotePort),
    ("scheme", Var::Scheme),
    ("host", Var::Host),
    ("http_host", Var::HttpHost),
    ("request_id", Var::RequestId),
    ("request_uri", Var::RequestUri),
    ("uri", Var::Uri),
    ("request_method", Var::RequestMethod),
    ("route", Var::Route),
    ("ssl_protocol", Var::Cert(field::PROTOCOL)),
    ("ssl_client_verify", Var::Cert(field::VERIFY)),
    ("ssl_client_s_dn", Var::Cert(field::S_DN)),
    ("ssl_client_i_dn", Var::Cert(field::I_DN)),
    ("ssl_client_serial", Var::Cert(field::SERIAL)),
    ("ssl_client_v_start", Var::Cert(field::V_START)),
    ("ssl_client_v_end", Var::Cert(field::V_END)),
    ("ssl_client_fingerprint", Var::Cert(field::FINGERPRINT)),
    ("ssl_client_escaped_cert", Var::Cert(field::CERT)),
];

/// A header value with variables, compiled.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    parts: Vec<Part<Var>>,
    /// The value, when the template names no variable.
    fixed: Option<HeaderValue>,
}

impl Template {
    /// Compile `text`: `$name` (letters, digits, `_`), `${name}`, `$$` for a `$` ([`crate::template`]).
    fn compile(text: &str) -> Result<Self, String> {
        let parts = crate::template::parse(text, variable)?;
        let value = |t: &str| {
            HeaderValue::from_str(t).map_err(|_| format!("{text:?} is not a header value"))
        };
        for p in &parts {
            if let Part::Text(t) = p {
                value(t)?;
            }
        }
        let fixed = match parts.as_slice() {
            [] => Some(HeaderValue::from_static("")),
            [Part::Text(t)] => Some(value(t)?),
            _ => None,
        };
        Ok(Template { parts, fixed })
    }

    /// The value for the request `vars` describes; `None` when it comes out empty or is not a header value (a
    /// variable holding a line break, say).
    pub fn render(&self, vars: &Vars<'_>) -> Option<HeaderValue> {
        if let Some(v) = &self.fixed {
            return Some(v.clone()).filter(|v| !v.is_empty());
        }
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => vars.push(v, &mut out),
            }
        }
        if out.is_empty() {
            return None;
        }
        HeaderValue::from_str(&out).ok()
    }
}

fn variable(name: &str) -> Result<Var, String> {
    if let Some((_, var)) = NAMED.iter().find(|(n, _)| *n == name) {
        return Ok(var.clone());
    }
    if let Some(header) = name.strip_prefix("http_").filter(|h| !h.is_empty()) {
        return HeaderName::from_bytes(header.replace('_', "-").as_bytes())
            .map(Var::Header)
            .map_err(|_| format!("${name}: not a header name"));
    }
    Err(format!(
        "unknown variable ${name}; known: {}, and $http_NAME for a request header",
        NAMED
            .iter()
            .map(|(n, _)| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// The request facts templates read.
pub(crate) struct Vars<'a> {
    pub client: &'a ClientInfo,
    pub tls: Option<&'a TlsInfo>,
    /// The host the request names as the client sent it (`:authority` or `Host`).
    pub host: Option<&'a HeaderValue>,
    pub request_id: &'a str,
    pub uri: &'a Uri,
    pub method: &'a Method,
    pub route: &'a str,
    pub headers: &'a HeaderMap,
    /// The client-certificate values, worked out at most once and only when a template reads one.
    cert: OnceLock<[Option<String>; 9]>,
}

impl<'a> Vars<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: &'a ClientInfo,
        tls: Option<&'a TlsInfo>,
        host: Option<&'a HeaderValue>,
        request_id: &'a str,
        uri: &'a Uri,
        method: &'a Method,
        route: &'a str,
        headers: &'a HeaderMap,
    ) -> Self {
        Vars {
            client,
            tls,
            host,
            request_id,
            uri,
            method,
            route,
            headers,
            cert: OnceLock::new(),
        }
    }

    fn push(&self, var: &Var, out: &mut String) {
        use std::fmt::Write as _;
        match var {
            Var::RemoteAddr => {
                let _ = write!(out, "{}", self.client.remote_addr.ip());
            }
            Var::RemotePort => {
                let _ = write!(out, "{}", self.client.remote_addr.port());
            }
            Var::Scheme => out.push_str(if self.client.tls { "https" } else { "http" }),
            Var::Host => {
                if let Some(h) = self
                    .host
                    .and_then(|h| h.to_str().ok())
                    .and_then(ferry_route::normalize_host)
                {
                    out.push_str(&h);
                }
            }
            Var::HttpHost => {
                if let Some(h) = self.host.and_then(|h| h.to_str().ok()) {
                    out.push_str(h);
                }
            }
            Var::RequestId => out.push_str(self.request_id),
            Var::RequestUri => {
                out.push_str(self.uri.path_and_query().map_or("/", |pq| pq.as_str()))
            }
            Var::Uri => out.push_str(self.uri.path()),
            Var::RequestMethod => out.push_str(self.method.as_str()),
            Var::Route => out.push_str(self.route),
            Var::Cert(i) => {
                if let Some(tls) = self.tls {
                    let values = self.cert.get_or_init(|| nginx_values(tls));
                    if let Some(v) = values.get(*i).and_then(Option::as_deref) {
                        out.push_str(v);
                    }
                }
            }
            Var::Header(name) => {
                // several values: joined as one field would be (RFC 9110 §5.3)
                for (i, v) in self.headers.get_all(name).iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(v.to_str().unwrap_or(""));
                }
            }
        }
    }
}

/// Headers no edit may touch: the message's framing and connection management are Ferry's.
const FRAMING: [&str; 8] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// One message's header edits, compiled.
#[derive(Debug, Clone, Default)]
pub(crate) struct Edits {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, Template)>,
    add: Vec<(HeaderName, Template)>,
}

/// Edits rendered for one request: applied to a header map later (after Ferry's own headers are in place).
#[derive(Debug, Default)]
pub(crate) struct Rendered {
    remove: Vec<HeaderName>,
    /// `None`: the value came out empty, so the header is removed (as nginx's `proxy_set_header X ""`).
    set: Vec<(HeaderName, Option<HeaderValue>)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl Rendered {
    pub fn apply(self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in self.set {
            match value {
                Some(v) => {
                    headers.insert(name, v);
                }
                None => {
                    headers.remove(name);
                }
            }
        }
        for (name, value) in self.add {
            headers.append(name, value);
        }
    }
}

impl Edits {
    /// Compile `edits` of the route at `key` (`field` is `request_headers` or `response_headers`); `forbidden`
    /// names headers this message's edits may not touch, with the reason.
    fn compile(
        key: &str,
        field: &str,
        edits: &HeaderEdits,
        forbidden: &[(&str, &str)],
    ) -> Result<Self, EdgeError> {
        let bad = |sub: &str, message: String| EdgeError::Config {
            path: format!("{key}.{field}.{sub}"),
            message,
        };
        let name = |sub: &str, n: &str| -> Result<HeaderName, EdgeError> {
            let name = HeaderName::from_bytes(n.trim().as_bytes())
                .map_err(|_| bad(sub, format!("{n:?} is not a header name")))?;
            if FRAMING.contains(&name.as_str()) {
                return Err(bad(
                    sub,
                    format!("{n:?}: the message's framing and connection headers are Ferry's"),
                ));
            }
            if let Some((_, why)) = forbidden.iter().find(|(f, _)| *f == name.as_str()) {
                return Err(bad(sub, format!("{n:?}: {why}")));
            }
            Ok(name)
        };
        let templates = |sub: &str, map: &std::collections::BTreeMap<String, String>| {
            map.iter()
                .map(|(n, v)| {
                    Ok((
                        name(sub, n)?,
                        Template::compile(v).map_err(|e| bad(sub, e))?,
                    ))
                })
                .collect::<Result<Vec<_>, EdgeError>>()
        };
        Ok(Edits {
            remove: edits
                .remove
                .iter()
                .map(|n| name("remove", n))
                .collect::<Result<_, _>>()?,
            set: templates("set", &edits.set)?,
            add: templates("add", &edits.add)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    pub fn render(&self, vars: &Vars<'_>) -> Rendered {
        Rendered {
            remove: self.remove.clone(),
            set: self
                .set
                .iter()
                .map(|(n, t)| (n.clone(), t.render(vars)))
                .collect(),
            add: self
                .add
                .iter()
                .filter_map(|(n, t)| Some((n.clone(), t.render(vars)?)))
                .collect(),
        }
    }
}

/// The `Host` sent upstream.
#[derive(Debug, Clone, Default)]
pub(crate) enum UpstreamHost {
    /// As the client sent it, port included (`:authority` or `Host`).
    #[default]
    Client,
    /// The upstream server's own `host:port`, from its URL.
    Upstream,
    /// A value of the route's own (variables allowed).
    Template(Template),
}

/// A route's header control, compiled.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeaderControl {
    pub request: Edits,
    pub response: Edits,
    pub upstream_host: UpstreamHost,
    /// `Strict-Transport-Security`, for responses to TLS clients.
    pub hsts: Option<HeaderValue>,
    /// `error_pages`, read: status → (content type, body).
    pub error_pages: Vec<(u16, HeaderValue, bytes::Bytes)>,
    pub intercept_errors: bool,
}

/// The largest error page read.
const MAX_ERROR_PAGE: u64 = 1024 * 1024;

impl HeaderControl {
    /// Give `resp` the route's page for its status, if it has one: for Ferry's own errors (they carry
    /// `ferry-error`), and with `intercept_errors` for the upstream's too. Status, `ferry-error`, `x-request-id`,
    /// `Retry-After` and the other headers stay; the body, its type and length are the page's.
    pub fn error_page(&self, resp: &mut http::Response<ferry_http::Body>) {
        if self.error_pages.is_empty() {
            return;
        }
        let status = resp.status().as_u16();
        let Some((_, content_type, page)) = self.error_pages.iter().find(|(s, _, _)| *s == status)
        else {
            return;
        };
        let ours = resp
            .headers()
            .contains_key(ferry_proto::headers::FERRY_ERROR);
        if !ours && !self.intercept_errors {
            return;
        }
        resp.headers_mut().remove(http::header::CONTENT_LENGTH);
        resp.headers_mut().remove(http::header::CONTENT_ENCODING);
        resp.headers_mut()
            .insert(http::header::CONTENT_TYPE, content_type.clone());
        // the upstream's own body is dropped unread (its connection is not reused)
        *resp.body_mut() = ferry_http::full(page.clone());
    }
}

fn error_pages(
    key: &str,
    r: &RouteConfig,
) -> Result<Vec<(u16, HeaderValue, bytes::Bytes)>, EdgeError> {
    let mut pages = Vec::new();
    for (status, path) in &r.error_pages {
        let bad = |message: String| EdgeError::Config {
            path: format!("{key}.error_pages.{status}"),
            message,
        };
        let code = status
            .parse::<u16>()
            .ok()
            .filter(|c| (400..600).contains(c))
            .ok_or_else(|| bad(format!("{status:?} is not an error status (400-599)")))?;
        let size = std::fs::metadata(path)
            .map_err(|e| bad(format!("{}: {e}", path.display())))?
            .len();
        if size > MAX_ERROR_PAGE {
            return Err(bad(format!(
                "{}: {size} bytes, more than the 1 MiB an error page may have",
                path.display()
            )));
        }
        let body = std::fs::read(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let content_type = match path.extension().and_then(|e| e.to_str()) {
            Some("html" | "htm") => "text/html; charset=utf-8",
            Some("json") => "application/json",
            _ => "text/plain; charset=utf-8",
        };
        pages.push((
            code,
            HeaderValue::from_static(content_type),
            bytes::Bytes::from(body),
        ));
    }
    Ok(pages)
}

impl HeaderControl {
    pub fn compile(key: &str, r: &RouteConfig) -> Result<Self, EdgeError> {
        let bad = |field: &str, message: String| EdgeError::Config {
            path: format!("{key}.{field}"),
            message,
        };
        let forwards = r.upstream.is_some() || r.relay.is_some();
        if !forwards && !r.request_headers.is_empty() {
            return Err(bad(
                "request_headers",
                "only routes with upstream or relay send a request on".into(),
            ));
        }
        let request = Edits::compile(
            key,
            "request_headers",
            &r.request_headers,
            &[("host", "set it with upstream_host")],
        )?;
        let response = Edits::compile(key, "response_headers", &r.response_headers, &[])?;
        let upstream_host = match r.upstream_host.as_deref().map(str::trim) {
            None | Some("client") => UpstreamHost::Client,
            Some(_) if r.upstream.is_none() => {
                return Err(bad(
                    "upstream_host",
                    "only routes with upstream send a Host of their choosing".into(),
                ))
            }
            Some("upstream") => UpstreamHost::Upstream,
            Some(other) => UpstreamHost::Template(
                Template::compile(other).map_err(|e| bad("upstream_host", e))?,
            ),
        };
        let hsts = r
            .hsts
            .as_deref()
            .map(|v| {
                HeaderValue::from_str(v.trim())
                    .ok()
                    .filter(|v| v.to_str().is_ok_and(|s| s.starts_with("max-age=")))
                    .ok_or_else(|| {
                        bad(
                            "hsts",
                            format!("{v:?}: starts with max-age=SECONDS (RFC 6797)"),
                        )
                    })
            })
            .transpose()?;
        Ok(HeaderControl {
            request,
            response,
            upstream_host,
            hsts,
            error_pages: error_pages(key, r)?,
            intercept_errors: r.intercept_errors,
        })
    }

    /// The response edits for this request (HSTS among them when the client came over TLS); `None` when there
    /// is nothing to do, which is the common case and costs nothing.
    pub fn response_for(&self, vars: &Vars<'_>) -> Option<Rendered> {
        let hsts = self.hsts.as_ref().filter(|_| vars.client.tls);
        if self.response.is_empty() && hsts.is_none() {
            return None;
        }
        let mut rendered = self.response.render(vars);
        if let Some(v) = hsts {
            rendered
                .set
                .push((http::header::STRICT_TRANSPORT_SECURITY, Some(v.clone())));
        }
        Some(rendered)
    }

    /// Whether the `Host` sent upstream is the server's own `host:port`.
    pub fn host_is_upstream(&self) -> bool {
        matches!(self.upstream_host, UpstreamHost::Upstream)
    }

    /// The route's own `Host` value, when it has one (`upstream_host` other than `client` and `upstream`).
    pub fn host_template(&self) -> Option<&Template> {
        match &self.upstream_host {
            UpstreamHost::Template(t) => Some(t),
            _ => None,
        }
    }
}

/// Call `f` with the variables of `req` (routed by `route`), whose request id is `request_id`.
pub(crate) fn with_vars<B, T>(
    req: &http::Request<B>,
    route: &str,
    request_id: &str,
    f: impl FnOnce(&Vars<'_>) -> T,
) -> T {
    let unknown = ClientInfo {
        remote_addr: ([0, 0, 0, 0], 0).into(),
        local_addr: ([0, 0, 0, 0], 0).into(),
        tls: false,
        listener: ([0, 0, 0, 0], 0).into(),
    };
    let client = req.extensions().get::<ClientInfo>().unwrap_or(&unknown);
    let tls = req
        .extensions()
        .get::<std::sync::Arc<TlsInfo>>()
        .map(|t| &**t);
    let authority;
    let host = match req.uri().authority() {
        Some(a) if !a.as_str().contains('@') => {
            authority = HeaderValue::from_str(a.as_str()).ok();
            authority.as_ref()
        }
        _ => req.headers().get(http::header::HOST),
    };
    f(&Vars::new(
        client,
        tls,
        host,
        request_id,
        req.uri(),
        req.method(),
        route,
        req.headers(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars_with<'a>(
        client: &'a ClientInfo,
        host: &'a HeaderValue,
        uri: &'a Uri,
        headers: &'a HeaderMap,
    ) -> Vars<'a> {
        Vars::new(
            client,
            None,
            Some(host),
            "0123456789abcdef0123456789abcdef",
            uri,
            &Method::GET,
            "api",
            headers,
        )
    }

    #[test]
    fn templates_render_variables_and_refuse_unknown_ones() {
        let client = ClientInfo {
            remote_addr: ([203, 0, 113, 9], 40123).into(),
            local_addr: ([192, 0, 2, 80], 443).into(),
            tls: true,
            listener: ([192, 0, 2, 80], 443).into(),
        };
        let host = HeaderValue::from_static("Api.Example.com:8443");
        let uri: Uri = "/v1/x?q=1".parse().expect("uri");
        let mut headers = HeaderMap::new();
        headers.append("x-user", HeaderValue::from_static("ann"));
        headers.append("x-user", HeaderValue::from_static("bob"));
        let vars = vars_with(&client, &host, &uri, &headers);
        let render = |t: &str| {
            Template::compile(t)
                .expect("compiles")
                .render(&vars)
                .map(|v| v.to_str().unwrap_or("").to_owned())
        };
        assert_eq!(render("$remote_addr").as_deref(), Some("203.0.113.9"));
        assert_eq!(
            render("${scheme}://$host$request_uri").as_deref(),
            Some("https://api.example.com/v1/x?q=1")
        );
        assert_eq!(
            render("$http_host").as_deref(),
            Some("Api.Example.com:8443")
        );
        assert_eq!(render("u=$http_x_user").as_deref(), Some("u=ann, bob"));
        assert_eq!(
            render("$$5 $route $request_method").as_deref(),
            Some("$5 api GET")
        );
        // no TLS details without TLS, and an empty value is no value
        assert_eq!(render("$ssl_client_s_dn"), None);
        assert_eq!(render("$http_x_missing"), None);
        for bad in ["$nope", "${host", "a$", "bad\nvalue", "${http_bad name}"] {
            assert!(Template::compile(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn edits_remove_then_set_then_add_and_keep_off_framing() {
        let config = HeaderEdits {
            set: [
                ("X-Real-IP".to_owned(), "$remote_addr".to_owned()),
                ("X-Empty".to_owned(), "$http_x_missing".to_owned()),
            ]
            .into(),
            add: [("Via".to_owned(), "1.1 ferry".to_owned())].into(),
            remove: vec!["X-Debug".into(), "Via".into()],
        };
        let edits =
            Edits::compile("gateway.routes[0]", "request_headers", &config, &[]).expect("compiles");
        let client = ClientInfo {
            remote_addr: ([192, 0, 2, 1], 1).into(),
            local_addr: ([192, 0, 2, 80], 80).into(),
            tls: false,
            listener: ([192, 0, 2, 80], 80).into(),
        };
        let host = HeaderValue::from_static("h");
        let uri: Uri = "/".parse().expect("uri");
        let original = HeaderMap::new();
        let vars = vars_with(&client, &host, &uri, &original);
        let mut headers = HeaderMap::new();
        headers.insert("x-debug", HeaderValue::from_static("1"));
        headers.insert("via", HeaderValue::from_static("1.0 old"));
        headers.insert("x-empty", HeaderValue::from_static("was here"));
        edits.render(&vars).apply(&mut headers);
        assert!(headers.get("x-debug").is_none());
        assert!(headers.get("x-empty").is_none());
        assert_eq!(headers.get_all("via").iter().count(), 1);
        assert_eq!(headers["via"], "1.1 ferry");
        assert_eq!(headers["x-real-ip"], "192.0.2.1");
        for name in ["Content-Length", "transfer-encoding", "Connection"] {
            let config = HeaderEdits {
                remove: vec![name.into()],
                ..HeaderEdits::default()
            };
            let e = Edits::compile("gateway.routes[3]", "response_headers", &config, &[])
                .expect_err("framing")
                .to_string();
            assert!(
                e.starts_with("gateway.routes[3].response_headers.remove"),
                "{e}"
            );
        }
    }

    #[test]
    fn route_settings_are_checked_with_their_key() {
        let respond = RouteConfig {
            respond: Some(ferry_config::RespondConfig {
                status: 200,
                body: String::new(),
                content_type: None,
            }),
            ..RouteConfig::default()
        };
        let err = |r: RouteConfig| {
            HeaderControl::compile("gateway.routes[0]", &r)
                .expect_err("refused")
                .to_string()
        };
        let e = err(RouteConfig {
            upstream_host: Some("upstream".into()),
            ..respond.clone()
        });
        assert!(e.starts_with("gateway.routes[0].upstream_host"), "{e}");
        let e = err(RouteConfig {
            request_headers: HeaderEdits {
                remove: vec!["x".into()],
                ..HeaderEdits::default()
            },
            ..respond.clone()
        });
        assert!(e.starts_with("gateway.routes[0].request_headers"), "{e}");
        let e = err(RouteConfig {
            upstream: Some("api".into()),
            request_headers: HeaderEdits {
                set: [("Host".to_owned(), "x".to_owned())].into(),
                ..HeaderEdits::default()
            },
            ..RouteConfig::default()
        });
        assert!(e.contains("upstream_host"), "{e}");
        let e = err(RouteConfig {
            hsts: Some("31536000".into()),
            ..respond.clone()
        });
        assert!(e.starts_with("gateway.routes[0].hsts"), "{e}");
        let ok = HeaderControl::compile(
            "gateway.routes[0]",
            &RouteConfig {
                hsts: Some("max-age=31536000; includeSubDomains".into()),
                ..respond
            },
        )
        .expect("compiles");
        assert!(ok.hsts.is_some());
    }
}
