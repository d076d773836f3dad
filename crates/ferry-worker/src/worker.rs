//! The worker lease loop: compete for the lease, run the jobs while holding it, step down when it cannot be
//! renewed in time, release it when stopped.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use ferry_store::{Lease, Store, StoreError};
use futures_util::FutureExt as _;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::jobs::{error_chain, panic_message, Job};

/// The name of the lease the workers of a cluster compete for.
pub const WORKER_LEASE: &str = "worker";

/// The shortest lease, renewal and retry intervals taken; shorter settings are raised to them.
const MIN_TTL: Duration = Duration::from_millis(50);
const MIN_RETRY: Duration = Duration::from_millis(10);
/// How long stopping waits for the lease to be released before leaving it to lapse.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a worker competes for the lease. The defaults: a 10 s lease renewed every 3.3 s, standbys retrying every
/// 1 to 2 s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSettings {
    /// How long the lease lasts without renewal: also how long the cluster may be without an active worker when
    /// the active one dies without releasing it.
    pub lease_ttl: Duration,
    /// How often the active worker renews the lease; must be shorter than `lease_ttl` (a third of it when not).
    pub renew_every: Duration,
    /// A standby tries to take the lease again after a random pause between `retry` and twice `retry`; the active
    /// worker retries a failed renewal after `retry`.
    pub retry: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self::with_ttl(Duration::from_secs(10))
    }
}

impl WorkerSettings {
    /// A lease of `ttl`, renewed every third of it, standbys retrying every 1 to 2 s.
    pub fn with_ttl(ttl: Duration) -> Self {
        WorkerSettings {
            lease_ttl: ttl,
            renew_every: ttl / 3,
            retry: Duration::from_secs(1),
        }
    }

    /// The longest a standby takes to become active after the active worker died without releasing the lease,
    /// not counting database round trips: `lease_ttl + 2 × retry`.
    pub fn takeover_bound(&self) -> Duration {
        let settings = self.checked();
        settings.lease_ttl + 2 * settings.retry
    }

    /// The settings in force: `lease_ttl` at least 50 ms, `renew_every` above zero and below `lease_ttl` (a third
    /// of it otherwise), `retry` at least 10 ms.
    fn checked(&self) -> Self {
        let lease_ttl = self.lease_ttl.max(MIN_TTL);
        let renew_every = if self.renew_every.is_zero() || self.renew_every >= lease_ttl {
            lease_ttl / 3
        } else {
            self.renew_every
        };
        WorkerSettings {
            lease_ttl,
            renew_every,
            retry: self.retry.max(MIN_RETRY),
        }
    }
}

/// The active worker of a cluster, as its lease says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveWorker {
    /// The node it runs on.
    pub node_id: String,
    /// The lease holder: the node id, `#`, and a token of the worker instance (two processes with one node id are
    /// two holders).
    pub holder: String,
    /// The lease term (see [`Lease::term`]).
    pub term: i64,
    /// Since when it has been active (unix milliseconds, database clock).
    pub since_ms: i64,
    /// When its lease lapses unless renewed (unix milliseconds, database clock).
    pub expires_at_ms: i64,
}

impl ActiveWorker {
    /// The worker that holds `lease` (a lease of [`WORKER_LEASE`]).
    pub fn from_lease(lease: &Lease) -> Self {
        let node_id = lease
            .holder
            .rsplit_once('#')
            .map_or(lease.holder.as_str(), |(node, _)| node);
        ActiveWorker {
            node_id: node_id.to_owned(),
            holder: lease.holder.clone(),
            term: lease.term,
            since_ms: lease.acquired_at_ms,
            expires_at_ms: lease.expires_at_ms,
        }
    }
}

/// The active worker of the cluster whose store this is, from any node (with or without the worker role), for
/// the nodes endpoint; `None` while no worker holds the lease.
pub async fn active_worker(store: &dyn Store) -> Result<Option<ActiveWorker>, StoreError> {
    Ok(store
        .lease(WORKER_LEASE)
        .await?
        .as_ref()
        .map(ActiveWorker::from_lease))
}

/// What a worker knows, as published on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerState {
    /// Whether this worker holds the lease and runs the jobs.
    pub active: bool,
    /// The active worker as this one last saw it (itself while active); `None` when the lease was free, when
    /// the store could not be read, or before the first attempt.
    pub holder: Option<ActiveWorker>,
}

/// Starts workers.
#[derive(Debug)]
pub struct Worker;

