//! The cluster protocol's messages: what nodes send each other over the bus, their subjects, and their encoding
//! (docs/cluster.md, "What travels on the bus").
//!
//! Every message starts with the protocol version byte ([`VERSION`]) and a kind byte. Body chunks ([`Data`])
//! have a fixed 17-byte header and carry their bytes as a slice of the received buffer, so a chunk is never copied
//! on its way through a node; every other message is `postcard`-encoded ([`Message`]). The framing of `Data` is
//! written by hand because no serde format hands out the payload without a copy (a measured bulk-path cost).

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// The version of the cluster protocol; a node drops (and logs) messages of another version. Version 2 added
/// requests sent straight to a node's inbox ([`Message::Answer`], [`Message::Cancel`]).
pub const VERSION: u8 = 3;

const KIND_DATA: u8 = 1;
const KIND_MESSAGE: u8 = 2;

/// The subjects of one cluster. Every subject starts with the cluster's name (`node.cluster.name`, `ferry` by
/// default), so that several clusters (production and staging, say) can share one broker without hearing each
/// other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    cluster: String,
}

impl Subjects {
    /// The subjects of the cluster named `cluster` (a word of `[A-Za-z0-9_-]`).
    pub fn new(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_owned(),
        }
    }

    /// A tenant's dispatch queue: requests for the tenant's connectors, consumed by the nodes holding them.
    pub fn dispatch(&self, tenant: &str) -> String {
        format!("{}.dispatch.{tenant}", self.cluster)
    }

    /// A node's inbox: requests sent to this node directly, claims, grants, responses, body chunks, credits and
    /// presence replies for it.
    pub fn inbox(&self, node: &str) -> String {
        format!("{}.inbox.{node}", self.cluster)
    }

    /// Every node listens here for presence (heartbeats, connectors attached and detached).
    pub fn presence(&self) -> String {
        format!("{}.presence", self.cluster)
    }

    /// Every node listens here for configuration changes made through the management API.
    pub fn events(&self) -> String {
        format!("{}.events", self.cluster)
    }
}

/// The default cluster name.
pub const DEFAULT_CLUSTER: &str = "ferry";

/// The queue group of dispatch queues: the nodes holding a tenant's connectors compete for its requests.
pub const DISPATCH_GROUP: &str = "relay";

/// How a message's body travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyKind {
    /// No body.
    Empty,
    /// The whole body, in this message.
    Inline(#[serde(with = "serde_bytes_compat")] Bytes),
    /// The body follows as [`Data`] chunks and ends with [`Message::End`].
    Stream,
}

/// A header as sent: name (lowercase) and value bytes.
pub type Header = (String, Vec<u8>);

/// A request from the node the client called (the origin): published to the tenant's dispatch queue (the
/// receiver claims it and runs it once granted), or sent to one node's inbox (the receiver runs it at once and
/// answers with [`Message::Answer`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMsg {
    /// The origin node's id; claims go to its inbox.
    pub origin: String,
    /// The origin's stream id for this request (a claim names it).
    pub origin_stream: u64,
    /// 1 for the first publication, counting up on each redelivery.
    pub attempt: u32,
    /// Unix milliseconds after which the request must not be executed (its expiration).
    pub deadline_ms: u64,
    pub request_id: String,
    pub tenant: String,
    pub target: String,
    pub method: String,
    /// The path and query sent to the target, byte for byte.
    pub path_and_query: String,
    /// The request's authority (`Host`).
    pub authority: String,
    pub headers: Vec<Header>,
    pub body: BodyKind,
    /// `Some(protocol)` for an upgrade (WebSocket): the target's answer, when it agrees, turns the stream into a
    /// two-way byte stream.
    pub upgrade: Option<String>,
}

/// A response's head, sent by the node that ran the request to the origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: BodyKind,
}

/// Why a stream was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AbortReason {
    /// The client went away (origin → executor): stop the work at the target.
    Cancelled,
    /// The executor did not hand the request to any connector (its tunnels closed first): the origin may
    /// publish it again.
    NotAccepted,
    /// The connector carrying the request went away after accepting it.
    ConnectorLost,
    /// The client's request body broke off or was malformed.
    ClientBody,
    /// A chunk was missing or out of order, or the peer broke the protocol.
    Protocol,
    /// The request's expiration passed.
    Expired,
    /// The node is shutting down.
    Draining,
}

/// A connector as presence announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorInfo {
    /// The tunnel's id (its row in the store's connections).
    pub record_id: String,
    pub tenant: String,
    pub connector_id: String,
    pub targets: Vec<String>,
    /// Unix seconds.
    pub since: i64,
    pub remote_addr: String,
}

/// A node as presence announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node: String,
    /// Comma-separated roles.
    pub roles: String,
    pub address: String,
    pub version: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Counts up with every change of the node's connectors; a receiver that sees a gap asks for a snapshot.
    pub generation: u64,
    /// Whether this node holds the worker lease now.
    pub worker_active: bool,
}

