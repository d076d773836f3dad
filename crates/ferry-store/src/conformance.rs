//! The conformance suite every [`Store`] implementation must pass, whatever its backend.
//!
//! Call [`run_suite`] from a backend's tests with a freshly opened store. The suite uses tenant names and key
//! ids with a random suffix and checks only what it wrote, so it can also run against a shared database (a
//! PostgreSQL server used by several test runs). Failures panic, as test assertions do.
// Test-support code: panicking with a message is how it reports a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::TenantName;

use ferry_proto::TenantSettings;

use crate::{
    unix_now, AdminKey, AuditEntry, AuditQuery, ConnectionQuery, ConnectionRecord, NodeRecord,
    Page, RequestLogEntry, Role, SecretRecord, SessionRecord, SigningKey, StatsRecord, StatsRollUp,
    Store, StoreError, Tenant, TenantFields, TenantQuery, UserRecord, DEFAULT_PAGE_LIMIT,
    LATENCY_BUCKETS_MS,
};

/// Run every check of the suite on `store`.
pub async fn run_suite(store: &dyn Store) {
    tenants(store).await;
    tenant_fields(store).await;
    tenant_pages_and_filter(store).await;
    delete_cascades_secrets(store).await;
    secrets(store).await;
    secret_listing_and_revocations(store).await;
    signing_keys(store).await;
    signing_keys_after(store).await;
    removing_signing_keys(store).await;
    admin_keys(store).await;
    connections(store).await;
    connection_pages(store).await;
    nodes_and_expiry(store).await;
    silent_nodes_expiry(store).await;
    stats(store).await;
    request_log(store).await;
    pruning_history(store).await;
    stats_rollup(store).await;
    leases(store).await;
    users(store).await;
    sessions(store).await;
    audit_log(store).await;
}

fn user(name: &str, role: Role) -> UserRecord {
    UserRecord {
        name: name.to_owned(),
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned()),
        role,
        tenants: Vec::new(),
        disabled: false,
        created_at: unix_now(),
        last_sign_in_at: None,
    }
}

fn session_for(user: &str, now: i64) -> SessionRecord {
    SessionRecord {
        id_sha256: sha256_like(),
        user: user.to_owned(),
        csrf_token: token(),
        created_at: now,
        last_seen_at: now,
        idle_expires_at: now + 60,
        expires_at: now + 3600,
    }
}

/// Users: unique names, every field kept, listed by name, disabled and enabled, password replaced (or removed),
/// sign-ins noted, deleted.
pub async fn users(store: &dyn Store) {
    let op = UserRecord {
        tenants: vec![TenantName::new("scope-a").expect("name")],
        ..user(&unique("cf-user-b"), Role::Operator)
    };
    let viewer = UserRecord {
        password_hash: None,
        ..user(&unique("cf-user-a"), Role::Viewer)
    };
    store.create_user(&op).await.expect("create");
    store.create_user(&viewer).await.expect("create viewer");
    let err = store.create_user(&op).await.expect_err("duplicate");
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(
        store.get_user(&op.name).await.expect("get"),
        Some(op.clone())
    );
    assert_eq!(
        store.get_user(&viewer.name).await.expect("get"),
        Some(viewer.clone())
    );
    assert_eq!(store.get_user(&unique("cf-none")).await.expect("get"), None);
    let listed = store.list_users().await.expect("list");
    let pos = |name: &str| listed.iter().position(|u| u.name == name).expect("listed");
    assert!(pos(&viewer.name) < pos(&op.name), "by name");

    assert!(store
        .set_user_disabled(&op.name, true)
        .await
        .expect("disable"));
    assert!(
        store
            .get_user(&op.name)
            .await
            .expect("get")
            .expect("present")
            .disabled
    );
    assert!(store
        .set_user_disabled(&op.name, false)
        .await
        .expect("enable"));
    assert!(
        !store
            .get_user(&op.name)
            .await
            .expect("get")
            .expect("present")
            .disabled
    );
    assert!(!store
        .set_user_disabled(&unique("cf-none"), true)
        .await
        .expect("missing"));

    let scope = [TenantName::new("cf-role-b").expect("name")];
    assert!(store
        .set_user_role(&op.name, Role::Operator, &scope)
        .await
        .expect("role"));
    let got = store
        .get_user(&op.name)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        (got.role, got.tenants.as_slice()),
        (Role::Operator, &scope[..])
    );
    assert!(!store
        .set_user_role(&unique("cf-none"), Role::Viewer, &[])
        .await
        .expect("missing"));

    assert!(store
        .set_user_password(&op.name, Some("new-hash"))
        .await
        .expect("passwd"));
    let got = store
        .get_user(&op.name)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.password_hash.as_deref(), Some("new-hash"));
    assert!(store
        .set_user_password(&op.name, None)
        .await
        .expect("no password"));
    assert_eq!(
        store
            .get_user(&op.name)
            .await
            .expect("get")
            .expect("present")
            .password_hash,
        None
    );
    assert!(!store
        .set_user_password(&unique("cf-none"), Some("x"))
        .await
        .expect("missing"));

    assert!(store
        .record_sign_in(&op.name, 12345)
        .await
        .expect("sign in"));
    assert_eq!(
        store
            .get_user(&op.name)
            .await
            .expect("get")
            .expect("present")
            .last_sign_in_at,
        Some(12345)
    );

    assert!(store.delete_user(&op.name).await.expect("delete"));
    assert!(!store.delete_user(&op.name).await.expect("delete twice"));
    assert_eq!(store.get_user(&op.name).await.expect("get"), None);
    assert!(store.delete_user(&viewer.name).await.expect("cleanup"));
}

/// Sessions: found by hash while valid (idle and absolute expiry), touched forward but never past the absolute
/// expiry, ended by sign-out, by disabling, a new password or deleting the user, and swept when expired.
pub async fn sessions(store: &dyn Store) {
    let now = unix_now();
    let name = unique("cf-sess");
    store
        .create_user(&user(&name, Role::Admin))
        .await
        .expect("user");
    let s = session_for(&name, now);
    store.create_session(&s).await.expect("create");
    let err = store.create_session(&s).await.expect_err("same hash");
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    let orphan = session_for(&unique("cf-none"), now);
    let err = store.create_session(&orphan).await.expect_err("no user");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");

    assert_eq!(
        store.session(&s.id_sha256, now).await.expect("get"),
        Some(s.clone())
    );
    assert_eq!(
        store.session(&s.id_sha256, now + 60).await.expect("idle"),
        None
    );
    assert_eq!(
        store.session(&sha256_like(), now).await.expect("unknown"),
        None
    );

    // Touching moves the idle expiry, but never past the absolute one.
    assert!(store
        .touch_session(&s.id_sha256, now + 30, now + 90)
        .await
        .expect("touch"));
    let touched = store
        .session(&s.id_sha256, now + 60)
        .await
        .expect("get")
        .expect("valid");
    assert_eq!(
        (touched.last_seen_at, touched.idle_expires_at),
        (now + 30, now + 90)
    );
    assert!(store
        .touch_session(&s.id_sha256, now + 31, now + 99_999)
        .await
        .expect("touch"));
    let capped = store
        .session(&s.id_sha256, now + 31)
        .await
        .expect("get")
        .expect("valid");
    assert_eq!(capped.idle_expires_at, s.expires_at);
    assert_eq!(
        store
            .session(&s.id_sha256, s.expires_at)
            .await
            .expect("absolute"),
        None
    );
    assert!(!store
        .touch_session(&s.id_sha256, s.expires_at, s.expires_at + 60)
        .await
        .expect("expired touch"));

    assert!(store.delete_session(&s.id_sha256).await.expect("sign out"));
    assert!(!store.delete_session(&s.id_sha256).await.expect("twice"));
    assert_eq!(store.session(&s.id_sha256, now).await.expect("gone"), None);

    for end in ["disable", "passwd", "delete"] {
        let s = session_for(&name, now);
        store.create_session(&s).await.expect("create");
        match end {
            "disable" => {
                assert!(store.set_user_disabled(&name, true).await.expect("disable"));
                assert!(store.set_user_disabled(&name, false).await.expect("enable"));
            }
            "passwd" => assert!(store
                .set_user_password(&name, Some("h2"))
                .await
                .expect("pw")),
            _ => assert!(store.delete_user(&name).await.expect("delete")),
        }
        assert_eq!(
            store.session(&s.id_sha256, now).await.expect("get"),
            None,
            "{end}"
        );
    }

    store
        .create_user(&user(&name, Role::Viewer))
        .await
        .expect("user again");
    let old = SessionRecord {
        idle_expires_at: 20,
        expires_at: 30,
        created_at: 10,
        last_seen_at: 10,
        ..session_for(&name, now)
    };
    let live = session_for(&name, now);
    store.create_session(&old).await.expect("old");
    store.create_session(&live).await.expect("live");
    assert!(store.delete_expired_sessions(now).await.expect("sweep") >= 1);
    assert!(!store.delete_session(&old.id_sha256).await.expect("swept"));
    assert_eq!(
        store.session(&live.id_sha256, now).await.expect("kept"),
        Some(live)
    );
    assert!(store.delete_user(&name).await.expect("cleanup"));
}