impl Worker {
    /// Start competing for the lease [`WORKER_LEASE`] on `store` as a worker of node `node_id`, running `jobs`
    /// whenever this worker is the active one. Call within a Tokio runtime. The returned handle owns every task:
    /// [`WorkerHandle::stop`] stops the jobs and releases the lease; dropping the handle aborts everything
    /// without releasing (the lease then lapses after `lease_ttl`, as when the process is killed).
    pub fn start(
        store: Arc<dyn Store>,
        node_id: impl Into<String>,
        settings: WorkerSettings,
        jobs: Vec<Arc<dyn Job>>,
    ) -> WorkerHandle {
        let node_id = node_id.into();
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let holder = format!("{node_id}#{}", &instance[..12]);
        let checked = settings.checked();
        if checked != settings {
            tracing::warn!(
                node_id,
                ?settings,
                ?checked,
                "worker settings out of range were adjusted"
            );
        }
        let (state_tx, state_rx) = watch::channel(WorkerState::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            store,
            node_id: node_id.clone(),
            holder: holder.clone(),
            settings: checked,
            jobs,
            state: state_tx,
        });
        let span = tracing::info_span!("worker", node_id = %node_id);
        let task = tokio::spawn(supervise(inner, stop_rx).instrument(span));
        WorkerHandle {
            node_id,
            holder,
            state: state_rx,
            stop: stop_tx,
            task: Some(task),
        }
    }
}

/// A running worker. Dropping it aborts its tasks without releasing the lease; call [`Self::stop`] to leave
/// cleanly.
#[derive(Debug)]
pub struct WorkerHandle {
    node_id: String,
    holder: String,
    state: watch::Receiver<WorkerState>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// The node this worker runs on.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// This worker's lease holder text (`<node id>#<instance>`).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Whether this worker holds the lease and runs the jobs.
    pub fn is_active(&self) -> bool {
        self.state.borrow().active
    }

    /// The active worker as this one last saw it (itself while active).
    pub fn active_holder(&self) -> Option<ActiveWorker> {
        self.state.borrow().holder.clone()
    }

    /// The state now.
    pub fn state(&self) -> WorkerState {
        self.state.borrow().clone()
    }

    /// Changes of the state, for whoever wants to wait for them (tests, the nodes endpoint).
    pub fn subscribe(&self) -> watch::Receiver<WorkerState> {
        self.state.clone()
    }

    /// Stop: the jobs first (aborted at their next await), then release the lease (bounded by 5 s; a lease that
    /// cannot be released lapses by itself), then return.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            if let Err(error) = task.await {
                tracing::error!(node_id = %self.node_id, %error, "the worker task ended abnormally while stopping");
            }
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What the worker's tasks share.
struct Inner {
    store: Arc<dyn Store>,
    node_id: String,
    holder: String,
    settings: WorkerSettings,
    jobs: Vec<Arc<dyn Job>>,
    state: watch::Sender<WorkerState>,
}

/// The jobs of an active worker and its lease times (local clock).
struct Active {
    jobs: JoinSet<()>,
    /// Which job each runner task runs, to restart it.
    runners: HashMap<tokio::task::Id, usize>,
    /// The lease is ours until then at least: when the request that granted or renewed it was sent, plus the ttl.
    deadline: Instant,
    next_renew: Instant,
    term: i64,
}

/// The outcome of one renewal attempt of the active worker.
enum Renewal {
    Renewed,
    Lost(ActiveWorker),
    Expired,
    Failed,
}

/// The worker task: run the lease loop; a panic in it is logged and the loop starts again after a pause. Once
/// stopped, release the lease.
async fn supervise(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        match AssertUnwindSafe(inner.run(&mut stop)).catch_unwind().await {
            Ok(()) => break,
            Err(panic) => {
                tracing::error!(panic = %panic_message(panic.as_ref()), "the worker loop panicked; restarting it");
                inner.publish(false, None);
                if pause(&mut stop, inner.settings.retry).await {
                    break;
                }
            }
        }
    }
    inner.release().await;
    inner.publish(false, None);
}

/// Wait `duration` unless asked to stop first; `true` when stopping.
async fn pause(stop: &mut watch::Receiver<bool>, duration: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(duration) => *stop.borrow(),
        changed = stop.changed() => changed.is_err() || *stop.borrow(),
    }
}

