//! The RabbitMQ bus (AMQP 0-9-1, `lapin`): owns the mapping of the bus onto AMQP, and the reconnection that
//! `lapin` does not do for us (see [`AmqpBus`]).

use crate::{check_subject, redact, Bus, BusError, BusOptions, Subscription};
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer, DefaultConnectionBuilder,
    Event, ExchangeKind,
};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

/// The exchange every Ferry node publishes to.
pub const EXCHANGE: &str = "ferry";
/// How long a connection attempt (TCP, TLS, AMQP handshake, exchange declaration) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long declaring a subscription's queue, binding and consumer, or a flush, may take.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages a subscription holds; beyond that new messages are dropped (at most once), with a warning.
pub const SUBSCRIPTION_CAPACITY: usize = 128 * 1024;
/// How long a queue group's queue outlives its last consumer (RabbitMQ `x-expires`).
pub const GROUP_QUEUE_EXPIRES: Duration = Duration::from_secs(30);
/// Every this many publishes, `publish` waits until `lapin` has written the message (backpressure).
pub const PUBLISH_WINDOW: u64 = 256;
/// The payload limit this bus announces: RabbitMQ 4's default `max_message_size` (3.x allowed 128 MiB).
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;
/// Reconnection backoff: the first retry waits this long, each next one twice as long up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// The supervisor checks the connection this often even when nothing told it of a failure.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A bus on a RabbitMQ broker.
///
/// Mapping: one direct exchange, [`EXCHANGE`], declared on every (re)connect; the routing key is the subject.
/// `subscribe` declares an exclusive, auto-delete, server-named queue bound to the subject; `queue_subscribe`
/// declares a shared queue `ferry:{group}:{subject}` (non-exclusive, expiring [`GROUP_QUEUE_EXPIRES`] after its
/// last consumer left) that every member consumes from, so RabbitMQ gives each message to one member. Each
/// subscription has a channel of its own; consumers use auto-ack: delivery is at most once, as the [`Bus`]
/// contract says. Dropping a [`Subscription`] closes its channel (RabbitMQ cancels the consumer and deletes an
/// auto-delete queue); `flush` waits for those closes.
///
/// Reconnection: a supervisor task owns the connection. When it fails (a connection error event, a consumer
/// that ends, a publish refused, or the check every second), the supervisor reconnects with backoff (100 ms
/// doubling to 2 s), declares the exchange again and re-creates every live subscription's queue, binding and
/// consumer, forwarding into the same [`Subscription`]. While disconnected, `publish` and `subscribe` answer
/// [`BusError::Unavailable`] at once. Dropping the bus (or [`Bus::close`]) stops the supervisor and ends the
/// subscriptions.
///
/// Publishing: no publisher confirms. `lapin`'s `basic_publish` queues the frames on its first poll, then waits
/// for its I/O thread to write them. `publish` polls it once (frames are queued in call order, so per-subject
/// order holds) and waits for the write only on every [`PUBLISH_WINDOW`]th message, which bounds what is queued
/// without a round trip to the I/O thread per message; `flush` waits for the last one to be written. All
/// channels of a connection share `lapin`'s one frame queue and I/O thread, so publishing uses one channel.
pub struct AmqpBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// The URL without its password, for messages.
    url: String,
    target: Target,
    live: Mutex<Option<Live>>,
    subscriptions: Mutex<HashMap<u64, Sub>>,
    next_id: AtomicU64,
    generation: AtomicU64,
    published: AtomicU64,
    /// The last publish not yet known to be written, for `flush`.
    last_publish: Mutex<Option<PendingPublish>>,
    /// Channels of dropped subscriptions being closed, for `flush`.
    closing: Mutex<Vec<Shared<BoxFuture<'static, ()>>>>,
    /// Wakes the supervisor: something may have failed.
    kick: Notify,
    closed: AtomicBool,
    /// The cause of the last connection failure, for the log line.
    last_error: Mutex<Option<String>>,
}

