//! Upstream pools: their servers, the balancing rules, passive ejection with recovery, and the pooled hyper
//! client each pool connects with.
//!
//! Where to connect (a [`Server`] and the choice among them) is kept apart from connecting and pooling: a plain
//! `http://` server has its own HTTP/1.1 client ([`ferry_http::client::OriginClient`], the common case and the
//! cheaper one per request); the servers of an `https://` or `h2c://` pool share hyper-util's client, built once
//! per pool with its TLS settings, for ALPN and HTTP/2, except with `proxy_protocol`: then each server has its own
//! [`ferry_http::client::ProxiedClient`] (the pool's TLS settings), whose connections start with the header and
//! stay with one client connection.

use crate::EdgeError;
use ferry_config::{Balance, HealthConfig, ProxyProtocolVersion, UpstreamConfig};
use ferry_http::client::{
    ClientOptions, OriginClient, ProxiedClient, ProxyProtocol, ResponseBody, SendError,
};
use ferry_http::Body;
use http::uri::{Authority, Scheme};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Server indexes a pick chooses among: on the stack for pools of up to 16 servers, as a pick runs on every
/// request.
type Candidates = smallvec::SmallVec<[usize; 16]>;

/// The client `https://` and `h2c://` pools connect with: TLS or plain TCP (by the URI's scheme), HTTP/1.1 or
/// HTTP/2.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// How a server is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 over TCP.
    Http,
    /// TLS with ALPN (HTTP/2 or HTTP/1.1), the server's certificate verified.
    Https,
    /// HTTP/2 with prior knowledge over TCP (gRPC servers without TLS).
    H2c,
}

/// One server of a pool, with its live counters.
#[derive(Debug)]
pub struct Server {
    /// `http` or `https` (h2c uses `http` on the wire).
    pub scheme: Scheme,
    pub authority: Authority,
    pub weight: u32,
    /// Takes requests only while no other server is live.
    pub backup: bool,
    /// The most requests in flight at once; `usize::MAX` without a limit.
    max_conns: usize,
    /// The sticky-session cookie value that names this server: a hash of its address, stable across reloads.
    pub token: String,
    inflight: AtomicUsize,
    fails: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
    /// The active health checks' verdict (true without checks).
    healthy: AtomicBool,
    /// Consecutive passed / failed active checks.
    checks_passed: AtomicU32,
    checks_failed: AtomicU32,
    /// Requests sent (each try counts) and transport failures, for metrics.
    pub(crate) requests: AtomicU64,
    pub(crate) failures: AtomicU64,
    client: ServerClient,
}

/// What a server's requests go through.
#[derive(Debug)]
enum ServerClient {
    /// An `http://` server: its own connections.
    Origin(Arc<OriginClient>),
    /// `https://` and `h2c://`: the client the pool's servers share (TLS settings, ALPN, HTTP/2).
    Shared(Arc<UpstreamClient>),
    /// `https://` and `h2c://` with `proxy_protocol`: its own connections, each with a PROXY header, kept per
    /// client connection (the pool's TLS settings, ALPN, HTTP/2).
    Proxied(Arc<ProxiedClient>),
}

impl Server {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Neither ejected nor failing its health checks.
    pub fn is_live(&self, now: Instant) -> bool {
        self.is_healthy() && !self.is_ejected(now)
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Whether it is below its `max_conns`.
    pub fn has_room(&self) -> bool {
        self.inflight() < self.max_conns
    }

    /// The most requests in flight at once, when limited (`max_conns`).
    pub fn max_conns(&self) -> Option<usize> {
        (self.max_conns != usize::MAX).then_some(self.max_conns)
    }

    /// Requests sent to it (each try counts).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Transport failures (connect, broken connection, head timeout).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Whether passive ejection currently keeps this server out.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until
            .lock()
            .map(|g| g.is_some_and(|t| now < t))
            .unwrap_or(false)
    }
}

/// When the sticky cookie carries `Secure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecureWhen {
    /// When the client came over TLS.
    Tls,
    Always,
    Never,
}

/// Why no server was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoServer {
    /// Every server was tried already.
    AllTried,
    /// Every server not yet tried has its `max_conns` requests in flight.
    AllFull,
}

