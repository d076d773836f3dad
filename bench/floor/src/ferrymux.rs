//! The mux floor (`mux.rs`) on Ferry's own protocol 2 connection (`ferry_tunnel::mux`, on `ferry_proto::frames`)
//! instead of the floor's ad-hoc framing: the same node and connector, with real flow control per stream and per
//! connection, resets and GOAWAY. It measures what that connection costs before nodes and connectors speak it.
//!
//!   ferry-bench-floor relay-fmux-node LISTEN TUNNEL
//!   ferry-bench-floor relay-fmux-connector LISTEN ORIGIN

use crate::common::{
    declared_length, read_answer_head, request_head, response_from_head, reuseport_listener,
};
use crate::common::{per_core, per_tunnel, serve_clients, status, BoxError, OriginConn, Pool};
use bytes::Bytes;
use ferry_tunnel::mux::{self, Event, Mux, MuxOptions, StreamReceiver};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn node(listen: SocketAddr, tunnel: SocketAddr) -> Result<(), BoxError> {
    per_core(move || node_core(listen, tunnel))
}

async fn node_core(listen: SocketAddr, tunnel: SocketAddr) -> Result<(), BoxError> {
    let listener = reuseport_listener(listen)?;
    let conn = TcpStream::connect(tunnel).await?;
    conn.set_nodelay(true)?;
    let (mux, _none) = mux::start(conn, MuxOptions::default());
    serve_clients(listener, || {
        let mux = mux.clone();
        service_fn(move |req| relay(mux.clone(), req))
    })
    .await
}

async fn relay(mux: Mux, req: Request<Incoming>) -> Result<Response<FmuxBody>, BoxError> {
    let (parts, mut body) = req.into_parts();
    let length = declared_length(&parts.headers);
    if length.is_none() && !body.is_end_stream() {
        return Ok(status(StatusCode::LENGTH_REQUIRED));
    }
    let has_body = length.unwrap_or(0) > 0;
    let (sender, mut receiver) = mux.open(request_head(&parts), !has_body)?.split();
    if has_body {
        tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                    Some(Ok(f)) => {
                        if let Ok(data) = f.into_data() {
                            let end = body.is_end_stream();
                            if sender.send_data(data, end).await.is_err() || end {
                                return;
                            }
                        }
                    }
                    _ => return sender.reset(ferry_proto::frames::Reason::CANCEL),
                }
            }
        });
    }
    let Some(Ok(Event::Head(head, end))) = receiver.recv().await else {
        return Ok(status(StatusCode::BAD_GATEWAY));
    };
    let mut response = response_from_head(
        &head,
        FmuxBody {
            receiver: (!end).then_some(receiver),
            length: 0,
        },
    )?;
    response.body_mut().length = declared_length(response.headers()).unwrap_or(0);
    Ok(response)
}

/// An answer's body: the stream's DATA as it arrives.
#[derive(Default)]
struct FmuxBody {
    receiver: Option<StreamReceiver>,
    length: u64,
}

impl Body for FmuxBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(receiver) = self.receiver.as_mut() else {
            return Poll::Ready(None);
        };
        match receiver.poll_recv(cx) {
            Poll::Ready(Some(Ok(Event::Data(data, end)))) => {
                if end {
                    self.receiver = None;
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(None) => {
                self.receiver = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(other)) => {
                self.receiver = None;
                Poll::Ready(Some(Err(
                    format!("the answer ended early: {other:?}").into()
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.receiver.is_none()
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
    let (_mux, mut accepted) = mux::start(conn, MuxOptions::default());
    let pool: Pool = Pool::default();
    while let Some(stream) = accepted.recv().await {
        let pool = pool.clone();
        tokio::spawn(async move {
            let (sender, receiver) = stream.split();
            if let Err(e) = exchange(&sender, receiver, pool, origin).await {
                eprintln!("connection: stream: {e}");
                let failed =
                    Bytes::from_static(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
                let _ = sender.send_head(failed, true);
            }
        });
    }
    Ok(())
}

/// One request: its head and body to an origin connection, the answer's bytes back as they are read.
async fn exchange(
    sender: &mux::StreamSender,
    mut receiver: StreamReceiver,
    pool: Pool,
    origin: SocketAddr,
) -> Result<(), BoxError> {
    let Some(Ok(Event::Head(head, end))) = receiver.recv().await else {
        return Err("a stream without a request head".into());
    };
    let idle = pool.lock().expect("pool").pop();
    let mut conn = OriginConn::send_head(idle, origin, &head).await?;
    if !end {
        loop {
            match receiver.recv().await {
                Some(Ok(Event::Data(data, last))) => {
                    conn.stream.write_all(&data).await?;
                    if last {
                        break;
                    }
                }
                _ => return Err("the request was cancelled".into()),
            }
        }
    }
    let (head_len, length) = read_answer_head(&mut conn).await?;
    let mut left = length.ok_or("an answer without Content-Length (not handled by this floor)")?;
    let take = left.min(conn.buf.len() - head_len);
    left -= take;
    let head = conn.buf.split_to(head_len).freeze();
    sender.send_head(head, left == 0 && take == 0)?;
    if take > 0 {
        sender
            .send_data(conn.buf.split_to(take).freeze(), left == 0)
            .await?;
    }
    while left > 0 {
        if conn.buf.capacity() < 16 * 1024 {
            conn.buf.reserve(256 * 1024);
        }
        let n = conn.stream.read_buf(&mut conn.buf).await?;
        if n == 0 {
            return Err("the origin closed in the middle of an answer".into());
        }
        let take = left.min(conn.buf.len());
        left -= take;
        sender
            .send_data(conn.buf.split_to(take).freeze(), left == 0)
            .await?;
    }
    if conn.buf.is_empty() && !conn.closing {
        pool.lock().expect("pool").push(conn);
    }
    Ok(())
}
