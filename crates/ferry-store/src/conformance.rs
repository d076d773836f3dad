//! The conformance suite every [`Store`] implementation must pass, whatever its backend.
//!
//! Call [`run_suite`] from a backend's tests with a freshly opened store. The suite uses tenant names and key
//! ids with a random suffix and checks only what it wrote, so it can also run against a shared database (a
//! PostgreSQL server used by several test runs). Failures panic, as test assertions do.
// Test-support code: panicking with a message is how it reports a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_proto::TenantName;

use crate::{unix_now, SigningKey, Store, StoreError};

/// Run every check of the suite on `store`.
pub async fn run_suite(store: &dyn Store) {
    tenants(store).await;
    delete_cascades_secrets(store).await;
    secrets(store).await;
    signing_keys(store).await;
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn tenant(prefix: &str) -> TenantName {
    TenantName::new(unique(prefix)).expect("generated tenant name is valid")
}

/// Create, get, list and delete tenants.
pub async fn tenants(store: &dyn Store) {
    let a = tenant("cf-a");
    let b = tenant("cf-b");
    assert_eq!(store.get_tenant(&a).await.expect("get missing"), None);

    let before = unix_now();
    let created = store.create_tenant(&a).await.expect("create a");
    assert_eq!(created.name, a);
    assert!(created.created_at >= before && created.created_at <= unix_now() + 1);
    store.create_tenant(&b).await.expect("create b");

    let err = store.create_tenant(&a).await.expect_err("duplicate tenant");
    assert!(
        matches!(err, StoreError::AlreadyExists { kind: "tenant", .. }),
        "{err:?}"
    );

    let got = store.get_tenant(&a).await.expect("get").expect("present");
    assert_eq!(got, created);

    let listed = store.list_tenants().await.expect("list");
    let names: Vec<&TenantName> = listed.iter().map(|t| &t.name).collect();
    assert!(names.contains(&&a) && names.contains(&&b), "{names:?}");
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "list_tenants is ordered by name");

    assert!(store.delete_tenant(&a).await.expect("delete"));
    assert!(!store.delete_tenant(&a).await.expect("delete again"));
    assert_eq!(store.get_tenant(&a).await.expect("get deleted"), None);
    let listed = store.list_tenants().await.expect("list");
    assert!(!listed.iter().any(|t| t.name == a));
    assert!(listed.iter().any(|t| t.name == b));

    // A deleted name can be created again.
    store.create_tenant(&a).await.expect("recreate");
    assert!(store.delete_tenant(&a).await.expect("cleanup a"));
    assert!(store.delete_tenant(&b).await.expect("cleanup b"));
}

/// Deleting a tenant removes its secrets; a recreated tenant starts without any.
pub async fn delete_cascades_secrets(store: &dyn Store) {
    let t = tenant("cf-cascade");
    store.create_tenant(&t).await.expect("create");
    let s = store.add_secret(&t, "hash-1", None).await.expect("add");
    assert!(store.delete_tenant(&t).await.expect("delete"));
    assert!(store
        .active_secrets(&t, unix_now())
        .await
        .expect("active after delete")
        .is_empty());
    assert!(!store.revoke_secret(&t, &s.id).await.expect("revoke gone"));

    store.create_tenant(&t).await.expect("recreate");
    assert!(store
        .active_secrets(&t, unix_now())
        .await
        .expect("active after recreate")
        .is_empty());
    assert!(store.delete_tenant(&t).await.expect("cleanup"));
}

