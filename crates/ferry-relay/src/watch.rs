//! What keeps a node in step with the rest of the cluster and the store, in the background.
//!
//! Configuration changes arrive as events: from this node's management API at once ([`Changes`]), from other
//! nodes' over the bus (`crate::cluster`). Behind the events, a slow safety-net poll of the store
//! (`node.cluster.store_poll_interval`, 30 s by default) catches changes whose event was lost (a broker outage) or
//! that were made behind Ferry's back (the CLI in local mode): tenants with tunnels here are re-read (deleted ones
//! cut, changed ones pushed) and revoked secrets cut. The node also writes its heartbeat and its statistics to the
//! store every [`FLUSH_INTERVAL`].

use crate::client::Relay;
use crate::hub::Hub;
use crate::tenants::Refreshed;
use ferry_proto::cluster::EventMsg;
use ferry_proto::TenantName;
use ferry_store::{unix_now, NodeRecord, Store};
use std::sync::Arc;
use std::time::Duration;

/// How often the node writes its heartbeat, statistics and request log.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// A configuration change, applied to whichever sides of the relay this node runs.
#[derive(Clone)]
pub struct Changes {
    pub hub: Option<Arc<Hub>>,
    pub relay: Option<Arc<Relay>>,
}

impl Changes {
    /// Apply a change now.
    pub async fn apply(&self, event: &EventMsg) {
        match event {
            EventMsg::TenantChanged { tenant } => {
                let Ok(tenant) = TenantName::new(tenant.clone()) else {
                    return;
                };
                if let Some(relay) = &self.relay {
                    relay.tenant_changed(&tenant);
                }
                if let Some(hub) = &self.hub {
                    hub.tenant_changed(&tenant).await;
                }
            }
            EventMsg::TenantDeleted { tenant } => {
                let Ok(tenant) = TenantName::new(tenant.clone()) else {
                    return;
                };
                if let Some(relay) = &self.relay {
                    relay.tenant_changed(&tenant);
                }
                if let Some(hub) = &self.hub {
                    hub.tenant_deleted(&tenant);
                }
            }
            EventMsg::SecretRevoked { tenant, secret_id } => {
                let Ok(tenant) = TenantName::new(tenant.clone()) else {
                    return;
                };
                if let Some(relay) = &self.relay {
                    relay.secret_revoked(&tenant);
                }
                if let Some(hub) = &self.hub {
                    hub.secret_revoked(&tenant, secret_id);
                }
            }
        }
    }
}

/// The background tasks of a node's relay, by name; aborted when dropped.
pub struct Background {
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
}

impl Background {
    /// The tasks, for a supervisor (which then owns aborting them).
    pub fn into_tasks(mut self) -> Vec<(&'static str, tokio::task::JoinHandle<()>)> {
        std::mem::take(&mut self.tasks)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        for (_, task) in &self.tasks {
            task.abort();
        }
    }
}

/// What the node writes about itself.
#[derive(Debug, Clone)]
pub struct NodeAbout {
    pub node_id: String,
    pub address: String,
    pub roles: String,
    pub started_at: i64,
}

/// Start the safety-net poll (with either side of the relay) and the heartbeat and statistics writer.
pub fn spawn_background(
    store: Arc<dyn Store>,
    about: NodeAbout,
    hub: Option<Arc<Hub>>,
    relay: Option<Arc<Relay>>,
    poll_interval: Duration,
) -> Background {
    let mut tasks = Vec::new();
    if hub.is_some() || relay.is_some() {
        let changes = Changes {
            hub,
            relay: relay.clone(),
        };
        let store = store.clone();
        tasks.push((
            "store poll",
            tokio::spawn(async move {
                let mut since = unix_now();
                let mut tick = tokio::time::interval(poll_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    since = poll_once(&changes, &*store, since).await;
                }
            }),
        ));
    }
    tasks.push((
        "heartbeat and statistics writer",
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                heartbeat(&*store, &about).await;
                if let Some(relay) = &relay {
                    relay.flush().await;
                }
            }
        }),
    ));
    Background { tasks }
}