/// A publish whose frames are queued in lapin, resolving once they are written.
type PendingPublish = Shared<BoxFuture<'static, Result<(), String>>>;

struct Target {
    uri: String,
    properties: ConnectionProperties,
    tls: OwnedTLSConfig,
}

/// The connection in use and its publishing channel.
#[derive(Clone)]
struct Live {
    generation: u64,
    connection: Arc<Connection>,
    publisher: Channel,
    /// Reads the connection's events; stopped with the connection.
    _events: Arc<AbortOnDrop>,
}

/// A live subscription: what to re-create after a reconnect, and where its messages go.
struct Sub {
    subject: String,
    group: Option<String>,
    sender: mpsc::Sender<Bytes>,
    consumer: Option<Attached>,
    /// The generation `subscribe` is attaching the first consumer on (the supervisor leaves that to it).
    attaching: Option<u64>,
}

/// A consumer forwarding into a subscription, on its own channel of the connection of `generation`.
struct Attached {
    generation: u64,
    task: JoinHandle<()>,
    channel: Channel,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent; a panic elsewhere does not make it unusable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AmqpBus {
    /// Connect to `url` (`amqp://user:password@host:port/vhost`, or `amqps://` for TLS: the system's roots or
    /// `ca_file`, and a client certificate when `client_cert` and `client_key` are set). Fails with
    /// [`BusError::Connect`] within about [`CONNECT_TIMEOUT`]; once connected, the bus reconnects by itself.
    pub async fn connect(url: &str, options: &BusOptions) -> Result<Self, BusError> {
        let redacted = redact(url);
        let fail = |message: String| BusError::Connect {
            url: redacted.clone(),
            message,
        };
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err(BusError::Url {
                url: redacted.clone(),
                message: "expected amqp:// or amqps://".into(),
            });
        }
        let mut tls = OwnedTLSConfig::default();
        if let Some(path) = &options.ca_file {
            tls.cert_chain = Some(
                std::fs::read_to_string(path)
                    .map_err(|e| fail(format!("ca file {}: {e}", path.display())))?,
            );
        }
        match (&options.client_cert, &options.client_key) {
            (Some(cert), Some(key)) => {
                let read = |path: &std::path::PathBuf| {
                    std::fs::read(path).map_err(|e| fail(format!("{}: {e}", path.display())))
                };
                tls.identity = Some(OwnedIdentity::PKCS8 {
                    pem: read(cert)?,
                    key: read(key)?,
                });
            }
            (None, None) => {}
            _ => {
                return Err(fail(
                    "a client certificate needs both client_cert and client_key".into(),
                ))
            }
        }
        let mut properties = ConnectionProperties::default();
        if !options.connection_name.is_empty() {
            properties = properties.with_connection_name(options.connection_name.as_str().into());
        }
        let inner = Arc::new(Inner {
            url: redacted.clone(),
            target: Target {
                uri: url.to_owned(),
                properties,
                tls,
            },
            live: Mutex::new(None),
            subscriptions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            published: AtomicU64::new(0),
            last_publish: Mutex::new(None),
            closing: Mutex::new(Vec::new()),
            kick: Notify::new(),
            closed: AtomicBool::new(false),
            last_error: Mutex::new(None),
        });
        let live = inner.open().await.map_err(fail)?;
        *lock(&inner.live) = Some(live);
        tracing::info!(url = %redacted, "bus connected to rabbitmq");
        tokio::spawn(supervise(inner.clone()));
        Ok(Self { inner })
    }

