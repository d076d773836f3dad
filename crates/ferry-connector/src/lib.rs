//! The connector agent as a library: [`run`] validates a [`ConnectorConfig`], then keeps one tunnel to Ferry open
//! (token → dial → serve, reconnecting with backoff) and relays every stream to its target, until `shutdown`
//! resolves and the tunnel is drained (docs/protocol.md §1, §6, §8).
//!
//! Owns: the connection loop, token handling, and the per-stream service (`relay`): target selection, header
//! and URI rules, error replies, upgrades. Does not own: the tunnel's wire protocol (ferry-tunnel), reading the
//! configuration or signals (the binary).
#![forbid(unsafe_code)]

mod metrics;
mod relay;
mod token;

use token::TokenError;

use ferry_config::{ConnectorConfig, TransportMode};
use ferry_proto::{TargetName, TenantSettings};
use ferry_tunnel::backoff::Backoff;
use ferry_tunnel::client::{self, DialError, DialOptions, ProxyMode};
use ferry_tunnel::proxy::{Proxy, ProxyConfigError, ProxyError, ProxySettings};
use ferry_tunnel::{Transport, TunnelError, TunnelIo, TunnelOptions};
use relay::{Relay, Target, Timeouts};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A tunnel that stayed up this long resets the backoff to its minimum.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Why the connector could not start. Failures while running (token, dial, lost tunnel) are logged and retried,
/// never returned.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A setting is missing or invalid; `setting` names it (`connector.server`, `connector.targets[1].url`, …).
    #[error("{setting}: {message}")]
    Config { setting: String, message: String },
    /// The TLS configuration (system roots, `ca_file`) could not be built.
    #[error("connector.ca_file: {0}")]
    Tls(#[source] TunnelError),
    /// The proxy settings (`proxy`, `proxy_auth_file`, `HTTPS_PROXY`, …) are not usable.
    #[error("connector.proxy: {0}")]
    Proxy(#[source] ProxyConfigError),
    /// A tunnel's thread or its runtime could not be started.
    #[error("cannot start a tunnel thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A tunnel's thread panicked (a bug: the log has the panic's message).
    #[error("a tunnel thread panicked")]
    Panicked,
    /// The token endpoint refused the credentials and `exit_on_auth_failure` is set.
    #[error("the token endpoint refused client {client_id} ({error}: {reason}); check the tenant and its secret")]
    AuthFailed {
        client_id: String,
        error: String,
        reason: String,
    },
}

fn config_error(setting: impl Into<String>, message: impl Into<String>) -> ConnectorError {
    ConnectorError::Config {
        setting: setting.into(),
        message: message.into(),
    }
}

/// The validated settings of a run.
struct Settings {
    server: String,
    tenant: String,
    token_url: String,
    connector_id: String,
    target_names: Vec<TargetName>,
    targets: Vec<Target>,
}

fn validate(config: &ConnectorConfig) -> Result<Settings, ConnectorError> {
    let server = config
        .server
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| config_error("connector.server", "is required (Ferry's base URL)"))?;
    let server = server.trim_end_matches('/').to_owned();
    match server.parse::<http::Uri>() {
        Ok(uri)
            if matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.authority().is_some()
                && uri.query().is_none() => {}
        _ => {
            return Err(config_error(
                "connector.server",
                format!("{server:?} must look like http(s)://host[:port]"),
            ))
        }
    }
    let tenant = config
        .tenant
        .as_ref()
        .ok_or_else(|| config_error("connector.tenant", "is required"))?
        .as_str()
        .to_owned();
    if config.secret.as_ref().is_none_or(|s| s.is_empty()) {
        return Err(config_error("connector.secret", "is required"));
    }
    if config.targets.is_empty() {
        return Err(config_error(
            "connector.targets",
            "at least one target is required",
        ));
    }
    let mut targets = Vec::new();
    let mut target_names: Vec<TargetName> = Vec::new();
    for (i, t) in config.targets.iter().enumerate() {
        if target_names.contains(&t.name) {
            return Err(config_error(
                format!("connector.targets[{i}].name"),
                format!("target {:?} is listed twice", t.name.as_str()),
            ));
        }
        let target =
            Target::parse(t).map_err(|m| config_error(format!("connector.targets[{i}].url"), m))?;
        targets.push(target);
        target_names.push(t.name.clone());
    }
    let token_url = match config
        .token_url
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(url) => {
            let ok = url.parse::<http::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
            });
            if !ok {
                return Err(config_error(
                    "connector.token_url",
                    format!("{url:?} must be an http(s) URL"),
                ));
            }
            url.to_owned()
        }
        None => format!("{server}{}", ferry_proto::tunnel::TOKEN_PATH),
    };
    let connector_id = match config
        .connector_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(id) => {
            if id.len() > 128 || !ferry_proto::is_valid_request_id(id) {
                return Err(config_error(
                    "connector.connector_id",
                    "1 to 128 letters, digits, '-', '_', '.' or ':'",
                ));
            }
            id.to_owned()
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    if !matches!(config.tunnel_protocol, 1 | 2) {
        return Err(config_error(
            "connector.tunnel_protocol",
            format!(
                "{} is not a tunnel protocol: 2 (the default) or 1",
                config.tunnel_protocol
            ),
        ));
    }
    if config.max_concurrent_streams == 0 {
        return Err(config_error(
            "connector.max_concurrent_streams",
            "must be at least 1",
        ));
    }
    Ok(Settings {
        server,
        tenant,
        token_url,
        connector_id,
        target_names,
        targets,
    })
}

