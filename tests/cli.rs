//! End to end, against the built `ferry` binary: the management commands (`ferry tenant|secret|admin-key …`,
//! `ferry migrate`) on the local store (`--data-dir`) and on a running node through its management API
//! (`FERRY_API_URL` / `FERRY_API_KEY`).

use std::process::Output;

use ferry_testkit::process::run_ferry;
use ferry_testkit::{
    Connector, ConnectorOptions, FerryServer, ServerOptions, TargetKind, TargetServer,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run `ferry ARGS`, expect success, return stdout.
async fn ok(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<String> {
    let out = run_ferry(BIN, args, env).await?;
    anyhow::ensure!(
        out.status.success(),
        "ferry {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    Ok(stdout(&out))
}

async fn ok_json(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Value> {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--json");
    let text = ok(&all, env).await?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{text:?}: {e}"))
}

/// The one line a create command prints.
fn single_line(text: &str) -> anyhow::Result<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    anyhow::ensure!(lines.len() == 1, "expected one line, got {text:?}");
    Ok(lines[0].trim().to_owned())
}

#[tokio::test]
async fn local_mode_on_the_data_directory() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path().display().to_string();
    let data = ["--data-dir", d.as_str()];
    let with = |args: &[&'static str]| -> Vec<String> {
        args.iter()
            .map(|s| (*s).to_owned())
            .chain(data.iter().map(|s| (*s).to_owned()))
            .collect()
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&refs, &[]).await
    };
    let run_json = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ok_json(&refs, &[]).await
    };

    let migrated = run(with(&["migrate"])).await?;
    assert!(migrated.contains("migrations applied"), "{migrated}");

    // Today's contract: only the secret on stdout.
    let secret = single_line(&run(with(&["tenant", "create", "acme"])).await?)?;
    assert!(secret.starts_with("fsec_"), "{secret}");

    let table = run(with(&["tenant", "list"])).await?;
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("acme"), "{table}");

    let updated = run_json(with(&[
        "tenant",
        "update",
        "acme",
        "--display-name",
        "Acme",
        "--set",
        "max_body_size=1024",
        "--set",
        "require_client_auth=true",
    ]))
    .await?;
    assert_eq!(updated["display_name"], "Acme", "{updated}");
    assert_eq!(updated["settings"]["max_body_size"], 1024);
    assert_eq!(updated["settings"]["require_client_auth"], true);
    let shown = run_json(with(&["tenant", "show", "acme"])).await?;
    assert_eq!(shown["settings"]["max_body_size"], 1024);

    let second =
        single_line(&run(with(&["secret", "create", "acme", "--expires-in", "1day"])).await?)?;
    assert!(second.starts_with("fsec_") && second != secret);
    let secrets = run_json(with(&["secret", "list", "acme"])).await?;
    let items = secrets["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2, "{secrets}");
    let id = items[1]["id"].as_str().unwrap_or_default().to_owned();
    let mut revoke = with(&["secret", "revoke", "acme"]);
    revoke.insert(3, id.clone());
    run(revoke).await?;
    let secrets = run_json(with(&["secret", "list", "acme"])).await?;
    assert!(
        secrets["items"].as_array().is_some_and(|a| a
            .iter()
            .any(|s| s["id"] == id.as_str() && s["active"] == false)),
        "{secrets}"
    );

    let key = single_line(&run(with(&["admin-key", "create", "ops"])).await?)?;
    assert!(key.starts_with("fadm_"), "{key}");
    let keys = run_json(with(&["admin-key", "list"])).await?;
    assert_eq!(keys["items"][0]["name"], "ops", "{keys}");

    run(with(&["tenant", "delete", "acme"])).await?;
    let mut args = vec!["tenant", "show", "acme"];
    args.extend(data);
    let out = run_ferry(BIN, &args, &[]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no tenant acme"), "{}", stderr(&out));

    // Mistakes exit with 2 and say why.
    for bad in [
        vec!["tenant", "create", "Bad Name"],
        vec!["tenant", "create", "x", "--set", "no_such_setting=1"],
        vec!["tenant", "create", "y", "--set", "keepalive_interval_ms=0"],
    ] {
        let mut args = bad.clone();
        args.extend(data);
        let out = run_ferry(BIN, &args, &[]).await?;
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{bad:?}");
    }
    Ok(())
}

#[tokio::test]
async fn remote_mode_through_the_management_api() -> anyhow::Result<()> {
    let server = FerryServer::start(BIN, ServerOptions::default()).await?;
    let url = server
        .admin_url()
        .ok_or_else(|| anyhow::anyhow!("no admin listener"))?
        .to_owned();
    let key = server.create_admin_key("cli").await?;
    let env = [
        ("FERRY_API_URL", url.as_str()),
        ("FERRY_API_KEY", key.as_str()),
    ];

    let secret = single_line(&ok(&["tenant", "create", "remote"], &env).await?)?;
    assert!(secret.starts_with("fsec_"), "{secret}");
    // The secret made through the API lets a connector in.
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let connector = Connector::start(
        BIN,
        server.url(),
        "remote",
        &secret,
        &[("app", &echo.url())],
        ConnectorOptions::default(),
    )
    .await?;
    drop(connector);

    let list = ok_json(&["tenant", "list"], &env).await?;
    assert_eq!(list["items"][0]["name"], "remote", "{list}");
    let updated = ok_json(
        &[
            "tenant",
            "update",
            "remote",
            "--description",
            "via api",
            "--set",
            "keepalive_interval_ms=2000",
        ],
        &env,
    )
    .await?;
    assert_eq!(updated["description"], "via api");
    assert_eq!(updated["settings"]["keepalive_interval_ms"], 2000);

    let created = ok_json(&["secret", "create", "remote"], &env).await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    ok(&["secret", "revoke", "remote", &id], &env).await?;
    let secrets = ok_json(&["secret", "list", "remote"], &env).await?;
    assert_eq!(
        secrets["items"].as_array().map(Vec::len),
        Some(2),
        "{secrets}"
    );

    let keys = ok(&["admin-key", "list"], &env).await?;
    assert!(keys.contains("cli"), "{keys}");

    // The flags work as well as the variables; a wrong key is refused.
    let shown = ok_json(
        &["tenant", "show", "remote", "--api", &url, "--api-key", &key],
        &[],
    )
    .await?;
    assert_eq!(shown["name"], "remote");
    let out = run_ferry(
        BIN,
        &["tenant", "list", "--api", &url, "--api-key", "fadm_wrong"],
        &[],
    )
    .await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unauthorized"), "{}", stderr(&out));

    ok(&["tenant", "delete", "remote"], &env).await?;
    let out = run_ferry(BIN, &["tenant", "show", "remote"], &env).await?;
    assert_eq!(out.status.code(), Some(1));
    Ok(())
}

/// A second `ferry serve` on the SQLite store of a running node is refused at start with a message that says what
/// to do (first-hour issue: two nodes on one SQLite directory started without a word). Once the first node is
/// gone, the store is free again.
#[tokio::test]
async fn a_second_node_on_one_sqlite_store_is_refused() -> anyhow::Result<()> {
    let data = crate::common::TempDir::new("ferry-lock-")?;
    let dir = data.path().to_string_lossy().into_owned();
    let mut first = FerryServer::start(
        BIN,
        ServerOptions {
            data_dir: Some(data.path().to_path_buf()),
            ..Default::default()
        },
    )
    .await?;
    let second = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        run_ferry(
            BIN,
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--data-dir",
                &dir,
            ],
            &[],
        ),
    )
    .await??;
    assert!(!second.status.success(), "the second node started");
    let err = stderr(&second);
    assert!(
        err.contains("another `ferry serve` is running on the SQLite store")
            && err.contains("PostgreSQL"),
        "{err}"
    );
    // the first node names its store
    first
        .output()
        .wait_stderr("store opened", std::time::Duration::from_secs(10))
        .await?;
    // killed and reaped (dropping only sends the signal), so its lock is gone before the next start
    first.kill().await?;
    // the lock went with the first node: a node starts on the store again
    let again = FerryServer::start(
        BIN,
        ServerOptions {
            data_dir: Some(data.path().to_path_buf()),
            ..Default::default()
        },
    )
    .await?;
    drop(again);
    Ok(())
}

