//! The relay's metrics (docs/metrics.md): the families, the per-tenant handles kept in the tenant cache's entries
//! (resolved when a tenant is first read from the store, so a request only bumps atomics), and the gauges read
//! from the registry and the cache at scrape time.
//!
//! Per-tenant series are bounded by [`TenantCap`] (`metrics.max_tenants`): later tenants share `tenant="_other"`;
//! targets are bounded per tenant by [`MAX_TARGETS`].

use ferry_metrics::prometheus_client::metrics::counter::Counter;
use ferry_metrics::prometheus_client::metrics::family::Family;
use ferry_metrics::prometheus_client::registry::Registry;
use ferry_metrics::{ByClass, Histogram, Kind, Labels, Snapshot, TenantCap, OTHER};
use ferry_proto::TargetName;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Most targets of one tenant with series of their own; later ones share `target="_other"`.
pub const MAX_TARGETS: usize = 64;

/// Why a tunnel was refused, as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The node is draining.
    Draining,
    /// No bearer token, or one the verifier refused.
    Token,
    /// The token's tenant no longer exists.
    UnknownTenant,
    /// The token's secret was revoked or expired.
    SecretRevoked,
    /// The tunnel handshake headers were wrong.
    Handshake,
    /// The store could not answer.
    Store,
}

impl Refusal {
    const ALL: [Refusal; 6] = [
        Refusal::Draining,
        Refusal::Token,
        Refusal::UnknownTenant,
        Refusal::SecretRevoked,
        Refusal::Handshake,
        Refusal::Store,
    ];

    fn label(self) -> &'static str {
        match self {
            Refusal::Draining => "draining",
            Refusal::Token => "token",
            Refusal::UnknownTenant => "unknown_tenant",
            Refusal::SecretRevoked => "secret_revoked",
            Refusal::Handshake => "handshake",
            Refusal::Store => "store",
        }
    }
}

/// Requests handed back unsent by a closing tunnel and sent on another (all tenants): a process-wide count, bumped
/// only on that rare path.
pub(crate) static FAILOVERS: AtomicU64 = AtomicU64::new(0);

/// The relay's metric families, shared by the client side, the tunnel side and the tenant cache.
#[derive(Debug)]
pub struct RelayMetrics {
    pub(crate) cap: TenantCap,
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
    received: Family<Labels, Counter>,
    sent: Family<Labels, Counter>,
    expirations: Family<Labels, Counter>,
    attaches: Family<Labels, Counter>,
    detaches: Family<Labels, Counter>,
    refusals: [Counter; 6],
    refusal_family: Family<Labels, Counter>,
    /// Time to the response head by where the connector was: `[local, remote]`.
    pub(crate) dispatch: [Histogram; 2],
    dispatch_family: Family<Labels, Histogram>,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        Self::new(ferry_metrics::DEFAULT_MAX_TENANTS)
    }
}

impl RelayMetrics {
    /// Families whose per-tenant series stop at `max_tenants` tenants.
    pub fn new(max_tenants: usize) -> Self {
        let refusal_family = Family::<Labels, Counter>::default();
        let refusals = Refusal::ALL
            .map(|r| refusal_family.get_or_create_owned(&vec![("reason", r.label().to_owned())]));
        let dispatch_family = Family::<Labels, Histogram>::default();
        let dispatch = ["local", "remote"]
            .map(|via| dispatch_family.get_or_create_owned(&vec![("via", via.to_owned())]));
        Self {
            dispatch,
            dispatch_family,
            cap: TenantCap::new(max_tenants),
            requests: Family::default(),
            duration: Family::default(),
            received: Family::default(),
            sent: Family::default(),
            expirations: Family::default(),
            attaches: Family::default(),
            detaches: Family::default(),
            refusals,
            refusal_family,
        }
    }

    /// The handles of one tenant (admitting it under the cap): made once per tenant, when it is first read.
    pub fn tenant(&self, tenant: &str) -> Arc<TenantMetrics> {
        let label = self.cap.label(tenant);
        let labels: Labels = vec![("tenant", label.to_string())];
        Arc::new(TenantMetrics {
            over_cap: &*label == OTHER,
            labels: labels.clone(),
            requests: self.requests.clone(),
            duration: self.duration.get_or_create_owned(&labels),
            received: self.received.get_or_create_owned(&labels),
            sent: self.sent.get_or_create_owned(&labels),
            expirations: self.expirations.get_or_create_owned(&labels),
            label,
        })
    }

