//! Presence: which nodes are up, with which roles, and which connectors (tenant, targets) each holds, as heard on
//! the bus.
//!
//! Every node announces itself every heartbeat interval and each connector change as it happens, each message
//! carrying the node's generation (a counter of its connector changes). A node seen with a generation other than
//! the one expected is asked for a snapshot; a node not heard from for `node_expiry` is forgotten with its
//! connectors, and the streams it carried are cut. This node's own entry is kept too (for the management views)
//! but [`Presence::lookup`] never offers it: local tunnels are the registry's.

use ferry_proto::cluster::{ConnectorInfo, NodeInfo};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;
use tokio::sync::Notify;

/// Where the connectors of a tenant are, seen from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Another node holds a connector serving the target.
    Serves,
    /// Other nodes hold connectors of the tenant, none serving the target.
    OtherTargets,
    /// No other node holds a connector of the tenant.
    Nowhere,
}

/// A node as presence knows it.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub info: NodeInfo,
    pub last_seen: Instant,
    /// Unix seconds of the last message from the node.
    pub last_seen_unix: i64,
    pub connectors: usize,
}

struct NodeEntry {
    info: NodeInfo,
    last_seen: Instant,
    last_seen_unix: i64,
    connectors: HashMap<String, ConnectorInfo>,
}

#[derive(Default)]
struct State {
    nodes: HashMap<String, NodeEntry>,
    /// tenant → (node, targets of one connector), other nodes only
    by_tenant: HashMap<String, Vec<(String, Vec<String>)>>,
}

/// What applying a message found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Applied {
    Ok,
    /// The message showed a generation gap: ask the node for a snapshot.
    NeedSync,
}

/// The cluster as this node sees it.
pub struct Presence {
    self_node: String,
    state: Mutex<State>,
    /// Woken (all waiters) whenever a connector appears on another node.
    pub changed: Notify,
}

