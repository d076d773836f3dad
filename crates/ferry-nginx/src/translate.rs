//! The translation: nginx directives in, a `ferry_config::Config` (listeners, TLS, `[gateway]` routes and pools)
//! and a [`Report`] out. Every directive read is either used or reported; a last pass reports any the rules below
//! did not look at, so that nothing is dropped silently.
//!
//! nginx's inheritance is followed: a directive written in `http` or `server` applies to the `location`s below
//! unless they write the same directive themselves (for `proxy_set_header`, `add_header`, `error_page`… the inner
//! level's list replaces the outer one, as nginx does).

use crate::report::{Note, NoteKind, Report};
use crate::{Directive, NginxError, Position};
use ferry_config::{
    AccessLog, Balance, ClientAuth, Config, ExtraListener, GatewayConfig, RateLimitConfig,
    RedirectConfig, RespondConfig, RouteConfig, SniCertificate, StickyCookie, StickyCookieConfig,
    UpstreamConfig, UpstreamServer,
};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The result of an import: the configuration and what the report says about it.
#[derive(Debug, Clone)]
pub struct Imported {
    pub config: Config,
    pub report: Report,
}

/// Directives whose value a `server` or `location` inherits from the levels around it.
const INHERITED: &[&str] = &[
    "proxy_set_header",
    "add_header",
    "proxy_hide_header",
    "client_max_body_size",
    "proxy_connect_timeout",
    "proxy_read_timeout",
    "proxy_send_timeout",
    "grpc_connect_timeout",
    "grpc_read_timeout",
    "grpc_send_timeout",
    "grpc_set_header",
    "proxy_next_upstream",
    "error_page",
    "proxy_intercept_errors",
    "ssl_certificate",
    "ssl_certificate_key",
    "ssl_client_certificate",
    "ssl_verify_client",
    "root",
    "limit_req",
    "proxy_ssl_trusted_certificate",
    "proxy_ssl_verify",
    "proxy_ssl_certificate",
    "proxy_ssl_certificate_key",
    "proxy_request_buffering",
    "ssl",
    "ssl_stapling",
    "ssl_stapling_file",
    "ssl_stapling_responder",
    "gzip",
    "brotli",
    "gzip_types",
];

/// Variables Ferry's header values know (docs/gateway.md, "Header control"), besides `$http_NAME`.
const HEADER_VARS: &[&str] = &[
    "remote_addr",
    "remote_port",
    "scheme",
    "host",
    "http_host",
    "request_id",
    "request_uri",
    "uri",
    "request_method",
    "route",
    "ssl_protocol",
    "ssl_client_verify",
    "ssl_client_s_dn",
    "ssl_client_i_dn",
    "ssl_client_serial",
    "ssl_client_v_start",
    "ssl_client_v_end",
    "ssl_client_fingerprint",
    "ssl_client_escaped_cert",
];

/// Variables Ferry's access-log formats know (docs/gateway.md, "Access log").
const LOG_VARS: &[&str] = &[
    "remote_addr",
    "time_local",
    "time_iso8601",
    "request",
    "request_method",
    "request_uri",
    "server_protocol",
    "status",
    "body_bytes_sent",
    "request_time",
    "upstream_response_time",
    "upstream_addr",
    "http_referer",
    "http_user_agent",
    "host",
    "request_id",
    "route",
    "ssl_protocol",
    "ssl_client_verify",
    "ssl_client_s_dn",
    "ssl_client_i_dn",
];

/// The client-certificate variables and the key (and default header) Ferry sends each under.
const CERT_VARS: &[(&str, &str, &str)] = &[
    ("ssl_client_verify", "verify", "x-ssl-client-verify"),
    ("ssl_client_s_dn", "s_dn", "x-ssl-client-s-dn"),
    ("ssl_client_i_dn", "i_dn", "x-ssl-client-i-dn"),
    ("ssl_client_serial", "serial", "x-ssl-client-serial"),
    ("ssl_client_v_start", "v_start", "x-ssl-client-v-start"),
    ("ssl_client_v_end", "v_end", "x-ssl-client-v-end"),
    (
        "ssl_client_fingerprint",
        "fingerprint",
        "x-ssl-client-fingerprint",
    ),
    ("ssl_protocol", "protocol", "x-ssl-protocol"),
    ("ssl_client_escaped_cert", "cert", "x-ssl-client-cert"),
    ("ssl_client_cert", "cert", "x-ssl-client-cert"),
];

/// Headers whose framing Ferry owns; a route may not name them.
const FRAMING: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

/// Directives Ferry does by itself, with why; reported as "not needed" wherever they are.
const NOT_NEEDED: &[(&str, &str)] = &[
    (
        "worker_processes",
        "Ferry sizes its runtime itself ([runtime] worker_threads)",
    ),
    (
        "worker_rlimit_nofile",
        "Ferry raises its open-file limit itself",
    ),
    (
        "worker_connections",
        "Ferry has no per-worker connection limit (server.http.max_connections caps the listener)",
    ),
    ("multi_accept", "Ferry's accept loop takes what is ready"),
    ("use", "Ferry picks the event mechanism itself"),
    ("pid", "Ferry writes no pid file (run it under systemd)"),
    (
        "user",
        "run Ferry as the user it should be (the package's ferry user)",
    ),
    ("daemon", "Ferry runs in the foreground under a supervisor"),
    ("sendfile", "Ferry streams bodies itself"),
    ("tcp_nopush", "Ferry streams bodies itself"),
    ("tcp_nodelay", "Ferry sets TCP_NODELAY itself"),
    ("types_hash_max_size", "no MIME types table in Ferry"),
    ("types_hash_bucket_size", "no MIME types table in Ferry"),
    (
        "server_names_hash_bucket_size",
        "no hash tables to size in Ferry",
    ),
    (
        "server_names_hash_max_size",
        "no hash tables to size in Ferry",
    ),
    ("variables_hash_max_size", "no hash tables to size in Ferry"),
    ("map_hash_bucket_size", "no hash tables to size in Ferry"),
    (
        "types",
        "Ferry's static_dir takes Content-Type from the file's extension by its own table",
    ),
    (
        "default_type",
        "Ferry's static_dir takes Content-Type from the file's extension by its own table",
    ),
    (
        "charset",
        "Ferry passes the upstream's Content-Type as it is",
    ),
    (
        "server_tokens",
        "Ferry sends no version in Server headers or error pages",
    ),
    (
        "http2",
        "Ferry speaks HTTP/2 on every listener (ALPN h2 with TLS)",
    ),
    (
        "proxy_http_version",
        "Ferry speaks HTTP/1.1 to http:// upstreams and HTTP/2 when an https:// one offers it",
    ),
    (
        "proxy_buffering",
        "Ferry streams response bodies without buffering them",
    ),
    (
        "proxy_buffers",
        "Ferry streams response bodies without buffering them",
    ),
    (
        "proxy_buffer_size",
        "Ferry streams response bodies without buffering them",
    ),
    (
        "proxy_busy_buffers_size",
        "Ferry streams response bodies without buffering them",
    ),
    (
        "proxy_max_temp_file_size",
        "Ferry streams response bodies without buffering them",
    ),
    (
        "proxy_temp_file_write_size",
        "Ferry streams response bodies without buffering them",
    ),
    (
        "proxy_temp_path",
        "Ferry streams response bodies without buffering them",
    ),
    ("chunked_transfer_encoding", "Ferry frames bodies itself"),
    (
        "proxy_ssl_server_name",
        "Ferry sends the upstream's name by SNI itself",
    ),
    (
        "ssl_session_cache",
        "Ferry (rustls) resumes TLS sessions itself",
    ),
    (
        "ssl_session_timeout",
        "Ferry (rustls) resumes TLS sessions itself",
    ),
    (
        "ssl_session_tickets",
        "Ferry (rustls) resumes TLS sessions itself",
    ),
    (
        "ssl_prefer_server_ciphers",
        "Ferry (rustls) picks from its own safe cipher suites",
    ),
    (
        "ssl_dhparam",
        "Ferry (rustls) has no finite-field DH suites",
    ),
    (
        "ssl_ecdh_curve",
        "Ferry (rustls) picks the key-exchange group itself",
    ),
    ("ssl_buffer_size", "Ferry sizes TLS records itself"),
    ("log_not_found", "Ferry serves no files"),
    ("log_subrequest", "Ferry makes no subrequests"),
    ("internal", "the location is only used from inside nginx"),
    (
        "keepalive",
        "Ferry keeps upstream connections alive by itself (up to 256 idle per server)",
    ),
    (
        "keepalive_requests",
        "Ferry keeps connections alive without a request cap",
    ),
    (
        "keepalive_time",
        "Ferry keeps connections alive without a lifetime cap",
    ),
    ("zone", "Ferry's pools are shared by all its threads anyway"),
    (
        "reset_timedout_connection",
        "Ferry closes timed-out connections itself",
    ),
    ("absolute_redirect", "Ferry writes redirects as configured"),
    ("port_in_redirect", "Ferry writes redirects as configured"),
    (
        "server_name_in_redirect",
        "Ferry writes redirects as configured",
    ),
    (
        "gzip_vary",
        "Ferry sends Vary: Accept-Encoding with what it compresses",
    ),
    (
        "gzip_http_version",
        "Ferry compresses for HTTP/1.0 clients too",
    ),
    ("gzip_buffers", "Ferry compresses as it streams"),
    (
        "gzip_static",
        "Ferry's static_dir sends a .gz or .br file next to the one asked for by itself",
    ),
    (
        "brotli_static",
        "Ferry's static_dir sends a .br or .gz file next to the one asked for by itself",
    ),
    ("open_file_cache", "Ferry reads the files at each request"),
    (
        "open_file_cache_valid",
        "Ferry reads the files at each request",
    ),
    (
        "open_file_cache_min_uses",
        "Ferry reads the files at each request",
    ),
    (
        "open_file_cache_errors",
        "Ferry reads the files at each request",
    ),
];

/// Directives translated to something close, with how it differs.
const APPROXIMATE: &[(&str, &str)] = &[
    (
        "gzip_types",
        "no route here has gzip on: compress_types goes with compress = true",
    ),
    (
        "gzip_min_length",
        "Ferry compresses responses of 32 bytes and more (compress = true)",
    ),
    (
        "gzip_comp_level",
        "Ferry compresses at its own level (compress = true)",
    ),
    (
        "gzip_proxied",
        "Ferry compresses for every client that accepts it, behind a proxy (Via) or not",
    ),
    (
        "brotli_types",
        "Ferry compresses every type but images, gRPC and event streams (compress = true), not a list",
    ),
    (
        "brotli_min_length",
        "Ferry compresses responses of 32 bytes and more (compress = true)",
    ),
    (
        "brotli_comp_level",
        "Ferry compresses at its own level (compress = true)",
    ),
];

/// Directives Ferry has nothing for, with why.
const NOT_BUILT: &[(&str, &str)] = &[
    ("error_log", "Ferry's own log is configured in [log] (level, format), on stderr"),
    ("load_module", "Ferry has no dynamic modules"),
    ("env", "Ferry reads FERRY_* variables itself"),
    ("gzip_disable", "Ferry compresses for every client that accepts it"),
    ("root", "no location the importer translates serves files from it (a request no location matches is not served from it): write a route with `static_dir` by hand"),
    ("alias", "the location does not serve files here (it proxies or answers)"),
    ("try_files", "Ferry's routes either serve files or proxy: files are not tried first here"),
    ("expires", "Ferry's static files carry no Expires (set Cache-Control with add_header instead)"),
    ("etag", "Ferry's static files are revalidated by Last-Modified (tower-http), whatever etag says"),
    ("proxy_cache", "Ferry has no response cache"),
    ("proxy_cache_path", "Ferry has no response cache"),
    ("proxy_cache_valid", "Ferry has no response cache"),
    ("proxy_cache_key", "Ferry has no response cache"),
    ("proxy_cache_bypass", "Ferry has no response cache"),
    ("proxy_no_cache", "Ferry has no response cache"),
    ("proxy_cache_use_stale", "Ferry has no response cache"),
    ("proxy_cache_lock", "Ferry has no response cache"),
    ("add_header_inherit", "Ferry has no header inheritance to control"),
    ("proxy_cookie_path", "Ferry does not rewrite cookies"),
    ("proxy_cookie_domain", "Ferry does not rewrite cookies"),
    ("proxy_cookie_flags", "Ferry does not rewrite cookies"),
    ("proxy_pass_header", "Ferry has no list of response headers it hides by default to undo"),
    ("proxy_ignore_headers", "Ferry has no response cache"),
    ("proxy_ssl_name", "Ferry sends the server's own host by SNI"),
    ("proxy_ssl_protocols", "Ferry speaks TLS 1.2 and 1.3 to upstreams"),
    ("proxy_ssl_ciphers", "Ferry (rustls) uses its own cipher suites"),
    ("proxy_ssl_session_reuse", "Ferry (rustls) resumes sessions itself"),
    ("proxy_next_upstream_tries", "Ferry tries at most 3 servers, within the pool's retry_budget"),
    ("proxy_next_upstream_timeout", "Ferry tries at most 3 servers, within the pool's retry_budget"),
    ("proxy_ignore_client_abort", "Ferry stops the upstream request when the client goes away"),
    ("proxy_protocol", "a stream-module directive; set `proxy_protocol = \"v1\"` (or \"v2\") on the pool in Ferry (http://, https:// and h2c:// servers) (listeners take the header with `listen … proxy_protocol`)"),
    ("set_real_ip_from", "use [gateway] trusted_proxies (X-Forwarded-For of trusted proxies is kept)"),
    ("real_ip_header", "use [gateway] trusted_proxies (X-Forwarded-For of trusted proxies is kept)"),
    ("real_ip_recursive", "use [gateway] trusted_proxies"),
    ("allow", "Ferry has no address allow/deny lists"),
    ("deny", "Ferry has no address allow/deny lists"),
    ("satisfy", "Ferry has no address allow/deny lists or basic auth"),
    ("auth_basic", "Ferry has no basic authentication for routes"),
    ("auth_basic_user_file", "Ferry has no basic authentication for routes"),
    ("auth_request", "Ferry has no subrequest authentication"),
    ("limit_conn", "Ferry has per-server max_conns and per-address server.http.max_connections_per_ip, not limit_conn zones"),
    ("limit_conn_zone", "Ferry has per-server max_conns and per-address server.http.max_connections_per_ip, not limit_conn zones"),
    ("limit_req_status", "Ferry answers a route's rate limit with 429"),
    ("limit_rate", "Ferry does not throttle bandwidth"),
    ("set", "nginx variables of one's own are not translated"),
    ("sub_filter", "Ferry does not rewrite bodies"),
    ("sub_filter_once", "Ferry does not rewrite bodies"),
    ("ssi", "Ferry does not process server-side includes"),
    ("resolver", "Ferry resolves upstream names with the system's resolver"),
    ("resolver_timeout", "Ferry resolves upstream names with the system's resolver"),
    ("keepalive_disable", "Ferry keeps client connections alive for every client"),
    ("send_timeout", "Ferry has no timeout between two writes to the client"),
    ("client_body_timeout", "the pool's idle_timeout bounds pauses in the request body"),
    ("large_client_header_buffers", "Ferry's limit is server.http.max_header_size (64 KiB by default)"),
    ("client_header_buffer_size", "Ferry's limit is server.http.max_header_size (64 KiB by default)"),
    ("ssl_conf_command", "Ferry does not use OpenSSL"),
    ("ssl_stapling_verify", "Ferry checks the signature of every response it fetches (ocsp_stapling), and staples a response file as it is"),
    ("ssl_trusted_certificate", "Ferry checks fetched OCSP responses against the issuer in the certificate file (it must follow the certificate there)"),
    ("ssl_password_file", "Ferry reads unencrypted keys only"),
    ("ssl_early_data", "TLS early data is not built"),
    ("http3", "Ferry's HTTP/3 is `http3 = true` on the TLS listener, translated from `listen … quic`"),
    ("quic_retry", "Ferry's HTTP/3 does not send Retry packets"),
    ("http2_max_concurrent_streams", "Ferry's HTTP/2 limits are its own"),
    ("http2_push", "Ferry does not push"),
    ("http2_push_preload", "Ferry does not push"),
    ("ignore_invalid_headers", "Ferry refuses invalid header names itself"),
    ("underscores_in_headers", "Ferry passes header names with underscores"),
    ("merge_slashes", "Ferry always merges slashes when it normalises paths"),
    ("recursive_error_pages", "Ferry's error pages are files"),
    ("limit_except", "routes can match methods (methods = […]) but the deny inside is not translated"),
    ("more_set_headers", "the headers-more module is not translated: write response_headers by hand"),
    ("more_clear_headers", "the headers-more module is not translated: write response_headers by hand"),
    ("lua_package_path", "Ferry runs no Lua"),
    ("content_by_lua_block", "Ferry runs no Lua"),
    ("access_by_lua_block", "Ferry runs no Lua"),
    ("stub_status", "Ferry's metrics are at GET /metrics on the admin listener"),
    ("uwsgi_pass", "Ferry proxies HTTP, HTTP/2 and gRPC, not uwsgi"),
    ("fastcgi_pass", "Ferry proxies HTTP, HTTP/2 and gRPC, not FastCGI"),
    ("scgi_pass", "Ferry proxies HTTP, HTTP/2 and gRPC, not SCGI"),
    ("memcached_pass", "Ferry proxies HTTP, HTTP/2 and gRPC, not memcached"),
    ("fastcgi_param", "Ferry proxies HTTP, HTTP/2 and gRPC, not FastCGI"),
    ("uwsgi_param", "Ferry proxies HTTP, HTTP/2 and gRPC, not uwsgi"),
    ("random", "Ferry balances round robin, weighted, least_requests or hash"),
    ("ntlm", "NTLM connection pinning is not built"),
    ("queue", "Ferry answers 503 upstream_busy when every server is at max_conns (no queue)"),
];

