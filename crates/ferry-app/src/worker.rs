//! The worker role's chores on this node: pruning old connections, statistics and request-log entries, and
//! removing nodes whose heartbeat stopped.
//!
//! Interim: these run on every node with the worker role, as they ran on every node before roles existed; the
//! `ferry-worker` crate (one active worker per cluster by a lease in the store) replaces this module.

use ferry_config::RelaySettings;
use ferry_relay::Cluster;
use ferry_store::{unix_now, Store};
use std::sync::Arc;
use std::time::Duration;

/// How often the chores run.
const INTERVAL: Duration = Duration::from_secs(60);
/// A node without a heartbeat for this long is taken as gone (its connections closed in the store).
const NODE_EXPIRY: Duration = Duration::from_secs(60);

/// The chores' task; aborted when dropped.
pub(crate) struct Chores(tokio::task::JoinHandle<()>);

impl Drop for Chores {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn spawn(
    store: Arc<dyn Store>,
    settings: RelaySettings,
    cluster: Arc<Cluster>,
) -> Chores {
    let _ = cluster;
    Chores(tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            run_once(&*store, &settings).await;
        }
    }))
}

async fn run_once(store: &dyn Store, settings: &RelaySettings) {
    let now = unix_now();
    let expiry = i64::try_from(NODE_EXPIRY.as_secs()).unwrap_or(60);
    match store.expire_nodes(now - expiry).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(nodes = n, "nodes without a heartbeat removed"),
        Err(error) => tracing::warn!(%error, "expiring old nodes failed"),
    }
    let keep = i64::try_from(settings.history_retention.as_secs()).unwrap_or(i64::MAX);
    match store.prune_history(now.saturating_sub(keep)).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(rows = n, "old connections and statistics pruned"),
        Err(error) => tracing::warn!(%error, "pruning old connections and statistics failed"),
    }
    if !settings.request_log {
        return;
    }
    let retention = i64::try_from(settings.request_log_retention.as_millis()).unwrap_or(i64::MAX);
    let before = now.saturating_mul(1000).saturating_sub(retention);
    match store.prune_request_log(before).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(entries = n, "request log pruned"),
        Err(error) => tracing::warn!(%error, "pruning the request log failed"),
    }
}
