//! Adapters between the management API and the rest of the node: changes made through the API are applied here
//! at once and announced to the other nodes on the bus ([`ClusterNotifier`]), the nodes endpoint and live
//! connections come from presence ([`PresenceView`]), the gateway endpoint from this node's edge gateway
//! ([`EdgeView`]), and bearer tokens that are not admin keys are judged by the
//! node's token verifiers ([`AdminTokens`]).

use ferry_admin::model::{
    ConnectionView, GatewayReport, GatewayRouteView, NodeView, UpstreamServerView, UpstreamView,
};
use ferry_admin::{ChangeNotifier, ClusterView, GatewayView};
use ferry_proto::cluster::EventMsg;
use ferry_proto::TenantName;
use ferry_relay::watch::Changes;
use ferry_relay::Cluster;
use std::sync::Arc;

/// Applies a change made through this node's management API here, and tells the cluster.
pub(crate) struct ClusterNotifier {
    pub changes: Changes,
    pub cluster: Arc<Cluster>,
}

impl ClusterNotifier {
    fn announce(&self, event: EventMsg) {
        let changes = self.changes.clone();
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            changes.apply(&event).await;
            cluster.publish_event(event).await;
        });
    }
}

impl ChangeNotifier for ClusterNotifier {
    fn tenant_changed(&self, tenant: &TenantName) {
        self.announce(EventMsg::TenantChanged {
            tenant: tenant.to_string(),
        });
    }

    fn tenant_deleted(&self, tenant: &TenantName) {
        self.announce(EventMsg::TenantDeleted {
            tenant: tenant.to_string(),
        });
    }

    fn secret_revoked(&self, tenant: &TenantName, secret_id: &str) {
        self.announce(EventMsg::SecretRevoked {
            tenant: tenant.to_string(),
            secret_id: secret_id.to_owned(),
        });
    }
}

/// The nodes and live connections of the whole cluster, as this node's presence knows them.
pub(crate) struct PresenceView(pub Arc<Cluster>);

impl ClusterView for PresenceView {
    fn nodes(&self) -> Vec<NodeView> {
        self.0
            .presence()
            .nodes()
            .into_iter()
            .map(|n| NodeView {
                id: n.info.node,
                address: n.info.address,
                version: n.info.version,
                started_at: n.info.started_at,
                heartbeat_at: n.last_seen_unix,
                roles: n
                    .info
                    .roles
                    .split(',')
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned)
                    .collect(),
                worker_active: n.info.worker_active,
                connectors: n.connectors as u64,
            })
            .collect()
    }

    fn live_connections(&self) -> Vec<ConnectionView> {
        self.0
            .presence()
            .connectors()
            .into_iter()
            .map(|(node, c)| ConnectionView {
                id: c.record_id,
                tenant: c.tenant,
                connector_id: c.connector_id,
                node,
                remote_addr: c.remote_addr,
                connected_at: c.since,
                disconnected_at: None,
                live: true,
            })
            .collect()
    }
}

/// This node's edge gateway as the management API shows it: routes, pools, each server's health.
pub(crate) struct EdgeView {
    pub node_id: String,
    pub edge: Arc<ferry_edge::Gateway>,
}

impl GatewayView for EdgeView {
    fn gateway(&self) -> GatewayReport {
        let snapshot = self.edge.snapshot();
        GatewayReport {
            node: self.node_id.clone(),
            enabled: true,
            routes: snapshot
                .routes
                .into_iter()
                .map(|r| GatewayRouteView {
                    name: r.name,
                    hosts: r.hosts,
                    path_kind: r.path_kind.as_str().to_owned(),
                    path: r.path,
                    methods: r.methods,
                    action: r.action.to_owned(),
                    target: r.target,
                })
                .collect(),
            upstreams: snapshot
                .upstreams
                .into_iter()
                .map(|p| UpstreamView {
                    name: p.name,
                    protocol: p.protocol.to_owned(),
                    health_checks: p.health_checks,
                    servers: p
                        .servers
                        .into_iter()
                        .map(|s| UpstreamServerView {
                            url: s.url,
                            weight: s.weight,
                            backup: s.backup,
                            max_conns: s.max_conns.map(|n| n as u64),
                            health: s.health.as_str().to_owned(),
                            in_flight: s.in_flight as u64,
                            requests: s.requests,
                            failures: s.failures,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Judges the management API's bearer tokens that are not admin keys with the external provider's check: the
/// token's claims mapped to a role (`admin_role`, `role_mapping`, `tenants_claim`).
pub(crate) struct AdminTokens(pub ferry_auth::AdminCheck);

#[async_trait::async_trait]
impl ferry_admin::AdminTokenCheck for AdminTokens {
    async fn check(&self, token: &str) -> ferry_admin::AdminTokenOutcome {
        use ferry_admin::AdminTokenOutcome;
        use ferry_auth::AdminDecision;
        match self.0.check(token).await {
            AdminDecision::Granted { subject, role } => AdminTokenOutcome::Granted {
                subject: format!("oidc:{}", subject.unwrap_or_default()),
                role: role.role,
                tenants: role.tenants,
            },
            AdminDecision::MissingRole { subject } => {
                tracing::info!(
                    subject = subject.as_deref().unwrap_or(""),
                    "management API: valid token whose roles map to no role"
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