/// The variables a template uses, by name (`$x`, `${x}`; `$$` is not one).
fn variables(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        let after = &rest[at + 1..];
        if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').unwrap_or(inner.len());
            out.push(inner[..end].to_owned());
            rest = inner.get(end + 1..).unwrap_or("");
        } else if let Some(next) = after.strip_prefix('$') {
            rest = next;
        } else {
            let len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            out.push(after[..len].to_owned());
            rest = &after[len..];
        }
    }
    out
}

/// The first variable of `text` Ferry's header values do not know.
fn unknown_header_var(text: &str) -> Option<String> {
    variables(text).into_iter().find(|v| {
        !(HEADER_VARS.contains(&v.as_str())
            || v.strip_prefix("http_").is_some_and(|h| !h.is_empty()))
    })
}

/// nginx's time: `30`, `30s`, `500ms`, `5m`, `1h30m`, `1d`.
fn parse_time(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        total += match unit {
            "ms" => Duration::from_millis(n),
            "" | "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            "d" => Duration::from_secs(n * 86_400),
            "w" => Duration::from_secs(n * 7 * 86_400),
            "M" => Duration::from_secs(n * 30 * 86_400),
            "y" => Duration::from_secs(n * 365 * 86_400),
            _ => return None,
        };
    }
    Some(total)
}

/// nginx's size: `512`, `10k`, `10m`, `1g` (binary multiples).
fn parse_size(text: &str) -> Option<u64> {
    let lower = text.to_ascii_lowercase();
    let (digits, mult) = match lower.chars().last()? {
        'k' => (&lower[..lower.len() - 1], 1024),
        'm' => (&lower[..lower.len() - 1], 1024 * 1024),
        'g' => (&lower[..lower.len() - 1], 1024 * 1024 * 1024),
        _ => (lower.as_str(), 1),
    };
    digits.parse::<u64>().ok().map(|n| n * mult)
}

/// What a `location` matches.
#[derive(Debug, Clone, PartialEq)]
enum Match {
    Prefix(String),
    /// `^~`: a prefix that stops the regex search.
    PrefixNoRegex(String),
    Exact(String),
    Regex(String),
    Named(String),
}

impl Match {
    fn parse(args: &[String]) -> Option<Match> {
        match args {
            [m, p] if m == "=" => Some(Match::Exact(p.clone())),
            [m, p] if m == "^~" => Some(Match::PrefixNoRegex(p.clone())),
            [m, r] if m == "~" => Some(Match::Regex(r.clone())),
            [m, r] if m == "~*" => Some(Match::Regex(format!("(?i){r}"))),
            [p] if p.starts_with('@') => Some(Match::Named(p.clone())),
            [p] if p.len() > 1 && p.starts_with('=') => Some(Match::Exact(p[1..].to_owned())),
            [p] => Some(Match::Prefix(p.clone())),
            _ => None,
        }
    }

    fn label(&self) -> String {
        match self {
            Match::Prefix(p) | Match::PrefixNoRegex(p) => p.clone(),
            Match::Exact(p) => format!("={p}"),
            Match::Regex(r) => format!("~{r}"),
            Match::Named(n) => n.clone(),
        }
    }
}

/// The directives in force at one level: each name's list from the innermost level that writes it.
#[derive(Debug, Clone, Default)]
struct Scope<'a> {
    by_name: HashMap<&'static str, Vec<&'a Directive>>,
}

impl<'a> Scope<'a> {
    fn enter(&self, children: &'a [Directive]) -> Scope<'a> {
        let mut next = self.clone();
        for name in INHERITED {
            let here: Vec<&Directive> = children
                .iter()
                .filter(|d| d.block.is_none() && d.name == *name)
                .collect();
            if !here.is_empty() {
                next.by_name.insert(name, here);
            }
        }
        next
    }

    fn all(&self, name: &str) -> &[&'a Directive] {
        self.by_name.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    fn last(&self, name: &str) -> Option<&'a Directive> {
        self.all(name).last().copied()
    }
}

/// One `listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Listen {
    addr: SocketAddr,
    tls: bool,
    default_server: bool,
    proxy_protocol: bool,
}

/// What the listener assembly needs to know of a `server`.
#[derive(Debug, Clone)]
struct ServerFacts {
    at: Position,
    listens: Vec<Listen>,
    hosts: Vec<String>,
    /// Only redirects to `https://` on the same host (`return 301 https://$host$request_uri`): where, and the
    /// status.
    https_redirect: Option<(Position, u16)>,
    /// The routes this server made, by index into the route list.
    routes: Vec<usize>,
    cert: Option<(PathBuf, PathBuf)>,
    verify_client: Option<(String, Position)>,
    client_ca: Option<(PathBuf, Position)>,
    /// `ssl_stapling_file` under `ssl_stapling on`: the file, where it was written, its directive's id.
    ocsp: Option<(PathBuf, Position, usize)>,
}

/// A pool made from an `upstream` block, before a scheme is known.
#[derive(Debug, Clone)]
struct Block<'a> {
    directive: &'a Directive,
}

struct Translator<'a> {
    config: Config,
    report: Report,
    handled: HashSet<usize>,
    /// Addresses of `listen … quic`: the TLS listener on the same address gets `http3 = true`.
    quic: Vec<(SocketAddr, Position)>,
    blocks: HashMap<String, Block<'a>>,
    /// Pools made so far, by (nginx name or address, scheme) → Ferry name.
    pools: HashMap<(String, String), String>,
    /// Per pool, which directive set a timeout, to report disagreeing ones.
    pool_settings: HashMap<(String, &'static str), (String, Position)>,
    log_formats: HashMap<String, String>,
    limit_zones: HashMap<String, &'a Directive>,
    access_log: Option<(String, Position)>,
    http_body_size: Option<usize>,
    servers: Vec<ServerFacts>,
    route_names: HashSet<String>,
    /// The listener-wide TLS settings read so far, by directive: its arguments and where.
    tls_settings: HashMap<String, (Vec<String>, Position)>,
    /// The current server's error page files, by the URI its `error_page`s name.
    page_root: HashMap<String, PathBuf>,
    /// The first `ssl_stapling on` of a TLS server without `ssl_stapling_file` (fetching: `ocsp_stapling`).
    stapling_fetch: Option<Position>,
    /// Whether a TLS server has `ssl_stapling` off (fetching is one switch for the listener).
    stapling_off: bool,
    /// The `ssl_stapling_responder` of the servers that fetch (one for the listener).
    stapling_responder: Option<String>,
}

/// Translate parsed directives (see [`crate::parse_file`]).
pub fn translate(directives: &[Directive]) -> Imported {
    let mut t = Translator {
        config: Config::default(),
        report: Report::default(),
        handled: HashSet::new(),
        quic: Vec::new(),
        blocks: HashMap::new(),
        pools: HashMap::new(),
        pool_settings: HashMap::new(),
        log_formats: HashMap::new(),
        limit_zones: HashMap::new(),
        access_log: None,
        http_body_size: None,
        servers: Vec::new(),
        route_names: HashSet::new(),
        tls_settings: HashMap::new(),
        page_root: HashMap::new(),
        stapling_fetch: None,
        stapling_off: false,
        stapling_responder: None,
    };
    // nginx's own defaults where Ferry's differ and nginx users rely on them: none are imposed; the report and
    // docs/gateway.md say where the defaults differ (body limit, max_fails).
    // a site file (sites-available/…, conf.d/…) holds what an `http` block would, at its top
    let site_file = !directives.iter().any(|d| d.name == "http")
        && directives
            .iter()
            .any(|d| d.name == "server" || d.name == "upstream");
    if site_file {
        t.http(directives);
    }
    for d in directives {
        match d.name.as_str() {
            _ if site_file => {}
            "http" => {
                t.use_(d);
                t.http(d.children());
            }
            "events" => {
                t.use_(d);
                for c in d.children() {
                    t.generic(c);
                }
            }
            "stream" | "mail" => t.whole_block(
                d,
                NoteKind::NotTranslated,
                "TCP/UDP (stream) and mail proxying are not built: Ferry proxies HTTP",
            ),
            _ => {
                t.generic(d);
            }
        }
    }
    t.listeners();
    // whatever no rule looked at
    let mut rest = Vec::new();
    fn walk<'d>(list: &'d [Directive], out: &mut Vec<&'d Directive>) {
        for d in list {
            out.push(d);
            walk(d.children(), out);
        }
    }
    walk(directives, &mut rest);
    for d in rest {
        if !t.handled.contains(&d.id) && !t.generic(d) {
            t.note(
                d,
                NoteKind::NotTranslated,
                "Ferry has no equivalent (or it is not used where it is written)",
            );
        }
    }
    t.report.sort();
    Imported {
        config: t.config,
        report: t.report,
    }
}

impl<'a> Translator<'a> {
    fn use_(&mut self, d: &Directive) {
        self.handled.insert(d.id);
    }

    fn note(&mut self, d: &Directive, kind: NoteKind, why: impl Into<String>) {
        self.handled.insert(d.id);
        let directive = match d.name.as_str() {
            "location" => format!("location {}", d.args.join(" ")),
            "proxy_set_header" | "add_header" | "proxy_hide_header" | "grpc_set_header"
            | "listen" | "map" | "server" | "upstream" | "ssl_verify_client" => {
                match d.args.first() {
                    Some(a) => format!("{} {a}", d.name),
                    None => d.name.clone(),
                }
            }
            _ => d.name.clone(),
        };
        self.report.push(Note {
            at: d.at.clone(),
            directive,
            kind,
            why: why.into(),
        });
    }

    /// A block reported once, with everything in it taken as seen.
    fn whole_block(&mut self, d: &Directive, kind: NoteKind, why: &str) {
        self.note(d, kind, why);
        self.use_block(d);
    }

    /// A block and everything in it used.
    fn use_block(&mut self, d: &Directive) {
        fn mark(t: &mut HashSet<usize>, list: &[Directive]) {
            for d in list {
                t.insert(d.id);
                mark(t, d.children());
            }
        }
        self.handled.insert(d.id);
        mark(&mut self.handled, d.children());
    }

    /// The directives with a fixed answer wherever they stand, and the listener-wide TLS settings.
    fn generic(&mut self, d: &Directive) -> bool {
        let tables = [
            (NOT_NEEDED, NoteKind::NotNeeded),
            (NOT_BUILT, NoteKind::NotTranslated),
            (APPROXIMATE, NoteKind::Approximated),
        ];
        for (table, kind) in tables {
            if let Some((_, why)) = table.iter().find(|(n, _)| *n == d.name) {
                if d.block.is_some() {
                    self.whole_block(d, kind, why);
                } else {
                    self.note(d, kind, *why);
                }
                return true;
            }
        }
        if [
            "ssl_protocols",
            "ssl_ciphers",
            "ssl_crl",
            "ssl_verify_depth",
        ]
        .contains(&d.name.as_str())
        {
            self.listener_tls(d);
            return true;
        }
        if d.name == "index" {
            if d.arg(0) == "index.html" {
                self.note(
                    d,
                    NoteKind::NotNeeded,
                    "Ferry's static_dir serves index.html for a directory",
                );
            } else {
                self.note(
                    d,
                    NoteKind::Approximated,
                    "Ferry's static_dir serves index.html for a directory (no other index file)",
                );
            }
            return true;
        }
        if d.name == "autoindex" {
            if d.arg(0) == "on" {
                self.note(
                    d,
                    NoteKind::NotTranslated,
                    "Ferry's static_dir lists no directories",
                );
            } else {
                self.note(d, NoteKind::NotNeeded, "Ferry lists no directories");
            }
            return true;
        }
        if d.name == "proxy_redirect" {
            if d.arg(0) == "off" {
                self.note(
                    d,
                    NoteKind::NotNeeded,
                    "Ferry passes the upstream's Location as it is",
                );
            } else {
                self.note(
                    d,
                    NoteKind::NotTranslated,
                    "Ferry does not rewrite the upstream's Location headers",
                );
            }
            return true;
        }
        if d.name == "if" {
            self.whole_block(
                d,
                NoteKind::NotTranslated,
                "conditions (`if`) are not translated: Ferry routes match hosts, paths, methods and headers",
            );
            return true;
        }
        false
    }

