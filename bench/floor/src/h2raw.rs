//! The floor of a middle design between the HTTP/2 tunnel and the mux floor (`mux.rs`): HTTP/2 kept between node
//! and connector, through the `h2` crate directly (its flow control, resets, pings and GOAWAY), but each stream
//! carries the request and the answer as HTTP/1.1 bytes in its DATA frames, under a HEADERS frame that HPACK
//! reduces to a few indexed bytes. The connector writes a stream's bytes to an idle origin connection as they
//! come, without parsing them, and reads the answer only far enough to find its end, as the mux connector does;
//! the node is the mux node with an `h2` stream where the mux node has its frames. A runtime per core in the node
//! (its own listener and tunnel) and per tunnel in the connector, as there.
//!
//!   ferry-bench-floor relay-h2raw-node LISTEN TUNNEL
//!   ferry-bench-floor relay-h2raw-connector LISTEN ORIGIN

use crate::common::{
    declared_length, read_answer_head, request_head, response_from_head, reuseport_listener,
};
use crate::common::{per_core, per_tunnel, serve_clients, status, BoxError, OriginConn, Pool};
use bytes::{Buf, Bytes, BytesMut};
use h2::{RecvStream, SendStream};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Ferry's tunnel settings, as the hyper floor relay's.
const MAX_FRAME_SIZE: u32 = 256 * 1024;
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;

pub fn node(listen: SocketAddr, tunnel: SocketAddr) -> Result<(), BoxError> {
    per_core(move || node_core(listen, tunnel))
}

async fn node_core(listen: SocketAddr, tunnel: SocketAddr) -> Result<(), BoxError> {
    let listener = reuseport_listener(listen)?;
    let conn = TcpStream::connect(tunnel).await?;
    conn.set_nodelay(true)?;
    let (sender, connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .handshake::<_, Bytes>(conn)
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection: tunnel: {e}");
        }
    });
    serve_clients(listener, || {
        let sender = sender.clone();
        service_fn(move |req| relay(sender.clone(), req))
    })
    .await
}

/// Sends `data` on an HTTP/2 stream within its flow-control window.
async fn send_all(
    stream: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), BoxError> {
    if data.is_empty() {
        if end {
            stream.send_data(data, true)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = poll_fn(|cx| stream.poll_capacity(cx))
            .await
            .ok_or("the stream ended")??;
        let chunk = data.split_to(granted.min(data.len()));
        stream.send_data(chunk, end && data.is_empty())?;
    }
    Ok(())
}

async fn relay(
    sender: h2::client::SendRequest<Bytes>,
    req: Request<Incoming>,
) -> Result<Response<H2Body>, BoxError> {
    let (parts, mut body) = req.into_parts();
    let length = declared_length(&parts.headers);
    if length.is_none() && !body.is_end_stream() {
        return Ok(status(StatusCode::LENGTH_REQUIRED));
    }
    let has_body = length.unwrap_or(0) > 0;
    let head = request_head(&parts);
    let mut sender = sender.ready().await?;
    let (answer, mut stream) = sender.send_request(Request::post("/").body(())?, false)?;
    send_all(&mut stream, head, !has_body).await?;
    if has_body {
        tokio::spawn(async move {
            loop {
                match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                    Some(Ok(f)) => {
                        if let Ok(data) = f.into_data() {
                            let end = body.is_end_stream();
                            if send_all(&mut stream, data, end).await.is_err() || end {
                                return;
                            }
                        }
                    }
                    _ => {
                        stream.send_reset(h2::Reason::CANCEL);
                        return;
                    }
                }
            }
        });
    }
    let mut recv = answer.await?.into_body();
    // the answer's head: the first bytes of the stream, as many DATA frames as it takes
    let mut buf = BytesMut::new();
    let head_len = loop {
        let mut parsed = [httparse::EMPTY_HEADER; 64];
        if let httparse::Status::Complete(n) = httparse::Response::new(&mut parsed).parse(&buf)? {
            break n;
        }
        let data = poll_fn(|cx| recv.poll_data(cx))
            .await
            .ok_or("the tunnel ended the answer early")??;
        let _ = recv.flow_control().release_capacity(data.len());
        if buf.is_empty() {
            buf = BytesMut::from(data); // one frame, most of the time: no copy beyond this one
        } else {
            buf.extend_from_slice(&data);
        }
    };
    let mut buf = buf.freeze();
    let head = buf.split_to(head_len);
    let mut response = response_from_head(
        &head,
        H2Body {
            recv: None,
            first: buf,
            length: 0,
        },
    )?;
    let length = declared_length(response.headers()).unwrap_or(0);
    let body = response.body_mut();
    body.length = length;
    if !recv.is_end_stream() {
        body.recv = Some(recv);
    }
    Ok(response)
}

