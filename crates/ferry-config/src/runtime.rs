//! The `[runtime]` section: how many threads run Ferry's async work, for whichever command runs (`serve`,
//! `connector`).

use serde::{Deserialize, Serialize};

/// The most worker threads a process may be given: far beyond any core count Ferry runs on, low enough to catch
/// a typo before it starts thousands of threads.
pub const MAX_WORKER_THREADS: usize = 1024;

/// Settings of the async runtime.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Worker threads of the async runtime; 0 (the default) = one per CPU the process may use. For `serve` it is
    /// also the number of cores of `per_core`; the connector's tunnels have threads of their own
    /// (`connector.tunnels`) (docs/operations.md, "Worker threads").
    pub worker_threads: usize,
    /// `serve`: serve each client connection and tunnel of the public listeners on one core (a thread with a
    /// single-threaded runtime, as many as worker threads) from accept to close, so that a relayed request
    /// whose tunnel is on the same core never wakes another thread (docs/performance.md, "A runtime per
    /// core"). `false`: every connection on the shared multi-threaded runtime, as before 2026-12.
    pub per_core: bool,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            worker_threads: 0,
            per_core: true,
        }
    }
}
