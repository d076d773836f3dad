//! Router tests: authentication outcomes, CRUD round trips, validation statuses and the OpenAPI document, on an
//! in-memory SQLite store.

use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use tower::ServiceExt as _;

use crate::model::AdminKeyCreate;
use crate::*;

struct StubCheck;

#[async_trait::async_trait]
impl AdminTokenCheck for StubCheck {
    async fn check(&self, token: &str) -> AdminTokenOutcome {
        match token {
            "oidc-admin" => AdminTokenOutcome::Granted {
                subject: "alice".into(),
                role: ferry_store::Role::Admin,
                tenants: vec![],
            },
            "oidc-viewer" => AdminTokenOutcome::Granted {
                subject: "vera".into(),
                role: ferry_store::Role::Viewer,
                tenants: vec![],
            },
            "oidc-operator" => AdminTokenOutcome::Granted {
                subject: "otto".into(),
                role: ferry_store::Role::Operator,
                tenants: vec![ferry_proto::TenantName::new("acme").expect("name")],
            },
            "oidc-user" => AdminTokenOutcome::NoRole,
            _ => AdminTokenOutcome::Invalid,
        }
    }
}

struct Fixture {
    router: axum::Router,
    key: String,
    notes: Arc<RecordingNotifier>,
}

async fn fixture() -> Fixture {
    let store: Arc<dyn ferry_store::Store> = Arc::new(
        ferry_store::SqliteStore::open_in_memory()
            .await
            .expect("store"),
    );
    let key = Admin::new(store.clone())
        .create_admin_key(&AdminKeyCreate {
            name: "test".into(),
            ..Default::default()
        })
        .await
        .expect("admin key")
        .key;
    let notes = Arc::new(RecordingNotifier::default());
    let router = AdminApi::new(store)
        .notifier(notes.clone())
        .token_check(Arc::new(StubCheck))
        .max_body_size(4096)
        .router();
    Fixture { router, key, notes }
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
}

impl Fixture {
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.send_as(Some(&format!("Bearer {}", self.key)), method, path, body)
            .await
    }

    async fn send_as(
        &self,
        authorization: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(a) = authorization {
            builder = builder.header("authorization", a);
        }
        let request = match body {
            Some(b) => builder
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => builder.body(Body::empty()),
        }
        .expect("request");
        self.raw(request).await
    }

    async fn raw(&self, request: Request<Body>) -> Reply {
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
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }
}

fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert_eq!(reply.body["code"], code, "{:?}", reply.body);
    assert!(reply.body["message"].is_string(), "{:?}", reply.body);
}

