//! The relay: a tenant's targets reached through the tunnels its connectors opened to this node.
//!
//! Owns: the registry of open tunnels per tenant ([`registry`]), choosing a tunnel and failing over
//! ([`dispatch`]), and the two HTTP endpoints of the relay ([`endpoint`]): `/_ferry/tunnel`, where connectors
//! attach, and `/relay/{tenant}/{target}/…`, where clients call; the per-tenant settings in force
//! ([`tenants`]), counting requests ([`stats`]), and keeping in step with the store in the background ([`watch`]). Does not own: listeners and TLS (gateway), the
//! tunnel's wire protocol (ferry-tunnel), tokens and secrets (ferry-auth), storage (ferry-store).
#![forbid(unsafe_code)]

pub mod dispatch;
pub mod endpoint;
pub mod registry;
mod secrets;
pub mod stats;
pub mod tenants;
pub mod watch;

pub use dispatch::RelayError;
pub use endpoint::Relay;

/// A map by tenant that every relayed request looks up. Its keys are only tenants that exist (unknown names are
/// refused before any insert), so it uses foldhash, several times cheaper per lookup than the default SipHash,
/// which guards against keys chosen to collide.
pub(crate) type TenantMap<V> =
    std::collections::HashMap<ferry_proto::TenantName, V, foldhash::fast::RandomState>;
