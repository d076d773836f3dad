//! A tunnel protocol 2 connection (docs/protocol.md §9): streams of HEAD and DATA frames over one byte stream,
//! with HTTP/2's flow control, on the frames of [`ferry_proto::frames`].
//!
//! With the frames, the first piece of issue 16's lighter tunnel: nodes and connectors do not use it yet (they
//! speak protocol 1, the reversed HTTP/2 of [`crate::server`] and [`crate::client`]). The node opens streams
//! ([`Mux::open`], odd ids, increasing); the other end takes them from the channel [`start`] returns. Each
//! [`Stream`] receives its peer's heads and body bytes in order and sends its own; DATA waits for credit (the
//! stream's window and the connection's), and credit goes back to the peer as received bytes are taken. A stream
//! dropped before both sides ended is reset (`CANCEL`); a stream whose peer breaks its order (anything after the
//! peer ended it, a head after DATA that does not end the stream, more than [`MAX_HEADS`] heads) is reset
//! (`PROTOCOL`); a frame the codec refuses, or a flow-control overrun of the connection, ends the connection with
//! a GOAWAY of that reason, and every stream learns it. Each end sends a PING every
//! [`MuxOptions::keepalive_interval`] (unless zero) and closes a connection whose peer sent nothing for
//! [`MuxOptions::keepalive_timeout`] after one. After this end's GOAWAY ([`Mux::go_away`]) the streams its peer
//! opens are refused (`REFUSED`); after the peer's, [`Mux::open`] fails and this end's streams the peer did not
//! take fail as refused, both so that their requests can go to another connection.
//!
//! Owns: the stream table, the windows of both directions, the reader, writer and keep-alive tasks, answering
//! PINGs, the order of each stream's frames, refusing streams after a GOAWAY.
//! Does not own: what a head says (HTTP parsing), the handshake, when to drain and how long to wait for the
//! streams left (the caller: [`Mux::go_away`], [`Mux::open_streams`], [`Mux::close`]).

use bytes::{Bytes, BytesMut};
use ferry_proto::frames::{data_header, Frame, Reason, Window, MAX_WINDOW};
use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The most HEAD frames one stream may receive: interim answers, the answer, and trailers. A peer sending more
/// has the stream reset (`PROTOCOL`), so that it cannot keep a stream busy with heads alone.
pub const MAX_HEADS: u8 = 16;

/// How long the last frames (a GOAWAY) may take to be written once the connection has ended: a peer that reads
/// nothing does not keep the writer task, and the connection, alive after that.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The limits of one connection (both ends use the same windows and frame limit: there is no SETTINGS frame), and
/// this end's keep-alive.
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
    /// Send a PING (8 bytes: a counter) this often, busy or idle; zero sends none. The peer's PINGs are answered
    /// either way.
    pub keepalive_interval: Duration,
    /// Close the connection when the peer sent nothing at all (the PING's ACK, any other frame, or part of one)
    /// within this after a PING; zero never closes it for that (the PINGs still keep idle middleboxes open).
    pub keepalive_timeout: Duration,
}

impl Default for MuxOptions {
    /// Protocol 1's windows (docs/protocol.md §3): 1 MiB per stream, and a connection window that covers every
    /// stream's, so that streams whose readers stopped never hold up the others. A PING every 20 s, and 20 s for
    /// the peer to show it is alive.
    fn default() -> Self {
        let max_streams = 1000;
        let stream_window = 1024 * 1024;
        MuxOptions {
            max_payload: ferry_proto::frames::DEFAULT_MAX_PAYLOAD,
            stream_window,
            connection_window: (stream_window as u64 * max_streams as u64).min(MAX_WINDOW as u64)
                as u32,
            max_streams,
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(20),
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
    #[error("this connection has used every stream id: no new streams")]
    StreamIdsExhausted,
}

/// [`Mux::open`] could not open the stream: why, and the head it was given, handed back so that the request can
/// be sent on another connection (nothing of it reached the peer). A [`Bytes`] is cheap to clone, so a caller
/// may as well keep its own copy; this saves it the clone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct OpenError {
    pub error: MuxError,
    pub head: Bytes,
}

impl From<OpenError> for MuxError {
    fn from(refused: OpenError) -> Self {
        refused.error
    }
}

/// What a stream receives from its peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An HTTP/1.1 message head (an interim answer, the message's head, or trailers after the body); `true` when
    /// nothing follows on this stream.
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
    /// This end opened the stream (its peer's GOAWAY may say it was never processed).
    local: bool,
    /// HEAD frames received, up to [`MAX_HEADS`].
    heads: u8,
    /// A DATA frame was received: a HEAD after it can only be trailers, which end the stream.
    received_data: bool,
}

