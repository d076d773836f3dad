//! Bodies between nodes: a body is cut into ordered chunks of at most [`CHUNK`] bytes, and the sender never has
//! more than [`WINDOW`] chunks that the receiver has not consumed yet (credit-based flow control, both ways).
//!
//! The receiver consumes a chunk when hyper takes it to write to its peer (a client, a tunnel), so a slow reader
//! at either end holds back the sender at the other, and each node holds at most `WINDOW × CHUNK` bytes (1 MiB)
//! per stream and direction, whatever the body's size. Credits are cumulative: a lost credit is made good by the
//! next one.

use super::streams::{CreditState, Inbound, Registration};
use bytes::Bytes;
use ferry_bus::Bus;
use ferry_http::BoxError;
use ferry_proto::cluster::{self, AbortReason, Header, Message};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, watch};

/// Largest chunk on the bus (smaller when the broker's largest message is smaller: [`chunk_size`]). A body's
/// frames are gathered into chunks of up to this size while they come faster than the bus takes them; a frame
/// that is not followed at once by another goes out at once (an event stream's events are not held back). Chunks
/// of 256 KiB instead of one message per frame (16 KiB, often) cut the broker's work for bulk bodies by 4 to 16×.
pub(crate) const CHUNK: usize = 256 * 1024;
/// Chunks a sender may have in flight beyond what the receiver consumed: 4 MiB per stream and direction at most.
pub(crate) const WINDOW: u64 = 16;

/// The chunk size on `bus`: [`CHUNK`], or less to fit the broker's largest message with the chunk's header.
pub(crate) fn chunk_size(bus: &dyn Bus) -> usize {
    CHUNK
        .min(bus.max_payload().saturating_sub(cluster::DATA_HEADER + 64))
        .max(4096)
}

/// The other end of a stream: where its messages go.
#[derive(Clone)]
pub(crate) struct Peer {
    pub bus: Arc<dyn Bus>,
    /// The peer node's inbox subject.
    pub inbox: String,
    /// The peer's id of the stream.
    pub stream: u64,
}

impl Peer {
    pub async fn send(&self, message: &Message) -> Result<(), ferry_bus::BusError> {
        self.bus
            .publish(&self.inbox, cluster::encode(message))
            .await
    }

    /// Send without waiting (from places that cannot wait: a drop, a poll).
    pub fn send_later(&self, message: Message) {
        let peer = self.clone();
        tokio::spawn(async move {
            if let Err(error) = peer.send(&message).await {
                tracing::debug!(%error, "cluster message not sent");
            }
        });
    }

    pub fn abort_later(&self, reason: AbortReason) {
        self.send_later(Message::Abort {
            stream: self.stream,
            reason,
        });
    }
}

/// Why [`send_body`] stopped before the end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendBodyError {
    /// The body being read failed (the peer was told with an abort).
    #[error("body: {0}")]
    Body(BoxError),
    /// The receiver cut the stream, or its node went away.
    #[error("the stream was cut: {0:?}")]
    Cut(AbortReason),
    #[error("bus: {0}")]
    Bus(#[from] ferry_bus::BusError),
}

/// Wait until the credit allows chunk `seq` to be sent, or the stream is cut.
async fn wait_credit(
    credit: &mut watch::Receiver<CreditState>,
    seq: u64,
) -> Result<(), SendBodyError> {
    loop {
        let state = *credit.borrow_and_update();
        if let Some(reason) = state.cut {
            return Err(SendBodyError::Cut(reason));
        }
        if seq < state.consumed + WINDOW {
            return Ok(());
        }
        if credit.changed().await.is_err() {
            return Err(SendBodyError::Cut(AbortReason::Cancelled));
        }
    }
}

