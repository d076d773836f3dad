//! Ferry's edge gateway: the route table of `[gateway]` and the upstream pools it sends requests to.
//!
//! Owns: compiling and checking the gateway config (every error names its key; the route table itself, its
//! matching rule and actions are `ferry-route`'s, see [`route`]), answering redirects and fixed responses, proxying to upstream pools with pooled
//! hyper clients (HTTP/1.1, HTTP/2 over TLS, h2c), balancing, passive ejection and active health checks, sticky
//! sessions, retrying idempotent requests whose connection failed, forwarding and client-certificate headers,
//! header control per route (edits with variables, the `Host` sent upstream, HSTS; `headers`),
//! timeouts and body limits, WebSocket upgrades, per-route and per-server metrics, the access log, a read-only snapshot of routes and pools with their servers' health (`snapshot`), and swapping
//! the whole table atomically on reload (the routes file or the main config's `[gateway]` section; SIGHUP, change). Does not own: listeners and TLS termination
//! (`ferry-gateway`), the relay (reached through [`RelayBackend`], which the app implements), the config file
//! format (`ferry-config`).
#![forbid(unsafe_code)]

pub mod access_log;
mod buffer;
mod client_cert;
mod content;
mod forwarded;
mod gateway;
mod headers;
mod pool;
mod proxy;
mod ratelimit;
mod reload;
pub mod route;
mod snapshot;
mod splice;
mod template;
mod timed;

pub use access_log::{AccessEntry, AccessLogger, Upstream, UpstreamTime};
pub use forwarded::{set_forwarding, strip_client_cert_headers, TrustedProxies};
pub use gateway::{Gateway, Matched, RelayBackend, RelayFuture};
pub use pool::{Pool, Protocol};
pub use reload::{effective, ListenersReload, NodeReload, PreparedListeners, TlsReload};
pub use route::{Action, Arrival, ListenerNames, RouteTable};
pub use snapshot::{
    GatewaySnapshot, PathKind, PoolSnapshot, RouteSnapshot, ServerHealth, ServerSnapshot,
};

/// Why a gateway config was refused.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// A value is wrong; `path` is its key, like `gateway.routes[2].upstream`.
    #[error("{path}: {message}")]
    Config { path: String, message: String },
}

impl From<ferry_route::RouteError> for EdgeError {
    fn from(error: ferry_route::RouteError) -> Self {
        match error {
            ferry_route::RouteError::Config { path, message } => {
                EdgeError::Config { path, message }
            }
        }
    }
}
