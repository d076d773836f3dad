//! Reloading the gateway: the routes file (`gateway.file`), or without one the `[gateway]` section of the main
//! config file (read again with the start's layering: file, then `FERRY_*` variables, then flags). Both are
//! watched (SIGHUP, content changes) and swap the gateway's table atomically. A file that does not parse or
//! compile is refused with one error line naming the key, and the table in use stays.

use crate::{EdgeError, Gateway};
use ferry_config::{AccessLog, ConfigSource, GatewayConfig, GatewayTls};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the file's content is compared with the loaded one.
const POLL: Duration = Duration::from_secs(1);

/// The effective gateway config: `config` itself, or with `file` set, that file's content.
pub fn effective(config: &GatewayConfig) -> Result<GatewayConfig, EdgeError> {
    let Some(path) = &config.file else {
        return Ok(config.clone());
    };
    if !config.routes.is_empty()
        || !config.upstreams.is_empty()
        || !config.trusted_proxies.is_empty()
        || config.max_body_size.is_some()
    {
        return Err(EdgeError::Config {
            path: "gateway.file".into(),
            message:
                "with a routes file, routes, upstreams, trusted_proxies and max_body_size go in that file"
                    .into(),
        });
    }
    load_file(path).map(|(c, _)| c)
}

/// Read and parse a routes file; also returns its bytes (to notice changes).
fn load_file(path: &Path) -> Result<(GatewayConfig, Vec<u8>), EdgeError> {
    let err = |message: String| EdgeError::Config {
        path: path.display().to_string(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| err(e.to_string()))?;
    let config: GatewayConfig = toml::from_str(text).map_err(|e| err(e.to_string()))?;
    if config.file.is_some() {
        return Err(err("a routes file cannot name another file".into()));
    }
    if config.tls != GatewayTls::default() {
        return Err(err("tls settings belong in the main config file".into()));
    }
    if config.access_log != AccessLog::Off
        || config.access_log_file.is_some()
        || config.access_log_format.is_some()
    {
        return Err(err(
            "access_log, access_log_file and access_log_format belong in the main config file"
                .into(),
        ));
    }
    Ok((config, bytes))
}

/// Prepares new `[gateway.tls]` settings for the node's TLS listeners (every file read and checked) and returns
/// what puts them to use; an error refuses the whole reload.
pub type TlsReload =
    Box<dyn Fn(&GatewayTls) -> Result<Box<dyn FnOnce() + Send>, String> + Send + Sync>;

/// What a watcher reloads.
enum Watched {
    /// `gateway.file`: its whole content is the table.
    RoutesFile,
    /// The main config file: its `[gateway]` section, layered as at start; a change of `tls` goes to the
    /// listeners through the node's [`TlsReload`] (without one it needs a restart).
    MainConfig(Box<MainFile>),
}

/// The main config file as its watcher knows it.
struct MainFile {
    source: ConfigSource,
    /// The TLS settings in use, and how to change them.
    tls: std::sync::Mutex<GatewayTls>,
    tls_reload: Option<TlsReload>,
    /// The section in use: a change elsewhere in the file leaves the table (and its rate-limit buckets) alone.
    applied: std::sync::Mutex<GatewayConfig>,
    /// `[log]` as the node started with it (or as last reported): a change is not applied by a reload, and
    /// says so once.
    log: std::sync::Mutex<Option<ferry_config::LogSettings>>,
}

impl Watched {
    fn what(&self) -> &'static str {
        match self {
            Self::RoutesFile => "gateway routes file",
            Self::MainConfig(_) => "gateway section of the config file",
        }
    }

    /// Load and apply the file's current content; false when it left the gateway as it was.
    fn apply(&self, gateway: &Gateway, path: &Path) -> Result<bool, String> {
        match self {
            Self::RoutesFile => {
                let (config, _) = load_file(path).map_err(|e| e.to_string())?;
                gateway.reload(&config).map_err(|e| e.to_string())?;
                Ok(true)
            }
            Self::MainConfig(main) => {
                let MainFile {
                    source,
                    tls,
                    tls_reload,
                    applied,
                    log,
                } = &**main;
                let full = source.load().map_err(|e| e.to_string())?;
                if let Ok(mut known) = log.lock() {
                    if known.as_ref().is_some_and(|k| *k != full.log) {
                        tracing::error!(
                            file = %path.display(),
                            "[log] changed: its level and format are not applied by a reload, only at the next start"
                        );
                        *known = Some(full.log.clone());
                    }
                }
                let config = full.gateway;
                if config.file.is_some() {
                    return Err(
                        "gateway.file: moving the routes to a routes file needs a restart".into(),
                    );
                }
                let mut applied = applied.lock().map_err(|_| "reload state poisoned")?;
                if *applied == config {
                    return Ok(false);
                }
                let mut tls_in_use = tls.lock().map_err(|_| "reload state poisoned")?;
                // TLS first, prepared but not in use: bad TLS settings or files refuse the whole reload
                let tls_commit = match (config.tls != *tls_in_use, tls_reload) {
                    (false, _) => None,
                    (true, Some(prepare)) => Some(prepare(&config.tls)?),
                    (true, None) => {
                        return Err("gateway.tls: this node has no TLS listener to apply it to; it takes effect at the next start".into())
                    }
                };
                // the access log next: a bad access-log setting refuses the whole reload, table included
                gateway.set_access_log(&config).map_err(|e| e.to_string())?;
                gateway.reload(&config).map_err(|e| e.to_string())?;
                if let Some(commit) = tls_commit {
                    commit();
                    *tls_in_use = config.tls.clone();
                    tracing::info!(file = %path.display(), "gateway.tls reloaded: new connections get the new settings");
                }
                *applied = config;
                Ok(true)
            }
        }
    }
}