/// Send `body` to `peer` as chunks within the credit, then its end (with trailers). A failing body is reported to
/// the peer as `on_error`. Returns the number of chunks sent.
pub(crate) async fn send_body<B>(
    peer: &Peer,
    body: B,
    credit: &mut watch::Receiver<CreditState>,
    on_error: AbortReason,
) -> Result<u64, SendBodyError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    use futures_util::FutureExt;
    use http_body_util::BodyExt;
    let mut body = std::pin::pin!(body);
    let mut seq = 0u64;
    let mut trailers = Vec::new();
    let chunk = chunk_size(&*peer.bus);
    let mut out = cluster::DataBuilder::new(chunk);
    loop {
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                // nothing more right now: what is gathered goes out before the wait
                if !out.is_empty() {
                    flush(peer, &mut out, &mut seq, credit).await?;
                }
                // a cut stream stops the wait for the next frame too (an event stream quiet for minutes)
                tokio::select! {
                    frame = body.frame() => frame,
                    cut = wait_cut(credit) => return Err(SendBodyError::Cut(cut)),
                }
            }
        };
        match frame {
            None => break,
            Some(Err(error)) => {
                peer.abort_later(on_error);
                return Err(SendBodyError::Body(error.into()));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let mut data: &[u8] = &data;
                    while !data.is_empty() {
                        let take = out.room().min(data.len());
                        out.extend(&data[..take]);
                        data = &data[take..];
                        if out.room() == 0 {
                            flush(peer, &mut out, &mut seq, credit).await?;
                        }
                    }
                }
                Err(frame) => {
                    if let Ok(map) = frame.into_trailers() {
                        trailers = to_wire(&map);
                    }
                }
            },
        }
    }
    if !out.is_empty() {
        flush(peer, &mut out, &mut seq, credit).await?;
    }
    peer.send(&Message::End {
        stream: peer.stream,
        chunks: seq,
        trailers,
    })
    .await?;
    Ok(seq)
}

/// Send the gathered chunk as number `seq` once the credit allows it.
async fn flush(
    peer: &Peer,
    out: &mut cluster::DataBuilder,
    seq: &mut u64,
    credit: &mut watch::Receiver<CreditState>,
) -> Result<(), SendBodyError> {
    wait_credit(credit, *seq).await?;
    peer.bus
        .publish(&peer.inbox, out.finish(peer.stream, *seq))
        .await?;
    *seq += 1;
    Ok(())
}

/// Resolves when the stream is cut (never otherwise).
pub(crate) async fn wait_cut(credit: &mut watch::Receiver<CreditState>) -> AbortReason {
    let mut credit = credit.clone();
    loop {
        if let Some(reason) = credit.borrow_and_update().cut {
            return reason;
        }
        if credit.changed().await.is_err() {
            return AbortReason::Cancelled;
        }
    }
}

/// A body of what `read` yields until its end, in chunks of at most [`CHUNK`].
pub(crate) fn reader_body<R>(read: R) -> impl HttpBody<Data = Bytes, Error = std::io::Error>
where
    R: tokio::io::AsyncRead + Send + 'static,
{
    use futures_util::StreamExt;
    http_body_util::StreamBody::new(
        tokio_util::io::ReaderStream::with_capacity(read, CHUNK).map(|r| r.map(Frame::data)),
    )
}

/// Write every data frame of `body` to `write`, then shut `write` down. Returns the bytes written.
pub(crate) async fn write_body<W>(body: RemoteBody, mut write: W) -> Result<u64, BoxError>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    let mut body = std::pin::pin!(body);
    let mut written = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            write.write_all(&data).await?;
            written += data.len() as u64;
        }
    }
    write.shutdown().await?;
    Ok(written)
}

/// Headers as sent on the bus.
pub(crate) fn to_wire(headers: &HeaderMap) -> Vec<Header> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

/// Headers from the bus; invalid names or values (a peer bug) are left out.
pub(crate) fn from_wire(headers: Vec<Header>) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// A body arriving from another node as chunks: checks their order, gives credit as hyper consumes them, fails on
/// an abort or the peer's death, and tells the peer to stop when dropped before its end, unless every byte its
/// head declared (`Content-Length`) was taken: hyper drops a request body once the answer is complete, which can
/// be before the body's `End` message arrives, and a cut then would reach the peer before the answer and fail a
/// request that succeeded.
pub(crate) struct RemoteBody {
    rx: mpsc::UnboundedReceiver<Inbound>,
    _reg: Arc<Registration>,
    peer: Peer,
    expected: u64,
    credited: u64,
    done: bool,
    /// The length the head declared, if it did.
    declared: Option<u64>,
    /// Bytes handed to hyper so far.
    taken: u64,
    /// Held until the body ends or is dropped (in-flight counts, statistics).
    _guard: Option<Box<dyn Send + Sync>>,
}

impl RemoteBody {
    pub fn new(
        rx: mpsc::UnboundedReceiver<Inbound>,
        reg: Arc<Registration>,
        peer: Peer,
        guard: Option<Box<dyn Send + Sync>>,
    ) -> Self {
        Self {
            rx,
            _reg: reg,
            peer,
            expected: 0,
            credited: 0,
            done: false,
            declared: None,
            taken: 0,
            _guard: guard,
        }
    }