    /// A TLS setting Ferry has once for every TLS listener (`[gateway.tls]`): the first one read is used, a
    /// different one elsewhere is reported.
    fn listener_tls(&mut self, d: &Directive) {
        let key = match d.name.as_str() {
            "ssl_protocols" => "protocols",
            "ssl_ciphers" => "cipher_suites",
            "ssl_crl" => "client_crl",
            _ => "verify_depth",
        };
        if let Some((args, at)) = self.tls_settings.get(&d.name) {
            if *args == d.args {
                self.use_(d);
            } else {
                let why = format!(
                    "Ferry has one {key} for every TLS listener ([gateway.tls]): the one of {at}"
                );
                self.note(d, NoteKind::Approximated, why);
            }
            return;
        }
        self.tls_settings
            .insert(d.name.clone(), (d.args.clone(), d.at.clone()));
        match key {
            "protocols" => self.ssl_protocols(d),
            "cipher_suites" => {
                let c = crate::map_ciphers(&d.args.join(":"));
                self.config.gateway.tls.cipher_suites = c.suites.clone();
                if c.exact() {
                    self.use_(d);
                } else {
                    self.note(d, NoteKind::Approximated, c.why());
                }
            }
            "client_crl" => {
                self.config.gateway.tls.client_crl = vec![PathBuf::from(d.arg(0))];
                self.use_(d);
            }
            _ => match d.arg(0).parse::<u8>() {
                Ok(n) if n >= 1 => {
                    self.config.gateway.tls.verify_depth = Some(n);
                    self.use_(d);
                }
                _ => self.note(
                    d,
                    NoteKind::NotTranslated,
                    "Ferry's verify_depth is 1 to 255 (unset: no limit beyond the verifier's own)",
                ),
            },
        }
    }

    /// `ssl_protocols`: TLS 1.2 and 1.3 are kept, older versions reported.
    fn ssl_protocols(&mut self, d: &Directive) {
        let (kept, old): (Vec<&String>, Vec<&String>) = d
            .args
            .iter()
            .partition(|a| *a == "TLSv1.2" || *a == "TLSv1.3");
        let both = kept.iter().any(|a| *a == "TLSv1.2") && kept.iter().any(|a| *a == "TLSv1.3");
        if kept.is_empty() {
            self.note(
                d,
                NoteKind::NotTranslated,
                "Ferry speaks TLS 1.2 and 1.3 only: protocols stays at both",
            );
            return;
        }
        if !both {
            self.config.gateway.tls.protocols = kept.iter().map(|a| (*a).clone()).collect();
        }
        if !old.is_empty() {
            let old: Vec<&str> = old.iter().map(|a| a.as_str()).collect();
            let why = format!(
                "Ferry does not speak {} (TLS 1.2 and 1.3 only)",
                old.join(", ")
            );
            self.note(d, NoteKind::Approximated, why);
        } else if both {
            self.note(d, NoteKind::NotNeeded, "Ferry speaks TLS 1.2 and 1.3");
        } else {
            self.use_(d);
        }
    }

    /// The `http` block's directives (or a site file's).
    fn http(&mut self, children: &'a [Directive]) {
        let scope = Scope::default().enter(children);
        for d in children {
            match d.name.as_str() {
                "upstream" => {
                    self.use_(d);
                    self.blocks
                        .insert(d.arg(0).to_owned(), Block { directive: d });
                }
                "log_format" => {
                    self.use_(d);
                    let args: Vec<&str> = d
                        .args
                        .iter()
                        .skip(1)
                        .map(String::as_str)
                        .filter(|a| !a.starts_with("escape="))
                        .collect();
                    self.log_formats.insert(d.arg(0).to_owned(), args.concat());
                }
                "limit_req_zone" => {
                    if let Some(zone) = d
                        .args
                        .iter()
                        .find_map(|a| a.strip_prefix("zone="))
                        .and_then(|z| z.split(':').next())
                    {
                        self.limit_zones.insert(zone.to_owned(), d);
                    }
                }
                _ => {}
            }
        }
        for d in children {
            match d.name.as_str() {
                "upstream" | "log_format" | "limit_req_zone" | "server" => {}
                "map" if d.arg(0) == "$http_upgrade" => self.whole_block(
                    d,
                    NoteKind::NotNeeded,
                    "Ferry passes WebSocket upgrades by itself",
                ),
                "map" => self.whole_block(
                    d,
                    NoteKind::NotTranslated,
                    "nginx variables of one's own are not translated",
                ),
                "client_max_body_size" => {
                    if let Some(n) = self.body_size(d) {
                        self.config.gateway.max_body_size = Some(n);
                        self.http_body_size = Some(d.id);
                    }
                }
                // one per gateway, wherever written: after the servers (body_buffer)
                "client_body_buffer_size" | "client_body_temp_path" => {}
                "keepalive_timeout" => match parse_time(d.arg(0)) {
                    Some(t) => {
                        self.use_(d);
                        self.config.server.http.keepalive_timeout = t;
                    }
                    None => self.note(d, NoteKind::NotTranslated, "not a time"),
                },
                "client_header_timeout" => match parse_time(d.arg(0)) {
                    Some(t) => {
                        self.use_(d);
                        self.config.server.http.header_read_timeout = t;
                    }
                    None => self.note(d, NoteKind::NotTranslated, "not a time"),
                },
                "access_log" => self.access_log(d),
                _ if INHERITED.contains(&d.name.as_str()) => {}
                _ => {
                    self.generic(d);
                }
            }
        }
        for d in children.iter().filter(|d| d.name == "server") {
            self.use_(d);
            self.server(d, &scope);
        }
        self.body_buffer(children);
        // upstream blocks no proxy_pass named
        let unused: Vec<&Directive> = self
            .blocks
            .values()
            .map(|b| b.directive)
            .filter(|d| !self.pools.keys().any(|(name, _)| name == d.arg(0)))
            .collect();
        for d in unused {
            let name = d.arg(0).to_owned();
            self.pool_for(&name, "http", d);
        }
    }

    /// `client_body_buffer_size` and `client_body_temp_path`, wherever written (`http`, `server`, `location`):
    /// `[gateway] body_buffer_memory` and `body_buffer_dir`, which Ferry has once for the whole gateway (they
    /// serve the routes with `buffer_request_body`; the others stream). The one written in `http` (or a site
    /// file's top) is kept, else the largest size / the first directory written; a different value elsewhere is
    /// reported as not kept. Called after the servers, so that directives inside blocks reported whole (`if`, a
    /// location that is not translated) are left to those.
    fn body_buffer(&mut self, children: &'a [Directive]) {
        /// The two directives not handled yet, with whether each is at the `http` level.
        fn walk<'d>(
            list: &'d [Directive],
            top: bool,
            handled: &HashSet<usize>,
            out: &mut Vec<(&'d Directive, bool)>,
        ) {
            for d in list {
                match d.name.as_str() {
                    "client_body_buffer_size" | "client_body_temp_path"
                        if !handled.contains(&d.id) =>
                    {
                        out.push((d, top));
                    }
                    "server" | "location" => walk(d.children(), false, handled, out),
                    _ => {}
                }
            }
        }
        let mut found = Vec::new();
        walk(children, true, &self.handled, &mut found);
        // client_body_buffer_size: sizes
        let mut sizes: Vec<(&Directive, bool, u64)> = Vec::new();
        for &(d, top) in found
            .iter()
            .filter(|(d, _)| d.name == "client_body_buffer_size")
        {
            match parse_size(d.arg(0)) {
                Some(n) => sizes.push((d, top, n)),
                None => self.note(d, NoteKind::NotTranslated, "not a size"),
            }
        }
        let kept = sizes
            .iter()
            .find(|s| s.1)
            // the first of the largest
            .or_else(|| sizes.iter().rev().max_by_key(|s| s.2))
            .map(|&(d, _, n)| (d.id, d.arg(0).to_owned(), d.at.clone(), n));
        if let Some((id, arg, at, n)) = kept {
            self.config.gateway.body_buffer_memory = Some(n);
            for &(d, _, size) in &sizes {
                if d.id == id || size == n {
                    self.use_(d);
                } else {
                    let why = format!(
                        "Ferry holds one body_buffer_memory for the whole gateway ([gateway]): {arg} from {at} \
                         is kept, not this {}",
                        d.arg(0)
                    );
                    self.note(d, NoteKind::Approximated, why);
                }
            }
        }
        // client_body_temp_path: absolute directories (nginx's relative ones are under its prefix)
        let mut dirs: Vec<(&Directive, bool)> = Vec::new();
        for &(d, top) in found
            .iter()
            .filter(|(d, _)| d.name == "client_body_temp_path")
        {
            if d.arg(0).starts_with('/') {
                dirs.push((d, top));
            } else {
                self.note(
                    d,
                    NoteKind::NotTranslated,
                    "the directory is relative (to nginx's prefix): write body_buffer_dir as an absolute path",
                );
            }
        }
        let levels = |d: &Directive| {
            (d.args.len() > 1).then(|| {
                format!(
                    "; the levels ({}) are not needed: Ferry's buffer files have no names",
                    d.args[1..].join(" ")
                )
            })
        };
        let kept = dirs
            .iter()
            .find(|s| s.1)
            .or_else(|| dirs.first())
            .map(|&(d, _)| (d.id, d.arg(0).to_owned(), d.at.clone()));
        if let Some((id, dir, at)) = kept {
            self.config.gateway.body_buffer_dir = Some(PathBuf::from(&dir));
            for &(d, _) in &dirs {
                if d.id == id {
                    let why = format!(
                        "request bodies larger than body_buffer_memory go to files in {dir}, which must exist \
                         where Ferry runs (checked at load; nginx creates it, Ferry does not){}",
                        levels(d).unwrap_or_default()
                    );
                    self.note(d, NoteKind::Approximated, why);
                } else if d.arg(0) != dir {
                    let why = format!(
                        "Ferry has one body_buffer_dir for the whole gateway ([gateway]): {dir} from {at} is \
                         kept, not {}",
                        d.arg(0)
                    );
                    self.note(d, NoteKind::Approximated, why);
                } else if let Some(l) = levels(d) {
                    let why = format!("body_buffer_dir is {dir} already (from {at}){l}");
                    self.note(d, NoteKind::NotNeeded, why);
                } else {
                    self.use_(d);
                }
            }
        }
    }

    fn body_size(&mut self, d: &Directive) -> Option<u64> {
        match parse_size(d.arg(0)) {
            Some(n) => {
                self.use_(d);
                Some(n)
            }
            None => {
                self.note(d, NoteKind::NotTranslated, "not a size");
                None
            }
        }
    }

    fn access_log(&mut self, d: &Directive) {
        let path = d.arg(0);
        if path == "off" {
            if self.access_log.is_none() {
                self.use_(d);
            } else {
                self.note(
                    d,
                    NoteKind::Approximated,
                    "Ferry has one access log for every route; it stays on here",
                );
            }
            return;
        }
        if path.starts_with("syslog:") {
            self.note(
                d,
                NoteKind::NotTranslated,
                "Ferry writes the access log to its log or a file, not to syslog",
            );
            return;
        }
        let format = d.args.get(1).map(String::as_str).unwrap_or("combined");
        let key = format!("{path} {format}");
        if let Some((first, at)) = &self.access_log {
            if *first != key {
                let why = format!("Ferry has one access log for every route: the one of {at}");
                self.note(d, NoteKind::Approximated, why);
            } else {
                self.use_(d);
            }
            return;
        }
        self.access_log = Some((key, d.at.clone()));
        let g = &mut self.config.gateway;
        g.access_log_file = Some(PathBuf::from(path));
        let text = self.log_formats.get(format).cloned();
        match (format, text) {
            ("combined", _) => {
                g.access_log = AccessLog::Combined;
                self.use_(d);
            }
            (_, None) => {
                g.access_log = AccessLog::Combined;
                let why =
                    format!("no log_format \"{format}\" was read: the combined format is used");
                self.note(d, NoteKind::Approximated, why);
            }
            (_, Some(text)) => {
                let unknown: Vec<String> = variables(&text)
                    .into_iter()
                    .filter(|v| !LOG_VARS.contains(&v.as_str()))
                    .collect();
                if unknown.is_empty() {
                    g.access_log = AccessLog::Custom;
                    g.access_log_format = Some(text);
                    self.use_(d);
                } else {
                    g.access_log = AccessLog::Combined;
                    let why = format!(
                        "format \"{format}\" uses variables Ferry's access log does not know (${}): the combined \
                         format is used (Ferry's adds rt=, id=, route= and upstream=)",
                        unknown.join(", $")
                    );
                    self.note(d, NoteKind::Approximated, why);
                }
            }
        }
    }

    fn server(&mut self, server: &'a Directive, outer: &Scope<'a>) {
        let scope = outer.enter(server.children());
        let mut facts = ServerFacts {
            at: server.at.clone(),
            listens: Vec::new(),
            hosts: Vec::new(),
            https_redirect: None,
            routes: Vec::new(),
            cert: None,
            verify_client: None,
            client_ca: None,
            ocsp: None,
        };
        let mut ssl_on = false;
        if let Some(d) = scope.last("ssl") {
            self.use_(d);
            ssl_on = d.arg(0) == "on";
        }
        let mut named_any = false;
        for d in server.children() {
            match d.name.as_str() {
                "listen" => self.listen(d, &mut facts.listens),
                "server_name" => {
                    self.use_(d);
                    for name in &d.args {
                        named_any |= !(name.is_empty() || name == "_");
                        self.server_name(d, name, &mut facts.hosts);
                    }
                }
                _ => {}
            }
        }
        if facts.listens.is_empty() {
            facts.listens.push(Listen {
                addr: SocketAddr::from(([0, 0, 0, 0], 80)),
                tls: false,
                default_server: false,
                proxy_protocol: false,
            });
        }
        if ssl_on {
            facts.listens.iter_mut().for_each(|l| l.tls = true);
        }
        if named_any && facts.hosts.is_empty() {
            self.note(
                server,
                NoteKind::Approximated,
                "none of its server_name entries could be translated: its routes answer any host",
            );
        }
        // TLS
        let certs = scope.all("ssl_certificate");
        let keys = scope.all("ssl_certificate_key");
        if let (Some(c), Some(k)) = (certs.first(), keys.first()) {
            self.use_(c);
            self.use_(k);
            facts.cert = Some((PathBuf::from(c.arg(0)), PathBuf::from(k.arg(0))));
        }
        for extra in certs.iter().skip(1).chain(keys.iter().skip(1)) {
            self.note(
                extra,
                NoteKind::NotTranslated,
                "Ferry serves one certificate per name (the first one: RSA and ECDSA side by side are not built)",
            );
        }
        if let Some(d) = scope.last("ssl_verify_client") {
            self.use_(d);
            facts.verify_client = Some((d.arg(0).to_owned(), d.at.clone()));
        }
        if let Some(d) = scope.last("ssl_client_certificate") {
            self.use_(d);
            facts.client_ca = Some((PathBuf::from(d.arg(0)), d.at.clone()));
        }
        if facts.listens.iter().any(|l| l.tls) {
            facts.ocsp = self.stapling(&scope);
        }
        let error_uris = collect_error_uris(server);
        self.error_files(server, &scope, &error_uris);
        // server-level directives
        for d in server.children() {
            match d.name.as_str() {
                "listen" | "server_name" | "location" => {}
                "return" => {
                    if is_https_redirect(d, &facts.hosts) {
                        self.use_(d);
                        facts.https_redirect = Some((d.at.clone(), redirect_status(d)));
                    } else {
                        let m = Match::Prefix("/".into());
                        let base = self.base_route(&facts.hosts, &m, &scope);
                        let made = self.return_routes(d, base, &facts.hosts);
                        facts.routes.extend(made);
                    }
                }
                "rewrite" => self.server_rewrite(d, &facts.hosts, &mut facts.routes),
                "access_log" => self.access_log(d),
                "client_max_body_size" => {
                    self.body_size(d);
                }
                "keepalive_timeout" | "client_header_timeout" => self.note(
                    d,
                    NoteKind::NotTranslated,
                    "Ferry's client timeouts are per node ([server.http]), not per server block",
                ),
                _ if INHERITED.contains(&d.name.as_str()) => {}
                _ => {
                    self.generic(d);
                }
            }
        }
        let locations: Vec<&'a Directive> = server
            .children()
            .iter()
            .filter(|d| d.name == "location")
            .collect();
        // a port-80 server that redirects everything in `location /` is a redirect too
        if facts.https_redirect.is_none() {
            for loc in &locations {
                let only_redirect = loc.args == ["/"]
                    && loc.children().len() == 1
                    && loc.children()[0].name == "return"
                    && is_https_redirect(&loc.children()[0], &facts.hosts);
                if only_redirect {
                    self.use_(loc);
                    self.use_(&loc.children()[0]);
                    let d = &loc.children()[0];
                    facts.https_redirect = Some((d.at.clone(), redirect_status(d)));
                }
            }
        }
        for loc in locations {
            if facts.https_redirect.is_some() && self.handled.contains(&loc.id) {
                continue;
            }
            let made = self.location(loc, &scope, &facts.hosts, &error_uris);
            facts.routes.extend(made);
        }
        self.servers.push(facts);
    }

