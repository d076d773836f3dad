//! The `[gateway]` section: the edge gateway's route table and upstream pools, as plain typed data.
//!
//! Owns: the TOML shape of routes, actions and pools, and their defaults. Does not own: checking that names refer
//! to each other, parsing URLs and CIDRs, or matching requests; `ferry-edge` compiles this into a route table and
//! reports every problem with its key path (`gateway.routes[2].upstream: …`), at start and on every reload.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The edge gateway. Empty (no routes): the public listener serves the relay only, as before.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// A separate TOML file holding this section's other keys (`trusted_proxies`, `[[routes]]`,
    /// `[upstreams.NAME]`) at its top level. When set, the routes must be there, not here, and the file is
    /// reloaded on SIGHUP and whenever its content changes (a bad file is refused and the old table stays).
    pub file: Option<PathBuf>,
    /// Addresses or CIDR ranges (`10.0.0.0/8`, `127.0.0.1`) of front proxies whose `X-Forwarded-*` and
    /// `Forwarded` headers are kept and extended; from anyone else they are replaced.
    pub trusted_proxies: Vec<String>,
    /// The routes; the most specific match wins (see docs/gateway.md), file order breaks ties.
    pub routes: Vec<RouteConfig>,
    /// Upstream pools by name.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// TLS of the public listener beyond `server.tls_cert`/`tls_key` (which stay the default certificate).
    /// Only in the main config file, not in a routes file.
    pub tls: GatewayTls,
    /// One line per gateway-routed and relayed request, through tracing (target `ferry::access`, on stderr):
    /// `off` (default), `combined` (nginx's format plus duration, request id, route and upstream) or `json`.
    /// Only in the main config file, not in a routes file.
    pub access_log: AccessLog,
    /// Write the access log to this file instead of the log (created `0640`; reopened on SIGUSR1 and on SIGHUP,
    /// so that logrotate can move it away). Only in the main config file.
    pub access_log_file: Option<PathBuf>,
    /// With `access_log = "custom"`: the line, with variables (`$remote_addr`, `$time_local`, `$request`,
    /// `$status`, `$body_bytes_sent`, `$request_time`, `$upstream_response_time`, `$ssl_client_s_dn`, …; the
    /// list is in docs/gateway.md). Only in the main config file.
    pub access_log_format: Option<String>,
    /// Let `%2F`, `%5C` and `\` through in paths of gateway routes (kept encoded, not splitting segments);
    /// default false: refused with 400 `path_escape` (docs/gateway.md, "Paths").
    pub allow_encoded_slashes: bool,
    /// The largest request body of a route without a `max_body_size` of its own, in bytes; beyond it 413. Unset:
    /// [`DEFAULT_MAX_BODY_SIZE`] (100 MiB); `0`: no limit.
    pub max_body_size: Option<u64>,
    /// Routes with `buffer_request_body`: how much of a request body is held in memory, in bytes; a larger body
    /// goes whole to a temporary file in `body_buffer_dir` (nginx's `client_body_buffer_size`). Unset:
    /// [`DEFAULT_BODY_BUFFER_MEMORY`] (1 MiB).
    pub body_buffer_memory: Option<u64>,
    /// Where request bodies larger than `body_buffer_memory` are buffered (nginx's `client_body_temp_path`):
    /// files without a name (gone when closed, even after a crash), readable by Ferry's user only. Checked at
    /// load. Unset: the system's temporary directory (`$TMPDIR`, else `/tmp`).
    pub body_buffer_dir: Option<PathBuf>,
}

/// The part of a buffered request body held in memory when `[gateway] body_buffer_memory` is unset: 1 MiB.
pub const DEFAULT_BODY_BUFFER_MEMORY: u64 = 1024 * 1024;

/// The request body limit of gateway routes when neither the route nor `[gateway]` sets one: 100 MiB, what
/// Cloudflare takes on its smaller plans (nginx's 1 MiB turns away ordinary uploads). Bodies stream, so the limit
/// protects upstreams, not Ferry's memory.
pub const DEFAULT_MAX_BODY_SIZE: u64 = 100 * 1024 * 1024;

impl GatewayConfig {
    /// The body limit of routes without their own: `None` for no limit.
    pub fn default_max_body_size(&self) -> Option<u64> {
        match self.max_body_size {
            None => Some(DEFAULT_MAX_BODY_SIZE),
            Some(0) => None,
            Some(n) => Some(n),
        }
    }
}

