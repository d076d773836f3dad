//! A raw HTTP/1.1 client over a `TcpStream`: writes exactly the bytes a test gives, parses what comes back
//! (status line, headers, a `Content-Length`, chunked or read-to-close body, trailers), and can tell whether
//! the server closed the connection.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A parsed response.
#[derive(Debug, Clone, Default)]
pub struct RawResponse {
    pub status: u16,
    pub reason: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// The trailer fields after a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl RawResponse {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of a trailer field.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        find(&self.trailers, name)
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// See [`crate::client::check_ferry_error`].
    pub fn check_ferry_error(
        &self,
        status: u16,
        code: &str,
    ) -> anyhow::Result<crate::client::FerryError> {
        crate::client::check_ferry_error(self.status, &self.headers, &self.body, status, code)
    }
}

fn find<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The head of a response, before its body.
#[derive(Debug, Clone, Default)]
pub struct RawHead {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

impl RawHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    fn chunked(&self) -> bool {
        self.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    }
}

/// One connection.
pub struct RawConn {
    io: BufReader<TcpStream>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = crate::within(
            Duration::from_secs(10),
            "raw connect",
            TcpStream::connect(addr),
        )
        .await??;
        stream.set_nodelay(true)?;
        Ok(Self {
            io: BufReader::new(stream),
        })
    }

    /// A connection made by the caller (bound to another loopback address, say).
    pub fn from_stream(stream: TcpStream) -> anyhow::Result<Self> {
        stream.set_nodelay(true)?;
        Ok(Self {
            io: BufReader::new(stream),
        })
    }

    /// Write bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.io.get_mut().write_all(bytes).await?;
        self.io.get_mut().flush().await?;
        Ok(())
    }

    async fn line(&mut self) -> anyhow::Result<String> {
        let mut buf = Vec::new();
        let n = self.io.read_until(b'\n', &mut buf).await?;
        anyhow::ensure!(n > 0, "connection closed while reading a line");
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    async fn fields(&mut self) -> anyhow::Result<Vec<(String, String)>> {
        let mut fields = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                return Ok(fields);
            }
            let (n, v) = line
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("malformed field line {line:?}"))?;
            fields.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }

    /// Read a status line and headers. Informational (1xx) heads other than 101 are skipped.
    pub async fn read_head(&mut self) -> anyhow::Result<RawHead> {
        loop {
            let status_line = self.line().await?;
            let mut parts = status_line.splitn(3, ' ');
            let version = parts.next().unwrap_or_default();
            anyhow::ensure!(
                version.starts_with("HTTP/1."),
                "bad status line {status_line:?}"
            );
            let status: u16 = parts
                .next()
                .unwrap_or_default()
                .parse()
                .map_err(|_| anyhow::anyhow!("bad status line {status_line:?}"))?;
            let reason = parts.next().unwrap_or_default().to_owned();
            let headers = self.fields().await?;
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            return Ok(RawHead {
                status,
                reason,
                headers,
            });
        }
    }

    /// Read the next chunk of a chunked body: `Ok(None)` after the last chunk (its trailers are returned by
    /// [`RawConn::read_trailers`]).
    pub async fn read_chunk(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        let size_line = self.line().await?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| anyhow::anyhow!("bad chunk size line {size_line:?}"))?;
        if size == 0 {
            return Ok(None);
        }
        let mut data = vec![0u8; size];
        self.io.read_exact(&mut data).await?;
        let crlf = self.line().await?;
        anyhow::ensure!(crlf.is_empty(), "chunk not followed by CRLF: {crlf:?}");
        Ok(Some(data))
    }

    /// The trailer section after the last chunk.
    pub async fn read_trailers(&mut self) -> anyhow::Result<Vec<(String, String)>> {
        self.fields().await
    }

    /// Read the body that `head` announces (`head_request`: the request was HEAD, so there is none).
    pub async fn read_body(
        &mut self,
        head: &RawHead,
        head_request: bool,
    ) -> anyhow::Result<RawResponse> {
        let mut resp = RawResponse {
            status: head.status,
            reason: head.reason.clone(),
            headers: head.headers.clone(),
            ..Default::default()
        };
        if head_request || head.status == 204 || head.status == 304 || head.status == 101 {
            return Ok(resp);
        }
        if head.chunked() {
            resp.chunked = true;
            while let Some(chunk) = self.read_chunk().await? {
                resp.body.extend_from_slice(&chunk);
            }
            resp.trailers = self.read_trailers().await?;
        } else if let Some(len) = head.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| anyhow::anyhow!("bad content-length {len:?}"))?;
            resp.body = vec![0u8; len];
            self.io.read_exact(&mut resp.body).await?;
        } else {
            self.io.read_to_end(&mut resp.body).await?;
        }
        Ok(resp)
    }

    /// Read one whole response.
    pub async fn read_response(&mut self) -> anyhow::Result<RawResponse> {
        let head = self.read_head().await?;
        self.read_body(&head, false).await
    }

    /// Whether the peer closes the connection within `timeout` (reads and discards anything still coming).
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let mut buf = [0u8; 4096];
        tokio::time::timeout(timeout, async {
            loop {
                match self.io.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    /// The underlying stream (for shutting down the write side, say).
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        self.io.get_mut()
    }
}

/// Connect, send `bytes`, read one response; all within `timeout`.
pub async fn request(
    addr: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> anyhow::Result<RawResponse> {
    crate::within(timeout, "raw request", async {
        let mut conn = RawConn::connect(addr).await?;
        conn.send(bytes).await?;
        conn.read_response().await
    })
    .await?
}
