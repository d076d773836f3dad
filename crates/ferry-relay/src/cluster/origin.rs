//! The origin side of a cross-node request: this node has the client, another node has a connector.
//!
//! A request without a streamed body goes straight to the inbox of one node that presence shows with a
//! connector serving its target (round robin over those connectors), on a bus that reports messages nobody
//! took: that node runs it at once and answers with the response head, two bus messages for a small request. A
//! message to a node that is gone comes back as a bounce (nothing ran), and a node that no longer has a
//! connector for the target declines; either way the request is then published to the tenant's dispatch queue.
//! Requests with a streamed body or an upgrade, and every request on a bus that cannot report bounces
//! (RabbitMQ), go to the dispatch queue from the start: the first node to claim the request gets the grant (any
//! later claim a denial), and its response comes back to this node's inbox. A request nobody claims within the claim
//! timeout is published again while presence still shows a connector for it elsewhere; otherwise it goes back to
//! the caller (`crate::dispatch`), which waits for a connector or answers `no_connector`. A body bigger than
//! [`INLINE_MAX`](super::INLINE_MAX) (or of unknown size) streams to the executor after the grant; dropping the
//! request at any point after the grant (the client went away, the expiration passed) cuts the work at the other
//! node and at the target.

use super::flow::{self, Peer, RemoteBody};
use super::streams::{Inbound, StreamHandle};
use super::{unix_ms, Cluster, INLINE_MAX};
use crate::cluster::presence::Lookup;
use crate::dispatch::RelayError;
use bytes::Bytes;
use ferry_http::{Body, BoxError};
use ferry_proto::cluster::{self, AbortReason, BodyKind, Message, RequestMsg, ResponseHead};
use ferry_proto::{TargetName, TenantName};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What [`Cluster::send`] came back with.
pub(crate) enum Sent {
    /// Another node ran the request: its response (the body streams from there).
    Answered(RemoteAnswer),
    /// Nobody claimed the request and presence shows no connector for it elsewhere any more: the request, unsent.
    NotTaken(Request<Body>),
}

/// A response from another node.
pub(crate) struct RemoteAnswer {
    pub response: Response<Body>,
    /// For an upgrade the target agreed to: the two-way byte stream to bridge the client with.
    pub upgrade: Option<RemoteUpgrade>,
}

/// An upgraded (WebSocket) stream to a target on another node.
pub(crate) struct RemoteUpgrade {
    pub handle: StreamHandle,
    pub peer: Peer,
}

/// Cuts the work at the executor when the request is dropped after its grant, unless disarmed.
struct GrantGuard {
    peer: Option<Peer>,
}

impl Drop for GrantGuard {
    fn drop(&mut self) {
        if let Some(peer) = self.peer.take() {
            peer.abort_later(AbortReason::Cancelled);
        }
    }
}

/// Tells the executor to stop a request sent to its inbox when the request is dropped before its answer (the
/// client went away), unless disarmed.
struct CancelGuard {
    peer: Option<(Peer, String)>,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some((peer, origin)) = self.peer.take() {
            peer.send_later(Message::Cancel {
                origin,
                origin_stream: peer.stream,
            });
        }
    }
}

/// How the request's body travels, kept so the request can be published again.
enum Outgoing {
    Empty,
    Inline(Bytes),
    Stream(Body),
}