    /// A tunnel of `tenant` attached (its detach counter appears too, at 0, so that rates of it have data).
    pub(crate) fn attached(&self, tenant: &str) {
        let labels = vec![("tenant", self.cap.lookup(tenant).to_string())];
        self.attaches.get_or_create(&labels).inc();
        drop(self.detaches.get_or_create(&labels));
    }

    /// A tunnel of `tenant` detached (closed, lost or cut).
    pub(crate) fn detached(&self, tenant: &str) {
        let labels = vec![("tenant", self.cap.lookup(tenant).to_string())];
        self.detaches.get_or_create(&labels).inc();
    }

    /// A tunnel was refused.
    pub(crate) fn refused(&self, why: Refusal) {
        if let Some(c) = Refusal::ALL
            .iter()
            .position(|r| *r == why)
            .and_then(|i| self.refusals.get(i))
        {
            c.inc();
        }
    }

    /// Register the families with `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ferry_relay_requests",
            "Relayed requests answered, by tenant, target and status class (counted when the response ends).",
            self.requests.clone(),
        );
        registry.register(
            "ferry_relay_request_duration_seconds",
            "Time from a relayed request's arrival to its response head, by tenant.",
            self.duration.clone(),
        );
        registry.register(
            "ferry_relay_dispatch_duration_seconds",
            "Time from a relayed request's arrival to its response head, by where the connector was: on this node \
             (local) or on another node, over a node link or the bus (remote). The difference is what the hop adds.",
            self.dispatch_family.clone(),
        );
        registry.register(
            "ferry_relay_received_bytes",
            "Request body bytes received from clients, by tenant.",
            self.received.clone(),
        );
        registry.register(
            "ferry_relay_sent_bytes",
            "Response body bytes sent to clients, by tenant.",
            self.sent.clone(),
        );
        registry.register(
            "ferry_relay_request_expirations",
            "Relayed requests that got no response within the request expiration (504 request_expired), by tenant.",
            self.expirations.clone(),
        );
        registry.register(
            "ferry_relay_tunnel_attaches",
            "Connector tunnels attached to this node, by tenant.",
            self.attaches.clone(),
        );
        registry.register(
            "ferry_relay_tunnel_detaches",
            "Connector tunnels gone from this node (closed, lost or cut), by tenant.",
            self.detaches.clone(),
        );
        registry.register(
            "ferry_relay_tunnel_refusals",
            "Tunnel attaches refused, by reason.",
            self.refusal_family.clone(),
        );
        Snapshot::new(
            "ferry_relay_failovers",
            "Requests handed back unsent by a closing tunnel and sent on another tunnel.",
            Kind::Counter,
            || vec![(Labels::new(), FAILOVERS.load(Ordering::Relaxed) as f64)],
        )
        .register(registry);
    }
}

/// One tenant's handles, kept in its tenant-cache entry.
#[derive(Debug)]
pub struct TenantMetrics {
    label: Arc<str>,
    over_cap: bool,
    labels: Labels,
    requests: Family<Labels, Counter>,
    pub(crate) duration: Histogram,
    pub(crate) received: Counter,
    pub(crate) sent: Counter,
    pub(crate) expirations: Counter,
}

impl TenantMetrics {
    /// The tenant label these handles count under (the tenant, or `_other` past the cap).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The per-class request counters of `target`, to be kept in the cache entry: made once per target (all
    /// targets of a tenant past the cap share `_other`).
    pub(crate) fn target(&self, target: &str) -> Arc<ByClass> {
        let target = if self.over_cap { OTHER } else { target };
        let mut labels = self.labels.clone();
        labels.push(("target", target.to_owned()));
        Arc::new(ByClass::of(&self.requests, &labels))
    }
}

/// The handles of one request: its tenant's, and the counters of its target.
#[derive(Clone)]
pub(crate) struct Metered {
    pub tenant: Arc<TenantMetrics>,
    pub target: Arc<ByClass>,
}

