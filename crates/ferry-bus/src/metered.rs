//! A [`Bus`] that counts what passes through the bus it wraps (docs/metrics.md): messages published and consumed
//! by kind of subject (`dispatch`, `inbox`, `presence`, `events`: the word after the cluster name; anything else
//! is `other`), failed publishes, and the time a publish takes to be handed to the broker (what the bus adds to
//! each hop on the publisher's side).

use crate::{Bus, BusError, Subscription};
use bytes::Bytes;
use ferry_metrics::prometheus_client::metrics::counter::Counter;
use ferry_metrics::prometheus_client::metrics::family::Family;
use ferry_metrics::prometheus_client::registry::Registry;
use ferry_metrics::{Histogram, Kind, Labels, Snapshot};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Instant;

/// The kinds of subject, as the `kind` label.
pub const KINDS: [&str; 5] = ["dispatch", "inbox", "presence", "events", "other"];

fn kind_of(subject: &str) -> usize {
    let word = subject.split('.').nth(1).unwrap_or("");
    KINDS
        .iter()
        .position(|k| *k == word)
        .unwrap_or(KINDS.len() - 1)
}

#[derive(Clone)]
struct PerKind {
    published: Counter,
    failed: Counter,
    consumed: Counter,
}

/// The wrapper; see the module documentation.
pub struct MeteredBus {
    inner: Arc<dyn Bus>,
    kinds: Vec<PerKind>,
    publish_duration: Histogram,
    published: Family<Labels, Counter>,
    failed: Family<Labels, Counter>,
    consumed: Family<Labels, Counter>,
}

impl MeteredBus {
    /// Count what passes through `inner`.
    pub fn new(inner: Arc<dyn Bus>) -> Self {
        let published = Family::<Labels, Counter>::default();
        let failed = Family::<Labels, Counter>::default();
        let consumed = Family::<Labels, Counter>::default();
        let kinds = KINDS
            .iter()
            .map(|k| {
                let l: Labels = vec![("kind", (*k).to_owned())];
                PerKind {
                    published: published.get_or_create_owned(&l),
                    failed: failed.get_or_create_owned(&l),
                    consumed: consumed.get_or_create_owned(&l),
                }
            })
            .collect();
        Self {
            inner,
            kinds,
            publish_duration: Histogram::fast(),
            published,
            failed,
            consumed,
        }
    }

    /// Register the families with `registry`.
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        registry.register(
            "ferry_bus_published",
            "Messages published on the bus, by kind of subject.",
            self.published.clone(),
        );
        registry.register(
            "ferry_bus_publish_errors",
            "Publishes the bus refused (broker away, payload too large), by kind of subject.",
            self.failed.clone(),
        );
        registry.register(
            "ferry_bus_consumed",
            "Messages received from the bus, by kind of subject.",
            self.consumed.clone(),
        );
        registry.register(
            "ferry_bus_publish_duration_seconds",
            "Time a publish took to be handed to the broker's client.",
            self.publish_duration.clone(),
        );
        let bus = self.clone();
        Snapshot::new(
            "ferry_bus_connected",
            "1 while the bus is connected to its broker (always 1 in process).",
            Kind::Gauge,
            move || {
                vec![(
                    vec![("transport", bus.inner.kind().to_owned())],
                    f64::from(u8::from(bus.inner.is_connected())),
                )]
            },
        )
        .register(registry);
    }

    fn published(&self, subject: &str, started: Instant, result: &Result<(), BusError>) {
        self.publish_duration.observe(started.elapsed());
        if let Some(k) = self.kinds.get(kind_of(subject)) {
            match result {
                Ok(()) => k.published.inc(),
                Err(_) => k.failed.inc(),
            };
        }
    }

    fn counted(&self, subject: &str, sub: Subscription) -> Subscription {
        let counter = self
            .kinds
            .get(kind_of(subject))
            .map(|k| k.consumed.clone())
            .unwrap_or_default();
        Subscription::new(sub.map(move |m| {
            counter.inc();
            m
        }))
    }
}

#[async_trait::async_trait]
impl Bus for MeteredBus {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        let started = Instant::now();
        let r = self.inner.publish(subject, payload).await;
        self.published(subject, started, &r);
        r
    }

    fn reports_unrouted(&self) -> bool {
        self.inner.reports_unrouted()
    }

    async fn publish_or_bounce(
        &self,
        subject: &str,
        payload: Bytes,
        bounce_subject: &str,
        bounce: Bytes,
    ) -> Result<(), BusError> {
        let started = Instant::now();
        let r = self
            .inner
            .publish_or_bounce(subject, payload, bounce_subject, bounce)
            .await;
        self.published(subject, started, &r);
        r
    }

    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        let sub = self.inner.subscribe(subject).await?;
        Ok(self.counted(subject, sub))
    }

    async fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription, BusError> {
        let sub = self.inner.queue_subscribe(subject, group).await?;
        Ok(self.counted(subject, sub))
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.inner.flush().await
    }

    fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    fn max_payload(&self) -> usize {
        self.inner.max_payload()
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBus;

    #[test]
    fn subjects_map_to_kinds() {
        assert_eq!(KINDS[kind_of("ferry.dispatch.acme")], "dispatch");
        assert_eq!(KINDS[kind_of("staging.inbox.n1")], "inbox");
        assert_eq!(KINDS[kind_of("ferry.presence")], "presence");
        assert_eq!(KINDS[kind_of("ferry.events")], "events");
        assert_eq!(KINDS[kind_of("odd")], "other");
    }

    #[tokio::test]
    async fn publishes_and_consumes_are_counted() {
        let bus = Arc::new(MeteredBus::new(Arc::new(MemoryBus::new())));
        let mut sub = bus.subscribe("ferry.events").await.expect("subscribe");
        bus.publish("ferry.events", Bytes::from_static(b"x"))
            .await
            .expect("publish");
        assert_eq!(sub.next().await.as_deref(), Some(&b"x"[..]));
        let mut r = Registry::default();
        bus.register(&mut r);
        let text = ferry_metrics::render(&r);
        assert!(
            text.contains("ferry_bus_published_total{kind=\"events\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ferry_bus_consumed_total{kind=\"events\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ferry_bus_connected{transport=\"memory\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ferry_bus_publish_duration_seconds_count 1"),
            "{text}"
        );
    }
}
