//! The conformance suite every [`Bus`] implementation must pass, and the test services it runs against.
//!
//! Each check takes an [`Open`]: a way to open a fresh connection to the bus under test (for the in-process bus,
//! a clone of one `MemoryBus`). Every check uses its own random subject prefix, so checks run in parallel and
//! again and again on a shared broker. Every wait is bounded; failures panic, as test assertions do. Call
//! [`run_suite`] for all checks in turn, or each check from a test of its own.
//!
//! [`nats_url`] and [`amqp_url`] name the test brokers (`FERRY_TEST_NATS_URL`, `FERRY_TEST_AMQP_URL`); when one
//! cannot be reached they print `skipped: …` and answer `None`, except when `CI` is set: then they panic.
// Test-support code: panicking with a message is how it reports a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::{Bus, BusError, Subscription};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{timeout, Instant};

/// How long one message may take to arrive before a check fails.
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a check waits, after a queue group got every message, for a duplicate that should not come.
pub const QUIET_PERIOD: Duration = Duration::from_millis(200);

/// Opens a new connection to the bus under test.
pub trait Open: Send + Sync {
    fn open(&self) -> BoxFuture<'_, Arc<dyn Bus>>;
}

impl<F, Fut> Open for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Arc<dyn Bus>> + Send + 'static,
{
    fn open(&self) -> BoxFuture<'_, Arc<dyn Bus>> {
        Box::pin(self())
    }
}

/// Run every check of the suite.
pub async fn run_suite(open: &dyn Open) {
    fan_out(open).await;
    queue_group(open).await;
    order(open).await;
    across_connections(open).await;
    publish_without_subscriber(open).await;
    drop_unsubscribes(open).await;
    payload_sizes(open).await;
    invalid_subjects(open).await;
    prefixes_do_not_cross(open).await;
    bounces(open).await;
}

/// A subject prefix no other test run uses: `cf.<pid><time><counter>`.
pub fn unique_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "cf.p{:x}t{nanos:x}n{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn numbered(i: u64) -> Bytes {
    Bytes::copy_from_slice(&i.to_be_bytes())
}

fn number(payload: &Bytes) -> u64 {
    let bytes: [u8; 8] = payload
        .as_ref()
        .try_into()
        .unwrap_or_else(|_| panic!("not a numbered message: {payload:?}"));
    u64::from_be_bytes(bytes)
}

/// The next message, within [`RECEIVE_TIMEOUT`].
pub async fn receive(subscription: &mut Subscription, what: &str) -> Bytes {
    match timeout(RECEIVE_TIMEOUT, subscription.next()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("{what}: the subscription ended"),
        Err(_) => panic!("{what}: nothing arrived within {RECEIVE_TIMEOUT:?}"),
    }
}

/// Whether a message arrives within `within` (for checking that one does not).
async fn arrives(subscription: &mut Subscription, within: Duration) -> Option<Bytes> {
    timeout(within, subscription.next()).await.ok().flatten()
}

async fn publish_numbered(bus: &dyn Bus, subject: &str, range: std::ops::Range<u64>) {
    for i in range {
        bus.publish(subject, numbered(i))
            .await
            .unwrap_or_else(|e| panic!("publish {i} to {subject}: {e}"));
    }
    bus.flush().await.expect("flush");
}

/// Receive `n` messages and check they are `0..n` in order.
async fn expect_in_order(subscription: &mut Subscription, n: u64, what: &str) {
    for i in 0..n {
        let got = number(&receive(subscription, what).await);
        assert_eq!(got, i, "{what}: message {i} out of order");
    }
}

/// Two subscribers of one subject each get every message.
pub async fn fan_out(open: &dyn Open) {
    let bus = open.open().await;
    let subject = format!("{}.fanout", unique_prefix());
    let mut a = bus.subscribe(&subject).await.expect("subscribe a");
    let mut b = bus.subscribe(&subject).await.expect("subscribe b");
    publish_numbered(bus.as_ref(), &subject, 0..100).await;
    expect_in_order(&mut a, 100, "subscriber a").await;
    expect_in_order(&mut b, 100, "subscriber b").await;
}