impl Cluster {
    /// Run `req` on a node holding a connector of `tenant` serving `target`. `deadline` is the request's
    /// expiration (past it, nothing is granted or run).
    pub(crate) async fn send(
        self: &Arc<Self>,
        tenant: &TenantName,
        target: &TargetName,
        req: Request<Body>,
        upgrade: Option<String>,
        request_id: &str,
        deadline: Instant,
    ) -> Result<Sent, RelayError> {
        let (head, body) = req.into_parts();
        let mut outgoing = if upgrade.is_some() || body.is_end_stream() {
            Outgoing::Empty
        } else if body.size_hint().exact().is_some_and(|n| n <= INLINE_MAX) {
            match tokio::time::timeout_at(deadline, body.collect()).await {
                Ok(Ok(collected)) => Outgoing::Inline(collected.to_bytes()),
                Ok(Err(error)) => return Err(RelayError::ClientBody(error.to_string())),
                Err(_) => return Err(RelayError::Expired(Duration::ZERO)),
            }
        } else {
            Outgoing::Stream(body)
        };
        let mut handle = self.streams.open(None);
        let subject = self.subjects.dispatch(tenant.as_str());
        let headers = flow::to_wire(&head.headers);
        let authority = head
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let path_and_query = head
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        let remaining = deadline.saturating_duration_since(Instant::now());
        let deadline_ms =
            unix_ms().saturating_add(u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX));
        let mut attempt = 0u32;
        let mut decline_pause = Duration::from_millis(5);
        'publish: loop {
            attempt += 1;
            let message = Message::Request(Box::new(RequestMsg {
                origin: self.me.node_id.clone(),
                origin_stream: handle.id,
                attempt,
                deadline_ms,
                request_id: request_id.to_owned(),
                tenant: tenant.to_string(),
                target: target.to_string(),
                method: head.method.as_str().to_owned(),
                path_and_query: path_and_query.clone(),
                authority: authority.clone(),
                headers: headers.clone(),
                body: match &outgoing {
                    Outgoing::Empty => BodyKind::Empty,
                    Outgoing::Inline(b) => BodyKind::Inline(b.clone()),
                    Outgoing::Stream(_) => BodyKind::Stream,
                },
                upgrade: upgrade.clone(),
            }));
            if attempt > 1 {
                tracing::debug!(request_id, tenant = %tenant, attempt, "publishing the request again");
            }
            // straight to one node on the first attempt, when the bus reports a message nobody took
            let direct = (attempt == 1
                && upgrade.is_none()
                && !matches!(outgoing, Outgoing::Stream(_))
                && self.bus.reports_unrouted())
            .then(|| {
                let turn = self.next_pick.fetch_add(1, Ordering::Relaxed);
                self.presence.pick(tenant.as_str(), target.as_str(), turn)
            })
            .flatten();
            if let Some(node) = direct {
                self.streams.set_peer(handle.id, &node);
                let inbox = self.subjects.inbox(&node);
                let bounce = cluster::encode(&Message::Decline { stream: handle.id });
                self.bus
                    .publish_or_bounce(
                        &inbox,
                        cluster::encode(&message),
                        &self.subjects.inbox(&self.me.node_id),
                        bounce,
                    )
                    .await
                    .map_err(|e| RelayError::ClusterUnavailable(e.to_string()))?;
                let mut guard = CancelGuard {
                    peer: Some((
                        Peer {
                            bus: self.bus.clone(),
                            inbox,
                            stream: handle.id,
                        },
                        self.me.node_id.clone(),
                    )),
                };
                loop {
                    let Some(inbound) = handle.rx.recv().await else {
                        return Err(RelayError::ConnectorLost("the stream closed".into()));
                    };
                    match inbound {
                        Inbound::Answer {
                            executor,
                            executor_stream,
                            head,
                        } => {
                            guard.peer = None;
                            self.streams.set_peer(handle.id, &executor);
                            let peer = Peer {
                                bus: self.bus.clone(),
                                inbox: self.subjects.inbox(&executor),
                                stream: executor_stream,
                            };
                            return answered(*head, handle, peer, None, false);
                        }
                        Inbound::Decline | Inbound::Abort(AbortReason::NotAccepted) => {
                            // gone (a bounce) or without a connector for the target: nothing ran there
                            guard.peer = None;
                            self.streams.clear_peer(handle.id);
                            tokio::time::sleep(decline_pause).await;
                            decline_pause = (decline_pause * 2).min(Duration::from_millis(200));
                            if self.presence.lookup(tenant.as_str(), target.as_str())
                                != Lookup::Serves
                            {
                                return Ok(Sent::NotTaken(rebuild(head, outgoing)));
                            }
                            continue 'publish;
                        }
                        Inbound::Abort(reason) => {
                            guard.peer = None;
                            return Err(cut_before_head(Some(reason)));
                        }
                        Inbound::PeerGone => {
                            guard.peer = None;
                            return Err(cut_before_head(None));
                        }
                        _ => continue,
                    }
                }
            }
            self.bus
                .publish(&subject, cluster::encode(&message))
                .await
                .map_err(|e| RelayError::ClusterUnavailable(e.to_string()))?;

