//! The node link: requests between two nodes of a cluster over one plain HTTP/2 connection from the node with
//! the client to the node with the connector, instead of as messages through the broker.
//!
//! A request whose tenant's connector is on another node (presence says which) goes whole over the link: its head,
//! its body and the response's body stream with HTTP/2's own flow control, and a client that goes away resets the
//! stream, which cuts the work at the other node and at the target. The broker then carries presence and events
//! only, and every byte of a body crosses one connection instead of two plus the broker (docs/cluster.md, "The
//! node link"; docs/performance.md, "Relay across nodes").
//!
//! The other node serves the link on its public listener (`/_ferry/link`) and runs the request as if it had
//! arrived there: on one of its own tunnels, else through the cluster (by the bus, never by another link, so a
//! request crosses at most one link). Nodes prove to each other that they belong to the cluster with a short-lived
//! token signed by the cluster's signing key with the `node` scope, which nothing but a node can obtain.
//!
//! Delivery: a request the link could not send (no connection to the node, a connection that closed before the
//! request left) comes back unsent and goes by the bus; a request that left on a link that then broke is `502
//! connector_lost` (it may have run). Upgrades (WebSocket) and nodes whose address is not a plain `http://` URL
//! with a host that other nodes can reach keep to the bus.

use super::Cluster;
use crate::dispatch::{Answer, Dispatcher, Outbound, RelayError};
use ferry_auth::BuiltinVerifier;
use ferry_http::RequestBody;
use ferry_http::{error_response, Body, Guarded};
use ferry_proto::headers::X_REQUEST_ID;
use ferry_proto::{tunnel, ErrorCode, ErrorReply, TargetName, TenantName};
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// The path of the node link on every node's public listener.
pub const LINK_PATH: &str = "/_ferry/link";
/// The tenant of a request on the link.
const LINK_TENANT: HeaderName = HeaderName::from_static("ferry-link-tenant");
/// The request's authority toward the target (the `Host` the target sees).
const LINK_AUTHORITY: HeaderName = HeaderName::from_static("ferry-link-authority");
/// The request's path and query toward the target, byte for byte.
const LINK_PATH_HEADER: HeaderName = HeaderName::from_static("ferry-link-path");
/// The request's expiration, unix milliseconds: past it the other node does not run it.
const LINK_DEADLINE: HeaderName = HeaderName::from_static("ferry-link-deadline");
/// Every header the link adds to a request, taken off again before the request runs (or goes by the bus).
const LINK_HEADERS: [HeaderName; 5] = [
    header::AUTHORIZATION,
    LINK_TENANT,
    LINK_AUTHORITY,
    LINK_PATH_HEADER,
    LINK_DEADLINE,
];
/// How long a TCP connect to another node's link may take before the request goes by the bus.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// After a failed connect, requests for that node go by the bus for this long before the link is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Streams one link connection carries before the next request opens another connection. A node's public
/// listener takes 200 concurrent streams per HTTP/2 connection (hyper's default); staying well below it means a
/// request never waits for a stream behind long-lived ones (event streams, slow downloads).
const STREAMS_PER_CONNECTION: usize = 100;
/// Connections per link at most: 6,400 requests in flight from one node to another.
const CONNECTIONS_PER_LINK: usize = 64;

/// What a node needs to use and serve links.
pub struct LinkSettings {
    /// Whether this node sends its requests for other nodes by link (`node.cluster.links`); it serves other
    /// nodes' links either way.
    pub send: bool,
    /// Issues this node's token for the link: the token and how long it is valid.
    pub issue_token: Arc<dyn Fn() -> Result<(String, Duration), String> + Send + Sync>,
    /// Checks the tokens of other nodes (the cluster's own signing keys).
    pub verifier: Arc<BuiltinVerifier>,
    /// How long a request served from a link waits for a connector of its tenant (the relay's `connector_wait`).
    pub connector_wait: Duration,
}

