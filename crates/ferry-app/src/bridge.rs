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

/// Judges the management API's bearer tokens that are not admin keys with the external provider's admin check.
pub(crate) struct AdminTokens(pub ferry_auth::AdminCheck);

#[async_trait::async_trait]
impl ferry_admin::AdminTokenCheck for AdminTokens {
    async fn check(&self, token: &str) -> ferry_admin::AdminTokenOutcome {
        use ferry_admin::AdminTokenOutcome;
        use ferry_auth::AdminDecision;
        match self.0.check(token).await {
            AdminDecision::Admin { subject } => AdminTokenOutcome::Granted {
                subject: subject.unwrap_or_else(|| "oidc".to_owned()),
            },
            AdminDecision::MissingRole { subject } => {
                tracing::info!(
                    subject = subject.as_deref().unwrap_or(""),
                    "management API: valid token without the admin role"
                );
                AdminTokenOutcome::NoRole
            }
            AdminDecision::Invalid(error) => {
                tracing::info!(%error, "management API: token refused");
                AdminTokenOutcome::Invalid
            }
        }
    }
}
