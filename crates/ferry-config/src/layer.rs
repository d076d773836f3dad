//! Layering: defaults ← file ← `FERRY_*` environment ← command-line flags, then strict validation.

use crate::{Config, TargetConfig, CONFIG_VERSION};
use std::path::Path;
use toml::Value;

/// How an environment value is turned into a config value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKind {
    /// Taken as a string (durations like `15s` are strings too).
    Text,
    /// A whole number.
    Integer,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Boolean,
    /// Comma-separated `NAME=URL` pairs, for `connector.targets`.
    Targets,
    /// Comma-separated strings, for a list of text values.
    List,
    /// A number with a fraction (`0.25`).
    Float,
}

/// Every `FERRY_*` override: variable, key path, kind. This table is the one place they are listed.
pub const ENV_OVERRIDES: &[(&str, &str, EnvKind)] = &[
    ("FERRY_LISTEN", "server.listen", EnvKind::Text),
    (
        "FERRY_PROXY_PROTOCOL",
        "server.proxy_protocol",
        EnvKind::Boolean,
    ),
    ("FERRY_HTTP3", "server.http3", EnvKind::Boolean),
    ("FERRY_ADMIN_LISTEN", "server.admin.listen", EnvKind::Text),
    (
        "FERRY_ADMIN_ENABLED",
        "server.admin.enabled",
        EnvKind::Boolean,
    ),
    (
        "FERRY_METRICS_MAX_TENANTS",
        "server.admin.metrics_max_tenants",
        EnvKind::Integer,
    ),
    ("FERRY_DATA_DIR", "server.data_dir", EnvKind::Text),
    ("FERRY_DATABASE_URL", "server.database_url", EnvKind::Text),
    ("FERRY_NODE_ID", "node.id", EnvKind::Text),
    ("FERRY_ROLES", "node.roles", EnvKind::Text),
    ("FERRY_TRANSPORT", "node.transport", EnvKind::Text),
    ("FERRY_NODE_ADDRESS", "node.address", EnvKind::Text),
    ("FERRY_CLUSTER_NAME", "node.cluster.name", EnvKind::Text),
    (
        "FERRY_HEARTBEAT_INTERVAL",
        "node.cluster.heartbeat_interval",
        EnvKind::Text,
    ),
    (
        "FERRY_NODE_EXPIRY",
        "node.cluster.node_expiry",
        EnvKind::Text,
    ),
    (
        "FERRY_CLAIM_TIMEOUT",
        "node.cluster.claim_timeout",
        EnvKind::Text,
    ),
    (
        "FERRY_CLUSTER_LINKS",
        "node.cluster.links",
        EnvKind::Boolean,
    ),
    (
        "FERRY_STORE_POLL_INTERVAL",
        "node.cluster.store_poll_interval",
        EnvKind::Text,
    ),
    (
        "FERRY_WORKER_LEASE_TTL",
        "node.worker.lease_ttl",
        EnvKind::Text,
    ),
    ("FERRY_TLS_CERT", "server.tls_cert", EnvKind::Text),
    ("FERRY_TLS_KEY", "server.tls_key", EnvKind::Text),
    ("FERRY_DRAIN_TIMEOUT", "server.drain_timeout", EnvKind::Text),
    (
        "FERRY_SHUTDOWN_GRACE",
        "server.shutdown_grace",
        EnvKind::Text,
    ),
    (
        "FERRY_MAX_HEADER_SIZE",
        "server.http.max_header_size",
        EnvKind::Integer,
    ),
    (
        "FERRY_HEADER_READ_TIMEOUT",
        "server.http.header_read_timeout",
        EnvKind::Text,
    ),
    (
        "FERRY_KEEPALIVE_TIMEOUT",
        "server.http.keepalive_timeout",
        EnvKind::Text,
    ),
    (
        "FERRY_MAX_CONNECTIONS",
        "server.http.max_connections",
        EnvKind::Integer,
    ),
    (
        "FERRY_MAX_CONNECTIONS_PER_IP",
        "server.http.max_connections_per_ip",
        EnvKind::Integer,
    ),
    (
        "FERRY_CONNECTOR_WAIT",
        "server.relay.connector_wait",
        EnvKind::Text,
    ),
    (
        "FERRY_REQUEST_EXPIRATION",
        "server.relay.request_expiration",
        EnvKind::Text,
    ),
    (
        "FERRY_MAX_CONCURRENT_REQUESTS",
        "server.relay.max_concurrent_requests",
        EnvKind::Integer,
    ),
    (
        "FERRY_MAX_BODY_SIZE",
        "server.relay.max_body_size",
        EnvKind::Integer,
    ),
    (
        "FERRY_REQUEST_LOG",
        "server.relay.request_log",
        EnvKind::Boolean,
    ),
    (
        "FERRY_ALLOW_ENCODED_SLASHES",
        "server.relay.allow_encoded_slashes",
        EnvKind::Boolean,
    ),
    ("FERRY_TOKEN_TTL", "server.auth.token_ttl", EnvKind::Text),
    ("FERRY_TOKEN_ISSUER", "server.auth.issuer", EnvKind::Text),
    (
        "FERRY_ACCEPTED_ISSUERS",
        "server.auth.accepted_issuers",
        EnvKind::List,
    ),
    (
        "FERRY_AUTH_BUILTIN",
        "server.auth.builtin",
        EnvKind::Boolean,
    ),
    ("FERRY_PUBLIC_URL", "server.auth.public_url", EnvKind::Text),
    (
        "FERRY_KEY_ROTATION",
        "server.auth.rotation.every",
        EnvKind::Text,
    ),
    (
        "FERRY_OIDC_ISSUER",
        "server.auth.oidc.issuer",
        EnvKind::Text,
    ),
    (
        "FERRY_OIDC_AUDIENCE",
        "server.auth.oidc.audience",
        EnvKind::Text,
    ),
    (
        "FERRY_OIDC_TENANT_CLAIM",
        "server.auth.oidc.tenant_claim",
        EnvKind::Text,
    ),
    ("FERRY_OIDC_SCOPE", "server.auth.oidc.scope", EnvKind::Text),
    (
        "FERRY_OIDC_ADMIN_ROLE",
        "server.auth.oidc.admin_role",
        EnvKind::Text,
    ),
    (
        "FERRY_OIDC_ROLES_CLAIM",
        "server.auth.oidc.roles_claim",
        EnvKind::Text,
    ),
    (
        "FERRY_OIDC_TENANTS_CLAIM",
        "server.auth.oidc.tenants_claim",
        EnvKind::Text,
    ),
    (
        "FERRY_OIDC_CLIENT_ID",
        "server.auth.oidc.sign_in.client_id",
        EnvKind::Text,
    ),
    (
        "FERRY_OIDC_CLIENT_SECRET",
        "server.auth.oidc.sign_in.client_secret",
        EnvKind::Text,
    ),
    (
        "FERRY_OIDC_REDIRECT_URL",
        "server.auth.oidc.sign_in.redirect_url",
        EnvKind::Text,
    ),
    (
        "FERRY_OIDC_SCOPES",
        "server.auth.oidc.sign_in.scopes",
        EnvKind::List,
    ),
    (
        "FERRY_OIDC_PROVIDER_NAME",
        "server.auth.oidc.sign_in.provider_name",
        EnvKind::Text,
    ),
    ("FERRY_SERVER", "connector.server", EnvKind::Text),
    ("FERRY_TENANT", "connector.tenant", EnvKind::Text),
    ("FERRY_SECRET", "connector.secret", EnvKind::Text),
    ("FERRY_TOKEN_URL", "connector.token_url", EnvKind::Text),
    ("FERRY_CLIENT_ID", "connector.client_id", EnvKind::Text),
    ("FERRY_TOKEN_AUDIENCE", "connector.audience", EnvKind::Text),
    ("FERRY_TOKEN_SCOPE", "connector.scope", EnvKind::Text),
    ("FERRY_TOKEN_RESOURCE", "connector.resource", EnvKind::Text),
    ("FERRY_CA_FILE", "connector.ca_file", EnvKind::Text),
    ("FERRY_PROXY", "connector.proxy", EnvKind::Text),
    (
        "FERRY_PROXY_AUTH_FILE",
        "connector.proxy_auth_file",
        EnvKind::Text,
    ),
    (
        "FERRY_TUNNEL_TRANSPORT",
        "connector.transport",
        EnvKind::Text,
    ),
    (
        "FERRY_TUNNEL_PROTOCOL",
        "connector.tunnel_protocol",
        EnvKind::Integer,
    ),
    (
        "FERRY_CONNECTOR_ID",
        "connector.connector_id",
        EnvKind::Text,
    ),
    ("FERRY_TARGETS", "connector.targets", EnvKind::Targets),
    (
        "FERRY_CONNECTOR_METRICS_LISTEN",
        "connector.metrics_listen",
        EnvKind::Text,
    ),
    (
        "FERRY_RECONNECT_MIN_DELAY",
        "connector.reconnect_min_delay",
        EnvKind::Text,
    ),
    (
        "FERRY_RECONNECT_MAX_DELAY",
        "connector.reconnect_max_delay",
        EnvKind::Text,
    ),
    (
        "FERRY_CONNECT_TIMEOUT",
        "connector.connect_timeout",
        EnvKind::Text,
    ),
    (
        "FERRY_RESPONSE_TIMEOUT",
        "connector.response_timeout",
        EnvKind::Text,
    ),
    (
        "FERRY_AUTH_FAILURE_DELAY",
        "connector.auth_failure_delay",
        EnvKind::Text,
    ),
    (
        "FERRY_EXIT_ON_AUTH_FAILURE",
        "connector.exit_on_auth_failure",
        EnvKind::Boolean,
    ),
    ("FERRY_PIN_SHA256", "connector.pin_sha256", EnvKind::List),
    ("FERRY_TUNNELS", "connector.tunnels", EnvKind::Integer),
    ("FERRY_LOG_FORMAT", "log.format", EnvKind::Text),
    ("FERRY_LOG", "log.level", EnvKind::Text),
    (
        "FERRY_OTLP_ENDPOINT",
        "telemetry.otlp_endpoint",
        EnvKind::Text,
    ),
    (
        "FERRY_OTLP_SERVICE_NAME",
        "telemetry.service_name",
        EnvKind::Text,
    ),
    (
        "FERRY_TRACE_SAMPLING_RATIO",
        "telemetry.sampling_ratio",
        EnvKind::Float,
    ),
    (
        "FERRY_WORKER_THREADS",
        "runtime.worker_threads",
        EnvKind::Integer,
    ),
    ("FERRY_PER_CORE", "runtime.per_core", EnvKind::Boolean),
    ("FERRY_ACCESS_LOG", "gateway.access_log", EnvKind::Text),
];

