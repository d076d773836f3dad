//! The open tunnels of each tenant on this node, and the choice of one for a request.
//!
//! A request goes to the tunnel with the fewest requests in flight among those serving its target; ties are
//! broken round robin, so equal connectors share the load evenly. A tunnel served on the request's own core
//! (`ferry_http::cores`) is taken instead while it has at most twice as many in flight, plus [`LOCAL_SLACK`]:
//! the request then never leaves its thread. A tenant has an entry only while it has
//! tunnels here (the map cannot be grown by requests for made-up tenants); waiters for a tunnel are woken by
//! [`Registry::changed`] whenever one attaches. Every attach and detach is also sent to the registry's event
//! sink, which drives presence and dispatch-queue subscriptions in a cluster (`crate::cluster`).

use crate::local::TunnelSender;
use crate::TenantMap;
use ferry_proto::{TargetName, TenantName};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;

/// One open tunnel.
pub struct Tunnel {
    /// Node-local id, unique for this process.
    pub id: u64,
    /// Globally unique id of this tunnel: its row in the store's connections.
    pub record_id: String,
    pub tenant: TenantName,
    pub connector_id: String,
    pub remote_addr: SocketAddr,
    pub targets: Vec<TargetName>,
    /// The connector secret whose token opened the tunnel (built-in issuer only): revoking it closes the tunnel.
    pub secret_id: Option<String>,
    /// Unix seconds.
    pub since: i64,
    pub(crate) sender: TunnelSender,
    /// The core (`ferry_http::cores`) whose thread serves the tunnel's connection, if it is on one.
    pub core: Option<usize>,
    inflight: AtomicUsize,
    closing: AtomicBool,
    /// Signalled to cut the tunnel at once (tenant deleted, secret revoked), in-flight requests included.
    pub(crate) kill: Notify,
}

impl Tunnel {
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_closing(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }
}

/// The tunnels of one tenant.
#[derive(Default)]
pub struct TenantTunnels {
    tunnels: Mutex<Vec<Arc<Tunnel>>>,
    round_robin: AtomicUsize,
}

/// A tunnel on the request's own core is preferred while its requests in flight are at most twice the least
/// loaded tunnel's plus this.
pub const LOCAL_SLACK: usize = 4;