/// The audit log: ids grow, newest first, filters by time, actor and action, paging by id, pruning by time.
/// Uses times in the first hours of 1970 and actors of its own.
pub async fn audit_log(store: &dyn Store) {
    let actor = unique("cf-actor");
    let other = unique("cf-actor2");
    let entry = |at: i64, actor: &str, action: &str| AuditEntry {
        id: 0,
        at,
        actor: actor.to_owned(),
        action: action.to_owned(),
        object: "acme".to_owned(),
        detail: "{\"role\":\"viewer\"}".to_owned(),
    };
    let a = store
        .append_audit(&entry(100, &actor, "tenant.create"))
        .await
        .expect("a");
    let b = store
        .append_audit(&entry(200, &actor, "secret.create"))
        .await
        .expect("b");
    let c = store
        .append_audit(&entry(300, &other, "tenant.create"))
        .await
        .expect("c");
    assert!(a < b && b < c, "{a} {b} {c}");

    let mine = store
        .audit_log(&AuditQuery {
            actor: Some(actor.clone()),
            ..AuditQuery::default()
        })
        .await
        .expect("by actor");
    assert_eq!(mine.iter().map(|e| e.id).collect::<Vec<_>>(), vec![b, a]);
    assert_eq!(
        mine[1],
        AuditEntry {
            id: a,
            ..entry(100, &actor, "tenant.create")
        }
    );

    let creates = store
        .audit_log(&AuditQuery {
            action: Some("tenant.create".to_owned()),
            from: Some(50),
            to: Some(1000),
            ..AuditQuery::default()
        })
        .await
        .expect("by action");
    let ids: Vec<i64> = creates.iter().map(|e| e.id).collect();
    assert!(
        ids.contains(&a) && ids.contains(&c) && !ids.contains(&b),
        "{ids:?}"
    );

    let window = store
        .audit_log(&AuditQuery {
            actor: Some(actor.clone()),
            from: Some(150),
            to: Some(250),
            ..AuditQuery::default()
        })
        .await
        .expect("window");
    assert_eq!(window.iter().map(|e| e.id).collect::<Vec<_>>(), vec![b]);

    let page = store
        .audit_log(&AuditQuery {
            actor: Some(actor.clone()),
            before_id: Some(b),
            limit: 1,
            ..AuditQuery::default()
        })
        .await
        .expect("page");
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a]);

    assert!(store.prune_audit(250).await.expect("prune") >= 2);
    let left = store
        .audit_log(&AuditQuery {
            from: Some(0),
            to: Some(1000),
            ..AuditQuery::default()
        })
        .await
        .expect("left");
    let ids: Vec<i64> = left.iter().map(|e| e.id).collect();
    assert!(
        ids.contains(&c) && !ids.contains(&a) && !ids.contains(&b),
        "{ids:?}"
    );
    store.prune_audit(1000).await.expect("cleanup");
}

/// Old closed connections and old statistics go; live connections and newer minutes stay. Uses times in the
/// first hours of 1970, where no other test of the suite writes.
async fn pruning_history(store: &dyn Store) {
    let t = TenantName::new(unique("cf-prune")).expect("name");
    store
        .create_tenant(&t, &TenantFields::default())
        .await
        .expect("create");
    let closed = connection(&t, "prune-node", 100);
    let live = connection(&t, "prune-node", 110);
    store.record_connection(&closed).await.expect("closed");
    store.record_connection(&live).await.expect("live");
    store
        .record_disconnection(&closed.id, 200)
        .await
        .expect("disconnect");
    let old = StatsRecord {
        requests: 1,
        ..StatsRecord::new(t.clone(), 120)
    };
    let new = StatsRecord {
        requests: 2,
        ..StatsRecord::new(t.clone(), 6000)
    };
    store
        .put_stats("prune-node", &[old, new])
        .await
        .expect("stats");

    let removed = store.prune_history(3000).await.expect("prune");
    assert!(removed >= 2, "{removed}");
    let left = store
        .list_connections(&tenant_connections(&t, false, 10))
        .await
        .expect("list");
    assert_eq!(left.items.len(), 1);
    assert_eq!(left.items[0].id, live.id, "the live connection stays");
    let stats = store.stats(Some(&t), 0, 10_000).await.expect("stats");
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].minute, 6000);

    store
        .record_disconnection(&live.id, 300)
        .await
        .expect("disconnect");
    store.prune_history(7000).await.expect("cleanup");
    store.delete_tenant(&t).await.expect("delete");
}

fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", token())
}

/// A random unix time in a window long past, where only this suite writes, rounded to the minute.
fn ancient_minute() -> i64 {
    let random = i64::try_from(uuid::Uuid::new_v4().as_u128() % 1_000_000).expect("small");
    1_000_000_000 + random * 60
}

fn no_fields() -> TenantFields {
    TenantFields::default()
}

fn query(filter: &str, after: Option<&str>, limit: u32) -> TenantQuery {
    TenantQuery {
        filter: Some(filter.to_owned()),
        after: after.map(str::to_owned),
        limit,
    }
}

fn names(page: &Page<Tenant>) -> Vec<String> {
    page.items.iter().map(|t| t.name.to_string()).collect()
}

fn tenant(prefix: &str) -> TenantName {
    TenantName::new(unique(prefix)).expect("generated tenant name is valid")
}

/// Create, get, list and delete tenants.
pub async fn tenants(store: &dyn Store) {
    let tok = token();
    let a = TenantName::new(format!("cf-a-{tok}")).expect("name");
    let b = TenantName::new(format!("cf-b-{tok}")).expect("name");
    assert_eq!(store.get_tenant(&a).await.expect("get missing"), None);

    let before = unix_now();
    let created = store
        .create_tenant(&a, &TenantFields::default())
        .await
        .expect("create a");
    assert_eq!(created.name, a);
    assert!(created.created_at >= before && created.created_at <= unix_now() + 1);
    assert_eq!(created.updated_at, created.created_at);
    assert_eq!(created.display_name, "");
    assert_eq!(created.description, "");
    assert_eq!(created.settings, TenantSettings::default());
    store
        .create_tenant(&b, &TenantFields::default())
        .await
        .expect("create b");

    let err = store
        .create_tenant(&a, &TenantFields::default())
        .await
        .expect_err("duplicate tenant");
    assert!(
        matches!(err, StoreError::AlreadyExists { kind: "tenant", .. }),
        "{err:?}"
    );

    let got = store.get_tenant(&a).await.expect("get").expect("present");
    assert_eq!(got, created);

    let listed = store
        .list_tenants(&query(&tok, None, 0))
        .await
        .expect("list")
        .items;
    let names: Vec<&TenantName> = listed.iter().map(|t| &t.name).collect();
    assert!(names.contains(&&a) && names.contains(&&b), "{names:?}");
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "list_tenants is ordered by name");

    assert!(store.delete_tenant(&a).await.expect("delete"));
    assert!(!store.delete_tenant(&a).await.expect("delete again"));
    assert_eq!(store.get_tenant(&a).await.expect("get deleted"), None);
    let listed = store
        .list_tenants(&query(&tok, None, 0))
        .await
        .expect("list")
        .items;
    assert!(!listed.iter().any(|t| t.name == a));
    assert!(listed.iter().any(|t| t.name == b));

    // A deleted name can be created again.
    store
        .create_tenant(&a, &TenantFields::default())
        .await
        .expect("recreate");
    assert!(store.delete_tenant(&a).await.expect("cleanup a"));
    assert!(store.delete_tenant(&b).await.expect("cleanup b"));
}