/// An answer's body: what came with its head, then the stream's DATA frames.
#[derive(Default)]
struct H2Body {
    recv: Option<RecvStream>,
    first: Bytes,
    length: u64,
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.first.is_empty() {
            let first = std::mem::take(&mut self.first);
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let Some(recv) = self.recv.as_mut() else {
            return Poll::Ready(None);
        };
        match recv.poll_data(cx) {
            Poll::Ready(Some(Ok(data))) => {
                let _ = recv.flow_control().release_capacity(data.len());
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => {
                self.recv = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                self.recv = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_empty() && self.recv.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.length)
    }
}

// ----------------------------------------------------------------------------------------------- the connector

pub fn connector(listen: SocketAddr, origin: SocketAddr) -> Result<(), BoxError> {
    per_tunnel(listen, move |conn| connector_tunnel(conn, origin))
}

async fn connector_tunnel(conn: TcpStream, origin: SocketAddr) -> Result<(), BoxError> {
    let mut h2 = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_concurrent_streams(1000)
        .max_pending_accept_reset_streams(1000)
        .handshake::<_, Bytes>(conn)
        .await?;
    let pool: Pool = Pool::default();
    while let Some(accepted) = h2.accept().await {
        let (req, respond) = accepted?;
        let pool = pool.clone();
        tokio::spawn(async move {
            if let Err(e) = exchange(req.into_body(), respond, pool, origin).await {
                eprintln!("connection: stream: {e}");
            }
        });
    }
    Ok(())
}

/// One request: the stream's bytes to an origin connection as they come, the answer's bytes back as they are
/// read.
async fn exchange(
    mut recv: RecvStream,
    mut respond: h2::server::SendResponse<Bytes>,
    pool: Pool,
    origin: SocketAddr,
) -> Result<(), BoxError> {
    let first = poll_fn(|cx| recv.poll_data(cx))
        .await
        .ok_or("a stream without a request head")??;
    let _ = recv.flow_control().release_capacity(first.len());
    let idle = pool.lock().expect("pool").pop();
    let mut conn = OriginConn::send_head(idle, origin, &first).await?;
    while let Some(data) = poll_fn(|cx| recv.poll_data(cx)).await {
        let data = data?;
        let _ = recv.flow_control().release_capacity(data.len());
        conn.stream.write_all(&data).await?;
    }
    let (head_len, length) = read_answer_head(&mut conn).await?;
    let mut left = length.ok_or("an answer without Content-Length (not handled by this floor)")?;
    let mut stream = respond.send_response(Response::new(()), false)?;
    let take = left.min(conn.buf.len() - head_len);
    left -= take;
    let head_and_start = conn.buf.split_to(head_len + take).freeze();
    send_all(&mut stream, head_and_start, left == 0).await?;
    while left > 0 {
        if conn.buf.capacity() < 16 * 1024 {
            conn.buf.reserve(256 * 1024);
        }
        let n = tokio::io::AsyncReadExt::read_buf(&mut conn.stream, &mut conn.buf).await?;
        if n == 0 {
            return Err("the origin closed in the middle of an answer".into());
        }
        let take = left.min(conn.buf.len());
        left -= take;
        let data = conn.buf.split_to(take).freeze();
        send_all(&mut stream, data, left == 0).await?;
    }
    if conn.buf.has_remaining() || conn.closing {
        return Ok(());
    }
    pool.lock().expect("pool").push(conn);
    Ok(())
}