/// Add, list (active only), expire and revoke secrets.
pub async fn secrets(store: &dyn Store) {
    let t = tenant("cf-sec");
    let other = tenant("cf-sec-other");
    let now = unix_now();

    let err = store
        .add_secret(&t, "hash", None)
        .await
        .expect_err("secret for a missing tenant");
    assert!(
        matches!(err, StoreError::NotFound { kind: "tenant", .. }),
        "{err:?}"
    );
    assert!(store
        .active_secrets(&t, now)
        .await
        .expect("active of missing tenant")
        .is_empty());

    store.create_tenant(&t).await.expect("create");
    store.create_tenant(&other).await.expect("create other");

    let forever = store
        .add_secret(&t, "hash-forever", None)
        .await
        .expect("add");
    assert_eq!(forever.tenant, t);
    assert_eq!(forever.hash, "hash-forever");
    assert_eq!(forever.expires_at, None);
    assert_eq!(forever.revoked_at, None);
    assert!(forever.created_at >= now);
    let later = store
        .add_secret(&t, "hash-later", Some(now + 100))
        .await
        .expect("add expiring");
    assert_eq!(later.expires_at, Some(now + 100));
    let expired = store
        .add_secret(&t, "hash-expired", Some(now - 1))
        .await
        .expect("add expired");
    let foreign = store
        .add_secret(&other, "hash-other", None)
        .await
        .expect("add other");
    assert_ne!(forever.id, later.id);
    assert_ne!(forever.id, foreign.id);

    let ids = |v: Vec<crate::SecretRecord>| {
        let mut ids: Vec<String> = v.into_iter().map(|s| s.id).collect();
        ids.sort();
        ids
    };
    let mut expect = vec![forever.id.clone(), later.id.clone()];
    expect.sort();
    let active = store.active_secrets(&t, now).await.expect("active");
    assert!(active.iter().all(|s| s.tenant == t));
    let stored = active.iter().find(|s| s.id == forever.id).expect("listed");
    assert_eq!(stored, &forever);
    assert_eq!(ids(active), expect);

    // Expiry is exclusive: at `expires_at` the secret is no longer active.
    let at_expiry = store.active_secrets(&t, now + 100).await.expect("active");
    assert_eq!(ids(at_expiry), vec![forever.id.clone()]);
    assert!(!ids(store.active_secrets(&t, now).await.expect("active")).contains(&expired.id));

    // Revoking: only the named secret of the named tenant, only once.
    assert!(!store
        .revoke_secret(&t, &foreign.id)
        .await
        .expect("revoke foreign"));
    assert!(!store
        .revoke_secret(&t, "no-such-id")
        .await
        .expect("revoke missing"));
    assert!(store.revoke_secret(&t, &forever.id).await.expect("revoke"));
    assert!(!store
        .revoke_secret(&t, &forever.id)
        .await
        .expect("revoke twice"));
    assert_eq!(
        ids(store.active_secrets(&t, now).await.expect("active")),
        vec![later.id.clone()]
    );
    assert_eq!(
        ids(store
            .active_secrets(&other, now)
            .await
            .expect("active other")),
        vec![foreign.id.clone()]
    );

    assert!(store.delete_tenant(&t).await.expect("cleanup"));
    assert!(store.delete_tenant(&other).await.expect("cleanup other"));
}

/// Signing keys: the first-key race guard, rotation order, duplicate kids, round trip of the bytes.
pub async fn signing_keys(store: &dyn Store) {
    let had_keys = !store.signing_keys().await.expect("keys").is_empty();
    let now = unix_now();
    let first = SigningKey {
        kid: unique("cf-k1"),
        algorithm: "EdDSA".to_owned(),
        private_der: vec![0, 1, 2, 255, 0],
        public_key: vec![7; 32],
        created_at: now,
    };
    let added = store
        .add_first_signing_key(&first)
        .await
        .expect("add first");
    assert_eq!(
        added, !had_keys,
        "first key is added only to a key-less store"
    );
    if !added {
        store.add_signing_key(&first).await.expect("add k1");
    }
    let mut loser = first.clone();
    loser.kid = unique("cf-k-loser");
    assert!(!store
        .add_first_signing_key(&loser)
        .await
        .expect("add first again"));

    let second = SigningKey {
        kid: unique("cf-k2"),
        created_at: now + 10,
        public_key: vec![9; 32],
        ..first.clone()
    };
    store.add_signing_key(&second).await.expect("add k2");
    let err = store
        .add_signing_key(&second)
        .await
        .expect_err("duplicate kid");
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");

    let keys = store.signing_keys().await.expect("keys");
    assert!(!keys.iter().any(|k| k.kid == loser.kid));
    let pos = |kid: &str| keys.iter().position(|k| k.kid == kid).expect("key listed");
    assert!(pos(&second.kid) < pos(&first.kid), "newest first");
    assert_eq!(keys[pos(&first.kid)], first);
    assert_eq!(keys[pos(&second.kid)], second);
}