/// Run the connector until `shutdown` resolves.
///
/// Validates the configuration (`server`, `tenant`, `secret` and at least one target are required; the error
/// names the setting), then opens `connector.tunnels` tunnels, each on a thread of its own with a single-threaded
/// runtime, and keeps each open: fetch a token (shared by the tunnels, reused while valid for at least another
/// minute) → dial → serve the tunnel until it ends → wait with backoff → again. Every failure is logged at `warn`
/// with the delay before the next attempt. When `shutdown` resolves every tunnel is drained: GOAWAY, requests in
/// flight finish (up to `drain_timeout`), then this returns `Ok(())`.
///
/// Why a thread per tunnel: a tunnel is one HTTP/2 connection whose task every relayed request passes through.
/// On a multi-threaded runtime the stream's task and the connection's task run on different threads, and each
/// request costs a thread wake-up (a `futex` call) or two; with the tunnel, its streams and their target
/// connections on one thread there are none, and more tunnels use more cores (docs/performance.md, "Tunnels per
/// connector").
pub async fn run(
    config: ConnectorConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ConnectorError> {
    run_on(config, Threads::PerTunnel, shutdown).await
}

/// Where the tunnels of a run are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// Each on a thread of its own with a single-threaded runtime: what `ferry connector` does.
    PerTunnel,
    /// As tasks of the caller's runtime: for a program that runs many connectors in one process (a test with
    /// thousands of tenants), where a thread each would be too many.
    Caller,
}

