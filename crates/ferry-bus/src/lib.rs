//! Ferry's server-to-server bus: how the nodes of a cluster send each other messages.
//!
//! Owns: the [`Bus`] trait (publish to a subject; subscribe to one, every subscriber getting every message; or
//! subscribe in a queue group, each message going to one member of the group), its implementations — in-process
//! ([`MemoryBus`], the default of a one-process node and of in-process test clusters), NATS ([`NatsBus`]) and
//! RabbitMQ ([`AmqpBus`]) — the one resolver from `FERRY_TRANSPORT` to a bus ([`connect`]), and a conformance
//! suite that every implementation passes (`conformance`, compiled for this crate's tests and behind the
//! `conformance` feature). Does not own: what the messages mean (the relay's cluster protocol,
//! `ferry-relay::cluster`), or delivery guarantees beyond "at most once, in order per publisher and subject":
//! redelivery, expiry and flow control are the protocol's, so that they are the same on every bus.
//!
//! Subjects are dot-separated words of `[A-Za-z0-9_-]` (`ferry.dispatch.acme`); there are no wildcards.
//!
//! Transports ([`connect`]):
//! - `memory`: a fresh in-process bus.
//! - `nats://[user[:password]@]host[:port]`, `tls://…` (TLS required): NATS. A user without a password is a
//!   token; [`BusOptions`] adds a `.creds` file, CA file, client certificate and the connection name. The client
//!   (`async-nats`) reconnects and resubscribes by itself (100 ms doubling to 2 s between attempts). `subscribe`
//!   makes a round trip through the server before returning, so that the subscription is in place for messages
//!   that other connections publish next (the client's own `flush` only writes the socket).
//! - `amqp://user:password@host:port/vhost`, `amqps://…`: RabbitMQ, through one direct exchange `ferry` with
//!   the subject as routing key; a queue group is a shared queue `ferry:{group}:{subject}`. This crate does the
//!   reconnecting (see [`AmqpBus`]).
//!
//! On both brokers the first connection fails with [`BusError::Connect`] within seconds; later outages are
//! survived: while the broker is away `publish` and `subscribe` answer [`BusError::Unavailable`] at once, and
//! once it is back the existing [`Subscription`]s resume by themselves (messages sent meanwhile are lost). A
//! subscription holds up to 131,072 unread messages; beyond that a broker's bus drops new ones with a warning
//! (the in-process bus never drops). Connection events are logged with `tracing` (`bus disconnected …` at warn,
//! `bus reconnected …` at info).
//!
//! Measured ceilings, one publisher and one subscriber of 64-byte messages, release build, on a shared 2-core
//! machine (`examples/throughput.rs`): in-process 1.4–4 M msg/s, NATS about 0.45–0.65 M msg/s, RabbitMQ 25–40
//! k msg/s end to end (publishing alone up to 150 k msg/s; the broker is the limit).
#![forbid(unsafe_code)]

pub mod amqp;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod memory;
pub mod metered;
pub mod nats;

use bytes::Bytes;
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

pub use amqp::AmqpBus;
pub use memory::MemoryBus;
pub use metered::MeteredBus;
pub use nats::NatsBus;

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The transport URL is not one Ferry knows, or is malformed.
    #[error("transport {url:?}: {message}")]
    Url { url: String, message: String },
    /// The first connection to the broker failed.
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    /// The broker is not reachable now (the bus keeps reconnecting by itself).
    #[error("the bus is unavailable: {0}")]
    Unavailable(String),
    /// A subject or group name outside the allowed character set.
    #[error("invalid subject {0:?}")]
    InvalidSubject(String),
    /// A payload larger than the broker accepts ([`Bus::max_payload`]).
    #[error("a payload of {size} bytes is over the bus's limit of {max}")]
    TooLarge { size: usize, max: usize },
    /// The bus was closed.
    #[error("the bus is closed")]
    Closed,
}

/// Messages arriving on one subscription, in the order they were published (per publisher). Ends when the bus is
/// closed; unsubscribes when dropped.
pub struct Subscription {
    inner: Pin<Box<dyn Stream<Item = Bytes> + Send>>,
}

impl Subscription {
    /// Wrap a stream of message payloads (for implementations).
    pub fn new(stream: impl Stream<Item = Bytes> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(stream),
        }
    }

    /// The next message, or `None` once the subscription has ended.
    pub async fn next(&mut self) -> Option<Bytes> {
        futures_util::StreamExt::next(&mut self.inner).await
    }
}

impl Stream for Subscription {
    type Item = Bytes;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// A message bus between the nodes of one cluster.
///
/// Guarantees, the same on every implementation (the conformance suite checks them):
/// - at most once: a message published while nobody subscribes, or while the broker is away, may be lost;
/// - in order: messages of one publisher (one `Bus` value) to one subject arrive in the order published;
/// - once `subscribe`/`queue_subscribe` has returned, the subscription receives every message published after;
/// - a queue group gives each message to exactly one of its current members;
/// - after a broker restart the bus reconnects by itself and its subscriptions resume, with no call from outside.
#[async_trait::async_trait]
pub trait Bus: Send + Sync + 'static {
    /// What kind of bus this is, for logs: `memory`, `nats`, `amqp`.
    fn kind(&self) -> &'static str;