/// The access log's format.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AccessLog {
    #[default]
    Off,
    /// nginx's `combined` format, followed by `rt=` (seconds), `id=`, `route=` and `upstream=`.
    Combined,
    /// One JSON object per request.
    Json,
    /// The line of `access_log_format`, with variables.
    Custom,
}

/// Extra TLS settings of the public listener: certificates by SNI, client certificates, protocol versions and
/// cipher suites, revocation, stapling, reloading. All of it may change by a reload (new connections get the new
/// settings; open ones keep theirs).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayTls {
    /// More certificates, chosen by the SNI name the client sends; other names get the default certificate.
    pub certificates: Vec<SniCertificate>,
    /// Client certificates: `off` (default), `optional` (verified when sent; one that does not verify counts as
    /// none), `optional_no_ca` (verified when sent; one that does not verify is let in and marked
    /// `FAILED:reason` for the upstream, as nginx's `optional_no_ca`) or `required`.
    pub client_auth: ClientAuth,
    /// PEM CA bundle client certificates are verified against (needed unless `client_auth = "off"`).
    pub client_ca: Option<PathBuf>,
    /// PEM certificate revocation lists (nginx's `ssl_crl`): a client certificate they revoke does not verify.
    pub client_crl: Vec<PathBuf>,
    /// The most certificates between a client's certificate and the CA bundle (nginx's `ssl_verify_depth`;
    /// `1`: signed by a CA of the bundle directly). Unset: no limit beyond the verifier's own.
    pub verify_depth: Option<u8>,
    /// TLS versions offered: `TLSv1.2` and `TLSv1.3` (default both). Older versions are not supported.
    pub protocols: Vec<String>,
    /// Cipher suites, by IANA name (`TLS13_AES_128_GCM_SHA256`, `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`) or
    /// OpenSSL name (`ECDHE-RSA-AES128-GCM-SHA256`), in order of preference. Empty (default): rustls's.
    pub cipher_suites: Vec<String>,
    /// A DER OCSP response stapled to the default certificate's handshakes (nginx's `ssl_stapling_file`),
    /// reloaded with the certificate files.
    pub ocsp_response: Option<PathBuf>,
    /// How often certificate, key, CA, CRL and OCSP files are checked for changes; changed files are loaded for
    /// new connections (open ones keep theirs). `0s`: never.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Fetch OCSP responses from each certificate's responder and staple them (nginx's `ssl_stapling on`), for
    /// every certificate without an `ocsp_response` file; its issuer must follow it in the certificate file.
    pub ocsp_stapling: bool,
    /// With `ocsp_stapling`: the `http://` responder asked for every certificate instead of the one its
    /// Authority Information Access names (nginx's `ssl_stapling_responder`).
    pub ocsp_responder: Option<String>,
}

impl Default for GatewayTls {
    fn default() -> Self {
        Self {
            certificates: Vec::new(),
            client_auth: ClientAuth::Off,
            client_ca: None,
            client_crl: Vec::new(),
            verify_depth: None,
            protocols: Vec::new(),
            cipher_suites: Vec::new(),
            ocsp_response: None,
            reload_interval: Duration::from_secs(5),
            ocsp_stapling: false,
            ocsp_responder: None,
        }
    }
}

/// A certificate served for some SNI names, with client-certificate settings of its own if these names need
/// other ones than the listener's.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SniCertificate {
    /// Names (`api.example.com`) or wildcards (`*.example.com`) this certificate is served for.
    pub hosts: Vec<String>,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// A DER OCSP response stapled to this certificate's handshakes.
    #[serde(default)]
    pub ocsp_response: Option<PathBuf>,
    /// Client certificates for these names; unset: the listener's `client_auth`.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// The CA bundle for these names' client certificates; unset: the listener's `client_ca`.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Whether the listener asks for client certificates.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    Off,
    /// Verified when sent; a certificate that does not verify is treated as none (its details are not passed).
    Optional,
    /// Verified when sent; a certificate that does not verify is let in and marked `FAILED:reason`.
    OptionalNoCa,
    /// A verified certificate is needed to connect.
    Required,
}