/// Local commands refuse a store that does not exist (first-hour issue: run from another directory, they made a
/// second, empty store without a word), make one with `--create`, and say on stderr which store they used.
#[tokio::test]
async fn local_commands_refuse_a_missing_store_and_name_the_one_they_use() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let d = data.display().to_string();
    let out = run_ferry(BIN, &["tenant", "list", "--data-dir", &d], &[]).await?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no store at"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--create"), "{}", stderr(&out));
    assert!(
        !data.exists(),
        "a refused command must not create the directory"
    );

    let out = run_ferry(
        BIN,
        &["tenant", "create", "demo", "--data-dir", &d, "--create"],
        &[],
    )
    .await?;
    assert!(out.status.success(), "{}", stderr(&out));
    single_line(&stdout(&out))?;
    let used = format!("using store sqlite://{}", data.join("ferry.db").display());
    assert!(stderr(&out).contains(&used), "{}", stderr(&out));
    // Quiet: what the command did, no log lines (admin-key create printed INFO lines, tenant create none).
    let out = run_ferry(BIN, &["admin-key", "create", "ops", "--data-dir", &d], &[]).await?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains(" INFO "), "{}", stderr(&out));
    let out = run_ferry(BIN, &["tenant", "list", "--data-dir", &d], &[]).await?;
    assert!(stdout(&out).contains("demo"), "{}", stdout(&out));
    assert!(stderr(&out).contains(&used), "{}", stderr(&out));
    // A local error is not dressed as HTTP.
    let out = run_ferry(BIN, &["tenant", "show", "nosuch", "--data-dir", &d], &[]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!stderr(&out).contains("HTTP"), "{}", stderr(&out));
    Ok(())
}

