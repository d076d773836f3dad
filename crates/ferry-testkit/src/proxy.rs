//! Real forward proxies from Debian's packages, started per test on `127.0.0.1` with a port of their own:
//! tinyproxy (with or without Basic authentication) and squid built with OpenSSL in three setups: refusing
//! `CONNECT` to anything but port 443 (but forwarding plain HTTP and WebSocket upgrades, and stripping any other
//! `Upgrade`), inspecting TLS with a CA of its own (`ssl_bump`), and reached over TLS itself (`https_port`).
//!
//! The proxies are installed by `scripts/forward-proxy/ensure.sh` (apt-get, as root) the first time a test asks.
//! When they cannot be installed or started, [`ForwardProxy::start`] answers `Ok(None)` after printing
//! `skipped: …`, or an error when `CI` is set.

use crate::process::{spawn, Output};
use crate::{eventually, READY_TIMEOUT};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::process::Child;

/// Which proxy, configured how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyKind {
    /// tinyproxy allowing `CONNECT` to any port; with `Some((user, password))`, Basic authentication required;
    /// connections idle for `idle_timeout_secs` are closed (tinyproxy's `Timeout`, 600 by default).
    Tinyproxy {
        auth: Option<(String, String)>,
        idle_timeout_secs: Option<u32>,
    },
    /// squid as a locked-down corporate proxy: `CONNECT` only to port 443 (403 otherwise), plain HTTP forwarded,
    /// `Upgrade: websocket` passed (`http_upgrade_request_protocols`), any other `Upgrade` header stripped.
    SquidWebSocketOnly,
    /// squid as a TLS-inspecting corporate proxy (`ssl_bump`): it accepts `CONNECT`, ends the client's TLS itself
    /// with a certificate it makes up for the site (a copy of the site's names) signed by the inspecting CA
    /// (`ca_cert`, `ca_key`), and opens its own TLS to the site trusting `site_ca`. Inside, like
    /// [`Self::SquidWebSocketOnly`], it passes `Upgrade: websocket` and strips any other `Upgrade`.
    SquidTlsInspecting {
        ca_cert: PathBuf,
        ca_key: PathBuf,
        site_ca: PathBuf,
    },
    /// squid reached over TLS (an `https://` proxy URL: [`ForwardProxy::url`]) with the certificate and key
    /// given (for `127.0.0.1`); `CONNECT` to any port.
    SquidOverTls { cert: PathBuf, key: PathBuf },
}

/// The installed proxies: tinyproxy, squid, and squid's certificate maker for inspected sites.
#[derive(Debug, Clone)]
struct Tools {
    tinyproxy: PathBuf,
    squid: PathBuf,
    certgen: PathBuf,
}

/// The installed proxies' paths, found (or installed) once per test process.
fn tools() -> &'static Result<Tools, String> {
    static TOOLS: OnceLock<Result<Tools, String>> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/forward-proxy/ensure.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}): {}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let find = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .map(PathBuf::from)
                .ok_or_else(|| format!("{} did not print {name}=PATH", script.display()))
        };
        Ok(Tools {
            tinyproxy: find("tinyproxy")?,
            squid: find("squid")?,
            certgen: find("certgen")?,
        })
    })
}

/// A free port on 127.0.0.1 (bound and released: the proxy binds it right after).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A running forward proxy; killed when dropped.
pub struct ForwardProxy {
    kind: ProxyKind,
    port: u16,
    dir: tempfile::TempDir,
    tools: Tools,
    child: Option<Child>,
    output: Output,
}

