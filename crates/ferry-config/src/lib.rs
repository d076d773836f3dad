//! Ferry's configuration: one TOML file with `[server]`, `[node]`, `[connector]`, `[gateway]` sections, overridden by `FERRY_*`
//! environment variables, overridden in turn by command-line flags.
//!
//! Owns: the typed, strict (`deny_unknown_fields`) config structs with their defaults, the table of `FERRY_*`
//! overrides (the only place they are listed), layering file → env → flags, and validation errors that name the
//! key they are about. Does not own: reading flags (the binary turns them into [`Override`]s) or acting on values.
#![forbid(unsafe_code)]

mod admin;
mod auth;
mod connector;
mod gateway;
mod layer;
mod node;
mod runtime;
mod secret;
mod server;
mod telemetry;

pub use admin::AdminSettings;
pub use auth::{AuthSettings, OidcSettings, RateLimitSettings, RotationSettings};
pub use connector::{ConnectorConfig, HostMode, TargetConfig, TransportMode};
pub use gateway::{
    AccessLog, Balance, ClientAuth, ClientCertHeaders, GatewayConfig, GatewayTls, HealthConfig,
    RateLimitConfig, RedirectConfig, RespondConfig, RouteConfig, SniCertificate, UpstreamConfig,
    UpstreamServer,
};
pub use layer::{load, ConfigError, ConfigSource, Override, ENV_OVERRIDES};
pub use node::{
    check_node_id, BusSettings, ClusterSettings, NodeConfig, Role, Roles, WorkerSettings,
};
pub use runtime::{RuntimeSettings, MAX_WORKER_THREADS};
pub use secret::Secret;
pub use server::{
    HttpSettings, LogFormat, LogSettings, RelaySettings, ServerConfig, TunnelSettings,
};
pub use telemetry::TelemetrySettings;

use serde::Deserialize;

/// The current config format version; a file with another `version` is refused.
pub const CONFIG_VERSION: u32 = 1;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Format version; must be 1.
    pub version: u32,
    pub server: ServerConfig,
    /// This process in its cluster (`[node]`): roles, id, transport.
    pub node: NodeConfig,
    pub connector: ConnectorConfig,
    /// The edge gateway's routes and upstream pools (`[gateway]`); empty by default.
    pub gateway: GatewayConfig,
    pub log: LogSettings,
    /// OpenTelemetry trace export (`[telemetry]`), off by default; for `serve` and `connector` alike.
    pub telemetry: TelemetrySettings,
    /// The async runtime (`[runtime]`), for `serve` and `connector` alike.
    pub runtime: RuntimeSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            version: CONFIG_VERSION,
            server: ServerConfig::default(),
            node: NodeConfig::default(),
            connector: ConnectorConfig::default(),
            gateway: GatewayConfig::default(),
            log: LogSettings::default(),
            telemetry: TelemetrySettings::default(),
            runtime: RuntimeSettings::default(),
        }
    }
}