            // wait for a claim
            let claim_until = (Instant::now() + self.settings.claim_timeout).min(deadline);
            let (executor, executor_stream) = loop {
                let inbound = tokio::select! {
                    m = handle.rx.recv() => m,
                    () = tokio::time::sleep_until(claim_until) => None,
                };
                match inbound {
                    Some(Inbound::Claim {
                        executor,
                        executor_stream,
                    }) => break (executor, executor_stream),
                    Some(Inbound::Decline) => {
                        // that node lost its connectors for the target: publish again, after a short pause
                        tokio::time::sleep(decline_pause).await;
                        decline_pause = (decline_pause * 2).min(Duration::from_millis(200));
                        if self.presence.lookup(tenant.as_str(), target.as_str()) != Lookup::Serves
                        {
                            return Ok(Sent::NotTaken(rebuild(head, outgoing)));
                        }
                        continue 'publish;
                    }
                    Some(_) => continue,
                    None => {
                        if Instant::now() >= deadline {
                            return Err(RelayError::Expired(Duration::ZERO));
                        }
                        if self.presence.lookup(tenant.as_str(), target.as_str()) == Lookup::Serves
                            && self.bus.is_connected()
                        {
                            continue 'publish;
                        }
                        return Ok(Sent::NotTaken(rebuild(head, outgoing)));
                    }
                }
            };
            if Instant::now() >= deadline {
                self.send_to(
                    &executor,
                    &Message::Deny {
                        stream: executor_stream,
                    },
                )
                .await;
                return Err(RelayError::Expired(Duration::ZERO));
            }
            let peer = Peer {
                bus: self.bus.clone(),
                inbox: self.subjects.inbox(&executor),
                stream: executor_stream,
            };
            self.streams.set_peer(handle.id, &executor);
            peer.send(&Message::Grant {
                stream: executor_stream,
            })
            .await
            .map_err(|e| RelayError::ClusterUnavailable(e.to_string()))?;
            let mut guard = GrantGuard {
                peer: Some(peer.clone()),
            };
            let streamed = matches!(outgoing, Outgoing::Stream(_));
            let pump = match std::mem::replace(&mut outgoing, Outgoing::Empty) {
                Outgoing::Stream(body) => {
                    let peer = peer.clone();
                    let mut credit = handle.credit.clone();
                    let streams = self.streams.clone();
                    let own = handle.id;
                    Some(tokio::spawn(async move {
                        match flow::send_body(&peer, body, &mut credit, AbortReason::ClientBody)
                            .await
                        {
                            Ok(_) | Err(flow::SendBodyError::Cut(_)) => {}
                            Err(error) => {
                                tracing::debug!(%error, "request body to another node ended early");
                                streams.deliver(own, Inbound::Abort(AbortReason::ClientBody));
                            }
                        }
                    }))
                }
                other => {
                    outgoing = other;
                    None
                }
            };
            // wait for the response head
            loop {
                let Some(inbound) = handle.rx.recv().await else {
                    return Err(RelayError::ConnectorLost("the stream closed".into()));
                };
                match inbound {
                    Inbound::Head(h) => {
                        guard.peer = None;
                        return answered(*h, handle, peer, pump, upgrade.is_some());
                    }
                    Inbound::Claim {
                        executor,
                        executor_stream,
                    } => {
                        self.send_to(
                            &executor,
                            &Message::Deny {
                                stream: executor_stream,
                            },
                        )
                        .await;
                    }
                    Inbound::Abort(AbortReason::NotAccepted) if !streamed => {
                        // the node had no connector left for it and ran nothing: publish again
                        guard.peer = None;
                        continue 'publish;
                    }
                    Inbound::Abort(AbortReason::ClientBody) => {
                        return Err(RelayError::ClientBody("the request body broke off".into()))
                    }
                    Inbound::Abort(reason) => {
                        guard.peer = None;
                        return Err(cut_before_head(Some(reason)));
                    }
                    Inbound::PeerGone => {
                        guard.peer = None;
                        return Err(cut_before_head(None));
                    }
                    _ => continue,
                }
            }
        }
    }
}