impl GatewayConfig {
    /// Whether any route is configured (without routes the gateway stays out of the way).
    pub fn is_enabled(&self) -> bool {
        !self.routes.is_empty() || self.file.is_some()
    }
}

/// One route: what it matches and what it does. Exactly one action (`upstream`, `relay`, `redirect`, `respond`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// A name for logs and metrics; default `route-N` (N its index).
    pub name: Option<String>,
    /// Hosts: `example.com` (exact) or `*.example.com` (any subdomain, at any depth, not the apex). Empty: any host.
    pub hosts: Vec<String>,
    /// Path prefix, matched on segment boundaries: `/api` matches `/api` and `/api/x`, not `/apix`; `/` (default)
    /// matches everything.
    pub path: Option<String>,
    /// An exact path instead of a prefix (nginx `location = /login`): only this normalised path matches.
    pub path_exact: Option<String>,
    /// A regular expression on the normalised path instead of a prefix (nginx `location ~`; `(?i)` in front for
    /// `~*`). Its captures are usable in `rewrite`.
    pub path_regex: Option<String>,
    /// With `path_regex`: the path sent upstream, `$1` or `${name}` replaced by the captures (`$$`: a `$`). The
    /// query goes on as it came.
    pub rewrite: Option<String>,
    /// With a prefix `path`: the matched prefix is replaced by this before forwarding (`path = "/api"`,
    /// `replace_prefix = "/v2"`: `/api/x` goes upstream as `/v2/x`), as nginx's `proxy_pass` with a URI does.
    pub replace_prefix: Option<String>,
    /// Headers changed on the request before it goes on (nginx `proxy_set_header`, values with variables).
    pub request_headers: HeaderEdits,
    /// Headers changed on every response of the route, Ferry's own errors included (nginx `add_header … always`,
    /// `proxy_hide_header`).
    pub response_headers: HeaderEdits,
    /// The `Host` sent upstream: `client` (default: as the client sent it, port included, nginx's `$http_host`),
    /// `upstream` (the server's own host and port from its URL, nginx's `$proxy_host`), or a value of its own
    /// (variables allowed: `"$host"` is the client's host without its port).
    pub upstream_host: Option<String>,
    /// Pages of its own for error statuses (nginx's `error_page`): `{ 502 = "/etc/ferry/502.html" }`. They replace
    /// the body of Ferry's own errors (status, `ferry-error` and `x-request-id` stay); with `intercept_errors`, of
    /// the upstream's responses with those statuses too. Read at start and on reload (at most 1 MiB each).
    pub error_pages: BTreeMap<String, PathBuf>,
    /// Also replace upstream responses whose status has an `error_pages` entry (nginx's `proxy_intercept_errors`).
    /// Default false.
    pub intercept_errors: bool,
    /// `Strict-Transport-Security` on responses to clients that came over TLS (`"max-age=31536000;
    /// includeSubDomains"`); never on plain HTTP, where browsers ignore it.
    pub hsts: Option<String>,
    /// Methods (`GET`, `POST`…). Empty: any.
    pub methods: Vec<String>,
    /// Headers that must be present with exactly this value (`"*"`: present with any value). Names are
    /// case-insensitive.
    pub headers: BTreeMap<String, String>,
    /// The listeners whose requests this route may take, by name (`main` is `server.listen`, the others are the
    /// `name`s of `[[server.listeners]]`), as nginx's `server` blocks exist on their own `listen` sockets only.
    /// For a request that came in on another listener the route does not exist (the next matching route wins).
    /// Empty (default): every listener that serves routes.
    pub listeners: Vec<String>,
    /// Action: send to this upstream pool.
    pub upstream: Option<String>,
    /// Action: send through the relay to `tenant/target`.
    pub relay: Option<String>,
    /// Action: answer with a redirect.
    pub redirect: Option<RedirectConfig>,
    /// Action: answer with a fixed response.
    pub respond: Option<RespondConfig>,
    /// Action: serve the files of this directory (GET and HEAD; `index.html` for a directory; a `.br` or `.gz`
    /// file next to one is sent to clients that accept it; ranges and conditional requests). The file's path is
    /// the request's path after `strip_prefix`/`replace_prefix`/`rewrite`, as nginx's `alias` (with
    /// `strip_prefix`) or `root` (without).
    pub static_dir: Option<PathBuf>,
    /// With `static_dir`: a file of that directory (`index.html`) answered with `200` for GET and HEAD requests
    /// whose path names no file, as a single-page app needs (nginx's `try_files $uri $uri/ /index.html`).
    /// Default none (a missing file is `404`).
    pub static_fallback: Option<String>,
    /// Compress responses (gzip or brotli, as the client's `Accept-Encoding` prefers) unless already
    /// compressed, too small (under 32 bytes), an image, gRPC or an event stream (nginx's `gzip on`). Default
    /// false.
    pub compress: bool,
    /// With `compress`: only responses of these content types (`text/html`, `text/*`; nginx's `gzip_types`).
    /// Default empty: every type but the ones above.
    pub compress_types: Vec<String>,
    /// Read the whole request body before sending the request upstream, and send it with `Content-Length`
    /// (nginx's `proxy_request_buffering on`), for upstreams that cannot take chunked bodies. Up to
    /// `[gateway] body_buffer_memory` of it is held in memory, a larger body goes to a temporary file in
    /// `body_buffer_dir`; the route's body limit must be set (not 0). An idempotent request with a buffered body
    /// is retried like one without a body. Upstream routes only. Default false.
    pub buffer_request_body: bool,
    /// Remove the matched path prefix before forwarding (`/api/x` → `/x`). Default false.
    pub strip_prefix: bool,
    /// Largest request body, in bytes; larger gets 413. Unset: `[gateway] max_body_size` (100 MiB by default);
    /// `0`: no limit beyond the relay's own.
    pub max_body_size: Option<u64>,
    /// Requests per client (or per header value) this route accepts; beyond it, 429 with `Retry-After`.
    pub rate_limit: Option<RateLimitConfig>,
    /// Which client-certificate headers go upstream: `nginx` (`X-SSL-Client-*`, default), `envoy`
    /// (`X-Forwarded-Client-Cert`), `both` or `none`.
    pub client_cert_headers: ClientCertHeaders,
    /// Other names for the nginx-style headers, by key: `verify`, `s_dn`, `i_dn`, `serial`, `v_start`, `v_end`,
    /// `fingerprint`, `protocol`, `cert`. Incoming headers with these names are removed too.
    pub client_cert_header_names: BTreeMap<String, String>,
    /// Only clients that presented a certificate the listener verified may use this route; others get
    /// `403 client_certificate_required`. Pair it with `client_auth = "optional"` on the listener, so that other
    /// routes stay open to clients without a certificate (nginx's `ssl_verify_client optional` plus a check per
    /// location). Default false.
    pub require_client_cert: bool,
    /// The `Upgrade` protocols this route passes on (`101` and a joined connection); a request asking for
    /// another is handled as an ordinary request without its `Upgrade`. Default `["websocket"]`; `h2c` is
    /// refused.
    pub upgrades: Option<Vec<String>>,
}