    /// `ssl_stapling` and `ssl_stapling_file` in force: the file to staple, when stapling is on and names one.
    fn stapling(&mut self, scope: &Scope<'a>) -> Option<(PathBuf, Position, usize)> {
        let on = scope.last("ssl_stapling").filter(|d| d.arg(0) == "on");
        let file = scope.last("ssl_stapling_file");
        match (on, file) {
            (Some(on), Some(file)) => {
                self.use_(on);
                Some((PathBuf::from(file.arg(0)), file.at.clone(), file.id))
            }
            (Some(on), None) => {
                // fetched responses: [gateway.tls] ocsp_stapling, with the responder of ssl_stapling_responder
                self.use_(on);
                self.stapling_fetch.get_or_insert_with(|| on.at.clone());
                if let Some(r) = scope.last("ssl_stapling_responder") {
                    match &self.stapling_responder {
                        Some(first) if first != r.arg(0) => {
                            let why =
                                format!("Ferry asks one responder for every certificate ({first})");
                            self.note(r, NoteKind::NotTranslated, why);
                        }
                        _ => {
                            self.use_(r);
                            self.stapling_responder = Some(r.arg(0).to_owned());
                        }
                    }
                }
                None
            }
            (None, file) => {
                self.stapling_off = true;
                if let Some(off) = scope.last("ssl_stapling") {
                    self.use_(off);
                }
                if let Some(file) = file {
                    self.note(
                        file,
                        NoteKind::NotNeeded,
                        "ssl_stapling is off: nothing is stapled",
                    );
                }
                None
            }
        }
    }

    /// Where the files of a server's error pages are: `root` (or `alias`) of the `location` that serves the
    /// URI, else the server's `root`, joined with the URI.
    fn error_files(&mut self, server: &'a Directive, scope: &Scope<'a>, uris: &[String]) {
        self.page_root.clear();
        for uri in uris {
            let loc = server.children().iter().find(|d| {
                d.name == "location" && (d.args == ["=", uri.as_str()] || d.args == [uri.as_str()])
            });
            if let Some(alias) = loc.and_then(|l| l.children().iter().find(|d| d.name == "alias")) {
                self.use_(alias);
                self.page_root
                    .insert(uri.clone(), PathBuf::from(alias.arg(0)));
                continue;
            }
            let inner = loc.map(|l| scope.enter(l.children()));
            let Some(root) = inner.as_ref().unwrap_or(scope).last("root") else {
                continue;
            };
            let file = format!(
                "{}/{}",
                root.arg(0).trim_end_matches('/'),
                uri.trim_start_matches('/')
            );
            self.page_root.insert(uri.clone(), PathBuf::from(file));
        }
    }

