//! End to end, against the built `ferry` binary: the idle timeout on request bodies. A client that stops sending
//! its upload mid-way is cut after the pool's `idle_timeout` with `408` (and the upstream server is not blamed for
//! it), while a slow client that keeps sending, for longer than `idle_timeout` in all, gets through.

use crate::common::{write_file, TempDir, BIN};
use ferry_testkit::{FerryServer, ServerOptions, TargetKind, TargetServer};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(20);

/// Read what the server sends until it closes or `limit` passes (bounded in time and size).
async fn read_reply(stream: &mut TcpStream, limit: Duration) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut chunk = [0u8; 4096];
    while buf.len() < 1 << 20 {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if String::from_utf8_lossy(&buf).contains("\r\n\r\n") && buf.ends_with(b"\n") {
                    // head and the one-line error or JSON body
                    let text = String::from_utf8_lossy(&buf);
                    if let Some((_, body)) = text.split_once("\r\n\r\n") {
                        if !body.is_empty() {
                            break;
                        }
                    }
                }
            }
            Ok(Err(e)) => return Err(e.into()),
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[tokio::test]
async fn a_stalled_upload_is_cut_and_a_slow_steady_one_passes() -> anyhow::Result<()> {
    let sink = TargetServer::start(TargetKind::Sink).await?;
    let dir = TempDir::new("ferry-gw-body-timeout-")?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        &format!(
            r#"
[[gateway.routes]]
name = "up"
upstream = "sink"

[gateway.upstreams.sink]
servers = [{{ url = "{}" }}]
idle_timeout = "1s"
header_timeout = "30s"
"#,
            sink.url()
        ),
    )?;
    let server = FerryServer::start(BIN, ServerOptions::default().config(&config)).await?;

    // a client that sends 10 of its 1000 bytes, then nothing
    let mut stalled = TcpStream::connect(server.addr()).await?;
    let started = Instant::now();
    stalled
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await?;
    let reply = read_reply(&mut stalled, T).await?;
    let took = started.elapsed();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("ferry-error: request_timeout"),
        "{reply}"
    );
    assert!(reply.contains("request body"), "{reply}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "cut after {took:?}"
    );

    // a client that keeps sending, 100 bytes every 300 ms: 3 s in all, never 1 s without data
    let mut steady = TcpStream::connect(server.addr()).await?;
    steady
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n")
        .await?;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        steady.write_all(&[b'a'; 100]).await?;
    }
    let reply = read_reply(&mut steady, T).await?;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"len\":1000"), "{reply}");

    // the stalled client was not counted against the upstream server
    let admin = server.admin_url().expect("admin listener");
    let metrics = ferry_testkit::http_client()
        .get(format!("{admin}/metrics"))
        .timeout(T)
        .send()
        .await?
        .text()
        .await?;
    let failures = metrics
        .lines()
        .find(|l| l.starts_with("ferry_gateway_upstream_failures_total{upstream=\"sink\""))
        .unwrap_or_default()
        .to_owned();
    assert!(failures.ends_with(" 0"), "{failures}");
    Ok(())
}
