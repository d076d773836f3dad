//! The connector tunnel's handshake vocabulary (see docs/protocol.md for the whole protocol).
//!
//! The connector dials Ferry and sends `GET /_ferry/tunnel` with `Upgrade: ferry-tunnel/1` and a bearer token.
//! After `101 Switching Protocols` the roles reverse: Ferry is the HTTP/2 client and the connector the HTTP/2
//! server on that connection. Every relayed request is one HTTP/2 stream; upgrades (WebSocket) use the extended
//! CONNECT method of RFC 8441 with `:protocol` set to the client's `Upgrade` value.

use http::HeaderName;

/// Path of the tunnel endpoint on Ferry's public listener.
pub const TUNNEL_PATH: &str = "/_ferry/tunnel";
/// The `Upgrade` token of the tunnel protocol, versioned.
pub const UPGRADE_PROTOCOL: &str = "ferry-tunnel/1";
/// The `Upgrade` token of tunnel protocol 2 (docs/protocol.md §9).
pub const UPGRADE_PROTOCOL_2: &str = "ferry-tunnel/2";
/// The WebSocket subprotocol (`Sec-WebSocket-Protocol`) of the tunnel's WebSocket transport: the same stream as
/// after `Upgrade: ferry-tunnel/1`, carried in binary WebSocket messages.
pub const WEBSOCKET_PROTOCOL: &str = "ferry-tunnel.v1";
/// The WebSocket subprotocol of tunnel protocol 2 (docs/protocol.md §9).
pub const WEBSOCKET_PROTOCOL_2: &str = "ferry-tunnel.v2";
/// Path of Ferry's built-in OAuth 2 token endpoint (client credentials).
pub const TOKEN_PATH: &str = "/oauth/token";

/// Handshake request: the connector's id (a UUID chosen by the connector process at start).
pub const CONNECTOR_ID: HeaderName = HeaderName::from_static("ferry-connector-id");
/// Handshake request: the comma-separated target names this connector serves.
pub const TARGETS: HeaderName = HeaderName::from_static("ferry-targets");
/// Handshake request: the connector's version.
pub const CONNECTOR_VERSION: HeaderName = HeaderName::from_static("ferry-connector-version");
/// Handshake response: the id of the Ferry node that accepted the tunnel.
pub const NODE_ID: HeaderName = HeaderName::from_static("ferry-node-id");
/// Protocol 2 handshake: the most streams the connector takes at once on the tunnel (protocol 1 says it in
/// HTTP/2 SETTINGS).
pub const MAX_STREAMS: HeaderName = HeaderName::from_static("ferry-max-streams");

/// Tunnel request: which of the connector's targets the stream is for.
pub const TARGET: HeaderName = HeaderName::from_static("ferry-target");
/// Tunnel request: the relay request id (also sent to the target as `x-request-id`).
pub const REQUEST_ID: HeaderName = HeaderName::from_static("ferry-request-id");
/// Tunnel request: `client` when the target must see the client's `Host`, absent otherwise.
pub const HOST_MODE: HeaderName = HeaderName::from_static("ferry-host-mode");

/// Tunnel request from the node to the connector itself (never relayed to a target): names the control message.
/// Clients cannot send it: every `ferry-*` header of a client request is removed before relaying.
pub const CONTROL: HeaderName = HeaderName::from_static("ferry-control");
/// The [`CONTROL`] value of a settings push: `POST` [`SETTINGS_PATH`] with the tenant's settings as JSON
/// (`ferry_proto::TenantSettings`); the connector answers `204`.
pub const CONTROL_SETTINGS: &str = "settings";
/// Path of the settings push.
pub const SETTINGS_PATH: &str = "/_ferry/settings";
/// Largest settings document a connector accepts.
pub const MAX_CONTROL_BODY: usize = 64 * 1024;

/// Parse the `ferry-targets` handshake header into names, refusing invalid ones.
pub fn parse_targets(value: &str) -> Result<Vec<crate::TargetName>, crate::InvalidName> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(crate::TargetName::new)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = parse_targets("app, api,").expect("valid");
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].as_str(), "api");
        assert!(parse_targets("app,Bad").is_err());
    }
}