/// The error for a request cut before its response head: by an abort from the node running it (`Some`), or by
/// that node's death (`None`).
fn cut_before_head(reason: Option<AbortReason>) -> RelayError {
    match reason {
        Some(AbortReason::Expired) => RelayError::Expired(Duration::ZERO),
        Some(reason) => {
            RelayError::ConnectorLost(format!("the node running the request cut it ({reason:?})"))
        }
        None => RelayError::ConnectorLost("the node running the request went away".into()),
    }
}

/// The response from the node that ran the request: its head, and its body streaming from there (or, for an
/// upgrade the target agreed to, the stream to bridge). `pump` is the task sending the request body, if any.
fn answered(
    h: ResponseHead,
    handle: StreamHandle,
    peer: Peer,
    pump: Option<tokio::task::JoinHandle<()>>,
    upgrade: bool,
) -> Result<Sent, RelayError> {
    let status = StatusCode::from_u16(h.status)
        .map_err(|_| RelayError::ConnectorLost("bad status".into()))?;
    let mut response = Response::new(ferry_http::empty());
    *response.status_mut() = status;
    *response.headers_mut() = flow::from_wire(h.headers);
    if upgrade && status == StatusCode::OK {
        if let Some(pump) = pump {
            pump.abort();
        }
        return Ok(Sent::Answered(RemoteAnswer {
            response,
            upgrade: Some(RemoteUpgrade { handle, peer }),
        }));
    }
    *response.body_mut() = match h.body {
        BodyKind::Empty => ferry_http::empty(),
        BodyKind::Inline(b) => ferry_http::full(b),
        BodyKind::Stream => {
            let StreamHandle { rx, reg, .. } = handle;
            // the request body (if any) keeps going beside the response body
            let pump = pump.map(|p| Box::new(AbortOnDrop(p)) as Box<dyn Send + Sync>);
            RemoteBody::new(rx, reg, peer, pump)
                .map_err(BoxError::from)
                .boxed_unsync()
        }
    };
    Ok(Sent::Answered(RemoteAnswer {
        response,
        upgrade: None,
    }))
}

/// Stops a spawned task when dropped (a request body pump outliving its response).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The request again, for another way (a local tunnel that attached meanwhile, or a later attempt).
fn rebuild(head: http::request::Parts, outgoing: Outgoing) -> Request<Body> {
    let body = match outgoing {
        Outgoing::Empty => ferry_http::empty(),
        Outgoing::Inline(b) => ferry_http::full(b),
        Outgoing::Stream(b) => b,
    };
    Request::from_parts(head, body)
}

/// Pump an upgraded cross-node stream to and from `io` (the far end of the client's pipe) until both ways end.
pub(crate) async fn pump_upgrade(up: RemoteUpgrade, io: tokio::io::DuplexStream) {
    let RemoteUpgrade { handle, peer } = up;
    let StreamHandle {
        rx,
        mut credit,
        reg,
        ..
    } = handle;
    let (read, write) = tokio::io::split(io);
    let inbound = RemoteBody::new(rx, reg, peer.clone(), None);
    let (up, down) = tokio::join!(
        flow::send_body(
            &peer,
            flow::reader_body(read),
            &mut credit,
            AbortReason::ClientBody
        ),
        flow::write_body(inbound, write),
    );
    tracing::debug!(up = ?up.ok(), down = ?down.ok(), "cross-node upgraded stream closed");
}