/// `FERRY_*` variables read outside the configuration: the management commands' remote API and its key.
pub const OTHER_ENV: &[&str] = &["FERRY_API_URL", "FERRY_API_KEY"];

/// Prefixes and names of `FERRY_*` variables that Ferry's own tests, benchmarks and scripts set; never warned about.
const TOOL_ENV_PREFIXES: &[&str] = &[
    "FERRY_TEST_",
    "FERRY_STORE_TEST_",
    "FERRY_SCHEMATHESIS_",
    "FERRY_SOAK_",
];
const TOOL_ENV: &[&str] = &[
    "FERRY_BIN",
    "FERRY_BINARY",
    "FERRY_IMAGE",
    "FERRY_TOOLS_DIR",
    "FERRY_DEPLOY_TOOLS",
    "FERRY_LINK_ORDER",
];

/// A warning for every `FERRY_*` variable among `names` that Ferry does not read (a typo such as `FERRY_LISTN`
/// would otherwise be ignored silently), naming the closest known variable when one is near.
pub fn unknown_env_warnings<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let known = || {
        ENV_OVERRIDES
            .iter()
            .map(|(var, _, _)| *var)
            .chain(OTHER_ENV.iter().copied())
    };
    let mut warnings = Vec::new();
    for name in names {
        if !name.starts_with("FERRY_")
            || known().any(|k| k == name)
            || TOOL_ENV.contains(&name)
            || TOOL_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
        {
            continue;
        }
        let closest = known()
            .map(|k| (strsim::levenshtein(k, name), k))
            .min_by_key(|(distance, _)| *distance)
            .filter(|(distance, _)| *distance <= 3);
        warnings.push(match closest {
            Some((_, k)) => {
                format!("{name} is not a Ferry variable and is ignored; did you mean {k}?")
            }
            None => format!(
                "{name} is not a Ferry variable and is ignored (docs/configuration.md lists them)"
            ),
        });
    }
    warnings.sort();
    warnings
}

