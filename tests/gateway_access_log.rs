//! End to end, against the built `ferry` binary: the access log (`gateway.access_log`). One line per request
//! answered by a gateway route (upstream, relay target, fixed response) and per plain relay request, in nginx's
//! combined format or as JSON, with the bytes the response body really carried (chunked bodies included), the
//! request id the client saw, the route and the upstream; the format follows a reload of the config file, with
//! `FERRY_ACCESS_LOG` still winning over the file.

use crate::common::{write_file, TempDir, BIN};
use ferry_testkit::{Connector, FerryServer, ServerOptions, TargetKind, TargetServer};
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);
const DOWNLOAD: u64 = 100_000;

/// The access-log lines on `server`'s stderr (the text after `ferry::access: `).
fn access_lines(server: &FerryServer) -> Vec<String> {
    server
        .output()
        .stderr()
        .lines()
        .filter_map(|l| l.split_once("ferry::access: ").map(|(_, t)| t.to_owned()))
        .collect()
}

/// Wait until an access line contains every one of `needles`; returns it.
async fn wait_line(server: &FerryServer, needles: &[&str]) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Some(l) = access_lines(server)
            .into_iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return Ok(l);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no access line with {needles:?} in:\n{}",
            access_lines(server).join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config(dir: &Path, extra: &str, download: &str) -> anyhow::Result<std::path::PathBuf> {
    write_file(
        dir,
        "ferry.toml",
        &format!(
            r#"
[gateway]
{extra}

[[gateway.routes]]
name = "files"
path = "/files"
upstream = "files"

[[gateway.routes]]
name = "hello"
path = "/hello"
respond = {{ body = "hello\n" }}

[[gateway.routes]]
name = "via-relay"
path = "/via"
strip_prefix = true
relay = "acme/app"

[gateway.upstreams.files]
servers = [{{ url = "{download}" }}]
"#
        ),
    )
}

