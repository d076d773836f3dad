//! Ferry's Prometheus metrics, on the `prometheus-client` crate: the pieces every crate that counts something
//! shares (docs/metrics.md lists the metrics themselves).
//!
//! - [`Histogram`]: a histogram whose `observe` is three relaxed atomic adds (prometheus-client's own takes a
//!   lock), for the per-request paths;
//! - [`TenantCap`]: the bound on per-tenant series: the first `max` tenants seen get a label of their own, the rest
//!   share [`OTHER`];
//! - [`Snapshot`]: a collector that reads gauges and counters kept elsewhere (tunnels in the registry, upstream
//!   servers' counters) at scrape time, so that the hot path keeps its plain atomics;
//! - [`ProcessCollector`]: CPU, memory and open files of this process, read from `/proc` at scrape time;
//! - [`render`]: the registry in the OpenMetrics text format, served with [`CONTENT_TYPE`].
//!
//! Handles (counters, histograms) are resolved once per tenant, target, route or upstream and kept in the structs
//! that already exist per tenant, route or upstream: a request never builds a label set or looks up a family.

pub use prometheus_client;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A label set: (name, value) pairs.
pub type Labels = Vec<(&'static str, String)>;

/// The label value tenants beyond the cap are counted under (not a valid tenant name, so it cannot collide).
pub const OTHER: &str = "_other";

/// The media type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The status classes, as label values, by `status / 100 - 1`.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index into [`CLASSES`] of an HTTP status.
pub fn class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// Upper bounds (seconds) of request durations: 1 ms to 60 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Upper bounds (seconds) of short operations (a bus publish, a store query): 50 µs to 5 s.
pub const FAST_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// A label value with backslash, double quote and newline escaped, for values from configuration (route and
/// upstream names): prometheus-client writes label values as they are.
pub fn escape(v: &str) -> String {
    if !v.contains(['\\', '"', '\n']) {
        return v.to_owned();
    }
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The registry in the OpenMetrics text format (ending with `# EOF`).
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        // only a label or writer error, neither of which a String produces
        out.push_str(&format!("# encoding failed: {e}\n"));
    }
    out
}

struct HistogramInner {
    /// Upper bounds in nanoseconds, ascending; the implicit last bucket is +Inf.
    bounds: Vec<u64>,
    bounds_secs: &'static [f64],
    /// One more than `bounds`: the +Inf bucket.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// A histogram of durations whose [`Histogram::observe`] takes no lock: a bucket, the count and the sum are each a
/// relaxed atomic add. Clones share the same counts (a handle).
#[derive(Clone)]
pub struct Histogram(Arc<HistogramInner>);

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.0.count.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new(LATENCY_BUCKETS)
    }
}

impl Histogram {
    /// A histogram with these upper bounds in seconds (ascending).
    pub fn new(bounds_secs: &'static [f64]) -> Self {
        let bounds = bounds_secs
            .iter()
            .map(|s| (s * 1e9).round() as u64)
            .collect::<Vec<_>>();
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self(Arc::new(HistogramInner {
            bounds,
            bounds_secs,
            buckets,
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }))
    }

    /// A histogram of short operations ([`FAST_BUCKETS`]).
    pub fn fast() -> Self {
        Self::new(FAST_BUCKETS)
    }

    /// Count one observation.
    pub fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = self
            .0
            .bounds
            .iter()
            .position(|b| nanos <= *b)
            .unwrap_or(self.0.bounds.len());
        if let Some(b) = self.0.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &self.0;
        let mut buckets = Vec::with_capacity(inner.buckets.len());
        let mut total = 0;
        for (i, b) in inner.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            total += n;
            let bound = inner.bounds_secs.get(i).copied().unwrap_or(f64::MAX);
            buckets.push((bound, n));
        }
        // the count is read after the buckets and made to agree with them (a scrape racing an observe)
        let sum = inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, total, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The bound on per-tenant series: the first `max` tenants asked for get their own label, every later one
/// [`OTHER`]. Asked once per tenant when its handles are made (not per request).
#[derive(Debug)]
pub struct TenantCap {
    max: usize,
    admitted: Mutex<HashMap<String, Arc<str>>>,
    other: Arc<str>,
}