    async fn add(&self, subject: &str, group: Option<&str>) -> Result<Subscription, BusError> {
        check_subject(subject)?;
        if let Some(group) = group {
            check_subject(group)?;
        }
        let inner = &self.inner;
        let live = inner.live()?;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::channel(SUBSCRIPTION_CAPACITY);
        // Registered first: a reconnect from now on re-creates it, whether or not the attach below succeeds.
        lock(&inner.subscriptions).insert(
            id,
            Sub {
                subject: subject.to_owned(),
                group: group.map(str::to_owned),
                sender: sender.clone(),
                consumer: None,
                attaching: Some(live.generation),
            },
        );
        let guard = Unsubscribe {
            inner: inner.clone(),
            id,
        };
        let attached = tokio::time::timeout(
            OPERATION_TIMEOUT,
            attach(inner, &live, subject, group, sender),
        )
        .await;
        let attached = match attached {
            Ok(Ok(attached)) => attached,
            Ok(Err(e)) => {
                inner.kick.notify_one();
                return Err(BusError::Unavailable(format!(
                    "rabbitmq at {}: {e}",
                    inner.url
                )));
            }
            Err(_) => {
                inner.kick.notify_one();
                return Err(BusError::Unavailable(format!(
                    "rabbitmq at {}: subscribing took over {OPERATION_TIMEOUT:?}",
                    inner.url
                )));
            }
        };
        inner.install(id, attached);
        Ok(Subscription::new(futures_util::stream::unfold(
            (receiver, guard),
            |(mut receiver, guard)| async move {
                let item = receiver.recv().await?;
                Some((item, (receiver, guard)))
            },
        )))
    }
}

impl Drop for AmqpBus {
    fn drop(&mut self) {
        self.inner.shut();
    }
}

/// Removes a subscription, and cancels its consumer, when its stream is dropped.
struct Unsubscribe {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let removed = lock(&self.inner.subscriptions).remove(&self.id);
        if let Some(attached) = removed.and_then(|sub| sub.consumer) {
            self.inner.detach(attached);
        }
    }
}

