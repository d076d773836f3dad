//! A tunnel protocol 2 connection (docs/protocol.md §9): streams of HEAD and DATA frames over one byte stream,
//! with HTTP/2's flow control, on the frames of [`ferry_proto::frames`].
//!
//! With the frames, the first piece of issue 16's lighter tunnel: nodes and connectors do not use it yet (they
//! speak protocol 1, the reversed HTTP/2 of [`crate::server`] and [`crate::client`]). The node opens streams
//! ([`Mux::open`], odd ids, increasing); the other end takes them from the channel [`start`] returns. Each
//! [`Stream`] receives its peer's heads and body bytes in order and sends its own; DATA waits for credit (the
//! stream's window and the connection's), and credit goes back to the peer as received bytes are taken. A stream
//! dropped before both sides ended is reset (`CANCEL`); a frame the codec refuses, or a flow-control overrun of
//! the connection, ends the connection with a GOAWAY of that reason, and every stream learns it.
//!
//! Owns: the stream table, the windows of both directions, the reader and writer tasks, answering PINGs.
//! Does not own: what a head says (HTTP parsing), the handshake, keep-alive timing, draining policy.

use bytes::{Bytes, BytesMut};
use ferry_proto::frames::{data_header, Frame, Reason, Window, MAX_WINDOW};
use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The limits of one connection (both ends use the same: there is no SETTINGS frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MuxOptions {
    /// The largest frame payload sent or accepted.
    pub max_payload: u32,
    /// Each stream's window, both ways: the most one stream has in flight.
    pub stream_window: u32,
    /// The connection's window, both ways.
    pub connection_window: u32,
    /// The most streams open at once: more are refused by [`Mux::open`] on the opening side, and reset with
    /// `REFUSED` on the accepting side.
    pub max_streams: usize,
}

impl Default for MuxOptions {
    /// Protocol 1's windows (docs/protocol.md §3): 1 MiB per stream, and a connection window that covers every
    /// stream's, so that streams whose readers stopped never hold up the others.
    fn default() -> Self {
        let max_streams = 1000;
        let stream_window = 1024 * 1024;
        MuxOptions {
            max_payload: ferry_proto::frames::DEFAULT_MAX_PAYLOAD,
            stream_window,
            connection_window: (stream_window as u64 * max_streams as u64).min(MAX_WINDOW as u64)
                as u32,
            max_streams,
        }
    }
}

/// Why a stream or the connection could not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MuxError {
    #[error("the tunnel connection ended: {0}")]
    Closed(String),
    #[error("the stream was reset (reason {})", .0 .0)]
    Reset(Reason),
    #[error("{0} streams are open, the most this connection allows")]
    TooManyStreams(usize),
    #[error("the peer is going away: no new streams")]
    GoingAway,
}

/// What a stream receives from its peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An HTTP/1.1 message head; `true` when nothing follows on this stream.
    Head(Bytes, bool),
    /// Body bytes; `true` when they are the last.
    Data(Bytes, bool),
}

type Delivery = Result<Event, MuxError>;

/// One stream's entry in the table.
struct Slot {
    events: mpsc::UnboundedSender<Delivery>,
    /// Credit the peer gave for this stream's DATA.
    send: Window,
    /// The sender waiting for credit.
    waiting: Option<Waker>,
    /// Credit this end gave the peer, and what has been taken and not yet given back.
    recv: Window,
    unreleased: u32,
    sent_end: bool,
    received_end: bool,
}

struct State {
    options: MuxOptions,
    streams: HashMap<u32, Slot>,
    send: Window,
    recv: Window,
    unreleased: u32,
    next_id: u32,
    last_accepted: u32,
    closed: Option<String>,
    peer_going_away: bool,
}

struct Shared {
    state: Mutex<State>,
    out: mpsc::UnboundedSender<Out>,
}