/// The links of one node: its connections to other nodes, and what serving theirs needs.
pub(crate) struct Links {
    settings: LinkSettings,
    peers: Mutex<HashMap<String, Arc<PeerLink>>>,
    /// The bearer header sent on every link request, and when to issue a new one.
    token: Mutex<Option<(HeaderValue, Instant)>>,
    /// Tokens of other nodes checked already: token → (node, expiry in unix seconds). Checking an Ed25519
    /// signature costs about 50 µs, as much as the rest of a small request on the link; each node presents one
    /// token for minutes, so each is checked once.
    accepted: Mutex<HashMap<String, (String, u64)>>,
}

/// Other nodes' tokens kept as checked at most; past it the cache starts over (a cluster has far fewer nodes).
const ACCEPTED_MAX: usize = 256;

/// The connections to one other node.
#[derive(Default)]
struct PeerLink {
    /// The open connections (connecting holds the lock, so one connect at a time per node).
    conns: tokio::sync::Mutex<Vec<LinkConn>>,
    /// Until when a failed connect keeps requests for the node on the bus.
    down_until: Mutex<Option<Instant>>,
}

/// One HTTP/2 connection of a link, with the streams it carries now.
struct LinkConn {
    sender: SendRequest<Body>,
    streams: Arc<AtomicUsize>,
}