impl Default for TenantCap {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_TENANTS)
    }
}

/// The default of `metrics.max_tenants`.
pub const DEFAULT_MAX_TENANTS: usize = 1000;

impl TenantCap {
    /// Give at most `max` tenants labels of their own.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            admitted: Mutex::default(),
            other: Arc::from(OTHER),
        }
    }

    /// The label for `tenant`, admitting it when there is room.
    pub fn label(&self, tenant: &str) -> Arc<str> {
        let mut admitted = self.admitted.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = admitted.get(tenant) {
            return l.clone();
        }
        if admitted.len() < self.max {
            let l: Arc<str> = Arc::from(tenant);
            admitted.insert(tenant.to_owned(), l.clone());
            return l;
        }
        self.other.clone()
    }

    /// The label `tenant` is counted under, without admitting it (for gauges read at scrape time).
    pub fn lookup(&self, tenant: &str) -> Arc<str> {
        let admitted = self.admitted.lock().unwrap_or_else(PoisonError::into_inner);
        admitted
            .get(tenant)
            .cloned()
            .unwrap_or_else(|| self.other.clone())
    }

    /// Tenants with a label of their own.
    pub fn admitted(&self) -> usize {
        self.admitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Whether a [`Snapshot`]'s values are gauges or counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

type Reader = dyn Fn() -> Vec<(Labels, f64)> + Send + Sync;

/// A family of gauges or counters whose values are read at scrape time by a closure: for state that is kept
/// anyway (tunnels in the registry, requests in flight, an upstream server's counters).
pub struct Snapshot {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    read: Box<Reader>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("name", &self.name)
            .finish()
    }
}

impl Snapshot {
    /// `name` without the `_total` of a counter (the encoder adds it).
    pub fn new(
        name: &'static str,
        help: &'static str,
        kind: Kind,
        read: impl Fn() -> Vec<(Labels, f64)> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            help,
            kind,
            read: Box::new(read),
        }
    }

    /// Register it with `registry`.
    pub fn register(self, registry: &mut Registry) {
        registry.register_collector(Box::new(self));
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let values = (self.read)();
        let kind = match self.kind {
            Kind::Gauge => MetricType::Gauge,
            Kind::Counter => MetricType::Counter,
        };
        let mut metric = encoder.encode_descriptor(self.name, self.help, None, kind)?;
        for (labels, v) in values {
            let family = metric.encode_family(&labels)?;
            // whole numbers (counts) are written as integers, as before prometheus-client: `3`, not `3.0`
            let whole = v.fract() == 0.0 && v.abs() < 9.0e15;
            match (self.kind, whole) {
                (Kind::Gauge, true) => ConstGauge::new(v as i64).encode(family)?,
                (Kind::Gauge, false) => ConstGauge::new(v).encode(family)?,
                (Kind::Counter, true) => ConstCounter::new(v.max(0.0) as u64).encode(family)?,
                (Kind::Counter, false) => ConstCounter::new(v).encode(family)?,
            }
        }
        Ok(())
    }
}

/// The process's own metrics, read from `/proc/self` at scrape time (Linux; elsewhere none):
/// `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
/// `process_open_fds`, `process_max_fds`, `process_start_time_seconds`, `process_threads`.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// Clock ticks per second of `/proc/self/stat`'s times: `USER_HZ`, 100 on every Linux architecture Ferry
/// builds for.
const CLOCK_TICKS: f64 = 100.0;
const PAGE_SIZE: f64 = 4096.0;

impl ProcessCollector {
    /// Register it with `registry`.
    pub fn register(registry: &mut Registry) {
        registry.register_collector(Box::new(ProcessCollector));
    }