/// Presence: which node is up with which connectors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PresenceMsg {
    /// Periodic: the node is alive; its connectors are as of `info.generation`.
    Heartbeat(NodeInfo),
    /// A connector attached; `info.generation` is the generation after the change.
    Attached(NodeInfo, ConnectorInfo),
    /// A connector (by `record_id`) detached.
    Detached(NodeInfo, String),
    /// Every connector of the node (to a node that asked, or to all when the node starts).
    Snapshot(NodeInfo, Vec<ConnectorInfo>),
    /// The node leaves the cluster (shutdown): forget it and its connectors now.
    Leave(String),
    /// Ask a node (in its inbox) for a snapshot, sent to `reply_to`'s inbox.
    SyncRequest { reply_to: String },
}

/// A configuration change made through a node's management API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventMsg {
    TenantChanged { tenant: String },
    TenantDeleted { tenant: String },
    SecretRevoked { tenant: String, secret_id: String },
}

/// Every message but body chunks. `stream` always names the receiver's own stream id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Origin → a tenant's dispatch queue.
    Request(Box<RequestMsg>),
    /// Executor → origin: "I can run your request `origin_stream`; my stream is `executor_stream`".
    Claim {
        origin_stream: u64,
        executor: String,
        executor_stream: u64,
    },
    /// Origin → executor: run it (only one claim of a request is granted).
    Grant {
        stream: u64,
    },
    /// Origin → executor: do not run it (another node has it, or it expired or was cancelled).
    Deny {
        stream: u64,
    },
    /// Executor → origin: no connector here serves the request's target after all; publish it again.
    Decline {
        stream: u64,
    },
    /// Executor → origin: the response head.
    Head {
        stream: u64,
        head: Box<ResponseHead>,
    },
    /// Either way: the body ended after `chunks` chunks, with these trailers (gRPC's status, for one).
    End {
        stream: u64,
        chunks: u64,
        trailers: Vec<Header>,
    },
    /// Either way: the receiver has consumed `consumed` chunks of the stream so far (cumulative).
    Credit {
        stream: u64,
        consumed: u64,
    },
    /// Either way: the stream is cut.
    Abort {
        stream: u64,
        reason: AbortReason,
    },
    Presence(PresenceMsg),
    Event {
        origin: String,
        event: EventMsg,
    },
    /// Executor → origin, for a request sent to the executor's inbox: the response head, and the executor's
    /// stream for what follows (credits, chunks of the request body, aborts).
    Answer {
        stream: u64,
        executor: String,
        executor_stream: u64,
        head: Box<ResponseHead>,
    },
    /// Origin → executor, for a request sent to the executor's inbox and not answered yet: the client went
    /// away; stop it. Names the origin's stream, since the origin does not know the executor's yet.
    Cancel {
        origin: String,
        origin_stream: u64,
    },
}

/// One chunk of a body: the `seq`-th (from 0) of stream `stream` (the receiver's id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    pub stream: u64,
    pub seq: u64,
    pub bytes: Bytes,
}

/// A decoded bus message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Data(Data),
    Message(Message),
}

/// Why a bus message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("cluster protocol version {0}, this node speaks {VERSION}")]
    Version(u8),
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("truncated chunk header")]
    Truncated,
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Bytes before a chunk's payload.
pub const DATA_HEADER: usize = 2 + 8 + 8;

/// A body chunk filled in place: its header is reserved at the front, so that finishing it copies nothing (a
/// chunk is made of several smaller frames of a body, copied in once).
#[derive(Debug)]
pub struct DataBuilder {
    buf: BytesMut,
    capacity: usize,
}

impl DataBuilder {
    /// A builder of chunks of up to `capacity` payload bytes.
    pub fn new(capacity: usize) -> Self {
        let mut b = Self {
            buf: BytesMut::new(),
            capacity,
        };
        b.reset();
        b
    }

    fn reset(&mut self) {
        self.buf.reserve(DATA_HEADER + self.capacity);
        self.buf.put_bytes(0, DATA_HEADER);
    }

    /// Payload bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len() - DATA_HEADER
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Room left for payload.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.len())
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.put_slice(bytes);
    }

    /// The chunk so far as chunk `seq` of `stream`, encoded as [`encode_data`] would; the builder starts over.
    pub fn finish(&mut self, stream: u64, seq: u64) -> Bytes {
        self.buf[0] = VERSION;
        self.buf[1] = KIND_DATA;
        self.buf[2..10].copy_from_slice(&stream.to_le_bytes());
        self.buf[10..18].copy_from_slice(&seq.to_le_bytes());
        let out = self.buf.split().freeze();
        self.reset();
        out
    }
}

