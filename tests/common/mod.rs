//! Helpers shared by `relay_failover`, `relay_lifecycle` and `relay_auth_tls` that the test kit does not offer:
//! a process runner for a server on a fixed address (restart on the same port), a target that names itself and
//! can delay its head or its body, a TCP proxy that can blackhole traffic without closing, a loopback address
//! whose connects hang, config files, base64url, and parsing of logged durations.
//!
//! Every wait is bounded; readiness is a log line or a bounded poll, never a sleep.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;

pub const BIN: &str = env!("CARGO_BIN_EXE_ferry");

// ---------------------------------------------------------------------------------------------------------------
// Processes started outside the kit (the kit always listens on port 0; a restart needs a fixed port).
// ---------------------------------------------------------------------------------------------------------------

/// Captured stderr/stdout of a process with a change signal.
#[derive(Clone)]
pub struct Logs {
    name: Arc<str>,
    text: Arc<Mutex<(String, String)>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Logs {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            text: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }

    fn attach(&self, reader: impl AsyncRead + Unpin + Send + 'static, is_stdout: bool) {
        let this = self.clone();
        let echo = std::env::var_os("FERRY_TEST_ECHO_LOGS").is_some();
        tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if echo {
                    eprintln!("[{}] {line}", this.name);
                }
                if let Ok(mut t) = this.text.lock() {
                    let buf = if is_stdout { &mut t.0 } else { &mut t.1 };
                    buf.push_str(&line);
                    buf.push('\n');
                }
                this.changed.send_modify(|v| *v += 1);
            }
            this.changed.send_modify(|v| *v += 1);
        });
    }

    pub fn stdout(&self) -> String {
        self.text.lock().map(|t| t.0.clone()).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        self.text.lock().map(|t| t.1.clone()).unwrap_or_default()
    }

    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&str, &str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let mut rx = self.changed.subscribe();
        let r = tokio::time::timeout(timeout, async {
            loop {
                rx.borrow_and_update();
                if let Some(v) = pred(&self.stdout(), &self.stderr()) {
                    return Some(v);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match r {
            Ok(Some(v)) => Ok(v),
            _ => anyhow::bail!("{what}: not seen within {timeout:?}\n{}", self.tail(40)),
        }
    }

    pub fn tail(&self, n: usize) -> String {
        let tail = |s: String| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            tail(self.stdout()),
            self.name,
            tail(self.stderr())
        )
    }
}

/// A `ferry` process started by these tests.
pub struct Proc {
    pub child: Child,
    pub logs: Logs,
    pub pid: u32,
}

impl Proc {
    pub fn spawn(args: &[String], env: &[(&str, &str)], name: &str) -> anyhow::Result<Self> {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow::anyhow!("{name} exited at once"))?;
        let logs = Logs::new(name);
        if let Some(o) = child.stdout.take() {
            logs.attach(o, true);
        }
        if let Some(e) = child.stderr.take() {
            logs.attach(e, false);
        }
        Ok(Self { child, logs, pid })
    }

    pub fn sigterm(&self) -> anyhow::Result<()> {
        ferry_testkit::process::sigterm_pid(self.pid)
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(s) => Ok(s?),
            Err(_) => anyhow::bail!(
                "process did not exit within {timeout:?}\n{}",
                self.logs.tail(40)
            ),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs.tail(60));
        }
    }
}

