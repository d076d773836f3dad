//! Counting relayed requests: per tenant per minute statistics (count, bytes, status classes, latency
//! histogram) kept in memory and written to the store by the watcher, and the optional request log, buffered and
//! appended in batches.
//!
//! Recording never waits for the store: a request adds to in-memory counters under a short lock. When the store
//! is slow or down, the request log buffer is bounded and drops (and counts) the overflow; statistics of the
//! current and last minutes stay in memory until a write succeeds.

use crate::TenantMap;
use ferry_proto::TenantName;
use ferry_store::{RequestLogEntry, StatsRecord, Store, StoreError, LATENCY_BUCKETS_MS};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Most request log entries held while the store is not keeping up.
const LOG_BUFFER_LIMIT: usize = 10_000;
/// Minutes kept in memory after they ended (a late flush still finds them).
const KEEP_MINUTES: i64 = 2;

/// One finished request, as recorded.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub tenant: TenantName,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Time to the response head (or to the error).
    pub latency: Duration,
}

/// What a request log entry needs beyond the [`Outcome`].
#[derive(Debug, Clone)]
pub struct LogDetails {
    pub at_ms: i64,
    pub request_id: String,
    pub method: String,
    pub target: String,
    pub path: String,
    pub client_addr: String,
}

/// One tenant's minutes by their start (Unix seconds).
type MinuteMap = HashMap<i64, Minute, foldhash::fast::RandomState>;

/// One tenant's minute, and whether it changed since it was last written.
struct Minute {
    record: StatsRecord,
    dirty: bool,
}

/// The node's counters.
pub struct Stats {
    /// By tenant, then minute: a request finds its counters without allocating a key.
    minutes: Mutex<TenantMap<MinuteMap>>,
    log_enabled: bool,
    log: Mutex<Vec<RequestLogEntry>>,
    log_dropped: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The index of the latency bucket of `latency`.
pub fn latency_bucket(latency: Duration) -> usize {
    let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    LATENCY_BUCKETS_MS
        .iter()
        .position(|&bound| ms <= bound)
        .unwrap_or(LATENCY_BUCKETS_MS.len())
}

impl Stats {
    pub fn new(log_enabled: bool) -> Self {
        Self {
            minutes: Mutex::new(TenantMap::default()),
            log_enabled,
            log: Mutex::new(Vec::new()),
            log_dropped: AtomicU64::new(0),
        }
    }

    pub fn log_enabled(&self) -> bool {
        self.log_enabled
    }