/// Two members of a queue group share the messages, each delivered once; a plain subscriber beside them gets
/// them all.
pub async fn queue_group(open: &dyn Open) {
    const N: u64 = 400;
    let bus = open.open().await;
    let other = open.open().await;
    let subject = format!("{}.group", unique_prefix());
    let mut m1 = bus
        .queue_subscribe(&subject, "workers")
        .await
        .expect("member 1");
    let mut m2 = other
        .queue_subscribe(&subject, "workers")
        .await
        .expect("member 2");
    let mut plain = bus.subscribe(&subject).await.expect("plain");
    publish_numbered(bus.as_ref(), &subject, 0..N).await;

    let deadline = Instant::now() + RECEIVE_TIMEOUT;
    let (mut got1, mut got2) = (Vec::new(), Vec::new());
    while (got1.len() + got2.len()) < N as usize {
        tokio::select! {
            Some(m) = m1.next() => got1.push(number(&m)),
            Some(m) = m2.next() => got2.push(number(&m)),
            () = tokio::time::sleep_until(deadline) => panic!(
                "the group got {} of {N} messages within {RECEIVE_TIMEOUT:?}",
                got1.len() + got2.len()
            ),
        }
    }
    let extra = tokio::select! {
        m = m1.next() => m,
        m = m2.next() => m,
        () = tokio::time::sleep(QUIET_PERIOD) => None,
    };
    assert_eq!(extra, None, "a message delivered twice in the group");
    let all: HashSet<u64> = got1.iter().chain(&got2).copied().collect();
    assert_eq!(all.len(), N as usize, "each message once across the group");
    assert!(
        !got1.is_empty() && !got2.is_empty(),
        "both members get a share: {} and {}",
        got1.len(),
        got2.len()
    );
    for got in [&got1, &got2] {
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "a member's share is in order"
        );
    }
    expect_in_order(&mut plain, N, "plain subscriber beside the group").await;
}

/// 10,000 messages of one publisher arrive in the order published.
pub async fn order(open: &dyn Open) {
    const N: u64 = 10_000;
    let publisher = open.open().await;
    let receiver = open.open().await;
    let subject = format!("{}.order", unique_prefix());
    let mut subscription = receiver.subscribe(&subject).await.expect("subscribe");
    let publishing = {
        let publisher = publisher.clone();
        let subject = subject.clone();
        tokio::spawn(async move { publish_numbered(publisher.as_ref(), &subject, 0..N).await })
    };
    expect_in_order(&mut subscription, N, "ordered subscriber").await;
    publishing.await.expect("publisher");
}

/// Once `subscribe` (or `queue_subscribe`) has returned, a message published at once by another connection is
/// delivered. Repeated on fresh subjects to catch a race.
pub async fn across_connections(open: &dyn Open) {
    let subscriber = open.open().await;
    let publisher = open.open().await;
    let prefix = unique_prefix();
    for round in 0..20 {
        let subject = format!("{prefix}.across{round}");
        let mut plain = subscriber.subscribe(&subject).await.expect("subscribe");
        let mut member = subscriber
            .queue_subscribe(&subject, "g")
            .await
            .expect("queue subscribe");
        publisher
            .publish(&subject, numbered(round))
            .await
            .expect("publish");
        publisher.flush().await.expect("flush");
        assert_eq!(number(&receive(&mut plain, "plain").await), round);
        assert_eq!(number(&receive(&mut member, "member").await), round);
    }
}

/// Publishing to a subject nobody subscribes to succeeds.
pub async fn publish_without_subscriber(open: &dyn Open) {
    let bus = open.open().await;
    let subject = format!("{}.nobody", unique_prefix());
    bus.publish(&subject, Bytes::from_static(b"into the void"))
        .await
        .expect("publish without subscriber");
    bus.flush().await.expect("flush");
    assert!(bus.is_connected());
}

