//! The relay across nodes: a request whose tenant has no connector on this node goes to the tenant's dispatch
//! queue on the bus, one of the nodes holding its connectors claims it and runs it, and the response comes back
//! to this node's inbox (docs/cluster.md).
//!
//! Owns: the node's place on the bus ([`Cluster`]: its inbox, presence, events, the dispatch-queue
//! subscriptions of the tenants whose tunnels are here), the origin side of a cross-node request
//! ([`origin`]), the executing side ([`executor`]), bodies between nodes with flow control ([`flow`]), the stream
//! table ([`streams`]) and presence ([`presence`]). Delivery rules (written in docs/cluster.md and tested): a
//! request runs on at most one connector (a request sent to one node's inbox runs there or nowhere, and is sent
//! elsewhere only when it came back unrun; a request from a dispatch queue runs only after the origin granted
//! its claim, and the origin grants one claim per request); a queued request nobody claims within the claim
//! timeout is published again; a request past its expiration is neither granted nor run.

pub(crate) mod executor;
pub(crate) mod flow;
pub mod link;
pub(crate) mod origin;
pub mod presence;
pub(crate) mod streams;
#[cfg(test)]
mod tests;

use crate::hub::Hub;
use crate::registry::{Tunnel, TunnelEvent};
use ferry_bus::{Bus, BusError, Subscription};
use ferry_config::ClusterSettings;
use ferry_proto::cluster::{
    self, AbortReason, ConnectorInfo, Decoded, EventMsg, Message, NodeInfo, PresenceMsg, Subjects,
    DISPATCH_GROUP,
};
use ferry_proto::TenantName;
use ferry_store::unix_now;
use presence::{Applied, Presence};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use streams::{Inbound, Streams};
use tokio::task::JoinHandle;

/// Bodies up to this size travel inside the request or response message instead of as chunks.
pub(crate) const INLINE_MAX: u64 = 16 * 1024;

/// What this node tells the cluster about itself.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub node_id: String,
    /// Comma-separated roles.
    pub roles: String,
    /// The address operators and other nodes see.
    pub address: String,
    pub version: String,
    /// Unix seconds.
    pub started_at: i64,
}

/// Applies a configuration change heard on the bus (from another node's management API).
pub type EventListener = Arc<dyn Fn(&EventMsg) + Send + Sync>;