/// One safety-net poll: re-read every tenant with tunnels here (push changed settings, cut deleted tenants'
/// tunnels), and apply every secret revoked since `since` as if its event had arrived (its tunnels cut, client
/// tokens checked afresh). Returns the `since` of the next poll.
pub(crate) async fn poll_once(changes: &Changes, store: &dyn Store, since: i64) -> i64 {
    if let Some(hub) = &changes.hub {
        for name in hub.registry.tenants_with_tunnels() {
            match hub.tenants.refresh(store, &name).await {
                Ok((Refreshed::Changed(settings), _)) => hub.push_settings(&name, &settings),
                Ok((_, None)) => hub.cut_tenant(&name),
                Ok((Refreshed::Unchanged | Refreshed::Deleted, Some(_))) => {}
                Err(error) => {
                    tracing::warn!(tenant = %name, %error, "tenant refresh failed; retrying next poll");
                }
            }
        }
    }
    // Overlap the window a little: a revocation written by another node's clock-skewed host is still seen.
    let now = unix_now();
    match store.secrets_revoked_since(since - 5).await {
        Ok(revoked) => {
            for (tenant, secret_id) in revoked {
                let event = EventMsg::SecretRevoked {
                    tenant: tenant.to_string(),
                    secret_id,
                };
                changes.apply(&event).await;
            }
            now
        }
        Err(error) => {
            tracing::warn!(%error, "polling revoked secrets failed; retrying next poll");
            since
        }
    }
}

async fn heartbeat(store: &dyn Store, about: &NodeAbout) {
    let node = NodeRecord {
        id: about.node_id.clone(),
        address: about.address.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: about.started_at,
        heartbeat_at: unix_now(),
        roles: about.roles.clone(),
    };
    if let Err(error) = store.heartbeat_node(&node).await {
        tracing::warn!(%error, "node heartbeat failed");
    }
}

impl Relay {
    /// Write statistics and the request log buffered so far.
    pub async fn flush(&self) {
        if let Err(error) = self
            .stats
            .flush(&*self.store, &self.node_id, unix_now())
            .await
        {
            tracing::warn!(%error, "writing statistics failed; kept for the next flush");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::test_support::tunnel;
    use ferry_store::{SqliteStore, TenantFields};

    /// Accepts nothing: the poll never verifies tokens.
    struct NoTokens;

    #[async_trait::async_trait]
    impl ferry_auth::TokenVerifier for NoTokens {
        fn verify(&self, _token: &str) -> Result<ferry_auth::Claims, ferry_auth::AuthError> {
            Err(ferry_auth::AuthError::UnknownKey)
        }
    }

    async fn hub_with(store: Arc<dyn Store>) -> Arc<Hub> {
        Hub::new(
            "n1".into(),
            ferry_tunnel::TunnelOptions::default(),
            store,
            Arc::new(NoTokens),
            Arc::new(crate::TenantCache::default()),
        )
    }

    #[tokio::test]
    async fn the_safety_net_poll_cuts_revoked_secrets_and_deleted_tenants() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.expect("store"));
        let acme: TenantName = "acme".parse().expect("name");
        let beta: TenantName = "beta".parse().expect("name");
        for t in [&acme, &beta] {
            store
                .create_tenant(t, &TenantFields::default())
                .await
                .expect("create");
        }
        let s1 = store.add_secret(&acme, "h1", None).await.expect("secret");
        let s2 = store.add_secret(&acme, "h2", None).await.expect("secret");
        let hub = hub_with(store.clone()).await;
        hub.registry
            .attach(&acme, tunnel(&["app"], Some(&s1.id)).await);
        hub.registry
            .attach(&acme, tunnel(&["app"], Some(&s2.id)).await);
        hub.registry.attach(&beta, tunnel(&["app"], None).await);
        let changes = Changes {
            hub: Some(hub.clone()),
            relay: None,
        };
        let since = unix_now() - 1;
        // nothing changed: nothing is cut
        let since = poll_once(&changes, &*store, since).await;
        assert_eq!(hub.registry.tunnel_count(), 3);
        assert!(store.revoke_secret(&acme, &s1.id).await.expect("revoke"));
        assert!(store.delete_tenant(&beta).await.expect("delete"));
        poll_once(&changes, &*store, since).await;
        let left: Vec<Option<String>> = hub
            .registry
            .all_tunnels()
            .iter()
            .map(|t| t.secret_id.clone())
            .collect();
        assert_eq!(
            left,
            vec![Some(s2.id.clone())],
            "the revoked secret's and the deleted tenant's tunnels went"
        );
    }
}
