//! The executing side of a cross-node request: a request from a tenant's dispatch queue, or sent to this node's
//! inbox, runs on one of this node's tunnels of that tenant.
//!
//! A queued request is claimed only when one of this node's tunnels serves the target, and runs only after the
//! origin granted the claim; a request sent to the inbox runs at once, or is declined when no tunnel here serves
//! its target. Either answers `NotAccepted` when its tunnels closed before the hand-off (the origin may then
//! publish the request again: nothing ran). The response head goes back to the origin's inbox,
//! its body as chunks within the origin's credit; an abort from the origin (its client went away) or the
//! origin's death drops the tunnel stream, which resets it at the connector and the target.

use super::flow::{self, Peer, RemoteBody};
use super::streams::{Inbound, StreamHandle};
use super::{unix_ms, Cluster, INLINE_MAX};
use crate::local::{self, LocalOutcome};
use ferry_http::{Body, BoxError};
use ferry_proto::cluster::{AbortReason, BodyKind, Message, RequestMsg, ResponseHead};
use ferry_proto::{tunnel, TargetName, TenantName};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tracing::Instrument;

/// A request another node sent to this node's inbox: its stream here, opened and registered under the origin's
/// stream before the inbox reads its next message (so that a cancel right behind it finds it).
pub(crate) struct Direct {
    handle: StreamHandle,
    _entry: DirectEntry,
}

/// Keeps a direct request in [`Cluster::direct`](super::Cluster) while it runs.
struct DirectEntry {
    key: (String, u64),
    table: Arc<Mutex<HashMap<(String, u64), u64>>>,
}