    fn read() -> Option<Vec<(&'static str, &'static str, MetricType, f64)>> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // the fields after the command name, which is in parentheses and may hold spaces
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // proc(5) field N is f[N - 3]: `rest` starts at field 3 (state)
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
        let utime = num(11)?;
        let stime = num(12)?;
        let threads = num(17)?;
        let start_ticks = num(19)?;
        let vsize = num(20)?;
        let rss_pages = num(21)?;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        let open = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as f64)
            .unwrap_or(0.0);
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3))
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        Some(vec![
            (
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds.",
                MetricType::Counter,
                (utime + stime) / CLOCK_TICKS,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                MetricType::Gauge,
                rss_pages * PAGE_SIZE,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                MetricType::Gauge,
                vsize,
            ),
            (
                "process_open_fds",
                "Open file descriptors.",
                MetricType::Gauge,
                open,
            ),
            (
                "process_max_fds",
                "The limit on open file descriptors.",
                MetricType::Gauge,
                max_fds,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds.",
                MetricType::Gauge,
                boot + start_ticks / CLOCK_TICKS,
            ),
            (
                "process_threads",
                "Threads of the process.",
                MetricType::Gauge,
                threads,
            ),
        ])
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(values) = Self::read() else {
            return Ok(());
        };
        for (name, help, kind, v) in values {
            let metric = encoder.encode_descriptor(name, help, None, kind)?;
            if matches!(kind, MetricType::Counter) {
                ConstCounter::new(v).encode(metric)?;
            } else {
                ConstGauge::new(v).encode(metric)?;
            }
        }
        Ok(())
    }
}

/// Counters by status class, resolved once (one per entry of [`CLASSES`]).
#[derive(Debug, Clone, Default)]
pub struct ByClass(pub [prometheus_client::metrics::counter::Counter; 5]);

impl ByClass {
    /// The five counters of `family` for `labels` plus `class`.
    pub fn of(
        family: &prometheus_client::metrics::family::Family<
            Labels,
            prometheus_client::metrics::counter::Counter,
        >,
        labels: &Labels,
    ) -> Self {
        Self(CLASSES.map(|class| {
            let mut l = labels.clone();
            l.push(("class", class.to_owned()));
            family.get_or_create_owned(&l)
        }))
    }

    /// Count one response with `status`.
    pub fn inc(&self, status: u16) {
        if let Some(c) = self.0.get(class_index(status)) {
            c.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;

    #[test]
    fn histogram_buckets_count_and_sum() {
        let h = Histogram::new(&[0.01, 0.1]);
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_secs(2));
        let mut r = Registry::default();
        r.register("t_seconds", "t", h.clone());
        let text = render(&r);
        assert!(text.contains("t_seconds_bucket{le=\"0.01\"} 1"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"0.1\"} 2"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"+Inf\"} 3"), "{text}");
        assert!(text.contains("t_seconds_count 3"), "{text}");
        assert!(text.contains("t_seconds_sum 2.055"), "{text}");
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn tenant_cap_sends_the_rest_to_other() {
        let cap = TenantCap::new(2);
        assert_eq!(&*cap.label("a"), "a");
        assert_eq!(&*cap.label("b"), "b");
        assert_eq!(&*cap.label("c"), OTHER);
        assert_eq!(&*cap.label("a"), "a");
        assert_eq!(&*cap.lookup("b"), "b");
        assert_eq!(&*cap.lookup("d"), OTHER);
        assert_eq!(cap.admitted(), 2);
    }

    #[test]
    fn snapshots_and_classes_render() {
        let mut r = Registry::default();
        Snapshot::new("x_open", "open things", Kind::Gauge, || {
            vec![(vec![("tenant", "acme".to_owned())], 3.0)]
        })
        .register(&mut r);
        let family = Family::<Labels, Counter>::default();
        r.register("x_requests", "requests", family.clone());
        let by = ByClass::of(&family, &vec![("tenant", "acme".to_owned())]);
        by.inc(204);
        by.inc(503);
        by.inc(999);
        let text = render(&r);
        assert!(text.contains("x_open{tenant=\"acme\"} 3\n"), "{text}");
        assert!(
            text.contains("x_requests_total{tenant=\"acme\",class=\"2xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("x_requests_total{tenant=\"acme\",class=\"5xx\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("x_requests_total{tenant=\"acme\",class=\"1xx\"} 0"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn process_metrics_are_read() {
        let mut r = Registry::default();
        ProcessCollector::register(&mut r);
        let text = render(&r);
        if cfg!(target_os = "linux") {
            assert!(text.contains("process_resident_memory_bytes "), "{text}");
            assert!(text.contains("process_cpu_seconds_total "), "{text}");
            assert!(text.contains("process_open_fds "), "{text}");
        }
    }
}