/// What [`TenantTunnels::pick`] found.
pub enum Pick {
    Tunnel(Arc<Tunnel>),
    /// Tunnels are open, but none serves the target.
    NoSuchTarget,
    /// No tunnel is open, or all serving the target are closing.
    NoTunnel,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding this lock leaves a Vec in a valid state; keep serving.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TenantTunnels {
    pub fn pick(&self, target: &TargetName) -> Pick {
        let tunnels = lock(&self.tunnels);
        if tunnels.iter().all(|t| t.is_closing()) {
            return Pick::NoTunnel;
        }
        let start = self.round_robin.fetch_add(1, Ordering::Relaxed);
        let n = tunnels.len();
        let core = ferry_http::cores::current();
        let mut best: Option<&Arc<Tunnel>> = None;
        let mut local: Option<&Arc<Tunnel>> = None;
        let mut closing_with_target = false;
        for i in 0..n {
            let t = &tunnels[(start + i) % n];
            if !t.targets.contains(target) {
                continue;
            }
            if t.is_closing() {
                closing_with_target = true;
                continue;
            }
            if best.is_none_or(|b| t.inflight() < b.inflight()) {
                best = Some(t);
            }
            if core.is_some() && t.core == core && local.is_none_or(|l| t.inflight() < l.inflight())
            {
                local = Some(t);
            }
        }
        if let (Some(l), Some(b)) = (local, best) {
            if l.inflight() <= b.inflight().saturating_mul(2) + LOCAL_SLACK {
                best = Some(l);
            }
        }
        match best {
            Some(t) => Pick::Tunnel(t.clone()),
            // The connectors serving this target are going away (draining, restarting): wait for one to return.
            None if closing_with_target => Pick::NoTunnel,
            None => Pick::NoSuchTarget,
        }
    }

    /// Whether a tunnel that is not closing serves `target`.
    pub fn serves(&self, target: &TargetName) -> bool {
        lock(&self.tunnels)
            .iter()
            .any(|t| !t.is_closing() && t.targets.contains(target))
    }

    pub fn tunnels(&self) -> Vec<Arc<Tunnel>> {
        lock(&self.tunnels).clone()
    }

    /// Requests in flight on this tenant's tunnels.
    pub fn inflight(&self) -> usize {
        lock(&self.tunnels).iter().map(|t| t.inflight()).sum()
    }
}

/// A request counted on its tunnel until dropped (with the response body's end).
pub struct TunnelSlot(Arc<Tunnel>);

impl TunnelSlot {
    pub fn new(tunnel: Arc<Tunnel>) -> Self {
        tunnel.inflight.fetch_add(1, Ordering::Relaxed);
        Self(tunnel)
    }
}

impl Drop for TunnelSlot {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What [`Registry::attach`] needs to know of a new tunnel.
pub(crate) struct NewTunnel {
    pub record_id: String,
    pub connector_id: String,
    pub remote_addr: SocketAddr,
    pub targets: Vec<TargetName>,
    pub secret_id: Option<String>,
    pub since: i64,
    pub sender: TunnelSender,
}

/// A tunnel attached to or detached from this node.
#[derive(Clone)]
pub enum TunnelEvent {
    /// `first`: the tenant had no tunnel here before.
    Attached { tunnel: Arc<Tunnel>, first: bool },
    /// `last`: the tenant has no tunnel here any more.
    Detached { tunnel: Arc<Tunnel>, last: bool },
}

/// Every tenant's tunnels on this node.
#[derive(Default)]
pub struct Registry {
    tenants: Mutex<TenantMap<Arc<TenantTunnels>>>,
    next_id: AtomicU64,
    /// Woken (all waiters) whenever a tunnel attaches.
    pub changed: Notify,
    events: Mutex<Option<UnboundedSender<TunnelEvent>>>,
}

impl Registry {
    /// Send every attach and detach from now on to `sink` as well.
    pub fn set_event_sink(&self, sink: UnboundedSender<TunnelEvent>) {
        *lock(&self.events) = Some(sink);
    }

    fn emit(&self, event: TunnelEvent) {
        if let Some(sink) = lock(&self.events).as_ref() {
            let _ = sink.send(event);
        }
    }

    /// The tenant's tunnels, if it has any here.
    pub fn get(&self, tenant: &TenantName) -> Option<Arc<TenantTunnels>> {
        lock(&self.tenants).get(tenant).cloned()
    }

    pub(crate) fn attach(&self, tenant: &TenantName, new: NewTunnel) -> Arc<Tunnel> {
        let tunnel = Arc::new(Tunnel {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            record_id: new.record_id,
            tenant: tenant.clone(),
            connector_id: new.connector_id,
            remote_addr: new.remote_addr,
            targets: new.targets,
            secret_id: new.secret_id,
            since: new.since,
            sender: new.sender,
            // attached by the task serving the tunnel's connection: on its core, if it has one
            core: ferry_http::cores::current(),
            inflight: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            kill: Notify::new(),
        });
        let first = {
            let mut tenants = lock(&self.tenants);
            let entry = tenants.entry(tenant.clone()).or_default();
            let mut tunnels = lock(&entry.tunnels);
            tunnels.push(tunnel.clone());
            tunnels.len() == 1
        };
        self.changed.notify_waiters();
        self.emit(TunnelEvent::Attached {
            tunnel: tunnel.clone(),
            first,
        });
        tunnel
    }

    /// Remove a tunnel (it closed); the tenant's entry goes with its last tunnel.
    pub(crate) fn detach(&self, tunnel: &Arc<Tunnel>) {
        let removed = {
            let mut tenants = lock(&self.tenants);
            match tenants.get(&tunnel.tenant) {
                Some(entry) => {
                    let (removed, empty) = {
                        let mut tunnels = lock(&entry.tunnels);
                        let before = tunnels.len();
                        tunnels.retain(|t| t.id != tunnel.id);
                        (tunnels.len() < before, tunnels.is_empty())
                    };
                    if empty {
                        tenants.remove(&tunnel.tenant);
                    }
                    removed.then_some(empty)
                }
                None => None,
            }
        };
        if let Some(last) = removed {
            self.emit(TunnelEvent::Detached {
                tunnel: tunnel.clone(),
                last,
            });
        }
    }

