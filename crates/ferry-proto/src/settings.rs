//! Per-tenant settings: what an operator may tune for one tenant at run time.
//!
//! Owns: the [`TenantSettings`] record, stored with the tenant, served by the management API and pushed to the
//! tenant's connectors over their tunnels. Every field is optional: unset means "the node's configured default".
//! Durations are whole milliseconds so that the JSON form is plain numbers in every language.

use serde::{Deserialize, Serialize};

/// Settings of one tenant. `None` everywhere (the default) means: use the node's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// Interval of keep-alive PINGs on the tenant's tunnels, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_interval_ms: Option<u64>,
    /// The connector's first reconnect delay after a lost tunnel, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_min_delay_ms: Option<u64>,
    /// The connector's longest reconnect delay, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_max_delay_ms: Option<u64>,
    /// How long the connector waits for a target's response head, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_response_timeout_ms: Option<u64>,
    /// The longest a relayed request may wait for its response to start, from arrival, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_expiration_ms: Option<u64>,
    /// Cap on the tenant's requests in flight (429 beyond it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<u64>,
    /// Largest request body accepted for the tenant, in bytes (413 beyond it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_size: Option<u64>,
    /// Clients of the relay must present a valid bearer token from the configured issuer (else 401).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_client_auth: Option<bool>,
}

impl TenantSettings {
    /// `self` with every field that `patch` sets replaced by `patch`'s value.
    pub fn merged(&self, patch: &TenantSettings) -> TenantSettings {
        TenantSettings {
            keepalive_interval_ms: patch.keepalive_interval_ms.or(self.keepalive_interval_ms),
            reconnect_min_delay_ms: patch.reconnect_min_delay_ms.or(self.reconnect_min_delay_ms),
            reconnect_max_delay_ms: patch.reconnect_max_delay_ms.or(self.reconnect_max_delay_ms),
            target_response_timeout_ms: patch
                .target_response_timeout_ms
                .or(self.target_response_timeout_ms),
            request_expiration_ms: patch.request_expiration_ms.or(self.request_expiration_ms),
            max_concurrent_requests: patch
                .max_concurrent_requests
                .or(self.max_concurrent_requests),
            max_body_size: patch.max_body_size.or(self.max_body_size),
            require_client_auth: patch.require_client_auth.or(self.require_client_auth),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_takes_set_fields_of_the_patch() {
        let base = TenantSettings {
            keepalive_interval_ms: Some(1000),
            max_body_size: Some(10),
            ..Default::default()
        };
        let patch = TenantSettings {
            max_body_size: Some(20),
            require_client_auth: Some(true),
            ..Default::default()
        };
        let merged = base.merged(&patch);
        assert_eq!(merged.keepalive_interval_ms, Some(1000));
        assert_eq!(merged.max_body_size, Some(20));
        assert_eq!(merged.require_client_auth, Some(true));
    }
}