impl Presence {
    pub fn new(self_node: String) -> Self {
        Self {
            self_node,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether other nodes are known (a cluster of more than this node).
    pub fn has_peers(&self) -> bool {
        self.lock().nodes.keys().any(|n| *n != self.self_node)
    }

    /// Where the tenant's connectors are on other nodes.
    pub fn lookup(&self, tenant: &str, target: &str) -> Lookup {
        let state = self.lock();
        match state.by_tenant.get(tenant) {
            None => Lookup::Nowhere,
            Some(list) if list.iter().any(|(_, t)| t.iter().any(|x| x == target)) => Lookup::Serves,
            Some(_) => Lookup::OtherTargets,
        }
    }

    /// One other node with a connector of `tenant` serving `target`: the `turn`-th of those connectors, round
    /// robin (a node with two such connectors is picked twice as often).
    pub fn pick(&self, tenant: &str, target: &str, turn: usize) -> Option<String> {
        let state = self.lock();
        let list = state.by_tenant.get(tenant)?;
        let serving = || {
            list.iter()
                .filter(|(_, targets)| targets.iter().any(|x| x == target))
                .map(|(node, _)| node)
        };
        // counted, then walked: no allocation per request
        let n = serving().count();
        serving().nth(turn.checked_rem(n)?).cloned()
    }

    /// The address `node` announces (its public listener's URL, or `node.address`).
    pub fn address(&self, node: &str) -> Option<String> {
        self.lock().nodes.get(node).map(|n| n.info.address.clone())
    }

    /// A heartbeat (or any message naming the node's info): refresh it. `NeedSync` when its generation is not
    /// the one known.
    pub(crate) fn heartbeat(&self, info: &NodeInfo, now_unix: i64) -> Applied {
        let mut state = self.lock();
        match state.nodes.get_mut(&info.node) {
            Some(entry) => {
                let gap = entry.info.generation != info.generation;
                entry.info = info.clone();
                entry.last_seen = Instant::now();
                entry.last_seen_unix = now_unix;
                if gap {
                    Applied::NeedSync
                } else {
                    Applied::Ok
                }
            }
            None => {
                let mut fresh = info.clone();
                // nothing known of its connectors yet: a generation nobody has, so the snapshot is taken whole
                let need = fresh.generation != 0;
                fresh.generation = 0;
                state.nodes.insert(
                    info.node.clone(),
                    NodeEntry {
                        info: fresh,
                        last_seen: Instant::now(),
                        last_seen_unix: now_unix,
                        connectors: HashMap::new(),
                    },
                );
                if need {
                    Applied::NeedSync
                } else {
                    Applied::Ok
                }
            }
        }
    }

    /// A connector attached on a node.
    pub(crate) fn attached(&self, info: &NodeInfo, c: ConnectorInfo, now_unix: i64) -> Applied {
        let applied = self.step(info, now_unix);
        {
            let mut state = self.lock();
            let tenant = c.tenant.clone();
            if let Some(entry) = state.nodes.get_mut(&info.node) {
                entry.connectors.insert(c.record_id.clone(), c);
            }
            reindex(&mut state, &self.self_node, &tenant);
        }
        if info.node != self.self_node {
            self.changed.notify_waiters();
        }
        applied
    }

    /// A connector detached on a node.
    pub(crate) fn detached(&self, info: &NodeInfo, record_id: &str, now_unix: i64) -> Applied {
        let applied = self.step(info, now_unix);
        let mut state = self.lock();
        let tenant = state
            .nodes
            .get_mut(&info.node)
            .and_then(|e| e.connectors.remove(record_id))
            .map(|c| c.tenant);
        if let Some(tenant) = tenant {
            reindex(&mut state, &self.self_node, &tenant);
        }
        applied
    }

    /// The node's whole set of connectors, replacing what was known, unless it is older than what is known.
    pub(crate) fn snapshot(&self, info: &NodeInfo, connectors: Vec<ConnectorInfo>, now_unix: i64) {
        {
            let mut state = self.lock();
            let entry = state
                .nodes
                .entry(info.node.clone())
                .or_insert_with(|| NodeEntry {
                    info: info.clone(),
                    last_seen: Instant::now(),
                    last_seen_unix: now_unix,
                    connectors: HashMap::new(),
                });
            if info.generation < entry.info.generation && !entry.connectors.is_empty() {
                return;
            }
            let old: Vec<String> = entry
                .connectors
                .values()
                .map(|c| c.tenant.clone())
                .collect();
            entry.info = info.clone();
            entry.last_seen = Instant::now();
            entry.last_seen_unix = now_unix;
            entry.connectors = connectors
                .into_iter()
                .map(|c| (c.record_id.clone(), c))
                .collect();
            let mut tenants: Vec<String> = entry
                .connectors
                .values()
                .map(|c| c.tenant.clone())
                .collect();
            tenants.extend(old);
            tenants.sort_unstable();
            tenants.dedup();
            for t in tenants {
                reindex(&mut state, &self.self_node, &t);
            }
        }
        if info.node != self.self_node {
            self.changed.notify_waiters();
        }
    }

    /// Move a node to the message's generation; `NeedSync` when one or more changes were missed.
    fn step(&self, info: &NodeInfo, now_unix: i64) -> Applied {
        let mut state = self.lock();
        let entry = state
            .nodes
            .entry(info.node.clone())
            .or_insert_with(|| NodeEntry {
                info: NodeInfo {
                    generation: 0,
                    ..info.clone()
                },
                last_seen: Instant::now(),
                last_seen_unix: now_unix,
                connectors: HashMap::new(),
            });
        let expected = entry.info.generation + 1;
        entry.info = info.clone();
        entry.last_seen = Instant::now();
        entry.last_seen_unix = now_unix;
        if info.generation == expected {
            Applied::Ok
        } else {
            Applied::NeedSync
        }
    }

    /// Forget a node now (it left, or went silent). Returns whether it was known.
    pub(crate) fn forget(&self, node: &str) -> bool {
        let mut state = self.lock();
        let Some(entry) = state.nodes.remove(node) else {
            return false;
        };
        let mut tenants: Vec<String> = entry.connectors.into_values().map(|c| c.tenant).collect();
        tenants.sort_unstable();
        tenants.dedup();
        for t in tenants {
            reindex(&mut state, &self.self_node, &t);
        }
        true
    }

    /// Nodes not heard from since `before` (this node never); they are forgotten and returned.
    pub(crate) fn expire(&self, before: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .lock()
            .nodes
            .iter()
            .filter(|(id, e)| **id != self.self_node && e.last_seen < before)
            .map(|(id, _)| id.clone())
            .collect();
        for node in &gone {
            self.forget(node);
        }
        gone
    }

    /// Every known node.
    pub fn nodes(&self) -> Vec<NodeView> {
        let mut out: Vec<NodeView> = self
            .lock()
            .nodes
            .values()
            .map(|e| NodeView {
                info: e.info.clone(),
                last_seen: e.last_seen,
                last_seen_unix: e.last_seen_unix,
                connectors: e.connectors.len(),
            })
            .collect();
        out.sort_by(|a, b| a.info.node.cmp(&b.info.node));
        out
    }

    /// Every connector known, with its node.
    pub fn connectors(&self) -> Vec<(String, ConnectorInfo)> {
        let state = self.lock();
        let mut out: Vec<(String, ConnectorInfo)> = state
            .nodes
            .iter()
            .flat_map(|(node, e)| e.connectors.values().map(|c| (node.clone(), c.clone())))
            .collect();
        out.sort_by(|a, b| {
            b.1.since
                .cmp(&a.1.since)
                .then(b.1.record_id.cmp(&a.1.record_id))
        });
        out
    }
}

/// Rebuild the tenant's index entry from every other node's connectors.
fn reindex(state: &mut State, self_node: &str, tenant: &str) {
    let list: Vec<(String, Vec<String>)> = state
        .nodes
        .iter()
        .filter(|(node, _)| node.as_str() != self_node)
        .flat_map(|(node, e)| {
            e.connectors
                .values()
                .filter(|c| c.tenant == tenant)
                .map(|c| (node.clone(), c.targets.clone()))
        })
        .collect();
    if list.is_empty() {
        state.by_tenant.remove(tenant);
    } else {
        state.by_tenant.insert(tenant.to_owned(), list);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(node: &str, generation: u64) -> NodeInfo {
        NodeInfo {
            node: node.into(),
            roles: "relay".into(),
            address: "http://x".into(),
            version: "0".into(),
            started_at: 0,
            generation,
            worker_active: false,
        }
    }

    fn conn(id: &str, tenant: &str, targets: &[&str]) -> ConnectorInfo {
        ConnectorInfo {
            record_id: id.into(),
            tenant: tenant.into(),
            connector_id: "c".into(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
            since: 0,
            remote_addr: "127.0.0.1:1".into(),
        }
    }

    #[test]
    fn lookup_follows_attach_detach_and_expiry() {
        let p = Presence::new("me".into());
        assert_eq!(p.lookup("acme", "app"), Lookup::Nowhere);
        assert_eq!(p.heartbeat(&info("n2", 0), 1), Applied::Ok);
        assert_eq!(
            p.attached(&info("n2", 1), conn("r1", "acme", &["app"]), 1),
            Applied::Ok
        );
        assert_eq!(p.lookup("acme", "app"), Lookup::Serves);
        assert_eq!(p.lookup("acme", "web"), Lookup::OtherTargets);
        // own connectors are listed but never offered
        p.attached(&info("me", 1), conn("r2", "solo", &["app"]), 1);
        assert_eq!(p.lookup("solo", "app"), Lookup::Nowhere);
        assert_eq!(p.connectors().len(), 2);
        assert_eq!(p.detached(&info("n2", 2), "r1", 2), Applied::Ok);
        assert_eq!(p.lookup("acme", "app"), Lookup::Nowhere);
        p.attached(&info("n2", 3), conn("r3", "acme", &["app"]), 3);
        let gone = p.expire(Instant::now() + std::time::Duration::from_secs(1));
        assert_eq!(gone, vec!["n2".to_string()]);
        assert_eq!(p.lookup("acme", "app"), Lookup::Nowhere);
        assert_eq!(p.nodes().len(), 1, "this node is never expired");
    }

    #[test]
    fn gaps_ask_for_a_snapshot_and_old_snapshots_are_ignored() {
        let p = Presence::new("me".into());
        assert_eq!(
            p.heartbeat(&info("n2", 5), 1),
            Applied::NeedSync,
            "joined late"
        );
        p.snapshot(&info("n2", 5), vec![conn("a", "t1", &["x"])], 1);
        assert_eq!(p.heartbeat(&info("n2", 5), 2), Applied::Ok);
        assert_eq!(
            p.attached(&info("n2", 7), conn("b", "t2", &["x"]), 2),
            Applied::NeedSync,
            "generation 6 was missed"
        );
        p.snapshot(&info("n2", 6), vec![], 2);
        assert_eq!(
            p.lookup("t2", "x"),
            Lookup::Serves,
            "an older snapshot changes nothing"
        );
        p.snapshot(&info("n2", 7), vec![conn("b", "t2", &["x"])], 3);
        assert_eq!(p.lookup("t1", "x"), Lookup::Nowhere);
        assert_eq!(p.lookup("t2", "x"), Lookup::Serves);
        assert!(p.forget("n2"));
        assert_eq!(p.lookup("t2", "x"), Lookup::Nowhere);
    }
}