/// Changes to a message's headers, applied in this order: `remove`, then `set` (replaces every value), then `add`
/// (one more value). Values may hold variables (`$remote_addr`, `$host`, `$request_id`, `$ssl_client_s_dn`,
/// `$http_NAME`, … in docs/gateway.md); a value that comes out empty sets or adds nothing.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderEdits {
    pub set: BTreeMap<String, String>,
    pub add: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

impl HeaderEdits {
    /// Whether nothing is changed.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// A token-bucket rate limit of a route.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests allowed per `per`, on average.
    pub requests: u32,
    /// The period of `requests` (default 1s).
    #[serde(default = "default_rate_period", with = "humantime_serde")]
    pub per: Duration,
    /// Requests allowed at once after a quiet time (default: `requests`).
    pub burst: Option<u32>,
    /// Whose requests are counted together: `client_ip` (default) or `header:NAME`.
    #[serde(default = "default_rate_by")]
    pub by: String,
}

fn default_rate_period() -> Duration {
    Duration::from_secs(1)
}

fn default_rate_by() -> String {
    "client_ip".to_owned()
}

/// The client-certificate header formats.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertHeaders {
    #[default]
    Nginx,
    Envoy,
    Both,
    None,
}

/// A redirect answered by the gateway itself.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    /// Where to: an absolute URL (`https://example.com`) or a path.
    pub to: String,
    /// 301, 302, 303, 307 or 308 (default 308).
    #[serde(default = "default_redirect_status")]
    pub status: u16,
    /// Append the request's path and query to `to` (default true), as `return 308 https://$host$request_uri`.
    #[serde(default = "default_true")]
    pub keep_path: bool,
}

