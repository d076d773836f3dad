//! A runtime per core: each public connection is served, from its first byte to its close, by one thread running
//! a single-threaded tokio runtime, together with the tasks it spawns (HTTP/2 streams, a tunnel's connection).
//!
//! Why: on tokio's multi-threaded runtime a relayed request crosses the client's connection task, the tunnel's
//! HTTP/2 connection task and a stream task wherever they happen to run, and each hand-over between threads is
//! a wake-up through the kernel (`futex`): about two per request in the node (docs/performance.md, "A runtime per
//! core"). With every connection pinned to a core, a request whose tunnel lives on the same core never leaves its
//! thread; the relay prefers such a tunnel ([`current`]). The accept loop stays where it is and hands each
//! accepted socket to the core with the fewest open connections.
//!
//! tokio's `LocalPoolHandle` (tokio-util) does the pinning too, but spawns a forwarding task on the caller's
//! runtime for every task it pins: a task per connection for nothing, since Ferry's connection futures are
//! `Send` and a runtime's `Handle::spawn` takes them directly.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

thread_local! {
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the core whose thread this is, or `None` off the cores (the main runtime, tests).
pub fn current() -> Option<usize> {
    CURRENT.with(Cell::get)
}

/// One core: its runtime's handle and the connections it serves.
struct Core {
    handle: tokio::runtime::Handle,
    open: Arc<AtomicUsize>,
}

/// The cores of a process. Their threads stop, dropping what they still run, when this is dropped.
pub struct Cores {
    cores: Vec<Core>,
    next: AtomicUsize,
    /// Dropped with `Cores`: each thread's `block_on` then returns.
    _stop: tokio::sync::watch::Sender<()>,
}

impl std::fmt::Debug for Cores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cores").field("len", &self.len()).finish()
    }
}

impl Cores {
    /// Start `n` (at least 1) threads, `ferry-core-0` …, each running a single-threaded runtime.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let (stop, _) = tokio::sync::watch::channel(());
        let mut cores = Vec::with_capacity(n.max(1));
        for index in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let mut stopped = stop.subscribe();
            std::thread::Builder::new()
                .name(format!("ferry-core-{index}"))
                .spawn(move || {
                    CURRENT.with(|c| c.set(Some(index)));
                    runtime.block_on(async move {
                        // resolves with an error once `Cores` (the sender) is dropped
                        while stopped.changed().await.is_ok() {}
                    });
                })?;
            cores.push(Core {
                handle,
                open: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Self {
            cores,
            next: AtomicUsize::new(0),
            _stop: stop,
        })
    }

    pub fn len(&self) -> usize {
        self.cores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cores.is_empty()
    }

    /// Run `task` on the core with the fewest open tasks (ties in turn), and count it open there until it ends.
    /// `task` is built there: a socket it registers (`TcpStream::from_std`) belongs to that core's runtime.
    pub fn spawn<F, Fut>(&self, task: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let n = self.cores.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut pick = &self.cores[start % n];
        for i in 1..n {
            let core = &self.cores[(start + i) % n];
            if core.open.load(Ordering::Relaxed) < pick.open.load(Ordering::Relaxed) {
                pick = core;
            }
        }
        let open = pick.open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        pick.handle.spawn(async move {
            let _open = OpenTask(open);
            task().await;
        });
    }
}

/// Counts a task open on its core until it ends or is dropped.
struct OpenTask(Arc<AtomicUsize>);

impl Drop for OpenTask {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn tasks_run_on_the_least_busy_core_and_know_it() {
        assert_eq!(current(), None, "the test's own runtime is no core");
        let cores = Cores::start(2).expect("cores");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
        for _ in 0..4 {
            let tx = tx.clone();
            let mut hold = hold_rx.clone();
            cores.spawn(move || async move {
                let _ = tx.send(current());
                let _ = hold.wait_for(|go| *go).await;
            });
        }
        let mut seen = Vec::new();
        for _ in 0..4 {
            let core = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("in time")
                .expect("a core");
            seen.push(core.expect("on a core"));
        }
        seen.sort_unstable();
        assert_eq!(seen, [0, 0, 1, 1], "spread by open tasks");
        let _ = hold_tx.send(true);
        // the counts go back down as tasks end
        tokio::time::timeout(Duration::from_secs(5), async {
            while cores
                .cores
                .iter()
                .any(|c| c.open.load(Ordering::Relaxed) > 0)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("tasks ended");
    }
}
