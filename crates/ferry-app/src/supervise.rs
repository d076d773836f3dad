//! Supervision of a node's long-lived background tasks: every task runs for the node's life, so one that ends,
//! by a panic or otherwise, has failed. The supervisor logs which one and how, and stops the node (exit code 1),
//! so that the service manager restarts it whole, rather than letting it run on without, say, its heartbeats.
//! Tasks are aborted when the supervisor is dropped.

use tokio::task::JoinHandle;

/// Named tasks under watch.
#[derive(Default)]
pub(crate) struct Supervisor {
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Supervisor {
    pub fn watch(&mut self, tasks: impl IntoIterator<Item = (&'static str, JoinHandle<()>)>) {
        self.tasks.extend(tasks);
    }

    /// Resolves when a task ends, with its name and why; never when there is none.
    pub async fn failure(&mut self) -> (&'static str, String) {
        if self.tasks.is_empty() {
            return std::future::pending().await;
        }
        let (result, index, _) =
            futures_util::future::select_all(self.tasks.iter_mut().map(|(_, handle)| handle)).await;
        let (name, _) = self.tasks.swap_remove(index);
        let why = match result {
            Ok(()) => "it ended".to_owned(),
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let text = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                format!("it panicked: {text}")
            }
            Err(e) => format!("it was cancelled: {e}"),
        };
        (name, why)
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for (_, task) in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_reported_by_name() {
        let mut s = Supervisor::default();
        s.watch([
            ("forever", tokio::spawn(std::future::pending::<()>())),
            (
                "doomed",
                tokio::spawn(async {
                    tokio::task::yield_now().await;
                    panic!("boom");
                }),
            ),
        ]);
        let (name, why) = s.failure().await;
        assert_eq!(name, "doomed");
        assert!(why.contains("panicked: boom"), "{why}");
        let (name, why) = tokio::time::timeout(std::time::Duration::from_millis(50), s.failure())
            .await
            .map_or(("still running", String::new()), |r| r);
        assert_eq!((name, why.as_str()), ("still running", ""));
    }
}
