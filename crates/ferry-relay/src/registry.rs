//! The open tunnels of each tenant on this node, and the choice of one for a request.
//!
//! A request goes to the tunnel with the fewest requests in flight among those serving its target; ties are
//! broken round robin, so equal connectors share the load evenly. Waiters for a tenant without tunnels are woken
//! when one attaches.

use crate::dispatch::TunnelSender;
use crate::TenantMap;
use ferry_proto::{TargetName, TenantName};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

/// One open tunnel.
pub struct Tunnel {
    /// Node-local id, unique for this process.
    pub id: u64,
    /// Globally unique id of this tunnel: its row in the store's connections.
    pub record_id: String,
    pub connector_id: String,
    pub remote_addr: SocketAddr,
    pub targets: Vec<TargetName>,
    /// The connector secret whose token opened the tunnel (built-in issuer only): revoking it closes the tunnel.
    pub secret_id: Option<String>,
    pub(crate) sender: TunnelSender,
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

/// The tunnels of one tenant, and its request count for the per-tenant cap.
#[derive(Default)]
pub struct TenantTunnels {
    tunnels: Mutex<Vec<Arc<Tunnel>>>,
    pub(crate) attached: Notify,
    inflight: AtomicUsize,
    round_robin: AtomicUsize,
}

/// What [`TenantTunnels::pick`] found.
pub enum Pick {
    Tunnel(Arc<Tunnel>),
    /// Tunnels are open, but none serves the target.
    NoSuchTarget,
    /// No tunnel is open.
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
        let mut best: Option<&Arc<Tunnel>> = None;
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
        }
        match best {
            Some(t) => Pick::Tunnel(t.clone()),
            // The connectors serving this target are going away (draining, restarting): wait for one to return.
            None if closing_with_target => Pick::NoTunnel,
            None => Pick::NoSuchTarget,
        }
    }

    /// Take a slot under the tenant's cap (0: no cap); `None` when the cap is reached.
    pub(crate) fn admit(self: &Arc<Self>, cap: usize) -> Option<TenantSlot> {
        let before = self.inflight.fetch_add(1, Ordering::AcqRel);
        if cap > 0 && before >= cap {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(TenantSlot(self.clone()))
    }

    pub fn tunnels(&self) -> Vec<Arc<Tunnel>> {
        lock(&self.tunnels).clone()
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }
}

/// A request counted under its tenant's cap until dropped.
pub struct TenantSlot(Arc<TenantTunnels>);

impl Drop for TenantSlot {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
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
    pub sender: TunnelSender,
}

/// Every tenant's tunnels on this node.
#[derive(Default)]
pub struct Registry {
    tenants: Mutex<TenantMap<Arc<TenantTunnels>>>,
    next_id: AtomicU64,
}

impl Registry {
    /// The tenant's entry, created empty on first use.
    pub fn tenant(&self, tenant: &TenantName) -> Arc<TenantTunnels> {
        let mut tenants = lock(&self.tenants);
        // looked up first: the entry API would clone the name on every request
        if let Some(entry) = tenants.get(tenant) {
            return entry.clone();
        }
        tenants.entry(tenant.clone()).or_default().clone()
    }

    /// The tenant's entry if it has one.
    pub fn get(&self, tenant: &TenantName) -> Option<Arc<TenantTunnels>> {
        lock(&self.tenants).get(tenant).cloned()
    }

    pub(crate) fn attach(&self, tenant: &TenantName, new: NewTunnel) -> Arc<Tunnel> {
        let tunnel = Arc::new(Tunnel {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            record_id: new.record_id,
            connector_id: new.connector_id,
            remote_addr: new.remote_addr,
            targets: new.targets,
            secret_id: new.secret_id,
            sender: new.sender,
            inflight: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            kill: Notify::new(),
        });
        let entry = self.tenant(tenant);
        lock(&entry.tunnels).push(tunnel.clone());
        entry.attached.notify_waiters();
        tunnel
    }

    pub(crate) fn detach(&self, tenant: &TenantName, id: u64) {
        if let Some(entry) = self.get(tenant) {
            lock(&entry.tunnels).retain(|t| t.id != id);
        }
    }

    /// Whether the tenant has a tunnel open (it then certainly exists: its connector authenticated).
    pub fn has_tunnels(&self, tenant: &TenantName) -> bool {
        self.get(tenant)
            .is_some_and(|e| !lock(&e.tunnels).is_empty())
    }

    /// Cut the tenant's tunnels at once (those `which` selects): they leave the registry and their connections
    /// are closed, in-flight requests included. Returns how many.
    pub(crate) fn kill_where(&self, tenant: &TenantName, which: impl Fn(&Tunnel) -> bool) -> usize {
        let Some(entry) = self.get(tenant) else {
            return 0;
        };
        let mut tunnels = lock(&entry.tunnels);
        let mut killed = 0;
        tunnels.retain(|t| {
            if which(t) {
                t.mark_closing();
                t.kill.notify_one();
                killed += 1;
                false
            } else {
                true
            }
        });
        killed
    }

    /// Tenants with at least one tunnel on this node.
    pub fn tenants_with_tunnels(&self) -> Vec<TenantName> {
        lock(&self.tenants)
            .iter()
            .filter(|(_, e)| !lock(&e.tunnels).is_empty())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Drop every tunnel's sender: each tunnel closes once its in-flight streams are done.
    pub fn close_all(&self) -> usize {
        let mut n = 0;
        for entry in lock(&self.tenants).values() {
            let mut tunnels = lock(&entry.tunnels);
            n += tunnels.len();
            tunnels.clear();
        }
        n
    }

    /// Requests in flight on this node, over all tenants.
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
