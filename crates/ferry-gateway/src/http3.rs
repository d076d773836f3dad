//! HTTP/3 on a TLS listener: a QUIC endpoint (quinn) on the UDP port of the listener's TCP port, HTTP/3 (h3)
//! on its connections, and every request handed to the listener's handler as a TCP connection's would be: the
//! same [`ClientInfo`], TLS facts and client-certificate check, the same caps on connections per listener and per
//! client address, the same drain.
//!
//! The QUIC handshake uses the listener's current TLS settings (certificates by SNI, the client-certificate
//! check), rebuilt for QUIC when a reload replaces them ([`crate::tls::Sites::quic`]). Clients learn of HTTP/3
//! from the `Alt-Svc` header that the listener's TCP responses carry (see [`crate::serve`]).
//!
//! Not here: WebSockets and other upgrades over HTTP/3 (extended CONNECT), 0-RTT, and serving on the runtime per
//! core (QUIC connections live on the shared runtime: one UDP socket feeds them all).

use crate::limits::{ConnectionCaps, ConnectionLimits, Permit, RateLimitedLog};
use crate::listener::{read_mode, ListenerMode};
use crate::serve::{prepare_request, Serving, ServingGuard, TlsConn};
use crate::{Handler, ServeOptions};
use bytes::{Buf, Bytes};
use ferry_http::{Body, ClientInfo, RequestBody};
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

type H3Connection = h3::server::Connection<h3_quinn::Connection, Bytes>;
type H3Resolver = h3::server::RequestResolver<h3_quinn::Connection, Bytes>;
type RecvStream = h3::server::RequestStream<h3_quinn::RecvStream, Bytes>;
type SendStream = h3::server::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// How long a QUIC handshake may take (as a TLS handshake over TCP).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server pings an open connection this often, so that a request waiting on a slow upstream is not closed
/// by QUIC's idle timeout; idle connections are closed by the keep-alive timeout instead (as over HTTP/2).
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// QUIC's idle timeout: a peer silent this long (its pings unanswered) is gone.
const QUIC_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

static REFUSED: RateLimitedLog = RateLimitedLog::new(Duration::from_secs(5));
static NO_CONFIG: RateLimitedLog = RateLimitedLog::new(Duration::from_secs(60));

/// Bind the UDP socket of HTTP/3 beside a TCP listener bound at `addr`.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// What the endpoint's connections share with the listener's TCP connections.
pub(crate) struct Shared {
    pub(crate) handler: Handler,
    pub(crate) options: Arc<ServeOptions>,
    pub(crate) limits: Arc<ConnectionLimits>,
    pub(crate) default_caps: ConnectionCaps,
    pub(crate) serving: Arc<Serving>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) mode: Arc<RwLock<Arc<ListenerMode>>>,
    pub(crate) local_addr: SocketAddr,
}

/// The QUIC configuration of one version of the listener's TLS settings.
struct Current {
    sites: Arc<crate::tls::Sites>,
    config: Option<Arc<quinn::ServerConfig>>,
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(quinn::IdleTimeout::try_from(QUIC_IDLE_TIMEOUT).ok())
        .keep_alive_interval(Some(PING_INTERVAL))
        // requests at once per connection, as HTTP/2 clients are offered by hyper's default
        .max_concurrent_bidi_streams(200u32.into());
    Arc::new(transport)
}

/// The QUIC side of `sites`' TLS settings (TLS 1.3 for QUIC): `Err` says why HTTP/3 cannot use them.
fn quic_crypto(
    sites: &crate::tls::Sites,
) -> Result<quinn::crypto::rustls::QuicServerConfig, String> {
    let tls = sites.quic()?;
    quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())
}

/// The QUIC configuration of `sites` with the endpoint's `transport` settings.
fn quic_config(
    sites: &crate::tls::Sites,
    transport: &Arc<quinn::TransportConfig>,
) -> Result<Arc<quinn::ServerConfig>, String> {
    let crypto = quic_crypto(sites)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport.clone());
    Ok(Arc::new(config))
}

/// Whether HTTP/3 can run with `sites` (checked when a listener turns it on): `Err` says why not.
pub(crate) fn check(sites: &crate::tls::Sites) -> Result<(), String> {
    quic_config(sites, &transport()).map(|_| ())
}

