//! Adapters between the management API and the rest of the node: changes made through the API reach the relay at
//! once ([`RelayNotifier`]), and bearer tokens that are not admin keys are judged by the node's token verifiers
//! ([`AdminTokens`]).

use ferry_admin::ChangeNotifier;
use ferry_proto::TenantName;
use ferry_relay::Relay;
use std::sync::Arc;

/// Tells the relay about changes made through this node's management API (other nodes learn by polling).
pub(crate) struct RelayNotifier(pub Arc<Relay>);

impl ChangeNotifier for RelayNotifier {
    fn tenant_changed(&self, tenant: &TenantName) {
        let relay = self.0.clone();
        let tenant = tenant.clone();
        tokio::spawn(async move { relay.tenant_changed(&tenant).await });
    }

    fn tenant_deleted(&self, tenant: &TenantName) {
        self.0.tenant_deleted(tenant);
    }

    fn secret_revoked(&self, tenant: &TenantName, secret_id: &str) {
        self.0.secret_revoked(tenant, secret_id);
    }
}
