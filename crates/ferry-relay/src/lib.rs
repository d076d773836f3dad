//! The relay: a tenant's targets reached through the tunnels its connectors opened, on this node or on another
//! node of the cluster.
//!
//! Owns: the tunnel side ([`hub`]: `/_ferry/tunnel`, the [`registry`] of tunnels per tenant, settings pushes,
//! cutting tunnels), the client side ([`client`]: `/relay/{tenant}/{target}/…`, the per-tenant settings in force
//! ([`tenants`]), counting requests ([`stats`])), the seam between them ([`dispatch`]: this node's tunnels first
//! ([`local`]), else the cluster), the relay across nodes ([`cluster`]: bus messages, presence, flow control),
//! and keeping in step with changes ([`watch`]). Does not own: listeners and TLS (gateway), the tunnel's wire
//! protocol (ferry-tunnel), tokens and secrets (ferry-auth), storage (ferry-store), the bus (ferry-bus).
#![forbid(unsafe_code)]

pub mod client;
pub mod cluster;
pub mod dispatch;
pub mod hub;
pub mod local;
pub mod metrics;
pub mod registry;
mod secrets;
pub mod stats;
pub mod tenants;
pub mod watch;

pub use client::Relay;
pub use cluster::{Cluster, NodeIdentity};
pub use dispatch::{Dispatcher, RelayError};
pub use hub::Hub;
pub use metrics::RelayMetrics;
pub use tenants::TenantCache;

/// A map by tenant that every relayed request looks up. Its keys are only tenants that exist (unknown names are
/// refused before any insert), so it uses foldhash, several times cheaper per lookup than the default SipHash,
/// which guards against keys chosen to collide.
pub(crate) type TenantMap<V> =
    std::collections::HashMap<ferry_proto::TenantName, V, foldhash::fast::RandomState>;
