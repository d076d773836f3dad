//! The management API (`ferry-admin`) on the node's admin listener: started with the node, stopped after the
//! public listener has drained.

use std::sync::Arc;
use std::time::Duration;

use ferry_store::Store;

/// The running management API.
pub(crate) struct AdminServer {
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<Result<(), ferry_admin::ServeError>>>,
}

/// Serve the management API on `listener` (nothing when `None`: disabled).
pub(crate) fn start(
    listener: Option<tokio::net::TcpListener>,
    store: Arc<dyn Store>,
    settings: &ferry_config::AdminSettings,
) -> AdminServer {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = listener.map(|listener| {
        // LEAD: plug the relay's ChangeNotifier (push settings, disconnect revoked secrets and deleted tenants)
        // with `.notifier(…)` and the OIDC admin-role check with `.token_check(…)` here. Until then: admin keys
        // only, and no change notifications.
        let router = ferry_admin::AdminApi::new(store)
            .notifier(Arc::new(ferry_admin::NoopNotifier))
            .max_body_size(settings.max_body_size)
            .router();
        tracing::info!(addr = ?listener.local_addr().ok(), "management api started");
        tokio::spawn(ferry_admin::serve(listener, router, async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }))
    });
    AdminServer { stop, task }
}

impl AdminServer {
    /// Stop taking requests and wait (at most `deadline`) for those in flight.
    pub(crate) async fn shutdown(mut self, deadline: Duration) {
        let _ = self.stop.send(true);
        let Some(task) = self.task.take() else { return };
        match tokio::time::timeout(deadline, task).await {
            Ok(Ok(Ok(()))) => tracing::info!("management api stopped"),
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "management api failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "management api task failed"),
            Err(_) => tracing::warn!("management api did not stop within the drain timeout"),
        }
    }
}
