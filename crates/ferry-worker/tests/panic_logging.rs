//! A job that panics every run: each panic is logged, with the node and the job, and the job keeps running. In a
//! test binary of its own, so that its subscriber is the only one (tracing's per-callsite interest is global).
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_store::{SqliteStore, Store};
use ferry_worker::{Job, JobError, Worker, WorkerSettings};
use tokio::sync::watch;

struct Boom {
    runs: watch::Sender<u64>,
}

#[async_trait::async_trait]
impl Job for Boom {
    fn name(&self) -> &'static str {
        "boom"
    }
    fn every(&self) -> Duration {
        Duration::from_millis(10)
    }
    async fn run(&self, _store: &dyn Store) -> Result<(), JobError> {
        self.runs.send_modify(|n| *n += 1);
        panic!("boom at run {}", *self.runs.borrow());
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_panicking_job_is_logged_and_runs_again() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    )
    .expect("the only subscriber of this test binary");

    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.expect("store"));
    let job = Arc::new(Boom {
        runs: watch::channel(0).0,
    });
    let settings = WorkerSettings {
        lease_ttl: Duration::from_millis(600),
        renew_every: Duration::from_millis(200),
        retry: Duration::from_millis(50),
    };
    let worker = Worker::start(store, "node-p", settings, vec![job.clone()]);
    let mut runs = job.runs.subscribe();
    tokio::time::timeout(Duration::from_secs(5), runs.wait_for(|n| *n >= 3))
        .await
        .expect("three runs")
        .expect("runs");
    assert!(worker.is_active(), "the worker goes on");
    worker.stop().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).expect("utf-8");
    let panics: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("job run panicked"))
        .collect();
    assert!(panics.len() >= 2, "{logs}");
    assert!(
        panics[0].contains("ERROR")
            && panics[0].contains("node_id=node-p")
            && panics[0].contains("job=\"boom\"")
            && panics[0].contains("panic=boom at run 1"),
        "{}",
        panics[0]
    );
    assert!(logs.contains("worker lease acquired"), "{logs}");
    assert!(logs.contains("worker lease released"), "{logs}");
}
