//! `ferry` processes: a server, tenant creation, a connector; their output captured into a buffer a test can wait on.

use crate::{within, READY_TIMEOUT};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Captured stdout and stderr of a process (interleaved by line, each line prefixed by nothing), plus a change
/// signal so a test can wait for a line without sleeping.
#[derive(Clone)]
pub struct Output {
    name: Arc<str>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    changed: Arc<watch::Sender<u64>>,
    /// How many of the two streams (stdout, stderr) have ended.
    ended: Arc<std::sync::atomic::AtomicUsize>,
    echo: bool,
}

impl Output {
    /// An output no process writes to (yet).
    pub(crate) fn detached(name: &str) -> Self {
        Self::new(name)
    }

    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            stdout: Arc::default(),
            stderr: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
            ended: Arc::default(),
            echo: std::env::var_os("FERRY_TEST_ECHO_LOGS").is_some(),
        }
    }

    fn attach(&self, reader: impl AsyncRead + Unpin + Send + 'static, is_stdout: bool) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if this.echo {
                    eprintln!("[{}] {line}", this.name);
                }
                let buf = if is_stdout {
                    &this.stdout
                } else {
                    &this.stderr
                };
                if let Ok(mut b) = buf.lock() {
                    b.push_str(&line);
                    b.push('\n');
                }
                this.changed.send_modify(|v| *v += 1);
            }
            // mark the stream's end too, so waiters re-check
            this.ended.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            this.changed.send_modify(|v| *v += 1);
        });
    }

    /// Wait (at most `timeout`) until both output streams have ended: everything a process that exited printed
    /// has then been read (its exit and the readers' last reads race, notably on a loaded machine).
    pub async fn wait_closed(&self, timeout: Duration) {
        let mut rx = self.changed.subscribe();
        let _ = tokio::time::timeout(timeout, async {
            while self.ended.load(std::sync::atomic::Ordering::SeqCst) < 2 {
                rx.borrow_and_update();
                if self.ended.load(std::sync::atomic::Ordering::SeqCst) >= 2
                    || rx.changed().await.is_err()
                {
                    break;
                }
            }
        })
        .await;
    }

    /// Everything printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Everything printed on stderr so far (the logs).
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Whether stderr contains `needle` now.
    pub fn stderr_contains(&self, needle: &str) -> bool {
        self.stderr().contains(needle)
    }

    /// How many stderr lines contain `needle` now.
    pub fn stderr_count(&self, needle: &str) -> usize {
        self.stderr().lines().filter(|l| l.contains(needle)).count()
    }

    /// Wait until `pred(stdout, stderr)` returns `Some`, at most `timeout`.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&str, &str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let mut rx = self.changed.subscribe();
        let waited = within(timeout, what, async {
            loop {
                rx.borrow_and_update();
                if let Some(v) = pred(&self.stdout(), &self.stderr()) {
                    return Ok(v);
                }
                if rx.changed().await.is_err() {
                    anyhow::bail!("output of {} closed", self.name);
                }
            }
        })
        .await;
        match waited {
            Ok(r) => r,
            Err(e) => Err(e.context(format!("{}\n{}", self.name, self.tail(40)))),
        }
    }

    /// Wait until stderr contains `needle` at least `count` times (lines).
    pub async fn wait_stderr_count(
        &self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.wait_for(
            timeout,
            &format!("{count} x {needle:?} on stderr"),
            |_, err| (err.lines().filter(|l| l.contains(needle)).count() >= count).then_some(()),
        )
        .await
    }

    /// Wait until stderr contains `needle`.
    pub async fn wait_stderr(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        self.wait_stderr_count(needle, 1, timeout).await
    }

    /// The last `n` lines of stdout and stderr, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let tail = |s: String| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr (last {n} lines) ---\n{}",
            self.name,
            tail(self.stdout()),
            self.name,
            tail(self.stderr())
        )
    }
}

/// The standard proxy variables (curl's), upper and lower case.
const PROXY_VARIABLES: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

