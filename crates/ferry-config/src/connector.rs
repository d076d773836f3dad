//! The `[connector]` section: where to dial, how to authenticate, which targets to serve.

use crate::Secret;
use ferry_proto::{TargetName, TenantName};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Settings of `ferry connector`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectorConfig {
    /// Ferry's base URL, `http://…` or `https://…`.
    pub server: Option<String>,
    pub tenant: Option<TenantName>,
    pub secret: Option<Secret>,
    /// Token endpoint; default `{server}/oauth/token`. Any OAuth 2 provider's token endpoint works (client
    /// credentials grant, client secret sent with HTTP Basic).
    pub token_url: Option<String>,
    /// The OAuth 2 client id; default the tenant name.
    pub client_id: Option<String>,
    /// Sent as the `audience` parameter of the token request (Auth0 and others); default: not sent.
    pub audience: Option<String>,
    /// Sent as the `resource` parameter (RFC 8707 resource indicators, an absolute URI); default: not sent.
    pub resource: Option<String>,
    /// The scope requested; default `tunnel`. Empty: no `scope` parameter.
    pub scope: String,
    /// Extra CA certificates (PEM) trusted for the server, https targets and the proxy (an `https://` proxy, or
    /// one that inspects TLS), beside the system's.
    pub ca_file: Option<PathBuf>,
    /// The HTTP proxy to reach the server (and the token endpoint) through, `http://[user:password@]host:port`;
    /// `none`: no proxy, whatever the environment says. Unset: `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` as
    /// curl reads them; `NO_PROXY` applies either way.
    pub proxy: Option<String>,
    /// A file holding the proxy's credentials as one line `user:password` (instead of putting them in the URL).
    pub proxy_auth_file: Option<PathBuf>,
    /// How the tunnel is carried: `auto` (the default: the `ferry-tunnel/1` upgrade, and a WebSocket when that
    /// upgrade is refused or stripped on the way), `upgrade` (never a WebSocket) or `websocket` (always).
    pub transport: TransportMode,
    /// The newest tunnel protocol to offer (docs/protocol.md §9): 2, the default, offers protocol 2 and 1 and
    /// the node picks (a node of an earlier release answers 1); 1 offers protocol 1 (the reversed HTTP/2) only.
    pub tunnel_protocol: u8,
    /// This connector's id; default: a random UUID per start.
    pub connector_id: Option<String>,
    pub targets: Vec<TargetConfig>,
    #[serde(with = "humantime_serde")]
    pub reconnect_min_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Connection attempt to a target; then 504 `target_connect_timeout`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Wait for a target's response head; then 504 `target_timeout`.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// On SIGTERM, how long in-flight requests may take to finish.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Most relayed requests in flight on each of this connector's tunnels.
    pub max_concurrent_streams: u32,
    /// How many tunnels this connector keeps open to the node, each served by a thread of its own (its HTTP/2
    /// connection, its streams and their target connections stay on that thread). 0, the default: one per CPU
    /// the process may use (cgroup quotas included), at most [`MAX_AUTO_TUNNELS`]. The node balances requests
    /// over them like over separate connectors (docs/performance.md, "Tunnels per connector").
    pub tunnels: u32,
    /// After the token endpoint refuses the credentials (`invalid_client`: unknown tenant, wrong, revoked or
    /// expired secret), wait this long before asking again: retrying at once will not help.
    #[serde(with = "humantime_serde")]
    pub auth_failure_delay: Duration,
    /// Exit (code 3) when the token endpoint refuses the credentials, instead of retrying: for supervisors that
    /// should see the failure.
    pub exit_on_auth_failure: bool,
    /// Trust the node's certificate when its SHA-256 fingerprint (of the DER certificate, hex, colons allowed)
    /// is one of these, whatever its issuer, names or CA flag: for self-signed setups. Other certificates are
    /// still verified as usual.
    pub pin_sha256: Vec<String>,
    /// Serve the connector's Prometheus metrics at `http://ADDR/metrics` (docs/metrics.md). Default: off.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        Self {
            server: None,
            tenant: None,
            secret: None,
            token_url: None,
            client_id: None,
            audience: None,
            resource: None,
            scope: "tunnel".to_owned(),
            ca_file: None,
            proxy: None,
            proxy_auth_file: None,
            transport: TransportMode::Auto,
            tunnel_protocol: 2,
            connector_id: None,
            targets: Vec::new(),
            reconnect_min_delay: Duration::from_millis(500),
            reconnect_max_delay: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(15),
            keepalive_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            max_concurrent_streams: 1000,
            tunnels: 0,
            auth_failure_delay: Duration::from_secs(300),
            exit_on_auth_failure: false,
            pin_sha256: Vec::new(),
            metrics_listen: None,
        }
    }
}

/// The most tunnels `connector.tunnels = 0` opens, whatever the number of CPUs.
pub const MAX_AUTO_TUNNELS: u32 = 4;

/// The most tunnels `connector.tunnels` may ask for.
pub const MAX_TUNNELS: u32 = 64;

impl ConnectorConfig {
    /// The number of tunnels to open: `tunnels`, or when 0 one per CPU the process may use, at most
    /// [`MAX_AUTO_TUNNELS`].
    pub fn tunnel_count(&self) -> u32 {
        if self.tunnels > 0 {
            return self.tunnels;
        }
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        u32::try_from(cpus)
            .unwrap_or(MAX_AUTO_TUNNELS)
            .clamp(1, MAX_AUTO_TUNNELS)
    }
}

/// How the connector carries its tunnel (`connector.transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TransportMode {
    /// The `ferry-tunnel/1` upgrade; the WebSocket transport when that upgrade is refused or stripped.
    #[default]
    Auto,
    /// The `ferry-tunnel/1` upgrade only.
    Upgrade,
    /// The WebSocket transport only.
    Websocket,
}

impl TransportMode {
    /// `auto`, `upgrade` or `websocket`, as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Upgrade => "upgrade",
            Self::Websocket => "websocket",
        }
    }
}

/// One target a connector serves.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub name: TargetName,
    /// Base URL of the service: `http://host:port[/base]` or `https://…`.
    pub url: String,
    /// Which `Host` the target sees.
    #[serde(default)]
    pub host: HostMode,
}

/// Which `Host` header a target receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HostMode {
    /// The target's own host and port, from its URL (the default).
    #[default]
    Target,
    /// The host the client sent to Ferry.
    Client,
}

impl TargetConfig {
    /// Parse `NAME=URL` as given to `--target` and in `FERRY_TARGETS`.
    pub fn parse_spec(spec: &str) -> Result<Self, String> {
        let (name, url) = spec
            .split_once('=')
            .ok_or_else(|| format!("target {spec:?} must look like NAME=URL"))?;
        let name = TargetName::new(name.trim()).map_err(|e| format!("target {spec:?}: {e}"))?;
        let url = url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "target {spec:?}: URL must start with http:// or https://"
            ));
        }
        Ok(Self {
            name,
            url: url.to_owned(),
            host: HostMode::Target,
        })
    }
}