    fn listen(&mut self, d: &Directive, out: &mut Vec<Listen>) {
        let spec = d.arg(0);
        if spec.starts_with("unix:") {
            self.note(d, NoteKind::NotTranslated, "Ferry listens on TCP only");
            return;
        }
        let addr = if let Ok(port) = spec.parse::<u16>() {
            Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
        } else if let Some(port) = spec.strip_prefix("*:") {
            port.parse::<u16>()
                .ok()
                .map(|p| SocketAddr::from((Ipv4Addr::UNSPECIFIED, p)))
        } else if let Ok(a) = spec.parse::<SocketAddr>() {
            Some(a)
        } else if let Ok(ip) = spec.trim_matches(['[', ']']).parse::<IpAddr>() {
            Some(SocketAddr::from((ip, 80)))
        } else if let Some(port) = spec.strip_prefix("localhost:") {
            port.parse::<u16>()
                .ok()
                .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)))
        } else {
            None
        };
        let Some(addr) = addr else {
            self.note(
                d,
                NoteKind::NotTranslated,
                "Ferry listens on IP addresses and ports, not host names",
            );
            return;
        };
        let mut listen = Listen {
            addr,
            tls: false,
            default_server: false,
            proxy_protocol: false,
        };
        let mut left_out = Vec::new();
        let mut skip = false;
        for flag in &d.args[1..] {
            match flag.as_str() {
                "ssl" => listen.tls = true,
                "proxy_protocol" => listen.proxy_protocol = true,
                "default_server" | "default" => listen.default_server = true,
                "http2" | "reuseport" | "deferred" | "bind" => {}
                f if f.starts_with("ipv6only=")
                    || f.starts_with("backlog=")
                    || f.starts_with("so_keepalive=")
                    || f.starts_with("rcvbuf=")
                    || f.starts_with("sndbuf=")
                    || f.starts_with("fastopen=") => {}
                "quic" => skip = true,
                other => left_out.push(other.to_owned()),
            }
        }
        if skip {
            // the UDP twin of a TCP listener: Ferry's TLS listener on this address serves it (`http3 = true`)
            self.use_(d);
            self.quic.push((addr, d.at.clone()));
            return;
        }
        if left_out.is_empty() {
            self.use_(d);
        } else {
            let why = format!("listened on, without {}", left_out.join(", "));
            self.note(d, NoteKind::Approximated, why);
        }
        out.push(listen);
    }

    fn server_name(&mut self, d: &Directive, name: &str, hosts: &mut Vec<String>) {
        let name = name.to_ascii_lowercase();
        if name.is_empty() || name == "_" {
            return;
        }
        if name.starts_with('~') {
            self.note(
                d,
                NoteKind::NotTranslated,
                format!("{name}: hosts are names or *.wildcards, not regular expressions"),
            );
        } else if let Some(base) = name.strip_prefix('.') {
            hosts.push(base.to_owned());
            hosts.push(format!("*.{base}"));
        } else if name.ends_with(".*") || name.contains('$') {
            self.note(
                d,
                NoteKind::NotTranslated,
                format!("{name}: only leading *. wildcards are supported"),
            );
        } else if !hosts.contains(&name) {
            hosts.push(name);
        }
    }

    /// The route every location of a server starts from: its hosts and path, the inherited settings.
    fn base_route(&mut self, hosts: &[String], m: &Match, scope: &Scope<'a>) -> RouteConfig {
        let mut r = RouteConfig {
            hosts: hosts.to_vec(),
            ..RouteConfig::default()
        };
        match m {
            Match::Prefix(p) | Match::PrefixNoRegex(p) => {
                r.path = (p != "/").then(|| p.clone());
            }
            Match::Exact(p) => r.path_exact = Some(p.clone()),
            Match::Regex(re) => r.path_regex = Some(re.clone()),
            Match::Named(_) => {}
        }
        if let Some(d) = scope.last("client_max_body_size") {
            if Some(d.id) != self.http_body_size {
                r.max_body_size = self.body_size(d);
            }
        }
        // `gzip on` (or the brotli module's `brotli on`): Ferry's compression covers both encodings
        for name in ["gzip", "brotli"] {
            if let Some(d) = scope.last(name) {
                self.use_(d);
                r.compress |= d.arg(0) == "on";
            }
        }
        // `gzip_types` (nginx always adds text/html; `*` is every type): compress_types
        if let Some(d) = scope.last("gzip_types").filter(|_| r.compress) {
            self.use_(d);
            r.compress_types = match d.args.iter().any(|a| a == "*") {
                true => Vec::new(),
                false => std::iter::once("text/html".to_owned())
                    .chain(
                        d.args
                            .iter()
                            .map(|a| a.to_ascii_lowercase())
                            .filter(|a| a != "text/html"),
                    )
                    .collect(),
            };
        }
        r
    }

    /// Name a route: its first host (or `*`) and what it matches, made unique.
    fn name_route(&mut self, r: &mut RouteConfig, label: &str) {
        let host = r.hosts.first().map(String::as_str).unwrap_or("*");
        let base = format!("{host}{label}");
        let mut name = base.clone();
        let mut n = 2;
        while self.route_names.contains(&name) {
            name = format!("{base}#{n}");
            n += 1;
        }
        self.route_names.insert(name.clone());
        r.name = Some(name);
    }

    fn push_route(&mut self, mut r: RouteConfig, label: &str) -> usize {
        self.name_route(&mut r, label);
        self.config.gateway.routes.push(r);
        self.config.gateway.routes.len() - 1
    }

    /// `return` as routes (one per host when the target names `$host`).
    fn return_routes(&mut self, d: &Directive, base: RouteConfig, hosts: &[String]) -> Vec<usize> {
        let label = match (&base.path, &base.path_exact, &base.path_regex) {
            (Some(p), _, _) => p.clone(),
            (_, Some(p), _) => format!("={p}"),
            (_, _, Some(r)) => format!("~{r}"),
            _ => "/".to_owned(),
        };
        let (status, text) = match d.args.as_slice() {
            [code] => match code.parse::<u16>() {
                Ok(s) => (s, None),
                Err(_) => (302, Some(code.clone())),
            },
            [code, text] => match code.parse::<u16>() {
                Ok(s) => (s, Some(text.clone())),
                Err(_) => {
                    self.note(d, NoteKind::NotTranslated, "the code is not a number");
                    return Vec::new();
                }
            },
            _ => {
                self.note(
                    d,
                    NoteKind::NotTranslated,
                    "return takes a code and a text or URL",
                );
                return Vec::new();
            }
        };
        if status == 444 || !(200..=599).contains(&status) {
            self.note(
                d,
                NoteKind::NotTranslated,
                "nginx's 444 (close without answer) and codes outside 200–599 have no Ferry equivalent",
            );
            return Vec::new();
        }
        if [301, 302, 303, 307, 308].contains(&status) {
            let Some(url) = text else {
                self.note(d, NoteKind::NotTranslated, "a redirect without a URL");
                return Vec::new();
            };
            return self.redirect_routes(d, base, hosts, status, &url, &label);
        }
        let mut r = base;
        let body = text.unwrap_or_default();
        if variables(&body).is_empty() {
            self.use_(d);
        } else {
            self.note(
                d,
                NoteKind::Approximated,
                "the body is sent as written: Ferry does not put variables into fixed responses",
            );
        }
        r.respond = Some(RespondConfig {
            status,
            body,
            content_type: None,
        });
        vec![self.push_route(r, &label)]
    }

    fn redirect_routes(
        &mut self,
        d: &Directive,
        base: RouteConfig,
        hosts: &[String],
        status: u16,
        url: &str,
        label: &str,
    ) -> Vec<usize> {
        let (target, keep_path) = match url.strip_suffix("$request_uri") {
            Some(t) => (t.to_owned(), true),
            None => (url.to_owned(), false),
        };
        let host_vars = ["$host", "$server_name", "$http_host"];
        let names_host = host_vars.iter().any(|v| target.contains(v));
        let other_vars = variables(&target)
            .into_iter()
            .any(|v| !["host", "server_name", "http_host"].contains(&v.as_str()));
        if other_vars {
            self.note(
                d,
                NoteKind::NotTranslated,
                "Ferry's redirects take a fixed URL (plus the request's path and query): this one has variables",
            );
            return Vec::new();
        }
        let per_host: Vec<(Vec<String>, String)> = if names_host {
            let exact: Vec<&String> = hosts.iter().filter(|h| !h.starts_with("*.")).collect();
            if exact.is_empty() || exact.len() != hosts.len() {
                self.note(
                    d,
                    NoteKind::NotTranslated,
                    "the redirect's URL depends on the request's host and the server has no list of exact names",
                );
                return Vec::new();
            }
            exact
                .into_iter()
                .map(|h| {
                    let mut to = target.clone();
                    for v in host_vars {
                        to = to.replace(v, h);
                    }
                    (vec![h.clone()], to)
                })
                .collect()
        } else {
            vec![(base.hosts.clone(), target)]
        };
        self.use_(d);
        let mut made = Vec::new();
        for (hosts, to) in per_host {
            let mut r = base.clone();
            r.hosts = hosts;
            r.max_body_size = None;
            r.compress = false;
            r.compress_types.clear();
            r.redirect = Some(RedirectConfig {
                to,
                status,
                keep_path,
            });
            made.push(self.push_route(r, label));
        }
        made
    }

    /// A `rewrite` outside any location: only the redirecting kind translates.
    fn server_rewrite(&mut self, d: &Directive, hosts: &[String], routes: &mut Vec<usize>) {
        let [re, repl, flag @ ..] = d.args.as_slice() else {
            self.note(
                d,
                NoteKind::NotTranslated,
                "rewrite takes a regex and a replacement",
            );
            return;
        };
        let flag = flag.first().map(String::as_str).unwrap_or("");
        let redirect = flag == "redirect"
            || flag == "permanent"
            || repl.starts_with("http://")
            || repl.starts_with("https://");
        if !redirect {
            self.note(
                d,
                NoteKind::NotTranslated,
                "a rewrite before location matching (server level) is not built: Ferry's rewrite changes the \
                 path of the route that matched; put a path_regex route with rewrite by hand",
            );
            return;
        }
        routes.extend(self.rewrite_redirect(d, hosts, re, repl, flag));
    }

    fn rewrite_redirect(
        &mut self,
        d: &Directive,
        hosts: &[String],
        re: &str,
        repl: &str,
        flag: &str,
    ) -> Vec<usize> {
        if !variables(repl).is_empty() {
            self.note(
                d,
                NoteKind::NotTranslated,
                "a redirecting rewrite with captures or variables: Ferry's redirects take a fixed URL",
            );
            return Vec::new();
        }
        if let Err(e) = regex::Regex::new(re) {
            self.note(
                d,
                NoteKind::NotTranslated,
                format!("the regex does not compile in Rust: {e}"),
            );
            return Vec::new();
        }
        let status = if flag == "permanent" { 301 } else { 302 };
        let (to, keep_query) = match repl.strip_suffix('?') {
            Some(t) => (t.to_owned(), false),
            None => (repl.to_owned(), true),
        };
        let r = RouteConfig {
            hosts: hosts.to_vec(),
            path_regex: Some(re.to_owned()),
            redirect: Some(RedirectConfig {
                to,
                status,
                keep_path: false,
            }),
            ..RouteConfig::default()
        };
        if keep_query {
            self.note(
                d,
                NoteKind::Approximated,
                "the redirect drops the query (nginx appends it unless the replacement ends in ?)",
            );
        } else {
            self.use_(d);
        }
        vec![self.push_route(r, &format!("~{re}"))]
    }

    #[allow(clippy::too_many_lines)]
    fn location(
        &mut self,
        loc: &'a Directive,
        outer: &Scope<'a>,
        hosts: &[String],
        error_uris: &[String],
    ) -> Vec<usize> {
        self.use_(loc);
        let Some(m) = Match::parse(&loc.args) else {
            self.note(loc, NoteKind::NotTranslated, "an unknown location form");
            return Vec::new();
        };
        if let Match::Named(_) = m {
            self.whole_block(
                loc,
                NoteKind::NotTranslated,
                "named locations (@name) serve try_files and error_page fallbacks, which are not translated",
            );
            return Vec::new();
        }
        let scope = outer.enter(loc.children());
        let mut made = Vec::new();
        // nested locations first in the list they are written in, as routes of their own
        for inner in loc.children().iter().filter(|d| d.name == "location") {
            made.extend(self.location(inner, &scope, hosts, error_uris));
        }
        if let Match::Regex(re) = &m {
            if let Err(e) = regex::Regex::new(re) {
                self.whole_block(
                    loc,
                    NoteKind::NotTranslated,
                    &format!("the regex does not compile in Rust's regex (no look-around or backreferences): {e}"),
                );
                return made;
            }
        }
        let is_error_page = match &m {
            Match::Exact(p) | Match::Prefix(p) => error_uris.contains(p),
            _ => false,
        };
        if loc.children().iter().any(|d| d.name == "internal") {
            let file = match &m {
                Match::Exact(p) | Match::Prefix(p) => self.page_root.contains_key(p),
                _ => false,
            };
            if file {
                self.whole_block(
                    loc,
                    NoteKind::NotNeeded,
                    "it serves an error page, which Ferry reads from its file itself (error_pages)",
                );
            } else {
                self.whole_block(
                    loc,
                    NoteKind::NotTranslated,
                    "an internal location (error_page targets, X-Accel-Redirect) is not a route of its own",
                );
            }
            return made;
        }
        let ret = loc.children().iter().find(|d| d.name == "return");
        let pass = loc
            .children()
            .iter()
            .find(|d| d.name == "proxy_pass" || d.name == "grpc_pass");
        if ret.is_none() && pass.is_none() {
            let serves_files =
                !is_error_page && loc.children().iter().any(|d| d.name != "location");
            let why = match serves_files.then(|| self.static_route(loc, &m, &scope, hosts)) {
                Some(Ok(r)) => {
                    made.push(self.push_route(r, &m.label()));
                    return made;
                }
                Some(Err(why)) => why,
                None => "",
            };
            let what = if is_error_page {
                (
                    NoteKind::NotNeeded,
                    "it serves an error page, which Ferry reads from its file itself (error_pages)",
                )
            } else if serves_files {
                (NoteKind::NotTranslated, why)
            } else {
                return made;
            };
            self.note(loc, what.0, what.1);
            for d in loc.children().iter().filter(|d| d.name != "location") {
                if is_error_page && ["root", "alias", "internal"].contains(&d.name.as_str()) {
                    self.use_(d);
                } else if !self.generic(d) {
                    self.location_setting(d, &mut RouteConfig::default(), true);
                }
            }
            return made;
        }
        self.prefix_no_regex(loc, &m);
        let mut r = self.base_route(hosts, &m, &scope);
        let label = m.label();
        if let Some(ret) = ret {
            if let Some(p) = pass {
                self.note(
                    p,
                    NoteKind::NotTranslated,
                    "never reached: the return in this location answers first",
                );
            }
            self.response_settings(&scope, &mut r);
            for d in loc.children() {
                if d.id != ret.id && d.name != "location" && !self.generic(d) {
                    self.location_setting(d, &mut r, false);
                }
            }
            made.extend(self.return_routes(ret, r, hosts));
            return made;
        }
        let Some(pass) = pass else { return made };
        if !self.proxy_pass(pass, &m, &mut r) {
            for d in loc.children().iter().filter(|d| d.name != "location") {
                self.use_(d);
            }
            return made;
        }
        self.inherited_settings(&scope, &mut r, pass.name == "grpc_pass");
        let mut rewrites = Vec::new();
        for d in loc.children() {
            match d.name.as_str() {
                "location" | "proxy_pass" | "grpc_pass" => {}
                "rewrite" => rewrites.push(d),
                "if" if is_client_cert_check(d) => {
                    self.use_block(d);
                    r.require_client_cert = true;
                }
                _ if INHERITED.contains(&d.name.as_str()) => {}
                _ => {
                    if !self.generic(d) {
                        self.location_setting(d, &mut r, false);
                    }
                }
            }
        }
        // rewrites: a route of its own per rewrite (the location's own when the regex is the location's)
        let mut extra = Vec::new();
        for d in rewrites {
            if let Some(rr) = self.location_rewrite(d, &m, &mut r, hosts) {
                extra.push(rr);
            }
        }
        for (rr, rlabel) in extra {
            made.push(self.push_route(rr, &rlabel));
        }
        made.push(self.push_route(r, &label));
        made
    }

    /// `^~`, reported: Ferry has no such prefix.
    fn prefix_no_regex(&mut self, loc: &Directive, m: &Match) {
        if let Match::PrefixNoRegex(_) = m {
            self.note(
                loc,
                NoteKind::Approximated,
                "^~ has no key of its own: a regex route that also matches these paths wins over this prefix",
            );
        }
    }

    /// A location that serves files (`root` in force or `alias`, no `proxy_pass` or `return`) as a
    /// `static_dir` route: `root` keeps the whole path under the directory, `alias` the path after the prefix
    /// (`strip_prefix`). The error is why the location is not translated.
    fn static_route(
        &mut self,
        loc: &'a Directive,
        m: &Match,
        scope: &Scope<'a>,
        hosts: &[String],
    ) -> Result<RouteConfig, &'static str> {
        let alias = loc.children().iter().find(|d| d.name == "alias");
        let try_files = loc.children().iter().find(|d| d.name == "try_files");
        if try_files.is_some_and(|t| t.args.last().is_some_and(|a| a.starts_with('@'))) {
            return Err(
                "try_files falls back to a named location: a Ferry route serves files or proxies, not both",
            );
        }
        let (dir, strip) = match (alias, scope.last("root")) {
            (Some(a), _) if matches!(m, Match::Prefix(_) | Match::PrefixNoRegex(_)) => (a, true),
            (Some(_), _) => {
                return Err(
                    "alias outside a prefix location (a file, or a regex's captures) is not translated: write a \
                     route with `static_dir` by hand",
                )
            }
            (None, Some(root)) => (root, false),
            (None, None) => return Err("no root or alias says where its files are"),
        };
        let path = dir.arg(0);
        if !path.starts_with('/') || path.contains('$') {
            return Err(
                "the directory is relative to nginx's prefix or has variables: write a route with an absolute \
                 `static_dir` by hand",
            );
        }
        self.use_(dir);
        self.prefix_no_regex(loc, m);
        let mut r = self.base_route(hosts, m, scope);
        r.max_body_size = None;
        r.strip_prefix = strip;
        r.static_dir = Some(PathBuf::from(match path.trim_end_matches('/') {
            "" => "/",
            p => p,
        }));
        if let Some(t) = try_files {
            r.static_fallback = self.try_files(t, strip);
        }
        self.response_settings(scope, &mut r);
        if let Some(d) = scope.last("limit_req") {
            self.limit_req(d, &mut r);
        }
        self.error_pages(scope, &mut r);
        for d in loc.children() {
            match d.name.as_str() {
                "location" | "alias" | "try_files" => {}
                _ if INHERITED.contains(&d.name.as_str()) => {}
                _ => {
                    if !self.generic(d) {
                        self.location_setting(d, &mut r, false);
                    }
                }
            }
        }
        Ok(r)
    }

    /// `try_files` of a location that serves files: `$uri`, `$uri/` and `=404` are what `static_dir` does; a
    /// fallback file (a single-page app's `/index.html`) under `root` is `static_fallback`, returned here (under
    /// `alias` the fallback's URI is not a file of the directory, and it is reported); other forms are reported.
    fn try_files(&mut self, d: &Directive, alias: bool) -> Option<String> {
        let Some((last, tried)) = d.args.split_last() else {
            self.note(d, NoteKind::NotTranslated, "try_files without arguments");
            return None;
        };
        let others: Vec<&str> = tried
            .iter()
            .map(String::as_str)
            .filter(|a| !["$uri", "$uri/"].contains(a))
            .collect();
        let fallback = last.starts_with('/') && !last.contains('$') && !last.ends_with('/');
        if fallback && !alias && others.is_empty() {
            self.use_(d);
            return Some(last.trim_start_matches('/').to_owned());
        }
        if last.starts_with('/') {
            let why = format!(
                "only a file under root is a fallback (static_fallback): a missing file is 404, not {last}; the \
                 files are served (static_dir)"
            );
            self.note(d, NoteKind::NotTranslated, why);
        } else if !["=404", "$uri", "$uri/"].contains(&last.as_str()) {
            let why =
                format!("a missing file is 404, not {last}; the files are served (static_dir)");
            self.note(d, NoteKind::NotTranslated, why);
        } else if !others.is_empty() {
            let why = format!(
                "Ferry serves the file at the path or a directory's index.html: {} is not tried",
                others.join(", ")
            );
            self.note(d, NoteKind::Approximated, why);
        } else {
            self.use_(d);
        }
        None
    }

    /// A `rewrite` inside a proxying location. Returns a route to add before the location's own, or changes `r`.
    fn location_rewrite(
        &mut self,
        d: &Directive,
        m: &Match,
        r: &mut RouteConfig,
        hosts: &[String],
    ) -> Option<(RouteConfig, String)> {
        let [re, repl, flag @ ..] = d.args.as_slice() else {
            self.note(
                d,
                NoteKind::NotTranslated,
                "rewrite takes a regex and a replacement",
            );
            return None;
        };
        let flag = flag.first().map(String::as_str).unwrap_or("");
        if flag == "redirect"
            || flag == "permanent"
            || repl.starts_with("http://")
            || repl.starts_with("https://")
        {
            self.rewrite_redirect(d, hosts, re, repl, flag);
            return None;
        }
        if repl.contains('?') {
            self.note(
                d,
                NoteKind::NotTranslated,
                "Ferry's rewrite changes the path only: the query goes on as it came",
            );
            return None;
        }
        let others: Vec<String> = variables(repl)
            .into_iter()
            .filter(|v| !v.chars().all(|c| c.is_ascii_digit()) && !re.contains(&format!("<{v}>")))
            .collect();
        if !others.is_empty() {
            let why = format!(
                "the replacement uses ${}: Ferry's rewrite takes the regex's captures only",
                others.join(", $")
            );
            self.note(d, NoteKind::NotTranslated, why);
            return None;
        }
        if let Err(e) = regex::Regex::new(re) {
            self.note(
                d,
                NoteKind::NotTranslated,
                format!("the regex does not compile in Rust: {e}"),
            );
            return None;
        }
        let last = flag != "break";
        let again = "Ferry's rewrite does not search the locations again (nginx's `last`): the request stays \
                     on this route";
        match m {
            Match::Regex(loc_re) if loc_re == re => {
                r.rewrite = Some(repl.clone());
                if last {
                    self.note(d, NoteKind::Approximated, again);
                } else {
                    self.use_(d);
                }
                None
            }
            _ => {
                let mut rr = r.clone();
                rr.path = None;
                rr.path_exact = None;
                rr.strip_prefix = false;
                rr.replace_prefix = None;
                rr.path_regex = Some(re.clone());
                rr.rewrite = Some(repl.clone());
                let within = match m {
                    Match::Prefix(p) | Match::PrefixNoRegex(p) => {
                        re.strip_prefix('^')
                            .is_some_and(|rest| rest.starts_with(p.as_str()))
                            && !p.contains(['.', '(', '[', '*', '+', '?', '$', '\\', '|'])
                    }
                    _ => false,
                };
                if !within {
                    self.note(
                        d,
                        NoteKind::Approximated,
                        "the rewrite is a route of its own (path_regex + rewrite): requests it matches outside \
                         this location take it too",
                    );
                } else if last {
                    self.note(d, NoteKind::Approximated, again);
                } else {
                    self.use_(d);
                }
                Some((rr, format!("~{re}")))
            }
        }
    }

    /// `proxy_pass`/`grpc_pass`: the pool and the path change. False when the location cannot be translated.
    fn proxy_pass(&mut self, d: &Directive, m: &Match, r: &mut RouteConfig) -> bool {
        let url = d.arg(0);
        let Some((scheme, rest)) = url.split_once("://") else {
            // grpc_pass may leave the scheme out
            if d.name == "grpc_pass" && !url.is_empty() {
                return self.proxy_pass_to(d, "grpc", url, m, r);
            }
            self.note(d, NoteKind::NotTranslated, "not a URL");
            return false;
        };
        let scheme = scheme.to_ascii_lowercase();
        self.proxy_pass_to(d, &scheme, rest, m, r)
    }

    fn proxy_pass_to(
        &mut self,
        d: &Directive,
        scheme: &str,
        rest: &str,
        m: &Match,
        r: &mut RouteConfig,
    ) -> bool {
        if rest.contains('$') {
            self.note(
                d,
                NoteKind::NotTranslated,
                "an upstream named by variables is chosen per request in nginx: Ferry's pools are fixed",
            );
            return false;
        }
        if rest.starts_with("unix:") {
            self.note(
                d,
                NoteKind::NotTranslated,
                "Ferry's upstreams are TCP addresses, not unix sockets",
            );
            return false;
        }
        let ferry_scheme = match scheme {
            "http" => "http",
            "https" | "grpcs" => "https",
            "grpc" => "h2c",
            other => {
                let why = format!("{other}:// upstreams are not built");
                self.note(d, NoteKind::NotTranslated, why);
                return false;
            }
        };
        let (hostport, uri) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let Some(pool) = self.pool_for(hostport, ferry_scheme, d) else {
            return false;
        };
        r.upstream = Some(pool);
        match (uri, m) {
            (None, _) => self.use_(d),
            (Some("/"), Match::Prefix(_) | Match::PrefixNoRegex(_)) => {
                r.strip_prefix = true;
                self.use_(d);
            }
            (Some(u), Match::Prefix(p) | Match::PrefixNoRegex(p)) => {
                if u == p {
                    // proxy_pass http://up/api/ in location /api/: the same path
                } else {
                    r.replace_prefix = Some(u.to_owned());
                }
                self.use_(d);
            }
            (Some(u), Match::Exact(_)) => {
                // the exact path goes on as the URI: a regex route with a fixed rewrite does it
                let exact = r.path_exact.take().unwrap_or_default();
                r.path_regex = Some(format!("^{}$", regex::escape(&exact)));
                r.rewrite = Some(u.replace('$', "$$"));
                self.use_(d);
            }
            (Some(_), _) => {
                self.note(
                    d,
                    NoteKind::Approximated,
                    "a URI part in proxy_pass inside a regex location: the path goes on as it came",
                );
            }
        }
        true
    }

    /// The pool for an `upstream` block name or a `host:port`, made on first use with `scheme`.
    fn pool_for(&mut self, hostport: &str, scheme: &str, at: &Directive) -> Option<String> {
        let key = (hostport.to_owned(), scheme.to_owned());
        if let Some(name) = self.pools.get(&key) {
            return Some(name.clone());
        }
        let taken: HashSet<&String> = self.pools.values().collect();
        let base = if self.blocks.contains_key(hostport) {
            hostport.to_owned()
        } else {
            hostport
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
                .trim_matches('-')
                .to_owned()
        };
        let mut name = base.clone();
        if taken.contains(&name) {
            name = format!("{base}-{scheme}");
        }
        let pool = if let Some(block) = self.blocks.get(hostport).cloned() {
            self.upstream_block(block.directive, scheme)
        } else {
            let Some(url) = server_url(scheme, hostport) else {
                self.note(at, NoteKind::NotTranslated, "not a host:port");
                return None;
            };
            Some(UpstreamConfig {
                servers: vec![UpstreamServer {
                    url,
                    weight: 1,
                    backup: false,
                    max_conns: None,
                }],
                ..UpstreamConfig::default()
            })
        };
        let pool = pool?;
        self.pools.insert(key, name.clone());
        self.config.gateway.upstreams.insert(name.clone(), pool);
        Some(name)
    }

    /// An `upstream` block as a pool whose servers speak `scheme`.
    fn upstream_block(&mut self, block: &Directive, scheme: &str) -> Option<UpstreamConfig> {
        self.use_(block);
        let mut pool = UpstreamConfig::default();
        let mut max_fails: Option<(u32, Position)> = None;
        let mut fail_timeout: Option<(Duration, Position)> = None;
        for d in block.children() {
            match d.name.as_str() {
                "server" => {
                    let Some(url) = server_url(scheme, d.arg(0)) else {
                        self.note(
                            d,
                            NoteKind::NotTranslated,
                            "Ferry's upstream servers are host:port over TCP",
                        );
                        continue;
                    };
                    let mut s = UpstreamServer {
                        url,
                        weight: 1,
                        backup: false,
                        max_conns: None,
                    };
                    let mut left_out = Vec::new();
                    let mut down = false;
                    for p in &d.args[1..] {
                        let (k, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
                        match k {
                            "weight" => match v.parse() {
                                Ok(w) => s.weight = w,
                                Err(_) => left_out.push(p.clone()),
                            },
                            "max_conns" => match v.parse::<u32>() {
                                Ok(0) => {}
                                Ok(n) => s.max_conns = Some(n),
                                Err(_) => left_out.push(p.clone()),
                            },
                            "backup" => s.backup = true,
                            "down" => down = true,
                            "max_fails" => match v.parse::<u32>() {
                                Ok(n) => match &max_fails {
                                    Some((old, at)) if *old != n => left_out.push(format!(
                                        "{p} (Ferry's max_fails is per pool: {old} from {at})"
                                    )),
                                    Some(_) => {}
                                    None => max_fails = Some((n, d.at.clone())),
                                },
                                Err(_) => left_out.push(p.clone()),
                            },
                            "fail_timeout" => match parse_time(v) {
                                Some(t) => match &fail_timeout {
                                    Some((old, at)) if *old != t => left_out.push(format!(
                                        "{p} (Ferry's fail_timeout is per pool: {old:?} from {at})"
                                    )),
                                    Some(_) => {}
                                    None => fail_timeout = Some((t, d.at.clone())),
                                },
                                None => left_out.push(p.clone()),
                            },
                            _ => left_out.push(p.clone()),
                        }
                    }
                    if down {
                        self.note(
                            d,
                            NoteKind::Approximated,
                            "marked down: left out of the pool",
                        );
                        continue;
                    }
                    if left_out.is_empty() {
                        self.use_(d);
                    } else {
                        let why = format!("translated without {}", left_out.join(", "));
                        self.note(d, NoteKind::Approximated, why);
                    }
                    pool.servers.push(s);
                }
                "least_conn" => {
                    self.use_(d);
                    pool.balance = Balance::LeastRequests;
                }
                "ip_hash" => {
                    self.use_(d);
                    pool.balance = Balance::Hash;
                    pool.hash_on = Some("client_ip".into());
                }
                "hash" => {
                    let key = d.arg(0);
                    let on = if key == "$remote_addr" || key == "$binary_remote_addr" {
                        Some("client_ip".to_owned())
                    } else if let Some(c) = key.strip_prefix("$cookie_") {
                        Some(format!("cookie:{c}"))
                    } else {
                        key.strip_prefix("$http_")
                            .map(|h| format!("header:{}", h.replace('_', "-")))
                    };
                    match on {
                        Some(on) => {
                            pool.balance = Balance::Hash;
                            pool.hash_on = Some(on);
                            self.use_(d);
                        }
                        None => self.note(
                            d,
                            NoteKind::NotTranslated,
                            "Ferry hashes on the client address, a header or a cookie (not on this key): the \
                             pool balances round robin",
                        ),
                    }
                }
                "sticky" => self.sticky(d, &mut pool),
                _ => {
                    if !self.generic(d) {
                        self.note(d, NoteKind::NotTranslated, "no Ferry equivalent in a pool");
                    }
                }
            }
        }
        if let Some((n, _)) = max_fails {
            pool.max_fails = n;
        }
        if let Some((t, _)) = fail_timeout {
            pool.fail_timeout = t;
        }
        if pool.balance == Balance::RoundRobin && pool.servers.iter().any(|s| s.weight != 1) {
            pool.balance = Balance::Weighted;
        }
        if pool.servers.is_empty() || pool.servers.iter().all(|s| s.backup) {
            self.note(
                block,
                NoteKind::NotTranslated,
                "no server of this upstream could be translated (or all are backups): the pool and its routes \
                 are left out",
            );
            return None;
        }
        Some(pool)
    }

    /// nginx Plus's `sticky cookie NAME expires= domain= path= httponly secure samesite=`.
    fn sticky(&mut self, d: &Directive, pool: &mut UpstreamConfig) {
        if d.arg(0) != "cookie" || d.args.len() < 2 {
            self.note(
                d,
                NoteKind::NotTranslated,
                "Ferry's sticky sessions are by a cookie it sets (sticky cookie NAME)",
            );
            return;
        }
        let mut c = StickyCookie {
            name: d.arg(1).to_owned(),
            http_only: false,
            ..StickyCookie::default()
        };
        let mut left_out = Vec::new();
        for p in &d.args[2..] {
            let (k, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
            match k {
                "expires" if v == "max" => c.max_age = Some(Duration::from_secs(10 * 365 * 86_400)),
                "expires" => match parse_time(v) {
                    Some(t) => c.max_age = Some(t),
                    None => left_out.push(p.clone()),
                },
                "domain" => c.domain = Some(v.to_owned()),
                "path" => c.path = v.to_owned(),
                "httponly" => c.http_only = true,
                "secure" => c.secure = "always".into(),
                "samesite" => c.same_site = v.to_ascii_lowercase(),
                _ => left_out.push(p.clone()),
            }
        }
        if left_out.is_empty() {
            self.use_(d);
        } else {
            let why = format!("translated without {}", left_out.join(", "));
            self.note(d, NoteKind::Approximated, why);
        }
        pool.sticky_cookie = Some(StickyCookieConfig::Full(c));
    }

    /// The inherited directives of a proxying location (headers, limits, timeouts, error pages).
    fn inherited_settings(&mut self, scope: &Scope<'a>, r: &mut RouteConfig, grpc: bool) {
        let set_header = if grpc {
            "grpc_set_header"
        } else {
            "proxy_set_header"
        };
        for d in scope.all(set_header).to_vec() {
            self.set_header(d, r);
        }
        self.response_settings(scope, r);
        let (connect, read, send) = if grpc {
            (
                "grpc_connect_timeout",
                "grpc_read_timeout",
                "grpc_send_timeout",
            )
        } else {
            (
                "proxy_connect_timeout",
                "proxy_read_timeout",
                "proxy_send_timeout",
            )
        };
        if let Some(pool) = r.upstream.clone() {
            if let Some(d) = scope.last(connect) {
                self.pool_timeout(&pool, d, "connect_timeout");
            }
            if let Some(d) = scope.last(read) {
                self.pool_timeout(&pool, d, "header_timeout");
                self.pool_timeout(&pool, d, "idle_timeout");
            }
            if let Some(d) = scope.last(send) {
                self.note(
                    d,
                    NoteKind::Approximated,
                    "Ferry has no send timeout of its own: the pool's idle_timeout bounds pauses both ways",
                );
            }
            if !grpc {
                self.pool_tls(scope, &pool);
            }
            if let Some(d) = scope.last("proxy_ssl_verify") {
                if d.arg(0) == "on" {
                    self.note(
                        d,
                        NoteKind::NotNeeded,
                        "Ferry always verifies https:// upstreams",
                    );
                } else {
                    self.note(
                        d,
                        NoteKind::NotTranslated,
                        "Ferry always verifies https:// upstreams (trust a private CA with the pool's ca_file)",
                    );
                }
            }
        }
        if let Some(d) = scope.last("proxy_next_upstream") {
            let args: Vec<&str> = d.args.iter().map(String::as_str).collect();
            if args.iter().all(|a| *a == "error" || *a == "timeout") {
                self.note(
                    d,
                    NoteKind::NotNeeded,
                    "Ferry retries idempotent requests on connect errors and timeouts itself (retry_budget)",
                );
            } else if args == ["off"] {
                self.note(
                    d,
                    NoteKind::NotTranslated,
                    "Ferry always retries idempotent requests on another server when the connection fails",
                );
            } else {
                self.note(
                    d,
                    NoteKind::Approximated,
                    "Ferry retries idempotent requests on connect errors and timeouts only (not on 5xx answers \
                     or non-idempotent requests)",
                );
            }
        }
        if !grpc {
            self.request_buffering(scope, r);
        }
        if let Some(d) = scope.last("proxy_intercept_errors") {
            self.use_(d);
            r.intercept_errors = d.arg(0) == "on";
        }
        if let Some(d) = scope.last("limit_req") {
            self.limit_req(d, r);
        }
        self.error_pages(scope, r);
    }

    /// `add_header` and `proxy_hide_header` in force: the route's response headers and HSTS.
    fn response_settings(&mut self, scope: &Scope<'a>, r: &mut RouteConfig) {
        let mut added: HashSet<String> = HashSet::new();
        for d in scope.all("add_header").to_vec() {
            self.add_header(d, r, &mut added);
        }
        if r.upstream.is_some() {
            for d in scope.all("proxy_hide_header").to_vec() {
                self.use_(d);
                r.response_headers.remove.push(d.arg(0).to_owned());
            }
        }
    }

    fn pool_timeout(&mut self, pool: &str, d: &Directive, field: &'static str) {
        let Some(t) = parse_time(d.arg(0)) else {
            self.note(d, NoteKind::NotTranslated, "not a time");
            return;
        };
        if !self.pool_claim(pool, d, field) {
            return;
        }
        if let Some(p) = self.config.gateway.upstreams.get_mut(pool) {
            match field {
                "connect_timeout" => p.connect_timeout = t,
                "header_timeout" => p.header_timeout = t,
                _ => p.idle_timeout = t,
            }
        }
    }

    /// Whether `d` sets `field` of `pool` now: the first directive to name it does; later ones with the same
    /// value are used already, and ones with another value are reported (Ferry's settings are per pool, nginx's
    /// per location).
    fn pool_claim(&mut self, pool: &str, d: &Directive, field: &'static str) -> bool {
        let key = (pool.to_owned(), field);
        if let Some((old, at)) = self.pool_settings.get(&key) {
            if *old != d.arg(0) && at != &d.at {
                let why = format!("Ferry's {field} is per pool: {pool}'s is {old} from {at}");
                self.note(d, NoteKind::Approximated, why);
            } else {
                self.use_(d);
            }
            return false;
        }
        self.pool_settings
            .insert(key, (d.arg(0).to_owned(), d.at.clone()));
        self.use_(d);
        true
    }

    /// `proxy_ssl_trusted_certificate`, `proxy_ssl_certificate` and `_key` in force: the pool's `ca_file`,
    /// `client_cert` and `client_key`, for `https://` pools (nginx uses them for TLS upstreams only too).
    fn pool_tls(&mut self, scope: &Scope<'a>, pool: &str) {
        let https = self
            .config
            .gateway
            .upstreams
            .get(pool)
            .is_some_and(|p| p.servers.iter().all(|s| s.url.starts_with("https://")));
        let ca = scope.last("proxy_ssl_trusted_certificate");
        let cert = scope.last("proxy_ssl_certificate");
        let key = scope.last("proxy_ssl_certificate_key");
        if !https {
            for d in [ca, cert, key].into_iter().flatten() {
                self.note(
                    d,
                    NoteKind::NotNeeded,
                    "the upstream is not https://: there is no TLS to use it in",
                );
            }
            return;
        }
        let set = |t: &mut Self, d: &Directive, field: &'static str| {
            if !t.pool_claim(pool, d, field) {
                return;
            }
            if let Some(p) = t.config.gateway.upstreams.get_mut(pool) {
                let file = Some(PathBuf::from(d.arg(0)));
                match field {
                    "ca_file" => p.ca_file = file,
                    "client_cert" => p.client_cert = file,
                    _ => p.client_key = file,
                }
            }
        };
        if let Some(d) = ca {
            set(self, d, "ca_file");
        }
        match (cert, key) {
            (Some(c), Some(k)) => {
                set(self, c, "client_cert");
                set(self, k, "client_key");
            }
            (Some(d), None) | (None, Some(d)) => self.note(
                d,
                NoteKind::NotTranslated,
                "proxy_ssl_certificate and proxy_ssl_certificate_key go together",
            ),
            (None, None) => {}
        }
    }

    /// `proxy_request_buffering`. nginx's default is `on` and Ferry's is off (streaming), and only a written
    /// `on` turns Ferry's on: most upstreams take a streamed body, and a written `on` is the sign of one that does
    /// not. Ferry buffers like nginx (up to `[gateway] body_buffer_memory` in memory, a larger body whole in a
    /// file in `body_buffer_dir`: see `body_buffer`), under the route's body limit: nginx's for the
    /// route, else Ferry's default (100 MiB), as the importer imposes no nginx default (1 MiB) elsewhere either.
    /// Only where nginx's limit is 0 (none) does the route stream, as buffering needs a limit; the report says so.
    fn request_buffering(&mut self, scope: &Scope<'a>, r: &mut RouteConfig) {
        let Some(d) = scope.last("proxy_request_buffering") else {
            return;
        };
        if d.arg(0) != "on" {
            self.note(
                d,
                NoteKind::NotNeeded,
                "Ferry streams request bodies by default",
            );
            return;
        }
        if r.max_body_size.or(self.config.gateway.max_body_size) == Some(0) {
            self.note(
                d,
                NoteKind::Approximated,
                "nginx buffers bodies of any size here (client_max_body_size 0); Ferry buffers a request body \
                 only under a limit (buffer_request_body needs max_body_size, not 0), so this route streams the \
                 body instead",
            );
            return;
        }
        r.buffer_request_body = true;
        self.use_(d);
    }

    fn set_header(&mut self, d: &Directive, r: &mut RouteConfig) {
        let name = d.arg(0);
        let value = d.arg(1);
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "host" => {
                match value {
                    "$http_host" => {
                        self.note(
                            d,
                            NoteKind::NotNeeded,
                            "Ferry sends the client's Host (nginx's $http_host) by default",
                        );
                        return;
                    }
                    "$proxy_host" => r.upstream_host = Some("upstream".into()),
                    v => {
                        if let Some(bad) = unknown_header_var(v) {
                            let why = format!("Ferry's upstream_host does not know ${bad}");
                            self.note(d, NoteKind::NotTranslated, why);
                            return;
                        }
                        r.upstream_host = Some(v.to_owned());
                    }
                }
                self.use_(d);
                return;
            }
            "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" | "forwarded" => {
                self.note(
                    d,
                    NoteKind::NotNeeded,
                    "Ferry sets X-Forwarded-For, -Proto, -Host and Forwarded itself (kept and extended from \
                     trusted_proxies)",
                );
                return;
            }
            "upgrade" => {
                self.note(
                    d,
                    NoteKind::NotNeeded,
                    "Ferry passes WebSocket upgrades by itself",
                );
                return;
            }
            "connection" => {
                let why = if value.is_empty() {
                    "Ferry keeps upstream connections alive by itself"
                } else {
                    "Ferry passes WebSocket upgrades by itself"
                };
                self.note(d, NoteKind::NotNeeded, why);
                return;
            }
            "x-request-id" if value == "$request_id" => {
                self.note(d, NoteKind::NotNeeded, "Ferry sends X-Request-Id itself");
                return;
            }
            l if FRAMING.contains(&l) => {
                self.note(d, NoteKind::NotTranslated, "Ferry owns the framing headers");
                return;
            }
            _ => {}
        }
        if value.is_empty() {
            self.use_(d);
            r.request_headers.remove.push(name.to_owned());
            return;
        }
        // a client-certificate variable on its own: Ferry's client-certificate headers
        let var = value.strip_prefix('$').unwrap_or("");
        if let Some((v, key, default)) = CERT_VARS.iter().find(|(v, _, _)| *v == var) {
            if lower == *default {
                let why = format!("Ferry sends {name} itself (client_cert_headers = \"nginx\")");
                self.note(d, NoteKind::NotNeeded, why);
            } else {
                r.client_cert_header_names
                    .insert((*key).to_owned(), name.to_owned());
                match *v {
                    "ssl_client_fingerprint" => self.note(
                        d,
                        NoteKind::Approximated,
                        "Ferry's fingerprint is SHA-256 (nginx's is SHA-1)",
                    ),
                    "ssl_client_cert" => self.note(
                        d,
                        NoteKind::Approximated,
                        "Ferry sends the PEM URL-encoded ($ssl_client_escaped_cert), not with tabs",
                    ),
                    _ => self.use_(d),
                }
            }
            return;
        }
        if let Some(bad) = unknown_header_var(value) {
            let why = format!("Ferry's header values do not know ${bad}");
            self.note(d, NoteKind::NotTranslated, why);
            return;
        }
        self.use_(d);
        r.request_headers
            .set
            .insert(name.to_owned(), value.to_owned());
    }

    fn add_header(&mut self, d: &Directive, r: &mut RouteConfig, added: &mut HashSet<String>) {
        let name = d.arg(0);
        let value = d.arg(1);
        let always = d.arg(2) == "always";
        let lower = name.to_ascii_lowercase();
        if lower == "strict-transport-security" {
            if value.to_ascii_lowercase().starts_with("max-age=") {
                r.hsts = Some(format!("max-age={}", value.get(8..).unwrap_or("")));
                self.use_(d);
            } else {
                self.note(d, NoteKind::NotTranslated, "HSTS must start with max-age=");
            }
            return;
        }
        if FRAMING.contains(&lower.as_str()) || lower == "connection" || lower == "upgrade" {
            self.note(d, NoteKind::NotTranslated, "Ferry owns the framing headers");
            return;
        }
        if let Some(bad) = unknown_header_var(value) {
            let why = format!("Ferry's header values do not know ${bad}");
            self.note(d, NoteKind::NotTranslated, why);
            return;
        }
        if !added.insert(lower) {
            self.note(
                d,
                NoteKind::NotTranslated,
                "Ferry adds one value per header name and route",
            );
            return;
        }
        r.response_headers
            .add
            .insert(name.to_owned(), value.to_owned());
        if always {
            self.use_(d);
        } else {
            self.note(
                d,
                NoteKind::Approximated,
                "Ferry adds it to every response, errors included (nginx without `always`: 2xx and 3xx only)",
            );
        }
    }

    fn limit_req(&mut self, d: &Directive, r: &mut RouteConfig) {
        let mut zone = None;
        let mut burst = 0u32;
        let mut nodelay = false;
        for a in &d.args {
            if let Some(z) = a.strip_prefix("zone=") {
                zone = Some(z.to_owned());
            } else if let Some(b) = a.strip_prefix("burst=") {
                burst = b.parse().unwrap_or(0);
            } else if a == "nodelay" {
                nodelay = true;
            }
        }
        let Some(zd) = zone.and_then(|z| self.limit_zones.get(&z).copied()) else {
            self.note(
                d,
                NoteKind::NotTranslated,
                "no limit_req_zone of that name was read",
            );
            return;
        };
        let key = zd.arg(0);
        let by = if key == "$binary_remote_addr" || key == "$remote_addr" {
            "client_ip".to_owned()
        } else if let Some(h) = key.strip_prefix("$http_") {
            format!("header:{}", h.replace('_', "-"))
        } else {
            self.note(
                zd,
                NoteKind::NotTranslated,
                "Ferry's rate limits count per client address or header",
            );
            self.note(
                d,
                NoteKind::NotTranslated,
                "its zone's key is not translated",
            );
            return;
        };
        let rate = zd.args.iter().find_map(|a| a.strip_prefix("rate="));
        let parsed = rate.and_then(|rate| {
            if let Some(n) = rate.strip_suffix("r/s") {
                n.parse::<u32>().ok().map(|n| (n, Duration::from_secs(1)))
            } else if let Some(n) = rate.strip_suffix("r/m") {
                n.parse::<u32>().ok().map(|n| (n, Duration::from_secs(60)))
            } else {
                None
            }
        });
        let Some((requests, per)) = parsed.filter(|(n, _)| *n > 0) else {
            self.note(zd, NoteKind::NotTranslated, "not a rate (N r/s or N r/m)");
            return;
        };
        self.use_(zd);
        r.rate_limit = Some(RateLimitConfig {
            requests,
            per,
            burst: Some(requests + burst),
            by,
        });
        let why = if nodelay {
            "Ferry's bucket holds rate + burst requests and answers 429 beyond (nginx: 503 unless limit_req_status)"
        } else {
            "Ferry's bucket holds rate + burst requests and answers 429 beyond at once (nginx delays the burst; \
             503 unless limit_req_status)"
        };
        self.note(d, NoteKind::Approximated, why);
    }

    fn error_pages(&mut self, scope: &Scope<'a>, r: &mut RouteConfig) {
        for d in scope.all("error_page").to_vec() {
            let Some((uri, codes)) = d.args.split_last() else {
                continue;
            };
            if codes.iter().any(|c| c.starts_with('='))
                || uri.starts_with('@')
                || !uri.starts_with('/')
            {
                self.note(
                    d,
                    NoteKind::NotTranslated,
                    "Ferry's error pages are files sent with the error's own status (no =code, named location \
                     or redirect)",
                );
                continue;
            }
            let Some(root) = self.page_root.get(uri).cloned() else {
                self.note(
                    d,
                    NoteKind::NotTranslated,
                    "no `location = URI { root … }` or server root says which file the page is",
                );
                continue;
            };
            self.use_(d);
            for c in codes {
                if c.parse::<u16>().is_ok() {
                    r.error_pages.insert(c.clone(), root.clone());
                }
            }
        }
    }

    /// A directive of a location other than the action, rewrites and the inherited ones. `unused`: the location
    /// makes no route (static files), so nothing is applied.
    fn location_setting(&mut self, d: &Directive, r: &mut RouteConfig, unused: bool) {
        match d.name.as_str() {
            "access_log" => self.access_log(d),
            "default_type" if !unused => {
                if let Some(resp) = r.respond.as_mut() {
                    resp.content_type = Some(d.arg(0).to_owned());
                    self.use_(d);
                } else {
                    self.note(
                        d,
                        NoteKind::NotNeeded,
                        "Ferry passes the upstream's Content-Type as it is",
                    );
                }
            }
            _ => {}
        }
    }

    /// Listeners and certificates from every server's `listen` and `ssl_*`.
    fn listeners(&mut self) {
        let servers = std::mem::take(&mut self.servers);
        if servers.is_empty() {
            return;
        }
        // every address once; TLS if any server asked for it there
        let mut addrs: Vec<Listen> = Vec::new();
        for s in &servers {
            for l in &s.listens {
                match addrs.iter_mut().find(|a| a.addr == l.addr) {
                    Some(a) => {
                        a.tls |= l.tls;
                        a.default_server |= l.default_server;
                        a.proxy_protocol |= l.proxy_protocol;
                    }
                    None => addrs.push(*l),
                }
            }
        }
        // the default certificate: a TLS default_server's, else the first TLS server's
        let tls_servers: Vec<&ServerFacts> = servers
            .iter()
            .filter(|s| s.listens.iter().any(|l| l.tls))
            .collect();
        let default_server = tls_servers
            .iter()
            .find(|s| s.listens.iter().any(|l| l.tls && l.default_server) && s.cert.is_some())
            .or_else(|| tls_servers.iter().find(|s| s.cert.is_some()))
            .copied();
        let Some((default, (cert, key))) =
            default_server.and_then(|s| s.cert.clone().map(|c| (s, c)))
        else {
            if addrs.iter().any(|a| a.tls) {
                if let Some(s) = tls_servers.first() {
                    self.report.push(Note {
                        at: s.at.clone(),
                        directive: "listen … ssl".into(),
                        kind: NoteKind::NotTranslated,
                        why: "no ssl_certificate was read: the TLS listeners are plain HTTP".into(),
                    });
                }
                addrs.iter_mut().for_each(|a| a.tls = false);
            }
            self.listener_addresses(&servers, &addrs);
            return;
        };
        self.config.server.tls_cert = Some(cert.clone());
        self.config.server.tls_key = Some(key.clone());
        self.config.gateway.tls.ocsp_response = self.stapled(default, None);
        if let Some(at) = self.stapling_fetch.take() {
            self.config.gateway.tls.ocsp_stapling = true;
            self.config.gateway.tls.ocsp_responder = self.stapling_responder.take();
            if self.stapling_off {
                self.report.push(Note {
                    at,
                    directive: "ssl_stapling".into(),
                    kind: NoteKind::Approximated,
                    why: "ocsp_stapling is one switch of the listener: Ferry fetches responses for every \
                          certificate without a response file, those of servers with ssl_stapling off too"
                        .into(),
                });
            }
        }
        for s in &tls_servers {
            let Some((c, k)) = &s.cert else { continue };
            if (c, k) == (&cert, &key) || s.hosts.is_empty() {
                if !std::ptr::eq(*s, default) {
                    self.stapled(s, Some(default));
                }
                continue;
            }
            let ocsp_response = self.stapled(s, None);
            self.config.gateway.tls.certificates.push(SniCertificate {
                hosts: s.hosts.clone(),
                cert: c.clone(),
                key: k.clone(),
                ocsp_response,
                client_auth: None,
                client_ca: None,
            });
        }
        self.client_certificates(default, &tls_servers, (&cert, &key));
        self.listener_addresses(&servers, &addrs);
    }

    /// The OCSP response file stapled to `s`'s certificate (`ssl_stapling on` with `ssl_stapling_file`); with
    /// `shared`, the server whose entry serves `s`'s certificate, so its file is the one stapled.
    fn stapled(&mut self, s: &ServerFacts, shared: Option<&ServerFacts>) -> Option<PathBuf> {
        let (file, at, id) = s.ocsp.clone()?;
        match shared {
            Some(other) if other.ocsp.as_ref().map(|o| &o.0) != Some(&file) => {
                self.report.push(Note {
                    at,
                    directive: "ssl_stapling_file".into(),
                    kind: NoteKind::NotTranslated,
                    why: format!(
                        "Ferry staples one response per certificate entry: this server's certificate is served \
                         by the entry of {}",
                        other.at
                    ),
                });
                None
            }
            _ => {
                self.handled.insert(id);
                Some(file)
            }
        }
    }

    /// Client certificates: the listener's settings are the default server's; every other server whose settings
    /// differ gets them on its own SNI entry (one with the default certificate when it has no certificate of its
    /// own), as nginx chooses them by the SNI name too.
    fn client_certificates(
        &mut self,
        default: &ServerFacts,
        tls_servers: &[&ServerFacts],
        (cert, key): (&PathBuf, &PathBuf),
    ) {
        let listener = self.client_settings(default);
        self.config.gateway.tls.client_auth = listener.0;
        self.config.gateway.tls.client_ca = listener.1.clone();
        for s in tls_servers {
            if std::ptr::eq(*s, default) {
                continue;
            }
            let own = self.client_settings(s);
            if own == listener {
                continue;
            }
            let at = s
                .verify_client
                .as_ref()
                .map(|(_, at)| at.clone())
                .unwrap_or_else(|| s.at.clone());
            if s.hosts.is_empty() {
                let requires = own.0 == ClientAuth::Required
                    && own.1 == listener.1
                    && matches!(listener.0, ClientAuth::Optional | ClientAuth::OptionalNoCa);
                let why = if requires {
                    for i in &s.routes {
                        if let Some(r) = self.config.gateway.routes.get_mut(*i) {
                            r.require_client_cert = true;
                        }
                    }
                    "a server without names cannot have client-certificate settings of its own (Ferry chooses \
                     them by SNI name): the listener asks optionally and this server's routes require a \
                     certificate (require_client_cert), so a client without one gets 403, not a failed handshake"
                } else {
                    "a server without names cannot have client-certificate settings of its own (Ferry chooses \
                     them by SNI name): the listener's apply"
                };
                self.report.push(Note {
                    at,
                    directive: "ssl_verify_client".into(),
                    kind: if requires {
                        NoteKind::Approximated
                    } else {
                        NoteKind::NotTranslated
                    },
                    why: why.into(),
                });
                continue;
            }
            let certificates = &mut self.config.gateway.tls.certificates;
            let i = match certificates.iter().position(|c| c.hosts == s.hosts) {
                Some(i) => i,
                None => {
                    certificates.push(SniCertificate {
                        hosts: s.hosts.clone(),
                        cert: cert.clone(),
                        key: key.clone(),
                        ocsp_response: self.config.gateway.tls.ocsp_response.clone(),
                        client_auth: None,
                        client_ca: None,
                    });
                    certificates.len() - 1
                }
            };
            let entry = &mut certificates[i];
            entry.client_auth = (own.0 != listener.0).then_some(own.0);
            entry.client_ca = own.1.filter(|ca| Some(ca) != listener.1.as_ref());
        }
    }

    /// A TLS server's `ssl_verify_client` and its CA, as Ferry's settings (reported where they differ).
    fn client_settings(&mut self, s: &ServerFacts) -> (ClientAuth, Option<PathBuf>) {
        let Some((verify, at)) = &s.verify_client else {
            return (ClientAuth::Off, None);
        };
        let note = |kind, why: &str| Note {
            at: at.clone(),
            directive: format!("ssl_verify_client {verify}"),
            kind,
            why: why.to_owned(),
        };
        let mode = match verify.as_str() {
            "off" => return (ClientAuth::Off, None),
            "on" => ClientAuth::Required,
            "optional" => ClientAuth::Optional,
            "optional_no_ca" => ClientAuth::OptionalNoCa,
            _ => {
                let n = note(
                    NoteKind::NotTranslated,
                    "not on, optional, optional_no_ca or off",
                );
                self.report.push(n);
                return (ClientAuth::Off, None);
            }
        };
        let Some((ca, _)) = &s.client_ca else {
            let n = note(
                NoteKind::NotTranslated,
                "no ssl_client_certificate says which CA verifies client certificates",
            );
            self.report.push(n);
            return (ClientAuth::Off, None);
        };
        if mode == ClientAuth::Optional {
            let n = note(
                NoteKind::Approximated,
                "a certificate that does not verify gets in as if none were sent (X-SSL-Client-Verify: NONE, \
                 no details passed); nginx answers it 400",
            );
            self.report.push(n);
        }
        (mode, Some(ca.clone()))
    }

    /// `server.listen` and `[[server.listeners]]` from every server's addresses.
    fn listener_addresses(&mut self, servers: &[ServerFacts], addrs: &[Listen]) {
        // plain listeners whose every server only redirects to https
        let redirecting = |addr: SocketAddr| {
            let on: Vec<&ServerFacts> = servers
                .iter()
                .filter(|s| s.listens.iter().any(|l| l.addr == addr))
                .collect();
            !on.is_empty() && on.iter().all(|s| s.https_redirect.is_some())
        };
        let main = addrs
            .iter()
            .find(|a| a.tls)
            .or_else(|| addrs.iter().find(|a| !redirecting(a.addr)))
            .or_else(|| addrs.first())
            .copied();
        let Some(main) = main else { return };
        self.config.server.listen = main.addr;
        self.config.server.proxy_protocol = main.proxy_protocol;
        let quic: Vec<SocketAddr> = self.quic.iter().map(|(a, _)| *a).collect();
        let quic_on = |addr: SocketAddr, tls: bool| tls && quic.contains(&addr);
        self.config.server.http3 = quic_on(main.addr, main.tls);
        for (q, at) in &self.quic {
            if !addrs.iter().any(|a| a.addr == *q && a.tls) {
                self.report.push(Note {
                    at: at.clone(),
                    kind: NoteKind::NotTranslated,
                    directive: format!("listen {q}"),
                    why: "Ferry serves HTTP/3 beside a TLS listener on the same address (`listen … ssl`), and there is none here".into(),
                });
            }
        }
        for a in addrs {
            if a.addr == main.addr {
                continue;
            }
            let redirect = !a.tls && redirecting(a.addr) && addrs.iter().any(|x| x.tls);
            self.config.server.listeners.push(ExtraListener {
                listen: a.addr,
                tls: a.tls,
                redirect_to_https: redirect,
                https_port: 443,
                proxy_protocol: a.proxy_protocol,
                http3: quic_on(a.addr, a.tls),
                ..ExtraListener::default()
            });
        }
        // redirects that did not become a listener of their own: routes on their server's listeners, one per
        // name (the URL is the request's host), when the server has a list of exact names
        let mut made: Vec<Vec<usize>> = vec![Vec::new(); servers.len()];
        for (k, s) in servers.iter().enumerate() {
            let Some((at, status)) = &s.https_redirect else {
                continue;
            };
            let became = s.listens.iter().all(|l| {
                self.config
                    .server
                    .listeners
                    .iter()
                    .any(|x| x.listen == l.addr && x.redirect_to_https)
            });
            if became {
                continue;
            }
            let exact = !s.hosts.is_empty() && s.hosts.iter().all(|h| !h.starts_with("*."));
            if !exact {
                self.report.push(Note {
                    at: at.clone(),
                    directive: "return".into(),
                    kind: NoteKind::NotTranslated,
                    why: "the redirect to https:// shares its listener with servers that do not redirect, and its URL \
                          is the request's host while this server has no list of exact names (Ferry's redirect \
                          routes go to a fixed URL; redirect_to_https is for a listener whose every server redirects)"
                        .into(),
                });
                continue;
            }
            for host in &s.hosts {
                let r = RouteConfig {
                    hosts: vec![host.clone()],
                    redirect: Some(RedirectConfig {
                        to: format!("https://{host}"),
                        status: *status,
                        keep_path: true,
                    }),
                    ..RouteConfig::default()
                };
                made[k].push(self.push_route(r, "/"));
            }
        }
        // servers that do not listen on every listener: their routes are limited to the ones they listen on (as
        // nginx's server blocks exist on their own sockets only), named for it; on a listener that redirects to
        // https, the routes of its servers answer before the redirect
        let redirects: Vec<SocketAddr> = self
            .config
            .server
            .listeners
            .iter()
            .filter(|x| x.redirect_to_https)
            .map(|x| x.listen)
            .collect();
        let content: Vec<SocketAddr> = addrs
            .iter()
            .map(|a| a.addr)
            .filter(|a| !redirects.contains(a))
            .collect();
        for (s, made) in servers.iter().zip(made) {
            let routes: Vec<usize> = s.routes.iter().copied().chain(made).collect();
            if routes.is_empty() {
                continue;
            }
            let on = |a: &SocketAddr| s.listens.iter().any(|l| l.addr == *a);
            let everywhere = content.iter().all(on) && !redirects.iter().any(on);
            if everywhere {
                continue;
            }
            let mut names: Vec<String> = Vec::new();
            for l in &s.listens {
                let name = self.listener_name(l.addr);
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            for i in routes {
                if let Some(r) = self.config.gateway.routes.get_mut(i) {
                    r.listeners = names.clone();
                }
            }
        }
    }

    /// The name routes give the listener on `addr`: `main` for `server.listen`, else its `[[server.listeners]]`
    /// entry's, given now when it has none (`http-80`, `https-8443`; `-v6` for a second one on an IPv6 address,
    /// else a number).
    fn listener_name(&mut self, addr: SocketAddr) -> String {
        let server = &mut self.config.server;
        if addr == server.listen {
            return ferry_config::MAIN_LISTENER.to_owned();
        }
        let taken: Vec<String> = server
            .listeners
            .iter()
            .filter_map(|l| l.name.clone())
            .chain([ferry_config::MAIN_LISTENER.to_owned()])
            .collect();
        let Some(entry) = server.listeners.iter_mut().find(|l| l.listen == addr) else {
            return ferry_config::MAIN_LISTENER.to_owned();
        };
        if let Some(name) = &entry.name {
            return name.clone();
        }
        let scheme = if entry.tls { "https" } else { "http" };
        let base = format!("{scheme}-{}", addr.port());
        let mut name = base.clone();
        if taken.contains(&name) && addr.is_ipv6() {
            name = format!("{base}-v6");
        }
        let mut n = 2;
        while taken.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        entry.name = Some(name.clone());
        name
    }
}

