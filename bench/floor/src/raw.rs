//! The floor of a lighter gateway design (issue 16): hyper's HTTP/1.1 server for the client, as the gateway has,
//! but the upstream side by hand: the request head written as HTTP/1.1 text to an idle upstream connection, the
//! answer's head parsed with `httparse` (its header values slices of the read buffer, as hyper's are), and its
//! body handed to hyper straight from the connection's buffer, the connection back in its core's pool when the
//! body ends. A runtime per core with an `SO_REUSEPORT` listener each, as Ferry's per-core serving. Only
//! `Content-Length` answers (or none), as the benchmark's origin gives.
//!
//!   ferry-bench-floor proxy-raw LISTEN UPSTREAM

use crate::common::{
    declared_length, read_answer_head, request_head, response_from_head, reuseport_listener,
};
use crate::common::{per_core, serve_clients, BoxError, OriginConn, Pool};
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncWriteExt;

pub fn proxy(listen: SocketAddr, upstream: SocketAddr) -> Result<(), BoxError> {
    per_core(move || core(listen, upstream))
}

async fn core(listen: SocketAddr, upstream: SocketAddr) -> Result<(), BoxError> {
    let listener = reuseport_listener(listen)?;
    let pool: Pool = Pool::default();
    serve_clients(listener, || {
        let pool = pool.clone();
        service_fn(move |req| forward(pool.clone(), upstream, req))
    })
    .await
}

async fn forward(
    pool: Pool,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<RawBody>, BoxError> {
    let (parts, mut body) = req.into_parts();
    let length = declared_length(&parts.headers);
    if length.is_none() && !body.is_end_stream() {
        let mut r = Response::new(RawBody {
            conn: None,
            left: 0,
            pool,
        });
        *r.status_mut() = StatusCode::LENGTH_REQUIRED;
        return Ok(r);
    }
    let head = request_head(&parts);
    let idle = pool.lock().expect("pool").pop();
    let mut conn = OriginConn::send_head(idle, upstream, &head).await?;
    if length.unwrap_or(0) > 0 {
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            if let Ok(data) = frame?.into_data() {
                conn.stream.write_all(&data).await?;
            }
        }
    }
    let (head_len, left) = read_answer_head(&mut conn).await?;
    let left = left.ok_or("an answer without Content-Length (not handled by this floor)")?;
    let head = conn.buf.split_to(head_len).freeze();
    let mut body = RawBody {
        conn: Some(conn),
        left,
        pool,
    };
    if left == 0 {
        body.done();
    }
    response_from_head(&head, body)
}

/// An answer's body, read from its upstream connection as hyper asks for it.
struct RawBody {
    conn: Option<OriginConn>,
    left: usize,
    pool: Pool,
}

impl RawBody {
    /// The body has ended: its connection goes back to the pool if nothing was read beyond it.
    fn done(&mut self) {
        if let Some(conn) = self.conn.take().filter(|c| c.buf.is_empty() && !c.closing) {
            self.pool.lock().expect("pool").push(conn);
        }
    }
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(conn) = this.conn.as_mut().filter(|_| this.left > 0) else {
            return Poll::Ready(None);
        };
        while conn.buf.is_empty() {
            if conn.buf.capacity() < 16 * 1024 {
                conn.buf.reserve(256 * 1024);
            }
            ready!(conn.stream.poll_read_ready(cx))?;
            match conn.stream.try_read_buf(&mut conn.buf) {
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(
                        "the upstream closed in the middle of an answer".into(),
                    )));
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
        let take = this.left.min(conn.buf.len());
        let data = conn.buf.split_to(take).freeze();
        this.left -= take;
        if this.left == 0 {
            this.done();
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left as u64)
    }
}