/// A node with the routes above and a connector of tenant `acme` serving `app` (an echo target).
async fn start(
    dir: &TempDir,
    extra: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<(FerryServer, Connector, TargetServer, TargetServer)> {
    let download = TargetServer::start(TargetKind::Download {
        len: DOWNLOAD,
        seed: 7,
        content_length: false,
    })
    .await?;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let file = config(dir.path(), extra, &download.url())?;
    let mut opts = ServerOptions::default().config(&file);
    for (k, v) in env {
        opts = opts.env(k, v);
    }
    let server = FerryServer::start(BIN, opts).await?;
    let secret = server.create_tenant("acme").await?;
    let connector = Connector::start(
        BIN,
        server.url(),
        "acme",
        &secret,
        &[("app", &echo.url())],
        Default::default(),
    )
    .await?;
    Ok((server, connector, download, echo))
}

#[tokio::test]
async fn combined_lines_for_routes_and_the_relay() -> anyhow::Result<()> {
    let dir = TempDir::new("ferry-gw-access-")?;
    let (server, _connector, download, _echo) =
        start(&dir, "access_log = \"combined\"", &[]).await?;
    let client = ferry_testkit::http_client();

    // an upstream route, with a chunked body of DOWNLOAD bytes
    let resp = client
        .get(format!("{}/files/big?q=1", server.url()))
        .header("user-agent", "ua-test/1.0")
        .header("referer", "https://ref.example/page")
        .timeout(T)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("x-request-id");
    let body = resp.bytes().await?;
    assert_eq!(body.len() as u64, DOWNLOAD);
    let upstream = download.url().trim_start_matches("http://").to_owned();
    let line = wait_line(&server, &["/files/big?q=1"]).await?;
    assert!(
        line.starts_with("127.0.0.1 - - ["),
        "client address first: {line}"
    );
    assert!(
        line.contains(&format!(
            "\"GET /files/big?q=1 HTTP/1.1\" 200 {DOWNLOAD} \"https://ref.example/page\" \"ua-test/1.0\" rt="
        )),
        "{line}"
    );
    assert!(
        line.ends_with(&format!(" id={id} route=\"files\" upstream=\"{upstream}\"")),
        "{line}"
    );

    // a fixed response, a HEAD (no body bytes), a relay route and a plain relay request
    let r = client
        .get(format!("{}/hello", server.url()))
        .timeout(T)
        .send()
        .await?;
    assert_eq!(r.text().await?, "hello\n");
    let r = client
        .head(format!("{}/files/h", server.url()))
        .timeout(T)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let via = client
        .post(format!("{}/via/echo?x=2", server.url()))
        .body("0123456789")
        .timeout(T)
        .send()
        .await?
        .bytes()
        .await?;
    let relayed = client
        .get(format!("{}/relay/acme/app/plain", server.url()))
        .timeout(T)
        .send()
        .await?
        .bytes()
        .await?;
    let missing = client
        .get(format!("{}/nowhere", server.url()))
        .timeout(T)
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    let missing_len = missing.bytes().await?.len();

    let hello = wait_line(&server, &["\"GET /hello HTTP/1.1\""]).await?;
    assert!(hello.contains("\" 200 6 \"-\" \""), "{hello}");
    assert!(hello.ends_with("route=\"hello\" upstream=\"-\""), "{hello}");
    let head = wait_line(&server, &["\"HEAD /files/h HTTP/1.1\""]).await?;
    assert!(head.contains("\" 200 0 \""), "{head}");
    let via_line = wait_line(&server, &["\"POST /via/echo?x=2 HTTP/1.1\""]).await?;
    assert!(
        via_line.contains(&format!("\" 200 {} \"", via.len())),
        "{via_line}"
    );
    assert!(
        via_line.ends_with("route=\"via-relay\" upstream=\"acme/app\""),
        "{via_line}"
    );
    let plain = wait_line(&server, &["\"GET /relay/acme/app/plain HTTP/1.1\""]).await?;
    assert!(
        plain.contains(&format!("\" 200 {} \"", relayed.len())),
        "{plain}"
    );
    assert!(
        plain.ends_with("route=\"-\" upstream=\"acme/app\""),
        "{plain}"
    );
    let nowhere = wait_line(&server, &["\"GET /nowhere HTTP/1.1\""]).await?;
    assert!(
        nowhere.contains(&format!("\" 404 {missing_len} \"")),
        "{nowhere}"
    );

    // Ferry's own paths are not logged
    let r = client
        .get(format!("{}/healthz", server.url()))
        .timeout(T)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert!(
        access_lines(&server)
            .iter()
            .all(|l| !l.contains("/healthz")),
        "no line for /healthz"
    );
    Ok(())
}

#[tokio::test]
async fn json_lines_over_http2_and_the_format_follows_a_reload() -> anyhow::Result<()> {
    let dir = TempDir::new("ferry-gw-access-json-")?;
    // the environment (json) wins over the file (combined), at start and after a reload
    let (server, _connector, download, _echo) = start(
        &dir,
        "access_log = \"combined\"",
        &[("FERRY_ACCESS_LOG", "json")],
    )
    .await?;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(T)
        .build()?;
    let resp = h2
        .get(format!("{}/files/h2?a=b", server.url()))
        .header("user-agent", "ua-h2")
        .send()
        .await?;
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("x-request-id");
    assert_eq!(resp.bytes().await?.len() as u64, DOWNLOAD);
    let line = wait_line(&server, &["/files/h2?a=b"]).await?;
    let j: serde_json::Value = serde_json::from_str(&line)?;
    assert_eq!(j["method"], "GET");
    assert_eq!(j["path"], "/files/h2?a=b");
    assert_eq!(j["protocol"], "HTTP/2.0");
    assert_eq!(j["status"], 200);
    assert_eq!(j["bytes_sent"], DOWNLOAD);
    assert_eq!(j["client"], "127.0.0.1");
    assert_eq!(j["user_agent"], "ua-h2");
    assert!(j["referer"].is_null(), "{line}");
    assert_eq!(j["request_id"], id.as_str());
    assert_eq!(j["route"], "files");
    assert_eq!(j["upstream"], download.url().trim_start_matches("http://"));
    assert!(
        j["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
        "{line}"
    );
    assert!(
        j["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
        "{line}"
    );

    // a client-sent request id is kept
    let given = "0123456789abcdef0123456789abcdef";
    let r = h2
        .get(format!("{}/hello", server.url()))
        .header("x-request-id", given)
        .send()
        .await?;
    assert_eq!(r.text().await?, "hello\n");
    let line = wait_line(&server, &[given]).await?;
    let j: serde_json::Value = serde_json::from_str(&line)?;
    assert_eq!(j["route"], "hello");
    assert_eq!(j["bytes_sent"], 6);

    // a reload of the config file: the new route answers, and the lines stay JSON (the environment still wins)
    let text =
        std::fs::read_to_string(dir.path().join("ferry.toml"))?.replace("hello\\n", "reloaded\\n");
    let tmp = dir.path().join("ferry.toml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.path().join("ferry.toml"))?;
    server
        .output()
        .wait_stderr("gateway section of the config file reloaded", T)
        .await?;
    let r = h2
        .get(format!("{}/hello?after", server.url()))
        .send()
        .await?;
    assert_eq!(r.text().await?, "reloaded\n");
    let line = wait_line(&server, &["/hello?after"]).await?;
    let j: serde_json::Value = serde_json::from_str(&line)?;
    assert_eq!(j["bytes_sent"], 9);
    Ok(())
}

/// The access log to a file of its own in a format of the operator's own, reopened on SIGUSR1 after logrotate
/// moved it away (as nginx's `kill -USR1`): the old file keeps the old lines, the new one gets the new ones.
#[tokio::test]
async fn a_file_of_its_own_in_a_custom_format_reopened_on_sigusr1() -> anyhow::Result<()> {
    let dir = TempDir::new("ferry-gw-access-file-")?;
    let file = dir.path().join("access.log");
    let extra = format!(
        "access_log = \"custom\"\naccess_log_file = \"{}\"\naccess_log_format = '$remote_addr \"$request\" $status $body_bytes_sent ut=$upstream_response_time route=$route id=$request_id'",
        file.display()
    );
    let (server, _connector, _download, _echo) = start(&dir, &extra, &[]).await?;
    let client = ferry_testkit::http_client();
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let wait_for = |path: std::path::PathBuf, needle: String| async move {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.contains(&needle) {
                return Ok::<String, anyhow::Error>(text);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no line with {needle:?} in {}:\n{text}",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let resp = client
        .get(format!("{}/files/first", server.url()))
        .header("x-request-id", "0123456789abcdef0123456789abcdef")
        .send()
        .await?;
    assert_eq!(resp.bytes().await?.len() as u64, DOWNLOAD);
    let text = wait_for(file.clone(), "id=0123456789abcdef0123456789abcdef".into()).await?;
    let line = text.lines().next().unwrap_or_default();
    assert!(
        line.starts_with(&format!(
            "127.0.0.1 \"GET /files/first HTTP/1.1\" 200 {DOWNLOAD} ut=0."
        )),
        "{line}"
    );
    assert!(line.contains(" route=files "), "{line}");
    assert!(
        !server.output().stderr().contains("ferry::access:"),
        "the lines go to the file, not the log"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{mode:o}");
    }

    // logrotate: move the file away, then SIGUSR1
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&file, &rotated)?;
    let kill = tokio::process::Command::new("kill")
        .args(["-USR1", &server.pid().to_string()])
        .status()
        .await?;
    assert!(kill.success());
    server
        .output()
        .wait_stderr("access log reopened", T)
        .await?;
    let resp = client.get(format!("{}/hello", server.url())).send().await?;
    assert_eq!(resp.text().await?, "hello\n");
    let text = wait_for(
        file.clone(),
        "\"GET /hello HTTP/1.1\" 200 6 ut=- route=hello".into(),
    )
    .await?;
    assert!(!text.contains("/files/first"), "{text}");
    assert!(
        !read(&rotated).contains("/hello"),
        "the old file keeps only the old lines"
    );
    Ok(())
}
