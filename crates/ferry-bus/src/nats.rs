//! The NATS bus: subjects are NATS subjects, queue groups are NATS queue groups, and `async-nats` does the
//! reconnecting and resubscribing. Owns the translation of a `nats://` or `tls://` URL and [`BusOptions`] into
//! `async-nats` options, the connection-event log lines, and the round trip that makes a new subscription
//! effective before `subscribe` returns.

use crate::{check_subject, redact, Bus, BusError, BusOptions, Subscription};
use async_nats::client::RequestErrorKind;
use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long the first connection may take (TCP, TLS, handshake) before [`NatsBus::connect`] gives up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `subscribe`, `queue_subscribe` and `flush` wait for the server before answering
/// [`BusError::Unavailable`].
pub const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `publish` waits for room in the client's queue to the server (it is full only when the server reads
/// slower than we publish, or has silently gone).
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages a subscription holds before the client drops new ones as a slow consumer.
pub const SUBSCRIPTION_CAPACITY: usize = 128 * 1024;
/// The client's queue of commands to the connection task (publishes waiting to be written).
const CLIENT_CAPACITY: usize = 8 * 1024;
/// How often the client pings the server; two unanswered pings mark the connection dead.
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// The reconnect delay after `attempts` failed attempts: 0, then 100 ms doubling to 2 s.
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exponent = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(5);
    Duration::from_millis(100u64 << exponent).min(Duration::from_secs(2))
}

/// A bus on a NATS server (or cluster): subjects are NATS subjects, queue groups NATS queue groups.
///
/// `async-nats` reconnects and resubscribes by itself (100 ms doubling to 2 s between attempts, forever); while
/// it is disconnected `publish`, `subscribe` and `flush` answer [`BusError::Unavailable`] at once. Publishing is
/// handed to the client, which batches writes (no flush per message). `subscribe` and `flush` make a round trip
/// through the server (a request nobody answers, which comes back "no responders"), so that a new subscription
/// is in place, and a dropped one gone, before they return. A subscription holds [`SUBSCRIPTION_CAPACITY`]
/// unread messages; beyond that the client drops new ones (slow consumer, logged at warn).
pub struct NatsBus {
    client: Client,
    /// The URL without its password, for messages.
    url: String,
    closed: AtomicBool,
    /// Where bounces come back: this connection's own reply prefix, subscribed at the first
    /// [`Bus::publish_or_bounce`] ([`Bounces`]).
    bounces: tokio::sync::OnceCell<Bounces>,
}