/// What the writer task is given.
enum Out {
    Frame(Frame),
    /// The connection has ended: write what is queued, then shut the connection down.
    Close,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // a panic while holding the lock leaves no half-done update behind: every update is a few assignments
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn send(&self, frame: Frame) {
        // the writer is gone only when the connection has ended, which every stream learns from the table
        let _ = self.out.send(Out::Frame(frame));
    }

    /// Ends the connection for every stream.
    fn close(&self, why: String) {
        let mut state = self.lock();
        if state.closed.is_some() {
            return;
        }
        state.closed = Some(why.clone());
        let _ = self.out.send(Out::Close);
        for (_, slot) in state.streams.drain() {
            let _ = slot.events.send(Err(MuxError::Closed(why.clone())));
            if let Some(w) = slot.waiting {
                w.wake();
            }
        }
    }

    /// Forgets a stream and tells the peer (`reason`) that it is reset; its own halves learn it too.
    fn reset(&self, id: u32, reason: Reason) {
        if let Some(slot) = self.lock().streams.remove(&id) {
            let _ = slot.events.send(Err(MuxError::Reset(reason)));
            if let Some(w) = slot.waiting {
                w.wake();
            }
            self.send(Frame::Reset { stream: id, reason });
        }
    }

    /// `n` received bytes of stream `id` were taken by its reader: their credit goes back to the peer once half
    /// a window has gathered (one WINDOW frame per half window, not per DATA frame).
    fn release(&self, id: u32, n: usize) {
        let n = n as u32; // at most one frame's payload
        let mut frames = Vec::new();
        {
            let mut state = self.lock();
            let half_stream = state.options.stream_window / 2;
            if let Some(slot) = state.streams.get_mut(&id) {
                slot.unreleased += n;
                if slot.unreleased >= half_stream.max(1) && !slot.received_end {
                    let increment = std::mem::take(&mut slot.unreleased);
                    if slot.recv.grant(increment).is_ok() {
                        frames.push(Frame::Window {
                            stream: id,
                            increment,
                        });
                    }
                }
            }
            state.unreleased += n;
            if state.unreleased >= (state.options.connection_window / 2).max(1) {
                let increment = std::mem::take(&mut state.unreleased);
                if state.recv.grant(increment).is_ok() {
                    frames.push(Frame::Window {
                        stream: 0,
                        increment,
                    });
                }
            }
        }
        for f in frames {
            self.send(f);
        }
    }

    /// Removes a stream once both sides have ended it.
    fn settle(state: &mut State, id: u32) {
        if state
            .streams
            .get(&id)
            .is_some_and(|s| s.sent_end && s.received_end)
        {
            state.streams.remove(&id);
        }
    }
}

/// The opening side of a connection.
#[derive(Clone)]
pub struct Mux {
    shared: Arc<Shared>,
}

/// Starts the reader and writer tasks of a connection over `io`; returns the handle to open streams with and the
/// streams the peer opens.
pub fn start<IO>(io: IO, options: MuxOptions) -> (Mux, mpsc::UnboundedReceiver<Stream>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (out, frames) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            send: Window::new(options.connection_window),
            recv: Window::new(options.connection_window),
            options,
            streams: HashMap::new(),
            unreleased: 0,
            next_id: 1,
            last_accepted: 0,
            closed: None,
            peer_going_away: false,
        }),
        out,
    });
    let (accepted_tx, accepted) = mpsc::unbounded_channel();
    let (reader, writer) = tokio::io::split(io);
    let s = shared.clone();
    tokio::spawn(async move {
        let why = match write_frames(writer, frames).await {
            Ok(()) => "closed".to_owned(),
            Err(e) => format!("write failed: {e}"),
        };
        s.close(why);
    });
    let s = shared.clone();
    tokio::spawn(async move {
        let why = match read_frames(reader, &s, accepted_tx).await {
            Ok(()) => "the peer closed the connection".to_owned(),
            Err(e) => e,
        };
        s.close(why);
    });
    (Mux { shared }, accepted)
}