/// A dropped subscription stops receiving: a dropped queue-group member's share goes to the remaining member,
/// and a dropped plain subscriber does not disturb the others.
pub async fn drop_unsubscribes(open: &dyn Open) {
    const N: u64 = 200;
    let bus = open.open().await;
    let subject = format!("{}.drop", unique_prefix());
    let m1 = bus.queue_subscribe(&subject, "g").await.expect("member 1");
    let mut m2 = bus.queue_subscribe(&subject, "g").await.expect("member 2");
    let gone = bus.subscribe(&subject).await.expect("plain 1");
    let mut stays = bus.subscribe(&subject).await.expect("plain 2");
    drop(m1);
    drop(gone);
    bus.flush().await.expect("flush after dropping");
    publish_numbered(bus.as_ref(), &subject, 0..N).await;
    expect_in_order(&mut m2, N, "the remaining member").await;
    expect_in_order(&mut stays, N, "the remaining plain subscriber").await;
    assert_eq!(arrives(&mut m2, QUIET_PERIOD).await, None);
}

/// Empty and 256 KiB payloads arrive intact.
pub async fn payload_sizes(open: &dyn Open) {
    let bus = open.open().await;
    let subject = format!("{}.sizes", unique_prefix());
    let mut subscription = bus.subscribe(&subject).await.expect("subscribe");
    let big: Bytes = (0..256 * 1024u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    bus.publish(&subject, Bytes::new()).await.expect("empty");
    bus.publish(&subject, big.clone()).await.expect("256 KiB");
    bus.flush().await.expect("flush");
    assert_eq!(receive(&mut subscription, "empty").await, Bytes::new());
    let got = receive(&mut subscription, "256 KiB").await;
    assert!(got == big, "256 KiB intact (got {} bytes)", got.len());
}

/// Subjects and groups outside the character set are refused by every operation.
pub async fn invalid_subjects(open: &dyn Open) {
    let bus = open.open().await;
    let prefix = unique_prefix();
    for bad in ["", "a..b", "a.*", "a.>", "a b", "ä", ".a", "a."] {
        let refused = |r: Result<(), BusError>| matches!(r, Err(BusError::InvalidSubject(_)));
        assert!(
            refused(bus.publish(bad, Bytes::new()).await),
            "publish {bad:?}"
        );
        assert!(
            refused(bus.subscribe(bad).await.map(drop)),
            "subscribe {bad:?}"
        );
        assert!(
            refused(bus.queue_subscribe(bad, "g").await.map(drop)),
            "queue_subscribe {bad:?}"
        );
        assert!(
            refused(bus.queue_subscribe(&prefix, bad).await.map(drop)),
            "queue group {bad:?}"
        );
    }
    let long = format!("{prefix}.{}", "x".repeat(256));
    assert!(matches!(
        bus.publish(&long, Bytes::new()).await,
        Err(BusError::InvalidSubject(_))
    ));
}

/// `publish_or_bounce`: a message to a subject with a subscriber arrives there and bounces nowhere; one to a
/// subject nobody (or nobody any more) subscribes to comes back as the bounce. A bus that cannot tell only
/// publishes.
pub async fn bounces(open: &dyn Open) {
    let bus = open.open().await;
    let other = open.open().await;
    let prefix = unique_prefix();
    let (taken, nobody, back) = (
        format!("{prefix}.taken"),
        format!("{prefix}.nobody"),
        format!("{prefix}.back"),
    );
    let mut receiver = other.subscribe(&taken).await.expect("subscribe taken");
    let mut bounced = bus.subscribe(&back).await.expect("subscribe back");
    bus.publish_or_bounce(&taken, numbered(1), &back, numbered(101))
        .await
        .expect("publish to a subscriber");
    assert_eq!(number(&receive(&mut receiver, "taken").await), 1);
    if !bus.reports_unrouted() {
        bus.publish_or_bounce(&nobody, numbered(2), &back, numbered(102))
            .await
            .expect("publish without bounces");
        assert_eq!(arrives(&mut bounced, QUIET_PERIOD).await, None);
        return;
    }
    bus.publish_or_bounce(&nobody, numbered(2), &back, numbered(102))
        .await
        .expect("publish to nobody");
    assert_eq!(number(&receive(&mut bounced, "the bounce").await), 102);
    // the subscriber leaves: the next message to it bounces
    drop(receiver);
    other.flush().await.expect("flush after dropping");
    bus.publish_or_bounce(&taken, numbered(3), &back, numbered(103))
        .await
        .expect("publish after the subscriber left");
    assert_eq!(
        number(&receive(&mut bounced, "the second bounce").await),
        103
    );
    assert_eq!(
        arrives(&mut bounced, QUIET_PERIOD).await,
        None,
        "one bounce per message"
    );
}

/// Subjects that share a prefix (`p.a`, `p.a.b`, `p.ab`) do not receive each other's messages.
pub async fn prefixes_do_not_cross(open: &dyn Open) {
    let bus = open.open().await;
    let prefix = unique_prefix();
    let subjects = [
        format!("{prefix}.a"),
        format!("{prefix}.a.b"),
        format!("{prefix}.ab"),
        prefix.clone(),
    ];
    let mut subscriptions = Vec::new();
    for subject in &subjects {
        subscriptions.push(bus.subscribe(subject).await.expect("subscribe"));
    }
    let mut groups = Vec::new();
    for subject in &subjects {
        groups.push(bus.queue_subscribe(subject, "g").await.expect("group"));
    }
    for (i, subject) in subjects.iter().enumerate() {
        bus.publish(subject, numbered(i as u64))
            .await
            .expect("publish");
    }
    bus.flush().await.expect("flush");
    for (i, (plain, group)) in subscriptions.iter_mut().zip(&mut groups).enumerate() {
        assert_eq!(number(&receive(plain, &subjects[i]).await), i as u64);
        assert_eq!(number(&receive(group, &subjects[i]).await), i as u64);
    }
    for (i, (plain, group)) in subscriptions.iter_mut().zip(&mut groups).enumerate() {
        assert_eq!(arrives(plain, QUIET_PERIOD).await, None, "{}", subjects[i]);
        assert_eq!(
            arrives(group, Duration::ZERO).await,
            None,
            "{}",
            subjects[i]
        );
    }
}

/// The variable naming the NATS server for tests, and its default.
pub const NATS_URL_ENV: &str = "FERRY_TEST_NATS_URL";
pub const NATS_DEFAULT_URL: &str = "nats://127.0.0.1:4222";
/// The variable naming the RabbitMQ broker for tests, and its default.
pub const AMQP_URL_ENV: &str = "FERRY_TEST_AMQP_URL";
pub const AMQP_DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The test NATS server's URL, if it accepts a connection; see the module docs for when it is missing.
pub async fn nats_url() -> Option<String> {
    service_url("NATS", NATS_URL_ENV, NATS_DEFAULT_URL).await
}

/// The test RabbitMQ broker's URL, if it accepts a connection; see the module docs for when it is missing.
pub async fn amqp_url() -> Option<String> {
    service_url("RabbitMQ", AMQP_URL_ENV, AMQP_DEFAULT_URL).await
}

async fn service_url(service: &str, env: &str, default: &str) -> Option<String> {
    let url = std::env::var(env).unwrap_or_else(|_| default.to_owned());
    match crate::connect(&url, &crate::BusOptions::default()).await {
        Ok(bus) => {
            bus.close().await;
            Some(url)
        }
        Err(e) => {
            let redacted = crate::redact(&url);
            if std::env::var_os("CI").is_some() {
                panic!("{service} required in CI at {redacted} (set {env}): {e}");
            }
            eprintln!("skipped: {service} not reachable at {redacted} (set {env}): {e}");
            None
        }
    }
}

/// One test per check of the suite for a backend: `conformance_tests!(open_expression)`, where the expression
/// (evaluated in an async context) is an `Option<impl Open>`, `None` meaning the service is missing (skipped).
#[cfg(test)]
macro_rules! conformance_tests {
    ($open:expr) => {
        $crate::conformance::conformance_tests!(@each $open;
            fan_out, queue_group, order, across_connections, publish_without_subscriber,
            drop_unsubscribes, payload_sizes, invalid_subjects, prefixes_do_not_cross, bounces);
    };
    (@each $open:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if let Some(open) = $open {
                    crate::conformance::$check(&open).await;
                }
            }
        )*
    };
}
#[cfg(test)]
pub(crate) use conformance_tests;