/// Deleting a tenant removes its secrets; a recreated tenant starts without any.
pub async fn delete_cascades_secrets(store: &dyn Store) {
    let t = tenant("cf-cascade");
    store
        .create_tenant(&t, &TenantFields::default())
        .await
        .expect("create");
    let s = store.add_secret(&t, "hash-1", None).await.expect("add");
    assert!(store.delete_tenant(&t).await.expect("delete"));
    assert!(store
        .active_secrets(&t, unix_now())
        .await
        .expect("active after delete")
        .is_empty());
    assert!(!store.revoke_secret(&t, &s.id).await.expect("revoke gone"));

    store
        .create_tenant(&t, &TenantFields::default())
        .await
        .expect("recreate");
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

    store
        .create_tenant(&t, &TenantFields::default())
        .await
        .expect("create");
    store
        .create_tenant(&other, &TenantFields::default())
        .await
        .expect("create other");

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

/// Display name, description and settings: stored at creation, replaced as a whole by an update that bumps
/// `updated_at` every time; updating a missing tenant changes nothing.
pub async fn tenant_fields(store: &dyn Store) {
    let t = tenant("cf-fields");
    let every_setting = TenantSettings {
        keepalive_interval_ms: Some(15_000),
        reconnect_min_delay_ms: Some(100),
        reconnect_max_delay_ms: Some(30_000),
        target_response_timeout_ms: Some(5_000),
        request_expiration_ms: Some(60_000),
        max_concurrent_requests: Some(u64::MAX),
        max_body_size: Some(0),
        require_client_auth: Some(false),
    };
    let fields = TenantFields {
        display_name: "Ünïcode “Ltd” 'quoted' \\ %_".to_owned(),
        description: "line one\nline two".to_owned(),
        settings: every_setting.clone(),
    };
    let created = store.create_tenant(&t, &fields).await.expect("create");
    assert_eq!(created.display_name, fields.display_name);
    assert_eq!(created.description, fields.description);
    assert_eq!(created.settings, every_setting);
    assert_eq!(created.updated_at, created.created_at);
    let got = store.get_tenant(&t).await.expect("get").expect("present");
    assert_eq!(got, created, "fields and settings round-trip");

    let replaced = TenantFields {
        display_name: "Renamed".to_owned(),
        description: String::new(),
        settings: TenantSettings {
            require_client_auth: Some(true),
            ..TenantSettings::default()
        },
    };
    let updated = store
        .update_tenant(&t, &replaced)
        .await
        .expect("update")
        .expect("tenant present");
    assert_eq!(updated.name, t);
    assert_eq!(updated.created_at, created.created_at);
    assert!(
        updated.updated_at > created.updated_at,
        "update bumps updated_at"
    );
    assert_eq!(updated.display_name, "Renamed");
    assert_eq!(updated.description, "");
    assert_eq!(
        updated.settings, replaced.settings,
        "settings are replaced, not merged"
    );
    assert_eq!(
        store.get_tenant(&t).await.expect("get").as_ref(),
        Some(&updated)
    );

    // Updates faster than one a second still move updated_at forward each time.
    let again = store
        .update_tenant(&t, &replaced)
        .await
        .expect("update again")
        .expect("present");
    assert!(again.updated_at > updated.updated_at);

    let missing = tenant("cf-fields-missing");
    assert_eq!(
        store
            .update_tenant(&missing, &replaced)
            .await
            .expect("update missing"),
        None
    );
    assert_eq!(store.get_tenant(&missing).await.expect("get missing"), None);

    assert!(store.delete_tenant(&t).await.expect("cleanup"));
}

/// Paging by name with `after`/`next`, and the filter: a case-insensitive substring of the name or the display
/// name, with `%`, `_` and `\` taken literally.
pub async fn tenant_pages_and_filter(store: &dyn Store) {
    let tok = token();
    let upper = tok.to_ascii_uppercase();
    let plain: Vec<TenantName> = ["a", "b", "c"]
        .iter()
        .map(|s| TenantName::new(format!("{tok}-{s}")).expect("name"))
        .collect();
    let by_display = TenantName::new(unique("cf-disp")).expect("name");
    let by_display_2 = TenantName::new(unique("cf-disp2")).expect("name");
    for name in &plain {
        store
            .create_tenant(name, &no_fields())
            .await
            .expect("create");
    }
    let display = |text: String| TenantFields {
        display_name: text,
        ..TenantFields::default()
    };
    store
        .create_tenant(&by_display, &display(format!("Team {upper} 50%_off\\")))
        .await
        .expect("create");
    store
        .create_tenant(&by_display_2, &display(format!("Team {upper} 50xxoff")))
        .await
        .expect("create");

    let mut all: Vec<String> = plain.iter().map(ToString::to_string).collect();
    all.push(by_display.to_string());
    all.push(by_display_2.to_string());
    all.sort();

    // One page holds everything: no next page, also when the page is exactly full.
    for limit in [0, 5, 6] {
        let page = store
            .list_tenants(&query(&tok, None, limit))
            .await
            .expect("list");
        assert_eq!(names(&page), all, "limit {limit}");
        assert_eq!(page.next, None, "limit {limit}");
    }
    const { assert!(DEFAULT_PAGE_LIMIT >= 5) };

    // Pages of two, following `next`.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store
            .list_tenants(&query(&tok, after.as_deref(), 2))
            .await
            .expect("page");
        pages += 1;
        assert!(page.items.len() <= 2);
        seen.extend(names(&page));
        match page.next {
            Some(next) => {
                assert_eq!(Some(&next), seen.last(), "next names the last item");
                after = Some(next);
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen, all);
    assert_eq!(pages, 3);

    // `after` need not be a tenant's name.
    let after_b = format!("{tok}-b0");
    let page = store
        .list_tenants(&query(&tok, Some(&after_b), 0))
        .await
        .expect("after");
    let expected: Vec<String> = all.iter().filter(|n| **n > after_b).cloned().collect();
    assert_eq!(names(&page), expected);

    // Case-insensitive on the name (stored lowercase) and on the display name.
    let page = store
        .list_tenants(&query(&upper, None, 0))
        .await
        .expect("upper");
    assert_eq!(names(&page), all);
    // Wildcards are literal: only the display name that really contains "50%_" matches.
    let page = store
        .list_tenants(&query(&format!("{tok} 50%_"), None, 0))
        .await
        .expect("literal %");
    assert_eq!(names(&page), vec![by_display.to_string()]);
    let page = store
        .list_tenants(&query(&format!("{tok} 50__off"), None, 0))
        .await
        .expect("literal _");
    assert!(page.items.is_empty(), "{:?}", names(&page));
    let page = store
        .list_tenants(&query("off\\", None, 0))
        .await
        .expect("literal backslash");
    assert!(names(&page).contains(&by_display.to_string()));
    assert!(!names(&page).contains(&by_display_2.to_string()));

    // An empty filter is no filter; no filter pages through every tenant in name order.
    let first = store
        .list_tenants(&TenantQuery {
            filter: Some(String::new()),
            after: Some(format!("{tok}-a")),
            limit: 1,
        })
        .await
        .expect("empty filter");
    assert_eq!(names(&first), vec![format!("{tok}-b")]);
    let page = store
        .list_tenants(&TenantQuery {
            filter: None,
            after: Some(format!("{tok}-")),
            limit: 2,
        })
        .await
        .expect("no filter");
    assert_eq!(names(&page), vec![format!("{tok}-a"), format!("{tok}-b")]);
    assert_eq!(page.next, Some(format!("{tok}-b")));

    for name in plain.iter().chain([&by_display, &by_display_2]) {
        assert!(store.delete_tenant(name).await.expect("cleanup"));
    }
}

/// Every secret of a tenant, revoked and expired ones too, newest first; recent revocations across tenants.
pub async fn secret_listing_and_revocations(store: &dyn Store) {
    let t = tenant("cf-list");
    let other = tenant("cf-list-other");
    assert!(store
        .list_secrets(&t)
        .await
        .expect("list missing")
        .is_empty());
    store.create_tenant(&t, &no_fields()).await.expect("create");
    store
        .create_tenant(&other, &no_fields())
        .await
        .expect("create other");
    let now = unix_now();
    let a = store.add_secret(&t, "h-a", None).await.expect("add");
    let b = store
        .add_secret(&t, "h-b", Some(now - 5))
        .await
        .expect("add expired");
    let c = store
        .add_secret(&t, "h-c", Some(now + 500))
        .await
        .expect("add");
    let foreign = store
        .add_secret(&other, "h-o", None)
        .await
        .expect("add other");

    let before_revoking = unix_now();
    assert!(store.revoke_secret(&t, &a.id).await.expect("revoke"));
    assert!(store
        .revoke_secret(&other, &foreign.id)
        .await
        .expect("revoke other"));

    let listed = store.list_secrets(&t).await.expect("list");
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.iter().all(|s| s.tenant == t));
    let key = |s: &SecretRecord| {
        (
            std::cmp::Reverse(s.created_at),
            std::cmp::Reverse(s.id.clone()),
        )
    };
    assert!(
        listed.windows(2).all(|w| key(&w[0]) <= key(&w[1])),
        "newest first"
    );
    let find = |id: &str| listed.iter().find(|s| s.id == id).expect("listed").clone();
    let revoked = find(&a.id);
    assert!(revoked.revoked_at.is_some_and(|at| at >= before_revoking));
    assert_eq!(find(&b.id), b, "expired secrets are listed as they are");
    assert_eq!(find(&c.id), c);

    let since = store
        .secrets_revoked_since(before_revoking)
        .await
        .expect("revoked since");
    assert!(since.contains(&(t.clone(), a.id.clone())), "{since:?}");
    assert!(
        since.contains(&(other.clone(), foreign.id.clone())),
        "{since:?}"
    );
    assert!(!since.iter().any(|(_, id)| id == &b.id || id == &c.id));
    let later = store
        .secrets_revoked_since(unix_now() + 100)
        .await
        .expect("revoked later");
    assert!(!later.iter().any(|(_, id)| id == &a.id || id == &foreign.id));

    // Deleting the tenant removes its secrets from both views.
    assert!(store.delete_tenant(&t).await.expect("cleanup"));
    assert!(store
        .list_secrets(&t)
        .await
        .expect("list deleted")
        .is_empty());
    let since = store
        .secrets_revoked_since(before_revoking)
        .await
        .expect("since");
    assert!(!since.iter().any(|(tenant, _)| tenant == &t));
    assert!(store.delete_tenant(&other).await.expect("cleanup other"));
}

/// The end of a rotation: a key is removed once, and only it.
pub async fn removing_signing_keys(store: &dyn Store) {
    let key = SigningKey {
        kid: unique("cf-rm"),
        algorithm: "EdDSA".to_owned(),
        private_der: vec![1, 2, 3],
        public_key: vec![4; 32],
        created_at: unix_now(),
    };
    let keep = SigningKey {
        kid: unique("cf-keep"),
        ..key.clone()
    };
    store.add_signing_key(&key).await.expect("add");
    store.add_signing_key(&keep).await.expect("add keep");
    assert!(store.remove_signing_key(&key.kid).await.expect("remove"));
    assert!(!store
        .remove_signing_key(&key.kid)
        .await
        .expect("remove again"));
    assert!(!store
        .remove_signing_key(&unique("cf-none"))
        .await
        .expect("remove missing"));
    let keys = store.signing_keys().await.expect("keys");
    assert!(!keys.iter().any(|k| k.kid == key.kid));
    assert!(keys.iter().any(|k| k.kid == keep.kid));
    // A removed kid may be added again.
    store.add_signing_key(&key).await.expect("add again");
    assert!(store.remove_signing_key(&key.kid).await.expect("cleanup"));
    assert!(store
        .remove_signing_key(&keep.kid)
        .await
        .expect("cleanup keep"));
}

fn sha256_like() -> String {
    format!("{}{}", token(), token())
}

/// Admin keys: unique id and hash, lookup by hash of unrevoked keys only, newest first, revoke once.
pub async fn admin_keys(store: &dyn Store) {
    let now = unix_now();
    let first = AdminKey {
        id: unique("cf-ak1"),
        name: "ops team".to_owned(),
        sha256: sha256_like(),
        created_at: now,
        revoked_at: None,
        role: Role::Admin,
        tenants: Vec::new(),
    };
    let second = AdminKey {
        id: unique("cf-ak2"),
        name: "ci".to_owned(),
        sha256: sha256_like(),
        created_at: now + 1,
        revoked_at: None,
        role: Role::Operator,
        tenants: vec![
            TenantName::new("scope-a").expect("name"),
            TenantName::new("scope-b").expect("name"),
        ],
    };
    store.add_admin_key(&first).await.expect("add");
    store.add_admin_key(&second).await.expect("add second");

    let same_id = AdminKey {
        sha256: sha256_like(),
        ..first.clone()
    };
    let err = store
        .add_admin_key(&same_id)
        .await
        .expect_err("duplicate id");
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    let same_hash = AdminKey {
        id: unique("cf-ak3"),
        ..first.clone()
    };
    let err = store
        .add_admin_key(&same_hash)
        .await
        .expect_err("duplicate hash");
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");

    assert_eq!(
        store
            .admin_key_by_hash(&first.sha256)
            .await
            .expect("by hash"),
        Some(first.clone())
    );
    assert_eq!(
        store
            .admin_key_by_hash(&sha256_like())
            .await
            .expect("unknown"),
        None
    );

    let listed = store.list_admin_keys().await.expect("list");
    let pos = |id: &str| listed.iter().position(|k| k.id == id).expect("listed");
    assert!(pos(&second.id) < pos(&first.id), "newest first");
    assert!(!listed.iter().any(|k| k.id == same_hash.id));

    assert!(store.revoke_admin_key(&first.id).await.expect("revoke"));
    assert!(!store
        .revoke_admin_key(&first.id)
        .await
        .expect("revoke twice"));
    assert!(!store
        .revoke_admin_key(&unique("cf-none"))
        .await
        .expect("revoke missing"));
    assert_eq!(
        store
            .admin_key_by_hash(&first.sha256)
            .await
            .expect("revoked"),
        None
    );
    assert_eq!(
        store
            .admin_key_by_hash(&second.sha256)
            .await
            .expect("other key"),
        Some(second.clone())
    );
    let listed = store.list_admin_keys().await.expect("list");
    let revoked = listed
        .iter()
        .find(|k| k.id == first.id)
        .expect("revoked still listed");
    assert!(revoked.revoked_at.is_some_and(|at| at >= now));
    assert!(store.revoke_admin_key(&second.id).await.expect("cleanup"));
}

fn connection(tenant: &TenantName, node: &str, connected_at: i64) -> ConnectionRecord {
    ConnectionRecord {
        id: unique("cf-conn"),
        tenant: tenant.clone(),
        connector_id: unique("connector"),
        node: node.to_owned(),
        remote_addr: "192.0.2.7:40000".to_owned(),
        connected_at,
        disconnected_at: None,
    }
}

fn tenant_connections(tenant: &TenantName, live_only: bool, limit: u32) -> ConnectionQuery {
    ConnectionQuery {
        tenant: Some(tenant.clone()),
        live_only,
        before: None,
        limit,
    }
}

/// Newest first by (connected_at, id).
fn connection_order(list: &mut [ConnectionRecord]) {
    list.sort_by(|a, b| (b.connected_at, &b.id).cmp(&(a.connected_at, &a.id)));
}

/// Recording tunnels and their end, live and past listings, one tenant's or everyone's; deleting the tenant
/// deletes its records.
pub async fn connections(store: &dyn Store) {
    let t = tenant("cf-conn");
    let other = tenant("cf-conn-other");
    store.create_tenant(&t, &no_fields()).await.expect("create");
    let node = unique("cf-node");
    let base = ancient_minute();
    let older = connection(&t, &node, base);
    let newer = connection(&t, &node, base + 10);
    let closed = ConnectionRecord {
        disconnected_at: Some(base + 20),
        ..connection(&t, &node, base + 5)
    };
    // A tunnel of a tenant the store does not know is recorded all the same.
    let foreign = connection(&other, &node, base + 30);
    for c in [&older, &newer, &closed, &foreign] {
        store.record_connection(c).await.expect("record");
    }
    let err = store
        .record_connection(&older)
        .await
        .expect_err("duplicate id");
    assert!(
        matches!(
            err,
            StoreError::AlreadyExists {
                kind: "connection",
                ..
            }
        ),
        "{err:?}"
    );

    let page = store
        .list_connections(&tenant_connections(&t, false, 0))
        .await
        .expect("history");
    assert_eq!(
        page.items,
        vec![newer.clone(), closed.clone(), older.clone()]
    );
    assert_eq!(page.next, None);
    let live = store
        .list_connections(&tenant_connections(&t, true, 0))
        .await
        .expect("live");
    assert_eq!(live.items, vec![newer.clone(), older.clone()]);

    // Closing: once; a second close and closing an unknown id change nothing.
    store
        .record_disconnection(&older.id, base + 40)
        .await
        .expect("close");
    store
        .record_disconnection(&older.id, base + 50)
        .await
        .expect("close again");
    store
        .record_disconnection(&unique("cf-none"), base)
        .await
        .expect("close unknown");
    let live = store
        .list_connections(&tenant_connections(&t, true, 0))
        .await
        .expect("live");
    assert_eq!(live.items, vec![newer.clone()]);
    let history = store
        .list_connections(&tenant_connections(&t, false, 0))
        .await
        .expect("history");
    let ended = history
        .items
        .iter()
        .find(|c| c.id == older.id)
        .expect("still listed");
    assert_eq!(ended.disconnected_at, Some(base + 40));

    // Everyone's: the foreign tunnel is there, in order with ours.
    let everyone = store
        .list_connections(&ConnectionQuery {
            tenant: None,
            live_only: true,
            before: Some(crate::rows::connection_cursor(base + 31, "")),
            limit: 0,
        })
        .await
        .expect("everyone");
    let ours: Vec<&str> = everyone
        .items
        .iter()
        .filter(|c| c.node == node)
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(ours, vec![foreign.id.as_str(), newer.id.as_str()]);

    // A cursor this store did not make.
    for bad in ["", "nonsense", "12", "x:y"] {
        let err = store
            .list_connections(&ConnectionQuery {
                before: Some(bad.to_owned()),
                ..tenant_connections(&t, false, 0)
            })
            .await
            .expect_err("bad cursor");
        assert!(
            matches!(err, StoreError::InvalidCursor { .. }),
            "{bad:?}: {err:?}"
        );
    }

    // Deleting the tenant deletes its connection records; a re-created tenant starts without history.
    assert!(store.delete_tenant(&t).await.expect("delete"));
    store
        .create_tenant(&t, &no_fields())
        .await
        .expect("recreate");
    let page = store
        .list_connections(&tenant_connections(&t, false, 0))
        .await
        .expect("after delete");
    assert!(page.items.is_empty(), "{page:?}");
    assert!(store.delete_tenant(&t).await.expect("cleanup"));
    store
        .record_disconnection(&foreign.id, base + 60)
        .await
        .expect("close foreign");
}

/// Paging connections by the (connected_at, id) cursor: ties in `connected_at` are split by id, and rows recorded
/// after a page was read do not shift the following pages.
pub async fn connection_pages(store: &dyn Store) {
    let t = tenant("cf-cpage");
    let node = unique("cf-node");
    let base = ancient_minute();
    let mut recorded: Vec<ConnectionRecord> = (0..7)
        .map(|i| connection(&t, &node, base + i / 3))
        .collect();
    for c in &recorded {
        store.record_connection(c).await.expect("record");
    }
    connection_order(&mut recorded);

    // Tunnels recorded by earlier passes, which lead the list in later ones.
    let mut newer: Vec<ConnectionRecord> = Vec::new();
    for limit in [1, 2, 3, 7, 20] {
        let mut expected = newer.clone();
        connection_order(&mut expected);
        expected.extend(recorded.iter().cloned());
        let mut seen = Vec::new();
        let mut query = tenant_connections(&t, false, limit);
        let mut pages = 0;
        loop {
            let page = store.list_connections(&query).await.expect("page");
            pages += 1;
            assert!(page.items.len() <= limit as usize);
            seen.extend(page.items);
            if pages == 1 {
                // A newer tunnel, recorded after the first page was read, does not disturb what follows.
                let late = connection(&t, &node, base + 100);
                store.record_connection(&late).await.expect("record newer");
                newer.push(late);
            }
            match page.next {
                Some(next) => query.before = Some(next),
                None => break,
            }
            assert!(pages <= 30, "paging does not end");
        }
        assert_eq!(seen, expected, "limit {limit}");
        assert_eq!(
            pages,
            expected.len().div_ceil(limit as usize).max(1),
            "limit {limit}"
        );
    }
    // Live only, paged.
    store
        .record_disconnection(&recorded[1].id, base + 10)
        .await
        .expect("close");
    let first = store
        .list_connections(&ConnectionQuery {
            before: Some(crate::rows::connection_cursor(base + 50, "")),
            ..tenant_connections(&t, true, 2)
        })
        .await
        .expect("live page");
    assert_eq!(first.items, vec![recorded[0].clone(), recorded[2].clone()]);
    assert!(first.next.is_some());
    // Cleanup: the tenant was never created, so nothing deletes these records; closing them is enough here.
    let all = store
        .list_connections(&tenant_connections(&t, true, 0))
        .await
        .expect("all");
    for c in all.items {
        store
            .record_disconnection(&c.id, base + 200)
            .await
            .expect("close");
    }
}

/// Heartbeats insert and refresh nodes; expiry removes stale nodes and closes their open tunnels at the last
/// heartbeat (or at `connected_at`, if later), leaving other nodes' tunnels alone.
pub async fn nodes_and_expiry(store: &dyn Store) {
    let base = ancient_minute();
    let t = tenant("cf-nodes");
    let stale = NodeRecord {
        id: unique("cf-node-stale"),
        address: "10.0.0.1:8080".to_owned(),
        version: "0.1.0".to_owned(),
        started_at: base - 100,
        heartbeat_at: base - 50,
        roles: "relay".to_owned(),
    };
    let fresh = NodeRecord {
        id: unique("cf-node-fresh"),
        address: "10.0.0.2:8080".to_owned(),
        version: "0.1.0".to_owned(),
        started_at: base - 100,
        heartbeat_at: base - 60,
        roles: String::new(),
    };
    store.heartbeat_node(&stale).await.expect("heartbeat");
    store.heartbeat_node(&fresh).await.expect("heartbeat");
    // A later heartbeat refreshes the row (address, version and roles too).
    let fresh = NodeRecord {
        address: "10.0.0.3:8080".to_owned(),
        version: "0.2.0".to_owned(),
        heartbeat_at: base + 1000,
        roles: "gateway,relay,management,worker".to_owned(),
        ..fresh
    };
    store.heartbeat_node(&fresh).await.expect("heartbeat again");
    let nodes = store.list_nodes().await.expect("nodes");
    let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "ordered by id");
    assert_eq!(nodes.iter().find(|n| n.id == stale.id), Some(&stale));
    assert_eq!(nodes.iter().find(|n| n.id == fresh.id), Some(&fresh));

    let open_before = connection(&t, &stale.id, base - 80);
    let open_after_heartbeat = connection(&t, &stale.id, base - 10);
    let closed = ConnectionRecord {
        disconnected_at: Some(base - 70),
        ..connection(&t, &stale.id, base - 90)
    };
    let elsewhere = connection(&t, &fresh.id, base - 80);
    for c in [&open_before, &open_after_heartbeat, &closed, &elsewhere] {
        store.record_connection(c).await.expect("record");
    }

    let removed = store.expire_nodes(base).await.expect("expire");
    assert!(removed >= 1, "{removed}");
    let nodes = store.list_nodes().await.expect("nodes");
    assert!(!nodes.iter().any(|n| n.id == stale.id));
    assert!(nodes.iter().any(|n| n.id == fresh.id));
    store.expire_nodes(base).await.expect("expire again");
    assert!(has_node(store, &fresh.id).await);

    let history = store
        .list_connections(&tenant_connections(&t, false, 0))
        .await
        .expect("history");
    let ended = |id: &str| {
        history
            .items
            .iter()
            .find(|c| c.id == id)
            .expect("listed")
            .disconnected_at
    };
    assert_eq!(ended(&open_before.id), Some(stale.heartbeat_at));
    assert_eq!(
        ended(&open_after_heartbeat.id),
        Some(open_after_heartbeat.connected_at)
    );
    assert_eq!(ended(&closed.id), Some(base - 70));
    assert_eq!(ended(&elsewhere.id), None);

    // Cleanup: age the fresh node out too (its heartbeat is still in the past of real nodes).
    let aged = NodeRecord {
        heartbeat_at: base + 1,
        ..fresh.clone()
    };
    store.heartbeat_node(&aged).await.expect("age");
    assert!(store.expire_nodes(base + 2).await.expect("expire fresh") >= 1);
    assert!(!has_node(store, &fresh.id).await);
    let history = store
        .list_connections(&tenant_connections(&t, true, 0))
        .await
        .expect("live");
    assert!(history.items.is_empty(), "{history:?}");
}