    /// Send `payload` to every subscriber of `subject` and to one member of each queue group on it. Returns once
    /// the message is handed to the client library (not when delivered); fails only when the bus is closed or
    /// knows the broker is away.
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError>;

    /// Whether [`Bus::publish_or_bounce`] reports a message that found no subscriber (NATS and in process: yes;
    /// RabbitMQ: no, it publishes only).
    fn reports_unrouted(&self) -> bool {
        false
    }

    /// Send `payload` to `subject`, meant for a subject with one plain subscriber (a node's inbox). When the
    /// broker finds nobody subscribed to it (the node is gone), `bounce` is published to `bounce_subject`
    /// instead, within a round trip through the broker, so the sender learns that the message was not taken.
    /// Nothing is bounced when a subscriber took it. A bus that cannot tell ([`Bus::reports_unrouted`] false)
    /// only publishes.
    async fn publish_or_bounce(
        &self,
        subject: &str,
        payload: Bytes,
        bounce_subject: &str,
        bounce: Bytes,
    ) -> Result<(), BusError> {
        let _ = (bounce_subject, bounce);
        self.publish(subject, payload).await
    }

    /// Receive every message published to `subject`.
    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError>;

    /// Receive a share of the messages published to `subject`: each goes to one subscriber among those that
    /// subscribed with the same `group`.
    async fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription, BusError>;

    /// Wait until every message published so far has been handed to the broker, and every subscription dropped
    /// so far is gone from it (after which its share of a queue group goes to the other members).
    async fn flush(&self) -> Result<(), BusError>;

    /// Whether the bus is connected to its broker now (always true in process).
    fn is_connected(&self) -> bool;

    /// The largest payload `publish` accepts (NATS: the server's `max_payload`, 1 MiB by default).
    fn max_payload(&self) -> usize {
        usize::MAX
    }

    /// Leave the broker: unsubscribe, hand over what is queued (bounded wait), close the connection. Afterwards
    /// subscriptions end and every call fails with [`BusError::Closed`]. Dropping a bus closes it too, without
    /// waiting. The in-process bus ignores this (its clones share one set of subjects).
    async fn close(&self) {}
}

/// Where and how to connect, beyond the URL.
#[derive(Debug, Clone, Default)]
pub struct BusOptions {
    /// The connection's name as the broker shows it (the node id).
    pub connection_name: String,
    /// NATS: a credentials file (`.creds`, JWT and NKey seed).
    pub credentials_file: Option<std::path::PathBuf>,
    /// A PEM file of certificate authorities to trust for `tls://` and `amqps://` (default: the system's).
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate and key (PEM) for brokers that require one.
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
}

/// The transports [`connect`] knows, for error messages and docs.
pub const ACCEPTED_TRANSPORTS: &str = "memory, nats://, tls://, amqp://, amqps://";

/// Open the bus named by `url` (`FERRY_TRANSPORT`): `memory` for a fresh in-process bus, `nats://` or `tls://`
/// for NATS, `amqp://` or `amqps://` for RabbitMQ.
pub async fn connect(url: &str, options: &BusOptions) -> Result<Arc<dyn Bus>, BusError> {
    match url.split_once("://").map(|(scheme, _)| scheme) {
        None if url == "memory" => Ok(Arc::new(MemoryBus::new())),
        Some("nats" | "tls") => Ok(Arc::new(NatsBus::connect(url, options).await?)),
        Some("amqp" | "amqps") => Ok(Arc::new(AmqpBus::connect(url, options).await?)),
        _ => Err(BusError::Url {
            url: redact(url),
            message: format!("unknown transport; use one of: {ACCEPTED_TRANSPORTS}"),
        }),
    }
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// Check a subject or group name: dot-separated words of `[A-Za-z0-9_-]`, at most 255 bytes.
pub fn check_subject(subject: &str) -> Result<(), BusError> {
    let ok = !subject.is_empty()
        && subject.len() <= 255
        && subject.split('.').all(|word| {
            !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(BusError::InvalidSubject(subject.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact("nats://tok@host"), "nats://tok:***@host");
        assert_eq!(redact("memory"), "memory");
    }

    #[test]
    fn subjects() {
        assert!(check_subject("ferry.dispatch.acme-1").is_ok());
        assert!(check_subject("ferry.inbox.node_A").is_ok());
        for bad in ["", "a..b", ".a", "a.", "a.*", "a.>", "a b", "ä"] {
            assert!(check_subject(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn unknown_transports_are_refused() {
        let err = connect("kafka://x", &BusOptions::default())
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("unknown transport"), "{err}");
        assert!(connect("memory", &BusOptions::default()).await.is_ok());
    }
}