/// A retry counted against the pool's retry budget until dropped.
#[derive(Debug)]
pub struct RetryGuard(Arc<AtomicUsize>);

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a request in flight on a server until dropped (when the response body ends).
#[derive(Debug)]
pub struct InflightGuard(Arc<Server>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The attributes of the sticky cookie after its value, and when it is `Secure`; an error names the field
/// (`.same_site`) and what is wrong.
fn sticky_cookie_attributes(
    c: &ferry_config::StickyCookie,
) -> Result<(String, SecureWhen), (String, String)> {
    let token = |v: &str| {
        !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    if !token(&c.name) {
        return Err((String::new(), format!("{:?} is not a cookie name", c.name)));
    }
    let mut attributes = String::new();
    if !c.path.starts_with('/') || c.path.contains([';', ' ', ',']) {
        return Err((
            ".path".into(),
            format!("{:?} must be a path starting with /", c.path),
        ));
    }
    attributes.push_str("; Path=");
    attributes.push_str(&c.path);
    if let Some(domain) = &c.domain {
        if !token(domain) {
            return Err((".domain".into(), format!("{domain:?} is not a domain")));
        }
        attributes.push_str("; Domain=");
        attributes.push_str(domain);
    }
    if let Some(age) = c.max_age {
        attributes.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    let same_site = match c.same_site.to_ascii_lowercase().as_str() {
        "lax" => "Lax",
        "strict" => "Strict",
        "none" => "None",
        other => {
            return Err((
                ".same_site".into(),
                format!("{other:?}: lax, strict or none"),
            ))
        }
    };
    attributes.push_str("; SameSite=");
    attributes.push_str(same_site);
    if c.http_only {
        attributes.push_str("; HttpOnly");
    }
    let secure = match c.secure.to_ascii_lowercase().as_str() {
        "auto" => SecureWhen::Tls,
        "always" => SecureWhen::Always,
        "never" => SecureWhen::Never,
        other => {
            return Err((
                ".secure".into(),
                format!("{other:?}: auto, always or never"),
            ))
        }
    };
    if same_site == "None" && secure != SecureWhen::Always {
        return Err((
            ".same_site".into(),
            "none needs secure = \"always\" (browsers drop SameSite=None cookies without Secure)"
                .into(),
        ));
    }
    Ok((attributes, secure))
}

/// What the hash balancer hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    Header(http::HeaderName),
    Cookie(String),
    ClientIp,
}

/// Timeouts of one pool.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub header: Duration,
    pub idle: Duration,
    pub total: Option<Duration>,
}

/// A pool of servers and the client that reaches them.
pub struct Pool {
    pub name: String,
    pub protocol: Protocol,
    servers: Vec<Arc<Server>>,
    balance: Balance,
    pub hash_on: Option<HashOn>,
    pub timeouts: Timeouts,
    max_fails: u32,
    fail_timeout: Duration,
    pub health: Option<HealthConfig>,
    /// The sticky-session cookie's name.
    pub sticky_cookie: Option<String>,
    /// Its attributes after the value (`; Path=/; SameSite=Lax; HttpOnly`), and when it is `Secure`.
    sticky_attributes: String,
    sticky_secure: SecureWhen,
    /// Retry an idempotent bodiless request after a response-head timeout.
    pub retry_timeouts: bool,
    budget: ferry_config::RetryBudget,
    /// Retries under way, against the budget.
    retries: Arc<AtomicUsize>,
    rr: AtomicUsize,
    /// Current weights of smooth weighted round robin.
    swrr: Mutex<Vec<i64>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Build a pool from its config; errors name `gateway.upstreams.NAME…`.
    pub fn new(name: &str, c: &UpstreamConfig) -> Result<Self, EdgeError> {
        let key = format!("gateway.upstreams.{name}");
        let invalid = |field: &str, message: String| EdgeError::Config {
            path: format!("{key}.{field}"),
            message,
        };
        if c.servers.is_empty() {
            return Err(invalid(
                "servers",
                "a pool needs at least one server".into(),
            ));
        }
        let mut protocol = None;
        let mut shared: Option<Arc<UpstreamClient>> = None;
        // with proxy_protocol, the TLS settings each server's client starts from (https://), read once per pool
        let mut proxied_tls: Option<rustls::ClientConfig> = None;
        let proxy_protocol = c.proxy_protocol.map(|v| match v {
            ProxyProtocolVersion::V1 => ProxyProtocol::V1,
            ProxyProtocolVersion::V2 => ProxyProtocol::V2,
        });
        let mut servers = Vec::new();
        for (i, s) in c.servers.iter().enumerate() {
            let bad = |m: String| invalid(&format!("servers[{i}].url"), m);
            let uri: http::Uri = s
                .url
                .parse()
                .map_err(|e| bad(format!("{:?}: {e}", s.url)))?;
            let p = match uri.scheme_str() {
                Some("http") => Protocol::Http,
                Some("https") => Protocol::Https,
                Some("h2c") => Protocol::H2c,
                _ => {
                    return Err(bad(format!(
                        "{:?}: the scheme must be http, https or h2c",
                        s.url
                    )))
                }
            };
            if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
                return Err(bad(format!("{:?}: a server URL has no path", s.url)));
            }
            let authority = uri
                .authority()
                .cloned()
                .ok_or_else(|| bad(format!("{:?}: no host", s.url)))?;
            if *protocol.get_or_insert(p) != p {
                return Err(bad("all servers of a pool use the same scheme".into()));
            }
            if s.weight == 0 {
                return Err(invalid(
                    &format!("servers[{i}].weight"),
                    "must be at least 1".into(),
                ));
            }
            let token = server_token(&s.url);
            if servers.iter().any(|o: &Arc<Server>| o.token == token) {
                return Err(bad(format!("{:?} is listed twice", s.url)));
            }
            let options = ClientOptions {
                proxy_protocol,
                ..ClientOptions::keep_alive(c.connect_timeout)
            };
            // a `ca_file` or `client_cert` on a pool that is not https is refused below, with its own message
            let tls_settings = || {
                let ca_file = c.ca_file.as_deref().filter(|_| p == Protocol::Https);
                let identity = match (&c.client_cert, &c.client_key) {
                    (Some(cert), Some(key)) if p == Protocol::Https => Some(
                        load_client_identity(cert, key).map_err(|m| invalid("client_cert", m))?,
                    ),
                    _ => None,
                };
                tls_config(p, ca_file, identity).map_err(|m| invalid("ca_file", m))
            };
            let client = match (p, &shared) {
                (Protocol::Http, _) => {
                    ServerClient::Origin(OriginClient::for_authority(&authority, options))
                }
                (Protocol::H2c, _) if proxy_protocol.is_some() => {
                    ServerClient::Proxied(ProxiedClient::h2c(&authority, options))
                }
                (Protocol::Https, _) if proxy_protocol.is_some() => {
                    let tls = match &proxied_tls {
                        Some(tls) => tls.clone(),
                        None => proxied_tls.insert(tls_settings()?).clone(),
                    };
                    ServerClient::Proxied(
                        ProxiedClient::tls(&authority, options, tls)
                            .map_err(|e| bad(format!("{:?}: {e}", s.url)))?,
                    )
                }
                (_, Some(client)) => ServerClient::Shared(client.clone()),
                (_, None) => {
                    let client = Arc::new(build_client(p, tls_settings()?, c.connect_timeout));
                    shared = Some(client.clone());
                    ServerClient::Shared(client)
                }
            };
            if s.max_conns == Some(0) {
                return Err(invalid(
                    &format!("servers[{i}].max_conns"),
                    "must be at least 1 (leave it out for no limit)".into(),
                ));
            }
            servers.push(Arc::new(Server {
                scheme: if p == Protocol::Https {
                    Scheme::HTTPS
                } else {
                    Scheme::HTTP
                },
                authority,
                weight: s.weight,
                backup: s.backup,
                max_conns: s
                    .max_conns
                    .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX)),
                token,
                inflight: AtomicUsize::new(0),
                fails: AtomicU32::new(0),
                ejected_until: Mutex::new(None),
                healthy: AtomicBool::new(true),
                checks_passed: AtomicU32::new(0),
                checks_failed: AtomicU32::new(0),
                requests: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                client,
            }));
        }
        let protocol = protocol.unwrap_or(Protocol::Http);
        let hash_on = match (&c.balance, c.hash_on.as_deref()) {
            (Balance::Hash, None) => {
                return Err(invalid(
                    "hash_on",
                    "balance = \"hash\" needs hash_on".into(),
                ))
            }
            (Balance::Hash, Some(spec)) => {
                Some(parse_hash_on(spec).map_err(|m| invalid("hash_on", m))?)
            }
            (_, Some(_)) => {
                return Err(invalid(
                    "hash_on",
                    "only used with balance = \"hash\"".into(),
                ))
            }
            (_, None) => None,
        };
        if c.ca_file.is_some() && protocol != Protocol::Https {
            return Err(invalid("ca_file", "only used with https:// servers".into()));
        }
        match (&c.client_cert, &c.client_key) {
            (None, None) => {}
            (Some(_), Some(_)) if protocol == Protocol::Https => {}
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "client_cert",
                    "only used with https:// servers".into(),
                ))
            }
            _ => {
                return Err(invalid(
                    "client_cert",
                    "client_cert and client_key go together".into(),
                ))
            }
        }
        let timeouts = Timeouts {
            connect: c.connect_timeout,
            header: c.header_timeout,
            idle: c.idle_timeout,
            total: c.total_timeout,
        };
        if let Some(h) = &c.health {
            if !h.path.starts_with('/') {
                return Err(invalid(
                    "health.path",
                    format!("{:?} must start with /", h.path),
                ));
            }
            if h.interval.is_zero() || h.timeout.is_zero() {
                return Err(invalid(
                    "health",
                    "interval and timeout must be above zero".into(),
                ));
            }
            if h.healthy_threshold == 0 || h.unhealthy_threshold == 0 {
                return Err(invalid("health", "thresholds must be at least 1".into()));
            }
        }
        if servers.iter().all(|s| s.backup) {
            return Err(invalid(
                "servers",
                "every server is a backup: at least one must not be".into(),
            ));
        }
        let sticky = c.sticky_cookie.as_ref().map(|s| s.full());
        let (sticky_attributes, sticky_secure) = match &sticky {
            Some(cookie) => sticky_cookie_attributes(cookie)
                .map_err(|(field, m)| invalid(&format!("sticky_cookie{field}"), m))?,
            None => (String::new(), SecureWhen::Tls),
        };
        if c.retry_budget.percent > 100 {
            return Err(invalid("retry_budget.percent", "at most 100".into()));
        }
        let n = servers.len();
        Ok(Self {
            name: name.to_owned(),
            protocol,
            servers,
            balance: c.balance,
            hash_on,
            timeouts,
            max_fails: c.max_fails,
            fail_timeout: c.fail_timeout,
            health: c.health.clone(),
            sticky_cookie: sticky.map(|c| c.name),
            sticky_attributes,
            sticky_secure,
            retry_timeouts: c.retry_timeouts,
            budget: c.retry_budget.clone(),
            retries: Arc::default(),
            rr: AtomicUsize::new(0),
            swrr: Mutex::new(vec![0; n]),
        })
    }

    pub fn servers(&self) -> &[Arc<Server>] {
        &self.servers
    }

    /// The server a sticky-session cookie value names, if it is in the pool, live and not full.
    pub fn sticky_server(&self, token: &str) -> Option<usize> {
        let now = Instant::now();
        self.servers
            .iter()
            .position(|s| s.token == token)
            .filter(|&i| self.servers[i].is_live(now) && self.servers[i].has_room())
    }

    /// The `Set-Cookie` value that pins a client (over TLS or not) to the server of `token`.
    pub fn sticky_set_cookie(&self, token: &str, tls: bool) -> Option<http::HeaderValue> {
        let name = self.sticky_cookie.as_deref()?;
        let secure = match self.sticky_secure {
            SecureWhen::Always => true,
            SecureWhen::Never => false,
            SecureWhen::Tls => tls,
        };
        let secure = if secure { "; Secure" } else { "" };
        http::HeaderValue::from_str(&format!("{name}={token}{}{secure}", self.sticky_attributes))
            .ok()
    }

    /// A retry, if the pool's retry budget has room: `percent` of the requests in flight to the pool, at least
    /// `min_retries`, may be retries at once.
    pub fn try_retry(&self) -> Option<RetryGuard> {
        let inflight: usize = self.servers.iter().map(|s| s.inflight()).sum();
        let percent = usize::try_from(self.budget.percent).unwrap_or(100);
        let min = usize::try_from(self.budget.min_retries).unwrap_or(usize::MAX);
        let allowed = (inflight * percent / 100).max(min);
        let before = self.retries.fetch_add(1, Ordering::Relaxed);
        let guard = RetryGuard(self.retries.clone());
        (before < allowed).then_some(guard)
    }

    /// Choose a server, skipping `exclude` (indexes already tried). Ejected and unhealthy servers are skipped
    /// while any other is available; when every candidate is out, they are used anyway (better a try than a
    /// certain 502).
    /// `hash_key`: the value to hash with `balance = "hash"` (none: round robin).
    pub fn pick(&self, hash_key: Option<&[u8]>, exclude: &[usize]) -> Result<usize, NoServer> {
        let now = Instant::now();
        let untried: Candidates = (0..self.servers.len())
            .filter(|i| !exclude.contains(i))
            .collect();
        if untried.is_empty() {
            return Err(NoServer::AllTried);
        }
        // a server at its max_conns takes nothing, not even as a last resort
        let open: Candidates = untried
            .iter()
            .copied()
            .filter(|&i| self.servers[i].has_room())
            .collect();
        if open.is_empty() {
            return Err(NoServer::AllFull);
        }
        // live primaries; else live backups; else (nothing live) primaries anyway, else backups anyway
        let subset = |backup: bool, live: bool| -> Candidates {
            open.iter()
                .copied()
                .filter(|&i| {
                    let s = &self.servers[i];
                    s.backup == backup && (!live || s.is_live(now))
                })
                .collect()
        };
        let set = [(false, true), (true, true), (false, false), (true, false)]
            .into_iter()
            .map(|(backup, live)| subset(backup, live))
            .find(|set| !set.is_empty())
            .unwrap_or(open);
        Ok(match self.balance {
            Balance::RoundRobin => self.round_robin(&set),
            Balance::Weighted => self.weighted(&set),
            Balance::LeastRequests => {
                // start at a rotating offset so that ties spread instead of piling on the first server
                let start = self.rr.fetch_add(1, Ordering::Relaxed);
                (0..set.len())
                    .map(|k| set[(start + k) % set.len()])
                    .min_by_key(|&i| self.servers[i].inflight())
                    .unwrap_or(set[0])
            }
            Balance::Hash => match hash_key {
                Some(key) => self.rendezvous(&set, key),
                None => self.round_robin(&set),
            },
        })
    }

    fn round_robin(&self, set: &[usize]) -> usize {
        set[self.rr.fetch_add(1, Ordering::Relaxed) % set.len()]
    }

    /// Smooth weighted round robin: each pick adds every weight to its current value, takes the largest and
    /// subtracts the total from it.
    fn weighted(&self, set: &[usize]) -> usize {
        let Ok(mut current) = self.swrr.lock() else {
            return self.round_robin(set);
        };
        let total: i64 = set.iter().map(|&i| i64::from(self.servers[i].weight)).sum();
        let mut best = set[0];
        for &i in set {
            current[i] += i64::from(self.servers[i].weight);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        best
    }

    /// Weighted rendezvous hashing: a key keeps its server while that server is in the set; removing a server
    /// moves only the keys it had.
    fn rendezvous(&self, set: &[usize], key: &[u8]) -> usize {
        let score = |i: usize| {
            let s = &self.servers[i];
            let h = rendezvous_hash(key, s.authority.as_str());
            // map the hash to (0, 1] and weigh it: -w / ln(u), larger wins
            let u = ((h >> 11) as f64 + 1.0) / ((1u64 << 53) as f64 + 1.0);
            -f64::from(s.weight) / u.ln()
        };
        set.iter()
            .copied()
            .max_by(|&a, &b| score(a).total_cmp(&score(b)))
            .unwrap_or(set[0])
    }

    /// Send `req`, of the client connection `client` (`None`: a request of Ferry's own, a health check), to
    /// server `i`. Its URI is in origin form (`/path?query`) and its headers include `Host`.
    pub async fn send(
        &self,
        i: usize,
        mut req: http::Request<Body>,
        client: Option<&ferry_http::ClientInfo>,
    ) -> Result<http::Response<ResponseBody>, SendError> {
        let server = &self.servers[i];
        let shared = match &server.client {
            ServerClient::Origin(origin) => {
                let connection = client.map(|c| (c.remote_addr, c.local_addr));
                return Ok(origin
                    .send_for(req, connection)
                    .await?
                    .map(ResponseBody::Origin));
            }
            ServerClient::Proxied(proxied) => {
                let connection = client.map(|c| (c.remote_addr, c.local_addr));
                // boxed: its future would otherwise make every request's future larger
                return Ok(Box::pin(proxied.send_for(req, connection)).await?);
            }
            ServerClient::Shared(client) => client,
        };
        let mut uri = http::Uri::builder()
            .scheme(server.scheme.clone())
            .authority(server.authority.clone());
        if let Some(pq) = req.uri().path_and_query() {
            uri = uri.path_and_query(pq.clone());
        }
        *req.uri_mut() = uri.build()?;
        Ok(shared.request(req).await?.map(ResponseBody::Shared))
    }

    /// Count a request in flight on server `i`.
    pub fn start(&self, i: usize) -> InflightGuard {
        let s = self.servers[i].clone();
        s.inflight.fetch_add(1, Ordering::Relaxed);
        s.requests.fetch_add(1, Ordering::Relaxed);
        InflightGuard(s)
    }

    /// A transport failure (connect error, timeout) on server `i`: after `max_fails` in a row it is ejected for
    /// `fail_timeout`; a server back from ejection that fails again is ejected again at once.
    pub fn record_failure(&self, i: usize) {
        let s = &self.servers[i];
        s.failures.fetch_add(1, Ordering::Relaxed);
        if self.max_fails == 0 {
            return;
        }
        let fails = s.fails.fetch_add(1, Ordering::Relaxed) + 1;
        if fails >= self.max_fails {
            if let Ok(mut until) = s.ejected_until.lock() {
                let now = Instant::now();
                if until.is_none_or(|t| t <= now) {
                    *until = Some(now + self.fail_timeout);
                    tracing::warn!(pool = self.name, server = %s.authority, fails, timeout = ?self.fail_timeout, "upstream server ejected");
                }
            }
        }
    }

    /// A response from server `i`: its failure count starts again.
    pub fn record_success(&self, i: usize) {
        let s = &self.servers[i];
        if s.fails.swap(0, Ordering::Relaxed) > 0 {
            if let Ok(mut until) = s.ejected_until.lock() {
                if until.take().is_some() {
                    tracing::info!(pool = self.name, server = %s.authority, "upstream server back in rotation");
                }
            }
        }
    }
}