/// One value set from the command line, at a key path like `server.listen`.
#[derive(Debug, Clone)]
pub struct Override {
    pub path: &'static str,
    pub value: Value,
}

impl Override {
    pub fn new(path: &'static str, value: impl Into<Value>) -> Self {
        Self {
            path,
            value: value.into(),
        }
    }

    /// `connector.targets` from `NAME=URL` specs.
    pub fn targets(specs: &[String]) -> Result<Self, ConfigError> {
        Ok(Self {
            path: "connector.targets",
            value: targets_value(specs.iter().map(String::as_str))?,
        })
    }
}

/// Why the configuration was refused. Every message names the key or file it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{var}: {message}")]
    Env { var: &'static str, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

fn targets_value<'a>(specs: impl Iterator<Item = &'a str>) -> Result<Value, ConfigError> {
    let mut list = Vec::new();
    for spec in specs.map(str::trim).filter(|s| !s.is_empty()) {
        let t = TargetConfig::parse_spec(spec).map_err(|m| invalid("connector.targets", m))?;
        let mut table = toml::map::Map::new();
        table.insert("name".into(), Value::String(t.name.to_string()));
        table.insert("url".into(), Value::String(t.url));
        list.push(Value::Table(table));
    }
    Ok(Value::Array(list))
}

fn set(root: &mut Value, path: &str, value: Value) {
    let mut node = root;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let Value::Table(table) = node else { return };
        if parts.peek().is_none() {
            table.insert(part.to_owned(), value);
            return;
        }
        node = table
            .entry(part.to_owned())
            .or_insert_with(|| Value::Table(toml::map::Map::new()));
    }
}

fn get<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(root, |node, part| node.get(part))
}

