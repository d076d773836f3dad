//! End to end, against the built `ferry` binary: a real gRPC client and server (Python grpcio, installed from
//! PyPI by this test when missing) through the gateway: TLS and HTTP/2 from the client, h2c to the server,
//! unary and server-streaming calls, status codes and trailing metadata carried in HTTP/2 trailers.

use crate::common::{write_file, TempDir, BIN};
use ferry_testkit::{FerryServer, ServerOptions, TestPki};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const SERVER: &str = r#"
import concurrent.futures, sys, grpc

def say(request, context):
    context.set_trailing_metadata((("x-trailer", "kept"),))
    return b"hello " + request

def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

def stream(request, context):
    for i in range(3):
        yield ("msg %d" % i).encode()

handler = grpc.method_handlers_generic_handler("ferry.Test", {
    "Say": grpc.unary_unary_rpc_method_handler(say),
    "Fail": grpc.unary_unary_rpc_method_handler(fail),
    "Stream": grpc.unary_stream_rpc_method_handler(stream),
})
server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print("PORT %d" % port, flush=True)
server.wait_for_termination(timeout=120)
"#;

const CLIENT: &str = r#"
import sys, grpc
target, ca = sys.argv[1], sys.argv[2]
creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
with grpc.secure_channel(target, creds) as ch:
    resp, call = ch.unary_unary("/ferry.Test/Say").with_call(b"ferry", timeout=10)
    print("SAY", resp.decode(), dict(call.trailing_metadata()).get("x-trailer"))
    try:
        ch.unary_unary("/ferry.Test/Fail")(b"x", timeout=10)
        print("FAIL none")
    except grpc.RpcError as e:
        print("FAIL", e.code().name, e.details())
    print("STREAM", ",".join(m.decode() for m in ch.unary_stream("/ferry.Test/Stream")(b"", timeout=10)))
"#;

/// Whether `python3` can import grpc, installing grpcio from PyPI when it cannot.
async fn have_grpcio() -> bool {
    let check = || async {
        tokio::process::Command::new("python3")
            .args(["-c", "import grpc"])
            .kill_on_drop(true)
            .output()
            .await
            .is_ok_and(|o| o.status.success())
    };
    if check().await {
        return true;
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "grpcio"])
            .kill_on_drop(true)
            .status(),
    )
    .await;
    check().await
}

#[tokio::test]
async fn grpc_through_the_gateway_to_an_h2c_server() -> anyhow::Result<()> {
    if !have_grpcio().await {
        anyhow::ensure!(
            std::env::var_os("CI").is_none(),
            "python3 with grpcio is needed"
        );
        eprintln!("skipped: python3 with grpcio is not available");
        return Ok(());
    }
    let dir = TempDir::new("ferry-gw-grpc-")?;
    let server_py = write_file(dir.path(), "server.py", SERVER)?;
    let client_py = write_file(dir.path(), "client.py", CLIENT)?;
    let mut upstream = tokio::process::Command::new("python3")
        .arg(&server_py)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = upstream
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(p) = line.strip_prefix("PORT ") {
                return Ok(p.trim().parse::<u16>()?);
            }
        }
        anyhow::bail!("grpc server ended without a port")
    })
    .await??;

    let pki = TestPki::new()?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        &format!(
            r#"
[[gateway.routes]]
path = "/ferry.Test"
upstream = "grpc"

[gateway.upstreams.grpc]
servers = [{{ url = "h2c://127.0.0.1:{port}" }}]
"#
        ),
    )?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .tls(pki.cert_path(), pki.key_path())
            .config(&config),
    )
    .await?;
    let target = server.url().replace("https://127.0.0.1", "localhost");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .arg(&client_py)
            .arg(&target)
            .arg(pki.ca_path())
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SAY hello ferry kept"), "{stdout}");
    assert!(stdout.contains("FAIL NOT_FOUND no such thing"), "{stdout}");
    assert!(stdout.contains("STREAM msg 0,msg 1,msg 2"), "{stdout}");
    let _ = upstream.kill().await;
    Ok(())
}