/// Counts a stream on its link connection until the response body ends (or the request fails).
struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    fn take(streams: &Arc<AtomicUsize>) -> Self {
        streams.fetch_add(1, Ordering::Relaxed);
        Self(streams.clone())
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the link did with a request.
pub(crate) enum LinkOutcome {
    /// The other node answered (with the target's response or an error of its own, `ferry-error` set).
    Answered(Response<Body>),
    /// Not sent: the request, as it was, for the bus.
    Unsent(Request<Body>),
    /// Sent, then the link broke: it may have run.
    Lost(String),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `host:port` of a node's link, from the address it announces: a plain `http://` URL whose host is not an
/// unspecified address (`0.0.0.0` reaches nothing on another machine).
pub(crate) fn link_authority(address: &str) -> Option<http::uri::Authority> {
    let uri: Uri = address.parse().ok()?;
    if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
        return None;
    }
    let authority = uri.authority()?.clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
    {
        return None;
    }
    if authority.port_u16().is_some() {
        return Some(authority);
    }
    format!("{}:80", authority.host()).parse().ok()
}

impl Links {
    pub(crate) fn new(settings: LinkSettings) -> Self {
        Self {
            settings,
            peers: Mutex::new(HashMap::new()),
            token: Mutex::new(None),
            accepted: Mutex::new(HashMap::new()),
        }
    }

    /// The node that `token` speaks for, checked once and then remembered until it expires.
    async fn caller(&self, token: &str) -> Result<String, String> {
        let now = ferry_store::unix_now();
        let now = u64::try_from(now).unwrap_or(0);
        if let Some((node, exp)) = lock(&self.accepted).get(token) {
            if now < *exp {
                return Ok(node.clone());
            }
        }
        let (node, exp) = self
            .settings
            .verifier
            .verify_node(token)
            .await
            .map_err(|e| e.to_string())?;
        let mut accepted = lock(&self.accepted);
        accepted.retain(|_, (_, exp)| now < *exp);
        if accepted.len() >= ACCEPTED_MAX {
            accepted.clear();
        }
        accepted.insert(token.to_owned(), (node.clone(), exp));
        Ok(node)
    }

    /// This node's bearer header, issued again at half its lifetime.
    fn bearer(&self) -> Result<HeaderValue, String> {
        let mut token = lock(&self.token);
        if let Some((value, renew_at)) = token.as_ref() {
            if Instant::now() < *renew_at {
                return Ok(value.clone());
            }
        }
        let (access, valid_for) = (self.settings.issue_token)()?;
        let mut value =
            HeaderValue::from_str(&format!("Bearer {access}")).map_err(|e| e.to_string())?;
        value.set_sensitive(true);
        *token = Some((value.clone(), Instant::now() + valid_for / 2));
        Ok(value)
    }

    /// A connection to `node` at `authority` with room for one more stream, connecting when there is none; `None`
    /// when the node cannot be reached now.
    async fn sender(
        &self,
        node: &str,
        authority: &http::uri::Authority,
    ) -> Option<(SendRequest<Body>, StreamSlot)> {
        let peer = lock(&self.peers)
            .entry(node.to_owned())
            .or_default()
            .clone();
        if lock(&peer.down_until).is_some_and(|until| Instant::now() < until) {
            return None;
        }
        let mut conns = peer.conns.lock().await;
        conns.retain(|c| !c.sender.is_closed());
        if let Some(conn) = conns
            .iter()
            .find(|c| c.streams.load(Ordering::Relaxed) < STREAMS_PER_CONNECTION)
        {
            return Some((conn.sender.clone(), StreamSlot::take(&conn.streams)));
        }
        if conns.len() >= CONNECTIONS_PER_LINK {
            // every connection is full: the least busy one (hyper queues the stream until one ends)
            let conn = conns
                .iter()
                .min_by_key(|c| c.streams.load(Ordering::Relaxed))?;
            return Some((conn.sender.clone(), StreamSlot::take(&conn.streams)));
        }
        match connect(authority).await {
            Ok(sender) => {
                if conns.is_empty() {
                    tracing::info!(node, address = %authority, "node link up");
                } else {
                    tracing::debug!(
                        node,
                        connections = conns.len() + 1,
                        "node link: one more connection"
                    );
                }
                *lock(&peer.down_until) = None;
                let conn = LinkConn {
                    sender: sender.clone(),
                    streams: Arc::new(AtomicUsize::new(0)),
                };
                let slot = StreamSlot::take(&conn.streams);
                conns.push(conn);
                Some((sender, slot))
            }
            Err(error) => {
                tracing::warn!(node, address = %authority, %error, "node link down: requests for the node go by the bus");
                *lock(&peer.down_until) = Some(Instant::now() + RETRY_AFTER);
                None
            }
        }
    }

    /// Forget the links of a node that left the cluster.
    pub(crate) fn forget(&self, node: &str) {
        lock(&self.peers).remove(node);
    }

    /// Send `req` (a tunnel request, as [`crate::client`] builds it) to `node` at `address` over the link.
    pub(crate) async fn send(
        &self,
        node: &str,
        address: &str,
        tenant: &TenantName,
        deadline: Instant,
        req: Request<Body>,
    ) -> LinkOutcome {
        let Some(authority) = link_authority(address) else {
            return LinkOutcome::Unsent(req);
        };
        let bearer = match self.bearer() {
            Ok(b) => b,
            Err(error) => {
                tracing::warn!(%error, "no token for the node link: requests go by the bus");
                return LinkOutcome::Unsent(req);
            }
        };
        let Some((mut sender, slot)) = self.sender(node, &authority).await else {
            return LinkOutcome::Unsent(req);
        };
        if sender.ready().await.is_err() {
            return LinkOutcome::Unsent(req);
        }
        let (mut head, body) = req.into_parts();
        let original = head.uri.clone();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let deadline_ms = super::unix_ms()
            .saturating_add(u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX));
        let added = [
            (header::AUTHORIZATION, Some(bearer)),
            (LINK_TENANT, HeaderValue::from_str(tenant.as_str()).ok()),
            (
                LINK_AUTHORITY,
                original
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
            ),
            (
                LINK_PATH_HEADER,
                original
                    .path_and_query()
                    .and_then(|p| HeaderValue::from_str(p.as_str()).ok()),
            ),
            (LINK_DEADLINE, Some(HeaderValue::from(deadline_ms))),
        ];
        for (name, value) in added {
            if let Some(value) = value {
                head.headers.insert(name, value);
            }
        }
        head.uri = match Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(LINK_PATH)
            .build()
        {
            Ok(uri) => uri,
            Err(_) => {
                return LinkOutcome::Unsent(restore(Request::from_parts(head, body), original))
            }
        };
        match sender
            .try_send_request(Request::from_parts(head, body))
            .await
        {
            Ok(resp) => LinkOutcome::Answered(
                resp.map(|b| Guarded::new(b, slot).map_err(Into::into).boxed_unsync()),
            ),
            Err(mut e) => match e.take_message() {
                Some(unsent) => LinkOutcome::Unsent(restore(unsent, original)),
                None => {
                    LinkOutcome::Lost(format!("the link to node {node} broke: {}", e.into_error()))
                }
            },
        }
    }
}