/// Where a running process's configuration came from (file, environment, flags), so that it can be read again
/// with the same layering, e.g. to reload the `[gateway]` section. Not `Debug`: the environment may hold secrets.
#[derive(Clone)]
pub struct ConfigSource {
    pub file: Option<std::path::PathBuf>,
    pub env: Vec<(String, String)>,
    pub overrides: Vec<Override>,
}

impl ConfigSource {
    /// What is worth a warning about this source though it loads: unknown `FERRY_*` variables
    /// ([`unknown_env_warnings`]) and a file without `version` (read as the current version).
    pub fn notices(&self) -> Vec<String> {
        let mut notices = unknown_env_warnings(self.env.iter().map(|(k, _)| k.as_str()));
        if let Some(path) = &self.file {
            let unversioned = std::fs::read_to_string(path)
                .ok()
                .and_then(|text| text.parse::<toml::Table>().ok())
                .is_some_and(|table| !table.contains_key("version"));
            if unversioned {
                notices.push(format!(
                    "config file {} has no `version`; read as version {CONFIG_VERSION} (add `version = {CONFIG_VERSION}` \
                     to say so)",
                    path.display()
                ));
            }
        }
        notices
    }

    /// Read the configuration again as [`load`] did at start.
    pub fn load(&self) -> Result<Config, ConfigError> {
        load(
            self.file.as_deref(),
            self.env.iter().cloned(),
            self.overrides.clone(),
        )
    }
}

/// Load the configuration: the file (if any), then `env` (pass `std::env::vars()`), then `overrides` from flags.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: Vec<Override>,
) -> Result<Config, ConfigError> {
    let root = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            parse_text(&text, &path.display().to_string())?
        }
        None => Value::Table(toml::map::Map::new()),
    };
    load_root(root, env, overrides)
}

/// Load a configuration file's `text` (`name` says where it came from, for errors) as [`load`] loads a file,
/// without environment variables or flags: how `ferry gateway import-nginx` checks what it writes.
pub fn load_text(text: &str, name: &str) -> Result<Config, ConfigError> {
    load_root(parse_text(text, name)?, Vec::new(), Vec::new())
}

fn parse_text(text: &str, name: &str) -> Result<Value, ConfigError> {
    text.parse::<toml::Table>()
        .map(Value::Table)
        .map_err(|e| ConfigError::Parse {
            path: name.to_owned(),
            message: e.to_string(),
        })
}

fn load_root(
    mut root: Value,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: Vec<Override>,
) -> Result<Config, ConfigError> {
    let env: std::collections::HashMap<String, String> = env.into_iter().collect();
    for (var, path, kind) in ENV_OVERRIDES {
        let Some(raw) = env.get(*var) else { continue };
        let value = match kind {
            EnvKind::Text => Value::String(raw.clone()),
            EnvKind::Integer => {
                Value::Integer(raw.trim().parse().map_err(|_| ConfigError::Env {
                    var,
                    message: format!("{raw:?} is not a whole number"),
                })?)
            }
            EnvKind::Boolean => Value::Boolean(match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    return Err(ConfigError::Env {
                        var,
                        message: format!("{raw:?} is not true or false"),
                    })
                }
            }),
            EnvKind::List => Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_owned()))
                    .collect(),
            ),
            EnvKind::Float => Value::Float(raw.trim().parse().map_err(|_| ConfigError::Env {
                var,
                message: format!("{raw:?} is not a number"),
            })?),
            EnvKind::Targets => targets_value(raw.split(',')).map_err(|e| ConfigError::Env {
                var,
                message: e.to_string(),
            })?,
        };
        set(&mut root, path, value);
    }
    for o in overrides {
        set(&mut root, o.path, o.value);
    }
    if get(&root, "server.node_id").is_some() {
        return Err(invalid(
            "server.node_id",
            "moved to node.id (FERRY_NODE_ID sets it as before)",
        ));
    }
    let mut config: Config = serde_path_to_error::deserialize(root.clone()).map_err(|e| {
        let path = e.path().to_string();
        invalid(path, e.into_inner().to_string())
    })?;
    config
        .server
        .auth
        .default_issuer_to_public_url(get(&root, "server.auth.issuer").is_some());
    // the standard OpenTelemetry variable, when neither the file nor FERRY_OTLP_ENDPOINT names a collector
    if config.telemetry.otlp_endpoint.is_none() {
        config.telemetry.otlp_endpoint = env
            .get("OTEL_EXPORTER_OTLP_ENDPOINT")
            .filter(|v| !v.trim().is_empty())
            .cloned();
    }
    validate(&config, &root)?;
    Ok(config)
}