/// The worker's expiry: as [`nodes_and_expiry`], saying which nodes went, and also closing live connections of
/// nodes that have no row (at their `connected_at`) when they opened before the bound.
pub async fn silent_nodes_expiry(store: &dyn Store) {
    let base = ancient_minute();
    let t = tenant("cf-silent");
    let node = |id: String, heartbeat_at: i64| NodeRecord {
        id,
        address: "10.0.0.9:8080".to_owned(),
        version: "0.3.0".to_owned(),
        started_at: base - 500,
        heartbeat_at,
        roles: "relay".to_owned(),
    };
    let stale = node(unique("cf-silent-stale"), base - 50);
    let fresh = node(unique("cf-silent-fresh"), base + 1000);
    store.heartbeat_node(&stale).await.expect("heartbeat");
    store.heartbeat_node(&fresh).await.expect("heartbeat");
    let ghost = unique("cf-ghost");
    let of_stale = connection(&t, &stale.id, base - 80);
    let of_fresh = connection(&t, &fresh.id, base - 80);
    let orphan_old = connection(&t, &ghost, base - 30);
    let orphan_new = connection(&t, &ghost, base + 5);
    for c in [&of_stale, &of_fresh, &orphan_old, &orphan_new] {
        store.record_connection(c).await.expect("record");
    }

    let expired = store.expire_silent_nodes(base).await.expect("expire");
    assert!(expired.nodes.contains(&stale.id), "{expired:?}");
    assert!(!expired.nodes.contains(&fresh.id), "{expired:?}");
    let mut sorted = expired.nodes.clone();
    sorted.sort();
    assert_eq!(sorted, expired.nodes, "ordered by id");
    assert!(expired.connections_closed >= 2, "{expired:?}");
    assert!(!has_node(store, &stale.id).await);
    assert!(has_node(store, &fresh.id).await);
    let history = store
        .list_connections(&tenant_connections(&t, false, 0))
        .await
        .expect("history");
    let ended = |id: &str| {
        history
            .items
            .iter()
            .find(|c| c.id == id)
            .expect("listed")
            .disconnected_at
    };
    assert_eq!(ended(&of_stale.id), Some(stale.heartbeat_at));
    assert_eq!(ended(&of_fresh.id), None);
    assert_eq!(ended(&orphan_old.id), Some(orphan_old.connected_at));
    assert_eq!(ended(&orphan_new.id), None, "opened after the bound");
    let again = store.expire_silent_nodes(base).await.expect("again");
    assert!(!again.nodes.contains(&stale.id), "{again:?}");

    // Cleanup.
    store
        .heartbeat_node(&node(fresh.id.clone(), base + 1))
        .await
        .expect("age");
    let gone = store.expire_silent_nodes(base + 10).await.expect("cleanup");
    assert!(gone.nodes.contains(&fresh.id), "{gone:?}");
    let live = store
        .list_connections(&tenant_connections(&t, true, 0))
        .await
        .expect("live");
    assert!(live.items.is_empty(), "{live:?}");
}