impl Inner {
    fn live(&self) -> Result<Live, BusError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(BusError::Closed);
        }
        match &*lock(&self.live) {
            Some(live) if live.publisher.status().connected() => Ok(live.clone()),
            _ => {
                self.kick.notify_one();
                Err(BusError::Unavailable(format!(
                    "rabbitmq at {} is disconnected; reconnecting",
                    self.url
                )))
            }
        }
    }

    /// Connect, declare the exchange, open the publishing channel.
    async fn open(self: &Arc<Self>) -> Result<Live, String> {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let setup = async {
            let connection = DefaultConnectionBuilder::new()
                .map_err(|e| e.to_string())?
                .with_uri_str(self.target.uri.clone())
                .with_properties(self.target.properties.clone())
                .with_tls_config(self.target.tls.clone())
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            let publisher = connection
                .create_channel()
                .await
                .map_err(|e| e.to_string())?;
            publisher
                .exchange_declare(
                    EXCHANGE.into(),
                    ExchangeKind::Direct,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| format!("declare exchange {EXCHANGE}: {e}"))?;
            Ok::<_, String>((connection, publisher))
        };
        let (connection, publisher) = tokio::time::timeout(CONNECT_TIMEOUT, setup)
            .await
            .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))??;
        let events = tokio::spawn(watch_events(
            connection.events_listener(),
            Arc::downgrade(self),
        ));
        Ok(Live {
            generation,
            connection: Arc::new(connection),
            publisher,
            _events: Arc::new(AbortOnDrop(events)),
        })
    }

    /// Record the consumer of subscription `id`, unless the supervisor has already given it one on a newer
    /// connection (or the subscription is gone).
    fn install(&self, id: u64, attached: Attached) {
        let unused = {
            let mut subscriptions = lock(&self.subscriptions);
            match subscriptions.get_mut(&id) {
                None => Some(attached),
                Some(sub) => {
                    sub.attaching = None;
                    let newer = matches!(
                        &sub.consumer,
                        Some(current) if current.generation > attached.generation && !current.task.is_finished()
                    );
                    if newer {
                        Some(attached)
                    } else {
                        sub.consumer.replace(attached)
                    }
                }
            }
        };
        if let Some(unused) = unused {
            self.detach(unused);
        }
    }

    /// Cancel a consumer: close its channel (RabbitMQ cancels the consumer and deletes an auto-delete queue),
    /// then stop its task. `flush` waits for the close to be confirmed.
    fn detach(&self, attached: Attached) {
        let Attached { task, channel, .. } = attached;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime (dropped outside one): dropping the channel's handles makes lapin close it.
            task.abort();
            return;
        };
        let closing = async move {
            if channel.status().connected() {
                let close = channel.close(200, "unsubscribed".into());
                let _ = tokio::time::timeout(OPERATION_TIMEOUT, close).await;
            }
            task.abort();
        }
        .boxed()
        .shared();
        runtime.spawn(closing.clone());
        let mut pending = lock(&self.closing);
        pending.retain(|closing| closing.peek().is_none());
        pending.push(closing);
    }

    /// Make the bus whole: a healthy connection, and a consumer on it for every subscription.
    async fn reconcile(self: &Arc<Self>) -> Result<(), String> {
        let current = lock(&self.live).clone();
        let live = match current {
            Some(live)
                if live.connection.status().connected() && live.publisher.status().connected() =>
            {
                live
            }
            stale => {
                if stale.is_some() {
                    let cause = lock(&self.last_error)
                        .take()
                        .unwrap_or_else(|| "connection closed".into());
                    tracing::warn!(url = %self.url, %cause, "bus disconnected from rabbitmq; reconnecting");
                    *lock(&self.live) = None;
                    *lock(&self.last_publish) = None;
                }
                let live = self.open().await?;
                if self.closed.load(Ordering::Relaxed) {
                    return Ok(());
                }
                *lock(&self.live) = Some(live.clone());
                tracing::info!(url = %self.url, "bus reconnected to rabbitmq");
                live
            }
        };
        let missing: Vec<(u64, String, Option<String>, mpsc::Sender<Bytes>)> =
            lock(&self.subscriptions)
                .iter()
                .filter(|(_, sub)| match &sub.consumer {
                    None => sub.attaching != Some(live.generation),
                    Some(c) => c.generation < live.generation || c.task.is_finished(),
                })
                .map(|(id, sub)| {
                    (
                        *id,
                        sub.subject.clone(),
                        sub.group.clone(),
                        sub.sender.clone(),
                    )
                })
                .collect();
        // Every subscription gets its chance, even when one fails.
        let mut failed = Ok(());
        for (id, subject, group, sender) in missing {
            let attached = tokio::time::timeout(
                OPERATION_TIMEOUT,
                attach(self, &live, &subject, group.as_deref(), sender),
            )
            .await;
            match attached {
                Ok(Ok(attached)) => self.install(id, attached),
                Ok(Err(e)) => failed = Err(format!("resubscribe to {subject}: {e}")),
                Err(_) => {
                    failed = Err(format!(
                        "resubscribing to {subject} took over {OPERATION_TIMEOUT:?}"
                    ))
                }
            }
        }
        failed
    }

    /// Stop: no connection, no subscriptions (their streams end), the supervisor exits.
    fn shut(&self) {
        if self.closed.swap(true, Ordering::Relaxed) {
            return;
        }
        let subscriptions: Vec<Sub> = lock(&self.subscriptions).drain().map(|(_, s)| s).collect();
        for sub in subscriptions {
            if let Some(attached) = sub.consumer {
                attached.task.abort();
            }
        }
        *lock(&self.live) = None;
        *lock(&self.last_publish) = None;
        self.kick.notify_one();
    }
}

