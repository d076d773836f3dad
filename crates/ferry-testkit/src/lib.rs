//! Dev-only test kit for Ferry's end-to-end tests.
//!
//! Owns: starting `ferry` processes (server, tenant creation, connector) with captured output that a test can
//! wait on with a bounded timeout; in-process HTTP targets (echo, download, upload sink, slow stream, SSE,
//! trailers, WebSocket echo, hang, fixed status); test certificates; an HTTP/3 client ([`h3`]); real forward proxies (tinyproxy, squid); a raw HTTP/1.1 client for requests no
//! well-behaved client would send; memory probes from `/proc`. Does not own: any of Ferry's behaviour, and no
//! test lives here.
//!
//! Rules the kit follows and tests should too: every port is `127.0.0.1:0`, every wait is bounded, readiness is
//! a log line or a bounded poll ([`eventually`]), never a sleep.

pub mod client;
pub mod h3;
pub mod mem;
pub mod pattern;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod raw;
pub mod target;

pub use client::{http_client, relay_url};
pub use h3::{H3Client, H3Response};
pub use mem::{peak_rss_kib, rss_kib};
pub use pattern::{pattern_sha256, PatternStream, Sha256Hex};
pub use pki::TestPki;
pub use process::{
    create_tenant, Connector, ConnectorOptions, FerryServer, Output, ServerOptions, Stack,
    StackOptions,
};
pub use proxy::{ForwardProxy, ProxyKind};
pub use raw::{RawConn, RawResponse};
pub use target::{EchoReply, TargetKind, TargetServer};

use std::future::Future;
use std::time::{Duration, Instant};

/// The default bound for "this should be ready soon" waits (process start, tunnel up).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Poll `f` until it returns `Ok`, at most `timeout`; returns the last error when the time is up.
///
/// The pause between attempts is short and fixed; this is a bounded poll, not a readiness sleep.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = tokio::time::timeout_at(deadline.into(), f()).await;
        match attempt {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if Instant::now() >= deadline => {
                return Err(e.context(format!("still failing after {timeout:?}")))
            }
            Err(_) => anyhow::bail!("attempt still running when {timeout:?} ran out"),
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// Run `fut` with a time limit, turning the timeout into an error that names `what`.
pub async fn within<T>(
    timeout: Duration,
    what: &str,
    fut: impl Future<Output = T>,
) -> anyhow::Result<T> {
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow::anyhow!("{what}: not done within {timeout:?}"))
}

static HEAVY: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Exclusive slot for a test that saturates the machine (multi-GiB transfers, memory measurements): while it
/// runs, no test holding [`light_slot`] runs in the same test binary.
pub async fn heavy_slot() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    HEAVY.write().await
}

/// Shared slot for ordinary (especially timing-sensitive) tests; they run together but never beside a heavy one.
pub async fn light_slot() -> tokio::sync::RwLockReadGuard<'static, ()> {
    HEAVY.read().await
}

/// Lowercase hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