/// A request handed back unsent, as it was before it was dressed for the link.
fn restore(mut req: Request<Body>, original: Uri) -> Request<Body> {
    *req.uri_mut() = original;
    let headers = req.headers_mut();
    for name in LINK_HEADERS {
        headers.remove(name);
    }
    req
}

/// A plain HTTP/2 connection (prior knowledge) to another node's public listener.
async fn connect(authority: &http::uri::Authority) -> Result<SendRequest<Body>, String> {
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(authority.as_str()),
    )
    .await
    .map_err(|_| format!("connect timed out after {CONNECT_TIMEOUT:?}"))?
    .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    // the same windows and frames as a tunnel's: bulk bodies are not held back by HTTP/2's small defaults, and a
    // client that stopped reading holds its own stream's window, never the connection's
    let windows = ferry_tunnel::TunnelOptions::default();
    builder
        .initial_stream_window_size(windows.stream_window)
        .initial_connection_window_size(windows.connection_window_in_use())
        .max_frame_size(ferry_tunnel::MAX_FRAME_SIZE)
        .keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .timer(hyper_util::rt::TokioTimer::new());
    let (sender, conn) = builder
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%error, "node link closed");
        }
    });
    Ok(sender)
}

impl Cluster {
    /// Serve other nodes' links (`/_ferry/link`), and send requests for other nodes by link when `settings.send`.
    pub fn enable_links(&self, settings: LinkSettings) {
        let _ = self.links.set(Links::new(settings));
    }

    /// Send `req` over the link to one node that presence shows with a connector serving its target (round robin
    /// over those connectors, as on the bus); unsent when links are off or the node cannot be reached.
    pub(crate) async fn send_by_link(&self, out: &Outbound<'_>, req: Request<Body>) -> LinkOutcome {
        let Some(links) = self.links.get().filter(|l| l.settings.send) else {
            return LinkOutcome::Unsent(req);
        };
        let turn = self
            .next_pick
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(node) = self
            .presence
            .pick(out.tenant.as_str(), out.target.as_str(), turn)
        else {
            return LinkOutcome::Unsent(req);
        };
        let Some(address) = self.presence.address(&node) else {
            return LinkOutcome::Unsent(req);
        };
        links
            .send(&node, &address, out.tenant, out.deadline, req)
            .await
    }