impl Mux {
    /// Opens a stream with its first head; `end` when no body follows.
    pub fn open(&self, head: Bytes, end: bool) -> Result<Stream, MuxError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = {
            let mut state = self.shared.lock();
            if let Some(why) = &state.closed {
                return Err(MuxError::Closed(why.clone()));
            }
            if state.peer_going_away {
                return Err(MuxError::GoingAway);
            }
            if state.streams.len() >= state.options.max_streams {
                return Err(MuxError::TooManyStreams(state.streams.len()));
            }
            let id = state.next_id;
            state.next_id += 2;
            let slot = new_slot(&state.options, tx);
            state.streams.insert(
                id,
                Slot {
                    sent_end: end,
                    ..slot
                },
            );
            id
        };
        self.shared.send(Frame::Head {
            stream: id,
            end_stream: end,
            head,
        });
        Ok(Stream::new(id, self.shared.clone(), rx, end))
    }

    /// Tells the peer to open no new streams; those open go on.
    pub fn go_away(&self, reason: Reason) {
        let last_stream = self.shared.lock().last_accepted;
        self.shared.send(Frame::GoAway {
            last_stream,
            reason,
        });
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }
}

fn new_slot(options: &MuxOptions, events: mpsc::UnboundedSender<Delivery>) -> Slot {
    Slot {
        events,
        send: Window::new(options.stream_window),
        waiting: None,
        recv: Window::new(options.stream_window),
        unreleased: 0,
        sent_end: false,
        received_end: false,
    }
}

/// One stream: what the peer sends on it ([`StreamReceiver`]) and the means to send on it ([`StreamSender`]),
/// which [`Stream::split`] parts so that a body can be sent while the answer arrives.
pub struct Stream {
    sender: StreamSender,
    receiver: StreamReceiver,
}

/// The sending half of a stream.
pub struct StreamSender {
    end: Arc<StreamEnd>,
}

/// The receiving half of a stream.
pub struct StreamReceiver {
    end: Arc<StreamEnd>,
    events: mpsc::UnboundedReceiver<Delivery>,
}

/// What both halves share; when the last half goes, a stream not ended both ways is reset (`CANCEL`).
struct StreamEnd {
    id: u32,
    shared: Arc<Shared>,
    sent_end: AtomicBool,
    received_end: AtomicBool,
    failed: AtomicBool,
}

impl Drop for StreamEnd {
    fn drop(&mut self) {
        let ended =
            self.sent_end.load(Ordering::Relaxed) && self.received_end.load(Ordering::Relaxed);
        if !ended && !self.failed.load(Ordering::Relaxed) {
            self.shared.reset(self.id, Reason::CANCEL);
        }
    }
}

impl Stream {
    fn new(
        id: u32,
        shared: Arc<Shared>,
        events: mpsc::UnboundedReceiver<Delivery>,
        sent_end: bool,
    ) -> Self {
        let end = Arc::new(StreamEnd {
            id,
            shared,
            sent_end: AtomicBool::new(sent_end),
            received_end: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        });
        Stream {
            sender: StreamSender { end: end.clone() },
            receiver: StreamReceiver { end, events },
        }
    }

    /// The stream's id.
    pub fn id(&self) -> u32 {
        self.sender.end.id
    }

    /// See [`StreamReceiver::recv`].
    pub async fn recv(&mut self) -> Option<Result<Event, MuxError>> {
        self.receiver.recv().await
    }

    /// See [`StreamSender::send_head`].
    pub fn send_head(&self, head: Bytes, end: bool) -> Result<(), MuxError> {
        self.sender.send_head(head, end)
    }

    /// See [`StreamSender::send_data`].
    pub async fn send_data(&self, data: Bytes, end: bool) -> Result<(), MuxError> {
        self.sender.send_data(data, end).await
    }

    /// See [`StreamSender::reset`].
    pub fn reset(self, reason: Reason) {
        self.sender.reset(reason);
    }

    /// The two halves, to send and receive at once.
    pub fn split(self) -> (StreamSender, StreamReceiver) {
        (self.sender, self.receiver)
    }
}

