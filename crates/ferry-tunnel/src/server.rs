//! The Ferry node's end of the tunnel: checking a connector's upgrade request, the `101` answer, and the HTTP/2
//! client that the node runs on the upgraded connection (docs/protocol.md §2, §3, §5).
//!
//! Token checking, tenants and routing are not here: the node's HTTP handler checks the bearer token, calls
//! [`parse_handshake`], answers `101` with [`switching_protocols_headers`], and once `hyper::upgrade::on` resolves
//! calls [`open`] for protocol 1, or starts a [`crate::mux`] connection with an [`crate::exchange::Sender`] for
//! protocol 2 ([`Handshake::protocol`]).
//!
//! # Sending a request on a tunnel, and re-routing one that was never sent
//!
//! Use [`hyper::client::conn::http2::SendRequest::try_send_request`], not `send_request`:
//!
//! ```no_run
//! # use ferry_tunnel::TunnelBody;
//! # use http::{Request, Response};
//! # use hyper::client::conn::http2::SendRequest;
//! # fn reroute(_: Request<TunnelBody>) {}
//! # fn connector_lost(_: hyper::Error) {}
//! # async fn example(mut sender: SendRequest<TunnelBody>, req: Request<TunnelBody>) {
//! match sender.try_send_request(req).await {
//!     Ok(response) => { /* relay it */ }
//!     Err(mut err) => match err.take_message() {
//!         // The request never reached the connection: the tunnel was closed, or the connector had sent
//!         // GOAWAY (it is draining). Nothing was sent, body included: hand `req` to another tunnel.
//!         Some(req) => reroute(req),
//!         // The request (or part of it) may have been sent: answer `502 connector_lost`.
//!         None => connector_lost(err.into_error()),
//!     },
//! }
//! # }
//! ```
//!
//! After the connector's GOAWAY (§8) every later `try_send_request` gives its request back through
//! `take_message` (streams already in flight go on, driven by a task of their own). hyper notices the GOAWAY only
//! when the sender is next used: from then on the connection future returned by [`open`] has ended and
//! [`SendRequest::is_closed`] is true, so checking `is_closed()` when choosing a tunnel skips a draining one from
//! its second request on, and `take_message` covers the first. A stream the connector refused after its final
//! GOAWAY (`REFUSED_STREAM`) comes back as an error without the message: answer it `502 connector_lost` like any
//! other request that may have been sent.
//!
//! [`SendRequest::is_closed`]: hyper::client::conn::http2::SendRequest::is_closed

use crate::ws::{self, Transport};
use crate::{TunnelBody, TunnelError, TunnelOptions, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE};
use ferry_proto::tunnel::{
    CONNECTOR_ID, CONNECTOR_VERSION, MAX_STREAMS, NODE_ID, TARGETS, UPGRADE_PROTOCOL,
    UPGRADE_PROTOCOL_2, WEBSOCKET_PROTOCOL_2,
};
use ferry_proto::{ErrorCode, ErrorReply, TargetName};
use http::header::{
    HeaderMap, HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::future::Future;
use std::time::Duration;

/// What a connector announced in its upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The connector's id (a UUID chosen by the connector process).
    pub connector_id: String,
    /// The targets this connector serves; never empty.
    pub targets: Vec<TargetName>,
    /// The connector's version, when it sent one.
    pub version: Option<String>,
    /// The transport asked for: `Upgrade: ferry-tunnel/1` or `Upgrade: websocket`.
    pub transport: Transport,
    /// For a WebSocket: its `Sec-WebSocket-Key`, and whether a tunnel subprotocol (`ferry-tunnel.v1` or
    /// `ferry-tunnel.v2`) was offered.
    pub websocket: Option<(String, bool)>,
    /// The tunnel protocol chosen: 2 when the connector offers it (`Upgrade: ferry-tunnel/2`, or the
    /// `ferry-tunnel.v2` subprotocol), else 1.
    pub protocol: u8,
    /// Protocol 2: the most streams the connector takes at once (`ferry-max-streams`; 1000 when not sent).
    pub max_streams: usize,
}