/// [`run`], with the tunnels served where `threads` says.
pub async fn run_on(
    config: ConnectorConfig,
    threads: Threads,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ConnectorError> {
    let settings = validate(&config)?;
    let mut pins = Vec::new();
    for (i, pin) in config.pin_sha256.iter().enumerate() {
        pins.push(
            pin.parse::<ferry_tunnel::tls::Pin>()
                .map_err(|e| config_error(format!("connector.pin_sha256[{i}]"), e.to_string()))?,
        );
    }
    let roots = client::root_store(config.ca_file.as_deref()).map_err(ConnectorError::Tls)?;
    let plain_tls = client::client_config_pinned(roots, pins).map_err(ConnectorError::Tls)?;
    let mut tunnel_tls = plain_tls.clone();
    tunnel_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tunnel_tls = Arc::new(tunnel_tls);
    let proxies = ProxySettings::resolve(
        config.proxy.as_deref(),
        config.proxy_auth_file.as_deref(),
        |name| std::env::var(name).ok(),
    )
    .map_err(ConnectorError::Proxy)?;
    let server_proxy = proxies
        .for_url(&settings.server)
        .map_err(ConnectorError::Proxy)?;
    let token_proxy = proxies
        .for_url(&settings.token_url)
        .map_err(ConnectorError::Proxy)?;

    let metrics = metrics::ConnectorMetrics::default();
    // the metrics listener, when asked for: stopped when this function returns
    let _metrics_task = match config.metrics_listen {
        Some(addr) => {
            let (bound, task) = metrics::spawn(addr, metrics.registry())
                .await
                .map_err(|e| {
                    config_error(
                        "connector.metrics_listen",
                        format!("cannot listen on {addr}: {e}"),
                    )
                })?;
            tracing::info!(addr = %bound, "metrics listener started");
            Some(AbortOnDrop(task))
        }
        None => None,
    };
    let secret = config.secret.clone().unwrap_or_default();
    let token_request = token::TokenRequest::from_config(&config, &settings.tenant)
        .map_err(|(setting, message)| config_error(setting, message))?;
    let tokens = token::TokenSource::new(
        settings.token_url.clone(),
        settings.tenant.clone(),
        secret,
        plain_tls.clone(),
        config.connect_timeout,
    )
    .with_request(token_request)
    .via_proxy(token_proxy);
    let base_tunnel_opts = TunnelOptions {
        keepalive_interval: config.keepalive_interval,
        keepalive_timeout: config.keepalive_timeout,
        max_concurrent_streams: config.max_concurrent_streams,
        ..TunnelOptions::default()
    };
    let count = config.tunnel_count();
    let proxy_name = server_proxy
        .as_ref()
        .map_or_else(|| "none".to_owned(), Proxy::to_string);
    tracing::info!(
        server = %settings.server, tenant = %settings.tenant, connector_id = %settings.connector_id,
        targets = ?settings.target_names.iter().map(TargetName::as_str).collect::<Vec<_>>(),
        proxy = %proxy_name, transport = config.transport.as_str(), tunnels = count,
        "connector starting"
    );
    let shared = Arc::new(Shared {
        config,
        settings,
        tunnel_tls,
        plain_tls,
        server_proxy,
        metrics,
        tokens: tokio::sync::Mutex::new(tokens),
        base_tunnel_opts,
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut handles = Vec::new();
    let mut running = 0;
    for index in 0..count {
        let shared = shared.clone();
        let mut stop = stop_rx.clone();
        let done = done_tx.clone();
        let span = tracing::info_span!("tunnel", n = index + 1);
        if threads == Threads::Caller {
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                };
                let result =
                    tracing::Instrument::instrument(tunnel_loop(shared, stopped), span).await;
                let _ = done.send(result);
            });
            running += 1;
            continue;
        }
        let spawned = std::thread::Builder::new()
            .name(format!("ferry-tunnel-{}", index + 1))
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(ConnectorError::Thread)?;
                    let stopped = async move {
                        // a dropped sender (run's future dropped) stops the tunnels too
                        let _ = stop.wait_for(|stop| *stop).await;
                    };
                    runtime.block_on(tracing::Instrument::instrument(
                        tunnel_loop(shared, stopped),
                        span,
                    ))
                }))
                .unwrap_or(Err(ConnectorError::Panicked));
                let _ = done.send(result);
            });
        match spawned {
            Ok(thread) => {
                handles.push(thread);
                running += 1;
            }
            Err(e) => {
                let _ = stop_tx.send(true);
                return Err(ConnectorError::Thread(e));
            }
        }
    }
    drop(done_tx);
    tokio::pin!(shutdown);
    let mut outcome = Ok(());
    tokio::select! {
        () = &mut shutdown => {}
        // a tunnel ends on its own only with an error that ends the connector (exit_on_auth_failure)
        Some(result) = done_rx.recv() => {
            running -= 1;
            outcome = result;
        }
    }
    let _ = stop_tx.send(true);
    while running > 0 {
        match done_rx.recv().await {
            Some(Err(e)) if outcome.is_ok() => outcome = Err(e),
            Some(_) => {}
            None => break,
        }
        running -= 1;
    }
    // every thread has sent its result and dropped its runtime: joining is immediate
    for thread in handles {
        let _ = thread.join();
    }
    if outcome.is_ok() {
        tracing::info!("connector stopped");
    }
    outcome
}

