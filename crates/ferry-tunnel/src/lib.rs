//! The connector tunnel, both ends (see `docs/protocol.md`).
//!
//! Owns: the connector's dial and HTTP/1.1 upgrade ([`client::dial`]), directly or through an HTTP proxy
//! ([`proxy`]: `CONNECT`, proxy credentials, `HTTPS_PROXY`/`NO_PROXY`), the two transports ([`ws`]: the default
//! `Upgrade: ferry-tunnel/1`, and the same stream in WebSocket messages), the node's handshake checks and its
//! 101 answer with the protocol chosen ([`server::parse_handshake`], [`server::accept_headers`]: 2 when the connector
//! offers it, else 1), protocol 1: the reversed HTTP/2 on the upgraded
//! connection with its settings, windows and keep-alive pings (the node is the HTTP/2 client, [`server::open`];
//! the connector the HTTP/2 server, [`client::serve`]), the TLS client configuration (whose certificate errors
//! name the issuer, [`tls`]), the reconnect [`backoff`], and protocol 2: the connection ([`mux`]: streams,
//! windows, resets, keep-alive) with the HTTP messages it carries ([`exchange`]: heads as HTTP/1.1 text, the node's
//! sender, the connector's stream server).
//! Does not own: tokens (issuing or checking), tenants, targets, routing, or what a request asks of a target.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod client;
pub mod exchange;
pub mod mux;
pub mod proxy;
pub mod server;
pub mod tls;
pub mod ws;

pub use ws::{Transport, TunnelIo};

use std::time::Duration;

/// Error type of tunnel bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response on the tunnel, in both directions.
pub type TunnelBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

/// Settings of the reversed HTTP/2 connection, shared by both ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelOptions {
    /// Send an HTTP/2 PING this often (also while idle).
    pub keepalive_interval: Duration,
    /// Close the connection when a PING is not acknowledged within this.
    pub keepalive_timeout: Duration,
    /// The connector's `SETTINGS_MAX_CONCURRENT_STREAMS` (used by the HTTP/2 server end only).
    pub max_concurrent_streams: u32,
    /// Initial per-stream flow-control window, in bytes: the most one stream can have in flight, and so the
    /// most a reader that stopped reading can hold on the receiving end.
    pub stream_window: u32,
    /// Initial connection flow-control window, in bytes: at least this, and never less than
    /// [`TunnelOptions::connection_window_in_use`] says, so that it is never the binding limit.
    pub connection_window: u32,
}

/// The largest flow-control window HTTP/2 allows (RFC 9113 §6.9.1).
const MAX_WINDOW: u32 = (1 << 31) - 1;

impl TunnelOptions {
    /// The connection window each end advertises: enough for every stream (`max_concurrent_streams`) to fill its
    /// own window, so that streams whose readers stopped (a client that never reads its download, a target that
    /// never reads its upload) cannot use up the connection's window and stall the others; a slow stream holds
    /// its own window, never the connection. The memory this lets a tunnel hold for stuck readers is bounded by
    /// the streams in flight times `stream_window` (docs/protocol.md, "Flow control").
    pub fn connection_window_in_use(&self) -> u32 {
        let every_stream =
            u64::from(self.stream_window) * u64::from(self.max_concurrent_streams.max(1));
        u32::try_from(every_stream)
            .unwrap_or(MAX_WINDOW)
            .clamp(self.connection_window.min(MAX_WINDOW), MAX_WINDOW)
    }
}

impl Default for TunnelOptions {
    fn default() -> Self {
        Self {
            keepalive_interval: Duration::from_secs(15),
            keepalive_timeout: Duration::from_secs(10),
            max_concurrent_streams: 1000,
            stream_window: 1024 * 1024,
            connection_window: 8 * 1024 * 1024,
        }
    }
}

/// Largest frame either end accepts (HTTP/2 `SETTINGS_MAX_FRAME_SIZE`; the protocol's default is 16 KiB). Larger
/// DATA frames mean fewer frames, wake-ups and writes per large body: 10 MiB transfers ran 30 to 50% faster with
/// 64 KiB and a little more with 256 KiB (docs/performance.md). A tunnel's receive buffer grows to one frame at
/// most, and only while bodies that large pass.
pub const MAX_FRAME_SIZE: u32 = 256 * 1024;

/// Largest header list either end accepts on a stream (HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`).
pub const MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;

/// Why a tunnel could not be set up (after the upgrade), or why TLS could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The HTTP/2 handshake on the upgraded connection failed.
    #[error("http/2 handshake on the tunnel failed: {0}")]
    Http2(#[source] hyper::Error),
    /// The connector did not send its HTTP/2 settings (with `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1`) in time.
    #[error("the connector did not enable the extended CONNECT protocol within {0:?}")]
    NoConnectProtocol(Duration),
    /// The tunnel closed during its setup.
    #[error("the tunnel closed during its setup")]
    Closed,
    /// The CA file could not be read or holds no usable certificate.
    #[error("ca_file {path}: {message}")]
    CaFile { path: String, message: String },
    /// The TLS configuration could not be built.
    #[error("tls configuration: {0}")]
    Tls(#[source] rustls::Error),
}

/// A URL's host as a socket address or TLS name wants it: an IPv6 literal without its brackets.
pub(crate) fn unbracketed_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_window_is_never_the_binding_limit() {
        let o = TunnelOptions::default();
        assert_eq!(o.connection_window_in_use(), 1000 * 1024 * 1024);
        let few = TunnelOptions {
            max_concurrent_streams: 2,
            ..TunnelOptions::default()
        };
        assert_eq!(
            few.connection_window_in_use(),
            8 * 1024 * 1024,
            "at least the configured one"
        );
        let many = TunnelOptions {
            max_concurrent_streams: 100_000,
            ..TunnelOptions::default()
        };
        assert_eq!(many.connection_window_in_use(), MAX_WINDOW);
    }
}