/// Serve HTTP/3 on `socket` until the listener stops (`shared.stop`), then let the open connections finish their
/// requests (the TCP side's drain deadline cuts them).
pub(crate) async fn serve(socket: std::net::UdpSocket, shared: Shared) {
    let shared = Arc::new(shared);
    let transport = transport();
    let mut current: Option<Current> = None;
    let endpoint = match quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        // every connection gets its configuration when it is accepted (`accept_with`): this one only lets the
        // endpoint take connections
        Some(quinn::ServerConfig::with_crypto(Arc::new(
            match placeholder_crypto(&shared) {
                Some(c) => c,
                None => return,
            },
        ))),
        socket,
        Arc::new(quinn::TokioRuntime),
    ) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(addr = %shared.local_addr, "HTTP/3 endpoint failed: {e}");
            return;
        }
    };
    let mut stop = shared.stop.clone();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(i) => i,
                None => break,
            },
            _ = stop.changed() => break,
        };
        if *stop.borrow() {
            incoming.refuse();
            break;
        }
        let mode = read_mode(&shared.mode);
        let Some(tls) = mode.tls.as_ref() else {
            // a reload turned TLS off on this listener
            incoming.refuse();
            continue;
        };
        let sites = tls.sites();
        let fresh = current
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.sites, &sites));
        if !fresh {
            let config = match quic_config(&sites, &transport) {
                Ok(c) => Some(c),
                Err(e) => {
                    if let Some(left_out) = NO_CONFIG.admit() {
                        tracing::warn!(addr = %shared.local_addr, left_out, "HTTP/3 connections refused: {e}");
                    }
                    None
                }
            };
            current = Some(Current { sites, config });
        }
        let Some(Current {
            sites,
            config: Some(config),
        }) = current.as_ref()
        else {
            incoming.refuse();
            continue;
        };
        let remote_addr = incoming.remote_address();
        shared
            .limits
            .set_caps(mode.caps.unwrap_or(shared.default_caps));
        let permit = match shared.limits.admit(remote_addr.ip()) {
            Ok(p) => p,
            Err(refusal) => {
                let reply = refusal.reply(remote_addr.ip());
                if let Some(left_out) = REFUSED.admit() {
                    tracing::warn!(%remote_addr, left_out, "HTTP/3 connection refused: {}", reply.message);
                }
                incoming.refuse();
                continue;
            }
        };
        let connecting = match incoming.accept_with(config.clone()) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(%remote_addr, "HTTP/3 connection failed: {e}");
                continue;
            }
        };
        let handler = mode.handler.as_ref().unwrap_or(&shared.handler).clone();
        let conn = Conn {
            shared: shared.clone(),
            handler,
            sites: sites.clone(),
            remote_addr,
            _permit: permit,
            _serving: shared.serving.enter(),
        };
        tokio::spawn(conn.run(connecting));
    }
    // new connections are refused from now on; open ones were told to finish (GOAWAY) by the stop signal
    endpoint.set_server_config(None);
    let _ = stop.wait_for(|s| *s).await;
    shared.serving.all_done().await;
    endpoint.close(
        h3::error::Code::H3_NO_ERROR
            .value()
            .try_into()
            .unwrap_or_default(),
        b"",
    );
    endpoint.wait_idle().await;
}

/// A QUIC configuration to create the endpoint with (the listener's at start).
fn placeholder_crypto(shared: &Shared) -> Option<quinn::crypto::rustls::QuicServerConfig> {
    let mode = read_mode(&shared.mode);
    let sites = mode.tls.as_ref()?.sites();
    match quic_crypto(&sites) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(addr = %shared.local_addr, "HTTP/3 not served: {e}");
            None
        }
    }
}

/// One QUIC connection and what serving it needs.
struct Conn {
    shared: Arc<Shared>,
    handler: Handler,
    sites: Arc<crate::tls::Sites>,
    remote_addr: SocketAddr,
    _permit: Permit,
    _serving: ServingGuard,
}