    /// Count one request that ended at `now_unix` (seconds), and log it when the request log is on.
    pub fn record(&self, outcome: &Outcome, now_unix: i64, details: Option<LogDetails>) {
        let minute = now_unix - now_unix.rem_euclid(60);
        {
            let mut tenants = lock(&self.minutes);
            let minutes = match tenants.get_mut(&outcome.tenant) {
                Some(minutes) => minutes,
                None => tenants.entry(outcome.tenant.clone()).or_default(),
            };
            let entry = minutes.entry(minute).or_insert_with(|| Minute {
                record: StatsRecord::new(outcome.tenant.clone(), minute),
                dirty: false,
            });
            entry.dirty = true;
            let record = &mut entry.record;
            record.requests += 1;
            record.bytes_in += outcome.bytes_in;
            record.bytes_out += outcome.bytes_out;
            let class = usize::from(outcome.status / 100).clamp(1, 5) - 1;
            record.status_classes[class] += 1;
            record.latency_buckets[latency_bucket(outcome.latency)] += 1;
        }
        if let (true, Some(d)) = (self.log_enabled, details) {
            let mut log = lock(&self.log);
            if log.len() >= LOG_BUFFER_LIMIT {
                self.log_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            log.push(RequestLogEntry {
                id: 0,
                tenant: outcome.tenant.clone(),
                at_ms: d.at_ms,
                request_id: d.request_id,
                method: d.method,
                target: d.target,
                path: d.path,
                status: outcome.status,
                duration_ms: u64::try_from(outcome.latency.as_millis()).unwrap_or(u64::MAX),
                bytes_in: outcome.bytes_in,
                bytes_out: outcome.bytes_out,
                client_addr: d.client_addr,
            });
        }
    }

    /// Write the changed minutes (cumulative counts of this node) and the buffered log to the store, then
    /// forget minutes that ended long ago. On failure the changes stay queued for the next flush.
    pub async fn flush(
        &self,
        store: &dyn Store,
        node: &str,
        now_unix: i64,
    ) -> Result<(), StoreError> {
        let records: Vec<StatsRecord> = lock(&self.minutes)
            .values_mut()
            .flat_map(|minutes| minutes.values_mut())
            .filter(|m| m.dirty)
            .map(|m| {
                m.dirty = false;
                m.record.clone()
            })
            .collect();
        if !records.is_empty() {
            if let Err(error) = store.put_stats(node, &records).await {
                let mut tenants = lock(&self.minutes);
                for record in records {
                    if let Some(m) = tenants
                        .get_mut(&record.tenant)
                        .and_then(|minutes| minutes.get_mut(&record.minute))
                    {
                        m.dirty = true;
                    }
                }
                return Err(error);
            }
        }
        let current = now_unix - now_unix.rem_euclid(60);
        lock(&self.minutes).retain(|_, minutes| {
            minutes.retain(|minute, m| m.dirty || *minute >= current - 60 * KEEP_MINUTES);
            !minutes.is_empty()
        });
        let entries: Vec<RequestLogEntry> = std::mem::take(&mut *lock(&self.log));
        if !entries.is_empty() {
            if let Err(error) = store.append_request_log(&entries).await {
                let mut log = lock(&self.log);
                let room = LOG_BUFFER_LIMIT.saturating_sub(log.len());
                let kept = entries.len().min(room);
                let lost = entries.len() - kept;
                log.extend(entries.into_iter().take(kept));
                if lost > 0 {
                    self.log_dropped.fetch_add(lost as u64, Ordering::Relaxed);
                }
                return Err(error);
            }
        }
        let dropped = self.log_dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "request log entries dropped: the store did not keep up"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_store::{SqliteStore, TenantFields};

    #[test]
    fn buckets() {
        assert_eq!(latency_bucket(Duration::from_micros(300)), 0);
        assert_eq!(latency_bucket(Duration::from_millis(1)), 0);
        assert_eq!(latency_bucket(Duration::from_millis(3)), 2);
        assert_eq!(
            latency_bucket(Duration::from_secs(60)),
            LATENCY_BUCKETS_MS.len()
        );
    }

    #[tokio::test]
    async fn counts_reach_the_store() {
        let store = SqliteStore::open_in_memory().await.expect("store");
        let tenant: TenantName = "acme".parse().expect("name");
        store
            .create_tenant(&tenant, &TenantFields::default())
            .await
            .expect("create");
        let stats = Stats::new(true);
        let now = 1_800_000_030;
        for status in [200, 201, 404, 502] {
            stats.record(
                &Outcome {
                    tenant: tenant.clone(),
                    status,
                    bytes_in: 10,
                    bytes_out: 100,
                    latency: Duration::from_millis(3),
                },
                now,
                Some(LogDetails {
                    at_ms: now * 1000,
                    request_id: format!("r{status}"),
                    method: "GET".into(),
                    target: "app".into(),
                    path: "/x".into(),
                    client_addr: "127.0.0.1:1".into(),
                }),
            );
        }
        stats.flush(&store, "n1", now).await.expect("flush");
        // A second flush with nothing new writes nothing and keeps the totals.
        stats.flush(&store, "n1", now).await.expect("flush");
        let rows = store
            .stats(Some(&tenant), now - 60, now + 60)
            .await
            .expect("stats");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].requests, 4);
        assert_eq!(rows[0].bytes_out, 400);
        assert_eq!(rows[0].status_classes, [0, 2, 0, 1, 1]);
        assert_eq!(rows[0].latency_buckets[2], 4);
        let log = store
            .request_log(Some(&tenant), None, 10)
            .await
            .expect("log");
        assert_eq!(log.len(), 4);
    }
}
