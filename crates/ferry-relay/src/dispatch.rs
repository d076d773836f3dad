//! Sending one request through one of the tenant's tunnels, with fail-over.
//!
//! A request is handed to a tunnel with `try_send_request`; when the tunnel turns out to be closing or closed
//! before the request left this node, HTTP/2 hands the request back and it goes to the next tunnel, so it is never
//! lost. Once a request has been sent, a broken tunnel is `502 connector_lost`: the request may have reached the
//! target, and only the client may decide to repeat it.

use crate::registry::{Pick, TenantSlot, TenantTunnels, TunnelSlot};
use ferry_http::Body;
use ferry_proto::{ErrorCode, ErrorReply, TargetName, TenantName};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The node's sending half of a tunnel.
pub type TunnelSender = SendRequest<Body>;

/// Why a request could not be relayed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("tenant {0:?} does not exist")]
    UnknownTenant(String),
    #[error("no connector of tenant {tenant:?} serves target {target:?}")]
    UnknownTarget { tenant: String, target: String },
    #[error("no connector of tenant {0:?} came online within {1:?}")]
    NoConnector(String, Duration),
    #[error("tenant {0:?} has reached its limit of {1} requests in flight")]
    TenantBusy(String, usize),
    #[error("the connector carrying the request went away: {0}")]
    ConnectorLost(#[source] hyper::Error),
    #[error("no response within the request expiration of {0:?}")]
    Expired(Duration),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(u64),
    #[error("the node is draining and takes no new requests")]
    Draining,
    #[error("store: {0}")]
    Store(String),
}

impl RelayError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnknownTenant(_) => ErrorCode::UnknownTenant,
            Self::UnknownTarget { .. } => ErrorCode::UnknownTarget,
            Self::NoConnector(..) => ErrorCode::NoConnector,
            Self::TenantBusy(..) => ErrorCode::TenantBusy,
            Self::ConnectorLost(_) => ErrorCode::ConnectorLost,
            Self::Expired(_) => ErrorCode::RequestExpired,
            Self::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::Draining => ErrorCode::Draining,
            Self::Store(_) => ErrorCode::Internal,
        }
    }

    pub fn reply(&self) -> ErrorReply {
        ErrorReply::new(self.code(), self.to_string())
    }
}

/// What keeps a relayed request counted until its response body ends.
pub struct InflightGuard {
    _tenant: TenantSlot,
    _tunnel: TunnelSlot,
}

/// Send `req` on one of `tunnels` serving `target`, waiting up to `connector_wait` for a tunnel to attach when
/// none is open. Returns the response head (body streaming) and the guard to hold until the body ends.
pub(crate) async fn send(
    tunnels: &Arc<TenantTunnels>,
    tenant: &TenantName,
    target: &TargetName,
    mut req: Request<Body>,
    cap: usize,
    connector_wait: Duration,
) -> Result<(Response<Incoming>, InflightGuard), RelayError> {
    let tenant_slot = tunnels
        .admit(cap)
        .ok_or_else(|| RelayError::TenantBusy(tenant.to_string(), cap))?;
    let wait_until = Instant::now() + connector_wait;
    loop {
        let attached = tunnels.attached.notified();
        tokio::pin!(attached);
        attached.as_mut().enable();
        let tunnel = match tunnels.pick(target) {
            Pick::Tunnel(t) => t,
            Pick::NoSuchTarget => {
                return Err(RelayError::UnknownTarget {
                    tenant: tenant.to_string(),
                    target: target.to_string(),
                })
            }
            Pick::NoTunnel => {
                if tokio::time::timeout_at(wait_until, attached).await.is_err() {
                    return Err(RelayError::NoConnector(tenant.to_string(), connector_wait));
                }
                continue;
            }
        };
        let slot = TunnelSlot::new(tunnel.clone());
        let mut sender = tunnel.sender.clone();
        if sender.ready().await.is_err() {
            tracing::debug!(connector_id = %tunnel.connector_id, "tunnel closed before use, trying another");
            tunnel.mark_closing();
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(resp) => {
                return Ok((
                    resp,
                    InflightGuard {
                        _tenant: tenant_slot,
                        _tunnel: slot,
                    },
                ))
            }
            Err(mut e) => match e.take_message() {
                Some(unsent) => {
                    tracing::debug!(connector_id = %tunnel.connector_id, error = %e.error(), "request not sent on a closing tunnel, trying another");
                    tunnel.mark_closing();
                    req = unsent;
                }
                None => return Err(RelayError::ConnectorLost(e.into_error())),
            },
        }
    }
}
