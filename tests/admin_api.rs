//! End to end, against the built `ferry` binary: the management API on the admin listener. Who may call it (no
//! key, a connector's secret or token: 401), create/read/update/delete round trips as an operator would do them
//! with curl, and schemathesis (PyPI) checking every operation against the served OpenAPI document.
//!
//! The round trips and schemathesis run on SQLite and on PostgreSQL (a fresh database on the server of
//! `FERRY_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`). Schemathesis needs Python 3
//! with venv. Without PostgreSQL or Python a test fails under `CI` and prints `skipped: …` otherwise.

use crate::common::PgDatabase;
use std::process::Stdio;
use std::time::Duration;

use ferry_testkit::process::run_ferry;
use ferry_testkit::{FerryServer, ServerOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");
const T: Duration = Duration::from_secs(30);

struct Admin {
    server: FerryServer,
    url: String,
    key: String,
    http: reqwest::Client,
}

async fn start() -> anyhow::Result<Admin> {
    start_on(None).await
}

/// A server on the embedded SQLite store, or on the PostgreSQL database at `database_url`, with an admin key.
async fn start_on(database_url: Option<&str>) -> anyhow::Result<Admin> {
    let mut options = ServerOptions::default();
    let mut env = Vec::new();
    if let Some(url) = database_url {
        options = options.env("FERRY_DATABASE_URL", url);
        env.push(("FERRY_DATABASE_URL", url));
    }
    let server = FerryServer::start(BIN, options).await?;
    let url = server
        .admin_url()
        .ok_or_else(|| anyhow::anyhow!("no admin listener"))?
        .to_owned();
    let data_dir = server.data_dir().display().to_string();
    let out = run_ferry(
        BIN,
        &["admin-key", "create", "e2e", "--data-dir", &data_dir],
        &env,
    )
    .await?;
    anyhow::ensure!(
        out.status.success(),
        "admin-key create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    anyhow::ensure!(key.starts_with("fadm_"), "admin key {key:?}");
    Ok(Admin {
        server,
        url,
        key,
        http: reqwest::Client::builder().timeout(T).build()?,
    })
}

impl Admin {
    /// `METHOD /api/v1{path}` with the admin key; returns status and JSON (Null when empty).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.call_as(Some(&self.key), method, path, body).await
    }

    async fn call_as(
        &self,
        bearer: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.url));
        if let Some(b) = bearer {
            request = request.bearer_auth(b);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{status} {text:?} is not JSON: {e}"))?
        };
        Ok((status, json))
    }
}

#[tokio::test]
async fn callers_without_an_admin_credential_get_401() -> anyhow::Result<()> {
    let admin = start().await?;
    // No credential at all.
    let response = admin
        .http
        .get(format!("{}/api/v1/tenants", admin.url))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let body: Value = response.json().await?;
    assert_eq!(body["code"], "unauthorized", "{body}");

    // Tenant A's connector secret and its token from the built-in issuer are not admin credentials.
    let secret = admin.server.create_tenant("tenant-a").await?;
    let token: Value = admin
        .http
        .post(format!("{}/oauth/token", admin.server.url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "tenant-a"),
            ("client_secret", secret.as_str()),
        ])
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no token: {token}"))?
        .to_owned();
    for credential in [secret.as_str(), token.as_str(), "fadm_forged"] {
        for path in ["/tenants", "/tenants/tenant-a/secrets"] {
            let (status, body) = admin
                .call_as(Some(credential), reqwest::Method::GET, path, None)
                .await?;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        }
        let (status, _) = admin
            .call_as(
                Some(credential),
                reqwest::Method::DELETE,
                "/tenants/tenant-a",
                None,
            )
            .await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // The tenant is still there, and the API is not on the public listener.
    let (status, _) = admin
        .call(reqwest::Method::GET, "/tenants/tenant-a", None)
        .await?;
    assert_eq!(status, StatusCode::OK);
    let public = admin
        .http
        .get(format!("{}/api/v1/tenants", admin.server.url()))
        .bearer_auth(&admin.key)
        .send()
        .await?;
    assert_ne!(public.status(), StatusCode::OK);

    // The OpenAPI document is served without a credential.
    let doc: Value = admin
        .http
        .get(format!("{}/api/v1/openapi.json", admin.url))
        .send()
        .await?
        .json()
        .await?;
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    Ok(())
}

