//! What keeps a node's relay in step with the store, in the background: tenant changes and deletions, revoked
//! secrets, the node's heartbeat and the connections table, and writing statistics and the request log.
//!
//! Every node polls the store (every [`WATCH_INTERVAL`]), so a change made through any node's management API
//! reaches every node's connectors within a few seconds; the node whose API made the change is told at once
//! ([`Relay::tenant_changed`] and friends) and acts without waiting for the poll.

use crate::endpoint::Relay;
use crate::registry::Tunnel;
use crate::tenants::Refreshed;
use ferry_proto::tunnel::{CONTROL, CONTROL_SETTINGS, SETTINGS_PATH};
use ferry_proto::{TenantName, TenantSettings};
use ferry_store::{unix_now, ConnectionRecord, NodeRecord};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request};
use std::sync::Arc;
use std::time::Duration;

/// How often tenants and revocations are polled.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// How often the node writes its heartbeat, statistics and request log.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// A node without a heartbeat for this long is taken as gone (its connections closed in the store).
pub const NODE_EXPIRY: Duration = Duration::from_secs(60);
/// How often old request log entries are deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);
/// How long a settings push may take before it is given up (the connector keeps its old settings).
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The background tasks of a relay; aborted when dropped.
pub struct Background {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Relay {
    /// Start the background tasks. `address` is the node's public URL, as listed in the nodes table.
    pub fn spawn_background(self: &Arc<Self>, address: String) -> Background {
        let started_at = unix_now();
        let watcher = {
            let relay = self.clone();
            tokio::spawn(async move {
                let mut since = unix_now();
                let mut tick = tokio::time::interval(WATCH_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    since = relay.watch_once(since).await;
                }
            })
        };
        let flusher = {
            let relay = self.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(FLUSH_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut last_prune: Option<tokio::time::Instant> = None;
                loop {
                    tick.tick().await;
                    relay.heartbeat(&address, started_at).await;
                    relay.flush().await;
                    if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_INTERVAL) {
                        relay.prune().await;
                        last_prune = Some(tokio::time::Instant::now());
                    }
                }
            })
        };
        Background {
            tasks: vec![watcher, flusher],
        }
    }

    /// One poll: refresh every tenant this node knows (push changed settings, cut deleted tenants' tunnels) and
    /// cut tunnels opened with secrets revoked since `since`. Returns the `since` of the next poll.
    async fn watch_once(self: &Arc<Self>, since: i64) -> i64 {
        let mut names = self.tenants.names();
        for name in self.registry.tenants_with_tunnels() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        for name in names {
            match self.tenants.refresh(&*self.store, &name).await {
                Ok((Refreshed::Changed(settings), _)) => self.push_settings(&name, &settings),
                Ok((_, None)) => self.cut_tenant(&name),
                Ok((Refreshed::Unchanged | Refreshed::Deleted, Some(_))) => {}
                Err(error) => {
                    tracing::warn!(tenant = %name, %error, "tenant refresh failed; retrying next poll");
                }
            }
        }
        // Overlap the window a little: a revocation written by another node's clock-skewed host is still seen.
        let now = unix_now();
        match self.store.secrets_revoked_since(since - 5).await {
            Ok(revoked) => {
                for (tenant, id) in revoked {
                    self.cut_secret(&tenant, &id);
                }
                now
            }
            Err(error) => {
                tracing::warn!(%error, "polling revoked secrets failed; retrying next poll");
                since
            }
        }
    }

    /// The management API changed the tenant: re-read it and push its settings now.
    pub async fn tenant_changed(self: &Arc<Self>, tenant: &TenantName) {
        self.tenants.forget(tenant);
        match self.tenants.refresh(&*self.store, tenant).await {
            Ok((_, Some(settings))) => self.push_settings(tenant, &settings),
            Ok((_, None)) => self.cut_tenant(tenant),
            Err(error) => {
                tracing::warn!(tenant = %tenant, %error, "tenant re-read failed; the watcher retries")
            }
        }
    }

    /// The management API deleted the tenant: cut its tunnels now.
    pub fn tenant_deleted(&self, tenant: &TenantName) {
        self.tenants.forget(tenant);
        self.cut_tenant(tenant);
    }

    /// A secret was revoked: cut the tunnels it opened now.
    pub fn secret_revoked(&self, tenant: &TenantName, secret_id: &str) {
        self.cut_secret(tenant, secret_id);
    }

    fn cut_tenant(&self, tenant: &TenantName) {
        let cut = self.registry.kill_where(tenant, |_| true);
        if cut > 0 {
            tracing::info!(tenant = %tenant, tunnels = cut, "tenant deleted: its tunnels were cut");
        }
    }

    fn cut_secret(&self, tenant: &TenantName, secret_id: &str) {
        self.secrets.forget(tenant);
        let cut = self
            .registry
            .kill_where(tenant, |t| t.secret_id.as_deref() == Some(secret_id));
        if cut > 0 {
            tracing::info!(tenant = %tenant, secret_id, tunnels = cut, "secret revoked: its tunnels were cut");
        }
    }

    /// Send the tenant's settings to each of its connectors on this node.
    pub(crate) fn push_settings(&self, tenant: &TenantName, settings: &TenantSettings) {
        if let Some(entry) = self.registry.get(tenant) {
            for tunnel in entry.tunnels() {
                spawn_push(tenant.clone(), tunnel, settings.clone());
            }
        }
    }

    /// Send the tenant's current settings to one new tunnel.
    pub(crate) fn push_settings_to(self: &Arc<Self>, tenant: &TenantName, tunnel: &Arc<Tunnel>) {
        let relay = self.clone();
        let tenant = tenant.clone();
        let tunnel = tunnel.clone();
        tokio::spawn(async move {
            match relay.tenants.get(&*relay.store, &tenant).await {
                // Nothing to say: the connector's configuration stands.
                Ok(Some(settings)) if settings == TenantSettings::default() => {}
                Ok(Some(settings)) => push(&tenant, &tunnel, &settings).await,
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(tenant = %tenant, %error, "cannot read settings for a new tunnel")
                }
            }
        });
    }

    pub(crate) fn record_connection(&self, tenant: &TenantName, tunnel: &Tunnel) {
        let record = ConnectionRecord {
            id: tunnel.record_id.clone(),
            tenant: tenant.clone(),
            connector_id: tunnel.connector_id.clone(),
            node: self.node_id.clone(),
            remote_addr: tunnel.remote_addr.to_string(),
            connected_at: unix_now(),
            disconnected_at: None,
        };
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(error) = store.record_connection(&record).await {
                tracing::warn!(tenant = %record.tenant, %error, "cannot record the connection");
            }
        });
    }

    pub(crate) fn record_disconnection(&self, tunnel: &Tunnel) {
        let id = tunnel.record_id.clone();
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(error) = store.record_disconnection(&id, unix_now()).await {
                tracing::warn!(connection = id, %error, "cannot record the disconnection");
            }
        });
    }

    async fn heartbeat(&self, address: &str, started_at: i64) {
        let now = unix_now();
        let node = NodeRecord {
            id: self.node_id.clone(),
            address: address.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at,
            heartbeat_at: now,
        };
        if let Err(error) = self.store.heartbeat_node(&node).await {
            tracing::warn!(%error, "node heartbeat failed");
        }
        let expiry = i64::try_from(NODE_EXPIRY.as_secs()).unwrap_or(60);
        match self.store.expire_nodes(now - expiry).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(nodes = n, "nodes without a heartbeat removed"),
            Err(error) => tracing::warn!(%error, "expiring old nodes failed"),
        }
    }

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

    async fn prune(&self) {
        let keep = i64::try_from(self.settings.history_retention.as_secs()).unwrap_or(i64::MAX);
        match self
            .store
            .prune_history(unix_now().saturating_sub(keep))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "old connections and statistics pruned"),
            Err(error) => tracing::warn!(%error, "pruning old connections and statistics failed"),
        }
        if !self.stats.log_enabled() {
            return;
        }
        let retention =
            i64::try_from(self.settings.request_log_retention.as_millis()).unwrap_or(i64::MAX);
        let before = unix_now().saturating_mul(1000).saturating_sub(retention);
        match self.store.prune_request_log(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "request log pruned"),
            Err(error) => tracing::warn!(%error, "pruning the request log failed"),
        }
    }
}