pub(crate) fn spawn(
    bin: &Path,
    args: &[String],
    env: &[(String, String)],
    name: &str,
) -> anyhow::Result<(Child, Output)> {
    let mut cmd = Command::new(bin);
    cmd.args(args).env_remove("RUST_LOG");
    // A proxy set in the environment running the tests must not reroute the processes' loopback traffic; the
    // proxy tests set their own (tests/proxy.rs).
    for var in PROXY_VARIABLES {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting {} {args:?}: {e}", bin.display()))?;
    let output = Output::new(name);
    if let Some(out) = child.stdout.take() {
        output.attach(out, true);
    }
    if let Some(err) = child.stderr.take() {
        output.attach(err, false);
    }
    Ok((child, output))
}

/// Send SIGTERM to a process (with the `kill` command, so the kit needs no unsafe code).
pub fn sigterm_pid(pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .map_err(|e| anyhow::anyhow!("running kill: {e}"))?;
    anyhow::ensure!(status.success(), "kill -TERM {pid}: {status}");
    Ok(())
}

async fn wait_child(
    child: &mut Child,
    output: &Output,
    timeout: Duration,
) -> anyhow::Result<ExitStatus> {
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => {
            let status = status?;
            // the last lines the process printed before it exited may still be in the pipes: a test that checks
            // the log right after the exit must see them (a connector's "tunnel drained" was missed on a loaded
            // machine)
            output.wait_closed(Duration::from_secs(5)).await;
            Ok(status)
        }
        Err(_) => anyhow::bail!(
            "process did not exit within {timeout:?}\n{}",
            output.tail(40)
        ),
    }
}

fn dump_on_panic(output: &Output) {
    if std::thread::panicking() {
        eprintln!("{}", output.tail(60));
    }
}

/// TLS files for a server.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Extra environment (`FERRY_CONNECTOR_WAIT`, …).
    pub env: Vec<(String, String)>,
    /// Extra arguments after `serve --listen 127.0.0.1:0 --data-dir DIR`.
    pub args: Vec<String>,
    /// Serve HTTPS with these files.
    pub tls: Option<TlsFiles>,
    /// Use this data directory instead of a fresh temporary one.
    pub data_dir: Option<PathBuf>,
    /// Start without the admin listener (`FERRY_ADMIN_ENABLED=false`); by default it listens on `127.0.0.1:0`.
    pub no_admin: bool,
}

impl ServerOptions {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Run with `--config PATH`.
    pub fn config(self, path: &Path) -> Self {
        self.arg("--config").arg(&path.display().to_string())
    }

    pub fn tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls = Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
        });
        self
    }
}

/// A running `ferry serve`.
pub struct FerryServer {
    child: Child,
    output: Output,
    url: String,
    admin_url: Option<String>,
    pid: u32,
    data_dir: PathBuf,
    /// The server's `FERRY_DATABASE_URL`, if given: the CLI commands of the kit use the same store.
    database_url: Option<String>,
    bin: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
}