impl Conn {
    async fn run(self, connecting: quinn::Connecting) {
        let remote_addr = self.remote_addr;
        let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::debug!(%remote_addr, "QUIC handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%remote_addr, "QUIC handshake timed out");
                return;
            }
        };
        let server_name = conn
            .handshake_data()
            .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|d| d.server_name);
        let peer = conn.peer_identity().and_then(|p| {
            p.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
                .ok()
        });
        let site = self.sites.pick(server_name.as_deref()).clone();
        let tls = TlsConn {
            info: Arc::new(site.quic_connection_info(peer.as_deref().map(|p| p.as_slice()))),
            site,
            sites: self.sites.clone(),
        };
        let info = ClientInfo {
            remote_addr,
            local_addr: self.shared.local_addr,
            tls: true,
            listener: self.shared.local_addr,
        };
        let options = &self.shared.options;
        let mut h3: H3Connection = match h3::server::builder()
            // above Ferry's own limit, so that Ferry answers 431 in its own format (as over HTTP/2)
            .max_field_section_size((options.max_header_size * 2) as u64)
            .build(h3_quinn::Connection::new(conn.clone()))
            .await
        {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(%remote_addr, "HTTP/3 connection failed: {e}");
                return;
            }
        };
        let mut stop = self.shared.stop.clone();
        let mut stopping = *stop.borrow();
        if stopping {
            let _ = h3.shutdown(0).await;
        }
        let mut requests = JoinSet::new();
        let keepalive = options.keepalive_timeout;
        let idle = tokio::time::sleep(keepalive);
        tokio::pin!(idle);
        loop {
            tokio::select! {
                accepted = h3.accept(), if !stopping => match accepted {
                    Ok(Some(resolver)) => {
                        requests.spawn(request(
                            resolver,
                            self.handler.clone(),
                            info,
                            tls.clone(),
                            options.header_read_timeout,
                        ));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        if !e.is_h3_no_error() {
                            tracing::debug!(%remote_addr, "HTTP/3 connection ended: {e}");
                        }
                        break;
                    }
                },
                Some(_) = requests.join_next(), if !requests.is_empty() => {
                    if requests.is_empty() {
                        idle.as_mut().reset(Instant::now() + keepalive);
                    }
                }
                () = idle.as_mut(), if requests.is_empty() && !stopping => {
                    tracing::debug!(%remote_addr, "idle HTTP/3 connection closed");
                    stopping = true;
                    let _ = h3.shutdown(0).await;
                }
                changed = stop.changed(), if !stopping => {
                    if changed.is_err() || *stop.borrow() {
                        stopping = true;
                        let _ = h3.shutdown(0).await;
                    }
                }
                else => break,
            }
        }
        // what was accepted finishes; then the connection closes
        while requests.join_next().await.is_some() {}
        conn.close(
            h3::error::Code::H3_NO_ERROR
                .value()
                .try_into()
                .unwrap_or_default(),
            b"",
        );
    }
}

/// One request: its head within the header read timeout, the handler's answer, the answer's body streamed.
async fn request(
    resolver: H3Resolver,
    handler: Handler,
    info: ClientInfo,
    tls: TlsConn,
    header_read_timeout: Duration,
) {
    let remote_addr = info.remote_addr;
    let (req, stream) = match tokio::time::timeout(header_read_timeout, resolver.resolve_request())
        .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!(%remote_addr, "HTTP/3 request refused: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote_addr, timeout = ?header_read_timeout, "HTTP/3 request head not received within the header read timeout");
            return;
        }
    };
    let (mut send, recv) = stream.split();
    let mut req: Request<RequestBody> = req.map(|()| RequestBody::boxed(H3Body::new(recv)));
    let resp = match prepare_request(&mut req, info, Some(&tls)) {
        Some(misdirected) => misdirected,
        None => handler(req).await,
    };
    if let Err(e) = respond(&mut send, resp).await {
        tracing::debug!(%remote_addr, "HTTP/3 response not sent whole: {e}");
    }
}

/// Connection-specific header fields, which HTTP/3 forbids (RFC 9114 §4.2).
const CONNECTION_SPECIFIC: [http::header::HeaderName; 5] = [
    http::header::CONNECTION,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::HeaderName::from_static("keep-alive"),
    http::header::HeaderName::from_static("proxy-connection"),
];

