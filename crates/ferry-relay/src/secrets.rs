//! Which connector secrets are in force, per tenant, for the checks of client tokens: a token whose secret has
//! been revoked (or has expired) stops working within the store poll, without a store query per request.
//!
//! A tenant's active secrets are read from the store when a client token of the tenant is first checked, kept,
//! and read again when a token names a secret the list does not hold (a secret created since; at most once per
//! second per tenant, so tokens of revoked secrets cannot turn into a flood of queries) or when the node learns of
//! a revocation (the watcher's poll and the management API both end in [`ActiveSecrets::forget`]).

use crate::TenantMap;
use ferry_proto::TenantName;
use ferry_store::{Store, StoreError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often, at most, a tenant's secrets are read again for an unknown secret id.
const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(1);
/// How long a tenant's list is used at all: revocations arrive as events (and clear the list at once); this bounds
/// how long a token of a revoked secret can work when its event was lost.
const FRESH_FOR: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Known {
    /// Id and expiry (unix seconds) of each active secret.
    secrets: Vec<(String, Option<i64>)>,
    loaded: Instant,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct ActiveSecrets {
    tenants: Mutex<TenantMap<Known>>,
}

impl ActiveSecrets {
    /// Whether the secret `id` of `tenant` is in force at `now` (unix seconds).
    pub(crate) async fn is_active(
        &self,
        store: &dyn Store,
        tenant: &TenantName,
        id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let reload = match self.lock().get(tenant) {
            Some(known) if known.loaded.elapsed() >= FRESH_FOR => true,
            Some(known) => match known.secrets.iter().find(|(s, _)| s == id) {
                Some((_, expires)) => return Ok(expires.is_none_or(|at| now < at)),
                None => known.loaded.elapsed() >= RELOAD_AT_MOST_EVERY,
            },
            None => true,
        };
        if !reload {
            return Ok(false);
        }
        let secrets: Vec<(String, Option<i64>)> = store
            .active_secrets(tenant, now)
            .await?
            .into_iter()
            .map(|s| (s.id, s.expires_at))
            .collect();
        let active = secrets.iter().any(|(s, _)| s == id);
        self.lock().insert(
            tenant.clone(),
            Known {
                secrets,
                loaded: Instant::now(),
            },
        );
        Ok(active)
    }

    /// Drop what is known of `tenant` (a secret of it was revoked, or it changed): the next check reads again.
    pub(crate) fn forget(&self, tenant: &TenantName) {
        self.lock().remove(tenant);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TenantMap<Known>> {
        match self.tenants.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_store::SqliteStore;

    #[tokio::test]
    async fn revocations_are_seen_once_forgotten_and_unknown_ids_are_bounded() {
        let store = SqliteStore::open_in_memory().await.expect("store");
        let tenant: TenantName = "demo".parse().expect("name");
        store
            .create_tenant(&tenant, &ferry_store::TenantFields::default())
            .await
            .expect("tenant");
        let created = store
            .add_secret(&tenant, "hash", None)
            .await
            .expect("secret")
            .id;
        let cache = ActiveSecrets::default();
        let now = ferry_store::unix_now();
        assert!(cache
            .is_active(&store, &tenant, &created, now)
            .await
            .expect("check"));
        assert!(store
            .revoke_secret(&tenant, &created)
            .await
            .expect("revoke"));
        // cached until the node learns of the revocation
        assert!(cache
            .is_active(&store, &tenant, &created, now)
            .await
            .expect("check"));
        cache.forget(&tenant);
        assert!(!cache
            .is_active(&store, &tenant, &created, now)
            .await
            .expect("check"));
        // an unknown id is looked up at most once a second
        assert!(!cache
            .is_active(&store, &tenant, "nope", now)
            .await
            .expect("check"));
    }
}
