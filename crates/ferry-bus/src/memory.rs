//! The in-process bus: subscriptions are channels inside this process. It is the bus of a one-process node and
//! of clusters whose nodes run in one test process; it follows the same rules as the brokers' buses (the
//! conformance suite runs on it too) and never loses a message while a subscriber is attached.

use crate::{check_subject, Bus, BusError, Subscription};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

/// An in-process bus. Clones share the same subjects: give each in-process node a clone.
#[derive(Clone, Default)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    subjects: Mutex<HashMap<String, Subject>>,
    next_id: AtomicU64,
}

/// Subscribers by id.
type Members = Vec<(u64, UnboundedSender<Bytes>)>;

#[derive(Default)]
struct Subject {
    /// Plain subscribers, each getting every message.
    fanout: Members,
    /// Queue groups by name: members and the round-robin position.
    groups: HashMap<String, (Members, usize)>,
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Subject>> {
        // The map stays consistent at every step; a panic elsewhere while holding it leaves it usable.
        self.shared
            .subjects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, subject: &str, group: Option<&str>) -> Result<Subscription, BusError> {
        check_subject(subject)?;
        if let Some(group) = group {
            check_subject(group)?;
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = unbounded_channel();
        {
            let mut subjects = self.lock();
            let entry = subjects.entry(subject.to_owned()).or_default();
            match group {
                None => entry.fanout.push((id, tx)),
                Some(g) => entry
                    .groups
                    .entry(g.to_owned())
                    .or_default()
                    .0
                    .push((id, tx)),
            }
        }
        let remove = Unsubscribe {
            bus: self.clone(),
            subject: subject.to_owned(),
            id,
        };
        // the guard lives in the stream's state: dropping the subscription unsubscribes
        Ok(Subscription::new(futures_util::stream::unfold(
            (rx, remove),
            |(mut rx, remove)| async move {
                let item = rx.recv().await?;
                Some((item, (rx, remove)))
            },
        )))
    }

    fn remove(&self, subject: &str, id: u64) {
        let mut subjects = self.lock();
        if let Some(entry) = subjects.get_mut(subject) {
            entry.fanout.retain(|(i, _)| *i != id);
            for (members, _) in entry.groups.values_mut() {
                members.retain(|(i, _)| *i != id);
            }
            entry.groups.retain(|_, (members, _)| !members.is_empty());
            if entry.fanout.is_empty() && entry.groups.is_empty() {
                subjects.remove(subject);
            }
        }
    }
}

/// Removes a subscription from the bus when its stream is dropped.
struct Unsubscribe {
    bus: MemoryBus,
    subject: String,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        self.bus.remove(&self.subject, self.id);
    }
}

#[async_trait::async_trait]
impl Bus for MemoryBus {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        check_subject(subject)?;
        let mut subjects = self.lock();
        let Some(entry) = subjects.get_mut(subject) else {
            return Ok(());
        };
        for (_, tx) in &entry.fanout {
            let _ = tx.send(payload.clone());
        }
        for (members, next) in entry.groups.values_mut() {
            // round robin over the members; a member whose receiver is gone is skipped
            for _ in 0..members.len() {
                let i = *next % members.len();
                *next = next.wrapping_add(1);
                if members[i].1.send(payload.clone()).is_ok() {
                    break;
                }
            }
        }
        Ok(())
    }

    fn reports_unrouted(&self) -> bool {
        true
    }

    async fn publish_or_bounce(
        &self,
        subject: &str,
        payload: Bytes,
        bounce_subject: &str,
        bounce: Bytes,
    ) -> Result<(), BusError> {
        check_subject(bounce_subject)?;
        let taken = self.lock().get(subject).is_some_and(|e| {
            e.fanout.iter().any(|(_, tx)| !tx.is_closed()) || !e.groups.is_empty()
        });
        if taken {
            self.publish(subject, payload).await
        } else {
            check_subject(subject)?;
            self.publish(bounce_subject, bounce).await
        }
    }

    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        self.add(subject, None)
    }

    async fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription, BusError> {
        self.add(subject, Some(group))
    }

    async fn flush(&self) -> Result<(), BusError> {
        Ok(())
    }

    fn is_connected(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fanout_and_queue_groups() {
        let bus = MemoryBus::new();
        let mut a = bus.subscribe("t.x").await.expect("sub");
        let mut b = bus.subscribe("t.x").await.expect("sub");
        let mut q1 = bus.queue_subscribe("t.x", "g").await.expect("sub");
        let mut q2 = bus.queue_subscribe("t.x", "g").await.expect("sub");
        for i in 0..4u8 {
            bus.publish("t.x", Bytes::from(vec![i])).await.expect("pub");
        }
        for i in 0..4u8 {
            assert_eq!(a.next().await.expect("a")[0], i);
            assert_eq!(b.next().await.expect("b")[0], i);
        }
        let got: Vec<u8> = vec![
            q1.next().await.expect("q1")[0],
            q1.next().await.expect("q1")[0],
            q2.next().await.expect("q2")[0],
            q2.next().await.expect("q2")[0],
        ];
        assert_eq!(got, vec![0, 2, 1, 3]);
        drop(a);
        drop(q1);
        bus.publish("t.x", Bytes::from_static(b"z"))
            .await
            .expect("pub");
        assert_eq!(q2.next().await.expect("q2"), Bytes::from_static(b"z"));
        drop((b, q2));
        assert!(
            bus.lock().is_empty(),
            "dropped subscriptions leave no entry"
        );
    }

    mod conformance {
        use crate::{Bus, MemoryBus};
        use std::sync::Arc;

        fn open() -> Option<impl crate::conformance::Open> {
            let bus = MemoryBus::new();
            Some(move || {
                let bus = bus.clone();
                async move { Arc::new(bus) as Arc<dyn Bus> }
            })
        }

        crate::conformance::conformance_tests!(open());
    }
}
