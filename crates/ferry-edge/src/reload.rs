//! Reloading the gateway: the routes file (`gateway.file`), or without one the `[gateway]` section of the main
//! config file (read again with the start's layering: file, then `FERRY_*` variables, then flags). Both are
//! watched (SIGHUP, content changes) and swap the gateway's table atomically. A file that does not parse or
//! compile is refused with one error line naming the key, and the table in use stays. From the main config file,
//! `[[server.listeners]]` is reloaded too (through the node's [`NodeReload`]); other `[server]` and `[log]`
//! changes are named in the log as waiting for the next start.

use crate::{EdgeError, Gateway, ListenerNames};
use ferry_config::{
    AccessLog, ConfigSource, ExtraListener, GatewayConfig, GatewayTls, ServerConfig,
};
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

/// Prepares a new `[[server.listeners]]` list (new addresses bound, so that a port in use refuses the whole
/// reload; the TLS settings of listeners with settings of their own, which are `[gateway.tls]` with their keys
/// put over it, loaded) and returns what puts it to use: listeners added, changed in place, removed.
pub type ListenersReload =
    Box<dyn Fn(&[ExtraListener], &GatewayTls) -> Result<PreparedListeners, String> + Send + Sync>;

/// A `[[server.listeners]]` change made by [`ListenersReload`], not yet in use.
pub struct PreparedListeners {
    /// The listeners' names and bound addresses once it is in use: the routes are compiled against them, before
    /// it is (a route naming a listener that is gone refuses the whole reload).
    pub names: ListenerNames,
    /// Puts it to use: listeners added, changed in place, removed.
    pub commit: Box<dyn FnOnce() + Send>,
}

/// What a reload of the main config file changes beside the gateway's table, given by the node that owns the
/// listeners. Without one of them, a change of its settings is refused until the next start.
#[derive(Default)]
pub struct NodeReload {
    pub tls: Option<TlsReload>,
    pub listeners: Option<ListenersReload>,
}

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
    node: NodeReload,
    /// The section in use: a change elsewhere in the file leaves the table (and its rate-limit buckets) alone.
    applied: std::sync::Mutex<GatewayConfig>,
    /// `[[server.listeners]]` in use.
    listeners: std::sync::Mutex<Vec<ExtraListener>>,
    /// `[log]` and the rest of `[server]` as the node started with them (or as last reported): a change is not
    /// applied by a reload, and says so once.
    log: std::sync::Mutex<Option<ferry_config::LogSettings>>,
    server: std::sync::Mutex<Option<toml::Value>>,
}

/// `[server]` without its listeners, to notice changes that wait for a restart.
fn server_rest(server: &ServerConfig) -> Option<toml::Value> {
    let mut value = toml::Value::try_from(server).ok()?;
    if let Some(table) = value.as_table_mut() {
        table.remove("listeners");
    }
    Some(value)
}

/// The keys of `[server]` whose values differ between `old` and `new` (nested tables by their dotted path).
fn changed_keys(prefix: &str, old: &toml::Value, new: &toml::Value, out: &mut Vec<String>) {
    match (old.as_table(), new.as_table()) {
        (Some(o), Some(n)) => {
            let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let path = format!("{prefix}.{key}");
                match (o.get(key), n.get(key)) {
                    (Some(a), Some(b)) => changed_keys(&path, a, b, out),
                    _ => out.push(path),
                }
            }
        }
        _ if old != new => out.push(prefix.to_owned()),
        _ => {}
    }
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
            Self::MainConfig(main) => main.apply(gateway, path),
        }
    }
}