/// Encode a body chunk.
pub fn encode_data(stream: u64, seq: u64, bytes: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(DATA_HEADER + bytes.len());
    out.put_u8(VERSION);
    out.put_u8(KIND_DATA);
    out.put_u64_le(stream);
    out.put_u64_le(seq);
    out.put_slice(bytes);
    out.freeze()
}

/// Encode any other message.
pub fn encode(message: &Message) -> Bytes {
    let mut out = vec![VERSION, KIND_MESSAGE];
    // postcard writes into a Vec and fails only on types it cannot represent, which these are not
    match postcard::to_io(message, &mut out) {
        Ok(_) => Bytes::from(out),
        Err(_) => Bytes::from_static(&[VERSION, KIND_MESSAGE]),
    }
}

/// Decode a bus message; a chunk's bytes are a slice of `raw`.
pub fn decode(raw: Bytes) -> Result<Decoded, DecodeError> {
    let (&version, rest) = raw.split_first().ok_or(DecodeError::Empty)?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let (&kind, body) = rest.split_first().ok_or(DecodeError::Empty)?;
    match kind {
        KIND_DATA => {
            if raw.len() < DATA_HEADER {
                return Err(DecodeError::Truncated);
            }
            let stream = u64::from_le_bytes(le8(&raw[2..10]));
            let seq = u64::from_le_bytes(le8(&raw[10..18]));
            Ok(Decoded::Data(Data {
                stream,
                seq,
                bytes: raw.slice(DATA_HEADER..),
            }))
        }
        KIND_MESSAGE => postcard::from_bytes(body)
            .map(Decoded::Message)
            .map_err(|e| DecodeError::Malformed(e.to_string())),
        other => Err(DecodeError::Kind(other)),
    }
}

fn le8(s: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    a
}

/// `Bytes` as a serde byte string (postcard writes it as length + bytes).
mod serde_bytes_compat {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let v: &[u8] = Deserialize::deserialize(d)?;
        Ok(Bytes::copy_from_slice(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_round_trips_without_copy() {
        let raw = encode_data(7, 3, b"hello");
        let Ok(Decoded::Data(d)) = decode(raw.clone()) else {
            panic!("not data")
        };
        assert_eq!((d.stream, d.seq, &d.bytes[..]), (7, 3, &b"hello"[..]));
        assert_eq!(
            d.bytes.as_ptr(),
            raw[DATA_HEADER..].as_ptr(),
            "a slice, not a copy"
        );
    }

    #[test]
    fn built_chunks_are_encoded_chunks() {
        let mut b = DataBuilder::new(8);
        b.extend(b"hel");
        b.extend(b"lo");
        assert_eq!((b.len(), b.room()), (5, 3));
        assert_eq!(b.finish(7, 3), encode_data(7, 3, b"hello"));
        assert!(b.is_empty());
        b.extend(b"x");
        assert_eq!(b.finish(7, 4), encode_data(7, 4, b"x"));
    }

    #[test]
    fn messages_round_trip() {
        let req = Message::Request(Box::new(RequestMsg {
            origin: "n1".into(),
            origin_stream: 42,
            attempt: 1,
            deadline_ms: 1_700_000_000_000,
            request_id: "abc".into(),
            tenant: "acme".into(),
            target: "app".into(),
            method: "POST".into(),
            path_and_query: "/a?b=c".into(),
            authority: "example.com".into(),
            headers: vec![("x-a".into(), b"1".to_vec())],
            body: BodyKind::Inline(Bytes::from_static(b"body")),
            upgrade: None,
        }));
        for m in [
            req,
            Message::Claim {
                origin_stream: 1,
                executor: "n2".into(),
                executor_stream: 9,
            },
            Message::Abort {
                stream: 3,
                reason: AbortReason::ConnectorLost,
            },
            Message::Presence(PresenceMsg::Leave("n3".into())),
        ] {
            assert_eq!(decode(encode(&m)), Ok(Decoded::Message(m.clone())));
        }
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(decode(Bytes::new()), Err(DecodeError::Empty));
        assert_eq!(
            decode(Bytes::from_static(&[9, 2])),
            Err(DecodeError::Version(9))
        );
        assert_eq!(
            decode(Bytes::from_static(&[VERSION, 7])),
            Err(DecodeError::Kind(7))
        );
        assert_eq!(
            decode(Bytes::from_static(&[VERSION, KIND_DATA, 1])),
            Err(DecodeError::Truncated)
        );
        assert!(matches!(
            decode(Bytes::from_static(&[VERSION, KIND_MESSAGE, 200, 200])),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn subjects() {
        let s = Subjects::new(DEFAULT_CLUSTER);
        assert_eq!(s.dispatch("acme"), "ferry.dispatch.acme");
        assert_eq!(s.inbox("n-1"), "ferry.inbox.n-1");
        assert_eq!(Subjects::new("staging").presence(), "staging.presence");
        assert_eq!(Subjects::new("staging").events(), "staging.events");
    }
}