/// The per-target counters kept in a tenant-cache entry, at most [`MAX_TARGETS`] plus `_other`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Targets {
    named: Vec<(TargetName, Arc<ByClass>)>,
    other: Option<Arc<ByClass>>,
}

impl Targets {
    /// The counters of `target`, made and kept on its first request.
    pub fn get(&mut self, metrics: &TenantMetrics, target: &TargetName) -> Arc<ByClass> {
        if let Some((_, c)) = self.named.iter().find(|(t, _)| t == target) {
            return c.clone();
        }
        if self.named.len() >= MAX_TARGETS {
            return self
                .other
                .get_or_insert_with(|| metrics.target(OTHER))
                .clone();
        }
        let c = metrics.target(target.as_str());
        self.named.push((target.clone(), c.clone()));
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_past_the_cap_share_other() {
        let m = RelayMetrics::new(1);
        let a = m.tenant("acme");
        let b = m.tenant("beta");
        assert_eq!(a.label(), "acme");
        assert_eq!(b.label(), OTHER);
        a.target("app").inc(200);
        b.target("web").inc(502);
        m.refused(Refusal::Token);
        m.attached("acme");
        m.attached("beta");
        let mut r = Registry::default();
        m.register(&mut r);
        let text = ferry_metrics::render(&r);
        assert!(
            text.contains(
                "ferry_relay_requests_total{tenant=\"acme\",target=\"app\",class=\"2xx\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "ferry_relay_requests_total{tenant=\"_other\",target=\"_other\",class=\"5xx\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("ferry_relay_tunnel_refusals_total{reason=\"token\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ferry_relay_tunnel_refusals_total{reason=\"draining\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("ferry_relay_tunnel_attaches_total{tenant=\"_other\"} 1"),
            "{text}"
        );
        assert!(text.contains("ferry_relay_failovers_total"), "{text}");
        assert!(
            text.contains("ferry_relay_tunnel_detaches_total{tenant=\"acme\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn targets_are_bounded() {
        let m = RelayMetrics::new(10);
        let t = m.tenant("acme");
        let mut targets = Targets::default();
        for i in 0..MAX_TARGETS + 5 {
            let name: TargetName = format!("t{i}").parse().expect("name");
            targets.get(&t, &name).inc(200);
        }
        assert_eq!(targets.named.len(), MAX_TARGETS);
        let mut r = Registry::default();
        m.register(&mut r);
        let text = ferry_metrics::render(&r);
        assert!(
            text.contains(
                "ferry_relay_requests_total{tenant=\"acme\",target=\"_other\",class=\"2xx\"} 5"
            ),
            "{text}"
        );
    }

    /// Resident memory of this process in bytes (Linux), for the measurement below.
    fn rss() -> u64 {
        std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |pages| pages * 4096)
    }

    /// What N tenants with series of their own cost: the size of the exposition, the memory of the handles and
    /// the time to render it (docs/metrics.md, "Cardinality"). A measurement, not a check: run it with
    /// `cargo test --release -p ferry-relay --lib cost_of_ten_thousand_tenants -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn cost_of_ten_thousand_tenants() {
        for n in [1_000usize, 10_000] {
            let before = rss();
            let m = RelayMetrics::new(n);
            let mut handles = Vec::with_capacity(n);
            for i in 0..n {
                let t = m.tenant(&format!("tenant-{i:05}"));
                let target = t.target("app");
                target.inc(200);
                t.duration.observe(std::time::Duration::from_millis(3));
                t.received.inc_by(100);
                t.sent.inc_by(1000);
                m.attached(&format!("tenant-{i:05}"));
                handles.push((t, target));
            }
            let mut r = Registry::default();
            m.register(&mut r);
            let after = rss();
            let started = std::time::Instant::now();
            let text = ferry_metrics::render(&r);
            let took = started.elapsed();
            let series = text.lines().filter(|l| !l.starts_with('#')).count();
            println!(
                "{n} tenants: {series} series, exposition {:.1} MB, handles {:.1} MB RSS, render {:?}",
                text.len() as f64 / 1e6,
                after.saturating_sub(before) as f64 / 1e6,
                took
            );
            assert!(series >= n * 25);
        }
    }
}