impl Pool {
    /// Start the active health checks of this pool, if configured. The task holds only a weak reference: it ends
    /// when the pool is dropped (replaced by a reload).
    pub fn spawn_health_checks(self: &Arc<Self>) {
        let Some(h) = self.health.clone() else {
            return;
        };
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(h.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = weak.upgrade() else {
                    return;
                };
                let checks = pool
                    .servers
                    .iter()
                    .enumerate()
                    .map(|(i, s)| pool.check(i, s.clone(), &h))
                    .collect::<Vec<_>>();
                futures_util::future::join_all(checks).await;
            }
        });
    }

    async fn check(&self, index: usize, server: Arc<Server>, h: &HealthConfig) {
        let target = http::uri::PathAndQuery::try_from(h.path.as_str());
        let host = http::HeaderValue::try_from(server.authority.as_str());
        let passed = match (target, host) {
            (Ok(target), Ok(host)) => {
                let mut req = http::Request::new(ferry_http::empty());
                *req.uri_mut() = target.into();
                req.headers_mut().insert(http::header::HOST, host);
                let exchange = async {
                    let resp = self.send(index, req, None).await.ok()?;
                    let ok = resp.status().as_u16() < 400;
                    http_body_util::BodyExt::collect(resp.into_body())
                        .await
                        .ok()?;
                    Some(ok)
                };
                matches!(
                    tokio::time::timeout(h.timeout, exchange).await,
                    Ok(Some(true))
                )
            }
            _ => false,
        };
        if passed {
            server.checks_failed.store(0, Ordering::Relaxed);
            let n = server.checks_passed.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= h.healthy_threshold && !server.healthy.swap(true, Ordering::Relaxed) {
                tracing::info!(pool = self.name, server = %server.authority, "upstream server healthy again");
            }
        } else {
            server.checks_passed.store(0, Ordering::Relaxed);
            let n = server.checks_failed.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= h.unhealthy_threshold && server.healthy.swap(false, Ordering::Relaxed) {
                tracing::warn!(pool = self.name, server = %server.authority, path = h.path, "upstream server failed its health checks");
            }
        }
    }
}