impl ForwardProxy {
    /// Install (if needed) and start a proxy of `kind`; `Ok(None)` after printing `skipped: …` when that cannot
    /// be done outside CI.
    pub async fn start(kind: ProxyKind) -> anyhow::Result<Option<Self>> {
        let tools = match tools() {
            Ok(tools) => tools.clone(),
            Err(why) => return unavailable(why),
        };
        let dir = tempfile::Builder::new().prefix("ferry-proxy-").tempdir()?;
        // squid started as root runs as the `proxy` user: its logs and pid file must be writable for it, and
        // the certificates and keys it uses readable (copied here: a test's own temporary directories are not).
        set_mode_777(dir.path())?;
        let copy = |from: &Path, name: &str| -> anyhow::Result<()> {
            let to = dir.path().join(name);
            std::fs::copy(from, &to)?;
            set_mode_777(&to)
        };
        match &kind {
            ProxyKind::SquidTlsInspecting {
                ca_cert,
                ca_key,
                site_ca,
            } => {
                copy(ca_cert, "inspecting-ca.pem")?;
                copy(ca_key, "inspecting-ca-key.pem")?;
                copy(site_ca, "site-ca.pem")?;
                // The database of certificates squid makes up, created once per proxy.
                let db = dir.path().join("ssl_db");
                let out = std::process::Command::new(&tools.certgen)
                    .args(["-c", "-s"])
                    .arg(&db)
                    .args(["-M", "4MB"])
                    .output()?;
                if !out.status.success() {
                    return unavailable(&format!(
                        "{} -c failed: {}",
                        tools.certgen.display(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                set_mode_777_all(&db)?;
            }
            ProxyKind::SquidOverTls { cert, key } => {
                copy(cert, "proxy.pem")?;
                copy(key, "proxy-key.pem")?;
            }
            _ => {}
        }
        let port = free_port()?;
        let mut proxy = Self {
            kind,
            port,
            dir,
            tools,
            child: None,
            output: Output::detached("proxy"),
        };
        match proxy.launch().await {
            Ok(()) => Ok(Some(proxy)),
            Err(e) => unavailable(&format!("{e:#}")),
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` for [`ProxyKind::SquidOverTls`]).
    pub fn url(&self) -> String {
        let scheme = match self.kind {
            ProxyKind::SquidOverTls { .. } => "https",
            _ => "http",
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `http://user:password@127.0.0.1:PORT` with the credentials given.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// The proxy's own output (tinyproxy logs there; squid's logs are in its directory, see [`Self::log`]).
    pub fn output(&self) -> &Output {
        &self.output
    }

    /// squid's access log, or tinyproxy's output.
    pub fn log(&self) -> String {
        match self.kind {
            ProxyKind::Tinyproxy { .. } => self.output.stderr() + &self.output.stdout(),
            _ => std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default(),
        }
    }

    /// Kill the proxy (every connection through it drops).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
        // squid leaves its pid file; a new squid refuses to start while it names a live process only.
        let _ = std::fs::remove_file(self.dir.path().join("squid.pid"));
        Ok(())
    }

    /// Start the proxy again on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.launch().await
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let config = self.dir.path().join("proxy.conf");
        std::fs::write(&config, self.config())?;
        set_mode_777(&config)?;
        let config = config.display().to_string();
        let (bin, args, name): (&Path, Vec<String>, &str) = match self.kind {
            ProxyKind::Tinyproxy { .. } => (
                &self.tools.tinyproxy,
                vec!["-d".into(), "-c".into(), config],
                "tinyproxy",
            ),
            _ => (
                &self.tools.squid,
                vec!["-N".into(), "-f".into(), config],
                "squid",
            ),
        };
        let (mut child, output) = spawn(bin, &args, &[], name)?;
        let addr = format!("127.0.0.1:{}", self.port);
        // Ready when it accepts connections (bounded poll); an early exit is reported with its output.
        let ready = tokio::select! {
            r = eventually(READY_TIMEOUT, || {
                let addr = addr.clone();
                async move { Ok(tokio::net::TcpStream::connect(&addr).await.map(drop)?) }
            }) => r,
            status = child.wait() => Err(anyhow::anyhow!("{name} exited at start: {status:?}")),
        };
        if let Err(e) = ready {
            output.wait_closed(Duration::from_secs(2)).await;
            let cache_log =
                std::fs::read_to_string(self.dir.path().join("cache.log")).unwrap_or_default();
            anyhow::bail!(
                "{name} did not start: {e:#}\n{}\n{cache_log}",
                output.tail(20)
            );
        }
        self.child = Some(child);
        self.output = output;
        Ok(())
    }

    fn config(&self) -> String {
        let dir = self.dir.path().display();
        let port = self.port;
        match &self.kind {
            ProxyKind::Tinyproxy {
                auth,
                idle_timeout_secs,
            } => {
                let timeout = idle_timeout_secs.unwrap_or(600);
                let mut c = format!(
                    "Port {port}\nListen 127.0.0.1\nTimeout {timeout}\nMaxClients 100\nAllow 127.0.0.1\n\
                     LogLevel Connect\n"
                );
                if let Some((user, password)) = auth {
                    c.push_str(&format!("BasicAuth {user} {password}\n"));
                }
                c
            }
            ProxyKind::SquidWebSocketOnly => format!(
                "http_port 127.0.0.1:{port}\n\
                 {common}\
                 acl SSL_ports port 443\n\
                 acl CONNECT method CONNECT\n\
                 http_upgrade_request_protocols websocket allow all\n\
                 http_access deny CONNECT !SSL_ports\n\
                 http_access allow localhost\n\
                 http_access deny all\n",
                common = squid_common(&dir.to_string())
            ),
            ProxyKind::SquidTlsInspecting { .. } => format!(
                "http_port 127.0.0.1:{port} ssl-bump tls-cert={dir}/inspecting-ca.pem \
                 tls-key={dir}/inspecting-ca-key.pem generate-host-certificates=on \
                 dynamic_cert_mem_cache_size=4MB\n\
                 sslcrtd_program {certgen} -s {dir}/ssl_db -M 4MB\n\
                 sslcrtd_children 2 startup=1 idle=1\n\
                 tls_outgoing_options cafile={dir}/site-ca.pem\n\
                 acl step1 at_step SslBump1\n\
                 ssl_bump peek step1\n\
                 ssl_bump bump all\n\
                 {common}\
                 http_upgrade_request_protocols websocket allow all\n\
                 http_access allow localhost\n\
                 http_access deny all\n",
                certgen = self.tools.certgen.display(),
                common = squid_common(&dir.to_string())
            ),
            ProxyKind::SquidOverTls { .. } => format!(
                "https_port 127.0.0.1:{port} tls-cert={dir}/proxy.pem tls-key={dir}/proxy-key.pem\n\
                 {common}\
                 http_access allow localhost\n\
                 http_access deny all\n",
                common = squid_common(&dir.to_string())
            ),
        }
    }
}

/// The squid settings every setup shares: files in `dir`, no cache, quick shutdown.
fn squid_common(dir: &str) -> String {
    format!(
        "pid_filename {dir}/squid.pid\n\
                 cache_log {dir}/cache.log\n\
                 access_log stdio:{dir}/access.log\n\
                 coredump_dir {dir}\n\
                 cache deny all\n\
                 cache_mem 8 MB\n\
                 pinger_enable off\n\
                 shutdown_lifetime 0 seconds\n"
    )
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// `path` and everything under it, readable and writable by all.
fn set_mode_777_all(path: &Path) -> anyhow::Result<()> {
    set_mode_777(path)?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            set_mode_777_all(&entry?.path())?;
        }
    }
    Ok(())
}

fn set_mode_777(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    Ok(())
}

/// The proxies cannot be had: an error under `CI`, else `Ok(None)` after printing `skipped: …`.
fn unavailable<T>(why: &str) -> anyhow::Result<Option<T>> {
    if std::env::var_os("CI").is_some() {
        anyhow::bail!("forward proxy unavailable under CI: {why}");
    }
    eprintln!("skipped: forward proxy unavailable: {why}");
    Ok(None)
}