/// An explicit flag wins over `FERRY_API_URL`; local and remote flags together are refused; the first-admin-key
/// snippet of docs/management-api.md works as written.
#[tokio::test]
async fn explicit_flags_win_over_the_environment_and_do_not_mix() -> anyhow::Result<()> {
    let server = FerryServer::start(BIN, ServerOptions::default()).await?;
    let url = server
        .admin_url()
        .ok_or_else(|| anyhow::anyhow!("no admin listener"))?
        .to_owned();
    let d = server.data_dir().display().to_string();
    // --data-dir with FERRY_API_URL set (and no key): local, as asked.
    let key = single_line(
        &ok(
            &["admin-key", "create", "ops", "--data-dir", &d],
            &[("FERRY_API_URL", "http://127.0.0.1:9")],
        )
        .await?,
    )?;
    assert!(key.starts_with("fadm_"), "{key}");
    // Both kinds of flags: a usage error that says why.
    let out = run_ferry(
        BIN,
        &[
            "tenant",
            "list",
            "--api",
            &url,
            "--api-key",
            &key,
            "--data-dir",
            &d,
        ],
        &[],
    )
    .await?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--api works on a remote node and --data-dir on the local store"),
        "{}",
        stderr(&out)
    );
    // The snippet, in a shell.
    let snippet = format!(
        "set -e\nexport FERRY_API_URL={url}\nexport FERRY_API_KEY=$(\"$FERRY\" admin-key create ops2 --data-dir {d})\n\
         \"$FERRY\" tenant create snippet >/dev/null\n\"$FERRY\" tenant list\n"
    );
    let out = ferry_testkit::within(
        std::time::Duration::from_secs(30),
        "the docs snippet",
        tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&snippet)
            .env("FERRY", BIN)
            .env_remove("FERRY_API_URL")
            .env_remove("FERRY_API_KEY")
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("snippet"), "{}", stdout(&out));
    Ok(())
}