fn parse_hash_on(spec: &str) -> Result<HashOn, String> {
    let spec = spec.trim();
    if spec == "client_ip" {
        return Ok(HashOn::ClientIp);
    }
    if let Some(h) = spec.strip_prefix("header:") {
        return http::HeaderName::from_bytes(h.trim().as_bytes())
            .map(HashOn::Header)
            .map_err(|_| format!("{h:?} is not a header name"));
    }
    if let Some(c) = spec.strip_prefix("cookie:") {
        let c = c.trim();
        if !c.is_empty() {
            return Ok(HashOn::Cookie(c.to_owned()));
        }
    }
    Err(format!(
        "{spec:?}: expected header:NAME, cookie:NAME or client_ip"
    ))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The TLS settings of a pool: its `ca_file` or the system's roots (`https://`), its client certificate; no ALPN
/// (the client sets it).
fn tls_config(
    protocol: Protocol,
    ca_file: Option<&std::path::Path>,
    identity: Option<ClientIdentity>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{}: no certificate found", path.display()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None if protocol == Protocol::Https => {
            let native = rustls_native_certs::load_native_certs();
            for c in native.certs {
                let _ = roots.add(c);
            }
        }
        None => {}
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match identity {
        Some((chain, key)) => tls
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("client_cert: {e}")),
        None => Ok(tls.with_no_client_auth()),
    }
}

