//! The `[server]` section: listeners, data directory, relay and tunnel settings.

use crate::{AuthSettings, Secret};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Settings of `ferry serve`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Public listener (relay, token endpoint, tunnel, health). Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// More public listeners beside `listen` (`[[server.listeners]]`): plain HTTP on port 80 that redirects to
    /// HTTPS, an IPv6 address beside an IPv4 one. Each serves what `listen` serves, unless it redirects.
    pub listeners: Vec<ExtraListener>,
    /// `listen` sits behind an L4 load balancer that starts every connection with a PROXY protocol header (v1 or
    /// v2: HAProxy, AWS NLB, GCP): the client's address is taken from it, and a connection without one is
    /// closed. Default false.
    pub proxy_protocol: bool,
    /// Where the embedded store keeps its files. Default `./ferry-data`.
    pub data_dir: PathBuf,
    /// The store's database: `sqlite://PATH`, `sqlite::memory:`, `postgres://…` or `postgresql://…`. Default
    /// (unset): the SQLite file `ferry.db` in `data_dir`. A `Secret`, as the URL may carry a password.
    pub database_url: Option<Secret>,
    /// PEM certificate chain; with `tls_key`, the public listener speaks TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// How long shutdown waits for in-flight requests before it cuts them.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// At shutdown, how long the node keeps serving after `/readyz` turned 503, so that load balancers stop
    /// sending to it before it stops accepting. Default 0 (set it to the load balancer's check interval).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub http: HttpSettings,
    pub relay: RelaySettings,
    pub tunnel: TunnelSettings,
    pub auth: AuthSettings,
    /// The management API's listener (`[server.admin]`).
    pub admin: crate::AdminSettings,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            listeners: Vec::new(),
            proxy_protocol: false,
            data_dir: PathBuf::from("ferry-data"),
            database_url: None,
            tls_cert: None,
            tls_key: None,
            drain_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::ZERO,
            http: HttpSettings::default(),
            relay: RelaySettings::default(),
            tunnel: TunnelSettings::default(),
            auth: AuthSettings::default(),
            admin: crate::AdminSettings::default(),
        }
    }
}

/// One more public listener (`[[server.listeners]]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExtraListener {
    /// Its address: `0.0.0.0:80`, `[::]:443`.
    pub listen: SocketAddr,
    /// Speak TLS with the certificates of `tls_cert`/`tls_key` and `[gateway.tls]`. Default false.
    #[serde(default)]
    pub tls: bool,
    /// Answer every request with `308 Permanent Redirect` to the same host and path over `https://` (nginx's
    /// `return 308 https://$host$request_uri`). Default false.
    #[serde(default)]
    pub redirect_to_https: bool,
    /// The port of that `https://` URL (left out when 443). Default 443.
    #[serde(default = "default_https_port")]
    pub https_port: u16,
    /// Connections start with a PROXY protocol header naming the client (as `server.proxy_protocol`). Default
    /// false.
    #[serde(default)]
    pub proxy_protocol: bool,
}

fn default_https_port() -> u16 {
    443
}

/// Limits of the client-facing HTTP server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Largest request head (request line and headers) accepted; larger gets 431.
    pub max_header_size: usize,
    /// How long a client may take to send its request head: the first from the connection's start (after TLS),
    /// a later one from its first byte. Then the connection is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// An HTTP/1.1 connection waiting for its next request, or an HTTP/2 connection without open streams, is
    /// closed after this (nginx's `keepalive_timeout`).
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Open client connections of the public listener at most; the newest beyond gets 503 and is closed. 0:
    /// half the open-file limit the process got at start.
    pub max_connections: usize,
    /// Open client connections from one address at most (0: no cap); behind a load balancer set 0.
    pub max_connections_per_ip: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_header_size: 64 * 1024,
            header_read_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(60),
            max_connections: 0,
            max_connections_per_ip: 1024,
        }
    }
}

/// How the relay treats requests (the same for every tenant in this release).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// With no connector of the tenant online, how long a request waits for one before 503.
    #[serde(with = "humantime_serde")]
    pub connector_wait: Duration,
    /// The longest a request may wait for its response to start, from arrival; then 504 `request_expired`.
    #[serde(with = "humantime_serde")]
    pub request_expiration: Duration,
    /// Per-tenant cap on requests in flight; beyond it, 429 `tenant_busy` with `Retry-After: 1`. 0: no cap.
    pub max_concurrent_requests: usize,
    /// Largest request body accepted, in bytes; larger gets 413. 0: no limit.
    pub max_body_size: u64,
    /// Keep a log of every relayed request in the store (readable through the management API).
    pub request_log: bool,
    /// How long request log entries are kept.
    #[serde(with = "humantime_serde")]
    pub request_log_retention: Duration,
    /// How long closed connections and per-minute statistics are kept.
    #[serde(with = "humantime_serde")]
    pub history_retention: Duration,
    /// Let `%2F` and `%5C` through in relayed paths (default: refused with 400 `path_escape`).
    pub allow_encoded_slashes: bool,
    /// The `Upgrade` protocols relayed (as an extended CONNECT); a request asking for another is relayed as an
    /// ordinary request without its `Upgrade`. Default `["websocket"]`; `h2c` is never upgraded to.
    pub upgrades: Vec<String>,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            connector_wait: Duration::from_secs(5),
            request_expiration: Duration::from_secs(120),
            max_concurrent_requests: 1000,
            max_body_size: 0,
            request_log: false,
            request_log_retention: Duration::from_secs(7 * 24 * 3600),
            history_retention: Duration::from_secs(30 * 24 * 3600),
            allow_encoded_slashes: false,
            upgrades: vec!["websocket".to_owned()],
        }
    }
}

/// The server side of connector tunnels.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TunnelSettings {
    /// Interval of HTTP/2 PINGs on each tunnel.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// A tunnel whose PING is not answered within this is closed.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
}

impl Default for TunnelSettings {
    fn default() -> Self {
        Self {
            keepalive_interval: Duration::from_secs(15),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter (`info`, `ferry_relay=debug,info`); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Plain,
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}
