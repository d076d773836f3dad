//! Where a relayed request goes: the dispatch seam between this node's own tunnels and the cluster.
//!
//! A tunnel of the tenant on this node serving the target is used first, with no bus hop (the one-node path,
//! unchanged); else a node that presence shows holding such a connector, through the bus
//! ([`crate::cluster`]): over a node link to that node when there is one, else through the bus. With neither, the request waits up to `connector_wait` for one to appear anywhere (a
//! tunnel attaching here, or presence showing one elsewhere), then gets `503 no_connector`; when connectors of
//! the tenant are up but none serves the target, `404 unknown_target` at once.

use crate::cluster::link::LinkOutcome;
use crate::cluster::origin::{RemoteAnswer, Sent};
use crate::cluster::presence::Lookup;
use crate::cluster::Cluster;
use crate::hub::Hub;
use crate::local::{self, LocalOutcome, TunnelReply};
use crate::registry::TunnelSlot;
use ferry_http::Body;
use ferry_proto::{ErrorCode, ErrorReply, TargetName, TenantName};
use hyper::{Request, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Why a request could not be relayed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("tenant {0:?} does not exist")]
    UnknownTenant(String),
    #[error("no connector of tenant {tenant:?} serves target {target:?}")]
    UnknownTarget { tenant: String, target: String },
    #[error("no connector of tenant {0:?} came online within {1:?}")]
    NoConnector(String, Duration),
    #[error("tenant {0:?} has reached its limit of {1} requests in flight")]
    TenantBusy(String, usize),
    #[error("the connector carrying the request went away: {0}")]
    ConnectorLost(String),
    #[error("no response within the request expiration of {0:?}")]
    Expired(Duration),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(u64),
    #[error("the request body could not be read: {0}")]
    ClientBody(String),
    #[error("the node is draining and takes no new requests")]
    Draining,
    #[error("the tenant's connectors are on other nodes and the bus is unavailable: {0}")]
    ClusterUnavailable(String),
    #[error("store: {0}")]
    Store(String),
}

impl RelayError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnknownTenant(_) => ErrorCode::UnknownTenant,
            Self::UnknownTarget { .. } => ErrorCode::UnknownTarget,
            Self::NoConnector(..) => ErrorCode::NoConnector,
            Self::TenantBusy(..) => ErrorCode::TenantBusy,
            Self::ConnectorLost(_) => ErrorCode::ConnectorLost,
            Self::Expired(_) => ErrorCode::RequestExpired,
            Self::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::ClientBody(_) => ErrorCode::BadRequest,
            Self::Draining => ErrorCode::Draining,
            Self::ClusterUnavailable(_) => ErrorCode::ClusterUnavailable,
            Self::Store(_) => ErrorCode::Internal,
        }
    }

    /// The client's reply: the causes that may name a node, a broker or the store's address are for the log line
    /// only ([`ErrorReply::detail`]).
    pub fn reply(&self) -> ErrorReply {
        match self {
            Self::ConnectorLost(why) => {
                ErrorReply::new(self.code(), "the connector carrying the request went away")
                    .with_detail(why.clone())
            }
            Self::ClusterUnavailable(why) => ErrorReply::new(
                self.code(),
                "the tenant's connectors are on other nodes and the bus is unavailable",
            )
            .with_detail(why.clone()),
            Self::Store(why) => {
                ErrorReply::new(self.code(), "the store could not be read").with_detail(why.clone())
            }
            _ => ErrorReply::new(self.code(), self.to_string()),
        }
    }
}

/// How long a request for a target no known connector serves waits for presence to show one, in a cluster,
/// before `404 unknown_target` (a connector that just attached to another node is known there first).
const UNKNOWN_TARGET_GRACE: Duration = Duration::from_secs(1);

/// Where a request was answered.
pub(crate) enum Answer {
    /// By a connector on this node: hold the slot until the response body ends.
    Local(Response<TunnelReply>, TunnelSlot),
    /// By a connector on another node.
    Remote(RemoteAnswer),
}

/// The two ways to a tenant's connectors.
pub struct Dispatcher {
    pub(crate) hub: Option<Arc<Hub>>,
    pub(crate) cluster: Option<Arc<Cluster>>,
    pub(crate) connector_wait: Duration,
}

/// One request on its way out, with what the cluster path needs to know of it.
pub(crate) struct Outbound<'a> {
    pub tenant: &'a TenantName,
    pub target: &'a TargetName,
    pub request_id: &'a str,
    pub upgrade: Option<String>,
    pub deadline: Instant,
    /// Whether the request may go to another node over a node link (not when it came from one: a request crosses
    /// at most one link).
    pub by_link: bool,
}

impl Dispatcher {
    pub fn new(
        hub: Option<Arc<Hub>>,
        cluster: Option<Arc<Cluster>>,
        connector_wait: Duration,
    ) -> Self {
        Self {
            hub,
            cluster,
            connector_wait,
        }
    }