/// A rotation decided on a view of the keys is applied only while that view holds: the newest key must still be
/// the one the caller saw.
pub async fn signing_keys_after(store: &dyn Store) {
    let keys = store.signing_keys().await.expect("keys");
    let newest = keys.first().map(|k| k.kid.clone());
    let after = keys.first().map_or(unix_now(), |k| k.created_at + 1);
    let key = |prefix: &str, created_at: i64| SigningKey {
        kid: unique(prefix),
        algorithm: "EdDSA".to_owned(),
        private_der: vec![5, 6, 7],
        public_key: vec![8; 32],
        created_at,
    };
    let stale_view = key("cf-after-stale", after);
    assert!(!store
        .add_signing_key_after(Some(&unique("cf-no-such-kid")), &stale_view)
        .await
        .expect("unknown newest"));
    if newest.is_some() {
        assert!(!store
            .add_signing_key_after(None, &stale_view)
            .await
            .expect("store has keys"));
    }
    let first = key("cf-after-1", after.max(unix_now()));
    assert!(store
        .add_signing_key_after(newest.as_deref(), &first)
        .await
        .expect("rotate"));
    assert_eq!(
        store.signing_keys().await.expect("keys").first(),
        Some(&first),
        "the added key is the newest"
    );
    // A second process that saw the same view loses.
    let second = key("cf-after-2", first.created_at + 1);
    assert!(!store
        .add_signing_key_after(newest.as_deref(), &second)
        .await
        .expect("stale view"));
    let err = store
        .add_signing_key_after(Some(&first.kid), &first)
        .await
        .expect_err("duplicate kid");
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    let keys = store.signing_keys().await.expect("keys");
    assert!(!keys
        .iter()
        .any(|k| k.kid == second.kid || k.kid == stale_view.kid));
    assert!(store.remove_signing_key(&first.kid).await.expect("cleanup"));
}

/// Minutes before the cut-off of [`stats_rollup`], in a window of 1970 where no other check writes (the pruning
/// check deletes everything below 7000, and this one cleans up after itself).
const ROLLUP_BEFORE: i64 = 100_020;
const ROLLUP_M1: i64 = 60_000;
const ROLLUP_M2: i64 = 60_060;

fn stats_of(all: Vec<StatsRecord>, tenants: &[&TenantName]) -> Vec<StatsRecord> {
    all.into_iter()
        .filter(|r| tenants.contains(&&r.tenant))
        .collect()
}