impl MainFile {
    /// Load the file and apply what a reload applies: the gateway's table, `[gateway.tls]` and
    /// `[[server.listeners]]`, all prepared before any is put to use, so that a refusal changes nothing.
    fn apply(&self, gateway: &Gateway, path: &Path) -> Result<bool, String> {
        let full = self.source.load().map_err(|e| e.to_string())?;
        self.name_waiting_changes(&full, path);
        let config = full.gateway;
        if config.file.is_some() {
            return Err("gateway.file: moving the routes to a routes file needs a restart".into());
        }
        const POISONED: &str = "reload state poisoned";
        let mut applied = self.applied.lock().map_err(|_| POISONED)?;
        let mut listeners_in_use = self.listeners.lock().map_err(|_| POISONED)?;
        let listeners_changed = full.server.listeners != *listeners_in_use;
        if *applied == config && !listeners_changed {
            return Ok(false);
        }
        let mut tls_in_use = self.tls.lock().map_err(|_| POISONED)?;
        // TLS first, prepared but not in use: bad TLS settings or files refuse the whole reload
        let tls_commit = match (config.tls != *tls_in_use, &self.node.tls) {
            (false, _) => None,
            (true, Some(prepare)) => Some(prepare(&config.tls)?),
            (true, None) => {
                return Err("gateway.tls: this node has no TLS listener to apply it to; it takes effect at the next start".into())
            }
        };
        // the listeners next, bound but not serving: a port in use refuses the whole reload; a `[gateway.tls]`
        // change reaches the listeners with TLS settings of their own (built over it) this way too
        let tls_changed = config.tls != *tls_in_use;
        let listeners_commit = match (listeners_changed || tls_changed, &self.node.listeners) {
            (false, _) => None,
            (true, Some(prepare)) => Some(prepare(&full.server.listeners, &config.tls)?),
            (true, None) if !listeners_changed => None,
            (true, None) => {
                return Err("server.listeners: this node cannot change its listeners by a reload; it takes effect at the next start".into())
            }
        };
        // the routes are compiled against the listeners as they will be (names and addresses), when they change
        let names = match &listeners_commit {
            Some(prepared) => prepared.names.clone(),
            None => gateway.listener_names(),
        };
        let names_changed = names != gateway.listener_names();
        if *applied != config || names_changed {
            if *applied != config {
                // a bad access-log setting refuses the whole reload, table included
                gateway.set_access_log(&config).map_err(|e| e.to_string())?;
            }
            gateway
                .reload_on(&config, names)
                .map_err(|e| e.to_string())?;
        }
        if let Some(commit) = tls_commit {
            commit();
            *tls_in_use = config.tls.clone();
            tracing::info!(file = %path.display(), "gateway.tls reloaded: new connections get the new settings");
        }
        if let Some(PreparedListeners { commit, .. }) = listeners_commit {
            commit();
            if listeners_changed {
                *listeners_in_use = full.server.listeners;
                tracing::info!(file = %path.display(), "server.listeners reloaded");
            }
        }
        *applied = config;
        Ok(true)
    }

    /// Say once in the log that `[log]` or `[server]` (beyond its listeners) changed: those wait for the next
    /// start, and a reload must not leave that unsaid.
    fn name_waiting_changes(&self, full: &ferry_config::Config, path: &Path) {
        if let Ok(mut known) = self.log.lock() {
            if known.as_ref().is_some_and(|k| *k != full.log) {
                tracing::error!(
                    file = %path.display(),
                    "[log] changed: its level and format are not applied by a reload, only at the next start"
                );
                *known = Some(full.log.clone());
            }
        }
        if let Ok(mut known) = self.server.lock() {
            let now = server_rest(&full.server);
            if let (Some(old), Some(new)) = (known.as_ref(), now.as_ref()) {
                let mut keys = Vec::new();
                changed_keys("server", old, new, &mut keys);
                if !keys.is_empty() {
                    tracing::error!(
                        file = %path.display(),
                        keys = %keys.join(", "),
                        "[server] changed beyond server.listeners: not applied by a reload, only at the next start"
                    );
                }
            }
            if now.is_some() {
                *known = now;
            }
        }
    }
}

impl Gateway {
    /// Reload the gateway on SIGHUP and when its file's content changes, until the gateway is dropped: with
    /// `gateway.file` set, that file; else, when `source` names the main config file, that file's `[gateway]`
    /// section (read with `source`'s layering), whose `tls` goes to `node.tls`, and its `[[server.listeners]]`,
    /// which go to `node.listeners`. Does nothing when there is no file to watch.
    pub fn spawn_reload(
        self: &Arc<Self>,
        config: &GatewayConfig,
        source: Option<ConfigSource>,
        node: NodeReload,
    ) {
        let (path, watched) = match (&config.file, source) {
            (Some(path), _) => (path.clone(), Watched::RoutesFile),
            (None, Some(source)) => match source.file.clone() {
                Some(path) => {
                    let start = source.load().ok();
                    let main = MainFile {
                        log: std::sync::Mutex::new(start.as_ref().map(|c| c.log.clone())),
                        server: std::sync::Mutex::new(
                            start.as_ref().and_then(|c| server_rest(&c.server)),
                        ),
                        listeners: std::sync::Mutex::new(
                            start.map(|c| c.server.listeners).unwrap_or_default(),
                        ),
                        source,
                        tls: std::sync::Mutex::new(config.tls.clone()),
                        node,
                        applied: std::sync::Mutex::new(config.clone()),
                    };
                    (path, Watched::MainConfig(Box::new(main)))
                }
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
