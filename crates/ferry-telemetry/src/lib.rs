//! Ferry's telemetry: the tracing subscriber (plain or JSON lines on stderr) and the span field names every crate
//! uses (`tenant`, `target`, `connector_id`, `request_id`, `node_id`).
//!
//! Does not own: what is logged (each crate logs its own events) or metrics exposition (a later issue).
#![forbid(unsafe_code)]

use ferry_config::{LogFormat, LogSettings};
use tracing_subscriber::EnvFilter;

/// Span and event field names, so that logs of every crate can be filtered alike.
pub mod fields {
    pub const TENANT: &str = "tenant";
    pub const TARGET: &str = "target";
    pub const CONNECTOR_ID: &str = "connector_id";
    pub const REQUEST_ID: &str = "request_id";
    pub const NODE_ID: &str = "node_id";
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("log.level: {0}")]
    Filter(String),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Install the global subscriber: `RUST_LOG` when set, else `settings.level`; output to stderr.
pub fn init(settings: &LogSettings) -> Result<(), TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(&settings.level),
    }
    .map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match settings.format {
        LogFormat::Plain => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInstalled)
}
