//! End to end in a real headless browser: the dashboard at the admin listener's root, driven by
//! `scripts/browser/dashboard.mjs` (npm `playwright-core` driving Debian's `chromium`, both installed by
//! `scripts/browser/ensure.sh`). One node and one browser run every check: sign in, a connector appears live, a
//! new tenant's secret is shown once, a chart is drawn after traffic, the request log, users and audit for an
//! admin, the gateway page (a route, and an upstream server shown live, then down once the test stops it), signing
//! out, a viewer who cannot change anything (the API refusing the same change), an operator who
//! sees only its tenants, and signing in through the OpenID Connect provider of `auth_oidc.rs` ("Sign in with
//! Test SSO", its login and consent forms, back as a viewer). With `FERRY_SCREENSHOTS=1` the script saves
//! docs/dashboard-*.png.
//!
//! Without chromium or node (and no way to install them) the test fails under `CI` and prints `skipped: …`
//! otherwise.

use std::path::PathBuf;
use std::time::Duration;

use ferry_testkit::{FerryServer, ServerOptions, TargetKind, TargetServer};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

use crate::common::{write_file, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The browser's path, once installed; `None` (after saying why) when it cannot be had here.
async fn ensure_browser() -> anyhow::Result<Option<String>> {
    let out = tokio::process::Command::new(repo().join("scripts/browser/ensure.sh"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), out).await??;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let chromium = stdout
        .lines()
        .find_map(|l| l.strip_prefix("chromium="))
        .map(str::to_owned);
    match (out.status.success(), chromium) {
        (true, Some(c)) => Ok(Some(c)),
        _ => {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            if std::env::var_os("CI").is_some() {
                anyhow::bail!("the browser is required under CI: {why}");
            }
            eprintln!("skipped: no headless browser ({why})");
            Ok(None)
        }
    }
}

async fn user(
    dir: &str,
    name: &str,
    role: &str,
    tenant: Option<&str>,
    password: &str,
) -> anyhow::Result<()> {
    let mut args = vec![
        "user",
        "create",
        name,
        "--role",
        role,
        "--password-stdin",
        "--data-dir",
        dir,
    ];
    if let Some(t) = tenant {
        args.extend(["--tenant", t]);
    }
    let (ok, _, stderr) =
        crate::accounts::ferry_with_stdin(&args, &format!("{password}\n")).await?;
    anyhow::ensure!(ok, "user create {name}: {stderr}");
    Ok(())
}

#[tokio::test]
async fn the_dashboard_in_a_real_browser() -> anyhow::Result<()> {
    let Some(chromium) = ensure_browser().await? else {
        return Ok(());
    };
    // The gateway page's upstream server: checked every 200 ms, so that it shows down soon after it stops.
    let mut upstream = Some(TargetServer::start(TargetKind::Echo).await?);
    let upstream_url = upstream.as_ref().map(|u| u.url()).unwrap_or_default();
    // Signing in through an OpenID Connect provider too, when one can run here (required under CI).
    let provider = crate::auth_oidc::OidcProvider::start("RS256").await?;
    let oidc = match &provider {
        Some(p) => format!(
            r#"
[server.auth.oidc]
issuer = "{}"
[[server.auth.oidc.role_mapping]]
value = "ferry-viewer"
role = "viewer"
[server.auth.oidc.sign_in]
client_id = "ferry-dashboard"
client_secret = "dashboard-secret"
provider_name = "Test SSO"
"#,
            p.issuer
        ),
        None => String::new(),
    };
    let dir = TempDir::new("ferry-dashboard-")?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        &format!(
            r#"{oidc}
[[gateway.routes]]
name = "shop"
path = "/shop"
methods = ["GET", "HEAD"]
upstream = "web"

[gateway.upstreams.web]
servers = [{{ url = "{upstream_url}" }}]

[gateway.upstreams.web.health]
path = "/healthz"
interval = "200ms"
timeout = "500ms"
healthy_threshold = 1
unhealthy_threshold = 1
"#
        ),
    )?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .env("FERRY_REQUEST_LOG", "true")
            .config(&config),
    )
    .await?;
    let admin_url = server
        .admin_url()
        .ok_or_else(|| anyhow::anyhow!("no admin listener"))?
        .to_owned();
    let acme_secret = server.create_tenant("acme").await?;
    server.create_tenant("globex").await?;
    let dir = server.data_dir().display().to_string();
    user(&dir, "alice", "admin", None, "alice password").await?;
    user(&dir, "vic", "viewer", None, "viewer password").await?;
    user(&dir, "olga", "operator", Some("acme"), "operator password").await?;

    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(repo().join("scripts/browser/dashboard.mjs"))
        .env("ADMIN_URL", &admin_url)
        .env("PUBLIC_URL", server.url())
        .env("FERRY_BIN", BIN)
        .env("ACME_SECRET", &acme_secret)
        .env("ADMIN_PW", "alice password")
        .env("VIEWER_PW", "viewer password")
        .env("OPERATOR_PW", "operator password")
        .env("CHROMIUM", &chromium)
        .env("UPSTREAM_URL", &upstream_url)
        .env_remove("SCREENSHOTS")
        .kill_on_drop(true);
    if provider.is_some() {
        cmd.env("OIDC_PROVIDER", "Test SSO");
    }
    if std::env::var("FERRY_SCREENSHOTS").is_ok_and(|v| v == "1") {
        cmd.env("SCREENSHOTS", repo().join("docs"));
    }
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    let mut lines = tokio::io::BufReader::new(
        child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
    )
    .lines();
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    // The script asks for the upstream server to be stopped (`stop-upstream`) and waits for `upstream-stopped`.
    let run = async {
        let mut stdout = String::new();
        while let Some(line) = lines.next_line().await? {
            println!("{line}");
            if line == "stop-upstream" {
                upstream.take();
                stdin.write_all(b"upstream-stopped\n").await?;
                stdin.flush().await?;
            }
            stdout.push_str(&line);
            stdout.push('\n');
        }
        anyhow::Ok((child.wait().await?, stdout))
    };
    let (status, stdout) = tokio::time::timeout(Duration::from_secs(180), run).await??;
    let stderr = stderr.await.unwrap_or_default();
    assert!(
        status.success(),
        "dashboard checks failed:\n{stdout}\n{stderr}"
    );
    Ok(())
}