/// `ferry config check` prints the effective configuration with secrets masked, fails with the key's path on an
/// invalid one, and unknown `FERRY_*` variables or a file without `version` are warned about.
#[tokio::test]
async fn config_check_and_warnings_about_the_environment() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[connector]\nserver = \"http://127.0.0.1:1\"\nsecret = \"fsec_hunter2\"\n",
    )?;
    let g = good.display().to_string();
    let out = run_ferry(
        BIN,
        &["--config", &g, "config", "check"],
        &[("FERRY_LISTN", "127.0.0.1:9")],
    )
    .await?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("secret = \"***\""),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("hunter2"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("did you mean FERRY_LISTEN?"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("read as version 1"),
        "{}",
        stderr(&out)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "version = 1\n[server.relay]\nconnector_wiat = \"2s\"\n",
    )?;
    let b = bad.display().to_string();
    let out = run_ferry(BIN, &["--config", &b, "config", "check"], &[]).await?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("server.relay"), "{}", stderr(&out));
    assert!(stderr(&out).contains("connector_wiat"), "{}", stderr(&out));

    // like `nginx -t`, the gateway is compiled and the TLS files read: a route naming no upstream, a missing
    // certificate file, each refused with its key or file
    let gateway = dir.path().join("gateway.toml");
    std::fs::write(
        &gateway,
        "version = 1\n[[gateway.routes]]\nupstream = \"missing\"\n",
    )?;
    let gw = gateway.display().to_string();
    let out = run_ferry(BIN, &["--config", &gw, "config", "check"], &[]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("gateway.routes[0].upstream"),
        "{}",
        stderr(&out)
    );
    let tls = dir.path().join("tls.toml");
    std::fs::write(
        &tls,
        format!(
            "version = 1\n[server]\ntls_cert = \"{0}/gone.pem\"\ntls_key = \"{0}/gone-key.pem\"\n",
            dir.path().display()
        ),
    )?;
    let t = tls.display().to_string();
    let out = run_ferry(BIN, &["--config", &t, "config", "check"], &[]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("gone.pem"), "{}", stderr(&out));

    // HTTP/3 is checked as a start would: it needs TLS, and TLS 1.3 among the listener's versions
    let pki = ferry_testkit::TestPki::new()?;
    let h3 = dir.path().join("h3.toml");
    std::fs::write(&h3, "version = 1\n[server]\nhttp3 = true\n")?;
    let h = h3.display().to_string();
    let out = run_ferry(BIN, &["--config", &h, "config", "check"], &[]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("server.http3: HTTP/3 needs a TLS listener"),
        "{}",
        stderr(&out)
    );
    std::fs::write(
        &h3,
        format!(
            "version = 1\n[server]\nhttp3 = true\ntls_cert = \"{}\"\ntls_key = \"{}\"\n[gateway.tls]\nprotocols = [\"TLSv1.2\"]\n",
            pki.cert_path().display(),
            pki.key_path().display()
        ),
    )?;
    let out = run_ferry(BIN, &["--config", &h, "config", "check"], &[]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("server.http3: HTTP/3 needs TLSv1.3"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

/// Shell completions and the man page come from the same command tree.
#[tokio::test]
async fn completions_and_man_page() -> anyhow::Result<()> {
    for shell in ["bash", "zsh", "fish"] {
        let text = ok(&["completions", shell], &[]).await?;
        assert!(
            text.contains("admin-key") && text.contains("connector"),
            "{shell}: {text}"
        );
    }
    let man = ok(&["man"], &[]).await?;
    assert!(man.contains(".TH ferry"), "{man}");
    Ok(())
}

/// `ferry gateway import-nginx`: a fixture of ferry-nginx (with an include) becomes a file that `ferry config
/// check` accepts, the report goes to stderr with file and line, and a file that does not parse exits 2 naming
/// its line.
#[tokio::test]
async fn import_nginx_writes_a_configuration_that_config_check_accepts() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ferry-nginx/tests/fixtures/django.conf"
    );
    let out_file = dir.path().join("ferry.toml");
    let o = out_file.display().to_string();
    let out = run_ferry(BIN, &["gateway", "import-nginx", fixture, "-o", &o], &[]).await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("django.conf:65: proxy_redirect: not needed: "),
        "{err}"
    );
    // the included snippet's `ssl_stapling on` is translated (Ferry fetches the responses): no report line
    assert!(
        err.contains("ssl-params.conf:6: ssl_session_timeout: not needed: ")
            && !err.contains("ssl_stapling"),
        "{err}"
    );
    assert!(err.contains("is a valid Ferry configuration"), "{err}");
    assert!(
        stdout(&out).is_empty(),
        "the configuration went to the file"
    );
    let written = std::fs::read_to_string(&out_file)?;
    assert!(written.contains("upstream = \"django\""), "{written}");
    assert!(written.contains("redirect_to_https = true"), "{written}");
    // the static files' locations are routes; their directories are checked where they are, not here
    assert!(
        written.contains("static_dir = \"/srv/shop/staticfiles\""),
        "{written}"
    );
    assert!(written.contains("cipher_suites = ["), "{written}");
    assert!(written.contains("ocsp_stapling = true"), "{written}");
    // `ferry config check` reads the files a configuration names: the chat fixture names none
    let chat = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ferry-nginx/tests/fixtures/chat.conf"
    );
    ok(&["gateway", "import-nginx", chat, "-o", &o], &[]).await?;
    let text = ok(&["--config", &o, "config", "check"], &[]).await?;
    assert!(text.contains("upstream = \"chat\""), "{text}");

    // to stdout without -o
    let text = ok(&["gateway", "import-nginx", fixture], &[]).await?;
    assert!(text.contains("[gateway.upstreams.django]"), "{text}");

    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "http {\n    server {\n        listen 80\n    }\n}\n")?;
    let b = bad.display().to_string();
    let out = run_ferry(BIN, &["gateway", "import-nginx", &b], &[]).await?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("bad.conf:3"), "{}", stderr(&out));
    let out = run_ferry(
        BIN,
        &["gateway", "import-nginx", "/nonexistent/nginx.conf"],
        &[],
    )
    .await?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    Ok(())
}