/// Start `ferry serve --listen ADDR --data-dir DIR`, retrying briefly (bounded) while the port is still taken
/// by a process that just died.
pub async fn serve_on(
    addr: SocketAddr,
    data_dir: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<Proc> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        addr.to_string(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        // The admin listener's default (127.0.0.1:8081) could be taken; an OS-chosen port never is.
        "--admin-listen".into(),
        "127.0.0.1:0".into(),
    ];
    loop {
        let mut p = Proc::spawn(&args, env, "ferry serve (restarted)")?;
        let started = tokio::select! {
            r = p.logs.wait_for(Duration::from_secs(20), "listening line", |out, _| {
                out.lines().find(|l| l.starts_with("ferry listening on ")).map(|_| ())
            }) => r.map(|_| None),
            status = p.child.wait() => Ok(Some(status)),
        };
        match started {
            Ok(None) => return Ok(p),
            Ok(Some(status)) if Instant::now() < deadline => {
                // give the readers a moment to collect the last lines; then retry (bounded by `deadline`)
                let _ = tokio::time::timeout(
                    Duration::from_millis(200),
                    p.logs
                        .wait_for(Duration::from_millis(200), "exit message", |_, e| {
                            (!e.is_empty()).then_some(())
                        }),
                )
                .await;
                eprintln!(
                    "restart on {addr} failed ({status:?}), retrying: {}",
                    p.logs.stderr().trim()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Some(status)) => anyhow::bail!(
                "server did not start on {addr}: {status:?}\n{}",
                p.logs.tail(20)
            ),
            Err(e) => return Err(e),
        }
    }
}

/// Start a node whose config file is `text`, written to `dir/ferry.toml` (`ferry serve --config …`).
pub async fn start_with_config(
    dir: &Path,
    text: &str,
) -> anyhow::Result<ferry_testkit::FerryServer> {
    let config = write_file(dir, "ferry.toml", text)?;
    ferry_testkit::FerryServer::start(BIN, ferry_testkit::ServerOptions::default().config(&config))
        .await
}

/// Write `text` to `dir/name` and return the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p)
}

// ---------------------------------------------------------------------------------------------------------------
// A target that names itself.
// ---------------------------------------------------------------------------------------------------------------

