//! End to end, against the built `ferry` binary: the gateway's routes file (`gateway.file`), and routes inline in
//! the main config file, reloaded while clients keep sending (bounded in count and time): a change moves traffic
//! to the new pool with zero failed requests, a bad file is refused with a log line and the old routes stay,
//! SIGHUP reloads too.

use crate::common::{free_port, write_file, SteadyLoad, TempDir, BIN};
use ferry_testkit::{FerryServer, ServerOptions, TargetKind, TargetServer};
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn routes(server: &str) -> String {
    format!(
        "[[routes]]\npath = \"/\"\nupstream = \"p\"\n[upstreams.p]\nservers = [{{ url = \"{server}\" }}]\n"
    )
}

/// Replace `path` atomically (write a temporary file, rename), as deploy tools do.
fn replace(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)?;
    Ok(())
}

async fn wait_until(what: &str, f: impl Fn() -> bool) -> anyhow::Result<()> {
    ferry_testkit::eventually(T, || {
        let ok = f();
        async move {
            anyhow::ensure!(ok, "not yet");
            Ok(())
        }
    })
    .await
    .map_err(|e| e.context(what.to_owned()))
}

#[tokio::test]
async fn routes_file_reloads_under_load_without_failures() -> anyhow::Result<()> {
    let a = TargetServer::start(TargetKind::Echo).await?;
    let b = TargetServer::start(TargetKind::Echo).await?;
    let dir = TempDir::new("ferry-gw-reload-")?;
    let routes_file = write_file(dir.path(), "routes.toml", &routes(&a.url()))?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        &format!("[gateway]\nfile = \"{}\"\n", routes_file.display()),
    )?;
    let server = FerryServer::start(BIN, ServerOptions::default().config(&config)).await?;
    let url = format!("{}/x", server.url());
    // bounded: at most a million requests or two minutes per worker; the test stops them when done (20,000
    // per worker, the bound before, ran out in 4 s on a fast machine, before the last reload was checked)
    let load = SteadyLoad::start(&url, 4, 1_000_000, Duration::from_secs(120));
    wait_until("traffic on a", || a.requests() > 100).await?;

    // a change moves the traffic to b
    replace(&routes_file, &routes(&b.url()))?;
    server
        .output()
        .wait_stderr("gateway routes file reloaded", T)
        .await?;
    let b_at = b.requests();
    wait_until("traffic on b", || b.requests() > b_at + 100).await?;
    let a_after = a.requests();

    // a bad file is refused with a log line; the routes in use stay
    replace(&routes_file, "[[routes]]\nupstream = \"missing\"\n")?;
    server
        .output()
        .wait_stderr("gateway routes file refused", T)
        .await?;
    assert!(
        server
            .output()
            .stderr_contains("gateway.routes[0].upstream: no upstream named \"missing\""),
        "the refusal names the key"
    );
    let b_at = b.requests();
    wait_until("traffic still on b", || b.requests() > b_at + 100).await?;

    // SIGHUP reloads (still the bad file: refused again)
    let hup = tokio::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .await?;
    assert!(hup.success());
    server
        .output()
        .wait_stderr("SIGHUP: reloading the gateway routes file", T)
        .await?;
    server
        .output()
        .wait_stderr_count("gateway routes file refused", 2, T)
        .await?;

    // fixed: back to a
    replace(&routes_file, &routes(&a.url()))?;
    wait_until("traffic back on a", || a.requests() > a_after + 100).await?;

    let ok = load.ok();
    let failed = load.finish().await;
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    eprintln!("ok {ok} a {} b {}", a.requests(), b.requests());
    Ok(())
}