fn spawn_push(tenant: TenantName, tunnel: Arc<Tunnel>, settings: TenantSettings) {
    tokio::spawn(async move { push(&tenant, &tunnel, &settings).await });
}

/// Send one settings push on one tunnel and log the outcome.
async fn push(tenant: &TenantName, tunnel: &Tunnel, settings: &TenantSettings) {
    let body = match serde_json::to_vec(settings) {
        Ok(body) => body,
        Err(error) => {
            tracing::warn!(tenant = %tenant, %error, "cannot encode settings");
            return;
        }
    };
    let mut req = Request::new(ferry_http::full(body));
    *req.method_mut() = Method::POST;
    match http::Uri::builder()
        .scheme("http")
        .authority("ferry.invalid")
        .path_and_query(SETTINGS_PATH)
        .build()
    {
        Ok(uri) => *req.uri_mut() = uri,
        Err(error) => {
            tracing::warn!(%error, "settings push URI");
            return;
        }
    }
    req.headers_mut()
        .insert(CONTROL, HeaderValue::from_static(CONTROL_SETTINGS));
    req.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut sender = tunnel.sender.clone();
    let sent = tokio::time::timeout(PUSH_TIMEOUT, async {
        sender.ready().await?;
        sender.send_request(req).await
    })
    .await;
    match sent {
        Ok(Ok(resp)) if resp.status().is_success() => {
            tracing::info!(tenant = %tenant, connector_id = tunnel.connector_id, "settings pushed")
        }
        Ok(Ok(resp)) => tracing::warn!(
            tenant = %tenant, connector_id = tunnel.connector_id, status = resp.status().as_u16(),
            "connector refused the settings push"
        ),
        Ok(Err(error)) => tracing::warn!(
            tenant = %tenant, connector_id = tunnel.connector_id, %error, "settings push failed"
        ),
        Err(_) => tracing::warn!(
            tenant = %tenant, connector_id = tunnel.connector_id, "settings push timed out"
        ),
    }
}