/// The roll-up merges the per-node rows of each minute before the cut-off into one row per tenant and minute;
/// every read answers as before; a rolled-up tenant's minute ignores later writes, other minutes take them.
pub async fn stats_rollup(store: &dyn Store) {
    let (t, u, v, w) = (
        tenant("cf-roll-t"),
        tenant("cf-roll-u"),
        tenant("cf-roll-v"),
        tenant("cf-roll-w"),
    );
    let open = ROLLUP_BEFORE;
    store
        .put_stats(
            "cf-n1",
            &[
                counts(&t, ROLLUP_M1, 1),
                counts(&t, ROLLUP_M2, 2),
                counts(&t, open, 3),
            ],
        )
        .await
        .expect("put n1");
    store
        .put_stats(
            "cf-n2",
            &[counts(&t, ROLLUP_M1, 10), counts(&u, ROLLUP_M1, 7)],
        )
        .await
        .expect("put n2");
    let read = || async {
        stats_of(
            store.stats(None, ROLLUP_M1, open + 60).await.expect("read"),
            &[&t, &u],
        )
    };
    let before = read().await;
    assert_eq!(before.len(), 4, "{before:?}");

    let done = store
        .roll_up_stats(ROLLUP_BEFORE, 100)
        .await
        .expect("roll up");
    assert_eq!(
        done,
        StatsRollUp {
            minutes: 2,
            rows_merged: 4,
            more: false
        }
    );
    assert_eq!(read().await, before, "a roll-up changes no answer");
    assert_eq!(
        store
            .roll_up_stats(ROLLUP_BEFORE, 100)
            .await
            .expect("again"),
        StatsRollUp::default(),
        "nothing left to merge"
    );

    // A late cumulative write of a rolled-up minute would count the node twice: ignored. The open minute still
    // takes writes, replacing as before.
    store
        .put_stats("cf-n1", &[counts(&t, ROLLUP_M1, 50), counts(&t, open, 30)])
        .await
        .expect("late write");
    let after = read().await;
    assert_eq!(after[..3], before[..3]);
    assert_eq!(after[3], counts(&t, open, 30));

    // A tenant's first write to a rolled-up minute (no roll-up row of its own) is taken, and merged next time.
    store
        .put_stats("cf-n3", &[counts(&v, ROLLUP_M1, 5)])
        .await
        .expect("first write of v");
    let of_v = || async {
        store
            .stats(Some(&v), ROLLUP_M1, ROLLUP_M1 + 60)
            .await
            .expect("v")
    };
    assert_eq!(of_v().await, vec![counts(&v, ROLLUP_M1, 5)]);
    let done = store
        .roll_up_stats(ROLLUP_BEFORE, 100)
        .await
        .expect("roll up v");
    assert_eq!((done.minutes, done.rows_merged), (1, 1));
    assert_eq!(of_v().await, vec![counts(&v, ROLLUP_M1, 5)]);
    assert_eq!(read().await[..3], before[..3]);

    // At most `max_minutes` a call; `more` says when minutes are left.
    store
        .put_stats(
            "cf-n1",
            &[counts(&w, ROLLUP_M1, 1), counts(&w, ROLLUP_M2, 1)],
        )
        .await
        .expect("put w");
    let first = store.roll_up_stats(ROLLUP_BEFORE, 1).await.expect("one");
    assert_eq!((first.minutes, first.more), (1, true), "{first:?}");
    let second = store.roll_up_stats(ROLLUP_BEFORE, 1).await.expect("two");
    assert_eq!((second.minutes, second.more), (1, false), "{second:?}");
    assert_eq!(
        store
            .stats(Some(&w), ROLLUP_M1, ROLLUP_M2 + 60)
            .await
            .expect("w"),
        vec![counts(&w, ROLLUP_M1, 1), counts(&w, ROLLUP_M2, 1)]
    );

    // The empty node id is the roll-up's.
    let err = store
        .put_stats("", &[counts(&t, open, 1)])
        .await
        .expect_err("empty node");
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");

    store
        .prune_history(ROLLUP_BEFORE + 600)
        .await
        .expect("cleanup");
}

/// Bounded wait: poll `check` every few milliseconds until it returns `Some`, for at most `limit`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Named leases: one holder at a time; renewal keeps the term, a new holder or a new acquisition after a lapse
/// starts the next; release only by the holder; a zero ttl and a sub-second ttl lapse.
pub async fn leases(store: &dyn Store) {
    let name = unique("cf-lease");
    let (a, b) = (unique("holder-a"), unique("holder-b"));
    let long = Duration::from_secs(60);
    assert_eq!(store.lease(&name).await.expect("free"), None);
    assert!(!store.release_lease(&name, &a).await.expect("release free"));

    let got = store.acquire_lease(&name, &a, long).await.expect("acquire");
    assert_eq!(
        (got.name.as_str(), got.holder.as_str()),
        (name.as_str(), a.as_str())
    );
    assert_eq!(got.expires_at_ms - got.acquired_at_ms, 60_000, "{got:?}");
    let now_ms = unix_now() * 1000;
    assert!(
        (got.acquired_at_ms - now_ms).abs() < 120_000,
        "database and host clocks far apart? {got:?}"
    );
    assert_eq!(store.lease(&name).await.expect("held").as_ref(), Some(&got));

    // Someone else is refused and told who holds it; nothing changes.
    let refused = store.acquire_lease(&name, &b, long).await.expect("refused");
    assert_eq!(refused, got);
    // Renewal: same term and start, expiry moved on.
    let renewed = store.acquire_lease(&name, &a, long).await.expect("renew");
    assert_eq!(
        (
            renewed.holder.as_str(),
            renewed.term,
            renewed.acquired_at_ms
        ),
        (a.as_str(), got.term, got.acquired_at_ms)
    );
    assert!(renewed.expires_at_ms >= got.expires_at_ms);

    // Only the holder releases; then anyone takes it, in the next term.
    assert!(!store.release_lease(&name, &b).await.expect("not b's"));
    assert!(store.release_lease(&name, &a).await.expect("release"));
    assert!(!store.release_lease(&name, &a).await.expect("twice"));
    assert_eq!(store.lease(&name).await.expect("released"), None);
    let taken = store.acquire_lease(&name, &b, long).await.expect("take");
    assert_eq!(
        (taken.holder.as_str(), taken.term),
        (b.as_str(), got.term + 1)
    );
    assert!(taken.acquired_at_ms >= got.acquired_at_ms);

    // A renewal with a zero ttl lapses at once: free for anyone, the same holder included.
    let lapsed = store
        .acquire_lease(&name, &b, Duration::ZERO)
        .await
        .expect("zero");
    assert_eq!(lapsed.term, taken.term);
    assert_eq!(store.lease(&name).await.expect("lapsed"), None);
    let back = store
        .acquire_lease(&name, &a, long)
        .await
        .expect("after lapse");
    assert_eq!(
        (back.holder.as_str(), back.term),
        (a.as_str(), taken.term + 1)
    );

    // A sub-second lease lapses by itself: refused until then, taken after, never before its expiry.
    let quick = unique("cf-lease-quick");
    let short = store
        .acquire_lease(&quick, &a, Duration::from_millis(200))
        .await
        .expect("short");
    assert_eq!(short.term, 1);
    let waited = Instant::now();
    let taken = eventually(
        Duration::from_secs(10),
        "the short lease lapses",
        || async {
            let got = store.acquire_lease(&quick, &b, long).await.expect("try");
            (got.holder == b).then_some(got)
        },
    )
    .await;
    assert!(
        taken.acquired_at_ms >= short.expires_at_ms,
        "{short:?} {taken:?}"
    );
    assert_eq!(taken.term, 2);
    assert!(waited.elapsed() < Duration::from_secs(10));

    // Leases are separate by name; empty names and holders are refused.
    assert_eq!(
        store.lease(&name).await.expect("other").map(|l| l.holder),
        Some(a.clone())
    );
    for (n, h) in [("", a.as_str()), (name.as_str(), "")] {
        let err = store.acquire_lease(n, h, long).await.expect_err("empty");
        assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
    }
    assert!(store.release_lease(&name, &a).await.expect("cleanup"));
    assert!(store.release_lease(&quick, &b).await.expect("cleanup"));
}

