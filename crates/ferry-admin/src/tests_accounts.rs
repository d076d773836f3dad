//! Router tests of roles, sessions, CSRF, sign-in limits, accounts and the audit log, on an in-memory SQLite
//! store: one test per rule.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use ferry_store::Store;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use tower::ServiceExt as _;

use crate::model::{AdminKeyCreate, RoleName, UserCreate};
use crate::*;

struct Fx {
    router: axum::Router,
    store: Arc<dyn Store>,
    admin_key: String,
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
}

/// How a request authenticates.
#[derive(Clone, Copy)]
enum As<'a> {
    Key(&'a str),
    /// The session cookie, and the CSRF token to send (if any).
    Session(&'a str, Option<&'a str>),
    Nobody,
}

async fn fx_with(sessions: SessionSettings) -> Fx {
    let store: Arc<dyn Store> = Arc::new(
        ferry_store::SqliteStore::open_in_memory()
            .await
            .expect("store"),
    );
    let admin_key = Admin::new(store.clone())
        .create_admin_key(&AdminKeyCreate {
            name: "root".into(),
            ..Default::default()
        })
        .await
        .expect("key")
        .key;
    let router = AdminApi::new(store.clone()).sessions(sessions).router();
    let f = Fx {
        router,
        store,
        admin_key,
    };
    for t in ["acme", "globex", "initech"] {
        let r = f
            .send(
                As::Key(&f.admin_key.clone()),
                "POST",
                "/api/v1/tenants",
                Some(json!({"name": t})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    f
}

async fn fx() -> Fx {
    fx_with(SessionSettings::default()).await
}

impl Fx {
    async fn send(&self, who: As<'_>, method: &str, path: &str, body: Option<Value>) -> Reply {
        let mut b = Request::builder().method(method).uri(path);
        match who {
            As::Key(k) => b = b.header("authorization", format!("Bearer {k}")),
            As::Session(cookie, csrf) => {
                b = b.header("cookie", format!("theme=dark; {SESSION_COOKIE}={cookie}"));
                if let Some(t) = csrf {
                    b = b.header(CSRF_HEADER, t);
                }
            }
            As::Nobody => {}
        }
        let request = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        }
        .expect("request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    /// An admin key of `role` over `tenants`.
    async fn key(&self, role: &str, tenants: &[&str]) -> String {
        let mut body = json!({"name": format!("{role} key"), "role": role});
        if !tenants.is_empty() {
            body["tenants"] = json!(tenants);
        }
        let r = self
            .send(
                As::Key(&self.admin_key),
                "POST",
                "/api/v1/admin-keys",
                Some(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["key"].as_str().expect("key").to_owned()
    }

    async fn user(&self, name: &str, role: RoleName, tenants: &[&str], password: &str) {
        Admin::new(self.store.clone())
            .create_user(&UserCreate {
                name: name.into(),
                role,
                tenants: Some(tenants.iter().map(|t| (*t).to_owned()).collect()),
                password: Some(password.into()),
            })
            .await
            .expect("user");
    }

    /// Sign in; the session cookie's value and the CSRF token.
    async fn sign_in(&self, name: &str, password: &str) -> (String, String) {
        let r = self
            .send(
                As::Nobody,
                "POST",
                SESSION_PATH,
                Some(json!({"name": name, "password": password})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let set = r.headers["set-cookie"].to_str().expect("ascii").to_owned();
        let value = set
            .strip_prefix(&format!("{SESSION_COOKIE}="))
            .and_then(|rest| rest.split(';').next())
            .expect("cookie value")
            .to_owned();
        (
            value,
            r.body["csrf_token"].as_str().expect("csrf").to_owned(),
        )
    }
}

fn names(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test]
async fn a_viewer_reads_everything_but_changes_nothing() {
    let f = fx().await;
    let v = f.key("viewer", &[]).await;
    let r = f.send(As::Key(&v), "GET", "/api/v1/tenants", None).await;
    assert_eq!(names(&r.body), ["acme", "globex", "initech"]);
    for path in [
        "/api/v1/tenants/acme",
        "/api/v1/tenants/acme/settings",
        "/api/v1/tenants/acme/secrets",
        "/api/v1/connections",
        "/api/v1/stats",
        "/api/v1/request-log",
        "/api/v1/nodes",
    ] {
        let r = f.send(As::Key(&v), "GET", path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
    }
    for (method, path, body) in [
        ("POST", "/api/v1/tenants", Some(json!({"name": "new"}))),
        (
            "PATCH",
            "/api/v1/tenants/acme",
            Some(json!({"description": "x"})),
        ),
        ("DELETE", "/api/v1/tenants/acme", None),
        (
            "PATCH",
            "/api/v1/tenants/acme/settings",
            Some(json!({"max_body_size": 5})),
        ),
        ("PUT", "/api/v1/tenants/acme/settings", Some(json!({}))),
        ("POST", "/api/v1/tenants/acme/secrets", Some(json!({}))),
        ("DELETE", "/api/v1/tenants/acme/secrets/abc", None),
    ] {
        let r = f.send(As::Key(&v), method, path, body).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {:?}",
            r.body
        );
        assert_eq!(r.body["code"], "forbidden");
    }
    // Users, admin keys and the audit log are for admins.
    for path in ["/api/v1/users", "/api/v1/admin-keys", "/api/v1/audit"] {
        let r = f.send(As::Key(&v), "GET", path, None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
    }
    let r = f
        .send(As::Key(&v), "GET", "/api/v1/tenants/acme", None)
        .await;
    assert!(r.body["settings"].is_object());
}

#[tokio::test]
async fn an_operator_sees_and_changes_only_its_tenants_and_others_are_404() {
    let f = fx().await;
    let op = f.key("operator", &["acme", "initech", "not-yet"]).await;
    let r = f.send(As::Key(&op), "GET", "/api/v1/tenants", None).await;
    assert_eq!(
        names(&r.body),
        ["acme", "initech"],
        "filtered, existing only"
    );
    let r = f
        .send(As::Key(&op), "GET", "/api/v1/tenants?limit=1", None)
        .await;
    assert_eq!(
        (names(&r.body), r.body["next"].clone()),
        (vec!["acme".to_owned()], json!("acme"))
    );
    let r = f
        .send(
            As::Key(&op),
            "GET",
            "/api/v1/tenants?after=acme&filter=INI",
            None,
        )
        .await;
    assert_eq!(names(&r.body), ["initech"]);

    // Another tenant does not exist for it: 404 with the same body as a tenant that does not exist at all.
    for (method, path, body) in [
        ("GET", "/api/v1/tenants/globex", None),
        ("GET", "/api/v1/tenants/globex/settings", None),
        ("GET", "/api/v1/tenants/globex/secrets", None),
        (
            "PATCH",
            "/api/v1/tenants/globex/settings",
            Some(json!({"max_body_size": 5})),
        ),
        ("POST", "/api/v1/tenants/globex/secrets", Some(json!({}))),
        ("DELETE", "/api/v1/tenants/globex", None),
    ] {
        let r = f.send(As::Key(&op), method, path, body).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {:?}",
            r.body
        );
        assert_eq!(r.body["message"], "no tenant globex");
    }
    let missing = f
        .send(As::Key(&op), "GET", "/api/v1/tenants/nope", None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // Its own: read and change.
    let r = f
        .send(
            As::Key(&op),
            "PATCH",
            "/api/v1/tenants/acme/settings",
            Some(json!({"max_body_size": 5})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = f
        .send(
            As::Key(&op),
            "POST",
            "/api/v1/tenants/acme/secrets",
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Creating a tenant: only the names of its scope.
    let r = f
        .send(
            As::Key(&op),
            "POST",
            "/api/v1/tenants",
            Some(json!({"name": "other"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = f
        .send(
            As::Key(&op),
            "POST",
            "/api/v1/tenants",
            Some(json!({"name": "not-yet"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);

    // Lists of connections, statistics and the request log hold only its tenants.
    let store = &f.store;
    for (i, t) in ["acme", "globex"].into_iter().enumerate() {
        let tenant = ferry_proto::TenantName::new(t).expect("name");
        store
            .record_connection(&ferry_store::ConnectionRecord {
                id: format!("c{i}"),
                tenant: tenant.clone(),
                connector_id: "k".into(),
                node: "n".into(),
                remote_addr: "10.0.0.1:1".into(),
                connected_at: 100 + i as i64,
                disconnected_at: None,
            })
            .await
            .expect("conn");
        store
            .append_request_log(&[ferry_store::RequestLogEntry {
                id: 0,
                tenant: tenant.clone(),
                at_ms: 1,
                request_id: "r".into(),
                method: "GET".into(),
                target: "app".into(),
                path: "/".into(),
                status: 200,
                duration_ms: 1,
                bytes_in: 0,
                bytes_out: 0,
                client_addr: "c".into(),
            }])
            .await
            .expect("log");
        let minute = ferry_store::unix_now() / 60 * 60 - 60;
        store
            .put_stats(
                "n",
                &[ferry_store::StatsRecord {
                    requests: 10 + i as u64,
                    ..ferry_store::StatsRecord::new(tenant, minute)
                }],
            )
            .await
            .expect("stats");
    }
    let tenants_of = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|e| e["tenant"].as_str().expect("tenant").to_owned())
            .collect()
    };
    let r = f
        .send(As::Key(&op), "GET", "/api/v1/connections", None)
        .await;
    assert_eq!(tenants_of(&r.body), ["acme"]);
    let r = f
        .send(As::Key(&op), "GET", "/api/v1/request-log", None)
        .await;
    assert_eq!(tenants_of(&r.body), ["acme"]);
    let r = f.send(As::Key(&op), "GET", "/api/v1/stats", None).await;
    assert_eq!(r.body["totals"]["requests"], 10, "{:?}", r.body);
    for path in [
        "/api/v1/connections?tenant=globex",
        "/api/v1/request-log?tenant=globex",
    ] {
        let r = f.send(As::Key(&op), "GET", path, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(tenants_of(&r.body).is_empty(), "{path}");
    }
    let r = f
        .send(As::Key(&op), "GET", "/api/v1/stats?tenant=globex", None)
        .await;
    assert_eq!(r.body["totals"]["requests"], 0);
    let admin = f
        .send(As::Key(&f.admin_key), "GET", "/api/v1/stats", None)
        .await;
    assert_eq!(admin.body["totals"]["requests"], 21);

    for path in ["/api/v1/users", "/api/v1/admin-keys", "/api/v1/audit"] {
        let r = f.send(As::Key(&op), "GET", path, None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
    }
}

#[tokio::test]
async fn only_operators_have_a_tenant_scope() {
    let f = fx().await;
    let r = f
        .send(
            As::Key(&f.admin_key),
            "POST",
            "/api/v1/admin-keys",
            Some(json!({"name": "v", "role": "viewer", "tenants": ["acme"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = f
        .send(
            As::Key(&f.admin_key),
            "POST",
            "/api/v1/admin-keys",
            Some(json!({"name": "x", "role": "root"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = f
        .send(As::Key(&f.admin_key), "GET", "/api/v1/admin-keys", None)
        .await;
    assert!(r.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .all(|k| k["role"] == "admin"));
}

#[tokio::test]
async fn sessions_sign_in_say_who_and_sign_out_everywhere() {
    let f = fx().await;
    f.user("alice", RoleName::Admin, &[], "correct horse").await;
    let r = f
        .send(
            As::Nobody,
            "POST",
            SESSION_PATH,
            Some(json!({"name": "alice", "password": "wrong horse"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get("set-cookie").is_none());
    let r = f
        .send(
            As::Nobody,
            "POST",
            SESSION_PATH,
            Some(json!({"name": "nobody", "password": "whatever1"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["message"], "wrong name or password");

    let r = f
        .send(
            As::Nobody,
            "POST",
            SESSION_PATH,
            Some(json!({"name": "alice", "password": "correct horse"})),
        )
        .await;
    let cookie = r.headers["set-cookie"].to_str().expect("ascii");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let (session, csrf) = f.sign_in("alice", "correct horse").await;
    assert_ne!(session, csrf);

    let me = f
        .send(As::Session(&session, None), "GET", SESSION_PATH, None)
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(
        (me.body["user"].clone(), me.body["role"].clone()),
        (json!("alice"), json!("admin"))
    );
    assert_eq!(me.body["csrf_token"], json!(csrf));
    let users = f
        .send(As::Session(&session, None), "GET", "/api/v1/users", None)
        .await;
    let alice = &users.body["items"][0];
    assert!(alice["last_sign_in_at"].is_i64(), "{alice:?}");
    assert!(alice.get("password_hash").is_none());

    // An admin key says who it is too, without a CSRF token.
    let me = f
        .send(As::Key(&f.admin_key), "GET", SESSION_PATH, None)
        .await;
    assert_eq!(me.body["role"], "admin");
    assert!(me.body["csrf_token"].is_null());
    let r = f
        .send(As::Key(&f.admin_key), "DELETE", SESSION_PATH, None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Sign out: the session ends in the store, so every node refuses the cookie from now on.
    let r = f
        .send(
            As::Session(&session, Some(&csrf)),
            "DELETE",
            SESSION_PATH,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.headers["set-cookie"]
        .to_str()
        .expect("ascii")
        .contains("Max-Age=0"));
    let other_node = AdminApi::new(f.store.clone()).router();
    for router in [&f.router, &other_node] {
        let request = Request::builder()
            .uri("/api/v1/tenants")
            .header("cookie", format!("{SESSION_COOKIE}={session}"))
            .body(Body::empty())
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn a_change_with_a_session_needs_its_csrf_token() {
    let f = fx().await;
    f.user("alice", RoleName::Admin, &[], "correct horse").await;
    let (session, csrf) = f.sign_in("alice", "correct horse").await;
    let change = Some(json!({"max_body_size": 7}));
    let path = "/api/v1/tenants/acme/settings";
    let r = f
        .send(As::Session(&session, None), "PATCH", path, change.clone())
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no token");
    assert!(r.body["message"]
        .as_str()
        .expect("message")
        .contains("X-CSRF-Token"));
    let r = f
        .send(
            As::Session(&session, Some("not-it")),
            "PATCH",
            path,
            change.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "wrong token");
    let (_, other_csrf) = f.sign_in("alice", "correct horse").await;
    let r = f
        .send(
            As::Session(&session, Some(&other_csrf)),
            "PATCH",
            path,
            change.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "another session's token");
    let settings = f.send(As::Key(&f.admin_key), "GET", path, None).await;
    assert!(
        settings.body.get("max_body_size").is_none(),
        "nothing changed"
    );
    let r = f
        .send(As::Session(&session, Some(&csrf)), "PATCH", path, change)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // Reading needs no token.
    let r = f.send(As::Session(&session, None), "GET", path, None).await;
    assert_eq!(r.body["max_body_size"], 7);
}

#[tokio::test]
async fn expired_sessions_and_sessions_of_deleted_or_disabled_users_are_refused() {
    let f = fx().await;
    f.user("bob", RoleName::Viewer, &[], "correct horse").await;
    let get = |s: String| {
        let f = &f;
        async move {
            f.send(As::Session(&s, None), "GET", "/api/v1/tenants", None)
                .await
                .status
        }
    };
    // Idle: past its idle expiry in the store.
    let (idle, _) = f.sign_in("bob", "correct horse").await;
    let hash = hash_admin_key(&idle);
    let now = ferry_store::unix_now();
    assert!(f.store.touch_session(&hash, now, now).await.expect("touch"));
    assert_eq!(get(idle).await, StatusCode::UNAUTHORIZED);
    // Absolute: a session past its absolute expiry, however recently used.
    let past = ferry_store::SessionRecord {
        id_sha256: hash_admin_key("old-session"),
        user: "bob".into(),
        csrf_token: "c".into(),
        created_at: now - 100,
        last_seen_at: now - 1,
        idle_expires_at: now + 600,
        expires_at: now - 1,
    };
    f.store.create_session(&past).await.expect("session");
    assert_eq!(get("old-session".into()).await, StatusCode::UNAUTHORIZED);

    // Disabled: refused, and its sessions are gone even once enabled again.
    let (s1, _) = f.sign_in("bob", "correct horse").await;
    assert_eq!(get(s1.clone()).await, StatusCode::OK);
    let r = f
        .send(
            As::Key(&f.admin_key),
            "POST",
            "/api/v1/users/bob/disable",
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.body["disabled"].clone()),
        (StatusCode::OK, json!(true))
    );
    assert_eq!(get(s1.clone()).await, StatusCode::UNAUTHORIZED);
    let r = f
        .send(
            As::Nobody,
            "POST",
            SESSION_PATH,
            Some(json!({"name": "bob", "password": "correct horse"})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "a disabled account cannot sign in"
    );
    f.send(
        As::Key(&f.admin_key),
        "POST",
        "/api/v1/users/bob/enable",
        None,
    )
    .await;
    assert_eq!(get(s1).await, StatusCode::UNAUTHORIZED);

    // Deleted: its cookie is refused, also if a user of the same name comes back.
    let (s2, _) = f.sign_in("bob", "correct horse").await;
    let r = f
        .send(As::Key(&f.admin_key), "DELETE", "/api/v1/users/bob", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(get(s2.clone()).await, StatusCode::UNAUTHORIZED);
    f.user("bob", RoleName::Viewer, &[], "correct horse").await;
    assert_eq!(get(s2).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_session_idles_out_after_the_configured_timeout() {
    let f = fx_with(SessionSettings {
        idle_timeout: Duration::from_secs(1),
        max_age: Duration::from_secs(3600),
        ..SessionSettings::default()
    })
    .await;
    f.user("carol", RoleName::Viewer, &[], "correct horse")
        .await;
    let (s, _) = f.sign_in("carol", "correct horse").await;
    let session = f
        .store
        .session(&hash_admin_key(&s), ferry_store::unix_now())
        .await
        .expect("read")
        .expect("valid");
    assert!(session.idle_expires_at <= session.created_at + 1);
    assert!(session.expires_at >= session.created_at + 3600);
    // One second of idleness later (the store's clock is unix seconds) it is refused.
    let valid_at = session.idle_expires_at - 1;
    assert!(f
        .store
        .session(&session.id_sha256, valid_at)
        .await
        .expect("read")
        .is_some());
    assert!(f
        .store
        .session(&session.id_sha256, session.idle_expires_at)
        .await
        .expect("read")
        .is_none());
}

#[tokio::test]
async fn sign_in_attempts_are_limited_per_account_with_a_clear_429() {
    let f = fx_with(SessionSettings {
        attempts_per_account: 2,
        ..SessionSettings::default()
    })
    .await;
    f.user("dave", RoleName::Viewer, &[], "correct horse").await;
    for _ in 0..2 {
        let r = f
            .send(
                As::Nobody,
                "POST",
                SESSION_PATH,
                Some(json!({"name": "dave", "password": "guess-guess"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // Even the right password waits now.
    let r = f
        .send(
            As::Nobody,
            "POST",
            SESSION_PATH,
            Some(json!({"name": "DAVE", "password": "correct horse"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", r.body);
    assert_eq!(r.body["code"], "sign_in_rate_limited");
    assert!(r.body["message"]
        .as_str()
        .expect("message")
        .contains("try again in"));
    let retry: u64 = r.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    // Another account is not held up.
    f.user("erin", RoleName::Viewer, &[], "correct horse").await;
    f.sign_in("erin", "correct horse").await;
}

#[tokio::test]
async fn users_are_managed_by_admins_and_every_change_is_audited() {
    let f = fx().await;
    let k = As::Key(&f.admin_key);
    let r = f
        .send(
            k,
            "POST",
            "/api/v1/users",
            Some(json!({"name": "op1", "role": "operator", "tenants": ["acme"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let generated = r.body["password"]
        .as_str()
        .expect("generated, shown once")
        .to_owned();
    assert!(generated.len() >= 20);
    assert_eq!(r.body["user"]["tenants"], json!(["acme"]));
    let r = f
        .send(
            k,
            "POST",
            "/api/v1/users",
            Some(json!({"name": "op1", "role": "viewer", "password": "long enough"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = f
        .send(
            k,
            "POST",
            "/api/v1/users",
            Some(json!({"name": "v1", "role": "viewer", "password": "short"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = f
        .send(
            k,
            "POST",
            "/api/v1/users",
            Some(json!({"name": "bad name", "role": "viewer"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = f
        .send(
            k,
            "POST",
            "/api/v1/users",
            Some(json!({"name": "v1", "role": "viewer", "password": "long enough"})),
        )
        .await;
    assert!(
        r.body.get("password").is_none(),
        "a given password is not echoed"
    );

    // The operator signs in with the generated password and sees only acme.
    let (s, csrf) = f.sign_in("op1", &generated).await;
    let r = f
        .send(As::Session(&s, None), "GET", "/api/v1/tenants", None)
        .await;
    assert_eq!(names(&r.body), ["acme"]);
    let r = f
        .send(
            As::Session(&s, Some(&csrf)),
            "POST",
            "/api/v1/users",
            Some(json!({"name": "x", "role": "admin"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // A new password ends the sessions; the old password no longer works.
    let r = f
        .send(
            k,
            "PUT",
            "/api/v1/users/op1/password",
            Some(json!({"password": "brand new pw"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = f
        .send(As::Session(&s, None), "GET", "/api/v1/tenants", None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    f.sign_in("op1", "brand new pw").await;
    let r = f
        .send(k, "PUT", "/api/v1/users/op1/password", Some(json!({})))
        .await;
    assert!(r.body["password"].is_string(), "generated");

    let r = f.send(k, "GET", "/api/v1/users", None).await;
    assert_eq!(names(&r.body), ["op1", "v1"]);
    let r = f.send(k, "GET", "/api/v1/users/nobody", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = f.send(k, "DELETE", "/api/v1/users/v1", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    // The audit log: every change, newest first, with its actor; never a secret or password.
    let r = f.send(k, "GET", "/api/v1/audit?limit=1000", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = r.body.to_string();
    assert!(
        !text.contains(&generated) && !text.contains("brand new pw") && !text.contains("fsec_")
    );
    let actions: Vec<&str> = r.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    for action in [
        "tenant.create",
        "user.create",
        "session.create",
        "user.passwd",
        "user.delete",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    let key_id = f.send(k, "GET", SESSION_PATH, None).await.body["subject"]
        .as_str()
        .expect("subject")
        .to_owned();
    let r = f
        .send(
            k,
            "GET",
            &format!("/api/v1/audit?actor={key_id}&action=tenant.create"),
            None,
        )
        .await;
    let objects: Vec<&str> = r.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["object"].as_str().expect("object"))
        .collect();
    assert_eq!(objects, ["initech", "globex", "acme"]);
    let r = f
        .send(k, "GET", "/api/v1/audit?action=session.create", None)
        .await;
    assert_eq!(r.body["items"][0]["actor"], "user:op1");
    let r = f.send(k, "GET", "/api/v1/audit?from=0&to=1", None).await;
    assert!(r.body["items"].as_array().expect("items").is_empty());
}

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary_with_a_strict_policy() {
    let f = fx().await;
    for (path, kind, needle) in [
        ("/", "text/html", "sign-in-form"),
        ("/dashboard/app.js", "text/javascript", "lineChart"),
        ("/dashboard/app.css", "text/css", "svg.chart"),
    ] {
        let request = Request::builder()
            .uri(path)
            .body(Body::empty())
            .expect("request");
        let response = f.router.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .expect("ascii")
                .starts_with(kind),
            "{path}"
        );
        let csp = headers["content-security-policy"].to_str().expect("ascii");
        assert!(
            csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert!(String::from_utf8_lossy(&body).contains(needle), "{path}");
    }
}

/// A gateway with one route and one pool whose server is down.
struct FakeGateway;

impl GatewayView for FakeGateway {
    fn gateway(&self) -> crate::model::GatewayReport {
        use crate::model::*;
        GatewayReport {
            node: "n1".into(),
            enabled: true,
            routes: vec![GatewayRouteView {
                name: "shop".into(),
                hosts: vec!["shop.example.com".into()],
                path_kind: "prefix".into(),
                path: "/".into(),
                methods: vec![],
                action: "upstream".into(),
                target: "web".into(),
            }],
            upstreams: vec![UpstreamView {
                name: "web".into(),
                protocol: "http".into(),
                health_checks: true,
                servers: vec![UpstreamServerView {
                    url: "http://10.0.0.1:80".into(),
                    weight: 1,
                    backup: false,
                    max_conns: None,
                    health: "unhealthy".into(),
                    in_flight: 0,
                    requests: 3,
                    failures: 1,
                }],
            }],
        }
    }
}

#[tokio::test]
async fn every_role_reads_the_gateway_and_without_one_it_is_not_enabled() {
    let f = fx().await;
    let r = f
        .send(As::Key(&f.admin_key), "GET", "/api/v1/gateway", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["enabled"], json!(false));
    assert_eq!(r.body["routes"], json!([]));
    let router = AdminApi::new(f.store.clone())
        .gateway_view(Arc::new(FakeGateway))
        .router();
    let f = Fx { router, ..f };
    let viewer = f.key("viewer", &[]).await;
    let operator = f.key("operator", &["acme"]).await;
    for key in [f.admin_key.clone(), viewer, operator] {
        let r = f.send(As::Key(&key), "GET", "/api/v1/gateway", None).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.body["enabled"], json!(true));
        assert_eq!(r.body["routes"][0]["target"], json!("web"));
        assert_eq!(
            r.body["upstreams"][0]["servers"][0]["health"],
            json!("unhealthy")
        );
    }
    let r = f.send(As::Nobody, "GET", "/api/v1/gateway", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
