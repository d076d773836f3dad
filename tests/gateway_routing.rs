//! End to end, against the built `ferry` binary: the gateway's route table in front of real upstreams, driven
//! by curl over HTTP/1.1 and HTTP/2 (TLS, ALPN) with certificates generated here. Routing by host and path,
//! round robin, redirects, forwarding headers, and the relay and Ferry's own paths still answering when no route
//! claims them.

use crate::common::{write_file, TempDir, BIN};
use ferry_testkit::{EchoReply, FerryServer, ServerOptions, TargetKind, TargetServer, TestPki};
use std::path::Path;
use std::time::Duration;

/// What curl reported: status, HTTP version (`1.1`, `2`), response headers and body.
struct Curled {
    status: u16,
    version: String,
    headers: String,
    body: String,
}

/// `curl` with `--http1.1` or `--http2`, trusting `ca`, sending `Host: host`.
async fn curl(http: &str, ca: &Path, host: &str, url: &str) -> anyhow::Result<Curled> {
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", http, "--cacert"])
            .arg(ca)
            .args(["-H", &format!("Host: {host}"), "-D", "-"])
            .args(["-w", "\n@@%{http_code} %{http_version}", url])
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    anyhow::ensure!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let (rest, tail) = text
        .rsplit_once("\n@@")
        .ok_or_else(|| anyhow::anyhow!("no status line in {text:?}"))?;
    let (code, version) = tail
        .trim()
        .split_once(' ')
        .ok_or_else(|| anyhow::anyhow!("bad tail {tail:?}"))?;
    let (headers, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    Ok(Curled {
        status: code.parse()?,
        version: version.to_owned(),
        headers: headers.to_ascii_lowercase(),
        body: body.to_owned(),
    })
}

#[tokio::test]
async fn routes_by_host_and_path_over_http1_and_http2() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let web = TargetServer::start(TargetKind::Echo).await?;
    let api1 = TargetServer::start(TargetKind::Echo).await?;
    let api2 = TargetServer::start(TargetKind::Echo).await?;
    let dir = TempDir::new("ferry-gw-routing-")?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        &format!(
            r#"
[[gateway.routes]]
name = "web"
hosts = ["www.example.test", "*.web.example.test"]
upstream = "web"

[[gateway.routes]]
name = "api"
path = "/api"
strip_prefix = true
upstream = "api"

[[gateway.routes]]
name = "old"
hosts = ["old.example.test"]
redirect = {{ to = "https://www.example.test" }}

[gateway.upstreams.web]
servers = [{{ url = "{}" }}]

[gateway.upstreams.api]
servers = [{{ url = "{}" }}, {{ url = "{}" }}]
"#,
            web.url(),
            api1.url(),
            api2.url()
        ),
    )?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .tls(pki.cert_path(), pki.key_path())
            .arg("--config")
            .arg(&config.display().to_string()),
    )
    .await?;
    let base = server.url().replace("127.0.0.1", "localhost");
    let ca = pki.ca_path();
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        // by host, exact and wildcard
        for host in ["www.example.test", "shop.web.example.test"] {
            let r = curl(flag, &ca, host, &format!("{base}/page?x=1")).await?;
            assert_eq!((r.status, r.version.as_str()), (200, version), "{host}");
            let e: EchoReply = serde_json::from_str(&r.body)?;
            assert_eq!(e.uri, "/page?x=1");
            assert_eq!(e.header("host"), Some(host));
            assert_eq!(e.header("x-forwarded-proto"), Some("https"));
            assert_eq!(e.header("x-forwarded-host"), Some(host));
            assert_eq!(e.header("x-forwarded-for"), Some("127.0.0.1"));
            assert!(e.header("x-request-id").is_some_and(|v| v.len() == 32));
        }
        // by path, balanced round robin over two servers
        for i in 0..10 {
            let r = curl(
                flag,
                &ca,
                "any.example.test",
                &format!("{base}/api/items/{i}"),
            )
            .await?;
            assert_eq!((r.status, r.version.as_str()), (200, version));
            let e: EchoReply = serde_json::from_str(&r.body)?;
            assert_eq!(e.uri, format!("/items/{i}"));
        }
        // a redirect answered by the gateway
        let r = curl(flag, &ca, "old.example.test", &format!("{base}/a/b?c=d")).await?;
        assert_eq!(r.status, 308);
        assert!(
            r.headers
                .contains("location: https://www.example.test/a/b?c=d"),
            "{}",
            r.headers
        );
        // no route claims these: Ferry's own paths and the relay answer as before
        let r = curl(flag, &ca, "any.example.test", &format!("{base}/healthz")).await?;
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
        let r = curl(
            flag,
            &ca,
            "any.example.test",
            &format!("{base}/relay/nobody/app/x"),
        )
        .await?;
        assert_eq!(r.status, 404);
        assert!(
            r.headers.contains("ferry-error: unknown_tenant"),
            "{}",
            r.headers
        );
        let r = curl(flag, &ca, "any.example.test", &format!("{base}/elsewhere")).await?;
        assert_eq!(r.status, 404);
        assert!(
            r.headers.contains("ferry-error: not_found"),
            "{}",
            r.headers
        );
    }
    assert_eq!(web.requests(), 4);
    assert_eq!((api1.requests(), api2.requests()), (10, 10));
    // one request at a time: each upstream server was reached over one kept-alive connection
    assert_eq!(
        (web.accepted(), api1.accepted(), api2.accepted()),
        (1, 1, 1)
    );

    // Per-route and per-upstream metrics on the admin listener.
    let admin = server
        .admin_url()
        .ok_or_else(|| anyhow::anyhow!("no admin listener"))?;
    let metrics = ferry_testkit::http_client()
        .get(format!("{admin}/metrics"))
        .send()
        .await?;
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().await?;
    for line in [
        "ferry_gateway_responses_total{route=\"api\",class=\"2xx\"} 20",
        "ferry_gateway_responses_total{route=\"old\",class=\"3xx\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    let api_server = api1.addr().to_string();
    assert!(
        metrics.contains(&format!(
            "ferry_gateway_upstream_requests_total{{upstream=\"api\",server=\"{api_server}\"}} 10"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE ferry_relay_tunnels gauge"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn a_bad_gateway_config_stops_the_start_with_its_key() -> anyhow::Result<()> {
    let dir = TempDir::new("ferry-gw-bad-")?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        "[[gateway.routes]]\nupstream = \"nowhere\"\n",
    )?;
    let started = FerryServer::start(
        BIN,
        ServerOptions::default()
            .arg("--config")
            .arg(&config.display().to_string()),
    )
    .await;
    let err = match started {
        Ok(_) => anyhow::bail!("the server started with a bad gateway config"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("gateway.routes[0].upstream: no upstream named \"nowhere\""),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn websockets_through_a_gateway_route() -> anyhow::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let ws = TargetServer::start(TargetKind::WebSocketEcho).await?;
    let dir = TempDir::new("ferry-gw-ws-")?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        &format!(
            "[[gateway.routes]]\npath = \"/chat\"\nupstream = \"ws\"\n\n[gateway.upstreams.ws]\nservers = [{{ url = \"{}\" }}]\n",
            ws.url()
        ),
    )?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .arg("--config")
            .arg(&config.display().to_string()),
    )
    .await?;
    let url = format!("{}/chat/room", server.url().replace("http://", "ws://"));
    let (mut sock, resp) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::connect_async(url),
    )
    .await??;
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        let text = format!("message {i}");
        sock.send(Message::text(text.clone())).await?;
        let echoed = tokio::time::timeout(Duration::from_secs(10), sock.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("closed"))??;
        assert_eq!(echoed.into_text()?.as_str(), text);
    }
    let big = vec![7u8; 256 * 1024];
    sock.send(Message::binary(big.clone())).await?;
    let echoed = tokio::time::timeout(Duration::from_secs(10), sock.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("closed"))??;
    assert!(echoed.into_data() == big, "binary message changed");
    sock.close(None).await?;
    Ok(())
}
