//! The client-facing side of a node: bound listeners, TLS termination, HTTP/1.1 and HTTP/2 connections, and
//! draining them on shutdown.
//!
//! Owns: binding (before serving, so that a bad address fails at start), loading certificates, the accept loop,
//! per-connection limits (header size, header read timeout), attaching [`ferry_http::ClientInfo`] to requests,
//! and graceful shutdown with a deadline. Does not own: what a request means (the handler decides), tenants,
//! tunnels. Routing to upstream pools comes with the gateway issue.
#![forbid(unsafe_code)]

mod listener;
mod serve;

pub use listener::{tls_info, ClientAuth, Listener, TlsFiles, TlsOptions};
pub use serve::{serve, Handler, ServeOptions};

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("tls certificate {path}: {message}")]
    Certificate { path: String, message: String },
    #[error("tls key {path}: {message}")]
    Key { path: String, message: String },
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
}
