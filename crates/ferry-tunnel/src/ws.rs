//! The WebSocket transport (docs/protocol.md, "The WebSocket transport"): the same byte stream as the default
//! transport (reversed HTTP/2), carried in binary WebSocket messages, for networks whose proxies pass WebSocket
//! upgrades and strip or refuse any other.
//!
//! Owns: the handshake values (`Sec-WebSocket-Key`, `Sec-WebSocket-Accept`, the `ferry-tunnel.v1` subprotocol),
//! [`WsIo`] (WebSocket messages as `AsyncRead` + `AsyncWrite`, framed by tokio-tungstenite), and [`TunnelIo`], the
//! connection either transport gives to HTTP/2.

use futures_util::{Sink, Stream};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// The WebSocket subprotocol of the tunnel (`Sec-WebSocket-Protocol`).
pub const SUBPROTOCOL: &str = ferry_proto::tunnel::WEBSOCKET_PROTOCOL;

/// Largest WebSocket message (and frame) either end accepts: a write of HTTP/2 is at most one frame of
/// [`crate::MAX_FRAME_SIZE`] plus headers, and one message carries one write.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// Which transport carries a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `Upgrade: ferry-tunnel/1`, then HTTP/2 on the connection itself (the default).
    Upgrade,
    /// `Upgrade: websocket`, then HTTP/2 inside binary WebSocket messages.
    WebSocket,
}

impl Transport {
    /// `upgrade` or `websocket`, as in logs and settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upgrade => "upgrade",
            Self::WebSocket => "websocket",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64.
pub fn new_key() -> String {
    tokio_tungstenite::tungstenite::handshake::client::generate_key()
}

/// The `Sec-WebSocket-Accept` answering `key` (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes())
}

fn config() -> WebSocketConfig {
    WebSocketConfig {
        max_message_size: Some(MAX_MESSAGE),
        max_frame_size: Some(MAX_MESSAGE),
        ..WebSocketConfig::default()
    }
}

/// A WebSocket connection read and written as a byte stream: each write is one binary message; reading yields
/// the bytes of binary messages in order. Pings are answered by tungstenite; a close is the end of the stream;
/// a text message is an error.
pub struct WsIo<S> {
    ws: WebSocketStream<S>,
    /// The message being read, and how much of it was.
    message: Vec<u8>,
    read: usize,
    eof: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsIo<S> {
    /// Wrap a connection whose WebSocket handshake is done. `client`: this end masks its frames (RFC 6455 §5.3).
    pub async fn new(io: S, client: bool) -> Self {
        let role = if client { Role::Client } else { Role::Server };
        Self {
            ws: WebSocketStream::from_raw_socket(io, role, Some(config())).await,
            message: Vec::new(),
            read: 0,
            eof: false,
        }
    }
}

fn to_io(error: WsError) -> io::Error {
    match error {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "websocket closed")
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.read < this.message.len() {
                let n = buf.remaining().min(this.message.len() - this.read);
                buf.put_slice(&this.message[this.read..this.read + n]);
                this.read += n;
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => {
                    this.message = data;
                    this.read = 0;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text message on the tunnel's websocket",
                    )))
                }
                Some(Ok(Message::Close(_))) | None => this.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(to_io)?;
        Pin::new(&mut this.ws)
            .start_send(Message::Binary(buf.to_vec()))
            .map_err(to_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // One message for all the slices (HTTP/2 writes a frame head and its payload as two).
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(to_io)?;
        let len = bufs.iter().map(|b| b.len()).sum::<usize>().min(MAX_MESSAGE);
        let mut message = Vec::with_capacity(len);
        for b in bufs {
            let take = (len - message.len()).min(b.len());
            message.extend_from_slice(&b[..take]);
            if message.len() == len {
                break;
            }
        }
        Pin::new(&mut this.ws)
            .start_send(Message::Binary(message))
            .map_err(to_io)?;
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_close(cx)
            .map_err(to_io)
    }
}

/// The connection HTTP/2 runs on, whichever transport carries it.
pub enum TunnelIo {
    /// The upgraded connection itself (the default transport).
    Upgrade(Upgraded),
    /// Binary WebSocket messages on the upgraded connection.
    WebSocket(Box<TokioIo<WsIo<TokioIo<Upgraded>>>>),
}

impl TunnelIo {
    /// Wrap an upgraded connection for `transport`; `client` is true on the connector's end.
    pub async fn new(upgraded: Upgraded, transport: Transport, client: bool) -> Self {
        match transport {
            Transport::Upgrade => Self::Upgrade(upgraded),
            Transport::WebSocket => Self::WebSocket(Box::new(TokioIo::new(
                WsIo::new(TokioIo::new(upgraded), client).await,
            ))),
        }
    }

    pub fn transport(&self) -> Transport {
        match self {
            Self::Upgrade(_) => Transport::Upgrade,
            Self::WebSocket(_) => Transport::WebSocket,
        }
    }
}

impl hyper::rt::Read for TunnelIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Upgrade(io) => Pin::new(io).poll_read(cx, buf),
            Self::WebSocket(io) => Pin::new(&mut **io).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for TunnelIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Upgrade(io) => Pin::new(io).poll_write(cx, buf),
            Self::WebSocket(io) => Pin::new(&mut **io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Upgrade(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Self::WebSocket(io) => Pin::new(&mut **io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Upgrade(io) => io.is_write_vectored(),
            Self::WebSocket(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Upgrade(io) => Pin::new(io).poll_flush(cx),
            Self::WebSocket(io) => Pin::new(&mut **io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Upgrade(io) => Pin::new(io).poll_shutdown(cx),
            Self::WebSocket(io) => Pin::new(&mut **io).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn accept_key_of_rfc_6455() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_ne!(new_key(), new_key());
    }

    #[tokio::test]
    async fn bytes_cross_in_both_directions() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (mut client, mut server) = tokio::join!(WsIo::new(a, true), WsIo::new(b, false));
        let big = vec![7u8; 300_000];
        let writer = async {
            client.write_all(b"hello ").await.expect("write");
            let n = client
                .write_vectored(&[io::IoSlice::new(b"wor"), io::IoSlice::new(b"ld")])
                .await
                .expect("vectored");
            assert_eq!(n, 5, "one message for all the slices");
            client.write_all(&big).await.expect("big");
            client.flush().await.expect("flush");
            client.shutdown().await.expect("close");
            client
        };
        let reader = async {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.expect("read");
            got
        };
        let (_client, got) = tokio::join!(writer, reader);
        assert_eq!(&got[..11], b"hello world");
        assert_eq!(got.len(), 11 + big.len());
    }
}