/// A node started on an imported configuration routes as the nginx file said: a prefix replaced by
/// `proxy_pass`'s URI, `proxy_set_header` and `add_header`, an exact `return`.
#[tokio::test]
async fn a_node_serves_an_imported_nginx_configuration() -> anyhow::Result<()> {
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let dir = tempfile::tempdir()?;
    let upstream = echo.url().trim_start_matches("http://").to_owned();
    let nginx = dir.path().join("nginx.conf");
    std::fs::write(
        &nginx,
        format!(
            "http {{\n  upstream echo {{ server {upstream}; }}\n  server {{\n    listen 127.0.0.1:8080;\n    \
             location /api/ {{\n      proxy_pass http://echo/v2/;\n      proxy_set_header X-Real-IP $remote_addr;\n      \
             add_header X-Frame-Options DENY always;\n    }}\n    location = /health {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
        ),
    )?;
    let n = nginx.display().to_string();
    let text = ok(&["gateway", "import-nginx", &n], &[]).await?;
    let server = crate::common::start_with_config(dir.path(), &text).await?;
    let client = ferry_testkit::http_client();
    let resp = client
        .get(format!("{}/api/users?x=1", server.url()))
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let e: ferry_testkit::EchoReply = resp.json().await?;
    assert_eq!(e.uri, "/v2/users?x=1");
    assert_eq!(e.header("x-real-ip"), Some("127.0.0.1"));
    let resp = client
        .get(format!("{}/health", server.url()))
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await?;
    assert_eq!(resp.text().await?, "ok\n");
    Ok(())
}