/// The bounce path of [`Bus::publish_or_bounce`] on NATS. The message goes out with a reply subject
/// `{prefix}.{bounce subject}.{bounce payload in hex}`; when nobody subscribes to the message's subject, the
/// server answers that reply subject with a "no responders" status (a NATS 2.2 feature that `async-nats` asks
/// for), and the task reading `{prefix}.>` publishes the bounce it names. Everything travels in the reply
/// subject, so nothing is kept per message, and a message that was taken costs nothing more than its longer
/// reply subject.
struct Bounces {
    prefix: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Bounces {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The largest bounce payload [`Bus::publish_or_bounce`] takes on NATS (it travels hex-encoded in a subject).
pub const MAX_BOUNCE: usize = 64;

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// The bounce a "no responders" answer to `reply` names: its subject and payload.
fn parse_bounce(prefix: &str, reply: &str) -> Option<(String, Bytes)> {
    let rest = reply.strip_prefix(prefix)?.strip_prefix('.')?;
    let (subject, hex) = rest.rsplit_once('.')?;
    check_subject(subject).ok()?;
    Some((subject.to_owned(), Bytes::from(from_hex(hex)?)))
}

impl NatsBus {
    /// Connect to `url` (`nats://[user[:password]@]host[:port]`, or `tls://…` to require TLS). A user without a
    /// password is sent as a token. Fails with [`BusError::Connect`] within about [`CONNECT_TIMEOUT`] when the
    /// server cannot be reached; once connected, the client reconnects by itself forever.
    pub async fn connect(url: &str, options: &BusOptions) -> Result<Self, BusError> {
        let redacted = redact(url);
        let (server, user, password) = split_credentials(url)?;
        let fail = |message: String| BusError::Connect {
            url: redacted.clone(),
            message,
        };

        let mut connect = ConnectOptions::new();
        match (user, password) {
            (Some(user), Some(password)) => connect = connect.user_and_password(user, password),
            (Some(token), None) => connect = connect.token(token),
            _ => {}
        }
        if let Some(path) = &options.credentials_file {
            connect = connect
                .credentials_file(path)
                .await
                .map_err(|e| fail(format!("credentials file {}: {e}", path.display())))?;
        }
        if server.starts_with("tls://") {
            connect = connect.require_tls(true);
        }
        if let Some(ca) = &options.ca_file {
            connect = connect.add_root_certificates(ca.clone());
        }
        match (&options.client_cert, &options.client_key) {
            (Some(cert), Some(key)) => {
                connect = connect.add_client_certificate(cert.clone(), key.clone());
            }
            (None, None) => {}
            _ => {
                return Err(fail(
                    "a client certificate needs both client_cert and client_key".into(),
                ))
            }
        }
        if !options.connection_name.is_empty() {
            connect = connect.name(&options.connection_name);
        }
        let log_url = redacted.clone();
        // async-nats reports the first connection as `Connected` too; only later ones are reconnections.
        let connected_before = Arc::new(AtomicBool::new(false));
        connect = connect
            .connection_timeout(CONNECT_TIMEOUT)
            .ping_interval(PING_INTERVAL)
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .client_capacity(CLIENT_CAPACITY)
            .reconnect_delay_callback(reconnect_delay)
            .max_reconnects(None)
            .event_callback(move |event| {
                let url = log_url.clone();
                let reconnection = matches!(event, Event::Connected)
                    && connected_before.swap(true, Ordering::Relaxed);
                async move { log_event(&url, event, reconnection) }
            });

        // The client's own timeout covers each address it tries; this one bounds the whole attempt.
        let client = tokio::time::timeout(CONNECT_TIMEOUT * 2, connect.connect(server.as_str()))
            .await
            .map_err(|_| fail(format!("no answer within {:?}", CONNECT_TIMEOUT * 2)))?
            .map_err(|e| fail(e.to_string()))?;
        tracing::info!(url = %redacted, "bus connected to nats");
        Ok(Self {
            client,
            url: redacted,
            closed: AtomicBool::new(false),
            bounces: tokio::sync::OnceCell::new(),
        })
    }

    /// The underlying client, for what the trait does not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn ensure_connected(&self) -> Result<(), BusError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(BusError::Closed);
        }
        match self.client.connection_state() {
            State::Connected => Ok(()),
            state => Err(BusError::Unavailable(format!(
                "nats at {} is {state}",
                self.url
            ))),
        }
    }