/// An HTTP/1.1 target (keep-alive, GET without body) that answers `200` with a body naming itself and the
/// request's `id` query parameter. `head_ms=N` delays the response head; `body_ms=N` sends the head and the first
/// half of the body at once and the second half after N ms. Records the ids it received.
pub struct NamedTarget {
    pub name: String,
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

/// The body a [`NamedTarget`] called `name` answers for request `id`.
pub fn named_body(name: &str, id: u64) -> String {
    let mut body = format!("{name} {id}\n");
    body.push_str(&"x".repeat(2000));
    body.push('\n');
    body
}

fn query_params(target: &str) -> HashMap<String, String> {
    target
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

impl NamedTarget {
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
        let task = {
            let seen = seen.clone();
            let name = name.to_owned();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let seen = seen.clone();
                    let name = name.clone();
                    tokio::spawn(async move {
                        let _ = serve_named(stream, &name, &seen).await;
                    });
                }
            })
        };
        Ok(Self {
            name: name.to_owned(),
            addr,
            seen,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Ids of the requests received so far.
    pub fn seen(&self) -> Vec<u64> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for NamedTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_named(stream: TcpStream, name: &str, seen: &Mutex<Vec<u64>>) -> anyhow::Result<()> {
    let mut io = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if io.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            anyhow::ensure!(io.read_line(&mut line).await? > 0, "closed in head");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                if n.trim().eq_ignore_ascii_case("content-length") {
                    content_length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        if content_length > 0 {
            let mut body = vec![0u8; content_length];
            io.read_exact(&mut body).await?;
        }
        let target = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
        let q = query_params(&target);
        let num = |k: &str| q.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let id = num("id");
        if let Ok(mut s) = seen.lock() {
            s.push(id);
        }
        let (head_ms, body_ms) = (num("head_ms"), num("body_ms"));
        if head_ms > 0 {
            tokio::time::sleep(Duration::from_millis(head_ms)).await;
        }
        let body = named_body(name, id);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Target-Name: {name}\r\n\r\n",
            body.len()
        );
        let (first, second) = body.as_bytes().split_at(body.len() / 2);
        let s = io.get_mut();
        s.write_all(head.as_bytes()).await?;
        s.write_all(first).await?;
        s.flush().await?;
        if body_ms > 0 {
            tokio::time::sleep(Duration::from_millis(body_ms)).await;
        }
        s.write_all(second).await?;
        s.flush().await?;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A TCP proxy that can blackhole.
// ---------------------------------------------------------------------------------------------------------------

/// A TCP proxy on `127.0.0.1:0` towards `upstream`. While blackholed it forwards nothing in either direction
/// and closes nothing: connections open at that moment freeze for good, new ones are accepted and held. After
/// [`TcpProxy::forward`], new connections are forwarded again.
pub struct TcpProxy {
    addr: SocketAddr,
    blackhole: watch::Sender<bool>,
    /// Frozen sockets, kept open until the proxy is dropped.
    stash: Arc<Mutex<Vec<Box<dyn Send>>>>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (blackhole, _) = watch::channel(false);
        let stash: Arc<Mutex<Vec<Box<dyn Send>>>> = Arc::default();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = {
            let bh = blackhole.clone();
            let stash = stash.clone();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if *bh.borrow() {
                        if let Ok(mut s) = stash.lock() {
                            s.push(Box::new(client));
                        }
                        continue;
                    }
                    let bh_rx = bh.subscribe();
                    let stash = stash.clone();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        tokio::spawn(pipe(cr, sw, bh_rx.clone(), stash.clone()));
                        tokio::spawn(pipe(sr, cw, bh_rx, stash));
                    });
                }
            })
        };
        Ok(Self {
            addr,
            blackhole,
            stash,
            accepted,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop forwarding (both ways, every connection) without closing anything.
    pub fn blackhole(&self) {
        self.blackhole.send_replace(true);
    }

    /// Forward new connections again (frozen ones stay frozen).
    pub fn forward(&self) {
        self.blackhole.send_replace(false);
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(mut s) = self.stash.lock() {
            s.clear();
        }
    }
}

async fn pipe(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut bh: watch::Receiver<bool>,
    stash: Arc<Mutex<Vec<Box<dyn Send>>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // None: blackholed; Some(result): a read finished
        let read = tokio::select! {
            biased;
            _ = bh.wait_for(|b| *b) => None,
            n = rd.read(&mut buf) => Some(n),
        };
        let frozen = *bh.borrow();
        match read {
            None => {
                if let Ok(mut s) = stash.lock() {
                    s.push(Box::new((rd, wr)));
                }
                return;
            }
            Some(Ok(0)) | Some(Err(_)) => {
                let _ = wr.shutdown().await;
                return;
            }
            Some(Ok(n)) => {
                if frozen {
                    if let Ok(mut s) = stash.lock() {
                        s.push(Box::new((rd, wr)));
                    }
                    return;
                }
                if wr.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A loopback address whose TCP connects hang.
// ---------------------------------------------------------------------------------------------------------------

/// A listener with backlog 1 that never accepts, its queue filled: further connects get no SYN-ACK (Linux drops
/// SYNs for a full accept queue) and hang. Keep it alive as long as the address must hang.
pub struct HungAddr {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

impl HungAddr {
    /// `None` when connects to a full queue do not hang on this machine.
    pub async fn new() -> anyhow::Result<Option<Self>> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind("127.0.0.1:0".parse()?)?;
        let listener = socket.listen(1)?;
        let addr = listener.local_addr()?;
        let mut fillers = Vec::new();
        for _ in 0..16 {
            match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => fillers.push(s),
                Ok(Err(e)) => anyhow::bail!("connect to the backlog listener failed: {e}"),
                Err(_) => {
                    // the queue is full; check once more that a connect hangs for a good while
                    let hung =
                        tokio::time::timeout(Duration::from_millis(1500), TcpStream::connect(addr))
                            .await
                            .is_err();
                    return Ok(hung.then_some(Self {
                        addr,
                        _listener: listener,
                        _fillers: fillers,
                    }));
                }
            }
        }
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Small codecs.
// ---------------------------------------------------------------------------------------------------------------

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub fn b64url_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(B64URL[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

pub fn b64url_decode(s: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.trim_end_matches('=').bytes() {
        let v = B64URL
            .iter()
            .position(|x| *x == c)
            .ok_or_else(|| anyhow::anyhow!("not base64url: {c:?}"))? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// The three parts of a JWT: header JSON, payload JSON, signature (still encoded).
pub fn jwt_parts(token: &str) -> anyhow::Result<(serde_json::Value, serde_json::Value, String)> {
    let parts: Vec<&str> = token.split('.').collect();
    anyhow::ensure!(parts.len() == 3, "not a JWT: {token}");
    let header = serde_json::from_slice(&b64url_decode(parts[0])?)?;
    let payload = serde_json::from_slice(&b64url_decode(parts[1])?)?;
    Ok((header, payload, parts[2].to_owned()))
}

/// A JWT from parts (the signature is taken as given).
pub fn jwt_join(
    header: &serde_json::Value,
    payload: &serde_json::Value,
    signature: &str,
) -> String {
    format!(
        "{}.{}.{}",
        b64url_encode(header.to_string().as_bytes()),
        b64url_encode(payload.to_string().as_bytes()),
        signature
    )
}

/// A duration as `{:?}` prints it (`734.5ms`, `1.2s`, `950µs`, `12ns`).
pub fn parse_debug_duration(s: &str) -> Option<Duration> {
    let s = s.trim().trim_matches('"');
    let (num, mul) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("µs").or_else(|| s.strip_suffix("us")) {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix("ns") {
        (n, 1e-9)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    let v: f64 = num.parse().ok()?;
    Some(Duration::from_secs_f64(v * mul))
}

/// The `delay=…` field of a plain log line.
pub fn delay_field(line: &str) -> Option<Duration> {
    let i = line.find(" delay=")?;
    let rest = &line[i + " delay=".len()..];
    let v = rest.split_whitespace().next()?;
    parse_debug_duration(v)
}

// ---------------------------------------------------------------------------------------------------------------
// Tunnel handshake by hand.
// ---------------------------------------------------------------------------------------------------------------

/// The upgrade request a connector sends, with `token` (none: no Authorization) and extra header lines.
pub fn tunnel_upgrade_request(
    host: SocketAddr,
    token: Option<&str>,
    connector_id: &str,
    extra: &str,
) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "GET /_ferry/tunnel HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: ferry-tunnel/1\r\n{auth}\
         Ferry-Connector-Id: {connector_id}\r\nFerry-Targets: app\r\nFerry-Connector-Version: 0.1.0\r\n{extra}\r\n"
    )
}

/// The HTTP/2 server preface a connector sends after the 101: a SETTINGS frame with
/// SETTINGS_ENABLE_CONNECT_PROTOCOL (0x8) = 1.
pub const H2_SERVER_SETTINGS: [u8; 15] = [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 1];

// ---------------------------------------------------------------------------------------------------------------
// A temporary directory (the package has no tempfile dev-dependency).
// ---------------------------------------------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("{prefix}{}-{nanos}-{n}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A PostgreSQL database of its own for a test.
// ---------------------------------------------------------------------------------------------------------------

use sqlx::{Connection as _, Executor as _};

/// A fresh PostgreSQL database, dropped by [`PgDatabase::drop_now`].
pub struct PgDatabase {
    server: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    /// `None` (after printing `skipped: …`) when no server is reachable outside CI; an error under CI.
    pub async fn create() -> anyhow::Result<Option<Self>> {
        let server = std::env::var("FERRY_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let connected =
            tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&server))
                .await;
        let mut conn = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Self::unreachable(&e.to_string()),
            Err(_) => return Self::unreachable("timed out after 5s"),
        };
        let name = format!(
            "ferry_e2e_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await?;
        let _ = conn.close().await;
        let (base, query) = match server.split_once('?') {
            Some((b, q)) => (b.to_owned(), format!("?{q}")),
            None => (server.clone(), String::new()),
        };
        let base = base
            .rsplit_once('/')
            .map_or(base.as_str(), |(b, _)| b)
            .to_owned();
        let url = format!("{base}/{name}{query}");
        Ok(Some(Self { server, name, url }))
    }

    fn unreachable(why: &str) -> anyhow::Result<Option<Self>> {
        if std::env::var_os("CI").is_some() {
            anyhow::bail!("PostgreSQL is required under CI (FERRY_TEST_POSTGRES_URL): {why}");
        }
        eprintln!("skipped: PostgreSQL not reachable (FERRY_TEST_POSTGRES_URL): {why}");
        Ok(None)
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of the server's maintenance database (where this one was created from).
    pub fn server_url(&self) -> &str {
        &self.server
    }

    pub async fn drop_now(self) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.server).await?;
        conn.execute(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name).as_str())
            .await?;
        let _ = conn.close().await;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Steady client load while something changes (reload, an upstream killed).
// ---------------------------------------------------------------------------------------------------------------

/// `workers` clients sending `GET url` back to back until [`SteadyLoad::finish`], each for at most `per_worker`
/// requests and `max_time` (bounded both ways; choose bounds that outlast the test on a fast machine, or the
/// traffic stops before the test is done); every answer other than 200 is kept as a failure.
pub struct SteadyLoad {
    ok: Arc<std::sync::atomic::AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    workers: tokio::task::JoinSet<()>,
}

impl SteadyLoad {
    pub fn start(url: &str, workers: usize, per_worker: usize, max_time: Duration) -> Self {
        Self::start_with(
            ferry_testkit::http_client(),
            url,
            workers,
            per_worker,
            max_time,
        )
    }

    /// [`SteadyLoad::start`] with a client of the test's own (a CA to trust, a name to resolve).
    pub fn start_with(
        client: reqwest::Client,
        url: &str,
        workers: usize,
        per_worker: usize,
        max_time: Duration,
    ) -> Self {
        use std::sync::atomic::Ordering;
        let deadline = Instant::now() + max_time;
        let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let (client, url, ok, failed, stop) = (
                client.clone(),
                url.to_owned(),
                ok.clone(),
                failed.clone(),
                stop.clone(),
            );
            set.spawn(async move {
                for _ in 0..per_worker {
                    if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                        break;
                    }
                    let r = client
                        .get(&url)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    let failure = match r {
                        // the body is read to its end: over HTTP/2, reqwest's h2 counts every response dropped
                        // unread as a stream it reset, and past 1024 it closes the connection itself
                        // ("too_many_internal_resets", hyperium/h2#856)
                        Ok(r) if r.status() == 200 => match r.bytes().await {
                            Ok(_) => {
                                ok.fetch_add(1, Ordering::SeqCst);
                                continue;
                            }
                            Err(e) => format!("200, then the body failed: {e}"),
                        },
                        Ok(r) => {
                            let status = r.status();
                            format!("{status} {}", r.text().await.unwrap_or_default())
                        }
                        // with its causes: "error sending request" alone does not say what broke
                        Err(e) => {
                            let mut text = e.to_string();
                            let mut cause = std::error::Error::source(&e);
                            while let Some(c) = cause {
                                text.push_str(&format!(": {c}"));
                                cause = c.source();
                            }
                            text
                        }
                    };
                    if let Ok(mut f) = failed.lock() {
                        f.push(failure);
                    }
                }
            });
        }
        Self {
            ok,
            failed,
            stop,
            workers: set,
        }
    }

    /// Requests answered 200 so far.
    pub fn ok(&self) -> usize {
        self.ok.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stop the workers and wait for them; the failures seen.
    pub async fn finish(mut self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        while self.workers.join_next().await.is_some() {}
        self.failed.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

/// A port the OS chose, free right now: for what takes a fixed address (Prometheus's listen flag, a listener that a
/// reload must find again by its address).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