/// This node in its cluster.
pub struct Cluster {
    pub(crate) me: NodeIdentity,
    pub(crate) subjects: Subjects,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) settings: ClusterSettings,
    pub(crate) presence: Presence,
    pub(crate) streams: Arc<Streams>,
    pub(crate) hub: Option<Arc<Hub>>,
    generation: AtomicU64,
    worker_active: AtomicBool,
    listener: OnceLock<EventListener>,
    /// The dispatch-queue consumers, by tenant with tunnels here.
    consumers: Mutex<HashMap<TenantName, JoinHandle<()>>>,
    /// The long-lived tasks, by name, until their owner takes them ([`Cluster::take_tasks`]).
    tasks: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
    /// Nodes asked for a snapshot recently, and when (one question per heartbeat interval).
    asked: Mutex<HashMap<String, Instant>>,
    /// Round robin over the connectors of a tenant on other nodes, for requests sent to one node's inbox.
    pub(crate) next_pick: AtomicUsize,
    /// Requests other nodes sent to this node's inbox, running here: (origin node, origin stream) → this node's
    /// stream, so that a cancel naming the origin's stream reaches them.
    pub(crate) direct: Arc<Mutex<HashMap<(String, u64), u64>>>,
    /// The node links, once enabled ([`Cluster::enable_links`]).
    pub(crate) links: OnceLock<link::Links>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cluster {
    /// Join the cluster: subscribe to this node's inbox, presence and events, announce this node, and (with a
    /// hub) follow its tunnels to keep presence and the dispatch-queue subscriptions in step.
    pub async fn start(
        bus: Arc<dyn Bus>,
        me: NodeIdentity,
        settings: ClusterSettings,
        hub: Option<Arc<Hub>>,
    ) -> Result<Arc<Self>, BusError> {
        let subjects = Subjects::new(&settings.name);
        let inbox_sub = bus.subscribe(&subjects.inbox(&me.node_id)).await?;
        let presence_sub = bus.subscribe(&subjects.presence()).await?;
        let events_sub = bus.subscribe(&subjects.events()).await?;
        let cluster = Arc::new(Self {
            subjects,
            presence: Presence::new(me.node_id.clone()),
            bus,
            settings,
            streams: Arc::new(Streams::default()),
            hub: hub.clone(),
            generation: AtomicU64::new(0),
            worker_active: AtomicBool::new(false),
            listener: OnceLock::new(),
            consumers: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            asked: Mutex::new(HashMap::new()),
            next_pick: AtomicUsize::new(0),
            direct: Arc::new(Mutex::new(HashMap::new())),
            links: OnceLock::new(),
            me,
        });
        cluster.presence.heartbeat(&cluster.info(), unix_now());
        let mut tasks = vec![
            (
                "cluster inbox",
                tokio::spawn(cluster.clone().read_inbox(inbox_sub)),
            ),
            (
                "cluster presence",
                tokio::spawn(cluster.clone().read_presence(presence_sub)),
            ),
            (
                "cluster events",
                tokio::spawn(cluster.clone().read_events(events_sub)),
            ),
            (
                "cluster heartbeats",
                tokio::spawn(cluster.clone().heartbeats()),
            ),
        ];
        if let Some(hub) = hub {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            hub.registry.set_event_sink(tx);
            // tunnels attached before the sink was set (none in practice: the listener is not serving yet)
            for tunnel in hub.registry.all_tunnels() {
                cluster.on_tunnel(TunnelEvent::Attached {
                    first: true,
                    tunnel,
                });
            }
            tasks.push((
                "cluster tunnel follower",
                tokio::spawn(cluster.clone().follow_tunnels(rx)),
            ));
        }
        *lock(&cluster.tasks) = tasks;
        cluster.announce().await;
        tracing::info!(node_id = %cluster.me.node_id, bus = cluster.bus.kind(), "joined the cluster");
        Ok(cluster)
    }

    /// Where the cluster's connectors are, as this node sees it.
    pub fn presence(&self) -> &Presence {
        &self.presence
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// Apply configuration changes heard from other nodes with `listener` (set once).
    pub fn set_event_listener(&self, listener: EventListener) {
        let _ = self.listener.set(listener);
    }

    /// Tell every other node about a configuration change made here (this node applies it itself).
    pub async fn publish_event(&self, event: EventMsg) {
        let message = Message::Event {
            origin: self.me.node_id.clone(),
            event,
        };
        if let Err(error) = self
            .bus
            .publish(&self.subjects.events(), cluster::encode(&message))
            .await
        {
            tracing::warn!(%error, "cannot announce a configuration change on the bus; other nodes see it at their next store poll");
        }
    }

    /// Whether this node holds the worker lease (shown in presence and the nodes endpoint).
    pub fn set_worker_active(&self, active: bool) {
        self.worker_active.store(active, Ordering::Relaxed);
        self.presence.heartbeat(&self.info(), unix_now());
    }

    /// Cross-node streams open on this node now.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Leave the cluster: tell the others to forget this node and its connectors now, then stop every task.
    pub async fn leave(&self) {
        let leave = Message::Presence(PresenceMsg::Leave(self.me.node_id.clone()));
        if let Err(error) = self
            .bus
            .publish(&self.subjects.presence(), cluster::encode(&leave))
            .await
        {
            tracing::warn!(%error, "cannot announce leaving the cluster; the others forget this node when its heartbeats stop");
        }
        let _ = self.bus.flush().await;
        self.stop();
    }

    /// The cluster's long-lived tasks, for a supervisor that acts when one ends (each runs for the node's life;
    /// one that ends has failed). Whoever takes them aborts them at shutdown.
    pub fn take_tasks(&self) -> Vec<(&'static str, JoinHandle<()>)> {
        std::mem::take(&mut *lock(&self.tasks))
    }

    /// Stop every task of this node's cluster membership that is still its own.
    pub fn stop(&self) {
        for (_, task) in lock(&self.tasks).drain(..) {
            task.abort();
        }
        for (_, task) in lock(&self.consumers).drain() {
            task.abort();
        }
    }

    pub(crate) fn info(&self) -> NodeInfo {
        NodeInfo {
            node: self.me.node_id.clone(),
            roles: self.me.roles.clone(),
            address: self.me.address.clone(),
            version: self.me.version.clone(),
            started_at: self.me.started_at,
            generation: self.generation.load(Ordering::SeqCst),
            worker_active: self.worker_active.load(Ordering::Relaxed),
        }
    }

    pub(crate) async fn send_to(&self, node: &str, message: &Message) {
        if let Err(error) = self
            .bus
            .publish(&self.subjects.inbox(node), cluster::encode(message))
            .await
        {
            tracing::debug!(node, %error, "cluster message not sent");
        }
    }

    /// Every connector of this node, for a snapshot.
    fn own_connectors(&self) -> Vec<ConnectorInfo> {
        self.hub
            .as_ref()
            .map(|h| {
                h.registry
                    .all_tunnels()
                    .iter()
                    .map(|t| connector_info(t))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Announce this node with all its connectors (at start; others may have missed its earlier life).
    async fn announce(&self) {
        let snapshot = Message::Presence(PresenceMsg::Snapshot(self.info(), self.own_connectors()));
        if let Err(error) = self
            .bus
            .publish(&self.subjects.presence(), cluster::encode(&snapshot))
            .await
        {
            tracing::warn!(%error, "cannot announce this node on the bus");
        }
    }

    async fn read_inbox(self: Arc<Self>, mut sub: Subscription) {
        while let Some(raw) = sub.next().await {
            match cluster::decode(raw) {
                Ok(Decoded::Data(d)) => {
                    self.streams.deliver(d.stream, Inbound::Data(d));
                }
                Ok(Decoded::Message(m)) => self.route(m).await,
                Err(error) => tracing::warn!(%error, "undecodable message in the inbox"),
            }
        }
        tracing::warn!("the inbox subscription ended");
    }

    async fn route(self: &Arc<Self>, message: Message) {
        match message {
            Message::Claim {
                origin_stream,
                executor,
                executor_stream,
            } => {
                let delivered = self.streams.deliver(
                    origin_stream,
                    Inbound::Claim {
                        executor: executor.clone(),
                        executor_stream,
                    },
                );
                if !delivered {
                    // the request is answered, given up or went elsewhere: the claimant must not run it
                    self.send_to(
                        &executor,
                        &Message::Deny {
                            stream: executor_stream,
                        },
                    )
                    .await;
                }
            }
            Message::Grant { stream } => {
                self.streams.deliver(stream, Inbound::Grant);
            }
            Message::Deny { stream } => {
                self.streams.deliver(stream, Inbound::Deny);
            }
            Message::Decline { stream } => {
                self.streams.deliver(stream, Inbound::Decline);
            }
            Message::Head { stream, head } => {
                self.streams.deliver(stream, Inbound::Head(head));
            }
            Message::End {
                stream,
                chunks,
                trailers,
            } => {
                self.streams
                    .deliver(stream, Inbound::End { chunks, trailers });
            }
            Message::Credit { stream, consumed } => self.streams.credit(stream, consumed),
            Message::Abort { stream, reason } => {
                self.streams.deliver(stream, Inbound::Abort(reason));
            }
            Message::Presence(PresenceMsg::SyncRequest { reply_to }) => {
                let snapshot =
                    Message::Presence(PresenceMsg::Snapshot(self.info(), self.own_connectors()));
                self.send_to(&reply_to, &snapshot).await;
            }
            Message::Presence(p) => self.apply_presence(p).await,
            Message::Request(req) => {
                // sent to this node directly: registered before the next inbox message (a cancel) is read
                let run = executor::Direct::register(self, &req);
                tokio::spawn(executor::execute(self.clone(), *req, Some(run)));
            }
            Message::Answer {
                stream,
                executor,
                executor_stream,
                head,
            } => {
                let delivered = self.streams.deliver(
                    stream,
                    Inbound::Answer {
                        executor: executor.clone(),
                        executor_stream,
                        head,
                    },
                );
                if !delivered {
                    // the client went away meanwhile: stop what is still running there
                    self.send_to(
                        &executor,
                        &Message::Abort {
                            stream: executor_stream,
                            reason: AbortReason::Cancelled,
                        },
                    )
                    .await;
                }
            }
            Message::Cancel {
                origin,
                origin_stream,
            } => {
                let own = lock(&self.direct).get(&(origin, origin_stream)).copied();
                if let Some(own) = own {
                    self.streams
                        .deliver(own, Inbound::Abort(AbortReason::Cancelled));
                }
            }
            Message::Event { .. } => {
                tracing::debug!("unexpected message kind in the inbox");
            }
        }
    }

    async fn read_presence(self: Arc<Self>, mut sub: Subscription) {
        while let Some(raw) = sub.next().await {
            match cluster::decode(raw) {
                Ok(Decoded::Message(Message::Presence(p))) => self.apply_presence(p).await,
                Ok(_) => tracing::debug!("unexpected message kind on the presence subject"),
                Err(error) => tracing::warn!(%error, "undecodable presence message"),
            }
        }
        tracing::warn!("the presence subscription ended");
    }

    async fn apply_presence(self: &Arc<Self>, message: PresenceMsg) {
        let now = unix_now();
        let (node, applied) = match message {
            PresenceMsg::Heartbeat(info) => {
                if info.node == self.me.node_id {
                    return;
                }
                let known = self
                    .presence
                    .nodes()
                    .iter()
                    .any(|n| n.info.node == info.node);
                if !known {
                    tracing::info!(node = %info.node, roles = %info.roles, address = %info.address, "node joined");
                }
                let applied = self.presence.heartbeat(&info, now);
                (info.node, applied)
            }
            PresenceMsg::Attached(info, c) => {
                if info.node == self.me.node_id {
                    return;
                }
                let applied = self.presence.attached(&info, c, now);
                (info.node, applied)
            }
            PresenceMsg::Detached(info, record_id) => {
                if info.node == self.me.node_id {
                    return;
                }
                let applied = self.presence.detached(&info, &record_id, now);
                (info.node, applied)
            }
            PresenceMsg::Snapshot(info, connectors) => {
                if info.node != self.me.node_id {
                    self.presence.snapshot(&info, connectors, now);
                }
                return;
            }
            PresenceMsg::Leave(node) => {
                if node != self.me.node_id && self.presence.forget(&node) {
                    if let Some(links) = self.links.get() {
                        links.forget(&node);
                    }
                    let cut = self.streams.peer_gone(&node);
                    tracing::info!(node, streams_cut = cut, "node left the cluster");
                }
                return;
            }
            PresenceMsg::SyncRequest { .. } => return,
        };
        if applied == Applied::NeedSync {
            let due = {
                let mut asked = lock(&self.asked);
                let due = asked
                    .get(&node)
                    .is_none_or(|at| at.elapsed() >= self.settings.heartbeat_interval);
                if due {
                    asked.insert(node.clone(), Instant::now());
                }
                due
            };
            if due {
                let ask = Message::Presence(PresenceMsg::SyncRequest {
                    reply_to: self.me.node_id.clone(),
                });
                self.send_to(&node, &ask).await;
            }
        }
    }

    async fn read_events(self: Arc<Self>, mut sub: Subscription) {
        while let Some(raw) = sub.next().await {
            match cluster::decode(raw) {
                Ok(Decoded::Message(Message::Event { origin, event })) => {
                    if origin == self.me.node_id {
                        continue;
                    }
                    tracing::info!(from = %origin, ?event, "configuration change");
                    if let Some(listener) = self.listener.get() {
                        listener(&event);
                    }
                }
                Ok(_) => tracing::debug!("unexpected message kind on the events subject"),
                Err(error) => tracing::warn!(%error, "undecodable event"),
            }
        }
        tracing::warn!("the events subscription ended");
    }

    /// Announce this node every heartbeat interval and forget the nodes that went silent.
    async fn heartbeats(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_connected = true;
        loop {
            tick.tick().await;
            let info = self.info();
            self.presence.heartbeat(&info, unix_now());
            let beat = Message::Presence(PresenceMsg::Heartbeat(info));
            let connected = self.bus.is_connected();
            if connected != was_connected {
                if connected {
                    tracing::info!(bus = self.bus.kind(), "bus connection is back");
                } else {
                    tracing::warn!(bus = self.bus.kind(), "bus connection lost; requests for tenants on other nodes get 503 cluster_unavailable until it is back");
                }
                was_connected = connected;
            }
            if let Err(error) = self
                .bus
                .publish(&self.subjects.presence(), cluster::encode(&beat))
                .await
            {
                tracing::debug!(%error, "heartbeat not sent");
            }
            let horizon = Instant::now()
                .checked_sub(self.settings.node_expiry)
                .unwrap_or_else(Instant::now);
            for node in self.presence.expire(horizon) {
                if let Some(links) = self.links.get() {
                    links.forget(&node);
                }
                let cut = self.streams.peer_gone(&node);
                lock(&self.asked).remove(&node);
                tracing::warn!(node, streams_cut = cut, expiry = ?self.settings.node_expiry, "node went silent and was forgotten");
            }
        }
    }

    async fn follow_tunnels(
        self: Arc<Self>,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<TunnelEvent>,
    ) {
        while let Some(event) = rx.recv().await {
            let message = self.on_tunnel(event);
            if let Err(error) = self
                .bus
                .publish(&self.subjects.presence(), cluster::encode(&message))
                .await
            {
                tracing::debug!(%error, "presence change not sent; the next heartbeat shows the gap");
            }
        }
    }

    /// Apply a tunnel change to this node's own presence and dispatch subscriptions; returns the message that
    /// tells the others.
    fn on_tunnel(self: &Arc<Self>, event: TunnelEvent) -> Message {
        let now = unix_now();
        match event {
            TunnelEvent::Attached { tunnel, first } => {
                self.generation.fetch_add(1, Ordering::SeqCst);
                let info = self.info();
                let c = connector_info(&tunnel);
                self.presence.attached(&info, c.clone(), now);
                if first {
                    self.start_consumer(tunnel.tenant.clone());
                }
                Message::Presence(PresenceMsg::Attached(info, c))
            }
            TunnelEvent::Detached { tunnel, last } => {
                self.generation.fetch_add(1, Ordering::SeqCst);
                let info = self.info();
                self.presence.detached(&info, &tunnel.record_id, now);
                if last {
                    if let Some(task) = lock(&self.consumers).remove(&tunnel.tenant) {
                        task.abort();
                    }
                }
                Message::Presence(PresenceMsg::Detached(info, tunnel.record_id.clone()))
            }
        }
    }

    /// Consume the tenant's dispatch queue while the tenant has tunnels here.
    fn start_consumer(self: &Arc<Self>, tenant: TenantName) {
        let cluster = self.clone();
        let subject = self.subjects.dispatch(tenant.as_str());
        let task = tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                match cluster.bus.queue_subscribe(&subject, DISPATCH_GROUP).await {
                    Ok(mut sub) => {
                        delay = Duration::from_millis(100);
                        while let Some(raw) = sub.next().await {
                            match cluster::decode(raw) {
                                Ok(Decoded::Message(Message::Request(req))) => {
                                    tokio::spawn(executor::execute(cluster.clone(), *req, None));
                                }
                                Ok(_) => tracing::debug!(
                                    subject,
                                    "unexpected message kind in a dispatch queue"
                                ),
                                Err(error) => {
                                    tracing::warn!(subject, %error, "undecodable request")
                                }
                            }
                        }
                        tracing::warn!(subject, "dispatch subscription ended; subscribing again");
                    }
                    Err(error) => {
                        tracing::warn!(subject, %error, "cannot subscribe to the dispatch queue; retrying");
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        });
        if let Some(old) = lock(&self.consumers).insert(tenant, task) {
            old.abort();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn connector_info(t: &Tunnel) -> ConnectorInfo {
    ConnectorInfo {
        record_id: t.record_id.clone(),
        tenant: t.tenant.to_string(),
        connector_id: t.connector_id.clone(),
        targets: t.targets.iter().map(|x| x.to_string()).collect(),
        since: t.since,
        remote_addr: t.remote_addr.to_string(),
    }
}

/// Unix milliseconds now.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
