//! The floor of a lighter tunnel design (issue 16): what a relay spends when the node and the connector share a
//! plain multiplexing framing instead of HTTP/2, and the connector does not parse requests at all.
//!
//! - **Node** (`relay-mux-node LISTEN TUNNEL`): a thread per core, each with a single-threaded runtime, its own
//!   `SO_REUSEPORT` listener and its own tunnel connection, so that a request stays on one thread. hyper's
//!   HTTP/1.1 server parses the client's request (a node must: routing, limits, normalising); its head is written
//!   out as HTTP/1.1 text into a HEAD frame, its body into DATA frames. The response head comes back as the
//!   origin's own bytes, parsed with `httparse`; its body frames go to hyper as they arrive.
//! - **Connector** (`relay-mux-connector LISTEN ORIGIN`): a thread per tunnel connection. A HEAD frame is written
//!   as it is to an idle origin connection, DATA frames after it; the origin's answer is read with `httparse`
//!   only far enough to find where its body ends (`Content-Length`), and its bytes go back as they were read.
//!
//! Frames: a 12-byte header (stream id u32, kind u8, flags u8, two zero bytes, payload length u32, big-endian),
//! then the payload. Kinds: HEAD (an HTTP/1.1 head), DATA (body bytes), RESET (the node gave the request up); flag
//! END: the sender's last frame of that stream. A bounded channel per stream and per tunnel writer is the only flow control (a slow stream can hold up
//! the others: Ferry's real tunnel would need credit per stream, as HTTP/2's windows give). Only what the benchmark
//! sends is handled: requests and responses with `Content-Length` or without a body; a chunked or
//! close-delimited answer is a 502. As the h2 floor: no routing, no header rules, no timeouts, no request ids.

use crate::common::{
    declared_length, read_answer_head, request_head, response_from_head, reuseport_listener,
};
use crate::common::{per_core, per_tunnel, serve_clients, status, BoxError, OriginConn, Pool};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const HEADER_LEN: usize = 12;
const HEAD: u8 = 1;
const DATA: u8 = 2;
const RESET: u8 = 3;
const END: u8 = 1;
/// The most body bytes in one DATA frame (Ferry's tunnel: 256 KiB HTTP/2 frames).
const MAX_PAYLOAD: usize = 256 * 1024;

struct Frame12 {
    header: [u8; HEADER_LEN],
    payload: Bytes,
}

fn frame(stream: u32, kind: u8, end: bool, payload: Bytes) -> Frame12 {
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&stream.to_be_bytes());
    header[4] = kind;
    header[5] = if end { END } else { 0 };
    header[8..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    Frame12 { header, payload }
}

/// What the reader hands to one stream.
enum Event {
    Head(Bytes, bool),
    Data(Bytes, bool),
}

type Streams = Arc<Mutex<HashMap<u32, mpsc::Sender<Event>>>>;

/// Writes the frames queued for a tunnel, as many as are waiting in one write: small frames are gathered in one
/// buffer; a large payload is written from where it lies.
async fn write_frames(
    mut w: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Frame12>,
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(f) = next {
            buf.put_slice(&f.header);
            if f.payload.len() > 16 * 1024 {
                w.write_all(&buf).await?;
                buf.clear();
                w.write_all(&f.payload).await?;
            } else {
                buf.put_slice(&f.payload);
            }
            next = rx.try_recv().ok();
        }
        if !buf.is_empty() {
            w.write_all(&buf).await?;
            buf.clear();
        }
    }
    Ok(())
}

/// Reads a tunnel's frames and calls `each` with (stream, kind, end, payload) for every whole one.
async fn read_frames<F, Fut>(mut r: OwnedReadHalf, mut each: F) -> std::io::Result<()>
where
    F: FnMut(u32, u8, bool, Bytes) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        while buf.len() >= HEADER_LEN {
            let len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
            if buf.len() < HEADER_LEN + len {
                buf.reserve(HEADER_LEN + len - buf.len());
                break;
            }
            let stream = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let (kind, end) = (buf[4], buf[5] & END != 0);
            buf.advance(HEADER_LEN);
            let payload = buf.split_to(len).freeze();
            each(stream, kind, end, payload).await;
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        if r.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------------------------------- the node

pub fn node(listen: SocketAddr, tunnel: SocketAddr) -> Result<(), BoxError> {
    per_core(move || node_core(listen, tunnel))
}

struct Tunnel {
    tx: mpsc::Sender<Frame12>,
    streams: Streams,
    next: AtomicU32,
}

async fn node_core(listen: SocketAddr, tunnel: SocketAddr) -> Result<(), BoxError> {
    let listener = reuseport_listener(listen)?;
    let conn = TcpStream::connect(tunnel).await?;
    conn.set_nodelay(true)?;
    let (r, w) = conn.into_split();
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        if let Err(e) = write_frames(w, rx).await {
            eprintln!("connection: tunnel write: {e}");
        }
    });
    let streams: Streams = Arc::default();
    let reader_streams = streams.clone();
    tokio::spawn(async move {
        let streams = reader_streams;
        let read = read_frames(r, |id, kind, end, payload| {
            let tx = streams.lock().expect("streams").get(&id).cloned();
            if end {
                streams.lock().expect("streams").remove(&id);
            }
            async move {
                if let Some(tx) = tx {
                    let ev = if kind == HEAD {
                        Event::Head(payload, end)
                    } else {
                        Event::Data(payload, end)
                    };
                    let _ = tx.send(ev).await; // the client is gone: the rest of the stream is dropped
                }
            }
        });
        if let Err(e) = read.await {
            eprintln!("connection: tunnel read: {e}");
        }
    });
    let tunnel = Arc::new(Tunnel {
        tx,
        streams,
        next: AtomicU32::new(1),
    });
    serve_clients(listener, || {
        let tunnel = tunnel.clone();
        service_fn(move |req| relay(tunnel.clone(), req))
    })
    .await
}