async fn respond(send: &mut SendStream, resp: Response<Body>) -> Result<(), ferry_http::BoxError> {
    let (mut parts, body) = resp.into_parts();
    for name in &CONNECTION_SPECIFIC {
        parts.headers.remove(name);
    }
    send.send_response(Response::from_parts(parts, ())).await?;
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                // the client must not take a cut body for a whole one
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return Err(e);
            }
        };
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) => send.send_data(data).await?,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.send_trailers(trailers).await?;
                    return Ok(());
                }
            }
        }
    }
    send.finish().await?;
    Ok(())
}

/// A request's body as HTTP/3 delivers it: DATA frames, then trailers.
struct H3Body {
    recv: RecvStream,
    data_done: bool,
    done: bool,
}

impl H3Body {
    fn new(recv: RecvStream) -> Self {
        Self {
            recv,
            data_done: false,
            done: false,
        }
    }
}

impl HttpBody for H3Body {
    type Data = Bytes;
    type Error = h3::error::StreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match std::task::ready!(this.recv.poll_recv_data(cx)) {
                Ok(Some(mut buf)) => {
                    let bytes = buf.copy_to_bytes(buf.remaining());
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Ok(None) => this.data_done = true,
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
        let trailers = std::task::ready!(this.recv.poll_recv_trailers(cx));
        this.done = true;
        match trailers {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_pki::Pki;
    use crate::{ClientAuth, Listener, TlsFiles, TlsOptions};

    /// A CA, a server certificate for `localhost` and a client certificate, written to a temp dir.
    fn pki() -> Pki {
        let pki = Pki::new("h3");
        pki.leaf("server", &["localhost"]);
        pki.leaf("client", &["client.test"]);
        pki
    }

    /// Answers with what it saw of the request: method, target, version, body length and digest of its
    /// bytes, the connection's facts.
    fn echo() -> Handler {
        Arc::new(|req: Request<RequestBody>| {
            Box::pin(async move {
                let info = req.extensions().get::<ClientInfo>().copied();
                let tls = req.extensions().get::<Arc<ferry_http::TlsInfo>>().cloned();
                let head = format!("{} {} {:?}", req.method(), req.uri(), req.version());
                let body = req.into_body().collect().await.map(|b| b.to_bytes());
                let text = format!(
                    "{head}\nbody={:?}\ntls={:?}\nclient_verified={}\nremote_loopback={}\n",
                    body.as_ref().map(|b| b.len()).map_err(|e| e.to_string()),
                    tls.as_ref().and_then(|t| t.protocol),
                    tls.as_ref().is_some_and(|t| t.client_verified()),
                    info.is_some_and(|i| i.remote_addr.ip().is_loopback()),
                );
                Response::builder()
                    // connection-specific: dropped on HTTP/3
                    .header("connection", "keep-alive")
                    .body(ferry_http::full(text))
                    .unwrap_or_default()
            })
        })
    }

    fn options() -> ServeOptions {
        ServeOptions::new(
            &ferry_config::HttpSettings::default(),
            Duration::from_secs(5),
        )
    }

    fn tls(pki: &Pki, client_auth: ClientAuth) -> TlsOptions {
        let mut tls = TlsOptions::single(TlsFiles {
            cert: pki.path("server.pem"),
            key: pki.path("server-key.pem"),
        });
        tls.client_auth = client_auth;
        tls.client_ca = Some(pki.path("ca.pem"));
        tls
    }

    async fn client(
        addr: SocketAddr,
        pki: &Pki,
        with_cert: bool,
    ) -> anyhow::Result<ferry_testkit::H3Client> {
        let (cert, key) = (pki.path("client.pem"), pki.path("client-key.pem"));
        let identity = with_cert.then_some((cert.as_path(), key.as_path()));
        ferry_testkit::H3Client::connect(addr, "localhost", &pki.path("ca.pem"), identity).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_over_http3_reach_the_handler_as_tcp_ones_do() -> anyhow::Result<()> {
        let pki = pki();
        let listener = Listener::bind_with(
            ([127, 0, 0, 1], 0).into(),
            Some(tls(&pki, ClientAuth::Optional)),
        )
        .await?
        .with_http3(true)?;
        let addr = listener.local_addr();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(crate::serve(listener, echo(), options(), async move {
            let _ = stop_rx.await;
        }));

        // the TCP side points at HTTP/3
        let tcp = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
                pki.path("ca.pem"),
            )?)?)
            .resolve("localhost", addr)
            .build()?;
        let resp = tcp
            .get(format!("https://localhost:{}/tcp", addr.port()))
            .send()
            .await?;
        assert_eq!(
            resp.headers().get("alt-svc").and_then(|v| v.to_str().ok()),
            Some(format!("h3=\":{}\"; ma=86400", addr.port()).as_str())
        );

        let mut h3 = client(addr, &pki, false).await?;
        let resp = h3.get("/hello?x=1").await?;
        assert_eq!(resp.status, 200, "{resp:?}");
        let text = resp.text();
        assert!(
            text.starts_with(&format!(
                "GET https://localhost:{}/hello?x=1 HTTP/3.0\n",
                addr.port()
            )),
            "{text}"
        );
        assert!(
            text.contains(
                "body=Ok(0)\ntls=Some(\"TLSv1.3\")\nclient_verified=false\nremote_loopback=true"
            ),
            "{text}"
        );
        assert!(resp.header("connection").is_none(), "{resp:?}");
        // a body in many frames, on the same connection
        let body = bytes::Bytes::from(vec![7u8; 1 << 20]);
        let resp = h3.request(http::Method::POST, "/upload", &[], body).await?;
        assert!(resp.text().contains("body=Ok(1048576)"), "{}", resp.text());
        h3.close().await;

        // a client certificate is checked as over TCP
        let mut h3 = client(addr, &pki, true).await?;
        let resp = h3.get("/").await?;
        assert!(
            resp.text().contains("client_verified=true"),
            "{}",
            resp.text()
        );

        // draining: the open connection is told to go, the endpoint stops, serve returns
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(15), served).await??;
        let closed = tokio::time::timeout(Duration::from_secs(5), h3.connection().closed()).await;
        assert!(closed.is_ok(), "the server closed the connection at drain");
        let after = tokio::time::timeout(Duration::from_secs(3), client(addr, &pki, false)).await;
        assert!(
            !matches!(after, Ok(Ok(_))),
            "no HTTP/3 after the listener stopped"
        );
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quic_connections_count_under_the_listener_caps() -> anyhow::Result<()> {
        let pki = pki();
        let listener =
            Listener::bind_with(([127, 0, 0, 1], 0).into(), Some(tls(&pki, ClientAuth::Off)))
                .await?
                .with_http3(true)?;
        let addr = listener.local_addr();
        let mut options = options();
        options.max_connections_per_ip = 1;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(crate::serve(listener, echo(), options, async move {
            let _ = stop_rx.await;
        }));
        let mut first = client(addr, &pki, false).await?;
        assert_eq!(first.get("/").await?.status, 200);
        let second =
            tokio::time::timeout(Duration::from_secs(10), client(addr, &pki, false)).await?;
        let err = second.err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(err.to_lowercase().contains("refused"), "{err}");
        // the first one's place is given back when it closes
        first.close().await;
        let mut third = crate::http3::tests::eventually_connect(addr, &pki).await?;
        assert_eq!(third.get("/").await?.status, 200);
        third.close().await;
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(15), served).await??;
        Ok(())
    }

    /// A client connected within a few seconds (a closed connection's place is given back once the server
    /// learnt it closed).
    async fn eventually_connect(
        addr: SocketAddr,
        pki: &Pki,
    ) -> anyhow::Result<ferry_testkit::H3Client> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match client(addr, pki, false).await {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    #[tokio::test]
    async fn http3_needs_tls_13_and_a_free_udp_port() -> anyhow::Result<()> {
        let pki = pki();
        let plain = Listener::bind(([127, 0, 0, 1], 0).into(), None).await?;
        let err = plain.with_http3(true).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("http3: HTTP/3 needs a TLS listener"));

        let mut only12 = tls(&pki, ClientAuth::Off);
        only12.protocols = vec!["TLSv1.2".into()];
        let l = Listener::bind_with(([127, 0, 0, 1], 0).into(), Some(only12)).await?;
        let err = l
            .with_http3(true)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("TLSv1.3"), "{err}");

        let l = Listener::bind_with(([127, 0, 0, 1], 0).into(), Some(tls(&pki, ClientAuth::Off)))
            .await?;
        let taken = std::net::UdpSocket::bind(l.local_addr())?;
        let err = l
            .with_http3(true)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("bind"), "{err}");
        drop(taken);
        Ok(())
    }
}