impl FerryServer {
    /// Start `ferry serve` on `127.0.0.1:0` (its admin listener too) and wait for its `ferry listening on URL`
    /// line, and its `ferry admin listening on URL` line unless [`ServerOptions::no_admin`].
    pub async fn start(bin: impl AsRef<Path>, opts: ServerOptions) -> anyhow::Result<Self> {
        let bin = bin.as_ref().to_path_buf();
        let (tempdir, data_dir) = match opts.data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::Builder::new().prefix("ferry-test-").tempdir()?;
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        let mut env = opts.env.clone();
        if opts.no_admin {
            env.push(("FERRY_ADMIN_ENABLED".into(), "false".into()));
        } else {
            args.extend(["--admin-listen".into(), "127.0.0.1:0".into()]);
        }
        if let Some(tls) = &opts.tls {
            args.extend([
                "--tls-cert".into(),
                tls.cert.display().to_string(),
                "--tls-key".into(),
                tls.key.display().to_string(),
            ]);
        }
        args.extend(opts.args.iter().cloned());
        let (mut child, output) = spawn(&bin, &args, &env, "ferry serve")?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow::anyhow!("server exited at once"))?;
        let started = tokio::select! {
            urls = output.wait_for(READY_TIMEOUT, "server listening lines", |out, _| {
                let public = out.lines().find_map(|l| l.trim().strip_prefix("ferry listening on ").map(|u| u.trim().to_owned()))?;
                if opts.no_admin {
                    return Some((public, None));
                }
                let admin = out.lines().find_map(|l| l.trim().strip_prefix("ferry admin listening on ").map(|u| u.trim().to_owned()))?;
                Some((public, Some(admin)))
            }) => urls,
            status = child.wait() => Err(anyhow::anyhow!("server exited before listening: {status:?}")),
        };
        let (url, admin_url) = match started {
            Ok(urls) => urls,
            Err(e) => {
                // a process that died: let the readers collect its last lines first
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(200), child.wait()).await
                {
                    output.wait_closed(Duration::from_secs(5)).await;
                }
                anyhow::bail!("{e:#}\n{}", output.tail(40));
            }
        };
        let database_url = opts
            .env
            .iter()
            .find(|(k, _)| k == "FERRY_DATABASE_URL")
            .map(|(_, v)| v.clone());
        Ok(Self {
            child,
            output,
            url,
            admin_url,
            pid,
            data_dir,
            database_url,
            bin,
            _tempdir: tempdir,
        })
    }

    /// The server's `FERRY_DATABASE_URL`, when it was started with one.
    pub fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    /// `http://127.0.0.1:PORT` (or `https://…`), without a trailing slash.
    pub fn url(&self) -> &str {
        self.url.trim_end_matches('/')
    }

    /// The admin listener's `http://127.0.0.1:PORT` (management API), unless started with `no_admin`.
    pub fn admin_url(&self) -> Option<&str> {
        self.admin_url.as_deref().map(|u| u.trim_end_matches('/'))
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> std::net::SocketAddr {
        let rest = self.url().split("://").nth(1).unwrap_or_default();
        rest.parse()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn output(&self) -> &Output {
        &self.output
    }

    pub fn stderr_contains(&self, needle: &str) -> bool {
        self.output.stderr_contains(needle)
    }

    /// What follows `ferry also listening on ` on each stdout line so far, in order: the URLs (scheme included)
    /// of the listeners beyond the main one.
    pub fn extra_listeners(&self) -> Vec<String> {
        self.output
            .stdout()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("ferry also listening on "))
            .map(|u| u.trim().to_owned())
            .collect()
    }

    /// Create an admin key in this server's data directory (`ferry admin-key create`); returns the key.
    pub async fn create_admin_key(&self, name: &str) -> anyhow::Result<String> {
        let data_dir = self.data_dir.display().to_string();
        let out = run_ferry(
            &self.bin,
            &["admin-key", "create", name, "--data-dir", &data_dir],
            &[],
        )
        .await?;
        anyhow::ensure!(
            out.status.success(),
            "ferry admin-key create: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Create a tenant in this server's data directory; returns its connector secret.
    pub async fn create_tenant(&self, name: &str) -> anyhow::Result<String> {
        create_tenant_in(&self.bin, &self.data_dir, self.database_url(), name).await
    }

    pub fn sigterm(&self) -> anyhow::Result<()> {
        sigterm_pid(self.pid)
    }

    /// Wait for the process to exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        wait_child(&mut self.child, &self.output, timeout).await
    }

    /// Kill the process now (SIGKILL) and reap it.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

impl Drop for FerryServer {
    fn drop(&mut self) {
        dump_on_panic(&self.output);
    }
}

/// Run `ferry ARGS…` to completion (bounded by the kit's ready timeout) with extra `env`; `FERRY_API_URL` and
/// `FERRY_API_KEY` are removed from the inherited environment so that only `env` sets them.
pub async fn run_ferry(
    bin: impl AsRef<Path>,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<std::process::Output> {
    let mut cmd = Command::new(bin.as_ref());
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("FERRY_API_URL")
        .env_remove("FERRY_API_KEY")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let what = format!("ferry {}", args.join(" "));
    Ok(within(READY_TIMEOUT, &what, cmd.output()).await??)
}

/// Run `ferry tenant create NAME --data-dir DIR`; returns the secret it prints.
pub async fn create_tenant(
    bin: impl AsRef<Path>,
    data_dir: &Path,
    name: &str,
) -> anyhow::Result<String> {
    create_tenant_in(bin, data_dir, None, name).await
}

/// [`create_tenant`] in the store of `database_url` when given (else the data directory's SQLite file).
pub async fn create_tenant_in(
    bin: impl AsRef<Path>,
    data_dir: &Path,
    database_url: Option<&str>,
    name: &str,
) -> anyhow::Result<String> {
    let mut cmd = Command::new(bin.as_ref());
    // `--create`: this helper also makes tenants in a data directory no node has opened yet
    cmd.args(["tenant", "create", name, "--create", "--data-dir"])
        .arg(data_dir)
        .env_remove("FERRY_DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(url) = database_url {
        cmd.env("FERRY_DATABASE_URL", url);
    }
    let out = within(READY_TIMEOUT, "ferry tenant create", cmd.output()).await??;
    anyhow::ensure!(
        out.status.success(),
        "ferry tenant create {name}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    anyhow::ensure!(
        lines.len() == 1,
        "ferry tenant create should print the secret alone on one line, printed {stdout:?}"
    );
    Ok(lines[0].to_owned())
}

/// How to start a connector, beyond server, tenant, secret and targets.
#[derive(Debug, Clone, Default)]
pub struct ConnectorOptions {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Do not wait for `tunnel established` (for connectors expected to fail).
    pub no_wait: bool,
    /// `--tunnels N`. Unset: 1, so that each `tunnel established` a test counts is a reconnect; `Some(0)` is the
    /// connector's own default (one per CPU).
    pub tunnels: Option<u32>,
}

impl ConnectorOptions {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Run with `--config PATH`.
    pub fn config(self, path: &Path) -> Self {
        self.arg("--config").arg(&path.display().to_string())
    }

    /// `--preserve-host NAME`.
    pub fn preserve_host(self, target: &str) -> Self {
        self.arg("--preserve-host").arg(target)
    }

    /// `--tunnels N` (0: the connector's default) instead of the tests' 1.
    pub fn tunnels(mut self, n: u32) -> Self {
        self.tunnels = Some(n);
        self
    }
}

/// The log line a connector prints each time a tunnel opens.
pub const TUNNEL_ESTABLISHED: &str = "tunnel established";

/// A running `ferry connector`.
pub struct Connector {
    child: Child,
    output: Output,
    pid: u32,
}

impl Connector {
    /// Start `ferry connector --server URL --tenant T --secret S --target NAME=URL…` and wait for its first
    /// `tunnel established`.
    pub async fn start(
        bin: impl AsRef<Path>,
        server_url: &str,
        tenant: &str,
        secret: &str,
        targets: &[(&str, &str)],
        opts: ConnectorOptions,
    ) -> anyhow::Result<Self> {
        let mut args: Vec<String> = vec![
            "connector".into(),
            "--server".into(),
            server_url.into(),
            "--tenant".into(),
            tenant.into(),
            "--secret".into(),
            secret.into(),
        ];
        for (name, url) in targets {
            args.push("--target".into());
            args.push(format!("{name}={url}"));
        }
        args.push("--tunnels".into());
        args.push(opts.tunnels.unwrap_or(1).to_string());
        args.extend(opts.args.iter().cloned());
        let (mut child, output) = spawn(bin.as_ref(), &args, &opts.env, "ferry connector")?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow::anyhow!("connector exited at once"))?;
        if !opts.no_wait {
            let up = tokio::select! {
                r = output.wait_stderr(TUNNEL_ESTABLISHED, READY_TIMEOUT) => r,
                status = child.wait() => Err(anyhow::anyhow!("connector exited before its tunnel was up: {status:?}")),
            };
            if let Err(e) = up {
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(200), child.wait()).await
                {
                    output.wait_closed(Duration::from_secs(5)).await;
                }
                anyhow::bail!("{e:#}\n{}", output.tail(40));
            }
        }
        Ok(Self { child, output, pid })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn output(&self) -> &Output {
        &self.output
    }

    pub fn stderr_contains(&self, needle: &str) -> bool {
        self.output.stderr_contains(needle)
    }

    /// Wait until `tunnel established` has been logged `count` times in all.
    pub async fn wait_tunnels(&self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        self.output
            .wait_stderr_count(TUNNEL_ESTABLISHED, count, timeout)
            .await
    }

    pub fn sigterm(&self) -> anyhow::Result<()> {
        sigterm_pid(self.pid)
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        wait_child(&mut self.child, &self.output, timeout).await
    }

    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        dump_on_panic(&self.output);
    }
}

/// A server, one tenant and one connector serving some targets: the quick-start shape most tests need.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub server: ServerOptions,
    pub connector: ConnectorOptions,
    pub tenant: String,
    /// `(name, url)` pairs given to the connector.
    pub targets: Vec<(String, String)>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            server: ServerOptions::default(),
            connector: ConnectorOptions::default(),
            tenant: "demo".into(),
            targets: Vec::new(),
        }
    }
}