    /// Whether the tenant has a tunnel open (it then certainly exists: its connector authenticated).
    pub fn has_tunnels(&self, tenant: &TenantName) -> bool {
        self.get(tenant).is_some()
    }

    /// Cut the tenant's tunnels at once (those `which` selects): they leave the registry and their connections
    /// are closed, in-flight requests included. Returns how many.
    pub(crate) fn kill_where(&self, tenant: &TenantName, which: impl Fn(&Tunnel) -> bool) -> usize {
        let Some(entry) = self.get(tenant) else {
            return 0;
        };
        let doomed: Vec<Arc<Tunnel>> = lock(&entry.tunnels)
            .iter()
            .filter(|t| which(t))
            .cloned()
            .collect();
        for t in &doomed {
            t.mark_closing();
            t.kill.notify_one();
            self.detach(t);
        }
        doomed.len()
    }

    /// Tenants with at least one tunnel on this node.
    pub fn tenants_with_tunnels(&self) -> Vec<TenantName> {
        lock(&self.tenants).keys().cloned().collect()
    }

    /// Every open tunnel.
    pub fn all_tunnels(&self) -> Vec<Arc<Tunnel>> {
        lock(&self.tenants)
            .values()
            .flat_map(|e| lock(&e.tunnels).clone())
            .collect()
    }

    /// Drop every tunnel's sender: each tunnel closes once its in-flight streams are done (a protocol 2 tunnel
    /// is told with a GOAWAY, so that its connector reconnects).
    pub fn close_all(&self) -> usize {
        let all = self.all_tunnels();
        for t in &all {
            t.sender.go_away();
            self.detach(t);
        }
        all.len()
    }

    /// Requests in flight on this node's tunnels.
    pub fn inflight(&self) -> usize {
        lock(&self.tenants).values().map(|e| e.inflight()).sum()
    }