#[tokio::test]
async fn crud_round_trips_on_sqlite() -> anyhow::Result<()> {
    crud_round_trips(start().await?).await
}

#[tokio::test]
async fn crud_round_trips_on_postgres() -> anyhow::Result<()> {
    let Some(db) = PgDatabase::create().await? else {
        return Ok(());
    };
    let result = async {
        let admin = start_on(Some(&db.url)).await?;
        crud_round_trips(admin).await
    }
    .await;
    db.drop_now().await?;
    result
}

async fn crud_round_trips(admin: Admin) -> anyhow::Result<()> {
    use reqwest::Method;

    let (status, created) = admin
        .call(
            Method::POST,
            "/tenants",
            Some(json!({"name": "acme", "display_name": "Acme Corp"})),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let first_secret = created["secret"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(created["secret"]["secret"]
        .as_str()
        .is_some_and(|s| s.starts_with("fsec_")));
    let (status, body) = admin
        .call(Method::POST, "/tenants", Some(json!({"name": "acme"})))
        .await?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = admin
        .call(Method::POST, "/tenants", Some(json!({"name": "Bad Name"})))
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "invalid");

    let (_, list) = admin
        .call(Method::GET, "/tenants?filter=acme", None)
        .await?;
    assert_eq!(list["items"][0]["display_name"], "Acme Corp", "{list}");

    let (status, updated) = admin
        .call(
            Method::PATCH,
            "/tenants/acme",
            Some(json!({"description": "our biggest", "settings": {"max_body_size": 4096}})),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["settings"]["max_body_size"], 4096);
    let (_, settings) = admin
        .call(
            Method::PATCH,
            "/tenants/acme/settings",
            Some(json!({"keepalive_interval_ms": 5000})),
        )
        .await?;
    assert_eq!(
        settings,
        json!({"max_body_size": 4096, "keepalive_interval_ms": 5000})
    );
    let (_, settings) = admin
        .call(
            Method::PUT,
            "/tenants/acme/settings",
            Some(json!({"require_client_auth": false})),
        )
        .await?;
    assert_eq!(settings, json!({"require_client_auth": false}));
    let (_, shown) = admin.call(Method::GET, "/tenants/acme", None).await?;
    assert_eq!(shown["description"], "our biggest");
    assert_eq!(shown["settings"], json!({"require_client_auth": false}));

    // Secrets: create with an expiry, list, revoke; the connector secret works with the token endpoint until
    // revoked.
    let (status, secret) = admin
        .call(
            Method::POST,
            "/tenants/acme/secrets",
            Some(json!({"expires_at": 4_000_000_000_i64})),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{secret}");
    let (_, secrets) = admin
        .call(Method::GET, "/tenants/acme/secrets", None)
        .await?;
    assert_eq!(
        secrets["items"].as_array().map(Vec::len),
        Some(2),
        "{secrets}"
    );
    let (status, _) = admin
        .call(
            Method::DELETE,
            &format!("/tenants/acme/secrets/{first_secret}"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = admin
        .call(Method::DELETE, "/tenants/acme/secrets/no-such-id", None)
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Observation endpoints answer with their shapes.
    for path in [
        "/connections?live=true",
        "/connections?tenant=acme&limit=10",
        "/nodes",
        "/stats?tenant=acme",
        "/request-log?limit=5",
    ] {
        let (status, body) = admin.call(Method::GET, path, None).await?;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    // The request log is off by default, and its page says so rather than being empty without a word.
    let (_, body) = admin.call(Method::GET, "/request-log", None).await?;
    assert_eq!(body["recording"], false, "{body}");

    // Admin keys: a second key works until revoked.
    let (status, key) = admin
        .call(Method::POST, "/admin-keys", Some(json!({"name": "ci"})))
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let second = key["key"].as_str().unwrap_or_default().to_owned();
    let (status, _) = admin
        .call_as(Some(&second), Method::GET, "/admin-keys", None)
        .await?;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = admin
        .call(
            Method::DELETE,
            &format!("/admin-keys/{}", key["id"].as_str().unwrap_or_default()),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = admin
        .call_as(Some(&second), Method::GET, "/admin-keys", None)
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Delete.
    let (status, _) = admin.call(Method::DELETE, "/tenants/acme", None).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = admin.call(Method::GET, "/tenants/acme", None).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // A sign-in with a name no account can have is refused like a wrong password. Found by schemathesis: a NUL
    // in the name reached PostgreSQL, which refuses it in text, and the answer was 500.
    for name in ["a\u{0}b", "\u{1f}x", "bad name"] {
        let (status, body) = admin
            .call_as(
                None,
                Method::POST,
                "/session",
                Some(json!({"name": name, "password": "whatever1"})),
            )
            .await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name:?}: {body}");
        assert_eq!(body["message"], "wrong name or password");
    }
    Ok(())
}

#[tokio::test]
async fn schemathesis_finds_no_failure_on_sqlite() -> anyhow::Result<()> {
    schemathesis(None).await
}

#[tokio::test]
async fn schemathesis_finds_no_failure_on_postgres() -> anyhow::Result<()> {
    let Some(db) = PgDatabase::create().await? else {
        return Ok(());
    };
    let result = schemathesis(Some(&db.url)).await;
    db.drop_now().await?;
    result
}

async fn schemathesis(database_url: Option<&str>) -> anyhow::Result<()> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let has_python = std::process::Command::new(&python)
        .args(["-c", "import venv, ensurepip"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_python {
        if std::env::var_os("CI").is_some() {
            anyhow::bail!(
                "{python} with venv and ensurepip is required for the schemathesis check under CI"
            );
        }
        eprintln!("skipped: {python} with venv is not available, schemathesis not run");
        return Ok(());
    }
    let admin = start_on(database_url).await?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/schemathesis/run.sh"
    );
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(script)
        .arg(&admin.url)
        .arg(&admin.key)
        .env("FERRY_SCHEMATHESIS_MAX_EXAMPLES", "10")
        .env("FERRY_SCHEMATHESIS_MAX_TIME", "50")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // The first run installs schemathesis into .tools/ (a minute or two); the run itself is bounded by
    // --max-time.
    let out = tokio::time::timeout(Duration::from_secs(420), cmd.output())
        .await
        .map_err(|_| anyhow::anyhow!("schemathesis did not finish within 7 minutes"))??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stdout.lines().rev().take(60).collect::<Vec<_>>();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    assert!(
        out.status.success(),
        "schemathesis failed ({}):\n{}\n--- stderr ---\n{stderr}\n--- server ---\n{}",
        out.status,
        tail.join("\n"),
        admin.server.output().tail(40)
    );
    assert!(
        !admin.server.output().stderr().contains("panicked"),
        "the server panicked:\n{}",
        admin.server.output().tail(60)
    );
    eprintln!("{}", tail.join("\n"));
    Ok(())
}

/// A store outage answers 503 `store_unavailable` (as docs/management-api.md says), not 500 `internal`, and the
/// API answers again once the store is back. The outage: the node's PostgreSQL database stops accepting
/// connections and its connections are terminated (`pg_terminate_backend`), as in a failover or a maintenance.
#[tokio::test]
async fn a_store_outage_answers_503_store_unavailable() -> anyhow::Result<()> {
    use sqlx::{Connection as _, Executor as _};
    let Some(db) = PgDatabase::create().await? else {
        return Ok(());
    };
    let result = async {
        let admin = start_on(Some(&db.url)).await?;
        let (status, _) = admin.call(reqwest::Method::GET, "/tenants", None).await?;
        assert_eq!(status, StatusCode::OK);
        let mut conn = sqlx::PgConnection::connect(db.server_url()).await?;
        let name = db.name().to_owned();
        conn.execute(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false").as_str())
            .await?;
        conn.execute(
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
            .as_str(),
        )
        .await?;
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (status, body) = admin.call(reqwest::Method::GET, "/tenants", None).await?;
            seen.push((status, body));
        }
        for (status, body) in &seen {
            assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{seen:?}");
            assert_eq!(body["code"], "store_unavailable", "{seen:?}");
        }
        conn.execute(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true").as_str())
            .await?;
        let _ = conn.close().await;
        ferry_testkit::eventually(T, || async {
            let (status, body) = admin.call(reqwest::Method::GET, "/tenants", None).await?;
            anyhow::ensure!(status == StatusCode::OK, "{status} {body}");
            Ok(())
        })
        .await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    db.drop_now().await?;
    result
}