fn build_client(
    protocol: Protocol,
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .http2_initial_stream_window_size(1 << 20)
        .http2_initial_connection_window_size(8 << 20);
    if protocol == Protocol::H2c {
        builder.http2_only(true);
    }
    builder.build(connector)
}

/// A client certificate chain and its key, for mutual TLS with upstreams.
type ClientIdentity = (
    Vec<CertificateDer<'static>>,
    rustls_pki_types::PrivateKeyDer<'static>,
);

/// Read `client_cert` and `client_key` (PEM); read when the pool is built, at start and by a reload that changes
/// the pool.
fn load_client_identity(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<ClientIdentity, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate found", cert.display()));
    }
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    Ok((chain, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_config::UpstreamServer;

    fn pool(balance: Balance, weights: &[u32]) -> Pool {
        let servers = weights
            .iter()
            .enumerate()
            .map(|(i, w)| UpstreamServer {
                url: format!("http://127.0.0.1:{}", 10000 + i),
                weight: *w,
                backup: false,
                max_conns: None,
            })
            .collect();
        let hash_on = (balance == Balance::Hash).then(|| "client_ip".to_owned());
        Pool::new(
            "p",
            &UpstreamConfig {
                servers,
                balance,
                hash_on,
                max_fails: 2,
                fail_timeout: Duration::from_millis(200),
                ..UpstreamConfig::default()
            },
        )
        .expect("pool")
    }

    fn counts(p: &Pool, n: usize, key: impl Fn(usize) -> Option<Vec<u8>>) -> Vec<usize> {
        let mut c = vec![0; p.servers().len()];
        for k in 0..n {
            let i = p.pick(key(k).as_deref(), &[]).expect("pick");
            c[i] += 1;
        }
        c
    }

    #[tokio::test]
    async fn round_robin_and_weighted_spread() {
        let p = pool(Balance::RoundRobin, &[1, 1, 1]);
        assert_eq!(counts(&p, 30, |_| None), vec![10, 10, 10]);
        let p = pool(Balance::Weighted, &[5, 1, 1]);
        assert_eq!(counts(&p, 70, |_| None), vec![50, 10, 10]);
        // smooth: the heavy server does not get five in a row
        let seq: Vec<usize> = (0..7).map(|_| p.pick(None, &[]).expect("pick")).collect();
        assert_ne!(&seq[..5], &[0, 0, 0, 0, 0]);
    }

    #[tokio::test]
    async fn least_requests_avoids_busy_servers() {
        let p = pool(Balance::LeastRequests, &[1, 1, 1]);
        let _busy = (p.start(0), p.start(0), p.start(1));
        for _ in 0..5 {
            assert_eq!(p.pick(None, &[]), Ok(2));
        }
        let _g = p.start(2);
        let _g2 = p.start(2);
        assert_eq!(p.pick(None, &[]), Ok(1));
    }

    #[tokio::test]
    async fn hash_is_sticky_and_moves_only_the_lost_keys() {
        let p = pool(Balance::Hash, &[1, 1, 1, 1]);
        let first: Vec<usize> = (0..200)
            .map(|k| p.pick(Some(format!("k{k}").as_bytes()), &[]).expect("pick"))
            .collect();
        let again: Vec<usize> = (0..200)
            .map(|k| p.pick(Some(format!("k{k}").as_bytes()), &[]).expect("pick"))
            .collect();
        assert_eq!(first, again);
        let c = counts(&p, 400, |k| Some(format!("k{k}").into_bytes()));
        assert!(c.iter().all(|&n| n > 50), "spread {c:?}");
        // without server 1, only the keys it had move
        for (k, &was) in first.iter().enumerate() {
            let now = p
                .pick(Some(format!("k{k}").as_bytes()), &[1])
                .expect("pick");
            if was != 1 {
                assert_eq!(now, was);
            }
        }
    }

    #[tokio::test]
    async fn ejection_after_consecutive_failures_and_recovery() {
        let p = pool(Balance::RoundRobin, &[1, 1]);
        p.record_failure(0);
        assert!(!p.servers()[0].is_ejected(Instant::now()));
        p.record_failure(0);
        assert!(p.servers()[0].is_ejected(Instant::now()));
        for _ in 0..4 {
            assert_eq!(p.pick(None, &[]), Ok(1));
        }
        // every candidate ejected: used anyway
        assert_eq!(p.pick(None, &[1]), Ok(0));
        // after fail_timeout it is tried again; a success clears it
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(!p.servers()[0].is_ejected(Instant::now()));
        p.record_success(0);
        p.record_failure(0);
        assert!(!p.servers()[0].is_ejected(Instant::now()));
    }

    #[test]
    fn bad_pools_name_their_key() {
        let err = |c: UpstreamConfig| Pool::new("api", &c).expect_err("must fail").to_string();
        let e = err(UpstreamConfig::default());
        assert!(e.starts_with("gateway.upstreams.api.servers"), "{e}");
        let mixed = UpstreamConfig {
            servers: vec![
                UpstreamServer {
                    url: "http://a:1".into(),
                    weight: 1,
                    backup: false,
                    max_conns: None,
                },
                UpstreamServer {
                    url: "h2c://b:1".into(),
                    weight: 1,
                    backup: false,
                    max_conns: None,
                },
            ],
            ..UpstreamConfig::default()
        };
        assert!(err(mixed).contains("servers[1].url"));
        let hash = UpstreamConfig {
            servers: vec![UpstreamServer {
                url: "http://a:1".into(),
                weight: 1,
                backup: false,
                max_conns: None,
            }],
            balance: Balance::Hash,
            hash_on: Some("body".into()),
            ..UpstreamConfig::default()
        };
        assert!(err(hash).contains("hash_on"));
    }

    /// `proxy_protocol` on pools of every scheme: `https://` and `h2c://` servers get a client of their own
    /// (connections kept per client connection), `http://` ones their HTTP/1.1 client as before; pools without it
    /// keep the shared client.
    #[test]
    fn proxy_protocol_pools_of_every_scheme_load() {
        let pool = |url: &str, proxy_protocol| {
            Pool::new(
                "p",
                &UpstreamConfig {
                    servers: vec![
                        UpstreamServer {
                            url: url.replace("{n}", "1"),
                            weight: 1,
                            backup: false,
                            max_conns: None,
                        },
                        UpstreamServer {
                            url: url.replace("{n}", "2"),
                            weight: 1,
                            backup: false,
                            max_conns: None,
                        },
                    ],
                    proxy_protocol,
                    ..UpstreamConfig::default()
                },
            )
            .expect("pool")
        };
        let kinds = |p: &Pool| {
            p.servers()
                .iter()
                .map(|s| match &s.client {
                    ServerClient::Origin(_) => "origin",
                    ServerClient::Shared(_) => "shared",
                    ServerClient::Proxied(_) => "proxied",
                })
                .collect::<Vec<_>>()
        };
        let v2 = Some(ProxyProtocolVersion::V2);
        assert_eq!(kinds(&pool("http://a{n}:80", v2)), ["origin", "origin"]);
        assert_eq!(kinds(&pool("https://a{n}:443", v2)), ["proxied", "proxied"]);
        assert_eq!(kinds(&pool("h2c://a{n}:80", v2)), ["proxied", "proxied"]);
        assert_eq!(kinds(&pool("https://a{n}:443", None)), ["shared", "shared"]);
        assert_eq!(kinds(&pool("h2c://[::1]:8{n}", None)), ["shared", "shared"]);
        assert_eq!(
            kinds(&pool("https://[::1]:8{n}", v2)),
            ["proxied", "proxied"]
        );
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = http::HeaderMap::new();
        h.append("cookie", "a=1; sid=xyz".parse().expect("v"));
        h.append("cookie", "b=2".parse().expect("v"));
        assert_eq!(cookie_value(&h, "sid"), Some("xyz"));
        assert_eq!(cookie_value(&h, "b"), Some("2"));
        assert_eq!(cookie_value(&h, "c"), None);
    }

    #[test]
    fn backups_wait_for_the_primaries_and_full_servers_are_passed_over() {
        let server = |port: u16, backup: bool, max_conns: Option<u32>| UpstreamServer {
            url: format!("http://127.0.0.1:{port}"),
            weight: 1,
            backup,
            max_conns,
        };
        let p = Pool::new(
            "p",
            &UpstreamConfig {
                servers: vec![
                    server(1, false, Some(1)),
                    server(2, false, None),
                    server(3, true, None),
                ],
                max_fails: 1,
                fail_timeout: Duration::from_secs(60),
                ..UpstreamConfig::default()
            },
        )
        .expect("pool");
        // the backup takes nothing while a primary is live
        for _ in 0..6 {
            assert_ne!(p.pick(None, &[]), Ok(2));
        }
        // server 0 full: passed over
        let _busy = p.start(0);
        for _ in 0..4 {
            assert_eq!(p.pick(None, &[]), Ok(1));
        }
        // both primaries out of the running: the backup
        p.record_failure(1);
        assert_eq!(p.pick(None, &[]), Ok(2));
        assert_eq!(p.pick(None, &[2]), Ok(1), "nothing live: a primary anyway");
        assert_eq!(p.pick(None, &[1, 2]), Err(NoServer::AllFull));
        assert_eq!(p.pick(None, &[0, 1, 2]), Err(NoServer::AllTried));
        // every server a backup: refused
        let e = Pool::new(
            "q",
            &UpstreamConfig {
                servers: vec![server(1, true, None)],
                ..UpstreamConfig::default()
            },
        )
        .expect_err("all backups")
        .to_string();
        assert!(e.starts_with("gateway.upstreams.q.servers"), "{e}");
    }

    #[test]
    fn the_retry_budget_caps_retries_under_way() {
        let p = pool(Balance::RoundRobin, &[1, 1]);
        // nothing in flight: min_retries (3) at once
        let held: Vec<_> = (0..3).filter_map(|_| p.try_retry()).collect();
        assert_eq!(held.len(), 3);
        assert!(p.try_retry().is_none());
        drop(held);
        assert!(p.try_retry().is_some());
        // 20 in flight: 20% is 4
        let _inflight: Vec<_> = (0..20).map(|k| p.start(k % 2)).collect();
        let held: Vec<_> = (0..10).filter_map(|_| p.try_retry()).collect();
        assert_eq!(held.len(), 4);
    }

    #[test]
    fn sticky_cookie_attributes() {
        let cookie = |c: ferry_config::StickyCookieConfig| {
            Pool::new(
                "s",
                &UpstreamConfig {
                    servers: vec![UpstreamServer {
                        url: "http://a:1".into(),
                        weight: 1,
                        backup: false,
                        max_conns: None,
                    }],
                    sticky_cookie: Some(c),
                    ..UpstreamConfig::default()
                },
            )
        };
        let plain = cookie(ferry_config::StickyCookieConfig::Name("SRV".into())).expect("pool");
        let v = |p: &Pool, tls| {
            p.sticky_set_cookie("t1", tls)
                .map(|v| v.to_str().unwrap_or("").to_owned())
        };
        assert_eq!(
            v(&plain, false).as_deref(),
            Some("SRV=t1; Path=/; SameSite=Lax; HttpOnly")
        );
        assert_eq!(
            v(&plain, true).as_deref(),
            Some("SRV=t1; Path=/; SameSite=Lax; HttpOnly; Secure")
        );
        let full = cookie(ferry_config::StickyCookieConfig::Full(
            ferry_config::StickyCookie {
                name: "SRV".into(),
                path: "/app".into(),
                max_age: Some(Duration::from_secs(8 * 3600)),
                same_site: "none".into(),
                secure: "always".into(),
                http_only: false,
                domain: Some("example.com".into()),
            },
        ))
        .expect("pool");
        assert_eq!(
            v(&full, false).as_deref(),
            Some("SRV=t1; Path=/app; Domain=example.com; Max-Age=28800; SameSite=None; Secure")
        );
        let e = cookie(ferry_config::StickyCookieConfig::Full(
            ferry_config::StickyCookie {
                name: "SRV".into(),
                same_site: "none".into(),
                ..ferry_config::StickyCookie::default()
            },
        ))
        .expect_err("none without secure")
        .to_string();
        assert!(
            e.starts_with("gateway.upstreams.s.sticky_cookie.same_site"),
            "{e}"
        );
    }
}

/// A server's id in sticky cookies: XXH3-64 (seed 0) of its configured URL, as 16 lowercase hex digits. The hash
/// has a fixed, published definition, so every node of a cluster, of any build or version, gives a server the same
/// id (a cookie set by one gateway node is honoured by all, and across a rolling upgrade).
pub fn server_token(url: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(url.as_bytes()))
}

/// The rendezvous score's hash of a key and a server: XXH3-64 (seed 0) of the key's bytes, one 0 byte, and the
/// server's authority (`host:port`). Fixed by definition for the same reason as [`server_token`]: every gateway
/// node sends a key to the same server.
pub fn rendezvous_hash(key: &[u8], authority: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(key);
    h.update(&[0]);
    h.update(authority.as_bytes());
    h.digest()
}

#[cfg(test)]
mod fixed_hash_tests {
    use super::*;

    /// These values are part of the wire contract between gateway nodes (cookies, hashing): they must never
    /// change between builds or releases.
    #[test]
    fn the_hashes_are_fixed() {
        assert_eq!(server_token("http://10.0.0.1:8080"), "46ca96179cb8ad28");
        assert_eq!(
            rendezvous_hash(b"user-7", "10.0.0.1:8080"),
            16_997_854_747_139_112_007
        );
        assert_eq!(server_token(""), "2d06800538d394c2");
        assert_eq!(rendezvous_hash(b"", ""), xxhash_rust::xxh3::xxh3_64(&[0]));
    }
}