impl Inner {
    fn publish(&self, active: bool, holder: Option<ActiveWorker>) {
        self.state.send_if_modified(|state| {
            let new = WorkerState { active, holder };
            let changed = *state != new;
            *state = new;
            changed
        });
    }

    async fn acquire(&self) -> Result<Lease, StoreError> {
        self.store
            .acquire_lease(WORKER_LEASE, &self.holder, self.settings.lease_ttl)
            .await
    }

    /// A standby's pause: between `retry` and twice `retry`, so that standbys spread out.
    fn standby_pause(&self) -> Duration {
        let retry = self.settings.retry;
        retry + retry.mul_f64(rand::random::<f64>())
    }

    /// The lease loop, until asked to stop (the jobs are stopped before it returns).
    async fn run(&self, stop: &mut watch::Receiver<bool>) {
        let mut active: Option<Active> = None;
        // Whether the last attempt failed (one warning per outage, not one per retry).
        let mut failing = false;
        loop {
            if *stop.borrow() {
                break;
            }
            let Some(current) = active.as_mut() else {
                let sent = Instant::now();
                match tokio::time::timeout(self.settings.lease_ttl, self.acquire()).await {
                    Ok(Ok(lease)) if lease.holder == self.holder => {
                        failing = false;
                        tracing::info!(
                            term = lease.term,
                            lease_ttl_ms = self.settings.lease_ttl.as_millis(),
                            "worker lease acquired: running the cluster chores"
                        );
                        self.publish(true, Some(ActiveWorker::from_lease(&lease)));
                        active = Some(self.activate(sent, lease.term));
                        continue;
                    }
                    Ok(Ok(lease)) => {
                        failing = false;
                        let seen = ActiveWorker::from_lease(&lease);
                        let known = self
                            .state
                            .borrow()
                            .holder
                            .as_ref()
                            .map(|h| h.holder.clone());
                        if known.as_deref() != Some(seen.holder.as_str()) {
                            tracing::info!(
                                active_node_id = %seen.node_id,
                                term = seen.term,
                                "standing by: another worker is active"
                            );
                        }
                        self.publish(false, Some(seen));
                    }
                    Ok(Err(error)) => {
                        if !failing {
                            tracing::warn!(error = %error_chain(&error), "cannot take the worker lease; retrying");
                            failing = true;
                        }
                        self.publish(false, None);
                    }
                    Err(_) => {
                        if !failing {
                            tracing::warn!(
                                "the store did not answer for the worker lease in time; retrying"
                            );
                            failing = true;
                        }
                        self.publish(false, None);
                    }
                }
                if pause(stop, self.standby_pause()).await {
                    break;
                }
                continue;
            };
            tokio::select! {
                biased;
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                    continue;
                }
                Some(ended) = current.jobs.join_next_with_id() => {
                    self.restart_runner(current, ended);
                    continue;
                }
                () = tokio::time::sleep_until(current.next_renew) => {}
            }
            match self.renew(current, &mut failing).await {
                Renewal::Renewed | Renewal::Failed => {}
                Renewal::Lost(seen) => {
                    tracing::warn!(
                        active_node_id = %seen.node_id,
                        term = seen.term,
                        "worker lease lost to another worker; stopping the chores"
                    );
                    if let Some(mut current) = active.take() {
                        current.jobs.shutdown().await;
                    }
                    self.publish(false, Some(seen));
                }
                Renewal::Expired => {
                    tracing::warn!(
                        "the worker lease expired before it could be renewed; stopping the chores"
                    );
                    if let Some(mut current) = active.take() {
                        current.jobs.shutdown().await;
                    }
                    self.publish(false, None);
                }
            }
        }
        if let Some(mut current) = active {
            current.jobs.shutdown().await;
            tracing::info!("worker stopped its chores");
        }
    }

    /// Become active: start one runner per job.
    fn activate(&self, sent: Instant, term: i64) -> Active {
        let mut active = Active {
            jobs: JoinSet::new(),
            runners: HashMap::new(),
            deadline: sent + self.settings.lease_ttl,
            next_renew: sent + self.settings.renew_every,
            term,
        };
        for index in 0..self.jobs.len() {
            self.spawn_runner(&mut active, index);
        }
        active
    }

    fn spawn_runner(&self, active: &mut Active, index: usize) {
        let job = Arc::clone(&self.jobs[index]);
        let span = tracing::info_span!("job", node_id = %self.node_id, job = job.name());
        let handle = active
            .jobs
            .spawn(run_job(job, Arc::clone(&self.store)).instrument(span));
        active.runners.insert(handle.id(), index);
    }

    /// A runner ended, which it never does by itself (each run's panic is caught inside it): log and restart.
    fn restart_runner(
        &self,
        active: &mut Active,
        ended: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
    ) {
        let id = match &ended {
            Ok((id, ())) => *id,
            Err(error) => error.id(),
        };
        let Some(index) = active.runners.remove(&id) else {
            return;
        };
        let job = self.jobs[index].name();
        match ended {
            Err(error) if error.is_panic() => {
                tracing::error!(job, panic = %panic_message(error.into_panic().as_ref()), "job runner panicked; restarting it");
            }
            _ => tracing::error!(job, "job runner ended; restarting it"),
        }
        self.spawn_runner(active, index);
    }

    /// Renew the lease, giving up at the deadline.
    async fn renew(&self, current: &mut Active, failing: &mut bool) -> Renewal {
        let sent = Instant::now();
        // Checked before trying: `timeout_at` polls the request first, so a store that fails at once would
        // otherwise be retried past the deadline for ever.
        if sent >= current.deadline {
            return Renewal::Expired;
        }
        match tokio::time::timeout_at(current.deadline, self.acquire()).await {
            Ok(Ok(lease)) if lease.holder == self.holder => {
                if lease.term != current.term {
                    tracing::warn!(
                        term = lease.term,
                        previous_term = current.term,
                        "the worker lease had lapsed and was taken again"
                    );
                    current.term = lease.term;
                }
                current.deadline = sent + self.settings.lease_ttl;
                current.next_renew = sent + self.settings.renew_every;
                *failing = false;
                self.publish(true, Some(ActiveWorker::from_lease(&lease)));
                Renewal::Renewed
            }
            Ok(Ok(lease)) => Renewal::Lost(ActiveWorker::from_lease(&lease)),
            Ok(Err(error)) => {
                if !*failing {
                    tracing::warn!(
                        error = %error_chain(&error),
                        "renewing the worker lease failed; retrying until it expires"
                    );
                    *failing = true;
                }
                current.next_renew = (Instant::now() + self.settings.retry).min(current.deadline);
                Renewal::Failed
            }
            Err(_) => Renewal::Expired,
        }
    }

    /// Release the lease if this worker holds it.
    async fn release(&self) {
        let released = tokio::time::timeout(
            RELEASE_TIMEOUT,
            self.store.release_lease(WORKER_LEASE, &self.holder),
        )
        .await;
        match released {
            Ok(Ok(true)) => tracing::info!("worker lease released"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => tracing::warn!(
                error = %error_chain(&error),
                "releasing the worker lease failed; it lapses by itself"
            ),
            Err(_) => tracing::warn!("releasing the worker lease timed out; it lapses by itself"),
        }
    }
}

