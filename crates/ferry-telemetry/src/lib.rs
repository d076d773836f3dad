//! Ferry's telemetry: the tracing subscriber (plain or JSON lines on stderr), OpenTelemetry trace export (OTLP over
//! HTTP/protobuf, off unless `[telemetry] otlp_endpoint` is set), the W3C trace context carried in `traceparent`
//! ([`trace`]), and the span field names every crate uses ([`fields`]).
//!
//! Does not own: what is logged (each crate logs its own events), where request spans begin (the gateway, the
//! relay, the node link, the cluster executor and the connector make their own with [`trace`]'s helpers), or
//! metrics exposition.
#![forbid(unsafe_code)]

pub mod trace;

use ferry_config::{LogFormat, LogSettings, TelemetrySettings};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Span and event field names, so that logs of every crate can be filtered alike. Field names in `tracing`'s
/// macros are written out; these constants name them for filters, tests and the docs.
pub mod fields {
    pub const TENANT: &str = "tenant";
    pub const TARGET: &str = "target";
    pub const CONNECTOR_ID: &str = "connector_id";
    pub const REQUEST_ID: &str = "request_id";
    pub const NODE_ID: &str = "node_id";
    /// The W3C trace id (32 hex digits) of a request span, present while tracing is on.
    pub const TRACE_ID: &str = "trace_id";
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("log.level: {0}")]
    Filter(String),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
    #[error("telemetry.otlp_endpoint: {0}")]
    Exporter(String),
}

/// The installed telemetry; [`Telemetry::shutdown`] (or dropping it) flushes the spans not yet exported.
#[must_use = "dropping it shuts the trace exporter down"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Export what is buffered and stop the exporter (blocks for at most the exporter's timeout). Call it off
    /// the async runtime's worker threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("ferry: telemetry: flushing spans at exit failed: {e}");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Install the global subscriber: `RUST_LOG` when set, else `log.level`; output to stderr; with
/// `telemetry.otlp_endpoint` set, spans are exported too.
pub fn init(log: &LogSettings, telemetry: &TelemetrySettings) -> Result<Telemetry, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(&log.level),
    }
    .map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let Some(endpoint) = &telemetry.otlp_endpoint else {
        // tracing off: the subscriber of before, one global filter, no span layer
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let result = match log.format {
            LogFormat::Plain => builder.with_ansi(false).try_init(),
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
        };
        result.map_err(|_| TelemetryError::AlreadyInstalled)?;
        return Ok(Telemetry { provider: None });
    };
    let provider = provider(endpoint, telemetry)?;
    // the log filter applies to the log lines only; spans at INFO and above are exported whatever it says
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match log.format {
        LogFormat::Plain => fmt.with_ansi(false).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("ferry"))
        .with_tracked_inactivity(false)
        .with_filter(LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(otel)
        .with(fmt.with_filter(filter))
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    trace::set_enabled(true);
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// The tracer provider exporting to `{endpoint}/v1/traces` in batches (the batch settings follow the standard
/// `OTEL_BSP_*` variables), sampling new traces at `sampling_ratio` and following a caller's decision.
fn provider(
    endpoint: &str,
    settings: &TelemetrySettings,
) -> Result<SdkTracerProvider, TelemetryError> {
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
        settings.sampling_ratio,
    )));
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build())
}
