//! Sending one request through one of this node's tunnels of a tenant, with fail-over between them.
//!
//! A request is handed to a tunnel with `try_send_request`; when the tunnel turns out to be closing or closed
//! before the request left this node, HTTP/2 hands the request back and it goes to the next tunnel, so it is never
//! lost. Once a request has been sent, a broken tunnel is `502 connector_lost`: the request may have reached the
//! target, and only the client may decide to repeat it. Waiting for a tunnel to attach is the caller's
//! ([`crate::dispatch`]); this module never waits for one.

use crate::registry::{Pick, TenantTunnels, TunnelSlot};
use ferry_http::Body;
use ferry_proto::TargetName;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, Response};

/// The node's sending half of a tunnel.
pub type TunnelSender = SendRequest<Body>;

/// What [`try_send`] did with a request.
pub enum LocalOutcome {
    /// A connector took the request; keep the slot until the response body ends.
    Sent(Response<Incoming>, TunnelSlot),
    /// No tunnel serving the target is open (or all are closing): the request comes back unsent.
    NoTunnel(Request<Body>),
    /// Tunnels are open, none serves the target: the request comes back unsent.
    NoSuchTarget(Request<Body>),
    /// The request left on a tunnel that then broke.
    Lost(hyper::Error),
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
        let mut sender = tunnel.sender.clone();
        if sender.ready().await.is_err() {
            tracing::debug!(connector_id = %tunnel.connector_id, "tunnel closed before use, trying another");
            tunnel.mark_closing();
            crate::metrics::FAILOVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(resp) => return LocalOutcome::Sent(resp, slot),
            Err(mut e) => match e.take_message() {
                Some(unsent) => {
                    tracing::debug!(connector_id = %tunnel.connector_id, error = %e.error(), "request not sent on a closing tunnel, trying another");
                    tunnel.mark_closing();
                    crate::metrics::FAILOVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    req = unsent;
                }
                None => return LocalOutcome::Lost(e.into_error()),
            },
        }
    }
}
