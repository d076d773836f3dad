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
pub use auth::{
    AuthSettings, OidcSettings, OidcSignInSettings, RateLimitSettings, RoleMapping,
    RotationSettings,
};
pub use connector::{
    ConnectorConfig, HostMode, TargetConfig, TransportMode, MAX_AUTO_TUNNELS, MAX_TUNNELS,
};
pub use gateway::{
    AccessLog, Balance, ClientAuth, ClientCertHeaders, GatewayConfig, GatewayTls, HeaderEdits,
    HealthConfig, ProxyProtocolVersion, RateLimitConfig, RedirectConfig, RespondConfig,
    RetryBudget, RouteConfig, SniCertificate, StickyCookie, StickyCookieConfig, UpstreamConfig,
    UpstreamServer, DEFAULT_BODY_BUFFER_MEMORY,
};
pub use layer::{
    load, load_text, unknown_env_warnings, ConfigError, ConfigSource, Override, ENV_OVERRIDES,
    OTHER_ENV,
};
pub use node::{
    check_node_id, BusSettings, ClusterSettings, NodeConfig, Role, Roles, WorkerSettings,
};
pub use runtime::{RuntimeSettings, MAX_WORKER_THREADS};
pub use secret::Secret;
pub use server::{
    check_listener_name, ExtraListener, HttpSettings, LogFormat, LogSettings, RelaySettings,
    ServerConfig, TunnelSettings, MAIN_LISTENER,
};
pub use telemetry::TelemetrySettings;

use serde::{Deserialize, Serialize};

/// The current config format version; a file with another `version` is refused.
pub const CONFIG_VERSION: u32 = 1;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
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

/// The effective configuration as TOML, every secret (`Secret`: connector secret, database and transport URLs, …)
/// masked as `***`: what `ferry config check` prints.
pub fn effective_toml(config: &Config) -> Result<String, ConfigError> {
    toml::to_string(config).map_err(|e| ConfigError::Invalid {
        path: String::new(),
        message: format!("cannot print the configuration: {e}"),
    })
}

#[cfg(test)]
mod effective_tests {
    use super::*;

    #[test]
    fn the_effective_configuration_prints_with_secrets_masked_and_reads_back() {
        let config = load(
            None,
            vec![
                ("FERRY_SECRET".to_owned(), "fsec_hunter2".to_owned()),
                (
                    "FERRY_DATABASE_URL".to_owned(),
                    "postgres://u:pw@h/db".to_owned(),
                ),
                ("FERRY_ROLES".to_owned(), "gateway,management".to_owned()),
                (
                    "FERRY_TRANSPORT".to_owned(),
                    "nats://127.0.0.1:4222".to_owned(),
                ),
            ],
            vec![],
        )
        .expect("valid");
        let text = effective_toml(&config).expect("prints");
        assert!(!text.contains("hunter2") && !text.contains("pw@"), "{text}");
        assert!(text.contains("secret = \"***\""), "{text}");
        assert!(text.contains("roles = \"gateway,management\""), "{text}");
        assert!(text.contains("connect_timeout = \"10s\""), "{text}");
        // What it prints is itself a configuration file (the masked values aside).
        let _: toml::Table = text.parse().expect("TOML");
    }
}
