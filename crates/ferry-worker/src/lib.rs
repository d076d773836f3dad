//! Ferry's cluster worker: exactly one active worker per cluster, chosen by a lease in the store, runs the
//! chores that must not run on every node at once.
//!
//! Owns: the worker lease loop ([`Worker::start`]: compete for the lease [`WORKER_LEASE`], renew it while active,
//! stand by and retry otherwise, step down when it cannot be renewed in time, release it on [`WorkerHandle::stop`]),
//! supervising the jobs while active (each job on its own interval; a failing or panicking run is logged and the job
//! runs again at its next interval), the [`Job`] trait, and the cluster chores as jobs and as plain functions
//! ([`jobs`]): marking silent nodes gone and closing their connections in the history, rolling per-minute
//! statistics up, request log retention and history pruning, signing key rotation.
//! Does not own: the lease itself and the SQL of the chores (`ferry-store`), the decisions about signing keys
//! (`ferry-auth`'s [`maintain_signing_keys`](ferry_auth::maintain_signing_keys)), where the settings come from
//! (configuration, wired by `ferry-app`), node heartbeats (each node writes its own).
//!
//! Timing: a worker that wins the lease holds it for `lease_ttl` from the moment it sent the winning request (the
//! database measures from when it granted it, later; the database's clock decides expiry, so node clocks do not
//! matter), renews every `renew_every`, and stops its jobs once that local deadline passes without a renewal.
//! A standby tries again after a random pause between `retry` and twice `retry`. When the active worker dies
//! without releasing (kill -9), a standby becomes active at most [`WorkerSettings::takeover_bound`] later:
//! `lease_ttl + 2 × retry` (the lease lapses at most `lease_ttl` after the last renewal, which came before the
//! death, and the standby notices within one pause), plus one database round trip.
#![forbid(unsafe_code)]

pub mod jobs;
mod worker;

pub use jobs::{chores, ChoreSettings, Job, JobError};
pub use worker::{
    active_worker, ActiveWorker, Worker, WorkerHandle, WorkerSettings, WorkerState, WORKER_LEASE,
};