    /// Serve another node's request on the link (`/_ferry/link`): check its token, then run the request as if it
    /// had arrived here (a tunnel here, else the bus; never another link).
    pub async fn handle_link(self: &Arc<Self>, req: Request<RequestBody>) -> Response<Body> {
        let request_id = ferry_http::request_id(&req);
        let refuse = |code: ErrorCode, message: String| {
            tracing::info!(request_id, %code, "node link request refused: {message}");
            error_response(&ErrorReply::new(code, message), &request_id)
        };
        let Some(links) = self.links.get() else {
            return refuse(ErrorCode::NotFound, "this node serves no node link".into());
        };
        let token = crate::client::bearer_token(req.headers()).unwrap_or_default();
        let caller = match links.caller(token).await {
            Ok(caller) => caller,
            Err(error) => {
                return refuse(
                    ErrorCode::Unauthorized,
                    format!("the node link needs a node's token: {error}"),
                )
            }
        };
        let (mut head, body) = req.into_parts();
        let text = |headers: &HeaderMap, name: &HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let tenant = text(&head.headers, &LINK_TENANT).and_then(|t| TenantName::new(t).ok());
        let target = text(&head.headers, &tunnel::TARGET).and_then(|t| TargetName::new(t).ok());
        let deadline_ms = text(&head.headers, &LINK_DEADLINE).and_then(|d| d.parse::<u64>().ok());
        let uri = match (
            text(&head.headers, &LINK_AUTHORITY),
            text(&head.headers, &LINK_PATH_HEADER),
        ) {
            (Some(authority), Some(path)) => Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(path)
                .build()
                .ok(),
            _ => None,
        };
        let (Some(tenant), Some(target), Some(deadline_ms), Some(uri)) =
            (tenant, target, deadline_ms, uri)
        else {
            return refuse(
                ErrorCode::BadRequest,
                format!("node {caller} sent a link request without its tenant, target, deadline or path"),
            );
        };
        let left = deadline_ms.saturating_sub(super::unix_ms());
        if left == 0 {
            return refuse(
                ErrorCode::RequestExpired,
                "the request passed its expiration before it arrived".into(),
            );
        }
        let expiration = Duration::from_millis(left);
        let deadline = Instant::now() + expiration;
        for name in LINK_HEADERS {
            head.headers.remove(name);
        }
        head.uri = uri;
        // the cluster hop's span: a child of the origin node's request span, the parent of the connector's
        let span = ferry_telemetry::request_span!(
            "cluster.link",
            otel.kind = "server",
            request_id = %request_id,
            tenant = %tenant,
            target = %target,
            node_id = %caller,
        );
        ferry_telemetry::trace::continue_from(&span, &head.headers);
        ferry_telemetry::trace::inject(&span, &mut head.headers);
        let req = Request::from_parts(head, body.map_err(Into::into).boxed_unsync());
        let request_id = req
            .headers()
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(&request_id)
            .to_owned();
        let dispatcher = Dispatcher::new(
            self.hub.clone(),
            Some(self.clone()),
            links.settings.connector_wait,
        );
        let sent = tokio::time::timeout_at(
            deadline,
            dispatcher.send(
                Outbound {
                    tenant: &tenant,
                    target: &target,
                    request_id: &request_id,
                    upgrade: None,
                    deadline,
                    by_link: false,
                },
                req,
            ),
        )
        .instrument(span)
        .await;
        match sent {
            Ok(Ok(Answer::Local(resp, slot))) => {
                let (head, body) = resp.into_parts();
                Response::from_parts(
                    head,
                    Guarded::new(body, slot).map_err(Into::into).boxed_unsync(),
                )
            }
            Ok(Ok(Answer::Remote(remote))) => remote.response,
            Ok(Err(e)) => {
                tracing::debug!(request_id, tenant = %tenant, caller, "request from the node link failed: {e}");
                error_response(&e.reply(), &request_id)
            }
            Err(_) => error_response(&RelayError::Expired(expiration).reply(), &request_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::link_authority;

    #[test]
    fn only_plain_http_addresses_that_name_a_host_are_links() {
        let of = |a: &str| link_authority(a).map(|a| a.to_string());
        assert_eq!(
            of("http://127.0.0.1:8080").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(
            of("http://relay-1.internal:80/").as_deref(),
            Some("relay-1.internal:80")
        );
        assert_eq!(of("http://[::1]:9000").as_deref(), Some("[::1]:9000"));
        assert_eq!(of("http://0.0.0.0:8080"), None, "unspecified");
        assert_eq!(of("http://[::]:8080"), None, "unspecified v6");
        assert_eq!(
            of("https://relay-1.example.com:443"),
            None,
            "TLS links are not built"
        );
        assert_eq!(
            of("http://relay-1.internal").as_deref(),
            Some("relay-1.internal:80")
        );
        assert_eq!(of("not a url"), None);
    }
}