    /// Number of open tunnels.
    pub fn tunnel_count(&self) -> usize {
        lock(&self.tenants)
            .values()
            .map(|e| lock(&e.tunnels).len())
            .sum()
    }
}

/// Helpers for other modules' tests: tunnels that no connector drives.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A tunnel sender that no connection drives: enough for the registry, which never sends on it.
    pub(crate) async fn sender() -> TunnelSender {
        let (client, server) = tokio::io::duplex(64 * 1024);
        // the client handshake only writes the preface: it completes without a server answering
        let (sender, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .handshake(hyper_util::rt::TokioIo::new(client))
                .await
                .expect("http2 handshake");
        tokio::spawn(async move {
            let _server = server;
            let _ = conn.await;
        });
        TunnelSender::Http2(sender)
    }

    /// A tunnel of `secret_id` serving `targets`.
    pub(crate) async fn tunnel(targets: &[&str], secret_id: Option<&str>) -> NewTunnel {
        NewTunnel {
            record_id: uuid::Uuid::new_v4().to_string(),
            connector_id: "c".into(),
            remote_addr: ([127, 0, 0, 1], 1).into(),
            targets: targets.iter().map(|t| t.parse().expect("name")).collect(),
            secret_id: secret_id.map(str::to_owned),
            since: 0,
            sender: sender().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::sender;
    use super::*;

    fn name(s: &str) -> TargetName {
        s.parse().expect("name")
    }

    async fn new(targets: &[&str]) -> NewTunnel {
        NewTunnel {
            record_id: uuid::Uuid::new_v4().to_string(),
            connector_id: "c".into(),
            remote_addr: ([127, 0, 0, 1], 1).into(),
            targets: targets.iter().map(|t| name(t)).collect(),
            secret_id: None,
            since: 0,
            sender: sender().await,
        }
    }

    /// On cores, a request takes the tunnel served on its own core, until that tunnel has more than twice the
    /// other's requests in flight plus the slack.
    #[tokio::test]
    async fn prefers_the_tunnel_on_the_requests_own_core_within_the_slack() {
        let cores = ferry_http::cores::Cores::start(2).expect("cores");
        let registry = Arc::new(Registry::default());
        let acme: TenantName = "acme".parse().expect("tenant");
        // one tunnel attached from each core (ties between cores go in turn)
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..2 {
            let (registry, acme, tx) = (registry.clone(), acme.clone(), tx.clone());
            cores.spawn(move || async move {
                let _ = tx.send(registry.attach(&acme, new(&["app"]).await));
            });
        }
        let mut tunnels = Vec::new();
        for _ in 0..2 {
            tunnels.push(rx.recv().await.expect("attached"));
        }
        tunnels.sort_by_key(|t| t.core);
        assert_eq!(
            tunnels.iter().map(|t| t.core).collect::<Vec<_>>(),
            [Some(0), Some(1)]
        );
        let entry = registry.get(&acme).expect("entry");
        // picks made on each core: (the core, the picked tunnel's core)
        let picks = |n: usize| {
            let (tx, rx) = std::sync::mpsc::channel();
            for _ in 0..n {
                let (entry, tx) = (entry.clone(), tx.clone());
                cores.spawn(move || async move {
                    if let Pick::Tunnel(t) = entry.pick(&name("app")) {
                        let _ = tx.send((ferry_http::cores::current(), t.core));
                    }
                });
            }
            (0..n)
                .map(|_| {
                    rx.recv_timeout(std::time::Duration::from_secs(5))
                        .expect("picked")
                })
                .collect::<Vec<_>>()
        };
        for (core, picked) in picks(8) {
            assert_eq!(core, picked, "the tunnel on the request's core");
        }
        // the tunnel on core 0 busy beyond the slack: core 0's requests go to core 1's tunnel
        let _busy: Vec<_> = (0..=LOCAL_SLACK)
            .map(|_| TunnelSlot::new(tunnels[0].clone()))
            .collect();
        for (core, picked) in picks(8) {
            assert_eq!(picked, Some(1), "from core {core:?}");
        }
        // off the cores (no current core) the least loaded wins, as without cores
        assert!(matches!(entry.pick(&name("app")), Pick::Tunnel(t) if t.core == Some(1)));
    }

    #[tokio::test]
    async fn picks_least_loaded_serving_tunnel_and_forgets_empty_tenants() {
        let registry = Registry::default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        registry.set_event_sink(tx);
        let acme: TenantName = "acme".parse().expect("tenant");
        let a = registry.attach(&acme, new(&["app"]).await);
        let b = registry.attach(&acme, new(&["app", "api"]).await);
        assert!(matches!(
            rx.recv().await,
            Some(TunnelEvent::Attached { first: true, .. })
        ));
        assert!(matches!(
            rx.recv().await,
            Some(TunnelEvent::Attached { first: false, .. })
        ));
        let entry = registry.get(&acme).expect("entry");
        let _busy = TunnelSlot::new(a.clone());
        for _ in 0..4 {
            assert!(matches!(entry.pick(&name("app")), Pick::Tunnel(t) if t.id == b.id));
        }
        assert!(matches!(entry.pick(&name("api")), Pick::Tunnel(t) if t.id == b.id));
        assert!(matches!(entry.pick(&name("web")), Pick::NoSuchTarget));
        b.mark_closing();
        assert!(
            matches!(entry.pick(&name("api")), Pick::NoTunnel),
            "closing: wait"
        );
        assert!(!entry.serves(&name("api")));
        assert_eq!(registry.kill_where(&acme, |t| t.id == b.id), 1);
        assert!(matches!(
            rx.recv().await,
            Some(TunnelEvent::Detached { last: false, .. })
        ));
        registry.detach(&a);
        assert!(matches!(
            rx.recv().await,
            Some(TunnelEvent::Detached { last: true, .. })
        ));
        registry.detach(&a);
        assert!(rx.try_recv().is_err(), "a second detach is not an event");
        assert!(registry.get(&acme).is_none(), "no entry without tunnels");
        assert_eq!(registry.tunnel_count(), 0);
    }
}