    /// A round trip through the server: a request to a subject nobody listens on comes back as "no responders"
    /// once the server has processed everything this connection sent before it (notably a SUB).
    /// `Client::flush` only writes the socket; it does not wait for the server.
    async fn sync(&self) -> Result<(), BusError> {
        let unavailable =
            |why: String| BusError::Unavailable(format!("nats at {}: {why}", self.url));
        let request = self.client.request(self.client.new_inbox(), Bytes::new());
        match tokio::time::timeout(ROUND_TRIP_TIMEOUT, request).await {
            Err(_) => Err(unavailable(format!(
                "no answer from the server within {ROUND_TRIP_TIMEOUT:?}"
            ))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
            Ok(Err(e)) => Err(unavailable(e.to_string())),
        }
    }

    async fn add(&self, subject: &str, group: Option<&str>) -> Result<Subscription, BusError> {
        check_subject(subject)?;
        if let Some(group) = group {
            check_subject(group)?;
        }
        self.ensure_connected()?;
        let subscribed = match group {
            None => self.client.subscribe(subject.to_owned()).await,
            Some(group) => {
                self.client
                    .queue_subscribe(subject.to_owned(), group.to_owned())
                    .await
            }
        };
        let subscriber = subscribed.map_err(|e| self.send_error(e))?;
        // Dropped on failure: the subscriber unsubscribes.
        self.sync().await?;
        Ok(Subscription::new(subscriber.map(|message| message.payload)))
    }

    /// The bounce prefix, subscribing to it first if this is the first bounce-checked publish.
    async fn bounce_prefix(&self) -> Result<&str, BusError> {
        let bounces = self
            .bounces
            .get_or_try_init(|| async {
                let prefix = self.client.new_inbox();
                let mut subscriber = self
                    .client
                    .subscribe(format!("{prefix}.>"))
                    .await
                    .map_err(|e| self.send_error(e))?;
                self.sync().await?;
                let client = self.client.clone();
                let own = prefix.clone();
                let task = tokio::spawn(async move {
                    while let Some(message) = subscriber.next().await {
                        if message.status != Some(StatusCode::NO_RESPONDERS) {
                            continue;
                        }
                        match parse_bounce(&own, &message.subject) {
                            Some((subject, payload)) => {
                                if let Err(error) = client.publish(subject, payload).await {
                                    tracing::debug!(%error, "bounce not sent");
                                }
                            }
                            None => tracing::debug!(subject = %message.subject, "malformed bounce subject"),
                        }
                    }
                });
                Ok::<_, BusError>(Bounces { prefix, task })
            })
            .await?;
        Ok(&bounces.prefix)
    }

    /// Connected, and `payload` within the server's limit.
    fn ready_for(&self, payload: &Bytes) -> Result<(), BusError> {
        self.ensure_connected()?;
        let max = self.client.max_payload();
        if payload.len() > max {
            return Err(BusError::TooLarge {
                size: payload.len(),
                max,
            });
        }
        Ok(())
    }

    /// Wait (at most [`PUBLISH_TIMEOUT`]) for the client to take a publish into its queue to the server.
    async fn handed_over<E: std::fmt::Display>(
        &self,
        publish: impl std::future::Future<Output = Result<(), E>>,
    ) -> Result<(), BusError> {
        match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.send_error(e)),
            Err(_) => Err(BusError::Unavailable(format!(
                "nats at {}: the queue to the server stayed full for {PUBLISH_TIMEOUT:?}",
                self.url
            ))),
        }
    }

    fn send_error(&self, e: impl std::fmt::Display) -> BusError {
        if self.closed.load(Ordering::Relaxed) {
            BusError::Closed
        } else {
            BusError::Unavailable(format!("nats at {}: {e}", self.url))
        }
    }
}

#[async_trait::async_trait]
impl Bus for NatsBus {
    fn kind(&self) -> &'static str {
        "nats"
    }

    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        check_subject(subject)?;
        self.ready_for(&payload)?;
        self.handed_over(self.client.publish(subject.to_owned(), payload))
            .await
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
        check_subject(subject)?;
        check_subject(bounce_subject)?;
        if bounce.len() > MAX_BOUNCE {
            return Err(BusError::TooLarge {
                size: bounce.len(),
                max: MAX_BOUNCE,
            });
        }
        self.ready_for(&payload)?;
        let reply = format!(
            "{}.{bounce_subject}.{}",
            self.bounce_prefix().await?,
            to_hex(&bounce)
        );
        self.handed_over(
            self.client
                .publish_with_reply(subject.to_owned(), reply, payload),
        )
        .await
    }

    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        self.add(subject, None).await
    }

    async fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription, BusError> {
        self.add(subject, Some(group)).await
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.ensure_connected()?;
        // A round trip, not `Client::flush`: the server has then also processed our UNSUBs.
        self.sync().await
    }

    fn is_connected(&self) -> bool {
        !self.closed.load(Ordering::Relaxed) && self.client.connection_state() == State::Connected
    }

    fn max_payload(&self) -> usize {
        self.client.max_payload()
    }

    async fn close(&self) {
        if self.closed.swap(true, Ordering::Relaxed) {
            return;
        }
        // Drain: unsubscribe everything, write what is queued, then close; subscriptions end.
        let _ = tokio::time::timeout(ROUND_TRIP_TIMEOUT, self.client.drain()).await;
    }
}

