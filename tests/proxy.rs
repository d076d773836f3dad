//! End to end, against the built `ferry` binary and real forward proxies from Debian's packages (tinyproxy,
//! squid; `ferry_testkit::proxy`, installed by `scripts/forward-proxy/ensure.sh`): the connector behind a
//! corporate proxy (docs/operations.md, "Connectors behind a corporate proxy").
//!
//! Without the proxies (not root, no apt-get) the tests print `skipped: …`; with `CI` set they fail.

use crate::common::BIN;
use ferry_testkit::client::client_builder;
use ferry_testkit::{
    http_client, light_slot, Connector, ConnectorOptions, EchoReply, FerryServer, ForwardProxy,
    ProxyKind, ServerOptions, TargetKind, TargetServer, TestPki,
};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(20);

/// Fast reconnects, so that a proxy restart is over in well under a second.
fn quick(opts: ConnectorOptions) -> ConnectorOptions {
    opts.env("FERRY_RECONNECT_MIN_DELAY", "100ms")
        .env("FERRY_RECONNECT_MAX_DELAY", "500ms")
}

async fn relay_get(client: &reqwest::Client, server: &str, path: &str) -> anyhow::Result<()> {
    let resp = client
        .get(format!("{server}/relay/demo/app{path}"))
        .timeout(T)
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "GET {path}: {}", resp.status());
    let reply: EchoReply = resp.json().await?;
    anyhow::ensure!(reply.uri == path, "echoed {} for {path}", reply.uri);
    Ok(())
}

/// POST `len` bytes to the echo target `app` of tenant `demo`; the target must have received them all.
async fn relay_upload(
    client: &reqwest::Client,
    server: &str,
    fill: u8,
    len: usize,
) -> anyhow::Result<()> {
    let resp = client
        .post(format!("{server}/relay/demo/app/upload"))
        .body(vec![fill; len])
        .timeout(T)
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "upload: {}", resp.status());
    let reply: EchoReply = resp.json().await?;
    anyhow::ensure!(
        reply.body_len == len as u64,
        "the target got {} of {len} bytes",
        reply.body_len
    );
    Ok(())
}

/// tinyproxy with Basic authentication: without credentials the connector says the proxy requires
/// authentication (407); with them from a file, and the proxy from `HTTP_PROXY`, the tunnel is up through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_an_authenticating_proxy_with_credentials_from_a_file() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let Some(proxy) = ForwardProxy::start(ProxyKind::Tinyproxy {
        auth: Some(("alice".into(), "s3cret".into())),
        idle_timeout_secs: None,
    })
    .await?
    else {
        return Ok(());
    };
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let server = FerryServer::start(BIN, ServerOptions::default()).await?;
    let secret = server.create_tenant("demo").await?;
    let targets = [("app", echo.url())];
    let targets: Vec<(&str, &str)> = targets.iter().map(|(n, u)| (*n, u.as_str())).collect();

    let mut refused = Connector::start(
        BIN,
        server.url(),
        "demo",
        &secret,
        &targets,
        quick(ConnectorOptions {
            no_wait: true,
            ..ConnectorOptions::default()
        })
        .arg("--proxy")
        .arg(&proxy.url()),
    )
    .await?;
    refused
        .output()
        .wait_stderr("proxy requires authentication", T)
        .await?;
    assert!(
        refused.stderr_contains("407"),
        "{}",
        refused.output().tail(10)
    );
    refused.kill().await?;

    let dir = tempfile::tempdir()?;
    let auth_file = dir.path().join("proxy-auth");
    std::fs::write(&auth_file, "alice:s3cret\n")?;
    let connector = Connector::start(
        BIN,
        server.url(),
        "demo",
        &secret,
        &targets,
        quick(ConnectorOptions::default())
            .env("HTTP_PROXY", &proxy.url())
            .env("NO_PROXY", "example.invalid")
            .arg("--proxy-auth-file")
            .arg(&auth_file.display().to_string()),
    )
    .await?;
    assert!(
        connector.stderr_contains(&format!("via={} (connect)", proxy.url())),
        "{}",
        connector.output().tail(10)
    );
    assert!(connector.stderr_contains("transport=upgrade"));
    relay_get(&http_client(), server.url(), "/through/tinyproxy").await?;
    let log = proxy.log();
    assert!(log.contains("CONNECT"), "{log}");
    Ok(())
}