impl StreamReceiver {
    /// The next head or body bytes from the peer; `None` after the last. Taking body bytes gives their credit
    /// back to the peer.
    pub async fn recv(&mut self) -> Option<Result<Event, MuxError>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`recv`](Self::recv) as a poll, for a body type to call from its own `poll_frame`.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event, MuxError>>> {
        let end = &self.end;
        if end.received_end.load(Ordering::Relaxed) || end.failed.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        let Some(delivery) = ready!(self.events.poll_recv(cx)) else {
            return Poll::Ready(None);
        };
        match &delivery {
            Ok(Event::Data(data, last)) => {
                end.shared.release(end.id, data.len());
                end.received_end.store(*last, Ordering::Relaxed);
            }
            Ok(Event::Head(_, last)) => end.received_end.store(*last, Ordering::Relaxed),
            Err(_) => end.failed.store(true, Ordering::Relaxed),
        }
        Poll::Ready(Some(delivery))
    }
}

impl StreamSender {
    /// Sends a head (an answer, or an interim answer); heads take no credit.
    pub fn send_head(&self, head: Bytes, end: bool) -> Result<(), MuxError> {
        self.check_open()?;
        if end {
            self.mark_sent_end();
        }
        self.end.shared.send(Frame::Head {
            stream: self.end.id,
            end_stream: end,
            head,
        });
        Ok(())
    }