async fn relay(tunnel: Arc<Tunnel>, req: Request<Incoming>) -> Result<Response<MuxBody>, BoxError> {
    let (parts, mut body) = req.into_parts();
    let length = declared_length(&parts.headers);
    if length.is_none() && !body.is_end_stream() {
        return Ok(status(StatusCode::LENGTH_REQUIRED));
    }
    let has_body = length.unwrap_or(0) > 0;
    let head = request_head(&parts);
    let id = tunnel.next.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel(16);
    tunnel.streams.lock().expect("streams").insert(id, tx);
    tunnel.tx.send(frame(id, HEAD, !has_body, head)).await?;
    if has_body {
        let out = tunnel.tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(f)) =
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            {
                if let Ok(data) = f.into_data() {
                    let end = body.is_end_stream();
                    if out.send(frame(id, DATA, end, data)).await.is_err() || end {
                        return;
                    }
                }
            }
        });
    }
    let Some(Event::Head(head, end)) = rx.recv().await else {
        tunnel.streams.lock().expect("streams").remove(&id);
        return Ok(status(StatusCode::BAD_GATEWAY));
    };
    let Ok(mut response) = response_from_head(
        &head,
        MuxBody {
            rx: (!end).then_some(rx),
            length: 0,
        },
    ) else {
        return Ok(status(StatusCode::BAD_GATEWAY));
    };
    response.body_mut().length = declared_length(response.headers()).unwrap_or(0);
    Ok(response)
}

/// A response body fed by the tunnel's reader.
#[derive(Default)]
struct MuxBody {
    rx: Option<mpsc::Receiver<Event>>,
    length: u64,
}

impl Body for MuxBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(Event::Data(data, end))) => {
                if end {
                    self.rx = None;
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(_) => {
                self.rx = None;
                Poll::Ready(Some(Err("the tunnel ended the answer early".into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rx.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.rx.is_none() {
            hyper::body::SizeHint::with_exact(0)
        } else {
            hyper::body::SizeHint::with_exact(self.length)
        }
    }
}

// ----------------------------------------------------------------------------------------------- the connector

pub fn connector(listen: SocketAddr, origin: SocketAddr) -> Result<(), BoxError> {
    per_tunnel(listen, move |conn| connector_tunnel(conn, origin))
}

async fn connector_tunnel(conn: TcpStream, origin: SocketAddr) -> Result<(), BoxError> {
    let (r, w) = conn.into_split();
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        if let Err(e) = write_frames(w, rx).await {
            eprintln!("connection: tunnel write: {e}");
        }
    });
    let pool: Pool = Arc::default();
    let mut streams: HashMap<u32, mpsc::Sender<Event>> = HashMap::new();
    read_frames(r, |id, kind, end, payload| {
        let mut payload = Some(payload);
        let to_stream = if kind == HEAD {
            let head = payload.take().unwrap_or_default();
            let (stx, srx) = mpsc::channel(16);
            if !end {
                streams.insert(id, stx);
            }
            let (pool, out) = (pool.clone(), tx.clone());
            tokio::spawn(async move {
                if let Err(e) = exchange(id, head, end, srx, pool, origin, &out).await {
                    eprintln!("connection: stream {id}: {e}");
                    let failed = Bytes::from_static(
                        b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n",
                    );
                    let _ = out.send(frame(id, HEAD, true, failed)).await;
                }
            });
            None
        } else if kind == RESET {
            streams.remove(&id);
            None
        } else if end {
            streams.remove(&id)
        } else {
            streams.get(&id).cloned()
        };
        async move {
            if let (Some(stx), Some(data)) = (to_stream, payload) {
                let _ = stx.send(Event::Data(data, end)).await;
            }
        }
    })
    .await?;
    Ok(())
}

/// One request: its head and body to an origin connection, the answer's bytes back as they are read.
async fn exchange(
    id: u32,
    head: Bytes,
    end: bool,
    mut body: mpsc::Receiver<Event>,
    pool: Pool,
    origin: SocketAddr,
    out: &mpsc::Sender<Frame12>,
) -> Result<(), BoxError> {
    let idle = pool.lock().expect("pool").pop();
    let mut conn = OriginConn::send_head(idle, origin, &head).await?;
    if !end {
        loop {
            let Some(Event::Data(data, last)) = body.recv().await else {
                return Err("the request was cancelled".into());
            };
            conn.stream.write_all(&data).await?;
            if last {
                break;
            }
        }
    }
    let (head_len, length) = read_answer_head(&mut conn).await?;
    let Some(mut left) = length else {
        return Err("an answer without Content-Length (not handled by this floor)".into());
    };
    let take = left.min(conn.buf.len() - head_len);
    left -= take;
    let head = conn.buf.split_to(head_len).freeze();
    if take == 0 {
        out.send(frame(id, HEAD, left == 0, head)).await?;
    } else {
        out.send(frame(id, HEAD, false, head)).await?;
        out.send(frame(id, DATA, left == 0, conn.buf.split_to(take).freeze()))
            .await?;
    }
    while left > 0 {
        if conn.buf.capacity() < 16 * 1024 {
            conn.buf.reserve(MAX_PAYLOAD);
        }
        let n = conn.stream.read_buf(&mut conn.buf).await?;
        if n == 0 {
            return Err("the origin closed in the middle of an answer".into());
        }
        let take = left.min(conn.buf.len());
        left -= take;
        out.send(frame(id, DATA, left == 0, conn.buf.split_to(take).freeze()))
            .await?;
    }
    if conn.buf.is_empty() && !conn.closing {
        pool.lock().expect("pool").push(conn);
    }
    Ok(())
}