/// The routes written inline in the main config file (no `gateway.file`): reloaded under load with zero failed
/// requests, a bad file refused naming the key (the old routes stay), SIGHUP reloads too, and a change of
/// `gateway.tls` (which needs a restart) is refused.
#[tokio::test]
async fn inline_routes_reload_under_load_without_failures() -> anyhow::Result<()> {
    let a = TargetServer::start(TargetKind::Echo).await?;
    let b = TargetServer::start(TargetKind::Echo).await?;
    let dir = TempDir::new("ferry-gw-reload-inline-")?;
    let inline = |server: &str| {
        format!(
            "version = 1\n[log]\nlevel = \"info\"\n[[gateway.routes]]\npath = \"/\"\nupstream = \"p\"\n[gateway.upstreams.p]\nservers = [{{ url = \"{server}\" }}]\n"
        )
    };
    let config = write_file(dir.path(), "ferry.toml", &inline(&a.url()))?;
    let server = FerryServer::start(BIN, ServerOptions::default().config(&config)).await?;
    let url = format!("{}/x", server.url());
    // bounded: at most a million requests or two minutes per worker; the test stops them when done (20,000
    // per worker, the bound before, ran out in 4 s on a fast machine, before the last reload was checked)
    let load = SteadyLoad::start(&url, 4, 1_000_000, Duration::from_secs(120));
    wait_until("traffic on a", || a.requests() > 100).await?;

    // a change moves the traffic to b
    replace(&config, &inline(&b.url()))?;
    server
        .output()
        .wait_stderr("gateway section of the config file reloaded", T)
        .await?;
    let b_at = b.requests();
    wait_until("traffic on b", || b.requests() > b_at + 100).await?;
    let a_after = a.requests();

    // a bad file is refused with a log line naming the key; the routes in use stay
    replace(
        &config,
        "version = 1\n[[gateway.routes]]\nupstream = \"missing\"\n",
    )?;
    server
        .output()
        .wait_stderr("gateway section of the config file refused", T)
        .await?;
    assert!(
        server
            .output()
            .stderr_contains("gateway.routes[0].upstream: no upstream named \"missing\""),
        "the refusal names the key"
    );
    let b_at = b.requests();
    wait_until("traffic still on b", || b.requests() > b_at + 100).await?;

    // SIGHUP reloads (still the bad file: refused again)
    let hup = tokio::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .await?;
    assert!(hup.success());
    server
        .output()
        .wait_stderr(
            "SIGHUP: reloading the gateway section of the config file",
            T,
        )
        .await?;
    server
        .output()
        .wait_stderr_count("gateway section of the config file refused", 2, T)
        .await?;

    // TLS settings on a node without a TLS listener: refused, naming the key
    replace(
        &config,
        &format!(
            "{}[gateway.tls]\nclient_auth = \"required\"\n",
            inline(&a.url())
        ),
    )?;
    server
        .output()
        .wait_stderr_count("gateway section of the config file refused", 3, T)
        .await?;
    assert!(server.output().stderr_contains("gateway.tls: "));
    let b_at = b.requests();
    wait_until("traffic still on b", || b.requests() > b_at + 100).await?;

    // fixed: back to a
    replace(&config, &inline(&a.url()))?;
    wait_until("traffic back on a", || a.requests() > a_after + 100).await?;

    let ok = load.ok();
    let failed = load.finish().await;
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    eprintln!("ok {ok} a {} b {}", a.requests(), b.requests());
    Ok(())
}