fn validate(config: &Config, root: &Value) -> Result<(), ConfigError> {
    if config.version != CONFIG_VERSION {
        return Err(invalid(
            "version",
            format!(
                "unsupported version {}, this Ferry reads version {CONFIG_VERSION}",
                config.version
            ),
        ));
    }
    let server = &config.server;
    if server.tls_cert.is_some() != server.tls_key.is_some() {
        return Err(invalid(
            "server.tls_cert",
            "tls_cert and tls_key go together",
        ));
    }
    for (i, l) in server.listeners.iter().enumerate() {
        let key = |field: &str| format!("server.listeners[{i}].{field}");
        l.validate(i, &config.gateway.tls, server.tls_cert.is_some())
            .map_err(|(path, message)| invalid(path, message))?;
        // port 0 (the OS picks one, as in tests) never clashes
        let clash = |other: &std::net::SocketAddr| l.listen.port() != 0 && *other == l.listen;
        if clash(&server.listen) || server.listeners[..i].iter().any(|o| clash(&o.listen)) {
            return Err(invalid(
                key("listen"),
                format!("{} is already a listener", l.listen),
            ));
        }
    }
    server
        .check_listener_names()
        .map_err(|(path, message)| invalid(path, message))?;
    if server.http.max_header_size < 1024 {
        return Err(invalid(
            "server.http.max_header_size",
            "must be at least 1024",
        ));
    }
    if config.connector.tunnels > crate::MAX_TUNNELS {
        return Err(invalid(
            "connector.tunnels",
            format!(
                "must be at most {} (0 = one per CPU, at most {})",
                crate::MAX_TUNNELS,
                crate::MAX_AUTO_TUNNELS
            ),
        ));
    }
    if config.runtime.worker_threads > crate::MAX_WORKER_THREADS {
        return Err(invalid(
            "runtime.worker_threads",
            format!(
                "must be at most {} (0 = one per CPU)",
                crate::MAX_WORKER_THREADS
            ),
        ));
    }
    config
        .telemetry
        .validate()
        .map_err(|(path, message)| invalid(path, message))?;
    validate_node(config)?;
    crate::auth::validate(&server.auth).map_err(|(path, message)| invalid(path, message))?;
    server
        .admin
        .validate()
        .map_err(|(path, message)| invalid(path, message))?;
    let c = &config.connector;
    if c.reconnect_min_delay.is_zero() || c.reconnect_min_delay > c.reconnect_max_delay {
        return Err(invalid(
            "connector.reconnect_min_delay",
            "must be above zero and not above reconnect_max_delay",
        ));
    }
    for (i, t) in c.targets.iter().enumerate() {
        if c.targets[..i].iter().any(|o| o.name == t.name) {
            return Err(invalid(
                format!("connector.targets[{i}].name"),
                format!("duplicate target {}", t.name),
            ));
        }
        if !(t.url.starts_with("http://") || t.url.starts_with("https://")) {
            return Err(invalid(
                format!("connector.targets[{i}].url"),
                "must start with http:// or https://",
            ));
        }
    }
    if let Some(s) = get(root, "connector.server").and_then(Value::as_str) {
        if !(s.starts_with("http://") || s.starts_with("https://")) {
            return Err(invalid(
                "connector.server",
                "must start with http:// or https://",
            ));
        }
    }
    Ok(())
}