/// Run `job` at its interval, the first time at once, until aborted. A run that fails or panics is logged; the job
/// runs again at its next interval.
async fn run_job(job: Arc<dyn Job>, store: Arc<dyn Store>) {
    let mut ticks = tokio::time::interval(job.every().max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let started = Instant::now();
        match AssertUnwindSafe(job.run(&*store)).catch_unwind().await {
            Ok(Ok(())) => {
                tracing::debug!(elapsed_ms = started.elapsed().as_millis(), "job run done");
            }
            Ok(Err(error)) => tracing::warn!(
                error = %error_chain(&error),
                "job run failed; it runs again at its next interval"
            ),
            Err(panic) => tracing::error!(
                panic = %panic_message(panic.as_ref()),
                "job run panicked; it runs again at its next interval"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    // Test code: panicking is how it reports a failure.
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicBool, Ordering};

    use ferry_store::SqliteStore;

    use super::*;
    use crate::jobs::JobError;

    /// A short lease for tests: 600 ms, renewed every 200 ms, standbys retrying every 50 to 100 ms.
    fn fast() -> WorkerSettings {
        WorkerSettings {
            lease_ttl: Duration::from_millis(600),
            renew_every: Duration::from_millis(200),
            retry: Duration::from_millis(50),
        }
    }

    /// Counts its runs (and panics after counting, when asked to).
    struct CountingJob {
        runs: watch::Sender<u64>,
        every: Duration,
        panics: bool,
    }

    impl CountingJob {
        fn new(every: Duration, panics: bool) -> Arc<Self> {
            Arc::new(CountingJob {
                runs: watch::channel(0).0,
                every,
                panics,
            })
        }

        async fn wait_runs(&self, at_least: u64, limit: Duration) {
            let mut runs = self.runs.subscribe();
            tokio::time::timeout(limit, runs.wait_for(|n| *n >= at_least))
                .await
                .unwrap_or_else(|_| panic!("{at_least} runs not within {limit:?}"))
                .expect("counter");
        }
    }

    #[async_trait::async_trait]
    impl Job for CountingJob {
        fn name(&self) -> &'static str {
            if self.panics {
                "boom"
            } else {
                "count"
            }
        }
        fn every(&self) -> Duration {
            self.every
        }
        async fn run(&self, _store: &dyn Store) -> Result<(), JobError> {
            self.runs.send_modify(|n| *n += 1);
            if self.panics {
                panic!("boom at run {}", *self.runs.borrow());
            }
            Ok(())
        }
    }

    /// Starts, then never ends until aborted; says both.
    struct BlockingJob {
        started: watch::Sender<bool>,
        aborted: Arc<AtomicBool>,
    }

    struct SetOnDrop(Arc<AtomicBool>);

    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[async_trait::async_trait]
    impl Job for BlockingJob {
        fn name(&self) -> &'static str {
            "block"
        }
        fn every(&self) -> Duration {
            Duration::from_secs(3600)
        }
        async fn run(&self, _store: &dyn Store) -> Result<(), JobError> {
            let _guard = SetOnDrop(Arc::clone(&self.aborted));
            self.started.send_replace(true);
            std::future::pending::<()>().await;
            Ok(())
        }
    }

    async fn wait_state(
        worker: &WorkerHandle,
        limit: Duration,
        what: &str,
        check: impl Fn(&WorkerState) -> bool,
    ) -> WorkerState {
        let mut state = worker.subscribe();
        let found = tokio::time::timeout(limit, state.wait_for(|s| check(s)))
            .await
            .unwrap_or_else(|_| panic!("not within {limit:?}: {what}"))
            .expect("worker state");
        found.clone()
    }

    /// Bounded wait on a condition over several workers: check every 10 ms, for at most `limit`.
    async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        while !check() {
            assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn actives(workers: &[WorkerHandle]) -> Vec<usize> {
        (0..workers.len())
            .filter(|&i| workers[i].is_active())
            .collect()
    }

    #[test]
    fn settings_and_the_takeover_bound() {
        let defaults = WorkerSettings::default();
        assert_eq!(defaults.lease_ttl, Duration::from_secs(10));
        assert_eq!(defaults.renew_every, Duration::from_secs(10) / 3);
        assert_eq!(defaults.retry, Duration::from_secs(1));
        assert_eq!(defaults.takeover_bound(), Duration::from_secs(12));
        let odd = WorkerSettings {
            lease_ttl: Duration::from_millis(1),
            renew_every: Duration::from_secs(5),
            retry: Duration::ZERO,
        };
        let checked = odd.checked();
        assert_eq!(checked.lease_ttl, MIN_TTL);
        assert!(checked.renew_every < checked.lease_ttl && !checked.renew_every.is_zero());
        assert_eq!(checked.retry, MIN_RETRY);
    }

    #[test]
    fn the_active_node_is_read_from_the_holder() {
        let lease = Lease {
            name: WORKER_LEASE.to_owned(),
            holder: "node#with#hashes#0123456789ab".to_owned(),
            term: 3,
            acquired_at_ms: 10,
            expires_at_ms: 20,
        };
        let active = ActiveWorker::from_lease(&lease);
        assert_eq!(active.node_id, "node#with#hashes");
        assert_eq!(
            (active.term, active.since_ms, active.expires_at_ms),
            (3, 10, 20)
        );
    }

    #[tokio::test]
    async fn a_worker_alone_runs_its_jobs_renews_and_releases_on_stop() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.expect("store"));
        let job = CountingJob::new(Duration::from_millis(20), false);
        let worker = Worker::start(store.clone(), "node-a", fast(), vec![job.clone()]);
        let state = wait_state(&worker, Duration::from_secs(5), "active", |s| s.active).await;
        let me = state.holder.expect("holder");
        assert_eq!(me.node_id, "node-a");
        assert_eq!(me.holder, worker.holder());
        assert!(worker.holder().starts_with("node-a#"));
        assert_eq!(
            active_worker(&*store)
                .await
                .expect("read")
                .map(|w| w.holder),
            Some(worker.holder().to_owned())
        );
        job.wait_runs(3, Duration::from_secs(5)).await;
        // Renewals move the expiry on within the same term.
        wait_state(&worker, Duration::from_secs(5), "a renewal", |s| {
            s.active
                && s.holder
                    .as_ref()
                    .is_some_and(|h| h.term == me.term && h.expires_at_ms > me.expires_at_ms)
        })
        .await;

        worker.stop().await;
        assert_eq!(
            active_worker(&*store).await.expect("read"),
            None,
            "released"
        );
        assert_eq!(
            Arc::strong_count(&job),
            1,
            "the job's runner is gone with the worker"
        );
    }

    /// Three workers on one file (two with the same node id): one is active and the others stand by naming it;
    /// stopping the active one hands over at once (it releases the lease).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_of_several_workers_is_active_and_a_stopped_one_hands_over() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ferry.db");
        let mut workers = Vec::new();
        for node in ["node-a", "node-b", "node-b"] {
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.expect("open"));
            workers.push(Worker::start(store, node, fast(), Vec::new()));
        }
        eventually(
            Duration::from_secs(10),
            "one active, the others naming it",
            || {
                let active = actives(&workers);
                active.len() == 1
                    && workers.iter().all(|w| {
                        w.active_holder().map(|h| h.holder)
                            == Some(workers[active[0]].holder().to_owned())
                    })
            },
        )
        .await;
        let first = actives(&workers)[0];
        let stopping = workers.remove(first);
        let handed_at = std::time::Instant::now();
        stopping.stop().await;
        eventually(Duration::from_secs(5), "another active", || {
            actives(&workers).len() == 1
        })
        .await;
        let took = handed_at.elapsed();
        assert!(
            took <= 2 * fast().retry + Duration::from_millis(500),
            "after a release a standby takes over within its pause: {took:?}"
        );
        for worker in workers {
            worker.stop().await;
        }
    }

    /// A job whose `name` (on its first call) or `every` (on its first two calls) panics: outside any run, so
    /// that the lease loop itself or the job's runner dies. Counts its runs.
    struct FaultyJob {
        name_panics: AtomicBool,
        every_panics: std::sync::atomic::AtomicU32,
        runs: watch::Sender<u64>,
    }

    #[async_trait::async_trait]
    impl Job for FaultyJob {
        fn name(&self) -> &'static str {
            if self.name_panics.swap(false, Ordering::SeqCst) {
                panic!("name fails once");
            }
            "faulty"
        }
        fn every(&self) -> Duration {
            let left = self.every_panics.load(Ordering::SeqCst);
            if left > 0 {
                self.every_panics.store(left - 1, Ordering::SeqCst);
                panic!("every fails {left} more times");
            }
            Duration::from_millis(10)
        }
        async fn run(&self, _store: &dyn Store) -> Result<(), JobError> {
            self.runs.send_modify(|n| *n += 1);
            Ok(())
        }
    }

    /// The lease loop panicking (while starting the jobs) is restarted, and so is a job runner that dies: the
    /// worker ends up active with the job running.
    #[tokio::test]
    async fn a_panicking_loop_or_runner_is_restarted() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.expect("store"));
        let job = Arc::new(FaultyJob {
            name_panics: AtomicBool::new(true),
            every_panics: std::sync::atomic::AtomicU32::new(2),
            runs: watch::channel(0).0,
        });
        let worker = Worker::start(store.clone(), "node-f", fast(), vec![job.clone()]);
        let mut runs = job.runs.subscribe();
        tokio::time::timeout(Duration::from_secs(10), runs.wait_for(|n| *n >= 2))
            .await
            .expect("the job runs after the restarts")
            .expect("runs");
        assert!(worker.is_active());
        assert_eq!(job.every_panics.load(Ordering::SeqCst), 0);
        assert!(!job.name_panics.load(Ordering::SeqCst));
        worker.stop().await;
        assert_eq!(active_worker(&*store).await.expect("read"), None);
    }

    /// The store goes away under the active worker: it stops its jobs by the lease's deadline, since another
    /// worker may take the lease from then on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_active_worker_that_cannot_renew_steps_down_by_its_deadline() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = Arc::new(
            SqliteStore::open(&dir.path().join("ferry.db"))
                .await
                .expect("open"),
        );
        let store: Arc<dyn Store> = sqlite.clone();
        let started = watch::channel(false).0;
        let aborted = Arc::new(AtomicBool::new(false));
        let job = Arc::new(BlockingJob {
            started: started.clone(),
            aborted: Arc::clone(&aborted),
        });
        let worker = Worker::start(store, "node-s", fast(), vec![job]);
        wait_state(&worker, Duration::from_secs(5), "active", |s| s.active).await;
        tokio::time::timeout(Duration::from_secs(5), started.subscribe().wait_for(|s| *s))
            .await
            .expect("job started")
            .expect("started");
        let closed_at = std::time::Instant::now();
        sqlite.close().await;
        wait_state(&worker, Duration::from_secs(5), "inactive", |s| !s.active).await;
        let took = closed_at.elapsed();
        assert!(
            took <= fast().lease_ttl + Duration::from_millis(300),
            "stepped down {took:?} after the store went"
        );
        assert!(
            aborted.load(Ordering::SeqCst),
            "the running job was stopped"
        );
        worker.stop().await;
    }

    /// Three workers on one PostgreSQL database; the active one dies without releasing (its tasks aborted, as by
    /// kill -9); one standby takes over within `lease_ttl + 2 × retry`, in the next term, and runs the jobs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_standby_takes_over_when_the_active_worker_is_killed() {
        ferry_store::testdb::with_database(|options| async move {
            let settings = WorkerSettings {
                lease_ttl: Duration::from_secs(1),
                renew_every: Duration::from_millis(333),
                retry: Duration::from_millis(100),
            };
            let open = || async {
                let store: Arc<dyn Store> = Arc::new(
                    ferry_store::PostgresStore::connect_with(options.clone())
                        .await
                        .expect("open"),
                );
                store
            };
            let doomed_job = CountingJob::new(Duration::from_millis(20), false);
            let doomed = Worker::start(open().await, "node-a", settings.clone(), vec![doomed_job.clone()]);
            let first = wait_state(&doomed, Duration::from_secs(5), "a active", |s| s.active)
                .await
                .holder
                .expect("holder");
            let jobs = [
                CountingJob::new(Duration::from_millis(20), false),
                CountingJob::new(Duration::from_millis(20), false),
            ];
            let standbys = vec![
                Worker::start(open().await, "node-b", settings.clone(), vec![jobs[0].clone()]),
                Worker::start(open().await, "node-c", settings.clone(), vec![jobs[1].clone()]),
            ];
            for standby in &standbys {
                let seen = wait_state(standby, Duration::from_secs(5), "standing by", |s| {
                    !s.active && s.holder.is_some()
                })
                .await;
                assert_eq!(seen.holder.map(|h| h.node_id).as_deref(), Some("node-a"));
            }
            doomed_job.wait_runs(1, Duration::from_secs(5)).await;

            let killed_at = std::time::Instant::now();
            drop(doomed);
            eventually(settings.takeover_bound() + Duration::from_secs(2), "a standby active", || {
                actives(&standbys).len() == 1
            })
            .await;
            let took = killed_at.elapsed();
            eprintln!(
                "takeover after {} ms (lease {} ms, renewal every {} ms, retry {}-{} ms, bound {} ms)",
                took.as_millis(),
                settings.lease_ttl.as_millis(),
                settings.renew_every.as_millis(),
                settings.retry.as_millis(),
                2 * settings.retry.as_millis(),
                settings.takeover_bound().as_millis()
            );
            assert!(
                took <= settings.takeover_bound() + Duration::from_millis(200),
                "takeover took {took:?}"
            );
            let winner = actives(&standbys)[0];
            let now = standbys[winner].active_holder().expect("holder");
            assert_eq!(now.term, first.term + 1, "a new term");
            assert!(now.since_ms >= first.expires_at_ms, "not before the dead lease lapsed");
            jobs[winner].wait_runs(1, Duration::from_secs(5)).await;
            assert_eq!(*jobs[1 - winner].runs.borrow(), 0, "the other standby ran nothing");
            eventually(Duration::from_secs(5), "the killed worker's job is gone", || {
                Arc::strong_count(&doomed_job) == 1
            })
            .await;
            let store = open().await;
            assert_eq!(
                active_worker(&*store).await.expect("read").map(|w| w.holder),
                Some(standbys[winner].holder().to_owned())
            );
            for standby in standbys {
                standby.stop().await;
            }
            assert_eq!(active_worker(&*store).await.expect("read"), None);
        })
        .await;
    }
}