/// The status of a `return CODE URL` (nginx's 302 when it does not read).
fn redirect_status(d: &Directive) -> u16 {
    d.args.first().and_then(|c| c.parse().ok()).unwrap_or(302)
}

/// Whether a `return` sends everything to `https://` on the request's own host with its path.
fn is_https_redirect(d: &Directive, hosts: &[String]) -> bool {
    let [code, url] = d.args.as_slice() else {
        return false;
    };
    if !["301", "302", "307", "308"].contains(&code.as_str()) {
        return false;
    }
    let one_name = hosts.len() == 1;
    url == "https://$host$request_uri"
        || url == "https://$http_host$request_uri"
        || (one_name && url == "https://$server_name$request_uri")
}

/// `if ($ssl_client_verify != SUCCESS) { return 403; }`: the check `require_client_cert` makes.
fn is_client_cert_check(d: &Directive) -> bool {
    let cond: String = d.args.concat().replace(['(', ')', '"', '\'', ' '], "");
    cond == "$ssl_client_verify!=SUCCESS"
        && d.children().len() == 1
        && d.children()[0].name == "return"
        && d.children()[0].args == ["403"]
}

/// The URIs a server's `error_page`s name.
fn collect_error_uris(server: &Directive) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(list: &[Directive], out: &mut Vec<String>) {
        for d in list {
            if d.name == "error_page" {
                if let Some(uri) = d.args.last() {
                    out.push(uri.clone());
                }
            }
            walk(d.children(), out);
        }
    }
    walk(server.children(), &mut out);
    out
}