fn log_event(url: &str, event: Event, reconnection: bool) {
    match event {
        Event::Connected if reconnection => tracing::info!(%url, "bus reconnected to nats"),
        Event::Connected => tracing::debug!(%url, "nats connection established"),
        Event::Disconnected => tracing::warn!(%url, "bus disconnected from nats; reconnecting"),
        Event::SlowConsumer(sid) => tracing::warn!(
            %url,
            sid,
            "bus subscription is full; nats drops its new messages (slow consumer)"
        ),
        Event::LameDuckMode => {
            tracing::warn!(%url, "nats server is shutting down (lame duck mode)")
        }
        Event::ServerError(error) => tracing::warn!(%url, %error, "nats server error"),
        // Every failed reconnect attempt: the disconnection was logged already.
        Event::ClientError(error) => tracing::debug!(%url, %error, "nats client error"),
        Event::Draining | Event::Closed => tracing::debug!(%url, %event, "nats connection closing"),
    }
}

/// Split `nats://user:password@host:port` into the URL without credentials and the percent-decoded user and
/// password (`async-nats` ignores credentials in the URL).
fn split_credentials(url: &str) -> Result<(String, Option<String>, Option<String>), BusError> {
    let bad = |message: &str| BusError::Url {
        url: redact(url),
        message: message.to_owned(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected nats://host:port or tls://host:port"))?;
    if scheme != "nats" && scheme != "tls" {
        return Err(bad("expected nats:// or tls://"));
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    if !tail.is_empty() && tail != "/" {
        return Err(bad("a NATS URL has no path or query"));
    }
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo), host),
        None => (None, authority),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| bad("credentials are not UTF-8"))
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(userinfo) => match userinfo.split_once(':') {
            Some((user, password)) => (Some(decode(user)?), Some(decode(password)?)),
            None => (Some(decode(userinfo)?), None),
        },
    };
    Ok((format!("{scheme}://{host}"), user, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_out_of_the_url() {
        let (server, user, password) =
            split_credentials("nats://ferry:p%40ss@127.0.0.1:4222").expect("parse");
        assert_eq!(server, "nats://127.0.0.1:4222");
        assert_eq!(user.as_deref(), Some("ferry"));
        assert_eq!(password.as_deref(), Some("p@ss"));
        let (server, token, none) =
            split_credentials("tls://s3cret@nats.example:4443/").expect("parse");
        assert_eq!(server, "tls://nats.example:4443");
        assert_eq!(token.as_deref(), Some("s3cret"));
        assert_eq!(none, None);
        assert!(split_credentials("nats://host/path").is_err());
        assert!(split_credentials("nats://").is_err());
        let err = split_credentials("amqp://u:secret@host").expect_err("refused");
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn bounces_travel_in_the_reply_subject() {
        let hex = to_hex(&[0, 1, 0xab, 0xff]);
        assert_eq!(hex, "0001abff");
        assert_eq!(from_hex(&hex).as_deref(), Some(&[0, 1, 0xab, 0xff][..]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        let (subject, payload) =
            parse_bounce("_INBOX.x1", "_INBOX.x1.ferry.inbox.n1.0102").expect("parsed");
        assert_eq!(subject, "ferry.inbox.n1");
        assert_eq!(payload.as_ref(), &[1, 2]);
        assert_eq!(parse_bounce("_INBOX.x1", "_INBOX.x2.a.00"), None);
        assert_eq!(parse_bounce("_INBOX.x1", "_INBOX.x1.a..00"), None);
        assert_eq!(parse_bounce("_INBOX.x1", "_INBOX.x1.a.0g"), None);
        assert_eq!(
            parse_bounce("_INBOX.x1", "_INBOX.x1.a."),
            Some(("a".to_owned(), Bytes::new()))
        );
    }

    #[test]
    fn reconnect_delays_double_to_two_seconds() {
        let delays: Vec<u64> = (0..9)
            .map(|n| reconnect_delay(n).as_millis() as u64)
            .collect();
        assert_eq!(delays, [0, 0, 100, 200, 400, 800, 1600, 2000, 2000]);
    }

    mod conformance {
        use crate::{Bus, BusOptions, NatsBus};
        use std::sync::Arc;

        async fn open() -> Option<impl crate::conformance::Open> {
            let url = crate::conformance::nats_url().await?;
            Some(move || {
                let url = url.clone();
                async move {
                    let bus = NatsBus::connect(&url, &BusOptions::default())
                        .await
                        .expect("connect");
                    Arc::new(bus) as Arc<dyn Bus>
                }
            })
        }

        crate::conformance::conformance_tests!(open().await);
    }

    /// A `nats-server` of this test's own, on a port of its own, killed when dropped.
    struct OwnServer {
        child: tokio::process::Child,
        port: u16,
    }

    const NATS_SERVER: &str = "/usr/sbin/nats-server";

    fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    }

    impl OwnServer {
        /// Start it and wait until it accepts connections; `None` (skipped, or a panic in CI) without the binary.
        async fn start(port: u16, args: &[&str]) -> Option<Self> {
            if !std::path::Path::new(NATS_SERVER).exists() {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "{NATS_SERVER} required in CI"
                );
                eprintln!("skipped: {NATS_SERVER} not installed");
                return None;
            }
            let child = tokio::process::Command::new(NATS_SERVER)
                .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("start nats-server");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "nats-server did not listen on {port}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Some(Self { child, port })
        }

        fn url(&self) -> String {
            format!("nats://127.0.0.1:{}", self.port)
        }

        async fn kill(mut self) {
            self.child.kill().await.expect("kill nats-server");
        }
    }

    /// Poll `condition` every 20 ms until it holds, failing after `within`.
    async fn eventually(what: &str, within: Duration, condition: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !condition() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resubscribes_after_a_server_restart() {
        let Some(server) = OwnServer::start(free_port(), &[]).await else {
            return;
        };
        let (url, port) = (server.url(), server.port);
        let options = BusOptions {
            connection_name: "ferry-bus-restart-test".into(),
            ..BusOptions::default()
        };
        let bus = NatsBus::connect(&url, &options).await.expect("connect");
        let subject = format!("{}.restart", crate::conformance::unique_prefix());
        let mut plain = bus.subscribe(&subject).await.expect("subscribe");
        let mut member = bus.queue_subscribe(&subject, "g").await.expect("member");
        bus.publish(&subject, Bytes::from_static(b"before"))
            .await
            .expect("publish");
        assert_eq!(
            crate::conformance::receive(&mut plain, "plain").await,
            "before"
        );
        assert_eq!(
            crate::conformance::receive(&mut member, "member").await,
            "before"
        );

        server.kill().await;
        eventually(
            "the bus sees the server gone",
            Duration::from_secs(10),
            || !bus.is_connected(),
        )
        .await;
        let quick = Duration::from_secs(1);
        let published =
            tokio::time::timeout(quick, bus.publish(&subject, Bytes::from_static(b"lost")))
                .await
                .expect("publish answers at once while the server is away");
        assert!(
            matches!(published, Err(BusError::Unavailable(_))),
            "{published:?}"
        );
        let subscribed = tokio::time::timeout(quick, bus.subscribe(&subject))
            .await
            .expect("subscribe answers at once while the server is away");
        assert!(matches!(subscribed, Err(BusError::Unavailable(_))));
        assert!(matches!(bus.flush().await, Err(BusError::Unavailable(_))));

        let _server = OwnServer::start(port, &[]).await.expect("restart");
        eventually("the bus reconnects", Duration::from_secs(10), || {
            bus.is_connected()
        })
        .await;
        // Another connection publishes until the old subscriptions, untouched since, receive.
        let publisher = NatsBus::connect(&url, &BusOptions::default())
            .await
            .expect("publisher");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            publisher
                .publish(&subject, Bytes::from_static(b"after"))
                .await
                .expect("publish after the restart");
            if let Ok(Some(message)) =
                tokio::time::timeout(Duration::from_millis(100), plain.next()).await
            {
                assert_eq!(message, "after");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no message after the restart"
            );
        }
        assert_eq!(
            crate::conformance::receive(&mut member, "member after the restart").await,
            "after"
        );
    }

    #[tokio::test]
    async fn a_missing_server_fails_fast_with_the_url_redacted() {
        let url = format!("nats://ferry:hunter2@127.0.0.1:{}", free_port());
        let started = std::time::Instant::now();
        let err = NatsBus::connect(&url, &BusOptions::default())
            .await
            .err()
            .expect("nothing listens there");
        assert!(started.elapsed() < CONNECT_TIMEOUT * 2 + Duration::from_secs(1));
        let text = err.to_string();
        assert!(matches!(err, BusError::Connect { .. }), "{text}");
        assert!(text.contains("ferry:***@127.0.0.1"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    /// Credentials in the URL reach the server (async-nats itself ignores them).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn url_credentials_authenticate() {
        let Some(server) =
            OwnServer::start(free_port(), &["--user", "ferry", "--pass", "p@ss"]).await
        else {
            return;
        };
        let good = format!("nats://ferry:p%40ss@127.0.0.1:{}", server.port);
        let bus = NatsBus::connect(&good, &BusOptions::default())
            .await
            .expect("the right password");
        let subject = format!("{}.auth", crate::conformance::unique_prefix());
        let mut subscription = bus.subscribe(&subject).await.expect("subscribe");
        bus.publish(&subject, Bytes::from_static(b"hi"))
            .await
            .expect("publish");
        assert_eq!(
            crate::conformance::receive(&mut subscription, "auth").await,
            "hi"
        );
        let bad = format!("nats://ferry:wrong@127.0.0.1:{}", server.port);
        let err = NatsBus::connect(&bad, &BusOptions::default())
            .await
            .err()
            .expect("a wrong password is refused");
        assert!(matches!(err, BusError::Connect { .. }), "{err}");
        assert!(server.url().starts_with("nats://"));
    }

    /// `tls://` speaks TLS, trusting the CA of `ca_file`; without it the self-signed server is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_with_a_ca_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("self-signed certificate");
        let cert = dir.path().join("server.pem");
        let key = dir.path().join("server.key");
        std::fs::write(&cert, certified.cert.pem()).expect("write cert");
        std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
        let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
        let Some(server) = OwnServer::start(
            free_port(),
            &["--tls", "--tlscert", &cert_arg, "--tlskey", &key_arg],
        )
        .await
        else {
            return;
        };
        let url = format!("tls://127.0.0.1:{}", server.port);
        let options = BusOptions {
            ca_file: Some(cert.clone()),
            ..BusOptions::default()
        };
        let bus = NatsBus::connect(&url, &options)
            .await
            .expect("connect over TLS");
        let subject = format!("{}.tls", crate::conformance::unique_prefix());
        let mut subscription = bus.subscribe(&subject).await.expect("subscribe");
        bus.publish(&subject, Bytes::from_static(b"secret"))
            .await
            .expect("publish");
        assert_eq!(
            crate::conformance::receive(&mut subscription, "tls").await,
            "secret"
        );
        let untrusted = NatsBus::connect(&url, &BusOptions::default()).await;
        assert!(
            matches!(untrusted, Err(BusError::Connect { .. })),
            "an unknown CA is refused"
        );
    }
}