#[tokio::test]
async fn callers_without_a_valid_credential_get_401_with_a_challenge() {
    let f = fixture().await;
    for auth in [
        None,
        Some("Bearer fadm_not-a-key"),
        Some("Bearer fsec_a-connector-secret"),
        Some("Bearer some.jwt.token"),
        Some("Basic YWRtaW46YWRtaW4="),
        Some("Bearer "),
    ] {
        let r = f.send_as(auth, "GET", "/api/v1/tenants", None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(
            r.headers.get("www-authenticate").map(|v| v.as_bytes()),
            Some(&b"Bearer"[..]),
            "{auth:?}"
        );
    }
}

#[tokio::test]
async fn tokens_are_judged_by_the_token_check() {
    let f = fixture().await;
    let r = f
        .send_as(Some("Bearer oidc-user"), "GET", "/api/v1/tenants", None)
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = f
        .send_as(Some("Bearer oidc-admin"), "GET", "/api/v1/tenants", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[tokio::test]
async fn token_roles_are_enforced_like_every_other_caller() {
    let f = fixture().await;
    for name in ["acme", "other"] {
        let r = f
            .send("POST", "/api/v1/tenants", Some(json!({ "name": name })))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    // A viewer reads everything and changes nothing.
    let r = f
        .send_as(Some("Bearer oidc-viewer"), "GET", "/api/v1/tenants", None)
        .await;
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(2));
    let r = f
        .send_as(
            Some("Bearer oidc-viewer"),
            "POST",
            "/api/v1/tenants",
            Some(json!({ "name": "new" })),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    // An operator sees its tenants only; another is as if it did not exist.
    let r = f
        .send_as(Some("Bearer oidc-operator"), "GET", "/api/v1/tenants", None)
        .await;
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(r.body["items"][0]["name"], "acme");
    let r = f
        .send_as(
            Some("Bearer oidc-operator"),
            "GET",
            "/api/v1/tenants/other",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = f
        .send_as(Some("Bearer oidc-operator"), "GET", "/api/v1/session", None)
        .await;
    assert_eq!(r.body["role"], "operator");
    assert_eq!(r.body["tenants"], json!(["acme"]));
}

#[tokio::test]
async fn oidc_sign_in_is_public_and_absent_unless_configured() {
    let f = fixture().await;
    let r = f
        .send_as(None, "GET", "/api/v1/session/methods", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({ "password": true }));
    let r = f.send_as(None, "GET", "/api/v1/session/oidc", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = f
        .send_as(
            None,
            "GET",
            "/api/v1/session/oidc/callback?code=x&state=y",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_api_key_header_works_and_revoked_keys_do_not() {
    let f = fixture().await;
    let request = Request::get("/api/v1/admin-keys")
        .header("x-api-key", &f.key)
        .body(Body::empty())
        .expect("request");
    let r = f.raw(request).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(1));
    assert!(r.body["items"][0].get("sha256").is_none());

    let created = f
        .send("POST", "/api/v1/admin-keys", Some(json!({"name": "ci"})))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let second = created.body["key"].as_str().expect("key").to_owned();
    assert!(second.starts_with(ADMIN_KEY_PREFIX));
    let id = created.body["id"].as_str().expect("id").to_owned();
    let auth = format!("Bearer {second}");
    let r = f.send_as(Some(&auth), "GET", "/api/v1/nodes", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = f
        .send("DELETE", &format!("/api/v1/admin-keys/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = f.send_as(Some(&auth), "GET", "/api/v1/nodes", None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let r = f
        .send("DELETE", &format!("/api/v1/admin-keys/{id}"), None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn tenant_crud_round_trip() {
    let f = fixture().await;
    let r = f
        .send(
            "POST",
            "/api/v1/tenants",
            Some(json!({"name": "acme", "display_name": "Acme", "settings": {"max_body_size": 1000}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["tenant"]["name"], "acme");
    assert_eq!(r.body["tenant"]["settings"]["max_body_size"], 1000);
    assert!(r.body["secret"]["secret"]
        .as_str()
        .is_some_and(|s| s.starts_with("fsec_")));

    let r = f
        .send("POST", "/api/v1/tenants", Some(json!({"name": "acme"})))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");

    for name in ["beta", "gamma"] {
        let r = f
            .send("POST", "/api/v1/tenants", Some(json!({"name": name})))
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let r = f.send("GET", "/api/v1/tenants?limit=2", None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(2));
    let next = r.body["next"].as_str().expect("next cursor").to_owned();
    let r = f
        .send(
            "GET",
            &format!("/api/v1/tenants?limit=2&after={next}"),
            None,
        )
        .await;
    assert_eq!(r.body["items"][0]["name"], "gamma");
    assert!(r.body["next"].is_null());
    let r = f.send("GET", "/api/v1/tenants?filter=ACM", None).await;
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(1));

    let r = f
        .send(
            "PATCH",
            "/api/v1/tenants/acme",
            Some(json!({"description": "d", "settings": {"keepalive_interval_ms": 5000}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["display_name"], "Acme");
    assert_eq!(r.body["description"], "d");
    assert_eq!(r.body["settings"]["keepalive_interval_ms"], 5000);
    assert_eq!(r.body["settings"]["max_body_size"], 1000);

    let r = f.send("GET", "/api/v1/tenants/acme", None).await;
    assert_eq!(r.body["description"], "d");

    let r = f
        .send(
            "PUT",
            "/api/v1/tenants/acme/settings",
            Some(json!({"require_client_auth": true})),
        )
        .await;
    assert_eq!(r.body, json!({"require_client_auth": true}));
    let r = f
        .send(
            "PATCH",
            "/api/v1/tenants/acme/settings",
            Some(json!({"max_concurrent_requests": 7})),
        )
        .await;
    assert_eq!(
        r.body,
        json!({"require_client_auth": true, "max_concurrent_requests": 7})
    );
    let r = f.send("GET", "/api/v1/tenants/acme/settings", None).await;
    assert_eq!(r.body["max_concurrent_requests"], 7);

    let r = f.send("DELETE", "/api/v1/tenants/acme", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = f.send("GET", "/api/v1/tenants/acme", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = f.send("DELETE", "/api/v1/tenants/acme", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    let events = f.notes.events();
    assert!(events.contains(&"changed:acme".to_owned()), "{events:?}");
    assert!(events.contains(&"deleted:acme".to_owned()), "{events:?}");
}

#[tokio::test]
async fn secrets_round_trip() {
    let f = fixture().await;
    let r = f
        .send("POST", "/api/v1/tenants", Some(json!({"name": "acme"})))
        .await;
    let first = r.body["secret"]["id"].as_str().expect("id").to_owned();
    let r = f
        .send(
            "POST",
            "/api/v1/tenants/acme/secrets",
            Some(json!({"expires_at": ferry_store::unix_now() + 3600})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert!(r.body["expires_at"].is_i64());
    let r = f
        .send(
            "POST",
            "/api/v1/tenants/acme/secrets",
            Some(json!({"expires_at": 1})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let r = f
        .send("POST", "/api/v1/tenants/nobody/secrets", Some(json!({})))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    let r = f.send("GET", "/api/v1/tenants/acme/secrets", None).await;
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(2));
    assert!(r.body["items"][0].get("hash").is_none());
    let r = f
        .send(
            "DELETE",
            &format!("/api/v1/tenants/acme/secrets/{first}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = f
        .send(
            "DELETE",
            &format!("/api/v1/tenants/acme/secrets/{first}"),
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = f.send("GET", "/api/v1/tenants/acme/secrets", None).await;
    let revoked: Vec<&Value> = r.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|s| s["active"] == false)
        .collect();
    assert_eq!(revoked.len(), 1);
    assert!(f.notes.events().contains(&format!("revoked:acme:{first}")));
    let r = f.send("GET", "/api/v1/tenants/nobody/secrets", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn bad_input_gets_4xx_with_a_json_error() {
    let f = fixture().await;
    let key = f.key.clone();
    let post = |body: &'static str, content_type: Option<&'static str>| {
        let mut b =
            Request::post("/api/v1/tenants").header("authorization", format!("Bearer {key}"));
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        b.body(Body::from(body)).expect("request")
    };
    let r = f.raw(post("{not json", Some("application/json"))).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request");
    let r = f
        .raw(post(r#"{"name": 5}"#, Some("application/json")))
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let r = f
        .raw(post(
            r#"{"name": "a", "extra": 1}"#,
            Some("application/json"),
        ))
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let r = f.raw(post(r#"{"name": "a"}"#, None)).await;
    assert_error(
        &r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let r = f
        .send(
            "POST",
            "/api/v1/tenants",
            Some(json!({"name": "Not Valid"})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let big = json!({"name": "a", "description": "x".repeat(5000)});
    let r = f.send("POST", "/api/v1/tenants", Some(big)).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let r = f
        .send(
            "POST",
            "/api/v1/tenants",
            Some(json!({"name": "a", "settings": {"reconnect_min_delay_ms": 10, "reconnect_max_delay_ms": 1}})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    for path in [
        "/api/v1/tenants?limit=0",
        "/api/v1/tenants?limit=abc",
        "/api/v1/tenants/UPPER",
        "/api/v1/connections?before=garbage",
        "/api/v1/connections?tenant=B%20C",
        "/api/v1/stats?from=10&to=5",
        "/api/v1/request-log?before=-1",
        "/api/v1/tenants?filter=%00",
    ] {
        let r = f.send("GET", path, None).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request");
    }
    let r = f.send("GET", "/api/v1/no-such-thing", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn observation_endpoints_answer() {
    let f = fixture().await;
    for path in [
        "/api/v1/connections?live=true&limit=5",
        "/api/v1/nodes",
        "/api/v1/stats",
        "/api/v1/request-log?limit=3",
    ] {
        let r = f.send("GET", path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
    }
}

#[tokio::test]
async fn the_openapi_document_is_public_and_complete() {
    let f = fixture().await;
    let r = f.send_as(None, "GET", OPENAPI_PATH, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.body;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')));
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    for path in [
        "/api/v1/tenants",
        "/api/v1/tenants/{name}",
        "/api/v1/tenants/{name}/settings",
        "/api/v1/tenants/{name}/secrets",
        "/api/v1/tenants/{name}/secrets/{id}",
        "/api/v1/connections",
        "/api/v1/nodes",
        "/api/v1/stats",
        "/api/v1/request-log",
        "/api/v1/admin-keys",
        "/api/v1/admin-keys/{id}",
        "/api/v1/users",
        "/api/v1/users/{name}",
        "/api/v1/users/{name}/disable",
        "/api/v1/users/{name}/enable",
        "/api/v1/users/{name}/password",
        "/api/v1/audit",
        "/api/v1/session",
        "/api/v1/session/methods",
        "/api/v1/session/oidc",
        "/api/v1/session/oidc/callback",
        "/api/v1/gateway",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    // Nor does signing in through the provider.
    for path in [
        "/api/v1/session/methods",
        "/api/v1/session/oidc",
        "/api/v1/session/oidc/callback",
    ] {
        assert_eq!(doc["paths"][path]["get"]["security"], json!([{}]), "{path}");
    }
    assert!(doc["components"]["securitySchemes"]["session"].is_object());
    // Signing in needs no credential.
    assert_eq!(
        doc["paths"]["/api/v1/session"]["post"]["security"],
        json!([{}])
    );
    assert!(doc["paths"]["/api/v1/tenants"]["get"]["responses"]["401"].is_object());
    // The 500 and 503 the docs describe are in the document too.
    for status in ["500", "503"] {
        assert!(
            doc["paths"]["/api/v1/tenants"]["get"]["responses"][status].is_object(),
            "{status}"
        );
    }
    assert_eq!(openapi().paths.paths.len(), 22);
}

#[tokio::test]
async fn stats_are_summed_per_minute_with_percentiles() {
    let store: Arc<dyn ferry_store::Store> = Arc::new(
        ferry_store::SqliteStore::open_in_memory()
            .await
            .expect("store"),
    );
    let admin = Admin::new(store.clone());
    let key = admin
        .create_admin_key(&AdminKeyCreate {
            name: "t".into(),
            ..Default::default()
        })
        .await
        .expect("key")
        .key;
    for name in ["a", "b"] {
        store
            .create_tenant(
                &ferry_proto::TenantName::new(name).expect("name"),
                &ferry_store::TenantFields::default(),
            )
            .await
            .expect("tenant");
    }
    let row = |tenant: &str, minute: i64, fast: u64, slow: u64| {
        let mut latency = [0u64; ferry_store::LATENCY_BUCKETS_MS.len() + 1];
        latency[0] = fast;
        latency[8] = slow; // <= 500 ms
        ferry_store::StatsRecord {
            tenant: ferry_proto::TenantName::new(tenant).expect("name"),
            minute,
            requests: fast + slow,
            bytes_in: 10,
            bytes_out: 20,
            status_classes: [0, fast, 0, 0, slow],
            latency_buckets: latency,
        }
    };
    store
        .put_stats(
            "n1",
            &[
                row("a", 600, 90, 0),
                row("b", 600, 9, 1),
                row("a", 660, 1, 1),
            ],
        )
        .await
        .expect("put");
    store
        .put_stats("n2", &[row("a", 600, 0, 0), row("b", 660, 0, 2)])
        .await
        .expect("put");
    let f = Fixture {
        router: AdminApi::new(store).router(),
        key,
        notes: Arc::default(),
    };
    let r = f.send("GET", "/api/v1/stats?from=0&to=3600", None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let minutes = r.body["minutes"].as_array().expect("minutes");
    assert_eq!(minutes.len(), 2, "{:?}", r.body);
    assert_eq!(minutes[0]["minute"], 600);
    assert_eq!(minutes[0]["requests"], 100);
    assert_eq!(minutes[0]["status_classes"]["2xx"], 99);
    assert_eq!(minutes[0]["p50_ms"], 1);
    assert_eq!(minutes[0]["p99_ms"], 1);
    assert_eq!(minutes[1]["requests"], 4);
    assert_eq!(minutes[1]["p99_ms"], 500);
    assert_eq!(r.body["totals"]["requests"], 104);
    assert_eq!(r.body["totals"]["bytes_in"], 50);
    assert_eq!(
        r.body["latency_bounds_ms"].as_array().map(Vec::len),
        Some(ferry_store::LATENCY_BUCKETS_MS.len())
    );
    let r = f
        .send("GET", "/api/v1/stats?tenant=b&from=0&to=3600", None)
        .await;
    assert_eq!(r.body["totals"]["requests"], 12, "{:?}", r.body);
    assert_eq!(r.body["totals"]["status_classes"]["5xx"], 3);
    let r = f
        .send("GET", "/api/v1/stats?from=0&to=999999999", None)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn connections_page_with_their_cursor() {
    let store: Arc<dyn ferry_store::Store> = Arc::new(
        ferry_store::SqliteStore::open_in_memory()
            .await
            .expect("store"),
    );
    let key = Admin::new(store.clone())
        .create_admin_key(&AdminKeyCreate {
            name: "t".into(),
            ..Default::default()
        })
        .await
        .expect("key")
        .key;
    let tenant = ferry_proto::TenantName::new("a").expect("name");
    store
        .create_tenant(&tenant, &ferry_store::TenantFields::default())
        .await
        .expect("tenant");
    for i in 0..3 {
        store
            .record_connection(&ferry_store::ConnectionRecord {
                id: format!("c{i}"),
                tenant: tenant.clone(),
                connector_id: "k".into(),
                node: "n".into(),
                remote_addr: "127.0.0.1:1".into(),
                connected_at: 100 + i,
                disconnected_at: None,
            })
            .await
            .expect("record");
    }
    store.record_disconnection("c2", 200).await.expect("close");
    let f = Fixture {
        router: AdminApi::new(store).router(),
        key,
        notes: Arc::default(),
    };
    let r = f.send("GET", "/api/v1/connections?limit=2", None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["items"][0]["id"], "c2");
    assert_eq!(r.body["items"][0]["live"], false);
    let next = r.body["next"].as_str().expect("next").to_owned();
    let r = f
        .send(
            "GET",
            &format!("/api/v1/connections?limit=2&before={next}"),
            None,
        )
        .await;
    assert_eq!(
        r.body["items"].as_array().map(Vec::len),
        Some(1),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["items"][0]["id"], "c0");
    let r = f.send("GET", "/api/v1/connections?live=true", None).await;
    assert_eq!(
        r.body["items"].as_array().map(Vec::len),
        Some(2),
        "{:?}",
        r.body
    );
}

#[tokio::test]
async fn the_client_speaks_the_api() {
    let store: Arc<dyn ferry_store::Store> = Arc::new(
        ferry_store::SqliteStore::open_in_memory()
            .await
            .expect("store"),
    );
    let key = Admin::new(store.clone())
        .create_admin_key(&AdminKeyCreate {
            name: "t".into(),
            ..Default::default()
        })
        .await
        .expect("key")
        .key;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, AdminApi::new(store).router(), async {
        let _ = stopped.await;
    }));
    let client = Client::new(&url, &key).expect("client");
    let created = client
        .create_tenant(&model::TenantCreate {
            name: "acme".into(),
            ..Default::default()
        })
        .await
        .expect("create");
    assert!(created.secret.secret.starts_with("fsec_"));
    let err = client
        .create_tenant(&model::TenantCreate {
            name: "acme".into(),
            ..Default::default()
        })
        .await
        .expect_err("duplicate");
    assert!(
        matches!(&err, ManagementError::Api(e) if e.status == StatusCode::CONFLICT),
        "{err:?}"
    );
    client.delete_tenant("acme").await.expect("delete");
    let err = client.get_tenant("acme").await.expect_err("gone");
    assert!(
        matches!(&err, ManagementError::Api(e) if e.code == "not_found"),
        "{err:?}"
    );
    let wrong = Client::new(&url, "fadm_wrong").expect("client");
    let err = wrong.list_nodes().await.expect_err("401");
    assert!(
        matches!(&err, ManagementError::Api(e) if e.status == StatusCode::UNAUTHORIZED),
        "{err:?}"
    );
    assert!(Client::new("ftp://x", "k").is_err());
    let _ = stop.send(());
    server.await.expect("join").expect("serve");
}
