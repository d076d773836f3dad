//! `[telemetry]`: OpenTelemetry trace export (OTLP over HTTP/protobuf), off unless an endpoint is set.

use serde::{Deserialize, Serialize};

/// Trace export. Off while `otlp_endpoint` is unset (`FERRY_OTLP_ENDPOINT`, else the standard
/// `OTEL_EXPORTER_OTLP_ENDPOINT`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// The collector's base URL (`http://127.0.0.1:4318`); spans go to `{otlp_endpoint}/v1/traces`.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute of every span.
    pub service_name: String,
    /// The share of new traces recorded, 0.0 to 1.0; a request that arrives with a sampled `traceparent` follows
    /// its caller's decision.
    pub sampling_ratio: f64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "ferry".to_owned(),
            sampling_ratio: 1.0,
        }
    }
}

impl TelemetrySettings {
    /// Whether spans are exported at all.
    pub fn enabled(&self) -> bool {
        self.otlp_endpoint.is_some()
    }

    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err((
                "telemetry.sampling_ratio",
                format!("{} is not between 0.0 and 1.0", self.sampling_ratio),
            ));
        }
        if let Some(url) = &self.otlp_endpoint {
            // The exporter speaks plain HTTP only (no TLS client is built in): run a collector beside Ferry
            // and let it forward over TLS. An https:// URL would pass here and then never connect.
            if !url.starts_with("http://") {
                return Err((
                    "telemetry.otlp_endpoint",
                    format!(
                        "{url:?} is not an http:// URL (TLS to the collector is not built in: send to a \
                         collector beside Ferry over http://)"
                    ),
                ));
            }
        }
        if self.service_name.trim().is_empty() {
            return Err(("telemetry.service_name", "must not be empty".to_owned()));
        }
        Ok(())
    }
}
