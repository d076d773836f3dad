//! What this node knows of each tenant it has seen: whether it exists and its settings, cached briefly so that a
//! request costs no store query, and the settings in force for a request (the tenant's own, else the node's).
//!
//! Entries are evicted when a change event arrives (`crate::watch`: the bus, or this node's management API), and
//! re-read at least every 30 s as a safety net. Names that are not tenants are remembered for 2 s, so made-up
//! names in `/relay/…` cost no store query each; both maps are bounded. The cache also holds each tenant's count
//! of requests in flight from this node, for the tenant's cap.

use crate::metrics::{Metered, RelayMetrics, Targets, TenantMetrics};
use crate::TenantMap;
use ferry_config::RelaySettings;
use ferry_proto::{TargetName, TenantName, TenantSettings};
use ferry_store::{Store, StoreError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a cached answer is used without asking the store again, unless the cache is made with another
/// ([`TenantCache::new`]: the node's store poll interval). Changes arrive as events (the bus in a cluster, the
/// management API on this node) and evict the entry at once; this bounds how stale an entry can get when an event
/// was lost (a broker outage) or the store was changed behind Ferry's back (the CLI in local mode).
const FRESH_FOR: Duration = Duration::from_secs(30);
/// How long "no such tenant" is remembered: requests for made-up tenants cost no store query each, and a tenant
/// created on another node is usable within this even if its event was lost.
const UNKNOWN_FOR: Duration = Duration::from_secs(2);
/// Most tenants kept; past it, the stalest entries go first (a request for one of them asks the store again).
const MAX_KNOWN: usize = 100_000;
/// Most unknown names kept (the map made-up names fill); past it, the map starts over.
const MAX_UNKNOWN: usize = 10_000;

/// The settings in force for one request of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub max_concurrent_requests: usize,
    pub max_body_size: u64,
    pub request_expiration: Duration,
    pub require_client_auth: bool,
}

impl Effective {
    /// The tenant's overrides over the node's configuration.
    pub fn of(node: &RelaySettings, tenant: &TenantSettings) -> Self {
        Self {
            max_concurrent_requests: tenant
                .max_concurrent_requests
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(node.max_concurrent_requests),
            max_body_size: tenant.max_body_size.unwrap_or(node.max_body_size),
            request_expiration: tenant
                .request_expiration_ms
                .map_or(node.request_expiration, Duration::from_millis),
            require_client_auth: tenant.require_client_auth.unwrap_or(false),
        }
    }
}

/// One cached tenant.
#[derive(Debug, Clone)]
pub struct Known {
    pub settings: TenantSettings,
    pub updated_at: i64,
    fetched: Instant,
    /// Requests of the tenant in flight from this node (its cap), shared by every copy of the entry.
    inflight: Arc<AtomicUsize>,
    /// The tenant's metric handles, made when it was first read, kept across re-reads.
    metrics: Arc<TenantMetrics>,
    /// The request counters of each target asked for so far.
    targets: Targets,
}

/// A request counted under its tenant's cap until dropped.
pub struct TenantSlot(Arc<AtomicUsize>);

impl Drop for TenantSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The cache of tenants, by name, with a short memory of names that are not tenants.
pub struct TenantCache {
    fresh_for: Duration,
    entries: Mutex<TenantMap<Known>>,
    /// Keys chosen by clients (made-up names): the default SipHash, which resists keys chosen to collide.
    unknown: Mutex<std::collections::HashMap<TenantName, Instant>>,
    /// The relay's metric families (and the cap on tenants with series of their own).
    metrics: Arc<RelayMetrics>,
}

/// What a refresh found for one tenant.
pub enum Refreshed {
    Unchanged,
    /// The tenant's `updated_at` moved: its settings may differ.
    Changed(TenantSettings),
    Deleted,
}

impl Default for TenantCache {
    fn default() -> Self {
        Self::new(FRESH_FOR)
    }
}

impl TenantCache {
    /// A cache whose entries are read again from the store after `fresh_for`.
    pub fn new(fresh_for: Duration) -> Self {
        Self {
            fresh_for,
            entries: Mutex::default(),
            unknown: Mutex::default(),
            metrics: Arc::default(),
        }
    }