    /// Sends body bytes, in frames as large as the credit and the frame limit allow, waiting for credit.
    pub async fn send_data(&self, mut data: Bytes, end: bool) -> Result<(), MuxError> {
        let (id, shared) = (self.end.id, &self.end.shared);
        loop {
            let chunk = poll_fn(|cx| {
                let mut state = shared.lock();
                if let Some(why) = &state.closed {
                    return Poll::Ready(Err(MuxError::Closed(why.clone())));
                }
                let max_payload = state.options.max_payload;
                let conn_credit = state.send.credit();
                let Some(slot) = state.streams.get_mut(&id) else {
                    return Poll::Ready(Err(MuxError::Reset(Reason::CANCEL)));
                };
                if data.is_empty() {
                    return Poll::Ready(Ok(Bytes::new()));
                }
                let credit = slot.send.credit().min(conn_credit).min(max_payload) as usize;
                if credit == 0 {
                    slot.waiting = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                let n = credit.min(data.len());
                // both windows hold at least n: taking cannot fail
                let _ = slot.send.take(n);
                let _ = state.send.take(n);
                Poll::Ready(Ok(data.split_to(n)))
            })
            .await?;
            let last = data.is_empty();
            if last && end {
                self.mark_sent_end();
            }
            shared.send(Frame::Data {
                stream: id,
                end_stream: last && end,
                data: chunk,
            });
            if last {
                return Ok(());
            }
        }
    }

    /// Gives the stream up: the peer learns `reason`.
    pub fn reset(self, reason: Reason) {
        self.end.failed.store(true, Ordering::Relaxed);
        self.end.shared.reset(self.end.id, reason);
    }

    fn check_open(&self) -> Result<(), MuxError> {
        let state = self.end.shared.lock();
        if let Some(why) = &state.closed {
            return Err(MuxError::Closed(why.clone()));
        }
        if !state.streams.contains_key(&self.end.id) {
            return Err(MuxError::Reset(Reason::CANCEL));
        }
        Ok(())
    }

    fn mark_sent_end(&self) {
        self.end.sent_end.store(true, Ordering::Relaxed);
        let mut state = self.end.shared.lock();
        if let Some(slot) = state.streams.get_mut(&self.end.id) {
            slot.sent_end = true;
        }
        Shared::settle(&mut state, self.end.id);
    }
}

/// Writes queued frames, as many as are waiting in one write; a large DATA payload is written from where it
/// lies instead of being copied behind its header.
async fn write_frames<W: AsyncWrite>(
    writer: W,
    mut frames: mpsc::UnboundedReceiver<Out>,
) -> std::io::Result<()> {
    const COPY_LIMIT: usize = 16 * 1024;
    tokio::pin!(writer);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut closing = false;
    while let Some(first) = frames.recv().await {
        let mut next = Some(first);
        while let Some(out) = next {
            let frame = match out {
                Out::Frame(frame) => frame,
                Out::Close => {
                    closing = true;
                    break;
                }
            };
            match frame {
                Frame::Data {
                    stream,
                    end_stream,
                    data,
                } if data.len() > COPY_LIMIT => {
                    buf.extend_from_slice(&data_header(stream, end_stream, data.len()));
                    writer.write_all(&buf).await?;
                    buf.clear();
                    writer.write_all(&data).await?;
                }
                other => other.encode(&mut buf),
            }
            next = frames.try_recv().ok();
        }
        if !buf.is_empty() {
            writer.write_all(&buf).await?;
            buf.clear();
        }
        writer.flush().await?;
        if closing {
            return writer.shutdown().await;
        }
    }
    Ok(())
}

/// Reads frames until the connection ends; an `Err` says why it ended badly.
async fn read_frames<R: AsyncRead>(
    reader: R,
    shared: &Arc<Shared>,
    accepted: mpsc::UnboundedSender<Stream>,
) -> Result<(), String> {
    tokio::pin!(reader);
    let max_payload = shared.lock().options.max_payload;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            match Frame::decode(&mut buf, max_payload) {
                Ok(Some(frame)) => {
                    if let Err((reason, why)) = on_frame(shared, frame, &accepted) {
                        return Err(connection_error(shared, reason, why));
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let why = format!("the peer sent a frame that is not allowed: {error}");
                    return Err(connection_error(shared, Reason::of(&error), why));
                }
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}

/// A frame that ends the connection: the peer is told why with a GOAWAY.
fn connection_error(shared: &Shared, reason: Reason, why: String) -> String {
    let last_stream = shared.lock().last_accepted;
    shared.send(Frame::GoAway {
        last_stream,
        reason,
    });
    why
}

/// A frame that breaks the connection's rules: the GOAWAY reason and what to log.
type Broken = (Reason, String);

fn on_frame(
    shared: &Arc<Shared>,
    frame: Frame,
    accepted: &mpsc::UnboundedSender<Stream>,
) -> Result<(), Broken> {
    match frame {
        Frame::Head {
            stream,
            end_stream,
            head,
        } => {
            let mut state = shared.lock();
            if let Some(slot) = state.streams.get_mut(&stream) {
                slot.received_end |= end_stream;
                let _ = slot.events.send(Ok(Event::Head(head, end_stream)));
                Shared::settle(&mut state, stream);
                return Ok(());
            }
            // a new stream: odd ids, each above the last (a HEAD for a stream this end has reset is dropped)
            if stream % 2 == 0 || stream <= state.last_accepted {
                return Ok(());
            }
            state.last_accepted = stream;
            if state.streams.len() >= state.options.max_streams {
                drop(state);
                shared.send(Frame::Reset {
                    stream,
                    reason: Reason::REFUSED,
                });
                return Ok(());
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let mut slot = new_slot(&state.options, tx);
            slot.received_end = end_stream;
            let _ = slot.events.send(Ok(Event::Head(head, end_stream)));
            state.streams.insert(stream, slot);
            drop(state);
            let s = Stream::new(stream, shared.clone(), rx, false);
            if let Err(refused) = accepted.send(s) {
                // nobody takes streams on this end
                refused.0.reset(Reason::REFUSED);
            }
        }
        Frame::Data {
            stream,
            end_stream,
            data,
        } => {
            let n = data.len();
            let mut state = shared.lock();
            if let Err(e) = state.recv.take(n) {
                return Err((
                    Reason::FLOW_CONTROL,
                    format!("the peer overran the connection's window: {e}"),
                ));
            }
            let overrun = match state.streams.get_mut(&stream) {
                Some(slot) => {
                    if slot.recv.take(n).is_err() {
                        true
                    } else {
                        slot.received_end |= end_stream;
                        let _ = slot.events.send(Ok(Event::Data(data, end_stream)));
                        Shared::settle(&mut state, stream);
                        false
                    }
                }
                None => {
                    // a stream this end no longer has: its bytes still count, and their credit goes back
                    drop(state);
                    shared.release(0, n);
                    return Ok(());
                }
            };
            drop(state);
            if overrun {
                shared.reset(stream, Reason::FLOW_CONTROL);
            }
        }
        Frame::Reset { stream, reason } => {
            if let Some(slot) = shared.lock().streams.remove(&stream) {
                let _ = slot.events.send(Err(MuxError::Reset(reason)));
                if let Some(w) = slot.waiting {
                    w.wake();
                }
            }
        }
        Frame::Window {
            stream: 0,
            increment,
        } => {
            let mut state = shared.lock();
            if let Err(e) = state.send.grant(increment) {
                return Err((
                    Reason::FLOW_CONTROL,
                    format!("the peer granted too much: {e}"),
                ));
            }
            for slot in state.streams.values_mut() {
                if let Some(w) = slot.waiting.take() {
                    w.wake();
                }
            }
        }
        Frame::Window { stream, increment } => {
            let granted = shared.lock().streams.get_mut(&stream).map(|slot| {
                let ok = slot.send.grant(increment).is_ok();
                if let Some(w) = slot.waiting.take() {
                    w.wake();
                }
                ok
            });
            if granted == Some(false) {
                shared.reset(stream, Reason::FLOW_CONTROL);
            }
        }
        Frame::Ping {
            ack: false,
            payload,
        } => shared.send(Frame::Ping { ack: true, payload }),
        Frame::Ping { ack: true, .. } => {}
        Frame::GoAway { .. } => shared.lock().peer_going_away = true,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{DuplexStream, ReadHalf, WriteHalf};

    const WAIT: Duration = Duration::from_secs(5);

    fn pair(options: MuxOptions) -> (Mux, mpsc::UnboundedReceiver<Stream>) {
        let (a, b) = tokio::io::duplex(256 * 1024);
        let (node, _none) = start(a, options.clone());
        let (_unused, accepted) = start(b, options);
        (node, accepted)
    }

    async fn next(stream: &mut Stream) -> Result<Event, MuxError> {
        tokio::time::timeout(WAIT, stream.recv())
            .await
            .expect("in time")
            .expect("an event")
    }

    async fn accept(accepted: &mut mpsc::UnboundedReceiver<Stream>) -> Stream {
        tokio::time::timeout(WAIT, accepted.recv())
            .await
            .expect("in time")
            .expect("a stream")
    }

    type RawPeer = (ReadHalf<DuplexStream>, WriteHalf<DuplexStream>);

    /// A connection whose peer is raw bytes, for writing frames by hand and reading what this end sends.
    fn raw_peer(options: MuxOptions) -> (Mux, mpsc::UnboundedReceiver<Stream>, RawPeer) {
        let (raw, ours) = tokio::io::duplex(64 * 1024);
        let (mux, accepted) = start(ours, options);
        (mux, accepted, tokio::io::split(raw))
    }

    /// The next whole frame a raw peer reads, within [`WAIT`].
    async fn next_frame(read: &mut (impl AsyncRead + Unpin), seen: &mut BytesMut) -> Frame {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(frame) = Frame::decode(seen, u32::MAX).expect("valid") {
                    return frame;
                }
                assert!(
                    read.read_buf(seen).await.expect("read") > 0,
                    "the connection ended"
                );
            }
        })
        .await
        .expect("in time")
    }

    #[tokio::test]
    async fn a_request_and_its_answer_cross_with_their_bodies() {
        let (node, mut accepted) = pair(MuxOptions::default());
        let mut request = node
            .open(Bytes::from_static(b"POST /x HTTP/1.1\r\n\r\n"), false)
            .expect("open");
        request
            .send_data(Bytes::from_static(b"body"), true)
            .await
            .expect("sent");
        let mut served = accept(&mut accepted).await;
        assert_eq!(
            next(&mut served).await,
            Ok(Event::Head(
                Bytes::from_static(b"POST /x HTTP/1.1\r\n\r\n"),
                false
            ))
        );
        assert_eq!(
            next(&mut served).await,
            Ok(Event::Data(Bytes::from_static(b"body"), true))
        );
        assert!(served.recv().await.is_none(), "nothing after the end");
        served
            .send_head(Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n"), false)
            .expect("head");
        served
            .send_data(Bytes::from_static(b"ok"), true)
            .await
            .expect("answer");
        assert_eq!(
            next(&mut request).await,
            Ok(Event::Head(
                Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n"),
                false
            ))
        );
        assert_eq!(
            next(&mut request).await,
            Ok(Event::Data(Bytes::from_static(b"ok"), true))
        );
        // both ends ended: the streams left the tables, and dropping them resets nothing
        drop((request, served));
        let second = node
            .open(Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"), true)
            .expect("open");
        assert_eq!(second.id(), 3);
        let mut served = accept(&mut accepted).await;
        assert_eq!(
            next(&mut served).await,
            Ok(Event::Head(
                Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"),
                true
            ))
        );
    }

    #[tokio::test]
    async fn a_sender_waits_for_credit_and_never_overruns_a_window() {
        let options = MuxOptions {
            stream_window: 16,
            connection_window: 1024,
            ..MuxOptions::default()
        };
        let (node, mut accepted) = pair(options);
        let request = node
            .open(Bytes::from_static(b"PUT / HTTP/1.1\r\n\r\n"), false)
            .expect("open");
        let body: Bytes = (0..100u8).collect::<Vec<_>>().into();
        let expected = body.clone();
        let sending = tokio::spawn(async move {
            request.send_data(body, true).await.expect("sent");
            request
        });
        let mut served = accept(&mut accepted).await;
        assert!(matches!(next(&mut served).await, Ok(Event::Head(..))));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !sending.is_finished(),
            "100 bytes cannot go against a window of 16 nobody reads"
        );
        let mut got = Vec::new();
        loop {
            match next(&mut served).await.expect("data") {
                Event::Data(data, end) => {
                    assert!(
                        data.len() <= 16,
                        "a frame of {} bytes against a window of 16",
                        data.len()
                    );
                    got.extend_from_slice(&data);
                    if end {
                        break;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, expected);
        tokio::time::timeout(WAIT, sending)
            .await
            .expect("in time")
            .expect("sender");
    }

    #[tokio::test]
    async fn a_stream_dropped_early_is_reset_for_its_peer() {
        let (node, mut accepted) = pair(MuxOptions::default());
        let mut request = node
            .open(Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"), true)
            .expect("open");
        let served = accept(&mut accepted).await;
        drop(served);
        assert_eq!(
            next(&mut request).await,
            Err(MuxError::Reset(Reason::CANCEL))
        );
        assert!(request.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_frame_too_large_ends_the_connection_with_a_goaway() {
        let (node, _accepted, (mut raw_read, mut raw_write)) = raw_peer(MuxOptions::default());
        let mut open = node
            .open(Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"), true)
            .expect("open");
        let mut header = ferry_proto::frames::data_header(1, false, 0).to_vec();
        header[8..].copy_from_slice(&(ferry_proto::frames::DEFAULT_MAX_PAYLOAD + 1).to_be_bytes());
        raw_write.write_all(&header).await.expect("write");
        assert!(matches!(next(&mut open).await, Err(MuxError::Closed(_))));
        assert!(node.is_closed());
        // what the peer read: our HEAD, then a GOAWAY saying why
        let mut seen = BytesMut::new();
        let goaway = loop {
            if let Frame::GoAway { reason, .. } = next_frame(&mut raw_read, &mut seen).await {
                break reason;
            }
        };
        assert_eq!(goaway, Reason::FRAME_SIZE);
        assert!(matches!(
            node.open(Bytes::new(), true),
            Err(MuxError::Closed(_))
        ));
    }

    #[tokio::test]
    async fn pings_are_answered_and_a_goaway_stops_new_streams() {
        let (node, _accepted, (mut raw_read, mut raw_write)) = raw_peer(MuxOptions::default());
        let mut out = BytesMut::new();
        Frame::Ping {
            ack: false,
            payload: *b"ferry-02",
        }
        .encode(&mut out);
        Frame::GoAway {
            last_stream: 0,
            reason: Reason::NO_ERROR,
        }
        .encode(&mut out);
        raw_write.write_all(&out).await.expect("write");
        let pong = next_frame(&mut raw_read, &mut BytesMut::new()).await;
        assert_eq!(
            pong,
            Frame::Ping {
                ack: true,
                payload: *b"ferry-02"
            }
        );
        assert!(matches!(
            node.open(Bytes::new(), true),
            Err(MuxError::GoingAway)
        ));
    }

    #[tokio::test]
    async fn many_streams_echo_their_bodies_through_small_windows() {
        let options = MuxOptions {
            max_payload: 1024,
            stream_window: 4 * 1024,
            connection_window: 16 * 1024,
            max_streams: 64,
        };
        let (node, mut accepted) = pair(options);
        // the serving end echoes every body back as it arrives
        tokio::spawn(async move {
            while let Some(mut served) = accepted.recv().await {
                tokio::spawn(async move {
                    let _head = served.recv().await;
                    served
                        .send_head(Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n"), false)
                        .expect("head");
                    while let Some(Ok(Event::Data(data, end))) = served.recv().await {
                        served.send_data(data, end).await.expect("echo");
                        if end {
                            break;
                        }
                    }
                });
            }
        });
        let mut clients = Vec::new();
        for i in 0..32u8 {
            let stream = node
                .open(Bytes::from_static(b"POST / HTTP/1.1\r\n\r\n"), false)
                .expect("open");
            let body: Bytes = vec![i; 64 * 1024].into();
            clients.push(tokio::spawn(async move {
                let expected = body.clone();
                let (sender, mut receiver) = stream.split();
                // send and read at once: the echo cannot go on unless this end reads while it sends
                let sending = async move { sender.send_data(body, true).await.expect("sent") };
                let reading = async move {
                    let mut got = Vec::new();
                    assert!(matches!(receiver.recv().await, Some(Ok(Event::Head(..)))));
                    while let Some(event) = receiver.recv().await {
                        match event.expect("data") {
                            Event::Data(data, end) => {
                                got.extend_from_slice(&data);
                                if end {
                                    break;
                                }
                            }
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    got
                };
                let ((), got) = tokio::join!(sending, reading);
                assert_eq!(got, expected);
            }));
        }
        for c in clients {
            tokio::time::timeout(WAIT * 4, c)
                .await
                .expect("in time")
                .expect("client");
        }
    }

    #[tokio::test]
    async fn streams_past_the_limit_are_refused_by_the_accepting_end() {
        let options = MuxOptions {
            max_streams: 1,
            ..MuxOptions::default()
        };
        let (_mux, mut accepted, (mut raw_read, mut raw_write)) = raw_peer(options);
        let mut out = BytesMut::new();
        for stream in [1, 3] {
            Frame::Head {
                stream,
                end_stream: false,
                head: Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"),
            }
            .encode(&mut out);
        }
        raw_write.write_all(&out).await.expect("write");
        let first = accept(&mut accepted).await;
        assert_eq!(first.id(), 1);
        let refused = next_frame(&mut raw_read, &mut BytesMut::new()).await;
        assert_eq!(
            refused,
            Frame::Reset {
                stream: 3,
                reason: Reason::REFUSED
            }
        );
    }
}