/// `[[server.listeners]]` changes by a reload of the config file while clients keep sending to the main listener
/// (zero failed requests): a TLS listener is added (sharing the main listener's certificate), a listener turns
/// into a redirect on the same socket, one is removed and stops accepting, a port in use refuses the whole
/// reload, and a change elsewhere in `[server]` is named in the log as waiting for a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_changed_and_removed_by_a_reload() -> anyhow::Result<()> {
    let pki = ferry_testkit::TestPki::new()?;
    let target = TargetServer::start(TargetKind::Echo).await?;
    let dir = TempDir::new("ferry-gw-reload-listeners-")?;
    let (p1, p2) = (free_port()?, free_port()?);
    let routes = format!(
        "[log]\nlevel = \"info\"\n[[gateway.routes]]\npath = \"/\"\nupstream = \"p\"\n[gateway.upstreams.p]\nservers = [{{ url = \"{}\" }}]\n",
        target.url()
    );
    let with = |listeners: &str| format!("version = 1\n{listeners}\n{routes}");
    let plain = |port: u16| format!("[[server.listeners]]\nlisten = \"127.0.0.1:{port}\"\n");
    let config = write_file(dir.path(), "ferry.toml", &with(&plain(p1)))?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .tls(pki.cert_path(), pki.key_path())
            .config(&config),
    )
    .await?;
    let https = |port: u16| -> anyhow::Result<(reqwest::Client, String)> {
        let client = ferry_testkit::client::client_builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
                pki.ca_path(),
            )?)?)
            .resolve("localhost", ([127, 0, 0, 1], port).into())
            .build()?;
        Ok((client, format!("https://localhost:{port}/x")))
    };
    let main_port: u16 = server.addr().port();
    let (main_client, main_url) = https(main_port)?;
    // bounded: at most a million requests or two minutes per worker; stopped when the test is done
    let load = SteadyLoad::start_with(
        main_client,
        &main_url,
        2,
        1_000_000,
        Duration::from_secs(120),
    );
    let get_plain = |port: u16| async move {
        ferry_testkit::raw::request(
            ([127, 0, 0, 1], port).into(),
            b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            Duration::from_secs(10),
        )
        .await
    };
    assert_eq!(get_plain(p1).await?.status, 200);

    // added: a TLS listener with the main listener's certificate
    replace(
        &config,
        &with(&format!(
            "{}[[server.listeners]]\nlisten = \"127.0.0.1:{p2}\"\ntls = true\n",
            plain(p1)
        )),
    )?;
    server
        .output()
        .wait_stderr("listener added by a reload", T)
        .await?;
    let (client, url) = https(p2)?;
    let resp = client.get(&url).send().await?;
    assert_eq!(resp.status(), 200);

    // changed: the first one redirects now, on the same socket
    replace(
        &config,
        &with(&format!(
            "[[server.listeners]]\nlisten = \"127.0.0.1:{p1}\"\nredirect_to_https = true\nhttps_port = {main_port}\n[[server.listeners]]\nlisten = \"127.0.0.1:{p2}\"\ntls = true\n"
        )),
    )?;
    server
        .output()
        .wait_stderr("listener changed by a reload", T)
        .await?;
    let resp = get_plain(p1).await?;
    assert_eq!(resp.status, 308, "{resp:?}");
    assert_eq!(
        resp.header("location"),
        Some(format!("https://localhost:{main_port}/x").as_str())
    );

    // a port in use refuses the whole reload: the redirect stays, the TLS listener too
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let busy = taken.local_addr()?.port();
    replace(
        &config,
        &with(&format!(
            "[[server.listeners]]\nlisten = \"127.0.0.1:{p2}\"\ntls = true\n[[server.listeners]]\nlisten = \"127.0.0.1:{busy}\"\n"
        )),
    )?;
    server
        .output()
        .wait_stderr("gateway section of the config file refused", T)
        .await?;
    assert!(
        server
            .output()
            .stderr_contains("server.listeners[1].listen"),
        "the refusal names the listener"
    );
    assert_eq!(get_plain(p1).await?.status, 308);
    drop(taken);

    // removed: the first one stops accepting, the TLS one still serves; a change of server.http waits for a
    // restart and says so
    replace(
        &config,
        &with(&format!(
            "[server.http]\nmax_connections_per_ip = 999\n[[server.listeners]]\nlisten = \"127.0.0.1:{p2}\"\ntls = true\n"
        )),
    )?;
    server
        .output()
        .wait_stderr("listener removed by a reload", T)
        .await?;
    ferry_testkit::eventually(T, || async {
        anyhow::ensure!(
            get_plain(p1).await.is_err(),
            "the removed listener still accepts"
        );
        Ok(())
    })
    .await?;
    assert_eq!(client.get(&url).send().await?.status(), 200);
    server
        .output()
        .wait_stderr("[server] changed beyond server.listeners", T)
        .await?;
    assert!(server
        .output()
        .stderr_contains("server.http.max_connections_per_ip"));

    let ok = load.ok();
    let failed = load.finish().await;
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    assert!(ok > 0, "no request reached the main listener");
    Ok(())
}