/// The supervisor: waits for a sign of trouble (or the periodic check) and reconciles, with backoff on failure.
async fn supervise(inner: Arc<Inner>) {
    let mut failures: u32 = 0;
    loop {
        if failures == 0 {
            tokio::select! {
                () = inner.kick.notified() => {}
                () = tokio::time::sleep(HEALTH_CHECK_INTERVAL) => {}
            }
        }
        if inner.closed.load(Ordering::Relaxed) {
            break;
        }
        match inner.reconcile().await {
            Ok(()) => failures = 0,
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = backoff(failures);
                // The disconnection was logged; a failure that lasts is worth a line now and then.
                if failures % 30 == 3 {
                    tracing::warn!(url = %inner.url, %error, failures, "bus still cannot reconnect to rabbitmq; retrying");
                } else {
                    tracing::debug!(url = %inner.url, %error, ?delay, "bus reconnection to rabbitmq failed; retrying");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The wait after `failures` consecutive failed attempts: 100 ms, 200 ms, … up to 2 s.
fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(5);
    (BACKOFF_MIN * 2u32.pow(exponent)).min(BACKOFF_MAX)
}

/// Log the connection's notable events and wake the supervisor on an error.
async fn watch_events(
    mut events: impl futures_util::Stream<Item = Event> + Unpin,
    inner: Weak<Inner>,
) {
    while let Some(event) = events.next().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match event {
            Event::Error(error) => {
                *lock(&inner.last_error) = Some(error.to_string());
                inner.kick.notify_one();
            }
            Event::ConnectionBlocked(reason) => {
                tracing::warn!(url = %inner.url, %reason, "rabbitmq blocks publishing on the bus (resource alarm)")
            }
            Event::ConnectionUnblocked => {
                tracing::info!(url = %inner.url, "rabbitmq unblocked publishing on the bus")
            }
            _ => {}
        }
    }
}

/// The name of a queue group's queue: `:` cannot occur in a group or subject, so different pairs never share a
/// queue; a name over AMQP's 255 bytes is shortened with a hash of the whole.
fn group_queue(group: &str, subject: &str) -> String {
    let name = format!("ferry:{group}:{subject}");
    if name.len() <= 255 {
        return name;
    }
    // FNV-1a: stable across processes and versions, as every node must compute the same name.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    // The name is ASCII (checked subjects), so any byte index is a char boundary.
    format!("{}:{hash:016x}", &name[..200])
}

/// Declare the subscription's queue and binding and start a consumer forwarding into `sender`, on a channel of
/// its own (a failed declaration closes only that channel).
async fn attach(
    inner: &Arc<Inner>,
    live: &Live,
    subject: &str,
    group: Option<&str>,
    sender: mpsc::Sender<Bytes>,
) -> Result<Attached, lapin::Error> {
    let channel = live.connection.create_channel().await?;
    let queue: ShortString = match group {
        None => channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?
            .name()
            .clone(),
        Some(group) => {
            let mut arguments = FieldTable::default();
            let expires = i32::try_from(GROUP_QUEUE_EXPIRES.as_millis()).unwrap_or(i32::MAX);
            arguments.insert("x-expires".into(), AMQPValue::LongInt(expires));
            channel
                .queue_declare(
                    group_queue(group, subject).as_str().into(),
                    QueueDeclareOptions::default(),
                    arguments,
                )
                .await?
                .name()
                .clone()
        }
    };
    channel
        .queue_bind(
            queue.clone(),
            EXCHANGE.into(),
            subject.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumer = channel
        .basic_consume(
            queue,
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let task = tokio::spawn(forward(
        consumer,
        channel.clone(),
        sender,
        Arc::downgrade(inner),
        subject.to_owned(),
    ));
    Ok(Attached {
        generation: live.generation,
        task,
        channel,
    })
}

/// Move deliveries into the subscription until the consumer ends (then wake the supervisor) or the subscription
/// is dropped. Owns the channel: when this task ends or is aborted, lapin closes it.
async fn forward(
    mut consumer: Consumer,
    _channel: Channel,
    sender: mpsc::Sender<Bytes>,
    inner: Weak<Inner>,
    subject: String,
) {
    let mut dropped: u64 = 0;
    while let Some(delivery) = consumer.next().await {
        let Ok(delivery) = delivery else {
            break;
        };
        match sender.try_send(Bytes::from(delivery.data)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                dropped += 1;
                if dropped % 10_000 == 1 {
                    tracing::warn!(%subject, dropped, "bus subscription is full; dropping its new messages");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
    if let Some(inner) = inner.upgrade() {
        inner.kick.notify_one();
    }
}

/// Poll `future` once, with the caller's context.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await
}

#[async_trait::async_trait]
impl Bus for AmqpBus {
    fn kind(&self) -> &'static str {
        "amqp"
    }

    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        check_subject(subject)?;
        if payload.len() > MAX_PAYLOAD {
            return Err(BusError::TooLarge {
                size: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        let inner = &self.inner;
        let live = inner.live()?;
        let channel = live.publisher;
        let routing_key: ShortString = subject.into();
        let mut publish: BoxFuture<'static, Result<(), String>> = Box::pin(async move {
            channel
                .basic_publish(
                    EXCHANGE.into(),
                    routing_key,
                    BasicPublishOptions::default(),
                    &payload,
                    BasicProperties::default(),
                )
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        });
        let unavailable = |e: String| {
            inner.kick.notify_one();
            BusError::Unavailable(format!("rabbitmq at {}: {e}", inner.url))
        };
        // The first poll queues the frames; what remains is waiting for the I/O thread to write them.
        match poll_once(&mut publish).await {
            Poll::Ready(result) => result.map_err(unavailable),
            Poll::Pending => {
                let publish = publish.shared();
                *lock(&inner.last_publish) = Some(publish.clone());
                let count = inner.published.fetch_add(1, Ordering::Relaxed);
                if !count.is_multiple_of(PUBLISH_WINDOW) {
                    return Ok(());
                }
                match tokio::time::timeout(OPERATION_TIMEOUT, publish).await {
                    Ok(result) => result.map_err(unavailable),
                    Err(_) => Err(unavailable(format!(
                        "a message was not written within {OPERATION_TIMEOUT:?}"
                    ))),
                }
            }
        }
    }

    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        self.add(subject, None).await
    }

    async fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription, BusError> {
        self.add(subject, Some(group)).await
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.inner.live()?;
        let closing = lock(&self.inner.closing).clone();
        for closing in closing {
            let _ = tokio::time::timeout(OPERATION_TIMEOUT, closing).await;
        }
        let last = lock(&self.inner.last_publish).clone();
        let Some(last) = last else {
            return Ok(());
        };
        match tokio::time::timeout(OPERATION_TIMEOUT, last).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BusError::Unavailable(format!(
                "rabbitmq at {}: {e}",
                self.inner.url
            ))),
            Err(_) => Err(BusError::Unavailable(format!(
                "rabbitmq at {}: flush not done within {OPERATION_TIMEOUT:?}",
                self.inner.url
            ))),
        }
    }

    fn is_connected(&self) -> bool {
        self.inner.live().is_ok()
    }

    fn max_payload(&self) -> usize {
        MAX_PAYLOAD
    }

    async fn close(&self) {
        let last = lock(&self.inner.last_publish).clone();
        if let Some(last) = last {
            let _ = tokio::time::timeout(OPERATION_TIMEOUT, last).await;
        }
        let live = lock(&self.inner.live).clone();
        self.inner.shut();
        if let Some(live) = live {
            let close = live.connection.close(200, "bye".into());
            let _ = tokio::time::timeout(OPERATION_TIMEOUT, close).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_queue_names() {
        assert_eq!(group_queue("g", "a.b"), "ferry:g:a.b");
        assert_ne!(group_queue("a.b", "c"), group_queue("a", "b.c"));
        let long = "x".repeat(250);
        let name = group_queue(&long, "s");
        assert!(name.len() <= 255, "{}", name.len());
        assert_eq!(name, group_queue(&long, "s"), "stable");
        assert_ne!(name, group_queue(&long, "t"));
    }

    #[test]
    fn backoff_doubles_to_two_seconds() {
        let delays: Vec<u128> = (1..8).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
    }

    mod conformance {
        use crate::{AmqpBus, Bus, BusOptions};
        use std::sync::Arc;

        async fn open() -> Option<impl crate::conformance::Open> {
            let url = crate::conformance::amqp_url().await?;
            Some(move || {
                let url = url.clone();
                async move {
                    let bus = AmqpBus::connect(&url, &BusOptions::default())
                        .await
                        .expect("connect");
                    Arc::new(bus) as Arc<dyn Bus>
                }
            })
        }

        crate::conformance::conformance_tests!(open().await);
    }

    use crate::conformance::{receive, unique_prefix};

    /// Poll `condition` every 20 ms until it holds, failing after `within`.
    async fn eventually<F, Fut>(what: &str, within: Duration, condition: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + within;
        while !condition().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Publish from `publisher` until `subscription` receives (the subscription is not touched otherwise).
    async fn resumes(
        publisher: &dyn Bus,
        subject: &str,
        subscription: &mut Subscription,
        what: &str,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let _ = publisher
                .publish(subject, Bytes::from_static(b"after"))
                .await;
            if let Ok(Some(message)) =
                tokio::time::timeout(Duration::from_millis(100), subscription.next()).await
            {
                assert_eq!(message, "after", "{what}");
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: nothing after the reconnect"
            );
        }
    }

    /// `rabbitmqctl` with `args`, if it works here (it needs to run as root or the broker's user).
    async fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
        let run = tokio::process::Command::new("rabbitmqctl")
            .args(args)
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(Duration::from_secs(60), run).await {
            Err(_) => Err("rabbitmqctl took over 60s".into()),
            Ok(Err(e)) => Err(format!("rabbitmqctl: {e}")),
            Ok(Ok(out)) if out.status.success() => {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            }
            Ok(Ok(out)) => Err(format!(
                "rabbitmqctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }

    /// The broker's pids of the connections whose client properties name `connection_name`.
    async fn connection_pids(connection_name: &str) -> Vec<String> {
        let listing = rabbitmqctl(&[
            "-q",
            "--no-table-headers",
            "list_connections",
            "pid",
            "client_properties",
        ])
        .await
        .expect("list connections");
        listing
            .lines()
            .filter(|line| line.contains(connection_name))
            .filter_map(|line| line.split('\t').next())
            .map(str::to_owned)
            .collect()
    }

    /// The broker closes this test's connection (and only it); the bus reconnects by itself and its plain and
    /// queue-group subscriptions resume.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resumes_after_the_broker_closes_the_connection() {
        let Some(url) = crate::conformance::amqp_url().await else {
            return;
        };
        if let Err(e) = rabbitmqctl(&["-q", "list_connections", "pid"]).await {
            assert!(
                std::env::var_os("CI").is_none(),
                "rabbitmqctl required in CI: {e}"
            );
            eprintln!("skipped: {e}");
            return;
        }
        let name = format!("ferry-bus-test-{}", unique_prefix());
        let options = BusOptions {
            connection_name: name.clone(),
            ..BusOptions::default()
        };
        let bus = AmqpBus::connect(&url, &options).await.expect("connect");
        let publisher = AmqpBus::connect(&url, &BusOptions::default())
            .await
            .expect("publisher");
        let subject = format!("{}.closed", unique_prefix());
        let mut plain = bus.subscribe(&subject).await.expect("subscribe");
        let mut member = bus.queue_subscribe(&subject, "g").await.expect("member");
        publisher
            .publish(&subject, Bytes::from_static(b"before"))
            .await
            .expect("publish");
        publisher.flush().await.expect("flush");
        assert_eq!(receive(&mut plain, "plain").await, "before");
        assert_eq!(receive(&mut member, "member").await, "before");

        let pids = connection_pids(&name).await;
        assert_eq!(pids.len(), 1, "one connection named {name}: {pids:?}");
        rabbitmqctl(&["close_connection", &pids[0], "ferry-bus reconnect test"])
            .await
            .expect("close the connection");
        eventually("a new connection", Duration::from_secs(30), || async {
            let now = connection_pids(&name).await;
            now.len() == 1 && now[0] != pids[0]
        })
        .await;
        eventually(
            "the bus says connected",
            Duration::from_secs(10),
            || async { bus.is_connected() },
        )
        .await;
        resumes(&publisher, &subject, &mut plain, "plain").await;
        resumes(&publisher, &subject, &mut member, "member").await;
    }

    /// A TCP proxy of this test's own in front of the broker: stopping it is an outage of the broker for the
    /// bus behind it, without touching the shared broker.
    struct Proxy {
        port: u16,
        task: JoinHandle<()>,
    }

    impl Proxy {
        async fn start(port: u16, upstream: std::net::SocketAddr) -> Self {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .expect("bind the proxy");
            let port = listener.local_addr().expect("address").port();
            let task = tokio::spawn(async move {
                // The connections' tasks live in the set: aborting this task drops them all.
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((mut client, _)) = listener.accept().await {
                    connections.spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            });
            Self { port, task }
        }

        async fn stop(self) {
            self.task.abort();
            let _ = self.task.await;
        }
    }

    /// While the broker is unreachable, publish and subscribe answer `Unavailable` at once; when it is back the
    /// bus reconnects by itself and the subscriptions resume.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outage_is_survived() {
        let Some(url) = crate::conformance::amqp_url().await else {
            return;
        };
        let (scheme_user, rest) = url.rsplit_once('@').expect("the test URL has credentials");
        let (authority, vhost) = rest.split_once('/').unwrap_or((rest, ""));
        let upstream = tokio::net::lookup_host(authority)
            .await
            .expect("resolve")
            .next()
            .expect("an address");
        let proxy = Proxy::start(0, upstream).await;
        let port = proxy.port;
        let proxied = format!("{scheme_user}@127.0.0.1:{port}/{vhost}");
        let bus = AmqpBus::connect(&proxied, &BusOptions::default())
            .await
            .expect("connect through the proxy");
        let publisher = AmqpBus::connect(&url, &BusOptions::default())
            .await
            .expect("publisher");
        let subject = format!("{}.outage", unique_prefix());
        let mut plain = bus.subscribe(&subject).await.expect("subscribe");
        let mut member = bus.queue_subscribe(&subject, "g").await.expect("member");

        proxy.stop().await;
        eventually(
            "the bus sees the broker gone",
            Duration::from_secs(10),
            || async { !bus.is_connected() },
        )
        .await;
        let quick = Duration::from_secs(1);
        let published =
            tokio::time::timeout(quick, bus.publish(&subject, Bytes::from_static(b"lost")))
                .await
                .expect("publish answers at once during the outage");
        assert!(
            matches!(published, Err(BusError::Unavailable(_))),
            "{published:?}"
        );
        let subscribed = tokio::time::timeout(quick, bus.subscribe(&subject))
            .await
            .expect("subscribe answers at once during the outage");
        assert!(matches!(subscribed, Err(BusError::Unavailable(_))));

        let _proxy = Proxy::start(port, upstream).await;
        eventually("the bus reconnects", Duration::from_secs(15), || async {
            bus.is_connected()
        })
        .await;
        resumes(&publisher, &subject, &mut plain, "plain").await;
        resumes(&publisher, &subject, &mut member, "member").await;
        bus.publish(&subject, Bytes::from_static(b"own"))
            .await
            .expect("the bus publishes again");
    }

    #[tokio::test]
    async fn a_missing_broker_fails_fast_with_the_url_redacted() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("address")
            .port();
        let url = format!("amqp://ferry:hunter2@127.0.0.1:{port}/%2f");
        let started = std::time::Instant::now();
        let err = AmqpBus::connect(&url, &BusOptions::default())
            .await
            .err()
            .expect("nothing listens there");
        assert!(started.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(1));
        let text = err.to_string();
        assert!(matches!(err, BusError::Connect { .. }), "{text}");
        assert!(text.contains("ferry:***@127.0.0.1"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