/// `scheme://host:port` of an upstream server written `host`, `host:port`, `[v6]:port`.
fn server_url(scheme: &str, addr: &str) -> Option<String> {
    if addr.is_empty() || addr.starts_with("unix:") || addr.contains(['/', '$', ' ']) {
        return None;
    }
    let has_port = if addr.starts_with('[') {
        addr.contains("]:")
    } else {
        addr.matches(':').count() == 1
    };
    let default_port = match scheme {
        "https" => 443,
        _ => 80,
    };
    if addr.matches(':').count() > 1 && !addr.starts_with('[') {
        return Some(format!("{scheme}://[{addr}]:{default_port}"));
    }
    Some(if has_port {
        format!("{scheme}://{addr}")
    } else {
        format!("{scheme}://{addr}:{default_port}")
    })
}

/// The `[gateway]` section as it can be checked away from the nginx host: without the files and directories it
/// names (error pages, a pool's CA and client certificate, a static fallback file, the body buffer directory;
/// static directories become `/`, which is one everywhere), since those are on the nginx host and `ferry config
/// check` reads them there.
pub fn without_host_files(gateway: &GatewayConfig) -> GatewayConfig {
    let mut g = gateway.clone();
    for r in &mut g.routes {
        r.error_pages.clear();
        if r.static_dir.is_some() {
            r.static_dir = Some(PathBuf::from("/"));
        }
        // the fallback file is on the nginx host too
        r.static_fallback = None;
    }
    // the system's temporary directory instead
    g.body_buffer_dir = None;
    for p in g.upstreams.values_mut() {
        p.ca_file = None;
        p.client_cert = None;
        p.client_key = None;
    }
    g
}