impl Gateway {
    /// Reload the gateway on SIGHUP and when its file's content changes, until the gateway is dropped: with
    /// `gateway.file` set, that file; else, when `source` names the main config file, that file's `[gateway]`
    /// section (read with `source`'s layering), whose `tls` goes to `tls_reload`. Does nothing when there is no
    /// file to watch.
    pub fn spawn_reload(
        self: &Arc<Self>,
        config: &GatewayConfig,
        source: Option<ConfigSource>,
        tls_reload: Option<TlsReload>,
    ) {
        let (path, watched) = match (&config.file, source) {
            (Some(path), _) => (path.clone(), Watched::RoutesFile),
            (None, Some(source)) => match source.file.clone() {
                Some(path) => (
                    path,
                    Watched::MainConfig(Box::new(MainFile {
                        log: std::sync::Mutex::new(source.load().ok().map(|c| c.log)),
                        source,
                        tls: std::sync::Mutex::new(config.tls.clone()),
                        tls_reload,
                        applied: std::sync::Mutex::new(config.clone()),
                    })),
                ),
                None => return,
            },
            (None, None) => return,
        };
        let initial = std::fs::read(&path).unwrap_or_default();
        let weak = Arc::downgrade(self);
        tokio::spawn(watch(weak, path, watched, initial));
    }
}

async fn watch(gateway: Weak<Gateway>, path: PathBuf, watched: Watched, mut loaded: Vec<u8>) {
    let what = watched.what();
    #[cfg(unix)]
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP ({e}); the {what} is reloaded on change only");
            None
        }
    };
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let signalled = {
            let hup_recv = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => false,
                _ = hup_recv => true,
            }
        };
        #[cfg(not(unix))]
        let signalled = {
            tick.tick().await;
            false
        };
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        let now = std::fs::read(&path);
        if signalled {
            tracing::info!(file = %path.display(), "SIGHUP: reloading the {what}");
            // a reload also reopens the access log's file, as logrotate's postrotate expects
            gateway.reopen_access_log();
        } else {
            match &now {
                Ok(now) if *now != loaded => {}
                // unchanged, or unreadable for a moment (being replaced): look again at the next tick
                _ => continue,
            }
        }
        // remember the content even when it is refused, so that a bad file is reported once, not every second
        if let Ok(now) = now {
            loaded = now;
        }
        match watched.apply(&gateway, &path) {
            Ok(true) => tracing::info!(file = %path.display(), "{what} reloaded"),
            Ok(false) => {
                tracing::info!(file = %path.display(), "{what} unchanged, nothing to reload")
            }
            Err(e) => tracing::error!(
                file = %path.display(),
                "{what} refused, keeping the routes in use: {e}"
            ),
        }
    }
}