fn default_redirect_status() -> u16 {
    308
}

fn default_true() -> bool {
    true
}

/// A fixed response answered by the gateway itself.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RespondConfig {
    #[serde(default = "default_respond_status")]
    pub status: u16,
    #[serde(default)]
    pub body: String,
    /// Default `text/plain; charset=utf-8`.
    pub content_type: Option<String>,
}

fn default_respond_status() -> u16 {
    200
}

/// An upstream pool: static servers, a balancing rule and timeouts.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The servers; all of one scheme: `http://`, `https://` (TLS, verified) or `h2c://` (HTTP/2 without TLS).
    pub servers: Vec<UpstreamServer>,
    /// `round_robin` (default), `weighted`, `least_requests` or `hash`.
    pub balance: Balance,
    /// With `balance = "hash"`: `header:NAME`, `cookie:NAME` or `client_ip`.
    pub hash_on: Option<String>,
    /// PEM CA bundle to verify `https://` servers with, instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate chain presented to `https://` servers that ask for one (mutual TLS; nginx's
    /// `proxy_ssl_certificate`). Needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of `client_cert` (nginx's `proxy_ssl_certificate_key`); keep it mode 0600.
    pub client_key: Option<PathBuf>,
    /// Time to establish a connection (TCP and TLS).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time from sending the request until the response head arrives.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Longest pause between two pieces of the response body (or the client's request body), and longest a
    /// WebSocket may stay silent both ways.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Longest a whole exchange (head and body, or a WebSocket's life) may take; unset: no limit.
    #[serde(with = "humantime_serde")]
    pub total_timeout: Option<Duration>,
    /// Consecutive transport failures (connect errors, broken connections, response-head timeouts) that eject a
    /// server; 0 disables ejection.
    pub max_fails: u32,
    /// How long an ejected server stays out before it is tried again.
    #[serde(with = "humantime_serde")]
    pub fail_timeout: Duration,
    /// Active health checks; unset: none (passive ejection only).
    pub health: Option<HealthConfig>,
    /// Sticky sessions: the cookie that pins a client to its server (set by the gateway): its name, or a table
    /// with its name and attributes (`{ name = "SRV", max_age = "8h", same_site = "lax", path = "/app" }`).
    pub sticky_cookie: Option<StickyCookieConfig>,
    /// Also retry an idempotent request without a body on the next server when the first gave no response head
    /// within `header_timeout` (nginx's `proxy_next_upstream timeout`), within `retry_budget`. Default true.
    pub retry_timeouts: bool,
    /// How many retries may be under way at once, as Envoy's retry budgets: `percent` of the requests in flight
    /// to the pool, but never fewer than `min_retries`. Retries beyond it are not made (the error goes to the
    /// client), so that retries cannot multiply the load on a pool that is already failing.
    pub retry_budget: RetryBudget,
    /// Start each connection to a server with a PROXY protocol header naming the client (`v1` text or `v2`
    /// binary; HAProxy's `send-proxy` / `send-proxy-v2`), for servers that take the client's address from it.
    /// Any scheme: for `https://` the header goes before the TLS handshake, for `h2c://` before HTTP/2's preface.
    /// A connection then carries the requests of one client connection only. Unset: none.
    pub proxy_protocol: Option<ProxyProtocolVersion>,
}

/// See [`UpstreamConfig::proxy_protocol`].
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProxyProtocolVersion {
    V1,
    V2,
}

/// See [`UpstreamConfig::retry_budget`].
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetryBudget {
    pub percent: u32,
    pub min_retries: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            percent: 20,
            min_retries: 3,
        }
    }
}

/// The sticky-session cookie: a name alone, or a name with attributes.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum StickyCookieConfig {
    Name(String),
    Full(StickyCookie),
}

impl StickyCookieConfig {
    /// The cookie with every attribute spelled out.
    pub fn full(&self) -> StickyCookie {
        match self {
            StickyCookieConfig::Name(name) => StickyCookie {
                name: name.clone(),
                ..StickyCookie::default()
            },
            StickyCookieConfig::Full(c) => c.clone(),
        }
    }
}

