//! The edge gateway's route table, as pure data: compiling `[[gateway.routes]]` into matchers and actions, and
//! choosing the most specific route for a request by its normalised path, its host, method and headers.
//!
//! Owns: the matching rule of docs/gateway.md (routes limited to other listeners left out, then most specific
//! host, then longest path prefix on segment boundaries, then most constraints, then file order), the listener
//! names routes may give ([`ListenerNames`]) and which listener a request came in on ([`Arrival`]), the
//! request's host as routing sees it ([`request_host`]: lowercased, without port or trailing dot), the checks of
//! a route's matching fields and its action (every error names its key), and prefix stripping. Does not own: proxying, pools, rate limiting and client-certificate
//! headers (`ferry-edge`, which attaches what it needs to each route through [`RouteTable::compile_with`]),
//! path normalisation itself (`ferry_proto::normalize`), the config format (`ferry-config`). Kept apart from
//! `ferry-edge` so that the table can be fuzzed without hyper's client stack and rustls (`crates/ferry-fuzzing`,
//! target `routes`).
#![forbid(unsafe_code)]

mod compile;
mod host;
mod listeners;
mod table;

pub use host::{normalize_host, request_host};
pub use listeners::{Arrival, ListenerNames};
pub use table::{path_matches, Action, Route, RouteInput, RouteTable, Routed};

/// Why a gateway config was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A value is wrong; `path` is its key, like `gateway.routes[2].upstream`.
    #[error("{path}: {message}")]
    Config { path: String, message: String },
}
