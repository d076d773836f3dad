//! Change hooks: what the management API tells the node after each successful change, so that it can push
//! settings to connected connectors and disconnect revoked or deleted ones. The node implements
//! [`ChangeNotifier`]; [`NoopNotifier`] is for tests and for the command line's local mode.

use ferry_proto::TenantName;

/// Told after each successful change made through the management API. Called on the request's task: keep it
/// quick (send to a channel, spawn), never block.
pub trait ChangeNotifier: Send + Sync + 'static {
    /// The tenant was created or its fields or settings changed.
    fn tenant_changed(&self, tenant: &TenantName);
    /// The tenant and all its secrets were deleted.
    fn tenant_deleted(&self, tenant: &TenantName);
    /// One connector secret of the tenant was revoked.
    fn secret_revoked(&self, tenant: &TenantName, secret_id: &str);
}

/// The cluster as the node sees it (presence on the bus), for the nodes endpoint and live connections. Without
/// one, both come from the store.
pub trait ClusterView: Send + Sync + 'static {
    /// Every node up now, with its roles and last heartbeat.
    fn nodes(&self) -> Vec<crate::model::NodeView>;
    /// Every connector tunnel open now, on any node.
    fn live_connections(&self) -> Vec<crate::model::ConnectionView>;
}

/// The node's edge gateway, for the gateway endpoint. Without one (a node without the gateway role, or the
/// command line), the endpoint says the gateway is not enabled here.
pub trait GatewayView: Send + Sync + 'static {
    /// The node's id, and the routes and pools in force now with each server's health.
    fn gateway(&self) -> crate::model::GatewayReport;
}

/// A notifier that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopNotifier;

impl ChangeNotifier for NoopNotifier {
    fn tenant_changed(&self, _tenant: &TenantName) {}
    fn tenant_deleted(&self, _tenant: &TenantName) {}
    fn secret_revoked(&self, _tenant: &TenantName, _secret_id: &str) {}
}

/// A notifier that records every call, for tests.
#[derive(Debug, Default)]
pub struct RecordingNotifier {
    events: std::sync::Mutex<Vec<String>>,
}

impl RecordingNotifier {
    /// Calls so far, as `changed:NAME`, `deleted:NAME`, `revoked:NAME:ID`.
    pub fn events(&self) -> Vec<String> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    fn push(&self, event: String) {
        if let Ok(mut e) = self.events.lock() {
            e.push(event);
        }
    }
}

impl ChangeNotifier for RecordingNotifier {
    fn tenant_changed(&self, tenant: &TenantName) {
        self.push(format!("changed:{tenant}"));
    }
    fn tenant_deleted(&self, tenant: &TenantName) {
        self.push(format!("deleted:{tenant}"));
    }
    fn secret_revoked(&self, tenant: &TenantName, secret_id: &str) {
        self.push(format!("revoked:{tenant}:{secret_id}"));
    }
}