/// squid as a locked-down proxy: `CONNECT` to the node's port is refused (403) and the `ferry-tunnel/1` upgrade
/// is stripped from plain requests, but WebSocket upgrades pass: the connector falls back on its own and the
/// tunnel runs over a WebSocket, bodies both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_websocket_through_a_proxy_that_refuses_connect() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let Some(proxy) = ForwardProxy::start(ProxyKind::SquidWebSocketOnly).await? else {
        return Ok(());
    };
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let server = FerryServer::start(BIN, ServerOptions::default()).await?;
    let secret = server.create_tenant("demo").await?;
    let connector = Connector::start(
        BIN,
        server.url(),
        "demo",
        &secret,
        &[("app", &echo.url())],
        quick(ConnectorOptions::default())
            .arg("--proxy")
            .arg(&proxy.url()),
    )
    .await?;
    let log = connector.output().stderr();
    assert!(log.contains("the proxy refused CONNECT"), "{log}");
    assert!(log.contains("403"), "{log}");
    assert!(
        log.contains("trying the websocket transport"),
        "the stripped upgrade is noticed: {log}"
    );
    assert!(log.contains("transport=websocket"), "{log}");
    assert!(log.contains("(forward)"), "{log}");
    server
        .output()
        .wait_stderr("transport=websocket", T)
        .await?;

    let client = http_client();
    relay_get(&client, server.url(), "/over/websocket").await?;
    relay_upload(&client, server.url(), b'w', 512 * 1024).await?;
    let access = proxy.log();
    assert!(access.contains("TCP_DENIED/403"), "{access}");
    assert!(access.contains("/_ferry/tunnel"), "{access}");
    Ok(())
}

/// The node behind TLS with a test CA's certificate, reached through a proxy: without `--ca-file` the error names
/// the issuer it saw; with it, `--transport websocket` runs through the proxy, and the tunnel comes back after
/// the proxy restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_node_through_a_proxy_names_the_issuer_and_survives_a_proxy_restart(
) -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let Some(mut proxy) = ForwardProxy::start(ProxyKind::Tinyproxy {
        auth: None,
        idle_timeout_secs: None,
    })
    .await?
    else {
        return Ok(());
    };
    let pki = TestPki::new()?;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default().tls(pki.cert_path(), pki.key_path()),
    )
    .await?;
    assert!(server.url().starts_with("https://"), "{}", server.url());
    let secret = server.create_tenant("demo").await?;

    let mut untrusted = Connector::start(
        BIN,
        server.url(),
        "demo",
        &secret,
        &[("app", &echo.url())],
        quick(ConnectorOptions {
            no_wait: true,
            ..ConnectorOptions::default()
        })
        .env("HTTPS_PROXY", &proxy.url()),
    )
    .await?;
    untrusted
        .output()
        .wait_stderr("issued by \"CN=ferry test ca\"", T)
        .await?;
    untrusted.kill().await?;

    let connector = Connector::start(
        BIN,
        server.url(),
        "demo",
        &secret,
        &[("app", &echo.url())],
        quick(ConnectorOptions::default())
            .env("HTTPS_PROXY", &proxy.url())
            .arg("--ca-file")
            .arg(&pki.ca_path().display().to_string())
            .arg("--transport")
            .arg("websocket"),
    )
    .await?;
    assert!(
        connector.stderr_contains("transport=websocket"),
        "{}",
        connector.output().tail(10)
    );
    let client = client_builder()
        .add_root_certificate(pki.reqwest_ca()?)
        .build()?;
    relay_get(&client, server.url(), "/before/restart").await?;

    proxy.restart().await?;
    connector.wait_tunnels(2, T).await?;
    ferry_testkit::eventually(T, || relay_get(&client, server.url(), "/after/restart")).await?;
    Ok(())
}

