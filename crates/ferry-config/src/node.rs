//! The `[node]` section: which roles this process runs, its id, and the bus that joins it to the other nodes of
//! its cluster, with the cluster's timings.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::PathBuf;
use std::time::Duration;

/// One role of a node (docs/cluster.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The client listener: `/relay/…` and the edge routes; the client side of the relay.
    Gateway,
    /// Accepts and holds connector tunnels (`/_ferry/tunnel`, `/oauth/token`) and runs requests on them.
    Relay,
    /// The admin listener and the management API.
    Management,
    /// Cluster chores; exactly one worker is active per cluster (a lease in the store).
    Worker,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Gateway, Role::Relay, Role::Management, Role::Worker];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Relay => "relay",
            Role::Management => "management",
            Role::Worker => "worker",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of roles; `all` (the default) is every role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    pub const fn all() -> Self {
        Roles(0b1111)
    }

    fn bit(role: Role) -> u8 {
        1 << (role as u8)
    }

    pub fn has(self, role: Role) -> bool {
        self.0 & Self::bit(role) != 0
    }

    pub fn is_all(self) -> bool {
        self == Self::all()
    }

    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.has(*r))
    }

    /// Parse `all` or a comma-separated list such as `gateway,relay`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut set = 0u8;
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            set |= match word.to_ascii_lowercase().as_str() {
                "all" => Self::all().0,
                "gateway" => Self::bit(Role::Gateway),
                "relay" => Self::bit(Role::Relay),
                "management" => Self::bit(Role::Management),
                "worker" => Self::bit(Role::Worker),
                other => {
                    return Err(format!(
                    "unknown role {other:?}; roles are gateway, relay, management, worker or all"
                ))
                }
            };
        }
        if set == 0 {
            return Err("no role given; use all or a list such as gateway,relay".into());
        }
        Ok(Roles(set))
    }
}

impl Default for Roles {
    fn default() -> Self {
        Self::all()
    }
}

impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_all() {
            return f.write_str("all");
        }
        let names: Vec<&str> = self.iter().map(Role::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl Serialize for Roles {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Roles {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, Serialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            List(Vec<String>),
        }
        let text = match Form::deserialize(d)? {
            Form::Text(t) => t,
            Form::List(l) => l.join(","),
        };
        Roles::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Settings of `[node]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id in logs, presence and the bus (`[A-Za-z0-9_-]`, at most 63). Default: generated on the first
    /// start and kept in the data directory (`node-id`), so a restarted node keeps its id.
    pub id: Option<String>,
    /// The roles this process runs (`FERRY_ROLES`): `all` (default) or a list of gateway, relay, management,
    /// worker.
    pub roles: Roles,
    /// The bus between nodes (`FERRY_TRANSPORT`): `memory` (default: this process is the whole cluster),
    /// `nats://host:port`, `tls://host:port`, `amqp://user:pass@host:port/vhost`, `amqps://…`. A `Secret`: the URL
    /// may carry a password.
    pub transport: crate::Secret,
    /// The address other nodes and operators see for this node (nodes endpoint); default: the public listener's.
    pub address: Option<String>,
    pub bus: BusSettings,
    pub cluster: ClusterSettings,
    pub worker: WorkerSettings,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: None,
            roles: Roles::all(),
            transport: crate::Secret::new("memory"),
            address: None,
            bus: BusSettings::default(),
            cluster: ClusterSettings::default(),
            worker: WorkerSettings::default(),
        }
    }
}

impl NodeConfig {
    /// Whether this process is the whole cluster (the in-process bus).
    pub fn is_single_process(&self) -> bool {
        self.transport.expose() == "memory"
    }
}

/// How to authenticate to the broker, beyond the URL (`[node.bus]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusSettings {
    /// NATS credentials file (`.creds`).
    pub credentials_file: Option<PathBuf>,
    /// PEM certificate authorities for `tls://` and `amqps://` (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for brokers that require one.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// Timings of the cluster protocol (`[node.cluster]`); the defaults suit nodes on one network.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// The cluster's name: the first word of every bus subject, so that clusters sharing a broker (production and
    /// staging) never hear each other. Every node of one cluster must have the same. `[A-Za-z0-9_-]`.
    pub name: String,
    /// How often a node announces itself and its connectors.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A node not heard from for this long is taken as gone: its connectors leave presence and the requests it
    /// carried fail with `502 connector_lost`.
    #[serde(with = "humantime_serde")]
    pub node_expiry: Duration,
    /// How long a request published to a tenant's dispatch queue waits to be claimed by a node before it is
    /// published again (the node that took it may have died).
    #[serde(with = "humantime_serde")]
    pub claim_timeout: Duration,
    /// How often every node re-reads tenants and revocations from the store, as a safety net behind the events
    /// on the bus.
    #[serde(with = "humantime_serde")]
    pub store_poll_interval: Duration,
    /// Send requests for connectors on other nodes over a direct HTTP/2 connection to that node (the node
    /// link, on its public listener at its `node.address`) instead of through the broker, when that address is a
    /// plain `http://` URL other nodes can reach. The broker still carries presence and events, and requests go
    /// by the broker when the link cannot be used (docs/cluster.md, "The node link"). A node serves other nodes'
    /// links whatever this says.
    pub links: bool,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            name: "ferry".to_owned(),
            heartbeat_interval: Duration::from_millis(500),
            node_expiry: Duration::from_secs(3),
            claim_timeout: Duration::from_millis(1000),
            store_poll_interval: Duration::from_secs(30),
            links: true,
        }
    }
}

/// The worker's lease (`[node.worker]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// How long the active worker's lease lasts without renewal; a standby takes over within this (plus one retry
    /// interval) after the active worker dies.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How often a standby worker tries to take the lease.
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(10),
            retry_interval: Duration::from_secs(1),
        }
    }
}

/// Check a node id: 1 to 63 of `[A-Za-z0-9_-]` (it is a word of bus subjects and a file's content).
pub fn check_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 63 {
        return Err("must be 1 to 63 characters".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "may contain only letters, digits, '-' and '_' (found {c:?})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse() {
        assert!(Roles::parse("all").expect("all").is_all());
        let r = Roles::parse("gateway, relay").expect("list");
        assert!(r.has(Role::Gateway) && r.has(Role::Relay) && !r.has(Role::Worker));
        assert_eq!(r.to_string(), "gateway,relay");
        assert!(Roles::parse("gateway,management,relay,worker")
            .expect("four")
            .is_all());
        assert!(Roles::parse("").is_err());
        let e = Roles::parse("gateway,dancer").expect_err("unknown");
        assert!(e.contains("dancer"), "{e}");
    }

    #[test]
    fn node_ids() {
        assert!(check_node_id("node-1_A").is_ok());
        assert!(check_node_id("").is_err());
        assert!(check_node_id("a.b").is_err());
        assert!(check_node_id(&"x".repeat(64)).is_err());
    }
}