/// The sticky-session cookie's name and attributes.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StickyCookie {
    pub name: String,
    /// `Path` (default `/`).
    pub path: String,
    /// `Max-Age`; unset: a session cookie, gone when the browser closes.
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// `SameSite`: `lax` (default), `strict` or `none` (`none` needs `Secure`, so it is only sent over TLS).
    pub same_site: String,
    /// `Secure`: `auto` (default: when the client came over TLS), `always` or `never`.
    pub secure: String,
    /// `HttpOnly` (default true).
    pub http_only: bool,
    /// `Domain`; unset: the host only.
    pub domain: Option<String>,
}

impl Default for StickyCookie {
    fn default() -> Self {
        Self {
            name: String::new(),
            path: "/".to_owned(),
            max_age: None,
            same_site: "lax".to_owned(),
            secure: "auto".to_owned(),
            http_only: true,
            domain: None,
        }
    }
}

/// Active health checks of every server of a pool.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// The path requested with `GET`; a status below 400 is healthy.
    pub path: String,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive passed checks that bring an unhealthy server back.
    pub healthy_threshold: u32,
    /// Consecutive failed checks that take a server out.
    pub unhealthy_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            path: "/healthz".to_owned(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            balance: Balance::RoundRobin,
            hash_on: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            connect_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            total_timeout: None,
            max_fails: 3,
            fail_timeout: Duration::from_secs(10),
            health: None,
            sticky_cookie: None,
            retry_timeouts: true,
            retry_budget: RetryBudget::default(),
            proxy_protocol: None,
        }
    }
}

/// One server of a pool.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamServer {
    /// `http://host:port`, `https://host:port` or `h2c://host:port` (no path).
    pub url: String,
    /// Relative weight for `weighted` and `hash` (default 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// A backup server takes requests only while no other server of the pool is live (nginx's `backup`).
    #[serde(default)]
    pub backup: bool,
    /// The most requests in flight to this server at once (nginx's `max_conns`); a full server is passed over,
    /// and when every server is full the request is answered `503 upstream_busy`. Unset: no limit.
    #[serde(default)]
    pub max_conns: Option<u32>,
}

fn default_weight() -> u32 {
    1
}

/// How a pool picks a server.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    /// Smooth weighted round robin (as nginx's).
    Weighted,
    /// The server with the fewest requests in flight.
    LeastRequests,
    /// Rendezvous hashing of `hash_on`, so that a key keeps its server while the pool is stable.
    Hash,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_section() {
        let text = r#"
            trusted_proxies = ["10.0.0.0/8"]
            access_log = "json"
            [[routes]]
            hosts = ["api.example.com", "*.example.com"]
            path = "/api"
            methods = ["GET"]
            headers = { "x-env" = "prod" }
            upstream = "api"
            strip_prefix = true
            max_body_size = 1024
            [[routes]]
            redirect = { to = "https://example.com", status = 301 }
            listeners = ["main", "internal"]
            [upstreams.api]
            servers = [{ url = "http://127.0.0.1:3000" }, { url = "http://127.0.0.1:3001", weight = 3 }]
            balance = "hash"
            hash_on = "cookie:sid"
            connect_timeout = "2s"
        "#;
        let g: GatewayConfig = toml::from_str(text).expect("parse");
        assert!(g.is_enabled());
        assert_eq!(g.routes[0].hosts.len(), 2);
        assert!(g.routes[0].listeners.is_empty(), "every listener");
        assert_eq!(g.routes[1].listeners, vec!["main", "internal"]);
        assert_eq!(g.routes[1].redirect.as_ref().map(|r| r.status), Some(301));
        assert_eq!(
            g.routes[1].redirect.as_ref().map(|r| r.keep_path),
            Some(true)
        );
        let api = &g.upstreams["api"];
        assert_eq!(api.balance, Balance::Hash);
        assert_eq!(api.servers[1].weight, 3);
        assert_eq!(api.servers[0].weight, 1);
        assert_eq!(api.connect_timeout, Duration::from_secs(2));
        assert_eq!(api.max_fails, 3);
        assert_eq!(g.access_log, AccessLog::Json);
        assert_eq!(GatewayConfig::default().access_log, AccessLog::Off);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<GatewayConfig>("[[routes]]\nupstreams = \"x\"\n")
            .expect_err("unknown key");
        assert!(err.to_string().contains("upstreams"), "{err}");
    }
}
