//! The client-facing side of a node: bound listeners, TLS termination, HTTP/1.1 and HTTP/2 connections,
//! HTTP/3 over QUIC on TLS listeners that ask for it, and draining them on shutdown.
//!
//! Owns: binding (before serving, so that a bad address fails at start), loading certificates, the accept loop,
//! per-connection limits (header size, the first request's and every head's deadline, idle keep-alive and
//! HTTP/2 connections, caps on connections overall and per client address, the process's open-file limit), the
//! refusal of smuggling heads (`Content-Length` with `Transfer-Encoding`), attaching [`ferry_http::ClientInfo`]
//! to requests, and graceful shutdown with a deadline. Does not own: what a request means (the handler decides), tenants,
//! tunnels. Routing to upstream pools comes with the gateway issue.
#![forbid(unsafe_code)]

mod h1;
mod http3;
mod limits;
mod listener;
mod ocsp;
mod proxy_protocol;
mod serve;
#[cfg(test)]
pub(crate) mod test_pki;
mod tls;

pub use limits::ConnectionCaps;
pub use listener::{tls_info, Listener, ListenerControl};
pub use serve::{serve, Handler, ServeOptions};
pub use tls::{ClientAuth, PreparedTls, SniSite, TlsFiles, TlsOptions, TlsReloader};

/// Raise the process's soft limit of open files to its hard limit (a node holds one file per client
/// connection, tunnel and upstream connection; distributions often start services at 1024). Returns the limit
/// before and after.
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64)> {
    let (before, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let after = rlimit::increase_nofile_limit(u64::MAX)?;
    Ok((before, after))
}

/// The process's soft limit of open files, if it can be read.
pub fn open_files_limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

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
    #[error("{key}: {message}")]
    Settings { key: String, message: String },
}