/// The `[node]` section, and how it fits the store: a cluster's nodes must share a database, and a one-process
/// cluster must run every role.
fn validate_node(config: &Config) -> Result<(), ConfigError> {
    let node = &config.node;
    if let Some(id) = &node.id {
        crate::check_node_id(id).map_err(|m| invalid("node.id", m))?;
    }
    let transport = node.transport.expose();
    let scheme = transport.split_once("://").map(|(s, _)| s);
    match scheme {
        None if transport == "memory" => {}
        Some("nats" | "tls" | "amqp" | "amqps") => {}
        _ => {
            return Err(invalid(
                "node.transport",
                "must be memory, nats://HOST:PORT, tls://HOST:PORT, amqp://USER:PASS@HOST:PORT/VHOST or amqps://…",
            ))
        }
    }
    let c = &node.cluster;
    crate::check_node_id(&c.name).map_err(|m| invalid("node.cluster.name", m))?;
    if c.heartbeat_interval.is_zero() || c.node_expiry < c.heartbeat_interval * 2 {
        return Err(invalid(
            "node.cluster.node_expiry",
            "must be at least twice node.cluster.heartbeat_interval (which must be above zero)",
        ));
    }
    if c.claim_timeout.is_zero() || c.store_poll_interval.is_zero() {
        return Err(invalid(
            "node.cluster",
            "claim_timeout and store_poll_interval must be above zero",
        ));
    }
    let w = &node.worker;
    if w.retry_interval.is_zero() || w.lease_ttl < w.retry_interval * 2 {
        return Err(invalid(
            "node.worker.lease_ttl",
            "must be at least twice node.worker.retry_interval (which must be above zero)",
        ));
    }
    if node.is_single_process() {
        if !node.roles.is_all() {
            return Err(invalid(
                "node.roles",
                format!(
                    "{} alone cannot work with the in-process bus (node.transport = memory): one process is then \
                     the whole cluster and must run every role; set node.transport (FERRY_TRANSPORT) to \
                     nats://… or amqp://… to split roles over several processes",
                    node.roles
                ),
            ));
        }
    } else {
        let shared = config
            .server
            .database_url
            .as_ref()
            .map(|u| u.expose())
            .is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"));
        if !shared {
            return Err(invalid(
                "server.database_url",
                "the nodes of a cluster (node.transport other than memory) must share a database: set \
                 server.database_url (FERRY_DATABASE_URL) to postgres://…; SQLite is one node's",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile_lite::TempFile {
        tempfile_lite::TempFile::new(text)
    }

    /// A tiny temp file helper, to keep this crate free of test-only dependencies.
    mod tempfile_lite {
        pub struct TempFile(pub std::path::PathBuf);
        impl TempFile {
            pub fn new(text: &str) -> Self {
                let path = std::env::temp_dir().join(format!(
                    "ferry-config-{}-{:?}.toml",
                    std::process::id(),
                    std::thread::current().id()
                ));
                std::fs::write(&path, text).expect("write temp config");
                Self(path)
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn extra_listeners_are_checked_with_their_key() {
        let refused = |text: &str| {
            let f = file(text);
            load(Some(&f.0), env(&[]), vec![])
                .expect_err("refused")
                .to_string()
        };
        let e = refused("[[server.listeners]]\nlisten = \"127.0.0.1:9443\"\ntls = true\n");
        assert!(e.starts_with("server.listeners[0].tls"), "{e}");
        let e = refused("[server]\nlisten = \"127.0.0.1:9080\"\n[[server.listeners]]\nlisten = \"127.0.0.1:9080\"\n");
        assert!(e.starts_with("server.listeners[0].listen"), "{e}");
        let f = file("[[server.listeners]]\nlisten = \"127.0.0.1:0\"\nredirect_to_https = true\n[[server.listeners]]\nlisten = \"127.0.0.1:0\"\n");
        let c = load(Some(&f.0), env(&[]), vec![]).expect("two port-0 listeners");
        assert_eq!(c.server.listeners.len(), 2);
        assert!(c.server.listeners[0].redirect_to_https);
        assert_eq!(c.server.listeners[0].https_port, 443);
        // names: unique, not main's, and names
        let e = refused("[[server.listeners]]\nname = \"internal\"\nlisten = \"127.0.0.1:0\"\n[[server.listeners]]\nname = \"internal\"\nlisten = \"127.0.0.1:0\"\n");
        assert!(
            e.starts_with(
                "server.listeners[1].name: \"internal\" is already the name of server.listeners[0]"
            ),
            "{e}"
        );
        let e = refused("[[server.listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n");
        assert!(e.starts_with("server.listeners[0].name"), "{e}");
        let e = refused("[[server.listeners]]\nname = \"a b\"\nlisten = \"127.0.0.1:0\"\n");
        assert!(e.starts_with("server.listeners[0].name"), "{e}");
        let f = file("[[server.listeners]]\nname = \"internal\"\nlisten = \"127.0.0.1:0\"\n[[server.listeners]]\nlisten = \"127.0.0.1:0\"\n");
        let c = load(Some(&f.0), env(&[]), vec![]).expect("named and unnamed");
        assert_eq!(c.server.listener_names(), vec!["main", "internal"]);
    }

    #[test]
    fn unknown_ferry_variables_are_named_with_the_closest_known_one() {
        let w = unknown_env_warnings(["FERRY_LISTN", "PATH", "FERRY_LISTEN", "FERRY_API_URL"]);
        assert_eq!(
            w,
            vec!["FERRY_LISTN is not a Ferry variable and is ignored; did you mean FERRY_LISTEN?"]
        );
        let w = unknown_env_warnings(["FERRY_SOMETHING_ELSE_ENTIRELY", "FERRY_TEST_POSTGRES_URL"]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("docs/configuration.md"), "{w:?}");
    }

    #[test]
    fn a_file_without_version_is_read_as_the_current_one_and_said_so() {
        let f = file("[server]\nlisten = \"127.0.0.1:1\"\n");
        let source = ConfigSource {
            file: Some(f.0.clone()),
            env: vec![("FERRY_LISTN".to_owned(), "x".to_owned())],
            overrides: vec![],
        };
        source.load().expect("loads");
        let notices = source.notices();
        assert_eq!(notices.len(), 2, "{notices:?}");
        assert!(notices[1].contains("read as version 1"), "{notices:?}");
        drop(f);
        let f = file("version = 1\n");
        let source = ConfigSource {
            file: Some(f.0.clone()),
            env: vec![],
            overrides: vec![],
        };
        assert!(source.notices().is_empty());
    }

    #[test]
    fn cluster_settings_are_checked_together() {
        let c = load(None, env(&[]), vec![]).expect("defaults");
        assert!(c.node.roles.is_all() && c.node.is_single_process());
        let e = load(None, env(&[("FERRY_ROLES", "relay")]), vec![]).expect_err("relay alone");
        assert!(e.to_string().starts_with("node.roles: relay alone"), "{e}");
        let e = load(
            None,
            env(&[("FERRY_TRANSPORT", "nats://127.0.0.1:4222")]),
            vec![],
        )
        .expect_err("sqlite cluster");
        assert!(e.to_string().starts_with("server.database_url"), "{e}");
        let e = load(None, env(&[("FERRY_TRANSPORT", "kafka://x")]), vec![]).expect_err("kafka");
        assert!(e.to_string().starts_with("node.transport"), "{e}");
        let e = load(None, env(&[("FERRY_ROLES", "relay,juggler")]), vec![]).expect_err("role");
        assert!(e.to_string().contains("juggler"), "{e}");
        let e = load(None, env(&[("FERRY_NODE_ID", "a.b")]), vec![]).expect_err("id");
        assert!(e.to_string().starts_with("node.id"), "{e}");
        let c = load(
            None,
            env(&[
                ("FERRY_TRANSPORT", "amqp://guest:guest@127.0.0.1:5672/%2f"),
                ("FERRY_ROLES", "gateway,management"),
                ("FERRY_DATABASE_URL", "postgres://postgres@127.0.0.1/ferry"),
            ]),
            vec![],
        )
        .expect("a gateway and management node");
        assert_eq!(c.node.roles.to_string(), "gateway,management");
        assert!(
            !format!("{:?}", c.node).contains("guest:guest"),
            "the transport URL never prints"
        );
        let f = file("version = 1\n[server]\nnode_id = \"old\"\n");
        let e = load(Some(&f.0), env(&[]), vec![]).expect_err("moved");
        assert!(e.to_string().contains("moved to node.id"), "{e}");
        let f = file("version = 1\n[node]\nroles = [\"gateway\", \"relay\"]\ntransport = \"nats://h:4222\"\n[server]\ndatabase_url = \"postgres://x/y\"\n");
        let c = load(Some(&f.0), env(&[]), vec![]).expect("roles as a list");
        assert_eq!(c.node.roles.to_string(), "gateway,relay");
    }

    #[test]
    fn defaults_without_anything() {
        let c = load(None, env(&[]), vec![]).expect("defaults load");
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.server.relay.connector_wait, Duration::from_secs(5));
    }

    #[test]
    fn flags_win_over_env_over_file() {
        let f = file(
            "version = 1\n[server]\nlisten = \"127.0.0.1:1\"\ndata_dir = \"from-file\"\n[node]\nid = \"file\"\n[server.relay]\nconnector_wait = \"2s\"\n",
        );
        let c = load(
            Some(&f.0),
            env(&[
                ("FERRY_LISTEN", "127.0.0.1:2"),
                ("FERRY_DATA_DIR", "from-env"),
            ]),
            vec![Override::new("server.listen", "127.0.0.1:3")],
        )
        .expect("loads");
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:3");
        assert_eq!(c.server.data_dir.to_str(), Some("from-env"));
        assert_eq!(c.node.id.as_deref(), Some("file"));
        assert_eq!(c.server.relay.connector_wait, Duration::from_secs(2));
    }

    #[test]
    fn targets_from_env_and_flags() {
        let c = load(
            None,
            env(&[("FERRY_TARGETS", "a=http://127.0.0.1:1, b=https://x/base")]),
            vec![],
        )
        .expect("loads");
        assert_eq!(c.connector.targets.len(), 2);
        assert_eq!(c.connector.targets[1].url, "https://x/base");
        let o = Override::targets(&["c=http://127.0.0.1:9".to_string()]).expect("valid");
        let c = load(
            None,
            env(&[("FERRY_TARGETS", "a=http://127.0.0.1:1")]),
            vec![o],
        )
        .expect("loads");
        assert_eq!(c.connector.targets.len(), 1);
        assert_eq!(c.connector.targets[0].name.as_str(), "c");
    }

    #[test]
    fn errors_name_their_key() {
        let f = file("version = 1\n[server.relay]\nconnector_wiat = \"2s\"\n");
        let e = load(Some(&f.0), env(&[]), vec![]).expect_err("unknown key");
        assert!(e.to_string().contains("server.relay"), "{e}");
        assert!(e.to_string().contains("connector_wiat"), "{e}");

        let e =
            load(None, env(&[("FERRY_CONNECTOR_WAIT", "soon")]), vec![]).expect_err("bad duration");
        assert!(e.to_string().contains("server.relay.connector_wait"), "{e}");

        let e = load(None, env(&[("FERRY_MAX_BODY_SIZE", "lots")]), vec![]).expect_err("bad int");
        assert!(e.to_string().starts_with("FERRY_MAX_BODY_SIZE"), "{e}");

        let e =
            load(None, env(&[("FERRY_TARGETS", "Bad=http://x")]), vec![]).expect_err("bad name");
        assert!(e.to_string().contains("FERRY_TARGETS"), "{e}");

        let f = file("version = 2\n");
        let e = load(Some(&f.0), env(&[]), vec![]).expect_err("version");
        assert!(e.to_string().starts_with("version:"), "{e}");

        let e = load(None, env(&[("FERRY_TLS_CERT", "a.pem")]), vec![]).expect_err("half tls");
        assert!(e.to_string().starts_with("server.tls_cert"), "{e}");
    }

    #[test]
    fn telemetry_is_off_by_default_and_set_by_file_or_env() {
        let c = load(None, env(&[]), vec![]).expect("defaults load");
        assert!(!c.telemetry.enabled());
        assert_eq!(c.telemetry.service_name, "ferry");
        assert!((c.telemetry.sampling_ratio - 1.0).abs() < f64::EPSILON);
        let f =
            file("[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nsampling_ratio = 0.5\n");
        let c = load(Some(&f.0), env(&[]), vec![]).expect("loads");
        assert_eq!(
            c.telemetry.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4318")
        );
        assert!((c.telemetry.sampling_ratio - 0.5).abs() < f64::EPSILON);
        let c = load(
            None,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318"),
                ("FERRY_TRACE_SAMPLING_RATIO", "0.25"),
                ("FERRY_OTLP_SERVICE_NAME", "edge"),
            ]),
            vec![],
        )
        .expect("loads");
        assert_eq!(
            c.telemetry.otlp_endpoint.as_deref(),
            Some("http://otel:4318")
        );
        assert_eq!(c.telemetry.service_name, "edge");
        let c = load(
            None,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318"),
                ("FERRY_OTLP_ENDPOINT", "http://mine:4318"),
            ]),
            vec![],
        )
        .expect("loads");
        assert_eq!(
            c.telemetry.otlp_endpoint.as_deref(),
            Some("http://mine:4318"),
            "FERRY_OTLP_ENDPOINT wins"
        );
        let e = load(None, env(&[("FERRY_TRACE_SAMPLING_RATIO", "2")]), vec![])
            .expect_err("ratio above 1");
        assert!(e.to_string().starts_with("telemetry.sampling_ratio"), "{e}");
        let e = load(None, env(&[("FERRY_OTLP_ENDPOINT", "otel:4318")]), vec![])
            .expect_err("not a URL");
        assert!(e.to_string().starts_with("telemetry.otlp_endpoint"), "{e}");
    }

    #[test]
    fn worker_threads_from_file_and_env() {
        let c = load(None, env(&[]), vec![]).expect("defaults load");
        assert_eq!(c.runtime.worker_threads, 0, "default: one per CPU");
        let f = file("[runtime]\nworker_threads = 2\n");
        let c = load(Some(&f.0), env(&[]), vec![]).expect("loads");
        assert_eq!(c.runtime.worker_threads, 2);
        let c = load(Some(&f.0), env(&[("FERRY_WORKER_THREADS", "1")]), vec![]).expect("loads");
        assert_eq!(
            c.runtime.worker_threads, 1,
            "the variable wins over the file"
        );
        let e =
            load(None, env(&[("FERRY_WORKER_THREADS", "100000")]), vec![]).expect_err("too many");
        assert!(e.to_string().starts_with("runtime.worker_threads"), "{e}");
        let e = load(None, env(&[("FERRY_WORKER_THREADS", "-1")]), vec![]).expect_err("negative");
        assert!(e.to_string().contains("worker_threads"), "{e}");
    }

    #[test]
    fn database_url_from_file_and_env() {
        let c = load(None, env(&[]), vec![]).expect("defaults load");
        assert!(c.server.database_url.is_none());

        let f = file("[server]\ndatabase_url = \"sqlite:///var/lib/ferry/ferry.db\"\n");
        let c = load(Some(&f.0), env(&[]), vec![]).expect("loads");
        let url = c.server.database_url.as_ref().expect("set by file");
        assert_eq!(url.expose(), "sqlite:///var/lib/ferry/ferry.db");

        let c = load(
            Some(&f.0),
            env(&[("FERRY_DATABASE_URL", "postgres://ferry:pw@db/ferry")]),
            vec![],
        )
        .expect("loads");
        let url = c.server.database_url.as_ref().expect("set by env");
        assert_eq!(url.expose(), "postgres://ferry:pw@db/ferry");
        assert!(
            !format!("{c:?}").contains("pw@"),
            "the URL's password never prints"
        );
    }

    #[test]
    fn host_mode_from_file() {
        let f = file("[[connector.targets]]\nname = \"app\"\nurl = \"http://127.0.0.1:1\"\nhost = \"client\"\n");
        let c = load(Some(&f.0), env(&[]), vec![]).expect("loads");
        assert_eq!(c.connector.targets[0].host, crate::HostMode::Client);
    }
}
