//! The PROXY protocol (HAProxy's, version 1 text and version 2 binary) on listeners behind an L4 load balancer:
//! the header the balancer sends before anything else on a connection, naming the client's real address. The
//! header is read with `peek` and then consumed to its exact length, so that the TLS handshake or the HTTP
//! request after it is read as if nothing came first. Parsing is the `ppp` crate's.

use ppp::{HeaderResult, PartialResult};
use std::net::SocketAddr;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The longest version 1 header (its specification's bound, line end included).
const V1_MAX: usize = 107;

/// The largest header taken (version 2 with its TLVs; AWS and GCP send well under 1 KiB).
const MAX_HEADER: usize = 4096;

/// Why a connection's PROXY header was not taken (the connection is closed).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyHeaderError {
    #[error("closed before its PROXY protocol header")]
    Closed,
    #[error("no PROXY protocol header within the header read timeout")]
    TimedOut,
    #[error("not a PROXY protocol header: {0}")]
    Malformed(String),
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Read the PROXY header at the start of `stream` by `deadline`. `Some(client)` for a proxied connection, `None`
/// for the balancer's own (v2 `LOCAL`, v1 `UNKNOWN`: health checks), whose address is the peer's.
pub(crate) async fn read_header(
    stream: &mut TcpStream,
    deadline: Instant,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut buf = vec![0u8; MAX_HEADER];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .map_err(|_| ProxyHeaderError::TimedOut)??;
        if n == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        let parsed = HeaderResult::parse(&buf[..n]);
        // `ppp` calls a v1 header cut right after the source port's space invalid rather than incomplete: a v1
        // header without its line end yet, shorter than the longest one (107 bytes), is waited for
        let v1_unfinished = matches!(parsed, HeaderResult::V1(Err(_)))
            && n < V1_MAX
            && !buf[..n].windows(2).any(|w| w == b"\r\n");
        if parsed.is_incomplete() || v1_unfinished {
            if n == buf.len() {
                return Err(ProxyHeaderError::Malformed("longer than 4 KiB".into()));
            }
            // part of the header is here: wait a moment for the rest (peek would return the same bytes at once)
            if Instant::now() >= deadline {
                return Err(ProxyHeaderError::TimedOut);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            continue;
        }
        let (len, client) = match parsed {
            HeaderResult::V1(Ok(h)) => {
                let client = match h.addresses {
                    ppp::v1::Addresses::Tcp4(a) => {
                        Some(SocketAddr::new(a.source_address.into(), a.source_port))
                    }
                    ppp::v1::Addresses::Tcp6(a) => {
                        Some(SocketAddr::new(a.source_address.into(), a.source_port))
                    }
                    ppp::v1::Addresses::Unknown => None,
                };
                (h.header.len(), client)
            }
            HeaderResult::V2(Ok(h)) => {
                let client = match (h.command, h.addresses) {
                    (ppp::v2::Command::Local, _) => None,
                    (_, ppp::v2::Addresses::IPv4(a)) => {
                        Some(SocketAddr::new(a.source_address.into(), a.source_port))
                    }
                    (_, ppp::v2::Addresses::IPv6(a)) => {
                        Some(SocketAddr::new(a.source_address.into(), a.source_port))
                    }
                    _ => None,
                };
                (h.header.len(), client)
            }
            HeaderResult::V1(Err(e)) => return Err(ProxyHeaderError::Malformed(format!("{e}"))),
            HeaderResult::V2(Err(e)) => return Err(ProxyHeaderError::Malformed(format!("{e}"))),
        };
        stream.read_exact(&mut buf[..len]).await?;
        return Ok(client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = l.accept().await.expect("accept");
        (client, server)
    }

    fn soon() -> Instant {
        Instant::now() + std::time::Duration::from_secs(5)
    }

    /// A v1 header split right after the source port's space (which `ppp` calls invalid, not incomplete) is
    /// waited for, not refused.
    #[tokio::test]
    async fn a_version_1_header_that_arrives_in_pieces_is_waited_for() {
        let whole = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n";
        for cut in 1..whole.len() {
            let (mut c, mut s) = pair().await;
            c.write_all(&whole[..cut]).await.expect("write");
            let rest = &whole[cut..];
            let (read, ()) = tokio::join!(read_header(&mut s, soon()), async {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                c.write_all(rest).await.expect("write");
            });
            assert_eq!(
                read.map_err(|e| e.to_string()),
                Ok(Some("203.0.113.7:51234".parse().expect("addr"))),
                "cut after {:?}",
                String::from_utf8_lossy(&whole[..cut])
            );
        }
    }

    #[tokio::test]
    async fn version_1_and_2_headers_give_the_client_and_leave_the_rest() {
        let (mut c, mut s) = pair().await;
        c.write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n")
            .await
            .expect("write");
        let client = read_header(&mut s, soon()).await.expect("v1");
        assert_eq!(client, Some("203.0.113.7:51234".parse().expect("addr")));
        let mut rest = [0u8; 16];
        s.read_exact(&mut rest).await.expect("rest");
        assert_eq!(&rest, b"GET / HTTP/1.1\r\n");

        let (mut c, mut s) = pair().await;
        let header = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "[2001:db8::9]:40000".parse::<SocketAddr>().expect("addr"),
                "[2001:db8::1]:443".parse::<SocketAddr>().expect("addr"),
            ),
        )
        .build()
        .expect("v2 header");
        // split across two writes: the rest is waited for
        c.write_all(&header[..10]).await.expect("write");
        let reader = tokio::spawn(async move {
            let client = read_header(&mut s, soon()).await;
            (client, s)
        });
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        c.write_all(&header[10..]).await.expect("write");
        c.write_all(b"\x16\x03\x01").await.expect("write");
        let (client, mut s) = reader.await.expect("task");
        assert_eq!(
            client.expect("v2"),
            Some("[2001:db8::9]:40000".parse().expect("addr"))
        );
        let mut rest = [0u8; 3];
        s.read_exact(&mut rest).await.expect("rest");
        assert_eq!(
            &rest, b"\x16\x03\x01",
            "the TLS record after the header is untouched"
        );
    }

    #[tokio::test]
    async fn local_unknown_and_garbage() {
        let (mut c, mut s) = pair().await;
        c.write_all(b"PROXY UNKNOWN\r\n").await.expect("write");
        assert_eq!(read_header(&mut s, soon()).await.expect("unknown"), None);
        let (mut c, mut s) = pair().await;
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        assert!(matches!(
            read_header(&mut s, soon()).await,
            Err(ProxyHeaderError::Malformed(_))
        ));
        let (_c, mut s) = pair().await;
        let deadline = Instant::now() + std::time::Duration::from_millis(50);
        assert!(matches!(
            read_header(&mut s, deadline).await,
            Err(ProxyHeaderError::TimedOut)
        ));
    }
}
