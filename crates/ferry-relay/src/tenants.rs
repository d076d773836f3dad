//! What this node knows of each tenant it has seen: whether it exists and its settings, cached briefly so that a
//! request costs no store query, and the settings in force for a request (the tenant's own, else the node's).
//!
//! The cache is refreshed by the relay's watcher (`crate::watch`) every few seconds for every tenant in it, and
//! invalidated at once when the management API on this node changes a tenant.

use crate::TenantMap;
use ferry_config::RelaySettings;
use ferry_proto::{TenantName, TenantSettings};
use ferry_store::{Store, StoreError};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a cached answer is used without asking the store again.
const FRESH_FOR: Duration = Duration::from_secs(5);

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
pub(crate) struct Known {
    pub settings: TenantSettings,
    pub updated_at: i64,
    fetched: Instant,
}

/// The cache of tenants, by name. Unknown tenants are not cached (each lookup asks the store), so a tenant
/// created on another node is usable at once.
#[derive(Default)]
pub(crate) struct TenantCache {
    entries: Mutex<TenantMap<Known>>,
}

/// What a refresh found for one tenant.
pub(crate) enum Refreshed {
    Unchanged,
    /// The tenant's `updated_at` moved: its settings may differ.
    Changed(TenantSettings),
    Deleted,
}

impl TenantCache {
    /// The tenant's settings, from the cache when fresh, else from the store; `None` when it does not exist.
    pub async fn get(
        &self,
        store: &dyn Store,
        name: &TenantName,
    ) -> Result<Option<TenantSettings>, StoreError> {
        if let Some(known) = self.lock().get(name) {
            if known.fetched.elapsed() < FRESH_FOR {
                return Ok(Some(known.settings.clone()));
            }
        }
        Ok(self.refresh(store, name).await?.1)
    }

    /// Ask the store now and update the cache; says what changed and the settings in force.
    pub async fn refresh(
        &self,
        store: &dyn Store,
        name: &TenantName,
    ) -> Result<(Refreshed, Option<TenantSettings>), StoreError> {
        let found = store.get_tenant(name).await?;
        let mut entries = self.lock();
        match found {
            None => {
                let was_known = entries.remove(name).is_some();
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
                let previous = entries.insert(
                    name.clone(),
                    Known {
                        settings: tenant.settings.clone(),
                        updated_at: tenant.updated_at,
                        fetched: Instant::now(),
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

    /// Forget a tenant (it was deleted, or changed and must be re-read).
    pub fn forget(&self, name: &TenantName) {
        self.lock().remove(name);
    }

    /// The names in the cache.
    pub fn names(&self) -> Vec<TenantName> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TenantMap<Known>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
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
        assert!(cache.names().is_empty());
    }
}
