//! End to end, against the built `ferry` binary: operator accounts made with `ferry user` (locally and with
//! `--api`), signing in to the management API with a session cookie, CSRF, roles for sessions and admin keys,
//! sign-in limits, signing out, and the audit log. One node serves every check, so the test stays short.

use std::process::Stdio;
use std::time::Duration;

use ferry_testkit::process::run_ferry;
use ferry_testkit::{FerryServer, ServerOptions};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt as _;

const BIN: &str = env!("CARGO_BIN_EXE_ferry");
const T: Duration = Duration::from_secs(30);

/// `ferry ARGS` with `stdin` written to its standard input; stdout, and stderr as text.
pub(crate) async fn ferry_with_stdin(
    args: &[&str],
    stdin: &str,
) -> anyhow::Result<(bool, String, String)> {
    let mut child = tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("FERRY_API_URL")
        .env_remove("FERRY_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut input = child.stdin.take().ok_or_else(|| anyhow::anyhow!("stdin"))?;
    input.write_all(stdin.as_bytes()).await?;
    drop(input);
    let out = tokio::time::timeout(T, child.wait_with_output()).await??;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

async fn ferry(args: &[&str]) -> anyhow::Result<String> {
    let out = run_ferry(BIN, args, &[]).await?;
    anyhow::ensure!(
        out.status.success(),
        "ferry {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

struct Api {
    url: String,
    http: reqwest::Client,
}

/// How a request authenticates.
enum Who<'a> {
    Key(&'a str),
    Session {
        cookie: &'a str,
        csrf: Option<&'a str>,
    },
    Nobody,
}

impl Api {
    async fn call(
        &self,
        who: Who<'_>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, reqwest::header::HeaderMap, Value)> {
        let mut r = self
            .http
            .request(method, format!("{}/api/v1{path}", self.url));
        match who {
            Who::Key(k) => r = r.bearer_auth(k),
            Who::Session { cookie, csrf } => {
                r = r.header("cookie", format!("ferry_session={cookie}"));
                if let Some(t) = csrf {
                    r = r.header("x-csrf-token", t);
                }
            }
            Who::Nobody => {}
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let response = r.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok((status, headers, json))
    }

    /// Sign in; the session cookie's value, the CSRF token and the whole Set-Cookie.
    async fn sign_in(
        &self,
        name: &str,
        password: &str,
        tls: bool,
    ) -> anyhow::Result<(String, String, String)> {
        let mut r = self
            .http
            .post(format!("{}/api/v1/session", self.url))
            .json(&json!({"name": name, "password": password}));
        if tls {
            r = r.header("x-forwarded-proto", "https");
        }
        let response = r.send().await?;
        anyhow::ensure!(
            response.status() == StatusCode::OK,
            "sign in {name}: {}",
            response.status()
        );
        let set = response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow::anyhow!("no cookie"))?
            .to_owned();
        let body: Value = response.json().await?;
        let value = set
            .strip_prefix("ferry_session=")
            .and_then(|rest| rest.split(';').next())
            .ok_or_else(|| anyhow::anyhow!("cookie {set:?}"))?
            .to_owned();
        let csrf = body["csrf_token"].as_str().unwrap_or_default().to_owned();
        Ok((value, csrf, set))
    }
}

fn names(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn accounts_sessions_roles_and_the_audit_log_on_a_real_node() -> anyhow::Result<()> {
    let server = FerryServer::start(BIN, ServerOptions::default()).await?;
    let api = Api {
        url: server
            .admin_url()
            .ok_or_else(|| anyhow::anyhow!("no admin listener"))?
            .to_owned(),
        http: reqwest::Client::builder().timeout(T).build()?,
    };
    let dir = server.data_dir().display().to_string();
    for t in ["acme", "globex"] {
        server.create_tenant(t).await?;
    }

    // Accounts from the command line on the node's store: a password from stdin, and a generated one printed
    // once on stdout.
    let (ok, stdout, stderr) = ferry_with_stdin(
        &[
            "user",
            "create",
            "alice",
            "--role",
            "admin",
            "--password-stdin",
            "--data-dir",
            &dir,
        ],
        "correct horse battery\n",
    )
    .await?;
    assert!(ok, "{stderr}");
    assert!(stdout.trim().is_empty(), "nothing on stdout: {stdout:?}");
    assert!(!stderr.contains("correct horse"), "{stderr}");
    let olga_password = ferry(&[
        "user",
        "create",
        "olga",
        "--role",
        "operator",
        "--tenant",
        "acme",
        "--data-dir",
        &dir,
    ])
    .await?;
    assert!(olga_password.len() >= 20, "{olga_password:?}");
    let listed: Value =
        serde_json::from_str(&ferry(&["user", "list", "--json", "--data-dir", &dir]).await?)?;
    assert_eq!(names(&listed), ["alice", "olga"]);
    assert_eq!(listed["items"][1]["tenants"], json!(["acme"]));

    // Sign in: HttpOnly, SameSite=Strict, Secure when the request came over TLS.
    let (alice, csrf, set) = api.sign_in("alice", "correct horse battery", false).await?;
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "{set}");
    let (_, _, set_tls) = api.sign_in("alice", "correct horse battery", true).await?;
    assert!(set_tls.contains("; Secure"), "{set_tls}");
    let (status, _, me) = api
        .call(
            Who::Session {
                cookie: &alice,
                csrf: None,
            },
            Method::GET,
            "/session",
            None,
        )
        .await?;
    assert_eq!(
        (status, me["user"].clone(), me["role"].clone()),
        (StatusCode::OK, json!("alice"), json!("admin"))
    );
    assert_eq!(me["csrf_token"], json!(csrf));

    // A change with the session needs its CSRF token.
    let change = json!({"description": "changed in the browser"});
    let (status, _, _) = api
        .call(
            Who::Session {
                cookie: &alice,
                csrf: None,
            },
            Method::PATCH,
            "/tenants/acme",
            Some(change.clone()),
        )
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, body) = api
        .call(
            Who::Session {
                cookie: &alice,
                csrf: Some(&csrf),
            },
            Method::PATCH,
            "/tenants/acme",
            Some(change),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");

    // An admin creates a viewer key with the CLI through the API; the viewer reads but cannot change.
    let alice_key = {
        let (status, _, body) = api
            .call(
                Who::Session {
                    cookie: &alice,
                    csrf: Some(&csrf),
                },
                Method::POST,
                "/admin-keys",
                Some(json!({"name": "alice's"})),
            )
            .await?;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["key"].as_str().unwrap_or_default().to_owned()
    };
    let viewer_key = {
        let out = run_ferry(
            BIN,
            &[
                "admin-key",
                "create",
                "dash",
                "--role",
                "viewer",
                "--api",
                &api.url,
            ],
            &[("FERRY_API_KEY", alice_key.as_str())],
        )
        .await?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let (status, _, body) = api
        .call(Who::Key(&viewer_key), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(
        (status, names(&body)),
        (StatusCode::OK, vec!["acme".to_owned(), "globex".to_owned()])
    );
    let (status, _, body) = api
        .call(
            Who::Key(&viewer_key),
            Method::PATCH,
            "/tenants/acme/settings",
            Some(json!({"max_body_size": 1})),
        )
        .await?;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::FORBIDDEN, json!("forbidden"))
    );

    // The operator's session: only acme; globex answers 404 as if it did not exist.
    let (olga, olga_csrf, _) = api.sign_in("olga", &olga_password, false).await?;
    let olga_session = || Who::Session {
        cookie: &olga,
        csrf: Some(&olga_csrf),
    };
    let (_, _, body) = api
        .call(olga_session(), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(names(&body), ["acme"]);
    let (status, _, body) = api
        .call(olga_session(), Method::GET, "/tenants/globex", None)
        .await?;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );
    let (status, _, _) = api
        .call(
            olga_session(),
            Method::POST,
            "/tenants/acme/secrets",
            Some(json!({})),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, _) = api
        .call(olga_session(), Method::GET, "/users", None)
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Disabling olga through the API with the CLI ends her session at once.
    let out = run_ferry(
        BIN,
        &["user", "disable", "olga", "--api", &api.url],
        &[("FERRY_API_KEY", alice_key.as_str())],
    )
    .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _, _) = api
        .call(olga_session(), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Brute force is slowed: after the account's allowance, even the right password waits, with a clear 429.
    let mut limited = None;
    for _ in 0..10 {
        let (status, headers, body) = api
            .call(
                Who::Nobody,
                Method::POST,
                "/session",
                Some(json!({"name": "alice", "password": "guess guess"})),
            )
            .await?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((headers, body));
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (headers, body) = limited.ok_or_else(|| anyhow::anyhow!("never limited"))?;
    assert_eq!(body["code"], "sign_in_rate_limited");
    assert!(headers.get("retry-after").is_some());

    // Signing out ends the session in the store: the cookie is refused from now on.
    let (status, _, _) = api
        .call(
            Who::Session {
                cookie: &alice,
                csrf: Some(&csrf),
            },
            Method::DELETE,
            "/session",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = api
        .call(
            Who::Session {
                cookie: &alice,
                csrf: None,
            },
            Method::GET,
            "/tenants",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The audit log has every change with its actor, and no secret.
    let (status, _, audit) = api
        .call(Who::Key(&alice_key), Method::GET, "/audit?limit=1000", None)
        .await?;
    assert_eq!(status, StatusCode::OK);
    let entries = audit["items"].as_array().cloned().unwrap_or_default();
    let has = |actor: &str, action: &str, object: &str| {
        entries
            .iter()
            .any(|e| e["actor"] == actor && e["action"] == action && e["object"] == object)
    };
    assert!(has("local", "user.create", "alice"), "{audit}");
    assert!(has("user:alice", "tenant.update", "acme"), "{audit}");
    assert!(has("user:olga", "session.create", "olga"), "{audit}");
    assert!(entries
        .iter()
        .any(|e| e["actor"] == "user:olga" && e["action"] == "secret.create"));
    assert!(entries
        .iter()
        .any(|e| e["action"] == "user.disable" && e["object"] == "olga"));
    assert!(has("user:alice", "session.delete", "alice"), "{audit}");
    let text = audit.to_string();
    assert!(!text.contains(&olga_password) && !text.contains("fsec_") && !text.contains("fadm_"));
    let (_, _, only) = api
        .call(
            Who::Key(&alice_key),
            Method::GET,
            "/audit?actor=user:olga&action=session.create",
            None,
        )
        .await?;
    assert_eq!(only["items"].as_array().map(Vec::len), Some(1), "{only}");
    Ok(())
}