impl Drop for DirectEntry {
    fn drop(&mut self) {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

impl Direct {
    pub(crate) fn register(cluster: &Cluster, msg: &RequestMsg) -> Self {
        let handle = cluster.streams.open(Some(msg.origin.clone()));
        let key = (msg.origin.clone(), msg.origin_stream);
        cluster
            .direct
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone(), handle.id);
        Self {
            handle,
            _entry: DirectEntry {
                key,
                table: cluster.direct.clone(),
            },
        }
    }
}

/// Run one request: taken from a dispatch queue (`direct` is `None`: claim it, run it once granted), or sent to
/// this node's inbox (run it at once; every way out tells the origin, which has no claim timeout to fall back on).
pub(crate) async fn execute(cluster: Arc<Cluster>, msg: RequestMsg, direct: Option<Direct>) {
    if ferry_telemetry::trace::enabled() {
        // the cluster hop's span: a child of the origin node's request span, the parent of the connector's
        let span = ferry_telemetry::request_span!(
            "cluster.execute",
            otel.kind = "server",
            request_id = %msg.request_id,
            tenant = %msg.tenant,
            target = %msg.target,
            node_id = %msg.origin,
        );
        ferry_telemetry::trace::continue_from(&span, &flow::from_wire(msg.headers.clone()));
        return execute_in(cluster, msg, direct).instrument(span).await;
    }
    execute_in(cluster, msg, direct).await
}

async fn execute_in(cluster: Arc<Cluster>, msg: RequestMsg, direct: Option<Direct>) {
    let origin = Peer {
        bus: cluster.bus.clone(),
        inbox: cluster.subjects.inbox(&msg.origin),
        stream: msg.origin_stream,
    };
    let decline = || Message::Decline {
        stream: msg.origin_stream,
    };
    let Some(hub) = cluster.hub.clone() else {
        if direct.is_some() {
            origin.send_later(decline());
        }
        return;
    };
    let now = unix_ms();
    if now >= msg.deadline_ms {
        tracing::debug!(
            request_id = msg.request_id,
            "request past its expiration: not run"
        );
        if direct.is_some() {
            origin.abort_later(AbortReason::Expired);
        }
        return;
    }
    let (Ok(tenant), Ok(target)) = (
        TenantName::new(msg.tenant.clone()),
        TargetName::new(msg.target.clone()),
    ) else {
        origin.abort_later(AbortReason::Protocol);
        return;
    };
    let Some(entry) = hub.registry.get(&tenant).filter(|e| e.serves(&target)) else {
        let _ = origin.send(&decline()).await;
        return;
    };
    let is_direct = direct.is_some();
    let (handle, _direct_entry) = match direct {
        Some(Direct { handle, _entry }) => (handle, Some(_entry)),
        None => (cluster.streams.open(Some(msg.origin.clone())), None),
    };
    let StreamHandle {
        id: own_stream,
        rx,
        credit,
        reg,
    } = handle;
    let mut rx = Some(rx);
    if !is_direct {
        if origin
            .send(&Message::Claim {
                origin_stream: msg.origin_stream,
                executor: cluster.me.node_id.clone(),
                executor_stream: own_stream,
            })
            .await
            .is_err()
        {
            return;
        }
        let left = Duration::from_millis(msg.deadline_ms.saturating_sub(now));
        let grant_wait = left.min(cluster.settings.claim_timeout * 2);
        let granted = match rx.as_mut() {
            Some(rx) => tokio::time::timeout(grant_wait, rx.recv()).await,
            None => return,
        };
        match granted {
            Ok(Some(Inbound::Grant)) => {}
            // denied (another node has it, or it expired), or the grant never came: nothing runs
            _ => return,
        }
    }
    // the head goes back as a plain head after a grant, as an answer naming this node's stream when direct
    let head_message = |head: ResponseHead| {
        if is_direct {
            Message::Answer {
                stream: msg.origin_stream,
                executor: cluster.me.node_id.clone(),
                executor_stream: own_stream,
                head: Box::new(head),
            }
        } else {
            Message::Head {
                stream: msg.origin_stream,
                head: Box::new(head),
            }
        }
    };
    let request_id = msg.request_id.clone();
    let upgrade = msg.upgrade.clone();
    let body = match (msg.body.clone(), rx.take()) {
        // the origin's chunks arrive on this stream's channel; the response side keeps the credit
        (BodyKind::Stream, Some(rx)) => RemoteBody::new(rx, reg.clone(), origin.clone(), None)
            .with_declared_length(declared_length(&msg.headers))
            .map_err(BoxError::from)
            .boxed_unsync(),
        (BodyKind::Inline(b), r) => {
            rx = r;
            ferry_http::full(b)
        }
        (_, r) => {
            rx = r;
            ferry_http::empty()
        }
    };
    let req = match build_request(&msg, body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(request_id, "request from another node is malformed: {e}");
            origin.abort_later(AbortReason::Protocol);
            return;
        }
    };
    let mut credit = credit;
    let outcome = tokio::select! {
        o = local::try_send(&entry, &target, req) => o,
        reason = flow::wait_cut(&mut credit) => {
            tracing::debug!(request_id, ?reason, "cross-node request cut before its response");
            return;
        }
    };
    let (resp, slot) = match outcome {
        LocalOutcome::Sent(resp, slot) => (resp, slot),
        LocalOutcome::NoTunnel(_) | LocalOutcome::NoSuchTarget(_) => {
            let _ = origin
                .send(&Message::Abort {
                    stream: msg.origin_stream,
                    reason: AbortReason::NotAccepted,
                })
                .await;
            return;
        }
        LocalOutcome::Lost(e) => {
            let cut = credit.borrow().cut;
            if let Some(reason) = cut {
                // the origin cut the stream (its client's body broke off, or the client left): the tunnel
                // request failed because of that, not because of the connector
                tracing::debug!(
                    request_id,
                    ?reason,
                    "request from another node cut by its origin: {e}"
                );
                return;
            }
            tracing::warn!(request_id, tenant = %tenant, "connector lost with a request from another node: {e}");
            let _ = origin
                .send(&Message::Abort {
                    stream: msg.origin_stream,
                    reason: AbortReason::ConnectorLost,
                })
                .await;
            return;
        }
    };
    let _slot = slot;
    let status = resp.status();
    let headers = flow::to_wire(resp.headers());
    if upgrade.is_some() && status == StatusCode::OK {
        let head = ResponseHead {
            status: status.as_u16(),
            headers,
            body: BodyKind::Stream,
        };
        if origin.send(&head_message(head)).await.is_err() {
            return;
        }
        let upgraded = match crate::local::upgraded(resp).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(request_id, "upgrade on the tunnel failed: {e}");
                origin.abort_later(AbortReason::ConnectorLost);
                return;
            }
        };
        if let Some(rx) = rx {
            bridge(upgraded, rx, credit, reg, origin, &request_id).await;
        }
        return;
    }
    let body = resp.into_body();
    let mut kind = if body.is_end_stream() {
        BodyKind::Empty
    } else {
        BodyKind::Stream
    };
    let mut body = Some(body);
    if body
        .as_ref()
        .and_then(|b| b.size_hint().exact())
        .is_some_and(|n| n <= INLINE_MAX)
    {
        if let Some(b) = body.take() {
            let collected = tokio::select! {
                c = b.collect() => c,
                reason = flow::wait_cut(&mut credit) => {
                    tracing::debug!(request_id, ?reason, "cross-node request cut while its response was read");
                    return;
                }
            };
            match collected {
                Ok(c) => kind = BodyKind::Inline(c.to_bytes()),
                Err(e) => {
                    tracing::warn!(request_id, "connector lost while reading a response: {e}");
                    origin.abort_later(AbortReason::ConnectorLost);
                    return;
                }
            }
        }
    }
    let streamed = matches!(kind, BodyKind::Stream);
    let head = ResponseHead {
        status: status.as_u16(),
        headers,
        body: kind,
    };
    if origin.send(&head_message(head)).await.is_err() {
        return;
    }
    if let (true, Some(body)) = (streamed, body) {
        match flow::send_body(&origin, body, &mut credit, AbortReason::ConnectorLost).await {
            Ok(_) => {}
            Err(flow::SendBodyError::Cut(reason)) => {
                tracing::debug!(request_id, ?reason, "cross-node response cut by the origin")
            }
            Err(error) => tracing::warn!(request_id, %error, "cross-node response broke off"),
        }
    }
}