    /// Send `req` to a connector of the tenant serving the target: this node's first, else another node's.
    pub(crate) async fn send(
        &self,
        out: Outbound<'_>,
        mut req: Request<Body>,
    ) -> Result<Answer, RelayError> {
        let first_look = Instant::now();
        let wait_until = first_look + self.connector_wait;
        loop {
            let mut tenant_elsewhere = false;
            if let Some(entry) = self.hub.as_ref().and_then(|h| h.registry.get(out.tenant)) {
                match local::try_send(&entry, out.target, req).await {
                    LocalOutcome::Sent(resp, slot) => return Ok(Answer::Local(resp, slot)),
                    LocalOutcome::Lost(e) => return Err(RelayError::ConnectorLost(e)),
                    LocalOutcome::NoTunnel(r) => req = r,
                    LocalOutcome::NoSuchTarget(r) => {
                        tenant_elsewhere = true;
                        req = r;
                    }
                }
            }
            if let Some(cluster) = &self.cluster {
                match cluster
                    .presence
                    .lookup(out.tenant.as_str(), out.target.as_str())
                {
                    Lookup::Serves => {
                        if out.by_link && out.upgrade.is_none() {
                            match cluster.send_by_link(&out, req).await {
                                LinkOutcome::Answered(response) => {
                                    return Ok(Answer::Remote(RemoteAnswer {
                                        response,
                                        upgrade: None,
                                    }))
                                }
                                LinkOutcome::Lost(e) => return Err(RelayError::ConnectorLost(e)),
                                LinkOutcome::Unsent(r) => req = r,
                            }
                        }
                        if !cluster.bus.is_connected() {
                            return Err(RelayError::ClusterUnavailable(format!(
                                "the {} bus is disconnected",
                                cluster.bus.kind()
                            )));
                        }
                        match cluster
                            .send(
                                out.tenant,
                                out.target,
                                req,
                                out.upgrade.clone(),
                                out.request_id,
                                out.deadline,
                            )
                            .await?
                        {
                            Sent::Answered(answer) => return Ok(Answer::Remote(answer)),
                            Sent::NotTaken(r) => {
                                req = r;
                                // presence changed under the request: look again at once
                                continue;
                            }
                        }
                    }
                    Lookup::OtherTargets => tenant_elsewhere = true,
                    Lookup::Nowhere => {}
                }
            }
            if tenant_elsewhere {
                // Presence is a few milliseconds behind the nodes it describes: in a cluster, a connector serving
                // the target may have just attached elsewhere. Give it a short grace before the 404.
                let peers = self
                    .cluster
                    .as_ref()
                    .is_some_and(|c| c.presence.has_peers());
                let grace_until = first_look + UNKNOWN_TARGET_GRACE.min(self.connector_wait);
                if !peers || Instant::now() >= grace_until {
                    return Err(RelayError::UnknownTarget {
                        tenant: out.tenant.to_string(),
                        target: out.target.to_string(),
                    });
                }
                if let Some(cluster) = &self.cluster {
                    let changed = cluster.presence.changed.notified();
                    let _ = tokio::time::timeout_at(grace_until, changed).await;
                }
                continue;
            }
            // Nowhere to send it: wait for a tunnel here or a connector elsewhere. The waits are armed only now
            // (arming one takes a lock that every request would otherwise contend on), then the sources are looked
            // at once more so that an attach between the look above and the arming is not missed.
            let local_attached = self.hub.as_ref().map(|h| h.registry.changed.notified());
            let remote_appeared = self.cluster.as_ref().map(|c| c.presence.changed.notified());
            tokio::pin!(local_attached, remote_appeared);
            if let Some(n) = local_attached.as_mut().as_pin_mut() {
                n.enable();
            }
            if let Some(n) = remote_appeared.as_mut().as_pin_mut() {
                n.enable();
            }
            let here = self
                .hub
                .as_ref()
                .and_then(|h| h.registry.get(out.tenant))
                .is_some();
            let elsewhere = self.cluster.as_ref().is_some_and(|c| {
                c.presence.lookup(out.tenant.as_str(), out.target.as_str()) != Lookup::Nowhere
            });
            if here || elsewhere {
                if Instant::now() >= wait_until {
                    return Err(RelayError::NoConnector(
                        out.tenant.to_string(),
                        self.connector_wait,
                    ));
                }
                // tunnels here all closing: give them a moment instead of spinning
                if here && !elsewhere {
                    let pause = tokio::time::sleep(std::time::Duration::from_millis(10));
                    tokio::select! {
                        () = pause => {},
                        () = async { if let Some(n) = local_attached.as_mut().as_pin_mut() { n.await } } => {},
                    }
                }
                continue;
            }
            let waited = async {
                match (
                    local_attached.as_mut().as_pin_mut(),
                    remote_appeared.as_mut().as_pin_mut(),
                ) {
                    (Some(a), Some(b)) => {
                        tokio::select! {
                            () = a => {},
                            () = b => {},
                        }
                    }
                    (Some(a), None) => a.await,
                    (None, Some(b)) => b.await,
                    (None, None) => std::future::pending().await,
                }
            };
            if tokio::time::timeout_at(wait_until, waited).await.is_err() {
                return Err(RelayError::NoConnector(
                    out.tenant.to_string(),
                    self.connector_wait,
                ));
            }
        }
    }
}