struct State {
    options: MuxOptions,
    streams: HashMap<u32, Slot>,
    send: Window,
    recv: Window,
    unreleased: u32,
    /// The id of the next stream this end opens; past `u32::MAX` there is none.
    next_id: u64,
    /// The last stream the peer opened, taken or refused: new ones must be above it.
    last_opened: u32,
    /// The last stream the peer opened that this end took (what a GOAWAY names).
    last_accepted: u32,
    /// The last stream named by this end's GOAWAY: the peer's streams above it are refused.
    going_away: Option<u32>,
    closed: Option<String>,
    peer_going_away: bool,
}

struct Shared {
    state: Mutex<State>,
    out: mpsc::UnboundedSender<Out>,
    /// Why the connection ended, once it has (the same as `State::closed`, for those waiting on it).
    ended: watch::Sender<Option<String>>,
    /// Counts the reads that brought bytes from the peer: the keep-alive's sign of life.
    received: AtomicU64,
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
        drop(state);
        self.ended.send_replace(Some(why));
    }

    /// Resolves with the reason once the connection has ended (at once if it already has); holds nothing of the
    /// connection.
    fn ended(&self) -> impl Future<Output = String> + Send + 'static {
        let mut ended = self.ended.subscribe();
        async move {
            let why = match ended.wait_for(Option::is_some).await {
                Ok(why) => (*why).clone(),
                Err(_) => None,
            };
            // the sender goes only with the connection, whose tasks end it first unless their runtime stopped
            why.unwrap_or_else(|| "the tunnel connection's tasks were stopped".to_owned())
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

/// One end's handle on a connection, for either end (both get one from [`start`]): opens streams, announces a
/// GOAWAY, counts the open streams, tells when and why the connection ended, and ends it. Clones share the
/// connection; dropping them does not end it.
#[derive(Clone)]
pub struct Mux {
    shared: Arc<Shared>,
}

/// Starts the reader, writer and (unless `keepalive_interval` is zero) keep-alive tasks of a connection over
/// `io`; returns the handle to open streams with and the streams the peer opens. The tasks end with the
/// connection.
pub fn start<IO>(io: IO, options: MuxOptions) -> (Mux, mpsc::UnboundedReceiver<Stream>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (out, frames) = mpsc::unbounded_channel();
    let (interval, timeout) = (options.keepalive_interval, options.keepalive_timeout);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            send: Window::new(options.connection_window),
            recv: Window::new(options.connection_window),
            options,
            streams: HashMap::new(),
            unreleased: 0,
            next_id: 1,
            last_opened: 0,
            last_accepted: 0,
            going_away: None,
            closed: None,
            peer_going_away: false,
        }),
        out,
        ended: watch::Sender::new(None),
        received: AtomicU64::new(0),
    });
    let (accepted_tx, accepted) = mpsc::unbounded_channel();
    let (reader, writer) = tokio::io::split(io);
    let s = shared.clone();
    tokio::spawn(async move {
        let ended = s.ended();
        let why = tokio::select! {
            biased;
            written = write_frames(writer, frames) => match written {
                Ok(()) => "closed".to_owned(),
                Err(e) => format!("write failed: {e}"),
            },
            why = async {
                let why = ended.await;
                tokio::time::sleep(CLOSE_GRACE).await;
                why
            } => why,
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
    if !interval.is_zero() {
        tokio::spawn(keep_alive(shared.clone(), interval, timeout));
    }
    (Mux { shared }, accepted)
}

impl Mux {
    /// Opens a stream with its first head; `end` when no body follows. When the connection has ended, the peer
    /// is going away (its GOAWAY arrived), too many streams are open or the stream ids are used up, nothing is
    /// sent and the error hands `head` back, to send the request on another connection.
    pub fn open(&self, head: Bytes, end: bool) -> Result<Stream, OpenError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = {
            let mut state = self.shared.lock();
            let refused = if let Some(why) = &state.closed {
                Some(MuxError::Closed(why.clone()))
            } else if state.peer_going_away {
                Some(MuxError::GoingAway)
            } else if state.streams.len() >= state.options.max_streams {
                Some(MuxError::TooManyStreams(state.streams.len()))
            } else {
                None
            };
            let id = match u32::try_from(state.next_id) {
                Ok(id) if refused.is_none() => id,
                _ => {
                    let error = refused.unwrap_or(MuxError::StreamIdsExhausted);
                    return Err(OpenError { error, head });
                }
            };
            state.next_id += 2;
            let slot = new_slot(&state.options, tx);
            state.streams.insert(
                id,
                Slot {
                    sent_end: end,
                    local: true,
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

    /// Tells the peer to open no new streams; those open go on. The GOAWAY names the last stream this end took
    /// from the peer: the streams the peer opens after it are reset with `REFUSED` (none of them was processed,
    /// so the peer may send them elsewhere). Called again, it names the same last stream.
    pub fn go_away(&self, reason: Reason) {
        let last_stream = {
            let mut state = self.shared.lock();
            let last = state.last_accepted;
            *state.going_away.get_or_insert(last)
        };
        self.shared.send(Frame::GoAway {
            last_stream,
            reason,
        });
    }

    /// Ends the connection now: the peer is told with a GOAWAY (`NO_ERROR`), the connection is shut down once what
    /// is queued is written, and the streams still open fail with [`MuxError::Closed`]. To drain first, call
    /// [`go_away`](Self::go_away) and wait for [`open_streams`](Self::open_streams) to reach zero.
    pub fn close(&self) {
        let last_stream = {
            let state = self.shared.lock();
            if state.closed.is_some() {
                return;
            }
            state.going_away.unwrap_or(state.last_accepted)
        };
        self.shared.send(Frame::GoAway {
            last_stream,
            reason: Reason::NO_ERROR,
        });
        self.shared.close("closed by this end".to_owned());
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }

    /// Resolves with the reason once the connection has ended, at once if it already has. The future holds no
    /// part of the connection: waiting on it keeps nothing open.
    pub fn closed(&self) -> impl Future<Output = String> + Send + 'static {
        self.shared.ended()
    }

    /// The streams in the table, both ways: opened and not yet ended by both sides, nor reset.
    pub fn open_streams(&self) -> usize {
        self.shared.lock().streams.len()
    }

    /// Whether the peer sent a GOAWAY: it takes no new streams from this end.
    pub fn is_peer_going_away(&self) -> bool {
        self.shared.lock().peer_going_away
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
        local: false,
        heads: 0,
        received_data: false,
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

    /// Resolves when the stream is gone before this end finished sending: the peer reset it, or the connection
    /// ended (the connector stops working on a request whose client left). Not to be awaited while
    /// [`send_data`](Self::send_data) waits for credit on the same stream: both use the stream's one waker.
    pub async fn gone(&self) -> MuxError {
        poll_fn(|cx| {
            let mut state = self.end.shared.lock();
            if let Some(why) = &state.closed {
                return Poll::Ready(MuxError::Closed(why.clone()));
            }
            match state.streams.get_mut(&self.end.id) {
                Some(slot) => {
                    slot.waiting = Some(cx.waker().clone());
                    Poll::Pending
                }
                None => Poll::Ready(MuxError::Reset(Reason::CANCEL)),
            }
        })
        .await
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

/// Reads frames until the connection ends (the peer's doing or this end's); an `Err` says why it ended badly.
async fn read_frames<R: AsyncRead>(
    reader: R,
    shared: &Arc<Shared>,
    accepted: mpsc::UnboundedSender<Stream>,
) -> Result<(), String> {
    tokio::pin!(reader);
    // a connection this end closed (a silent peer, a failed write) stops being read: a dead peer's connection
    // never says it ended
    let ended = shared.ended();
    tokio::pin!(ended);
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
        tokio::select! {
            biased;
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    shared.received.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return Err(format!("read failed: {e}")),
            },
            why = &mut ended => return Err(why),
        }
    }
}

/// Sends a PING every `interval` and closes the connection when the peer sent nothing within `timeout` after one
/// (zero: never). Ends with the connection.
async fn keep_alive(shared: Arc<Shared>, interval: Duration, timeout: Duration) {
    // durations past any sensible setting (`Duration::MAX`) would overflow an instant
    const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);
    let (interval, timeout) = (interval.min(LONGEST), timeout.min(LONGEST));
    let ended = shared.ended();
    tokio::pin!(ended);
    let mut pings: u64 = 0;
    // the PINGs sent since the peer last sent anything: how many reads had brought bytes then, and when
    let mut unanswered: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut next_ping = Instant::now() + interval;
    loop {
        let wake = match unanswered.front() {
            Some(&(_, sent)) => next_ping.min(sent + timeout),
            None => next_ping,
        };
        tokio::select! {
            _ = &mut ended => return,
            () = tokio::time::sleep_until(wake) => {}
        }
        let received = shared.received.load(Ordering::Relaxed);
        while unanswered.front().is_some_and(|&(seen, _)| received > seen) {
            unanswered.pop_front();
        }
        let now = Instant::now();
        if unanswered
            .front()
            .is_some_and(|&(_, sent)| now >= sent + timeout)
        {
            shared.close(format!(
                "the peer did not answer a keep-alive PING within {timeout:?}"
            ));
            return;
        }
        if now >= next_ping {
            pings += 1;
            if !timeout.is_zero() {
                unanswered.push_back((received, now));
            }
            shared.send(Frame::Ping {
                ack: false,
                payload: pings.to_be_bytes(),
            });
            next_ping = now + interval;
        }
    }
}

/// A frame that ends the connection: the peer is told why with a GOAWAY.
fn connection_error(shared: &Shared, reason: Reason, why: String) -> String {
    let last_stream = {
        let state = shared.lock();
        state.going_away.unwrap_or(state.last_accepted)
    };
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
                slot.heads = slot.heads.saturating_add(1);
                // nothing after the peer's end; after body bytes only trailers, which end the stream; and no
                // endless interim heads
                let broken = slot.received_end
                    || (slot.received_data && !end_stream)
                    || slot.heads > MAX_HEADS;
                if broken {
                    drop(state);
                    shared.reset(stream, Reason::PROTOCOL);
                    return Ok(());
                }
                slot.received_end = end_stream;
                let _ = slot.events.send(Ok(Event::Head(head, end_stream)));
                Shared::settle(&mut state, stream);
                return Ok(());
            }
            // a new stream: odd ids, each above the last, never one of this end's own (a HEAD for a stream that
            // was reset, or that both sides ended, is dropped)
            if stream % 2 == 0 || stream <= state.last_opened || u64::from(stream) < state.next_id {
                return Ok(());
            }
            state.last_opened = stream;
            // after this end's GOAWAY, or past the limit, the stream is refused unprocessed
            let draining = state.going_away.is_some_and(|last| stream > last);
            if draining || state.streams.len() >= state.options.max_streams {
                drop(state);
                shared.send(Frame::Reset {
                    stream,
                    reason: Reason::REFUSED,
                });
                return Ok(());
            }
            state.last_accepted = stream;
            let (tx, rx) = mpsc::unbounded_channel();
            let mut slot = new_slot(&state.options, tx);
            slot.received_end = end_stream;
            slot.heads = 1;
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
            let broken = match state.streams.get_mut(&stream) {
                // a stream this end no longer has
                None => None,
                // nothing after the peer's end
                Some(slot) if slot.received_end => Some(Reason::PROTOCOL),
                Some(slot) => match slot.recv.take(n) {
                    Err(_) => Some(Reason::FLOW_CONTROL),
                    Ok(()) => {
                        slot.received_end = end_stream;
                        slot.received_data = true;
                        let _ = slot.events.send(Ok(Event::Data(data, end_stream)));
                        Shared::settle(&mut state, stream);
                        return Ok(());
                    }
                },
            };
            drop(state);
            // bytes no reader takes: they still count, and their credit goes back
            shared.release(0, n);
            if let Some(reason) = broken {
                shared.reset(stream, reason);
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
        Frame::GoAway { last_stream, .. } => {
            let mut state = shared.lock();
            state.peer_going_away = true;
            // this end's streams above the peer's last were never processed: they fail as refused, so that their
            // requests can go elsewhere (the peer refuses them too, if they reach it)
            let refused: Vec<u32> = state
                .streams
                .iter()
                .filter(|(&id, slot)| slot.local && id > last_stream)
                .map(|(&id, _)| id)
                .collect();
            for id in refused {
                if let Some(slot) = state.streams.remove(&id) {
                    let _ = slot.events.send(Err(MuxError::Reset(Reason::REFUSED)));
                    if let Some(w) = slot.waiting {
                        w.wake();
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{DuplexStream, ReadHalf, WriteHalf};

    const WAIT: Duration = Duration::from_secs(5);

    /// Two ends over an in-memory pipe: the opening end, the accepting end, and the streams it accepts.
    fn pair(options: MuxOptions) -> (Mux, Mux, mpsc::UnboundedReceiver<Stream>) {
        let (a, b) = tokio::io::duplex(256 * 1024);
        let (node, _none) = start(a, options.clone());
        let (connector, accepted) = start(b, options);
        (node, connector, accepted)
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
        let (node, _connector, mut accepted) = pair(MuxOptions::default());
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
        let (node, _connector, mut accepted) = pair(options);
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
        let (node, _connector, mut accepted) = pair(MuxOptions::default());
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
            Err(OpenError {
                error: MuxError::Closed(_),
                ..
            })
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
            Err(OpenError {
                error: MuxError::GoingAway,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn many_streams_echo_their_bodies_through_small_windows() {
        let options = MuxOptions {
            max_payload: 1024,
            stream_window: 4 * 1024,
            connection_window: 16 * 1024,
            max_streams: 64,
            ..MuxOptions::default()
        };
        let (node, _connector, mut accepted) = pair(options);
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

    /// Writes frames as a raw peer.
    async fn send_raw(
        write: &mut (impl AsyncWrite + Unpin),
        frames: impl IntoIterator<Item = Frame>,
    ) {
        let mut out = BytesMut::new();
        for frame in frames {
            frame.encode(&mut out);
        }
        write.write_all(&out).await.expect("write");
    }

    fn keepalive(interval: u64, timeout: u64) -> MuxOptions {
        MuxOptions {
            keepalive_interval: Duration::from_secs(interval),
            keepalive_timeout: Duration::from_secs(timeout),
            ..MuxOptions::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_answers_no_ping_is_closed_and_no_task_is_left() {
        // a peer that neither reads nor writes, on a pipe too small for even one frame: the writer blocks too
        let (silent, ours) = tokio::io::duplex(16);
        let (mux, _accepted) = start(ours, keepalive(1, 3));
        let mut stream = mux
            .open(Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"), true)
            .expect("open");
        let began = Instant::now();
        let why = tokio::time::timeout(WAIT, mux.closed())
            .await
            .expect("closed in time");
        assert_eq!(why, "the peer did not answer a keep-alive PING within 3s");
        let took = began.elapsed();
        assert!(
            took >= Duration::from_secs(4) && took < Duration::from_millis(4100),
            "the first PING after 1 s, the end 3 s later, not after {took:?}"
        );
        assert_eq!(next(&mut stream).await, Err(MuxError::Closed(why)));
        // the reader (of a peer that never ends the pipe), the writer (after its grace) and the keep-alive end
        let metrics = tokio::runtime::Handle::current().metrics();
        tokio::time::timeout(CLOSE_GRACE + WAIT, async {
            while metrics.num_alive_tasks() > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("every task of the connection ended");
        drop(silent);
    }

    #[tokio::test(start_paused = true)]
    async fn pings_go_out_every_interval_and_any_answer_keeps_the_connection() {
        let (mux, _accepted, (mut raw_read, mut raw_write)) = raw_peer(keepalive(1, 2));
        let began = Instant::now();
        let mut seen = BytesMut::new();
        let mut payloads = Vec::new();
        // ten PINGs, idle, answered by their ACK or by anything else (here a PING of the peer's own)
        while payloads.len() < 10 {
            match next_frame(&mut raw_read, &mut seen).await {
                Frame::Ping {
                    ack: false,
                    payload,
                } => {
                    payloads.push(payload);
                    let ack = payloads.len() % 2 == 0;
                    let payload = if ack { payload } else { *b"the-peer" };
                    send_raw(&mut raw_write, [Frame::Ping { ack, payload }]).await;
                }
                Frame::Ping { ack: true, .. } => {} // the answer to the peer's own
                other => panic!("unexpected {other:?}"),
            }
        }
        let took = began.elapsed();
        assert!(
            took >= Duration::from_secs(10) && took < Duration::from_millis(10_100),
            "ten PINGs a second apart, not in {took:?}"
        );
        let mut distinct = payloads.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), 10, "each PING has its own payload");
        assert!(!mux.is_closed());
        // the peer falls silent: the next PING (at 11 s) goes unanswered for 2 s
        let why = tokio::time::timeout(WAIT, mux.closed())
            .await
            .expect("closed in time");
        assert_eq!(why, "the peer did not answer a keep-alive PING within 2s");
        let took = began.elapsed();
        assert!(
            took >= Duration::from_secs(13) && took < Duration::from_millis(13_100),
            "closed at {took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn two_ends_that_answer_each_other_stay_open_over_many_intervals() {
        let (node, connector, mut accepted) = pair(keepalive(1, 1));
        let mut request = node
            .open(Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"), true)
            .expect("open");
        let served = accept(&mut accepted).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!node.is_closed() && !connector.is_closed());
        served
            .send_head(Bytes::from_static(b"HTTP/1.1 204 No Content\r\n\r\n"), true)
            .expect("answer");
        assert!(matches!(next(&mut request).await, Ok(Event::Head(_, true))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_interval_sends_no_pings_and_never_closes_for_silence() {
        let (mux, _accepted, (mut raw_read, _raw_write)) = raw_peer(keepalive(0, 1));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!mux.is_closed());
        let mut seen = BytesMut::new();
        let read = tokio::time::timeout(Duration::from_secs(1), raw_read.read_buf(&mut seen)).await;
        assert!(read.is_err(), "nothing was sent: {seen:?}");
    }

    #[tokio::test]
    async fn closed_tells_why_whenever_asked_and_open_streams_counts_the_table() {
        let (node, _accepted, (mut raw_read, raw_write)) = raw_peer(MuxOptions::default());
        // asked before the end, from another task: the future is Send and holds nothing of the connection
        let waiting = tokio::spawn(node.closed());
        assert_eq!(node.open_streams(), 0);
        let first = node
            .open(Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"), true)
            .expect("open");
        let _second = node
            .open(Bytes::from_static(b"POST / HTTP/1.1\r\n\r\n"), false)
            .expect("open");
        assert_eq!(node.open_streams(), 2);
        drop(first);
        assert_eq!(node.open_streams(), 1);
        // the peer reads what was sent (two HEADs, a RESET), then goes away
        let mut seen = BytesMut::new();
        for _ in 0..3 {
            next_frame(&mut raw_read, &mut seen).await;
        }
        drop((raw_read, raw_write));
        let why = tokio::time::timeout(WAIT, waiting)
            .await
            .expect("in time")
            .expect("the waiting task");
        assert_eq!(why, "the peer closed the connection");
        // asked after the end: at once
        let again = tokio::time::timeout(WAIT, node.closed()).await;
        assert_eq!(again.as_deref(), Ok(why.as_str()));
        assert_eq!(node.open_streams(), 0);
    }

    #[tokio::test]
    async fn the_accepting_end_can_close_the_connection_and_both_learn_it() {
        let (node, connector, mut accepted) = pair(MuxOptions::default());
        let mut request = node
            .open(Bytes::from_static(b"POST / HTTP/1.1\r\n\r\n"), false)
            .expect("open");
        let mut served = accept(&mut accepted).await;
        assert!(matches!(next(&mut served).await, Ok(Event::Head(..))));
        assert_eq!(connector.open_streams(), 1);
        connector.close();
        assert!(connector.is_closed());
        let why = tokio::time::timeout(WAIT, connector.closed()).await;
        assert_eq!(why.as_deref(), Ok("closed by this end"));
        assert_eq!(
            next(&mut served).await,
            Err(MuxError::Closed("closed by this end".to_owned()))
        );
        let why = tokio::time::timeout(WAIT, node.closed()).await;
        assert_eq!(why.as_deref(), Ok("the peer closed the connection"));
        assert!(matches!(next(&mut request).await, Err(MuxError::Closed(_))));
    }

    #[tokio::test]
    async fn a_stream_whose_peer_breaks_the_order_of_its_frames_is_reset() {
        let (node, _accepted, (mut raw_read, mut raw_write)) = raw_peer(MuxOptions::default());
        // each request has a body still to send, so that an answer that ends the stream leaves it in the table
        let open = || {
            node.open(Bytes::from_static(b"POST / HTTP/1.1\r\n\r\n"), false)
                .expect("open")
        };
        let (mut s1, mut s3, mut s5, mut s7, mut s9) = (open(), open(), open(), open(), open());
        let head = |stream, end_stream| Frame::Head {
            stream,
            end_stream,
            head: Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n"),
        };
        let data = |stream, end_stream| Frame::Data {
            stream,
            end_stream,
            data: Bytes::from_static(b"body"),
        };
        let mut frames = vec![
            // stream 9 keeps the order: an interim answer, the answer, body bytes, trailers that end it
            head(9, false),
            head(9, false),
            data(9, false),
            head(9, true),
            // stream 1: body bytes after the answer ended it
            head(1, true),
            data(1, false),
            // stream 3: a head after body bytes that does not end the stream
            head(3, false),
            data(3, false),
            head(3, false),
            // stream 7: a head after the answer ended it
            head(7, true),
            head(7, true),
        ];
        // stream 5: MAX_HEADS interim heads, then one more
        frames.extend((0..=MAX_HEADS).map(|_| head(5, false)));
        send_raw(&mut raw_write, frames).await;
        // the peer learns it, stream by stream, and nothing about stream 9 (whose frames came first)
        let mut seen = BytesMut::new();
        let mut resets = Vec::new();
        while resets.len() < 4 {
            match next_frame(&mut raw_read, &mut seen).await {
                Frame::Head { .. } => {} // the requests
                Frame::Reset { stream, reason } => resets.push((stream, reason)),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            resets,
            [1, 3, 7, 5].map(|stream| (stream, Reason::PROTOCOL))
        );
        // so do the streams
        for expected in [
            Event::Head(Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n"), false),
            Event::Head(Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n"), false),
            Event::Data(Bytes::from_static(b"body"), false),
            Event::Head(Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n"), true),
        ] {
            assert_eq!(next(&mut s9).await, Ok(expected));
        }
        assert!(s9.recv().await.is_none());
        for ended in [&mut s1, &mut s7] {
            assert!(matches!(next(ended).await, Ok(Event::Head(_, true))));
            assert!(
                ended.send_data(Bytes::new(), true).await.is_err(),
                "the stream is gone"
            );
        }
        assert!(matches!(next(&mut s3).await, Ok(Event::Head(_, false))));
        assert!(matches!(next(&mut s3).await, Ok(Event::Data(_, false))));
        assert_eq!(next(&mut s3).await, Err(MuxError::Reset(Reason::PROTOCOL)));
        for _ in 0..MAX_HEADS {
            assert!(matches!(next(&mut s5).await, Ok(Event::Head(_, false))));
        }
        assert_eq!(next(&mut s5).await, Err(MuxError::Reset(Reason::PROTOCOL)));
        // only stream 9 is left: its request has not ended
        assert_eq!(node.open_streams(), 1);
    }

    #[tokio::test]
    async fn after_its_goaway_an_end_refuses_the_streams_opened_past_it() {
        let (connector, mut accepted, (mut raw_read, mut raw_write)) =
            raw_peer(MuxOptions::default());
        let request = |stream, end_stream| Frame::Head {
            stream,
            end_stream,
            head: Bytes::from_static(b"POST / HTTP/1.1\r\n\r\n"),
        };
        send_raw(&mut raw_write, [request(1, false)]).await;
        let mut first = accept(&mut accepted).await;
        connector.go_away(Reason::NO_ERROR);
        let mut seen = BytesMut::new();
        let goaway = Frame::GoAway {
            last_stream: 1,
            reason: Reason::NO_ERROR,
        };
        assert_eq!(next_frame(&mut raw_read, &mut seen).await, goaway);
        // streams opened after it are refused, unprocessed; the one taken before goes on
        send_raw(
            &mut raw_write,
            [
                request(3, true),
                Frame::Data {
                    stream: 1,
                    end_stream: true,
                    data: Bytes::from_static(b"body"),
                },
                request(5, false),
            ],
        )
        .await;
        for stream in [3, 5] {
            assert_eq!(
                next_frame(&mut raw_read, &mut seen).await,
                Frame::Reset {
                    stream,
                    reason: Reason::REFUSED
                }
            );
        }
        assert!(matches!(next(&mut first).await, Ok(Event::Head(..))));
        assert_eq!(
            next(&mut first).await,
            Ok(Event::Data(Bytes::from_static(b"body"), true))
        );
        first
            .send_head(Bytes::from_static(b"HTTP/1.1 204 No Content\r\n\r\n"), true)
            .expect("answer");
        assert!(matches!(
            next_frame(&mut raw_read, &mut seen).await,
            Frame::Head {
                stream: 1,
                end_stream: true,
                ..
            }
        ));
        assert!(accepted.try_recv().is_err(), "no refused stream was taken");
        assert_eq!(connector.open_streams(), 0);
        // a second GOAWAY names the same last stream
        connector.go_away(Reason::NO_ERROR);
        assert_eq!(next_frame(&mut raw_read, &mut seen).await, goaway);
        assert!(!connector.is_closed());
    }

    #[tokio::test]
    async fn after_the_peers_goaway_streams_it_did_not_take_fail_as_refused_and_open_fails() {
        let (node, _accepted, (_raw_read, mut raw_write)) = raw_peer(MuxOptions::default());
        let get = Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n");
        let mut taken = node.open(get.clone(), true).expect("open");
        let mut untaken = node.open(get.clone(), true).expect("open");
        send_raw(
            &mut raw_write,
            [Frame::GoAway {
                last_stream: 1,
                reason: Reason::NO_ERROR,
            }],
        )
        .await;
        assert_eq!(
            next(&mut untaken).await,
            Err(MuxError::Reset(Reason::REFUSED))
        );
        let refused = node.open(get.clone(), true).err();
        assert_eq!(
            refused,
            Some(OpenError {
                error: MuxError::GoingAway,
                head: get
            })
        );
        // the stream the peer took goes on
        send_raw(
            &mut raw_write,
            [Frame::Head {
                stream: 1,
                end_stream: true,
                head: Bytes::from_static(b"HTTP/1.1 204 No Content\r\n\r\n"),
            }],
        )
        .await;
        assert!(matches!(next(&mut taken).await, Ok(Event::Head(_, true))));
        assert_eq!(node.open_streams(), 0);
        assert!(!node.is_closed());
    }

    #[tokio::test]
    async fn a_stream_that_cannot_be_opened_gives_its_head_back() {
        let options = MuxOptions {
            max_streams: 1,
            ..MuxOptions::default()
        };
        let (node, _accepted, _raw) = raw_peer(options);
        let head = Bytes::from_static(b"GET /elsewhere HTTP/1.1\r\n\r\n");
        let refused = |error| {
            Some(OpenError {
                error,
                head: head.clone(),
            })
        };
        let first = node.open(head.clone(), true).expect("open");
        assert_eq!(
            node.open(head.clone(), true).err(),
            refused(MuxError::TooManyStreams(1))
        );
        drop(first);
        // the last stream id there is, then none
        node.shared.lock().next_id = u64::from(u32::MAX);
        let last = node.open(head.clone(), true).expect("open");
        assert_eq!(last.id(), u32::MAX);
        drop(last);
        assert_eq!(
            node.open(head.clone(), true).err(),
            refused(MuxError::StreamIdsExhausted)
        );
        node.close();
        let closed = node.open(head.clone(), true).err();
        assert_eq!(
            closed,
            refused(MuxError::Closed("closed by this end".to_owned()))
        );
        // for a caller that only wants why
        let boxed: Box<dyn std::error::Error + Send + Sync> =
            closed.clone().expect("refused").into();
        assert_eq!(
            boxed.to_string(),
            "the tunnel connection ended: closed by this end"
        );
        assert_eq!(
            MuxError::from(closed.expect("refused")),
            MuxError::Closed("closed by this end".to_owned())
        );
    }
}