/// The body length a request head from the bus declares (`Content-Length`), if it declares one: what
/// [`ferry_http::declared_length`] reads from a `HeaderMap`, read here from the head's wire form, before the
/// request (and its `HeaderMap`) is built around the body.
fn declared_length(headers: &[ferry_proto::cluster::Header]) -> Option<u64> {
    headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| std::str::from_utf8(value).ok())
        .and_then(|value| value.trim().parse().ok())
}

/// The tunnel request for a request from the bus.
fn build_request(msg: &RequestMsg, body: Body) -> Result<Request<Body>, String> {
    let authority = if msg.authority.is_empty() {
        "relay.invalid"
    } else {
        &msg.authority
    };
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(msg.path_and_query.as_str())
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = Request::new(body);
    *req.uri_mut() = uri;
    *req.headers_mut() = flow::from_wire(msg.headers.clone());
    if ferry_telemetry::trace::enabled() {
        ferry_telemetry::trace::inject(&tracing::Span::current(), req.headers_mut());
    }
    if let Some(protocol) = &msg.upgrade {
        *req.method_mut() = Method::CONNECT;
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from(protocol.as_str()));
    } else {
        *req.method_mut() = Method::from_bytes(msg.method.as_bytes()).map_err(|e| e.to_string())?;
    }
    if let Ok(v) = HeaderValue::from_str(&msg.target) {
        req.headers_mut().insert(tunnel::TARGET, v);
    }
    Ok(req)
}

/// Bridge an upgraded tunnel stream with the origin: bytes from the target go out as chunks, chunks from the
/// origin are written to the target, each way ending on its own.
async fn bridge<Io>(
    io: Io,
    rx: tokio::sync::mpsc::UnboundedReceiver<Inbound>,
    mut credit: tokio::sync::watch::Receiver<super::streams::CreditState>,
    reg: Arc<super::streams::Registration>,
    origin: Peer,
    request_id: &str,
) where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let inbound = RemoteBody::new(rx, reg, origin.clone(), None);
    let (up, down) = tokio::join!(
        flow::send_body(
            &origin,
            flow::reader_body(read),
            &mut credit,
            AbortReason::ConnectorLost
        ),
        flow::write_body(inbound, write),
    );
    tracing::debug!(request_id, up = ?up.ok(), down = ?down.ok(), "cross-node upgraded stream closed");
}