impl StackOptions {
    pub fn target(mut self, name: &str, url: &str) -> Self {
        self.targets.push((name.to_owned(), url.to_owned()));
        self
    }

    pub fn server_env(mut self, key: &str, value: &str) -> Self {
        self.server = self.server.env(key, value);
        self
    }

    pub fn server_arg(mut self, arg: &str) -> Self {
        self.server = self.server.arg(arg);
        self
    }

    /// The server runs with `--config PATH` ([`ServerOptions::config`]).
    pub fn server_config(mut self, path: &Path) -> Self {
        self.server = self.server.config(path);
        self
    }

    pub fn connector_env(mut self, key: &str, value: &str) -> Self {
        self.connector = self.connector.env(key, value);
        self
    }

    pub fn connector_arg(mut self, arg: &str) -> Self {
        self.connector = self.connector.arg(arg);
        self
    }
}

/// See [`StackOptions`]. Fields are public so a test can stop, signal or measure each process.
pub struct Stack {
    pub server: FerryServer,
    pub connector: Connector,
    pub tenant: String,
    pub secret: String,
}

impl Stack {
    /// An echo target and a stack whose connector serves it as target `app`; `opts` adjusts the stack.
    pub async fn with_echo(
        bin: impl AsRef<Path>,
        opts: impl FnOnce(StackOptions) -> StackOptions,
    ) -> anyhow::Result<(crate::TargetServer, Self)> {
        let echo = crate::TargetServer::start(crate::TargetKind::Echo).await?;
        let stack = Self::start(
            bin,
            opts(StackOptions::default().target("app", &echo.url())),
        )
        .await?;
        Ok((echo, stack))
    }

    pub async fn start(bin: impl AsRef<Path>, opts: StackOptions) -> anyhow::Result<Self> {
        let bin = bin.as_ref();
        let server = FerryServer::start(bin, opts.server).await?;
        let secret = server.create_tenant(&opts.tenant).await?;
        let targets: Vec<(&str, &str)> = opts
            .targets
            .iter()
            .map(|(n, u)| (n.as_str(), u.as_str()))
            .collect();
        let connector = Connector::start(
            bin,
            server.url(),
            &opts.tenant,
            &secret,
            &targets,
            opts.connector,
        )
        .await?;
        Ok(Self {
            server,
            connector,
            tenant: opts.tenant,
            secret,
        })
    }

    /// `{server}/relay/{tenant}/{target}{rest}`; `rest` should start with `/` (or be empty).
    pub fn relay_url(&self, target: &str, rest: &str) -> String {
        crate::relay_url(self.server.url(), &self.tenant, target, rest)
    }
}