    /// Count into `metrics` (by default, families of its own with the default cap on tenants).
    pub fn with_metrics(mut self, metrics: Arc<RelayMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The relay's metric families.
    pub fn metrics(&self) -> &Arc<RelayMetrics> {
        &self.metrics
    }

    /// As [`TenantCache::get`], with the metric handles of the tenant and of `target`: resolved under the same
    /// lookup, made only on a tenant's or target's first request.
    pub(crate) async fn get_metered(
        &self,
        store: &dyn Store,
        name: &TenantName,
        target: &TargetName,
    ) -> Result<Option<(TenantSettings, Metered)>, StoreError> {
        if let Some(known) = self.lock().get_mut(name) {
            if known.fetched.elapsed() < self.fresh_for {
                let target = known.targets.get(&known.metrics, target);
                let metered = Metered {
                    tenant: known.metrics.clone(),
                    target,
                };
                return Ok(Some((known.settings.clone(), metered)));
            }
        }
        if let Some(at) = lock(&self.unknown).get(name) {
            if at.elapsed() < UNKNOWN_FOR {
                return Ok(None);
            }
        }
        let Some(settings) = self.refresh(store, name).await?.1 else {
            return Ok(None);
        };
        let metered = match self.lock().get_mut(name) {
            Some(known) => Metered {
                target: known.targets.get(&known.metrics, target),
                tenant: known.metrics.clone(),
            },
            // evicted in between: handles of their own (the families give back the same series)
            None => {
                let tenant = self.metrics.tenant(name.as_str());
                Metered {
                    target: tenant.target(target.as_str()),
                    tenant,
                }
            }
        };
        Ok(Some((settings, metered)))
    }

    /// The tenant's settings, from the cache when fresh, else from the store; `None` when it does not exist.
    pub async fn get(
        &self,
        store: &dyn Store,
        name: &TenantName,
    ) -> Result<Option<TenantSettings>, StoreError> {
        if let Some(known) = self.lock().get(name) {
            if known.fetched.elapsed() < self.fresh_for {
                return Ok(Some(known.settings.clone()));
            }
        }
        if let Some(at) = lock(&self.unknown).get(name) {
            if at.elapsed() < UNKNOWN_FOR {
                return Ok(None);
            }
        }
        Ok(self.refresh(store, name).await?.1)
    }

    /// Take a slot under the tenant's cap (0: no cap); `None` when the cap is reached.
    pub fn admit(&self, name: &TenantName, cap: usize) -> Option<TenantSlot> {
        // an entry evicted between the lookup and now: the request counts under a counter of its own
        let counter = self
            .lock()
            .get(name)
            .map(|known| known.inflight.clone())
            .unwrap_or_default();
        let before = counter.fetch_add(1, Ordering::AcqRel);
        if cap > 0 && before >= cap {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(TenantSlot(counter))
    }

    /// Requests in flight from this node, per tenant (only tenants with some).
    pub fn inflight(&self) -> Vec<(TenantName, usize)> {
        self.lock()
            .iter()
            .map(|(n, k)| (n.clone(), k.inflight.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Requests in flight from this node by tenant label (tenants past the metrics cap summed under `_other`),
    /// every known tenant included (0 when idle), for the gauge; read at scrape time.
    pub fn inflight_by_label(&self) -> Vec<(String, usize)> {
        let mut out: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let entries = self.lock();
        for k in entries.values() {
            *out.entry(k.metrics.label()).or_default() += k.inflight.load(Ordering::Relaxed);
        }
        out.into_iter().map(|(l, n)| (l.to_owned(), n)).collect()
    }

    /// Ask the store now and update the cache; says what changed and the settings in force.
    pub async fn refresh(
        &self,
        store: &dyn Store,
        name: &TenantName,
    ) -> Result<(Refreshed, Option<TenantSettings>), StoreError> {
        let found = store.get_tenant(name).await?;
        match found {
            None => {
                let was_known = self.lock().remove(name).is_some();
                let mut unknown = lock(&self.unknown);
                if unknown.len() >= MAX_UNKNOWN {
                    unknown.clear();
                }
                unknown.insert(name.clone(), Instant::now());
                Ok((
                    if was_known {
                        Refreshed::Deleted
                    } else {
                        Refreshed::Unchanged
                    },
                    None,
                ))
            }
            Some(tenant) => {
                lock(&self.unknown).remove(name);
                let mut entries = self.lock();
                if entries.len() >= MAX_KNOWN && !entries.contains_key(name) {
                    evict_stalest(&mut entries);
                }
                let (inflight, metrics, targets) = match entries.get(name) {
                    Some(k) => (k.inflight.clone(), k.metrics.clone(), k.targets.clone()),
                    None => (
                        Arc::default(),
                        self.metrics.tenant(name.as_str()),
                        Targets::default(),
                    ),
                };
                let previous = entries.insert(
                    name.clone(),
                    Known {
                        settings: tenant.settings.clone(),
                        updated_at: tenant.updated_at,
                        fetched: Instant::now(),
                        inflight,
                        metrics,
                        targets,
                    },
                );
                let changed = previous.is_some_and(|p| {
                    p.updated_at != tenant.updated_at || p.settings != tenant.settings
                });
                Ok((
                    if changed {
                        Refreshed::Changed(tenant.settings.clone())
                    } else {
                        Refreshed::Unchanged
                    },
                    Some(tenant.settings),
                ))
            }
        }
    }

    /// Forget what is known of a name (the tenant was created, changed or deleted): the next request asks the
    /// store. The in-flight count survives (requests under way still hold it).
    pub fn forget(&self, name: &TenantName) {
        lock(&self.unknown).remove(name);
        if let Some(known) = self.lock().get_mut(name) {
            known.fetched = Instant::now()
                .checked_sub(self.fresh_for)
                .unwrap_or_else(Instant::now);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TenantMap<Known>> {
        lock(&self.entries)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Drop the oldest tenth of the entries (by when they were read), keeping those with requests in flight.
fn evict_stalest(entries: &mut TenantMap<Known>) {
    let mut ages: Vec<Instant> = entries.values().map(|k| k.fetched).collect();
    ages.sort_unstable();
    let cut = ages[ages.len() / 10];
    entries.retain(|_, k| k.fetched > cut || k.inflight.load(Ordering::Relaxed) > 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_store::{SqliteStore, TenantFields};

    #[test]
    fn tenant_settings_override_the_node() {
        let node = RelaySettings::default();
        let plain = Effective::of(&node, &TenantSettings::default());
        assert_eq!(plain.max_concurrent_requests, node.max_concurrent_requests);
        assert!(!plain.require_client_auth);
        let tuned = Effective::of(
            &node,
            &TenantSettings {
                max_concurrent_requests: Some(3),
                max_body_size: Some(10),
                request_expiration_ms: Some(1500),
                require_client_auth: Some(true),
                ..Default::default()
            },
        );
        assert_eq!(tuned.max_concurrent_requests, 3);
        assert_eq!(tuned.max_body_size, 10);
        assert_eq!(tuned.request_expiration, Duration::from_millis(1500));
        assert!(tuned.require_client_auth);
    }

    #[tokio::test]
    async fn refresh_sees_changes_and_deletion() {
        let store = SqliteStore::open_in_memory().await.expect("store");
        let name: TenantName = "acme".parse().expect("name");
        let cache = TenantCache::default();
        assert!(cache.get(&store, &name).await.expect("get").is_none());
        store
            .create_tenant(&name, &TenantFields::default())
            .await
            .expect("create");
        // a creation's event makes the cache forget that the name was unknown
        cache.forget(&name);
        assert_eq!(
            cache.get(&store, &name).await.expect("get"),
            Some(TenantSettings::default())
        );
        let fields = TenantFields {
            settings: TenantSettings {
                max_body_size: Some(5),
                ..Default::default()
            },
            ..Default::default()
        };
        store.update_tenant(&name, &fields).await.expect("update");
        let (what, _) = cache.refresh(&store, &name).await.expect("refresh");
        assert!(matches!(what, Refreshed::Changed(s) if s.max_body_size == Some(5)));
        let (what, _) = cache.refresh(&store, &name).await.expect("refresh");
        assert!(matches!(what, Refreshed::Unchanged));
        store.delete_tenant(&name).await.expect("delete");
        let (what, now) = cache.refresh(&store, &name).await.expect("refresh");
        assert!(matches!(what, Refreshed::Deleted));
        assert!(now.is_none());
        assert!(cache.lock().is_empty());
        // remembered as unknown: even once created, the cache says "no" until forgotten (an event) or 2 s pass
        store
            .create_tenant(&name, &TenantFields::default())
            .await
            .expect("create again");
        assert!(cache.get(&store, &name).await.expect("get").is_none());
        cache.forget(&name);
        assert!(cache.get(&store, &name).await.expect("get").is_some());
    }

    #[tokio::test]
    async fn the_cap_counts_in_flight_requests() {
        let store = SqliteStore::open_in_memory().await.expect("store");
        let name: TenantName = "acme".parse().expect("name");
        store
            .create_tenant(&name, &TenantFields::default())
            .await
            .expect("create");
        let cache = TenantCache::default();
        cache.get(&store, &name).await.expect("get");
        let a = cache.admit(&name, 2).expect("first");
        let _b = cache.admit(&name, 2).expect("second");
        assert!(cache.admit(&name, 2).is_none(), "over the cap");
        assert_eq!(cache.inflight(), vec![(name.clone(), 2)]);
        cache.forget(&name);
        cache
            .get(&store, &name)
            .await
            .expect("re-read keeps the count");
        assert!(cache.admit(&name, 2).is_none());
        drop(a);
        assert!(cache.admit(&name, 2).is_some());
        assert!(cache.admit(&name, 0).is_some(), "0: no cap");
    }
}
