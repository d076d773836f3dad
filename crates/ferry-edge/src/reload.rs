//! The reloadable routes file (`gateway.file`): loading it, and watching it (SIGHUP, content changes) to swap
//! the gateway's table atomically. A file that does not parse or compile is refused with one error line and the
//! table in use stays.

use crate::{EdgeError, Gateway};
use ferry_config::GatewayConfig;
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
    {
        return Err(EdgeError::Config {
            path: "gateway.file".into(),
            message: "with a routes file, routes, upstreams and trusted_proxies go in that file"
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
    if config.tls != ferry_config::GatewayTls::default() {
        return Err(err("tls settings belong in the main config file".into()));
    }
    Ok((config, bytes))
}

impl Gateway {
    /// With `gateway.file` set, reload it on SIGHUP and when its content changes, until the gateway is dropped.
    /// Does nothing without a file.
    pub fn spawn_reload(self: &Arc<Self>, config: &GatewayConfig) {
        let Some(path) = config.file.clone() else {
            return;
        };
        let initial = std::fs::read(&path).unwrap_or_default();
        let weak = Arc::downgrade(self);
        tokio::spawn(watch(weak, path, initial));
    }
}

async fn watch(gateway: Weak<Gateway>, path: PathBuf, mut loaded: Vec<u8>) {
    #[cfg(unix)]
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(
                "cannot listen for SIGHUP ({e}); the routes file is reloaded on change only"
            );
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
        if signalled {
            tracing::info!(file = %path.display(), "SIGHUP: reloading the gateway routes file");
        } else {
            match std::fs::read(&path) {
                Ok(now) if now != loaded => {}
                // unchanged, or unreadable for a moment (being replaced): look again at the next tick
                _ => continue,
            }
        }
        match load_file(&path).and_then(|(config, bytes)| {
            gateway.reload(&config)?;
            Ok(bytes)
        }) {
            Ok(bytes) => {
                loaded = bytes;
                tracing::info!(file = %path.display(), "gateway routes file reloaded");
            }
            Err(e) => {
                // remember the bad content so that it is reported once, not every second
                if let Ok(now) = std::fs::read(&path) {
                    loaded = now;
                }
                tracing::error!(file = %path.display(), "gateway routes file refused, keeping the routes in use: {e}");
            }
        }
    }
}