    /// The body's length as its head declared it (`Content-Length`): once that many bytes were taken, dropping
    /// the body cuts nothing.
    pub fn with_declared_length(mut self, declared: Option<u64>) -> Self {
        self.declared = declared;
        self
    }

    fn fail(&mut self, message: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        Poll::Ready(Some(Err(message.into())))
    }
}

impl HttpBody for RemoteBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            let message = match this.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return this.fail("the cross-node stream closed".into()),
                Poll::Ready(Some(m)) => m,
            };
            match message {
                Inbound::Data(d) => {
                    if d.seq != this.expected {
                        this.peer.abort_later(AbortReason::Protocol);
                        return this.fail(format!(
                            "chunk {} arrived where {} was due",
                            d.seq, this.expected
                        ));
                    }
                    this.expected += 1;
                    this.taken += d.bytes.len() as u64;
                    if this.expected - this.credited >= WINDOW / 2 {
                        this.credited = this.expected;
                        this.peer.send_later(Message::Credit {
                            stream: this.peer.stream,
                            consumed: this.expected,
                        });
                    }
                    return Poll::Ready(Some(Ok(Frame::data(d.bytes))));
                }
                Inbound::End { chunks, trailers } => {
                    if chunks != this.expected {
                        return this.fail(format!(
                            "the body ended after {} of its {chunks} chunks",
                            this.expected
                        ));
                    }
                    this.done = true;
                    if trailers.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::trailers(from_wire(trailers)))));
                }
                Inbound::Abort(reason) => {
                    this.done = true;
                    return Poll::Ready(Some(
                        Err(format!("the stream was cut: {reason:?}").into()),
                    ));
                }
                Inbound::PeerGone => {
                    this.done = true;
                    return Poll::Ready(Some(Err("the node at the other end went away".into())));
                }
                // late claims and the like: not for a body
                _ => continue,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for RemoteBody {
    fn drop(&mut self) {
        let all_taken = self.declared.is_some_and(|n| self.taken >= n);
        if !self.done && !all_taken {
            self.peer.abort_later(AbortReason::Cancelled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::streams::Streams;
    use ferry_proto::cluster::{Data, Decoded};

    /// A body of `declared` bytes in `chunks` chunks, received and taken by hyper, then dropped before its `End`
    /// message: what arrives at the peer's inbox within a short wait.
    async fn drop_after_taking(declared: Option<u64>, chunks: &[&'static [u8]]) -> Option<Message> {
        let bus: Arc<dyn Bus> = Arc::new(ferry_bus::MemoryBus::new());
        let mut inbox = bus.subscribe("origin-inbox").await.expect("subscribe");
        let streams = Arc::new(Streams::default());
        let handle = streams.open(Some("origin".into()));
        let peer = Peer {
            bus: bus.clone(),
            inbox: "origin-inbox".into(),
            stream: 7,
        };
        let mut body =
            RemoteBody::new(handle.rx, handle.reg, peer, None).with_declared_length(declared);
        for (seq, bytes) in chunks.iter().enumerate() {
            let data = Data {
                stream: handle.id,
                seq: seq as u64,
                bytes: Bytes::from_static(bytes),
            };
            assert!(streams.deliver(handle.id, Inbound::Data(data)));
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            assert!(matches!(frame, Some(Ok(f)) if f.is_data()));
        }
        drop(body);
        match tokio::time::timeout(std::time::Duration::from_millis(300), inbox.next()).await {
            Ok(Some(raw)) => match cluster::decode(raw).expect("decodes") {
                Decoded::Message(m) => Some(m),
                Decoded::Data(_) => panic!("a body chunk went back"),
            },
            _ => None,
        }
    }

    /// The links-off uploads that failed as `connector_lost` (docs/performance.md, "Relay across nodes"): a
    /// request body whose every declared byte was taken is complete, so dropping it before `End` cuts nothing.
    #[tokio::test]
    async fn a_body_taken_to_its_declared_length_is_not_cut_when_dropped() {
        let sent = drop_after_taking(Some(10), &[b"hello", b"world"]).await;
        assert!(sent.is_none(), "nothing to the peer: {sent:?}");
    }

    /// A body dropped before all it declared (or with no length declared) still tells the peer to stop.
    #[tokio::test]
    async fn a_body_dropped_short_of_its_end_is_cut() {
        for declared in [Some(11), None] {
            let sent = drop_after_taking(declared, &[b"hello", b"world"]).await;
            assert!(
                matches!(
                    sent,
                    Some(Message::Abort {
                        stream: 7,
                        reason: AbortReason::Cancelled
                    })
                ),
                "{declared:?}: {sent:?}"
            );
        }
    }
}