/// The most streams of a protocol 2 tunnel when the connector does not say (protocol 1's default).
pub const DEFAULT_MAX_STREAMS: usize = 1000;
/// The most streams a connector may ask the node to keep open at once on one tunnel.
const MAX_MAX_STREAMS: usize = 100_000;

/// Longest connector id accepted.
const MAX_CONNECTOR_ID_LEN: usize = 128;

fn bad_request(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorCode::BadRequest, message)
}

fn has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Check a `GET /_ferry/tunnel` upgrade request's headers: `Connection: Upgrade`, `Upgrade: ferry-tunnel/1` (or
/// `Upgrade: websocket` with `Sec-WebSocket-Version: 13` and a `Sec-WebSocket-Key`: the WebSocket transport), a
/// well-formed `ferry-connector-id` and at least one valid target in `ferry-targets`.
///
/// Every refusal is `400 bad_request` with a message naming the header. The bearer token is not checked here.
pub fn parse_handshake(headers: &HeaderMap) -> Result<Handshake, ErrorReply> {
    let (transport, websocket, protocol) = if has_token(headers, UPGRADE, UPGRADE_PROTOCOL_2) {
        (Transport::Upgrade, None, 2)
    } else if has_token(headers, UPGRADE, UPGRADE_PROTOCOL) {
        (Transport::Upgrade, None, 1)
    } else if has_token(headers, UPGRADE, "websocket") {
        if !has_token(headers, SEC_WEBSOCKET_VERSION, "13") {
            return Err(bad_request(
                "the websocket tunnel needs Sec-WebSocket-Version: 13",
            ));
        }
        let key = headers
            .get(SEC_WEBSOCKET_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= 64)
            .ok_or_else(|| bad_request("the websocket tunnel needs a Sec-WebSocket-Key"))?;
        let v2 = has_token(headers, SEC_WEBSOCKET_PROTOCOL, WEBSOCKET_PROTOCOL_2);
        let offered = v2 || has_token(headers, SEC_WEBSOCKET_PROTOCOL, ws::SUBPROTOCOL);
        (
            Transport::WebSocket,
            Some((key.to_owned(), offered)),
            if v2 { 2 } else { 1 },
        )
    } else {
        return Err(bad_request(format!(
            "the tunnel needs Upgrade: {UPGRADE_PROTOCOL} (or websocket)"
        )));
    };
    if !has_token(headers, CONNECTION, "upgrade") {
        return Err(bad_request("the tunnel needs Connection: Upgrade"));
    }
    let connector_id = headers
        .get(CONNECTOR_ID)
        .ok_or_else(|| bad_request(format!("missing {CONNECTOR_ID} header")))?
        .to_str()
        .map(str::trim)
        .unwrap_or_default();
    let id_ok = !connector_id.is_empty()
        && connector_id.len() <= MAX_CONNECTOR_ID_LEN
        && connector_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if !id_ok {
        return Err(bad_request(format!(
            "invalid {CONNECTOR_ID}: 1 to {MAX_CONNECTOR_ID_LEN} letters, digits, '-', '_', '.' or ':'"
        )));
    }
    let targets = headers
        .get(TARGETS)
        .ok_or_else(|| bad_request(format!("missing {TARGETS} header")))?
        .to_str()
        .map_err(|_| bad_request(format!("invalid {TARGETS}: not ASCII")))?;
    let targets = ferry_proto::tunnel::parse_targets(targets)
        .map_err(|e| bad_request(format!("invalid {TARGETS}: {e}")))?;
    if targets.is_empty() {
        return Err(bad_request(format!("{TARGETS} names no target")));
    }
    let version = headers
        .get(CONNECTOR_VERSION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    Ok(Handshake {
        connector_id: connector_id.to_owned(),
        targets,
        version,
        transport,
        websocket,
        protocol,
        max_streams: headers
            .get(MAX_STREAMS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map_or(DEFAULT_MAX_STREAMS, |n| n.clamp(1, MAX_MAX_STREAMS)),
    })
}

/// Headers of the `101 Switching Protocols` answering `handshake`: those of
/// [`switching_protocols_headers`] for the default transport; for a WebSocket, `Upgrade: websocket`, its
/// `Sec-WebSocket-Accept`, the subprotocol when offered, and `Ferry-Node-Id`.
pub fn accept_headers(handshake: &Handshake, node_id: &str) -> HeaderMap {
    let Some((key, offered)) = &handshake.websocket else {
        let mut headers = switching_protocols_headers(node_id);
        if handshake.protocol == 2 {
            headers.insert(UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL_2));
        }
        return headers;
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&ws::accept_key(key)) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    if *offered {
        let chosen = match handshake.protocol {
            2 => WEBSOCKET_PROTOCOL_2,
            _ => ws::SUBPROTOCOL,
        };
        headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(chosen));
    }
    if let Ok(value) = HeaderValue::from_str(node_id) {
        headers.insert(NODE_ID, value);
    }
    headers
}

