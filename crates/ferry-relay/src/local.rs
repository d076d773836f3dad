//! Sending one request through one of this node's tunnels of a tenant, with fail-over between them.
//!
//! A request is handed to a tunnel in a way that gives it back when the tunnel turns out to be closing or closed
//! before the request left this node (HTTP/2's `try_send_request` on protocol 1, a stream that could not be
//! opened or was refused on protocol 2); it then goes to the next tunnel, so it is never lost. Once a request has
//! been sent, a broken tunnel is `502 connector_lost`: the request may have reached the target, and only the
//! client may decide to repeat it. Waiting for a tunnel to attach is the caller's ([`crate::dispatch`]); this
//! module never waits for one.

use crate::registry::{Pick, TenantTunnels, TunnelSlot};
use ferry_http::{Body, BoxError};
use ferry_proto::frames::Reason;
use ferry_proto::TargetName;
use ferry_tunnel::exchange::{self, StreamBody};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, Response};

/// The node's sending half of a tunnel, in the protocol the connector and the node agreed on.
#[derive(Clone)]
pub enum TunnelSender {
    /// Protocol 1: the reversed HTTP/2 connection.
    Http2(SendRequest<Body>),
    /// Protocol 2: HTTP/1.1 heads on the tunnel's own frames.
    Mux(exchange::Sender),
}

impl TunnelSender {
    /// Tells the connector to open no new streams (protocol 2; on protocol 1 dropping every sender does it).
    pub fn go_away(&self) {
        if let Self::Mux(sender) = self {
            sender.mux().go_away(Reason::NO_ERROR);
        }
    }

    /// Ends a protocol 2 connection now, streams in flight included (a cut tunnel); protocol 1's ends when the
    /// future driving it is dropped.
    pub fn close(&self) {
        if let Self::Mux(sender) = self {
            sender.mux().close();
        }
    }

    /// Sends a request and waits for the answer's head.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<TunnelReply>, SendFailure> {
        match self {
            Self::Http2(sender) => {
                let mut sender = sender.clone();
                if let Err(e) = sender.ready().await {
                    return Err(SendFailure::Unsent(Box::new(req), e.to_string()));
                }
                match sender.try_send_request(req).await {
                    Ok(resp) => Ok(resp.map(Either::Left)),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => {
                            Err(SendFailure::Unsent(Box::new(unsent), e.error().to_string()))
                        }
                        None => Err(SendFailure::Lost(e.into_error().to_string())),
                    },
                }
            }
            Self::Mux(sender) => match sender.send(req).await {
                Ok(resp) => Ok(resp.map(Either::Right)),
                Err(exchange::SendError::Unsent(req, e)) => {
                    Err(SendFailure::Unsent(req, e.to_string()))
                }
                Err(exchange::SendError::Lost(why)) => Err(SendFailure::Lost(why)),
            },
        }
    }
}

/// Why [`TunnelSender::send`] gave no answer.
pub enum SendFailure {
    /// The request never left: it comes back, with why.
    Unsent(Box<Request<Body>>, String),
    /// The request left and the tunnel broke before the answer's head.
    Lost(String),
}

/// The body of a connector's answer, in either protocol: HTTP/2's (protocol 1) or a mux stream's (protocol 2).
pub type TunnelReply = Either<Incoming, StreamBody>;

/// A byte stream both ways to the target, after an upgrade.
pub trait UpgradedIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> UpgradedIo for T {}

/// The upgraded stream of a connector's `200` to an upgrade request.
pub async fn upgraded(resp: Response<TunnelReply>) -> Result<Box<dyn UpgradedIo>, BoxError> {
    let (head, body) = resp.into_parts();
    match body {
        Either::Left(body) => {
            let upgraded = hyper::upgrade::on(Response::from_parts(head, body)).await?;
            Ok(Box::new(hyper_util::rt::TokioIo::new(upgraded)))
        }
        Either::Right(mut body) => match exchange::into_io(&mut body) {
            Some(io) => Ok(Box::new(io)),
            None => Err("the connector's answer carries no upgraded stream".into()),
        },
    }
}

/// What [`try_send`] did with a request.
pub enum LocalOutcome {
    /// A connector took the request; keep the slot until the response body ends.
    Sent(Response<TunnelReply>, TunnelSlot),
    /// No tunnel serving the target is open (or all are closing): the request comes back unsent.
    NoTunnel(Request<Body>),
    /// Tunnels are open, none serves the target: the request comes back unsent.
    NoSuchTarget(Request<Body>),
    /// The request left on a tunnel that then broke.
    Lost(String),
}

/// Hand `req` to the least busy of `tunnels` serving `target`, moving on to the next when one turns out to be
/// closing before the request left.
pub async fn try_send(
    tunnels: &TenantTunnels,
    target: &TargetName,
    mut req: Request<Body>,
) -> LocalOutcome {
    loop {
        let tunnel = match tunnels.pick(target) {
            Pick::Tunnel(t) => t,
            Pick::NoSuchTarget => return LocalOutcome::NoSuchTarget(req),
            Pick::NoTunnel => return LocalOutcome::NoTunnel(req),
        };
        let slot = TunnelSlot::new(tunnel.clone());
        match tunnel.sender.send(req).await {
            Ok(resp) => return LocalOutcome::Sent(resp, slot),
            Err(SendFailure::Unsent(unsent, why)) => {
                tracing::debug!(connector_id = %tunnel.connector_id, error = %why, "request not sent on a closing tunnel, trying another");
                tunnel.mark_closing();
                crate::metrics::FAILOVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                req = *unsent;
            }
            Err(SendFailure::Lost(why)) => return LocalOutcome::Lost(why),
        }
    }
}