/// The configuration as TOML, with every key left out that has Ferry's default value, so that what is written
/// is what the nginx configuration said. `source` is named in a comment at the top.
pub fn to_toml(config: &Config, source: &str) -> Result<String, NginxError> {
    let ser = |e: toml::ser::Error| NginxError::Serialize(e.to_string());
    let mut value = toml::Value::try_from(config).map_err(ser)?;
    let defaults = toml::Value::try_from(Config::default()).map_err(ser)?;
    let route_default = toml::Value::try_from(RouteConfig::default()).map_err(ser)?;
    let pool_default = toml::Value::try_from(UpstreamConfig::default()).map_err(ser)?;
    let server_default = toml::Value::try_from(UpstreamServer {
        url: String::new(),
        weight: 1,
        backup: false,
        max_conns: None,
    })
    .map_err(ser)?;
    let listener_default = toml::Value::try_from(ExtraListener::default()).map_err(ser)?;
    let sticky_default = toml::Value::try_from(StickyCookie::default()).map_err(ser)?;
    if let Some(root) = value.as_table_mut() {
        if let Some(gw) = root.get_mut("gateway").and_then(|g| g.as_table_mut()) {
            if let Some(routes) = gw.get_mut("routes").and_then(|r| r.as_array_mut()) {
                for r in routes {
                    prune(r, &route_default);
                }
            }
            if let Some(pools) = gw.get_mut("upstreams").and_then(|u| u.as_table_mut()) {
                for (_, pool) in pools.iter_mut() {
                    prune(pool, &pool_default);
                    if let Some(t) = pool.as_table_mut() {
                        if let Some(servers) = t.get_mut("servers").and_then(|s| s.as_array_mut()) {
                            for s in servers {
                                prune(s, &server_default);
                            }
                        }
                        if let Some(sticky) = t.get_mut("sticky_cookie") {
                            if sticky.is_table() {
                                let name = sticky.get("name").cloned();
                                prune(sticky, &sticky_default);
                                if let (Some(n), Some(t)) = (name, sticky.as_table_mut()) {
                                    t.insert("name".into(), n);
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some(listeners) = root
            .get_mut("server")
            .and_then(|s| s.get_mut("listeners"))
            .and_then(|l| l.as_array_mut())
        {
            for l in listeners {
                let listen = l.get("listen").cloned();
                prune(l, &listener_default);
                if let (Some(a), Some(t)) = (listen, l.as_table_mut()) {
                    t.insert("listen".into(), a);
                }
            }
        }
    }
    prune(&mut value, &defaults);
    if let Some(t) = value.as_table_mut() {
        t.insert(
            "version".into(),
            toml::Value::Integer(i64::from(ferry_config::CONFIG_VERSION)),
        );
    }
    let body = toml::to_string(&value).map_err(ser)?;
    Ok(format!(
        "# Written by `ferry gateway import-nginx {source}`; the report on stderr lists what was left out.\n{body}"
    ))
}

/// Remove from `value` every key whose value equals the one in `default`, tables recursively; tables left
/// empty go too.
fn prune(value: &mut toml::Value, default: &toml::Value) {
    let (Some(t), Some(d)) = (value.as_table_mut(), default.as_table()) else {
        return;
    };
    let keys: Vec<String> = t.keys().cloned().collect();
    for k in keys {
        let Some(dv) = d.get(&k) else { continue };
        let remove = match t.get_mut(&k) {
            Some(v) if v == dv => true,
            Some(v) if v.is_table() && dv.is_table() => {
                prune(v, dv);
                v.as_table().is_some_and(|t| t.is_empty())
            }
            Some(v) => v.as_array().is_some_and(|a| a.is_empty()) && dv.as_array().is_some(),
            None => false,
        };
        if remove {
            t.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_sizes_and_variables() {
        assert_eq!(parse_time("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_time("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_time("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_time("x"), None);
        assert_eq!(parse_size("10m"), Some(10 * 1024 * 1024));
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("1G"), Some(1024 * 1024 * 1024));
        assert_eq!(variables("a $b ${c}d $$e"), ["b", "c"]);
        assert_eq!(unknown_header_var("$remote_addr $http_x_y"), None);
        assert_eq!(
            unknown_header_var("$proxy_add_x_forwarded_for").as_deref(),
            Some("proxy_add_x_forwarded_for")
        );
    }

    #[test]
    fn server_addresses() {
        assert_eq!(
            server_url("http", "app:3000").as_deref(),
            Some("http://app:3000")
        );
        assert_eq!(
            server_url("https", "app").as_deref(),
            Some("https://app:443")
        );
        assert_eq!(
            server_url("h2c", "[::1]:50051").as_deref(),
            Some("h2c://[::1]:50051")
        );
        assert_eq!(server_url("http", "unix:/run/app.sock"), None);
    }
}