/// Headers of the `101 Switching Protocols` answer: `Connection: Upgrade`, `Upgrade: ferry-tunnel/1` and
/// `Ferry-Node-Id` (left out if `node_id` is not a valid header value).
pub fn switching_protocols_headers(node_id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL));
    if let Ok(value) = HeaderValue::from_str(node_id) {
        headers.insert(NODE_ID, value);
    }
    headers
}

/// After the `101`: run the HTTP/2 client handshake on the upgraded connection (the node is the HTTP/2 client),
/// with the windows of `opts` and keep-alive PINGs every `keepalive_interval` (idle or not; the connection is
/// closed when one is not acknowledged within `keepalive_timeout`).
///
/// Waits (up to `keepalive_timeout`) for the connector's settings, so that the first request may already be an
/// extended CONNECT; a peer that never enables the extended CONNECT protocol is refused.
///
/// Returns the request sender and the connection's dispatch future, which the caller spawns. That future ends
/// when the tunnel takes no more requests: the connection broke or timed out (keep-alive), the connector sent
/// GOAWAY (noticed when the sender is next used), or every sender was dropped. Streams in flight at that point
/// carry on until they end. See the module docs for how to
/// send requests so that one the tunnel never took can be re-routed.
pub async fn open<I>(
    io: I,
    opts: &TunnelOptions,
) -> Result<
    (
        SendRequest<TunnelBody>,
        impl Future<Output = Result<(), hyper::Error>> + Send + 'static,
    ),
    TunnelError,
