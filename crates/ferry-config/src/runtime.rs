//! The `[runtime]` section: how many threads run Ferry's async work, for whichever command runs (`serve`,
//! `connector`).

use serde::{Deserialize, Serialize};

/// The most worker threads a process may be given: far beyond any core count Ferry runs on, low enough to catch
/// a typo before it starts thousands of threads.
pub const MAX_WORKER_THREADS: usize = 1024;

/// Settings of the async runtime.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Worker threads of the async runtime; 0 (the default) = one per CPU the process may use. One thread saves
    /// the wake-ups between threads that each request otherwise crosses (lower latency at low load, less CPU);
    /// more threads use more cores under load (docs/operations.md, "Worker threads").
    pub worker_threads: usize,
}