/// A proxy that closes connections idle for 2 s (tinyproxy's `Timeout`): an idle `CONNECT` of our own is closed,
/// while the connector's tunnel, with keep-alive PINGs every 500 ms, stays up through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_keeps_an_idle_tunnel_through_a_proxy_idle_timeout() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let Some(proxy) = ForwardProxy::start(ProxyKind::Tinyproxy {
        auth: None,
        idle_timeout_secs: Some(2),
    })
    .await?
    else {
        return Ok(());
    };
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let server = FerryServer::start(BIN, ServerOptions::default()).await?;
    let secret = server.create_tenant("demo").await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("connector.toml");
    std::fs::write(
        &config,
        "version = 1\n[connector]\nkeepalive_interval = \"500ms\"\nkeepalive_timeout = \"2s\"\n",
    )?;
    let connector = Connector::start(
        BIN,
        server.url(),
        "demo",
        &secret,
        &[("app", &echo.url())],
        quick(ConnectorOptions::default())
            .config(&config)
            .arg("--proxy")
            .arg(&proxy.url()),
    )
    .await?;

    // The control: an idle tunnel of our own through the same proxy is closed by it.
    let addr = server.url().trim_start_matches("http://").to_owned();
    let mut idle =
        tokio::net::TcpStream::connect(proxy.url().trim_start_matches("http://")).await?;
    idle.write_all(format!("CONNECT {addr} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut head = [0u8; 512];
    let n = tokio::time::timeout(T, idle.read(&mut head)).await??;
    assert!(
        String::from_utf8_lossy(&head[..n]).contains(" 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 64];
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the proxy kept an idle CONNECT open for 10 s"
    );

    // Meanwhile (more than the proxy's 2 s) the connector's tunnel stayed up: one tunnel, and it relays.
    relay_get(&http_client(), server.url(), "/after/idle").await?;
    assert_eq!(
        connector.output().stderr_count("tunnel established"),
        1,
        "{}",
        connector.output().tail(10)
    );
    Ok(())
}

/// A TLS-inspecting corporate proxy (squid with `ssl_bump`): it ends the connector's TLS with certificates of
/// its own CA. Trusting only the node's CA, the connector says whose certificate it saw (the inspecting CA's);
/// with that CA in `--ca-file` the tunnel runs through the inspection (the proxy strips the `ferry-tunnel/1`
/// upgrade inside, so the connector falls back to the WebSocket transport), bodies both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_tls_inspecting_proxy_with_its_ca_in_ca_file() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let node_pki = TestPki::new()?;
    let corp_pki = TestPki::named("corp inspecting ca")?;
    let Some(proxy) = ForwardProxy::start(ProxyKind::SquidTlsInspecting {
        ca_cert: corp_pki.ca_path(),
        ca_key: corp_pki.ca_key_path(),
        site_ca: node_pki.ca_path(),
    })
    .await?
    else {
        return Ok(());
    };
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default().tls(node_pki.cert_path(), node_pki.key_path()),
    )
    .await?;
    let secret = server.create_tenant("demo").await?;
    // The node by name, as a connector reaches a real one: for a site addressed by IP, squid's made-up
    // certificate names the address as a DNS name, which no TLS client accepts.
    let by_name = server.url().replace("127.0.0.1", "localhost");

    let mut node_ca_only = Connector::start(
        BIN,
        &by_name,
        "demo",
        &secret,
        &[("app", &echo.url())],
        quick(ConnectorOptions {
            no_wait: true,
            ..ConnectorOptions::default()
        })
        .arg("--proxy")
        .arg(&proxy.url())
        .arg("--ca-file")
        .arg(&node_pki.ca_path().display().to_string()),
    )
    .await?;
    node_ca_only
        .output()
        .wait_stderr("issued by \"CN=corp inspecting ca\"", T)
        .await?;
    node_ca_only.kill().await?;

    let connector = Connector::start(
        BIN,
        &by_name,
        "demo",
        &secret,
        &[("app", &echo.url())],
        quick(ConnectorOptions::default())
            .arg("--proxy")
            .arg(&proxy.url())
            .arg("--ca-file")
            .arg(&corp_pki.ca_path().display().to_string()),
    )
    .await?;
    let log = connector.output().stderr();
    assert!(log.contains("transport=websocket"), "{log}");
    let client = client_builder()
        .add_root_certificate(node_pki.reqwest_ca()?)
        .build()?;
    relay_get(&client, server.url(), "/inspected").await?;
    relay_upload(&client, server.url(), b'i', 256 * 1024).await?;
    // The proxy saw inside the TLS: its log names the tunnel's path, not only a CONNECT.
    let access = proxy.log();
    assert!(access.contains("/_ferry/tunnel"), "{access}");
    Ok(())
}

/// A proxy reached over TLS itself (`--proxy https://…`, squid's `https_port`): the proxy's certificate is
/// checked against `--ca-file` too, and an untrusted one is named by its issuer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_proxy_reached_over_tls_with_its_ca_in_ca_file() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let proxy_pki = TestPki::named("corp proxy ca")?;
    let Some(proxy) = ForwardProxy::start(ProxyKind::SquidOverTls {
        cert: proxy_pki.cert_path(),
        key: proxy_pki.key_path(),
    })
    .await?
    else {
        return Ok(());
    };
    assert!(proxy.url().starts_with("https://"), "{}", proxy.url());
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let server = FerryServer::start(BIN, ServerOptions::default()).await?;
    let secret = server.create_tenant("demo").await?;

    let mut untrusted = Connector::start(
        BIN,
        server.url(),
        "demo",
        &secret,
        &[("app", &echo.url())],
        quick(ConnectorOptions {
            no_wait: true,
            ..ConnectorOptions::default()
        })
        .arg("--proxy")
        .arg(&proxy.url()),
    )
    .await?;
    untrusted
        .output()
        .wait_stderr("issued by \"CN=corp proxy ca\"", T)
        .await?;
    untrusted.kill().await?;

    let connector = Connector::start(
        BIN,
        server.url(),
        "demo",
        &secret,
        &[("app", &echo.url())],
        quick(ConnectorOptions::default())
            .arg("--proxy")
            .arg(&proxy.url())
            .arg("--ca-file")
            .arg(&proxy_pki.ca_path().display().to_string()),
    )
    .await?;
    assert!(
        connector.stderr_contains("transport=upgrade"),
        "{}",
        connector.output().tail(10)
    );
    assert!(
        connector.stderr_contains(&format!("via={}", proxy.url())),
        "{}",
        connector.output().tail(10)
    );
    relay_get(&http_client(), server.url(), "/through/tls/proxy").await?;
    Ok(())
}