>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(opts.stream_window)
        .initial_connection_window_size(opts.connection_window_in_use())
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_frame_size(MAX_FRAME_SIZE)
        .keep_alive_interval(non_zero(opts.keepalive_interval))
        .keep_alive_timeout(opts.keepalive_timeout)
        .keep_alive_while_idle(true);
    let (sender, conn) = builder
        .handshake::<_, TunnelBody>(io)
        .await
        .map_err(TunnelError::Http2)?;

    // The connector's SETTINGS arrive on the connection task hyper spawned; poll for them, bounded.
    let wait = opts.keepalive_timeout.max(Duration::from_secs(1));
    // The connection is moved into the polling future (not borrowed), so that `open` stays `Send`.
    let settled = tokio::time::timeout(wait, async {
        loop {
            if conn.is_extended_connect_protocol_enabled() {
                return Ok(conn);
            }
            if sender.is_closed() {
                return Err(TunnelError::Closed);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    match settled {
        Ok(Ok(conn)) => Ok((sender, conn)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(TunnelError::NoConnectProtocol(wait)),
    }
}

pub(crate) fn non_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("ferry-tunnel/1"));
        h.insert(
            CONNECTOR_ID,
            HeaderValue::from_static("0d5c6f1e-1b2a-4c3d-9e8f-0a1b2c3d4e5f"),
        );
        h.insert(TARGETS, HeaderValue::from_static("app, api"));
        h.insert(CONNECTOR_VERSION, HeaderValue::from_static("0.1.0"));
        h
    }

    #[test]
    fn accepts_a_valid_handshake() {
        let hs = parse_handshake(&valid()).expect("valid");
        assert_eq!(hs.transport, Transport::Upgrade);
        assert_eq!(hs.connector_id, "0d5c6f1e-1b2a-4c3d-9e8f-0a1b2c3d4e5f");
        let names: Vec<&str> = hs.targets.iter().map(|t| t.as_str()).collect();
        assert_eq!(names, ["app", "api"]);
        assert_eq!(hs.version.as_deref(), Some("0.1.0"));
        let mut h = valid();
        h.remove(CONNECTOR_VERSION);
        assert_eq!(parse_handshake(&h).expect("valid").version, None);
    }

    #[test]
    fn refuses_bad_handshakes_with_bad_request() {
        type Change = Box<dyn Fn(&mut HeaderMap)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "upgrade",
                Box::new(|h| {
                    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
                }),
            ),
            (
                "connection",
                Box::new(|h| {
                    h.remove(CONNECTION);
                }),
            ),
            (
                "no id",
                Box::new(|h| {
                    h.remove(CONNECTOR_ID);
                }),
            ),
            (
                "bad id",
                Box::new(|h| {
                    h.insert(CONNECTOR_ID, HeaderValue::from_static("a b"));
                }),
            ),
            (
                "no targets",
                Box::new(|h| {
                    h.remove(TARGETS);
                }),
            ),
            (
                "empty targets",
                Box::new(|h| {
                    h.insert(TARGETS, HeaderValue::from_static(" , "));
                }),
            ),
            (
                "invalid target",
                Box::new(|h| {
                    h.insert(TARGETS, HeaderValue::from_static("app,Bad"));
                }),
            ),
        ];
        for (what, change) in cases {
            let mut h = valid();
            change(&mut h);
            let err = parse_handshake(&h).expect_err(what);
            assert_eq!(err.code, ErrorCode::BadRequest, "{what}");
            assert_eq!(err.code.status(), 400, "{what}");
        }
    }

    #[test]
    fn websocket_handshakes() {
        let mut h = valid();
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        h.insert(
            SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("ferry-tunnel.v1"),
        );
        let hs = parse_handshake(&h).expect("valid");
        assert_eq!(hs.transport, Transport::WebSocket);
        let answer = accept_headers(&hs, "node-1");
        assert_eq!(answer[UPGRADE], "websocket");
        assert_eq!(answer[SEC_WEBSOCKET_ACCEPT], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(answer[SEC_WEBSOCKET_PROTOCOL], "ferry-tunnel.v1");
        assert_eq!(answer[NODE_ID], "node-1");
        let mut no_key = h.clone();
        no_key.remove(SEC_WEBSOCKET_KEY);
        assert_eq!(
            parse_handshake(&no_key).expect_err("no key").code,
            ErrorCode::BadRequest
        );
        let mut old = h.clone();
        old.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert!(parse_handshake(&old).is_err());
        h.remove(SEC_WEBSOCKET_PROTOCOL);
        let hs = parse_handshake(&h).expect("no subprotocol");
        assert!(!accept_headers(&hs, "n").contains_key(SEC_WEBSOCKET_PROTOCOL));
    }

    #[test]
    fn switching_protocols() {
        let h = switching_protocols_headers("node-1");
        assert_eq!(h[UPGRADE], "ferry-tunnel/1");
        assert_eq!(h[CONNECTION], "upgrade");
        assert_eq!(h[NODE_ID], "node-1");
        assert!(!switching_protocols_headers("bad\nid").contains_key(NODE_ID));
    }
}