/// Several processes (here: stores with their own connections) race for one lease, `racers` at once, three times:
/// for a name never taken, for a lease that has lapsed, and for one just released. Each time exactly one wins,
/// and every racer is told the same holder and term.
pub async fn racing_leases(stores: &[Arc<dyn Store>], racers: usize) {
    assert!(!stores.is_empty() && racers >= 2);
    for round in ["fresh", "lapsed", "released"] {
        let name = unique("cf-race");
        let setup = "cf-race-setup";
        match round {
            "lapsed" => {
                stores[0]
                    .acquire_lease(&name, setup, Duration::ZERO)
                    .await
                    .expect("lapsed lease");
            }
            "released" => {
                stores[0]
                    .acquire_lease(&name, setup, Duration::from_secs(60))
                    .await
                    .expect("lease");
                assert!(stores[0]
                    .release_lease(&name, setup)
                    .await
                    .expect("release"));
            }
            _ => {}
        }
        let start = Arc::new(tokio::sync::Barrier::new(racers));
        let tasks: Vec<_> = (0..racers)
            .map(|i| {
                let store = Arc::clone(&stores[i % stores.len()]);
                let start = Arc::clone(&start);
                let name = name.clone();
                tokio::spawn(async move {
                    let holder = format!("racer-{i}");
                    start.wait().await;
                    let lease = store
                        .acquire_lease(&name, &holder, Duration::from_secs(60))
                        .await
                        .expect("acquire");
                    (holder, lease)
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.expect("racer"));
        }
        let winners: Vec<&String> = results
            .iter()
            .filter(|(holder, lease)| &lease.holder == holder)
            .map(|(holder, _)| holder)
            .collect();
        assert_eq!(winners.len(), 1, "{round}: {results:?}");
        let (_, first) = &results[0];
        assert!(
            results
                .iter()
                .all(|(_, l)| l.holder == first.holder && l.term == first.term),
            "{round}: {results:?}"
        );
        let expected_term = if round == "fresh" { 1 } else { 2 };
        assert_eq!(first.term, expected_term, "{round}");
        assert_eq!(
            stores[0]
                .lease(&name)
                .await
                .expect("read")
                .map(|l| l.holder),
            Some(first.holder.clone())
        );
    }
}

/// Writers (stores with their own connections, one node each) keep writing cumulative counts of a few old minutes
/// while the roll-up merges them. Each writer's counts are powers of two inside a 16-bit slot of its own, so that
/// the final sum shows, per writer, one count it wrote (or none, when all its writes came after the roll-up
/// closed the minute), never two added together: no count is counted twice.
pub async fn rollup_races_writers(stores: &[Arc<dyn Store>]) {
    const ROUNDS: u32 = 15;
    const MINUTES: i64 = 6;
    let writers = stores.len().min(4);
    assert!(writers >= 2);
    let t = tenant("cf-roll-race");
    let first_minute = 200_040;
    let before = first_minute + MINUTES * 60;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let roller = {
        let store = Arc::clone(&stores[0]);
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut runs = 0u32;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                store.roll_up_stats(before, 2).await.expect("roll up");
                runs += 1;
                tokio::task::yield_now().await;
            }
            runs
        })
    };
    let tasks: Vec<_> = (0..writers)
        .map(|i| {
            let store = Arc::clone(&stores[i]);
            let t = t.clone();
            tokio::spawn(async move {
                let node = format!("cf-rw-{i}");
                for round in 0..ROUNDS {
                    let value = (1u64 << round) << (16 * i);
                    let records: Vec<StatsRecord> = (0..MINUTES)
                        .map(|m| StatsRecord {
                            requests: value,
                            ..StatsRecord::new(t.clone(), first_minute + m * 60)
                        })
                        .collect();
                    store.put_stats(&node, &records).await.expect("put");
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let runs = roller.await.expect("roller");
    assert!(runs > 0);
    let last = stores[0].roll_up_stats(before, 100).await.expect("last");
    assert!(!last.more);
    let got = stores[0]
        .stats(Some(&t), first_minute, before)
        .await
        .expect("read");
    assert_eq!(
        got.len(),
        usize::try_from(MINUTES).expect("small"),
        "{got:?}"
    );
    for record in &got {
        for i in 0..writers {
            let slot = (record.requests >> (16 * i)) & 0xffff;
            assert!(
                slot == 0 || slot.is_power_of_two(),
                "minute {}: writer {i} counted twice ({slot:#b})",
                record.minute
            );
        }
    }
    stores[0].prune_history(before).await.expect("cleanup");
}

fn counts(tenant: &TenantName, minute: i64, requests: u64) -> StatsRecord {
    let mut latency_buckets = [0; LATENCY_BUCKETS_MS.len() + 1];
    latency_buckets[0] = requests;
    latency_buckets[LATENCY_BUCKETS_MS.len()] = 1;
    StatsRecord {
        requests,
        bytes_in: requests * 100,
        bytes_out: requests * 1000,
        status_classes: [0, requests, 0, 1, 0],
        latency_buckets,
        ..StatsRecord::new(tenant.clone(), minute)
    }
}

/// Each node's counts replace what it wrote before; reading sums nodes per tenant and minute, in a half-open
/// window, ordered by minute then tenant.
pub async fn stats(store: &dyn Store) {
    let m = ancient_minute();
    let tok = token();
    let a = TenantName::new(format!("cf-st-a-{tok}")).expect("name");
    let b = TenantName::new(format!("cf-st-b-{tok}")).expect("name");
    let node_1 = unique("cf-n1");
    let node_2 = unique("cf-n2");
    store
        .put_stats(&node_1, &[])
        .await
        .expect("nothing to write");

    store
        .put_stats(&node_1, &[counts(&a, m, 1), counts(&a, m + 60, 4)])
        .await
        .expect("put 1");
    store
        .put_stats(&node_2, &[counts(&a, m, 10), counts(&b, m, 7)])
        .await
        .expect("put 2");
    // Node 1 sends its cumulative count of minute m again: replaced, not added.
    store
        .put_stats(&node_1, &[counts(&a, m, 2)])
        .await
        .expect("put 1 again");

    let got = store.stats(Some(&a), m, m + 120).await.expect("stats a");
    let mut summed = counts(&a, m, 12);
    summed.latency_buckets[LATENCY_BUCKETS_MS.len()] = 2;
    summed.status_classes[3] = 2;
    assert_eq!(got, vec![summed.clone(), counts(&a, m + 60, 4)]);
    assert_eq!(
        got[0].latency_buckets.iter().sum::<u64>(),
        14,
        "histogram summed across nodes"
    );

    // The window is [from, to).
    assert_eq!(
        store.stats(Some(&a), m, m + 60).await.expect("first"),
        vec![summed.clone()]
    );
    assert_eq!(
        store
            .stats(Some(&a), m + 60, m + 120)
            .await
            .expect("second"),
        vec![counts(&a, m + 60, 4)]
    );
    assert!(store
        .stats(Some(&a), m + 120, m + 180)
        .await
        .expect("none")
        .is_empty());
    assert!(store
        .stats(Some(&a), m + 60, m + 60)
        .await
        .expect("empty")
        .is_empty());

    // Every tenant: minute, then tenant.
    let all: Vec<StatsRecord> = store
        .stats(None, m, m + 120)
        .await
        .expect("all")
        .into_iter()
        .filter(|r| r.tenant == a || r.tenant == b)
        .collect();
    assert_eq!(all, vec![summed, counts(&b, m, 7), counts(&a, m + 60, 4)]);

    // One batch naming a tenant and minute twice: the later record wins.
    let c = tenant("cf-st-c");
    store
        .put_stats(&node_1, &[counts(&c, m, 3), counts(&c, m, 5)])
        .await
        .expect("duplicate in batch");
    assert_eq!(
        store.stats(Some(&c), m, m + 60).await.expect("c"),
        vec![counts(&c, m, 5)]
    );

    // Large counters survive.
    let big = StatsRecord {
        bytes_out: i64::MAX as u64,
        ..counts(&c, m + 60, 1)
    };
    store
        .put_stats(&node_1, std::slice::from_ref(&big))
        .await
        .expect("big");
    assert_eq!(
        store.stats(Some(&c), m + 60, m + 120).await.expect("big"),
        vec![big]
    );
}

fn log_entry(tenant: &TenantName, at_ms: i64, status: u16) -> RequestLogEntry {
    RequestLogEntry {
        id: -1,
        tenant: tenant.clone(),
        at_ms,
        request_id: token(),
        method: "POST".to_owned(),
        target: "api".to_owned(),
        path: "/v1/items/ü".to_owned(),
        status,
        duration_ms: 1234,
        bytes_in: 10,
        bytes_out: 2_000_000,
        client_addr: "[2001:db8::1]:5000".to_owned(),
    }
}

/// Appending assigns growing ids; reading is newest first, per tenant or all, below a cursor, at most `limit`;
/// pruning deletes by arrival time and ids are not reused.
pub async fn request_log(store: &dyn Store) {
    let base_ms = ancient_minute() * 1000;
    let t = tenant("cf-log");
    let other = tenant("cf-log-other");
    store
        .append_request_log(&[])
        .await
        .expect("nothing to append");
    let written = vec![
        log_entry(&t, base_ms, 200),
        log_entry(&other, base_ms + 1, 404),
        log_entry(&t, base_ms + 2, 502),
        log_entry(&t, base_ms + 3, 101),
    ];
    store.append_request_log(&written).await.expect("append");

    let got = store.request_log(Some(&t), None, 10).await.expect("read");
    assert_eq!(got.len(), 3);
    assert!(got.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let without_ids: Vec<RequestLogEntry> = got
        .iter()
        .map(|e| RequestLogEntry {
            id: -1,
            ..e.clone()
        })
        .collect();
    assert_eq!(
        without_ids,
        vec![written[3].clone(), written[2].clone(), written[0].clone()]
    );

    let two = store.request_log(Some(&t), None, 2).await.expect("limit");
    assert_eq!(two, got[..2].to_vec());
    let rest = store
        .request_log(Some(&t), Some(two[1].id), 2)
        .await
        .expect("before");
    assert_eq!(rest, got[2..].to_vec());
    assert!(store
        .request_log(Some(&t), Some(got[2].id), 10)
        .await
        .expect("past the oldest")
        .is_empty());

    let everyone = store
        .request_log(None, Some(got[0].id + 1), 0)
        .await
        .expect("everyone");
    let ours: Vec<&RequestLogEntry> = everyone
        .iter()
        .filter(|e| e.tenant == t || e.tenant == other)
        .collect();
    assert_eq!(ours.len(), 4);
    assert_eq!(ours[2].tenant, other);

    // Pruning: entries that arrived before the bound go, the others stay.
    let removed = store.prune_request_log(base_ms + 2).await.expect("prune");
    assert!(removed >= 2, "{removed}");
    let left = store
        .request_log(Some(&t), None, 10)
        .await
        .expect("after prune");
    assert_eq!(left, got[..2].to_vec());
    assert!(store
        .request_log(Some(&other), None, 10)
        .await
        .expect("other")
        .is_empty());

    // New ids stay above every id handed out before, also after pruning the newest.
    assert!(
        store
            .prune_request_log(base_ms + 4)
            .await
            .expect("prune all")
            >= 2
    );
    store
        .append_request_log(&[log_entry(&t, base_ms + 5, 200)])
        .await
        .expect("append again");
    let again = store.request_log(Some(&t), None, 10).await.expect("again");
    assert_eq!(again.len(), 1);
    assert!(again[0].id > got[0].id);
    assert!(store.prune_request_log(base_ms + 6).await.expect("cleanup") >= 1);
}

/// The tenant, minute and node prefix the concurrent writers use.
const CONCURRENT_TENANT: &str = "cf-concurrent";
const CONCURRENT_MINUTE: i64 = 1_200_000_000;

/// One of several writers (tasks with their own pools, or processes) on one database at once, `rounds` times:
/// this writer's node heartbeats, its cumulative statistics of one shared minute, a request log entry, a tunnel
/// opened and one closed, a tenant `<writer>-<round>` created, given a secret and updated.
/// [`check_concurrent_writers`] then checks that nothing was lost.
pub async fn concurrent_writer(store: &dyn Store, writer: &str, rounds: u32) {
    let tenant = TenantName::new(CONCURRENT_TENANT).expect("name");
    for round in 0..rounds {
        let own = TenantName::new(format!("{writer}-{round}")).expect("name");
        store
            .create_tenant(&own, &no_fields())
            .await
            .expect("create");
        store.add_secret(&own, "h", None).await.expect("secret");
        store
            .update_tenant(&own, &fields_of(round))
            .await
            .expect("update")
            .expect("present");
        store
            .list_tenants(&TenantQuery::default())
            .await
            .expect("list");
        let now = unix_now();
        store
            .heartbeat_node(&NodeRecord {
                id: writer.to_owned(),
                address: format!("{writer}:8080"),
                version: "test".to_owned(),
                started_at: now,
                heartbeat_at: now,
                roles: "gateway,relay".to_owned(),
            })
            .await
            .expect("heartbeat");
        store
            .put_stats(
                writer,
                &[counts(&tenant, CONCURRENT_MINUTE, u64::from(round) + 1)],
            )
            .await
            .expect("put stats");
        store
            .append_request_log(&[log_entry(&tenant, now * 1000, 200)])
            .await
            .expect("append");
        let open = ConnectionRecord {
            id: format!("{writer}-{round}"),
            ..connection(&tenant, writer, now)
        };
        store.record_connection(&open).await.expect("record");
        let closed = ConnectionRecord {
            id: format!("{writer}-{round}-closed"),
            ..connection(&tenant, writer, now)
        };
        store.record_connection(&closed).await.expect("record");
        store
            .record_disconnection(&closed.id, now)
            .await
            .expect("disconnect");
    }
}

/// Check what `writers` (names given to [`concurrent_writer`]) wrote, each `rounds` times.
pub async fn check_concurrent_writers(store: &dyn Store, writers: &[String], rounds: u32) {
    let tenant = TenantName::new(CONCURRENT_TENANT).expect("name");
    let total = u64::try_from(writers.len()).expect("small") * u64::from(rounds);
    let stats = store
        .stats(Some(&tenant), CONCURRENT_MINUTE, CONCURRENT_MINUTE + 60)
        .await
        .expect("stats");
    // Each writer's last cumulative count is `rounds`.
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!(
        stats[0].requests,
        u64::try_from(writers.len()).expect("small") * u64::from(rounds)
    );
    let log = store
        .request_log(Some(&tenant), None, crate::MAX_PAGE_LIMIT)
        .await
        .expect("log");
    assert_eq!(u64::try_from(log.len()).expect("small"), total);
    let mut ids: Vec<i64> = log.iter().map(|e| e.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), log.len(), "ids are unique");
    let live = store
        .list_connections(&ConnectionQuery {
            tenant: Some(tenant.clone()),
            live_only: true,
            before: None,
            limit: crate::MAX_PAGE_LIMIT,
        })
        .await
        .expect("live");
    assert_eq!(u64::try_from(live.items.len()).expect("small"), total);
    for writer in writers {
        assert!(has_node(store, writer).await, "{writer}");
        for round in 0..rounds {
            let own = TenantName::new(format!("{writer}-{round}")).expect("name");
            let got = store.get_tenant(&own).await.expect("get").expect("created");
            assert_eq!(got.display_name, fields_of(round).display_name);
            let secrets = store
                .active_secrets(&own, unix_now())
                .await
                .expect("secrets");
            assert_eq!(secrets.len(), 1, "{own}");
        }
    }
}

fn fields_of(round: u32) -> TenantFields {
    TenantFields {
        display_name: format!("round {round}"),
        ..TenantFields::default()
    }
}

/// Rows a version 1 database may hold, checked by [`check_upgraded_from_version_1`].
pub const VERSION_1_ROWS: &str = "INSERT INTO tenants (name, created_at) VALUES ('old', 1000); \
     INSERT INTO secrets (id, tenant, hash, created_at) VALUES ('s1', 'old', 'h', 1000);";

/// A migrator that brings a database to version 1 of the schema: the first of `migrator`'s migrations.
pub fn version_1(migrator: &sqlx::migrate::Migrator) -> sqlx::migrate::Migrator {
    up_to_version(migrator, 1)
}

/// A migrator that brings a database to version `version` of the schema: the first `version` of `migrator`'s
/// migrations.
pub fn up_to_version(
    migrator: &sqlx::migrate::Migrator,
    version: usize,
) -> sqlx::migrate::Migrator {
    sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(migrator.migrations[..version].to_vec()),
        ..sqlx::migrate::Migrator::DEFAULT
    }
}

/// Rows a version 2 database may hold (a node, a statistics row), checked by [`check_upgraded_from_version_2`].
pub const VERSION_2_ROWS: &str =
    "INSERT INTO nodes (id, address, version, started_at, heartbeat_at) \
     VALUES ('old-node', 'http://10.0.0.1:8080', '0.1.0', 1000, 2000); \
     INSERT INTO stats (tenant, minute, node, requests, bytes_in, bytes_out, \
     status_1xx, status_2xx, status_3xx, status_4xx, status_5xx, latency) \
     VALUES ('old', 120, 'old-node', 3, 0, 0, 0, 3, 0, 0, 0, '[3,0,0,0,0,0,0,0,0,0,0,0,0,0]');";

/// What a database holds after the upgrade from version 2 in which [`VERSION_2_ROWS`] were written: the node
/// without roles, the statistics, and every new kind of record works.
pub async fn check_upgraded_from_version_2(store: &dyn Store) {
    let nodes = store.list_nodes().await.expect("nodes");
    let old = nodes.iter().find(|n| n.id == "old-node").expect("kept");
    assert_eq!(old.roles, "");
    assert_eq!(old.heartbeat_at, 2000);
    let old_tenant = TenantName::new("old").expect("name");
    let stats = store.stats(Some(&old_tenant), 0, 600).await.expect("stats");
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].requests, 3);
    let done = store.roll_up_stats(600, 10).await.expect("roll up");
    assert_eq!((done.minutes, done.rows_merged), (1, 1));
    assert_eq!(
        store.stats(Some(&old_tenant), 0, 600).await.expect("stats"),
        stats
    );
    store.prune_history(600).await.expect("cleanup");
    run_suite(store).await;
}

async fn has_node(store: &dyn Store, id: &str) -> bool {
    let nodes = store.list_nodes().await.expect("nodes");
    nodes.iter().any(|n| n.id == id)
}

/// What a database holds after the upgrade from version 1 in which a tenant `old` (created at 1000) with a secret
/// `s1` (hash `h`) was written.
pub async fn check_upgraded_from_version_1(store: &dyn Store) {
    let old = TenantName::new("old").expect("name");
    let tenant = store.get_tenant(&old).await.expect("get").expect("kept");
    assert_eq!(
        tenant,
        Tenant {
            name: old.clone(),
            display_name: String::new(),
            description: String::new(),
            settings: TenantSettings::default(),
            created_at: 1000,
            updated_at: 1000,
        }
    );
    let secrets = store
        .active_secrets(&old, unix_now())
        .await
        .expect("secrets");
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].id, "s1");
    // The upgraded database takes every new kind of record.
    let updated = store
        .update_tenant(&old, &TenantFields::default())
        .await
        .expect("update")
        .expect("present");
    assert!(updated.updated_at > 1000);
    run_suite(store).await;
}

/// Rows a version 3 database may hold (an admin key), checked by [`check_upgraded_from_version_3`].
pub const VERSION_3_ROWS: &str = "INSERT INTO admin_keys (id, name, sha256, created_at) \
     VALUES ('old-key', 'ops', 'abc123', 1000);";

/// What a database holds after the upgrade from version 3 in which [`VERSION_3_ROWS`] were written: the key is an
/// admin's with no tenant scope, and accounts, sessions and the audit log work.
pub async fn check_upgraded_from_version_3(store: &dyn Store) {
    let key = store
        .admin_key_by_hash("abc123")
        .await
        .expect("by hash")
        .expect("kept");
    assert_eq!((key.id.as_str(), key.role), ("old-key", Role::Admin));
    assert!(key.tenants.is_empty());
    users(store).await;
    sessions(store).await;
    audit_log(store).await;
}