/// What the tunnels of one run share.
struct Shared {
    config: ConnectorConfig,
    settings: Settings,
    tunnel_tls: Arc<rustls::ClientConfig>,
    /// With no ALPN protocols set: for targets, each of whose clients sets its own.
    plain_tls: rustls::ClientConfig,
    server_proxy: Option<Proxy>,
    metrics: metrics::ConnectorMetrics,
    /// One token for all the tunnels: the first to need one fetches it, the others wait and reuse it.
    tokens: tokio::sync::Mutex<token::TokenSource>,
    base_tunnel_opts: TunnelOptions,
}

/// Keep one tunnel open until `shutdown` resolves (then drain it), or until the node refuses the credentials
/// and `exit_on_auth_failure` is set. Runs on its own thread's runtime (or the caller's, [`Threads::Caller`]):
/// the tunnel's streams are spawned there, and its [`Relay`] (with the target connections it keeps) is its own.
async fn tunnel_loop(
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConnectorError> {
    let Shared {
        config,
        settings,
        tunnel_tls,
        plain_tls,
        server_proxy,
        metrics,
        tokens,
        base_tunnel_opts,
    } = &*shared;
    let relay = Arc::new(
        Relay::new(
            settings.tenant.clone(),
            settings.targets.clone(),
            plain_tls.clone(),
            Timeouts {
                connect: config.connect_timeout,
                response: config.response_timeout,
            },
        )
        .with_metrics(metrics),
    );
    let mut backoff = Backoff::new(config.reconnect_min_delay, config.reconnect_max_delay);
    let server = settings.server.as_str();
    let connector_id = settings.connector_id.as_str();
    // The way to the node that worked last (or that is known to be needed): kept across reconnects.
    let mut way = Way {
        transport: match config.transport {
            TransportMode::Websocket => Transport::WebSocket,
            TransportMode::Auto | TransportMode::Upgrade => Transport::Upgrade,
        },
        proxy_mode: ProxyMode::Connect,
    };
    tokio::pin!(shutdown);

    loop {
        // Settings pushed by the node apply from the next tunnel (keep-alive) and the next delay (reconnect).
        let pushed = relay.pushed_settings();
        let tunnel_opts = TunnelOptions {
            keepalive_interval: pushed
                .keepalive_interval_ms
                .map_or(base_tunnel_opts.keepalive_interval, Duration::from_millis),
            ..base_tunnel_opts.clone()
        };
        let attempt = async {
            let token = tokens
                .lock()
                .await
                .token()
                .await
                .map_err(AttemptError::Token)?;
            let mut opts = DialOptions {
                server: settings.server.clone(),
                token,
                connector_id: settings.connector_id.clone(),
                targets: settings.target_names.clone(),
                tls: tunnel_tls.clone(),
                transport: way.transport,
                proxy: server_proxy.clone().map(|p| (p, way.proxy_mode)),
                protocol: config.tunnel_protocol,
                max_streams: config.max_concurrent_streams,
            };
            // At most: CONNECT refused → the request in absolute form → its upgrade stripped → a WebSocket.
            for _ in 0..3 {
                let error =
                    match tokio::time::timeout(config.connect_timeout, client::dial(&opts)).await {
                        Ok(Ok(dialed)) => return Ok((dialed, opts.transport, opts.proxy)),
                        Ok(Err(error)) => error,
                        Err(_) => return Err(AttemptError::DialTimeout(config.connect_timeout)),
                    };
                if let Some((proxy, mode @ ProxyMode::Connect)) = &mut opts.proxy {
                    if error.connect_refused() && settings.server.starts_with("http://") {
                        tracing::warn!(
                            server, proxy = %proxy, %error,
                            "the proxy refused CONNECT; sending the tunnel request through it as plain http"
                        );
                        *mode = ProxyMode::Forward;
                        continue;
                    }
                }
                if config.transport == TransportMode::Auto
                    && opts.transport == Transport::Upgrade
                    && error.suggests_websocket()
                {
                    tracing::warn!(
                        server, %error,
                        "the tunnel upgrade was refused or stripped on the way; trying the websocket transport"
                    );
                    opts.transport = Transport::WebSocket;
                    continue;
                }
                return Err(AttemptError::Dial(error));
            }
            Err(AttemptError::Dial(DialError::InvalidServer {
                url: settings.server.clone(),
                reason: "no way to the node worked".to_owned(),
            }))
        };
        let attempt = tokio::select! {
            result = attempt => result,
            () = &mut shutdown => return Ok(()),
        };
        let delay = match attempt {
            Ok((dialled, transport, proxy)) => {
                let client::Dialled {
                    io,
                    node_id,
                    protocol,
                } = dialled;
                way.transport = transport;
                let via = match &proxy {
                    Some((proxy, mode)) => {
                        way.proxy_mode = *mode;
                        format!("{proxy} ({})", mode.as_str())
                    }
                    None => "direct".to_owned(),
                };
                tracing::info!(
                    server, node_id = %node_id, connector_id, transport = %transport, via = %via, protocol,
                    "tunnel established"
                );
                let io: TunnelIo = io;
                let up_since = Instant::now();
                metrics.connects.inc();
                metrics.tunnel_up.inc();
                let (drain_tx, drain_rx) = oneshot::channel::<()>();
                let stream_relay = relay.clone();
                let service = hyper::service::service_fn(move |req| {
                    let relay = stream_relay.clone();
                    // Boxed: hyper spawns each stream's future as a task, and a small future is cheaper to
                    // move into one (docs/performance.md, "Changes and their effect").
                    Box::pin(async move { Ok::<_, Infallible>(relay.handle(req).await) })
                });
                let drain = async move {
                    let _ = drain_rx.await;
                };
                let serve: Pin<Box<dyn Future<Output = Result<(), String>> + Send>> =
                    if protocol == 2 {
                        let options = ferry_tunnel::mux::MuxOptions {
                            stream_window: tunnel_opts.stream_window,
                            connection_window: tunnel_opts.connection_window_in_use(),
                            max_streams: tunnel_opts.max_concurrent_streams as usize,
                            keepalive_interval: tunnel_opts.keepalive_interval,
                            keepalive_timeout: tunnel_opts.keepalive_timeout,
                            ..Default::default()
                        };
                        let stream_relay = relay.clone();
                        let handle = move |req| {
                            let relay = stream_relay.clone();
                            async move { relay.handle(req).await }
                        };
                        Box::pin(ferry_tunnel::exchange::serve(
                            hyper_util::rt::TokioIo::new(io),
                            options,
                            handle,
                            drain,
                        ))
                    } else {
                        let serve = client::serve(io, service, &tunnel_opts, drain);
                        Box::pin(async move { serve.await.map_err(|e| e.to_string()) })
                    };
                tokio::pin!(serve);
                let ended = tokio::select! {
                    result = &mut serve => result,
                    () = &mut shutdown => {
                        tracing::info!(
                            server, node_id = %node_id, connector_id, timeout = ?config.drain_timeout,
                            "draining tunnel"
                        );
                        let _ = drain_tx.send(());
                        match tokio::time::timeout(config.drain_timeout, serve).await {
                            Ok(Ok(())) => tracing::info!(server, node_id = %node_id, "tunnel drained"),
                            Ok(Err(error)) => tracing::warn!(
                                server, node_id = %node_id, %error, "tunnel failed while draining"
                            ),
                            Err(_) => tracing::warn!(
                                server, node_id = %node_id, timeout = ?config.drain_timeout,
                                "drain timeout: closing the tunnel with requests in flight"
                            ),
                        }
                        return Ok(());
                    }
                };
                metrics.tunnel_up.dec();
                apply_reconnect_bounds(&relay.pushed_settings(), config, &mut backoff);
                if up_since.elapsed() >= STABLE_AFTER {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                match ended {
                    Ok(()) => tracing::warn!(
                        server, node_id = %node_id, connector_id, ?delay, "tunnel closed by the node, reconnecting"
                    ),
                    Err(error) => tracing::warn!(
                        server, node_id = %node_id, connector_id, %error, ?delay, "tunnel lost, reconnecting"
                    ),
                }
                delay
            }
            Err(error) => {
                if let AttemptError::Dial(DialError::Refused { status, .. }) = &error {
                    if *status == http::StatusCode::UNAUTHORIZED {
                        tokens.lock().await.invalidate();
                    }
                }
                apply_reconnect_bounds(&relay.pushed_settings(), config, &mut backoff);
                let mut delay = backoff.next_delay();
                let refused = match &error {
                    AttemptError::Token(e) => e.credentials_refused(),
                    _ => None,
                };
                if let Some(refused) = refused {
                    let client_id = tokens.lock().await.client_id().to_owned();
                    let reason = refused
                        .description
                        .unwrap_or_else(|| "no reason given".to_owned());
                    if config.exit_on_auth_failure {
                        tracing::error!(
                            server, connector_id, client_id = %client_id, error = %refused.error,
                            reason = %reason,
                            "the node refused this connector's credentials (unknown tenant, or a wrong, revoked \
                             or expired secret); exiting (exit_on_auth_failure)"
                        );
                        return Err(ConnectorError::AuthFailed {
                            client_id,
                            error: refused.error,
                            reason,
                        });
                    }
                    delay = delay.max(config.auth_failure_delay);
                    tracing::error!(
                        server, connector_id, client_id = %client_id, error = %refused.error, reason = %reason,
                        ?delay,
                        "the node refused this connector's credentials (unknown tenant, or a wrong, revoked or \
                         expired secret); retrying will not help until the secret is fixed: next attempt in \
                         {}", humantime::format_duration(delay)
                    );
                } else {
                    match &error {
                        AttemptError::Dial(DialError::Refused { status, code, body }) => {
                            tracing::warn!(
                                server, connector_id, status = status.as_u16(), code = code.as_deref().unwrap_or(""),
                                body = %body, ?delay, "node refused the tunnel"
                            )
                        }
                        AttemptError::Token(TokenError::Refused { url, status, body }) => {
                            tracing::warn!(
                                server, connector_id, token_url = %url, status = status.as_u16(), body = %body, ?delay,
                                "token request refused"
                            )
                        }
                        AttemptError::Token(TokenError::Proxy {
                            url,
                            status,
                            what,
                            message,
                        }) => {
                            tracing::warn!(
                                server, connector_id, token_url = %url, status = status.map_or(0, |s| s.as_u16()),
                                error = %message, ?delay, "{what} (token request)"
                            )
                        }
                        AttemptError::Dial(DialError::Proxy(error)) => {
                            let what = proxy_failure(error);
                            tracing::warn!(
                                server, connector_id, status = error.status().map_or(0, |s| s.as_u16()),
                                error = %error, ?delay, "{what}"
                            )
                        }
                        other => tracing::warn!(
                            server, connector_id, error = %other, ?delay, "tunnel attempt failed"
                        ),
                    }
                }
                delay
            }
        };
        metrics.reconnects.inc();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = &mut shutdown => return Ok(()),
        }
    }
}

/// The log message for a proxy's failure.
fn proxy_failure(error: &ProxyError) -> &'static str {
    match error {
        ProxyError::AuthRequired { .. } => "proxy requires authentication",
        ProxyError::Refused { .. } => "proxy refused the connection to the node",
        ProxyError::Unreachable { .. } => "proxy cannot reach the node",
        ProxyError::Connect { .. } | ProxyError::Tls { .. } | ProxyError::Http { .. } => {
            "proxy unreachable or failed"
        }
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Which transport and proxy mode to dial with.
struct Way {
    transport: Transport,
    proxy_mode: ProxyMode,
}

/// Use the reconnect delays pushed by the node, or the configured ones where it pushed none.
fn apply_reconnect_bounds(
    pushed: &TenantSettings,
    config: &ConnectorConfig,
    backoff: &mut Backoff,
) {
    let min = pushed
        .reconnect_min_delay_ms
        .map_or(config.reconnect_min_delay, Duration::from_millis);
    let max = pushed
        .reconnect_max_delay_ms
        .map_or(config.reconnect_max_delay, Duration::from_millis)
        .max(min);
    if backoff.bounds() != (min, max) {
        tracing::info!(?min, ?max, "reconnect delays changed by the node");
        backoff.set_bounds(min, max);
    }
}

/// Why one connection attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error(transparent)]
    Token(TokenError),
    #[error(transparent)]
    Dial(DialError),
    #[error("connecting to the node took longer than {0:?}")]
    DialTimeout(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_config::{HostMode, Secret, TargetConfig};

    fn config() -> ConnectorConfig {
        ConnectorConfig {
            server: Some("https://ferry.example.com/".to_owned()),
            tenant: Some("demo".parse().expect("tenant")),
            secret: Some(Secret::new("s3cret")),
            targets: vec![TargetConfig {
                name: "app".parse().expect("name"),
                url: "http://127.0.0.1:8080/base".to_owned(),
                host: HostMode::Target,
            }],
            ..ConnectorConfig::default()
        }
    }

    fn setting_of(config: ConnectorConfig) -> String {
        match validate(&config) {
            Err(ConnectorError::Config { setting, .. }) => setting,
            Err(other) => panic!("unexpected {other}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn validates_and_defaults() {
        let s = validate(&config()).expect("valid");
        assert_eq!(s.server, "https://ferry.example.com");
        assert_eq!(s.token_url, "https://ferry.example.com/oauth/token");
        assert_eq!(s.connector_id.len(), 36);
        assert_eq!(s.target_names.len(), 1);
    }

    #[test]
    fn errors_name_the_setting() {
        let mut c = config();
        c.server = None;
        assert_eq!(setting_of(c), "connector.server");
        let mut c = config();
        c.server = Some("ferry.example.com".to_owned());
        assert_eq!(setting_of(c), "connector.server");
        let mut c = config();
        c.tenant = None;
        assert_eq!(setting_of(c), "connector.tenant");
        let mut c = config();
        c.secret = Some(Secret::new(""));
        assert_eq!(setting_of(c), "connector.secret");
        let mut c = config();
        c.targets.clear();
        assert_eq!(setting_of(c), "connector.targets");
        let mut c = config();
        c.targets.push(c.targets[0].clone());
        assert_eq!(setting_of(c), "connector.targets[1].name");
        let mut c = config();
        c.targets[0].url = "ftp://x".to_owned();
        assert_eq!(setting_of(c), "connector.targets[0].url");
        let mut c = config();
        c.token_url = Some("nope".to_owned());
        assert_eq!(setting_of(c), "connector.token_url");
        let mut c = config();
        c.connector_id = Some("a b".to_owned());
        assert_eq!(setting_of(c), "connector.connector_id");
    }

    #[tokio::test]
    async fn run_refuses_invalid_config_before_connecting() {
        let mut c = config();
        c.secret = None;
        let err = run(c, std::future::pending()).await.expect_err("invalid");
        assert_eq!(err.to_string(), "connector.secret: is required");
    }
}
