//! The tunnel side of the relay (the `relay` role): connectors attach at `/_ferry/tunnel`, their tunnels are kept
//! in the [`Registry`], tenant settings are pushed to them, and they are cut when their tenant is deleted or their
//! secret revoked.
//!
//! Requests reach these tunnels from this node's client side (`crate::client`, when the node is also a gateway)
//! or from other nodes through the bus (`crate::cluster`). Every attach and detach goes to the registry's event
//! sink, which drives presence and the dispatch-queue subscriptions.

use crate::local::{SendFailure, TunnelSender};
use crate::metrics::Refusal;
use crate::registry::{NewTunnel, Registry, Tunnel};
use crate::tenants::TenantCache;
use ferry_auth::TokenVerifier;
use ferry_http::RequestBody;
use ferry_http::{error_response, Body, ClientInfo};
use ferry_proto::tunnel::{CONTROL, CONTROL_SETTINGS, SETTINGS_PATH};
use ferry_proto::{ErrorCode, ErrorReply, TenantName, TenantSettings};
use ferry_store::{unix_now, ConnectionRecord, Store};
use ferry_tunnel::TunnelOptions;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A tunnel's connection, until it ends (`Err` with why when it broke).
type Connection = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// How long a settings push may take before it is given up (the connector keeps its old settings).
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// This node's connector tunnels.
pub struct Hub {
    pub(crate) node_id: String,
    tunnel_options: TunnelOptions,
    pub(crate) store: Arc<dyn Store>,
    verifier: Arc<dyn TokenVerifier>,
    pub(crate) registry: Registry,
    pub(crate) tenants: Arc<TenantCache>,
    draining: AtomicBool,
}

impl Hub {
    pub fn new(
        node_id: String,
        tunnel_options: TunnelOptions,
        store: Arc<dyn Store>,
        verifier: Arc<dyn TokenVerifier>,
        tenants: Arc<TenantCache>,
    ) -> Arc<Self> {
        Arc::new(Self {
            node_id,
            tunnel_options,
            store,
            verifier,
            registry: Registry::default(),
            tenants,
            draining: AtomicBool::new(false),
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Take no new tunnels from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// The limits of a protocol 2 tunnel: protocol 1's windows and keep-alive, and the most streams the connector
    /// said it takes.
    fn mux_options(&self, max_streams: usize) -> ferry_tunnel::mux::MuxOptions {
        let o = &self.tunnel_options;
        ferry_tunnel::mux::MuxOptions {
            stream_window: o.stream_window,
            connection_window: o.connection_window_in_use(),
            max_streams,
            keepalive_interval: o.keepalive_interval,
            keepalive_timeout: o.keepalive_timeout,
            ..Default::default()
        }
    }

    /// Close every tunnel (after the in-flight requests finished, or at the drain deadline).
    pub fn close_tunnels(&self) -> usize {
        self.registry.close_all()
    }

    /// Register the hub's gauge: open tunnels per tenant (tenants past the metrics cap summed under `_other`).
    pub fn register_metrics(
        self: &Arc<Self>,
        registry: &mut ferry_metrics::prometheus_client::registry::Registry,
    ) {
        let hub = self.clone();
        ferry_metrics::Snapshot::new(
            "ferry_relay_tunnels",
            "Open connector tunnels on this node, per tenant.",
            ferry_metrics::Kind::Gauge,
            move || {
                let cap = &hub.tenants.metrics().cap;
                let mut by_label: std::collections::HashMap<Arc<str>, f64> =
                    std::collections::HashMap::new();
                for tenant in hub.registry.tenants_with_tunnels() {
                    let open = hub.registry.get(&tenant).map_or(0, |e| e.tunnels().len()) as f64;
                    *by_label.entry(cap.lookup(tenant.as_str())).or_default() += open;
                }
                by_label
                    .into_iter()
                    .map(|(tenant, n)| (vec![("tenant", tenant.to_string())], n))
                    .collect()
            },
        )
        .register(registry);
    }

    /// Handle `GET /_ferry/tunnel`: authenticate the connector, answer 101 and attach the tunnel once upgraded.
    /// Either transport is accepted: `Upgrade: ferry-tunnel/1`, or `Upgrade: websocket` with the same stream in
    /// binary messages (docs/protocol.md, "The WebSocket transport").
    pub async fn handle_tunnel(self: &Arc<Self>, mut req: Request<RequestBody>) -> Response<Body> {
        let request_id = ferry_http::request_id(&req);
        let remote_addr = req
            .extensions()
            .get::<ClientInfo>()
            .map(|c| c.remote_addr)
            .unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
        // For the log only: which connector was refused (the header it sent, bounded).
        let connector_id: String = req
            .headers()
            .get(ferry_proto::tunnel::CONNECTOR_ID)
            .and_then(|v| v.to_str().ok())
            .map_or_else(
                || "none given".to_owned(),
                |v| v.chars().take(128).collect(),
            );
        let metrics = self.tenants.metrics().clone();
        let refuse = |why: Refusal, reply: ErrorReply| {
            metrics.refused(why);
            tracing::warn!(
                %remote_addr, connector_id = %connector_id, code = %reply.code,
                "tunnel refused: {}", reply.log_text()
            );
            error_response(&reply, &request_id)
        };
        if self.draining.load(Ordering::SeqCst) {
            return refuse(
                Refusal::Draining,
                ErrorReply::new(
                    ErrorCode::Draining,
                    "the node is draining and takes no new tunnels",
                ),
            );
        }
        let Some(token) = crate::client::bearer_token(req.headers()) else {
            return refuse(
                Refusal::Token,
                ErrorReply::new(ErrorCode::Unauthorized, "a bearer token is required"),
            );
        };
        let claims = match self.verifier.verify_async(token).await {
            Ok(c) => c,
            Err(e) => {
                return refuse(
                    Refusal::Token,
                    ErrorReply::new(ErrorCode::Unauthorized, format!("token refused: {e}")),
                )
            }
        };
        let tenant = claims.tenant;
        let secret_id = claims.secret_id;
        match self.tenants.refresh(&*self.store, &tenant).await {
            Ok((_, Some(_))) => {}
            Ok((_, None)) => {
                return refuse(
                    Refusal::UnknownTenant,
                    ErrorReply::new(
                        ErrorCode::Unauthorized,
                        format!("tenant {tenant} no longer exists"),
                    ),
                )
            }
            Err(e) => {
                return refuse(
                    Refusal::Store,
                    ErrorReply::new(ErrorCode::Internal, "the store could not be read")
                        .with_detail(format!("store: {e}")),
                )
            }
        }
        // A token outlives its secret by up to its lifetime: a revoked or expired secret opens no new tunnel.
        if let Some(id) = &secret_id {
            match self.store.active_secrets(&tenant, unix_now()).await {
                Ok(active) if active.iter().any(|s| &s.id == id) => {}
                Ok(_) => {
                    return refuse(
                        Refusal::SecretRevoked,
                        ErrorReply::new(
                            ErrorCode::Unauthorized,
                            format!("the secret {id} of the token was revoked or expired"),
                        ),
                    )
                }
                Err(e) => {
                    return refuse(
                        Refusal::Store,
                        ErrorReply::new(ErrorCode::Internal, "the store could not be read")
                            .with_detail(format!("store: {e}")),
                    )
                }
            }
        }
        let handshake = match ferry_tunnel::server::parse_handshake(req.headers()) {
            Ok(h) => h,
            Err(reply) => return refuse(Refusal::Handshake, reply),
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        let hub = self.clone();
        let accept = ferry_tunnel::server::accept_headers(&handshake, &self.node_id);
        let transport = handshake.transport;
        let protocol = handshake.protocol;
        let max_streams = handshake.max_streams;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(%remote_addr, tenant = %tenant, "tunnel upgrade failed: {e}");
                    return;
                }
            };
            let io = ferry_tunnel::TunnelIo::new(upgraded, transport, false).await;
            let (sender, connection) = match protocol {
                2 => {
                    let options = hub.mux_options(max_streams);
                    let (mux, _none) =
                        ferry_tunnel::mux::start(hyper_util::rt::TokioIo::new(io), options.clone());
                    let closed = mux.closed();
                    let connection: Connection = Box::pin(async move { Err(closed.await) });
                    (
                        TunnelSender::Mux(ferry_tunnel::exchange::Sender::new(mux, &options)),
                        connection,
                    )
                }
                _ => match ferry_tunnel::server::open(io, &hub.tunnel_options).await {
                    Ok((sender, conn)) => {
                        let connection: Connection =
                            Box::pin(async move { conn.await.map_err(|e| e.to_string()) });
                        (TunnelSender::Http2(sender), connection)
                    }
                    Err(e) => {
                        hub.tenants.metrics().refused(Refusal::Handshake);
                        tracing::warn!(%remote_addr, tenant = %tenant, "tunnel handshake failed: {e}");
                        return;
                    }
                },
            };
            let connector_id = handshake.connector_id.clone();
            let tunnel = hub.registry.attach(
                &tenant,
                NewTunnel {
                    record_id: uuid::Uuid::new_v4().to_string(),
                    connector_id: handshake.connector_id,
                    remote_addr,
                    targets: handshake.targets,
                    secret_id,
                    since: unix_now(),
                    sender,
                },
            );
            let targets: Vec<&str> = tunnel.targets.iter().map(|t| t.as_str()).collect();
            let targets = targets.join(",");
            let version = handshake.version.as_deref().unwrap_or("unknown");
            tracing::info!(tenant = %tenant, connector_id, %remote_addr, targets, version, transport = %transport, protocol, core = tunnel.core, "tunnel attached");
            hub.record_connection(&tunnel);
            hub.tenants.metrics().attached(tenant.as_str());
            hub.push_settings_to(&tunnel);
            // A deletion or revocation applied between the checks above and the attach found no tunnel to cut.
            // Changes are written to the store before they are announced, so a second look now sees them, and
            // the tunnel is cut as if it had been there (the kill is a stored permit: the wait below sees it).
            hub.recheck_after_attach(&tenant, tunnel.secret_id.as_deref())
                .await;
            let result = tokio::select! {
                result = connection => Some(result),
                () = tunnel.kill.notified() => None,
            };
            if result.is_none() {
                // cut: protocol 1's connection ends with its dropped future, protocol 2's is closed here
                tunnel.sender.close();
            }
            hub.registry.detach(&tunnel);
            hub.tenants.metrics().detached(tenant.as_str());
            hub.record_disconnection(&tunnel);
            match result {
                Some(Ok(())) => tracing::info!(tenant = %tenant, connector_id, "tunnel closed"),
                Some(Err(e)) => tracing::warn!(tenant = %tenant, connector_id, "tunnel lost: {e}"),
                None => tracing::info!(tenant = %tenant, connector_id, "tunnel cut by the node"),
            }
        });
        let mut resp = Response::new(ferry_http::empty());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *resp.headers_mut() = accept;
        resp
    }

    /// The tenant changed: re-read it and push its settings to its connectors here (or cut them if it is gone).
    pub async fn tenant_changed(&self, tenant: &TenantName) {
        if !self.registry.has_tunnels(tenant) {
            self.tenants.forget(tenant);
            return;
        }
        match self.tenants.refresh(&*self.store, tenant).await {
            Ok((_, Some(settings))) => self.push_settings(tenant, &settings),
            Ok((_, None)) => self.cut_tenant(tenant),
            Err(error) => {
                tracing::warn!(tenant = %tenant, %error, "tenant re-read failed; the safety-net poll retries")
            }
        }
    }

    /// The tenant was deleted: cut its tunnels now.
    pub fn tenant_deleted(&self, tenant: &TenantName) {
        self.tenants.forget(tenant);
        self.cut_tenant(tenant);
    }

    /// A secret was revoked: cut the tunnels it opened now.
    pub fn secret_revoked(&self, tenant: &TenantName, secret_id: &str) {
        let cut = self
            .registry
            .kill_where(tenant, |t| t.secret_id.as_deref() == Some(secret_id));
        if cut > 0 {
            tracing::info!(tenant = %tenant, secret_id, tunnels = cut, "secret revoked: its tunnels were cut");
        }
    }

    /// After a tunnel of `tenant` attached: cut the tenant's tunnels if it is gone from the store by now, or
    /// those of `secret_id` if that secret was revoked meanwhile. A store that cannot answer leaves them (the
    /// periodic check catches up).
    async fn recheck_after_attach(&self, tenant: &TenantName, secret_id: Option<&str>) {
        match self.tenants.refresh(&*self.store, tenant).await {
            Ok((_, None)) => {
                self.tenants.forget(tenant);
                self.cut_tenant(tenant);
                return;
            }
            Ok((_, Some(_))) => {}
            Err(error) => {
                tracing::debug!(tenant = %tenant, %error, "re-check after attach failed");
                return;
            }
        }
        if let Some(id) = secret_id {
            if let Ok(active) = self.store.active_secrets(tenant, unix_now()).await {
                if !active.iter().any(|s| s.id == id) {
                    self.secret_revoked(tenant, id);
                }
            }
        }
    }

    pub(crate) fn cut_tenant(&self, tenant: &TenantName) {
        let cut = self.registry.kill_where(tenant, |_| true);
        if cut > 0 {
            tracing::info!(tenant = %tenant, tunnels = cut, "tenant deleted: its tunnels were cut");
        }
    }

    /// Send the tenant's settings to each of its connectors on this node.
    pub(crate) fn push_settings(&self, tenant: &TenantName, settings: &TenantSettings) {
        if let Some(entry) = self.registry.get(tenant) {
            for tunnel in entry.tunnels() {
                let settings = settings.clone();
                tokio::spawn(async move { push(&tunnel, &settings).await });
            }
        }
    }

    /// Send the tenant's current settings to one new tunnel.
    fn push_settings_to(self: &Arc<Self>, tunnel: &Arc<Tunnel>) {
        let hub = self.clone();
        let tunnel = tunnel.clone();
        tokio::spawn(async move {
            match hub.tenants.get(&*hub.store, &tunnel.tenant).await {
                // Nothing to say: the connector's configuration stands.
                Ok(Some(settings)) if settings == TenantSettings::default() => {}
                Ok(Some(settings)) => push(&tunnel, &settings).await,
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(tenant = %tunnel.tenant, %error, "cannot read settings for a new tunnel")
                }
            }
        });
    }

    fn record_connection(&self, tunnel: &Tunnel) {
        let record = ConnectionRecord {
            id: tunnel.record_id.clone(),
            tenant: tunnel.tenant.clone(),
            connector_id: tunnel.connector_id.clone(),
            node: self.node_id.clone(),
            remote_addr: tunnel.remote_addr.to_string(),
            connected_at: tunnel.since,
            disconnected_at: None,
        };
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(error) = store.record_connection(&record).await {
                tracing::warn!(tenant = %record.tenant, %error, "cannot record the connection");
            }
        });
    }

    fn record_disconnection(&self, tunnel: &Tunnel) {
        let id = tunnel.record_id.clone();
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(error) = store.record_disconnection(&id, unix_now()).await {
                tracing::warn!(connection = id, %error, "cannot record the disconnection");
            }
        });
    }

    /// Record every open tunnel as disconnected now (at shutdown, before the store closes).
    pub async fn record_all_disconnected(&self) {
        let now = unix_now();
        for tunnel in self.registry.all_tunnels() {
            if let Err(error) = self
                .store
                .record_disconnection(&tunnel.record_id, now)
                .await
            {
                tracing::warn!(connection = tunnel.record_id, %error, "cannot record the disconnection");
            }
        }
    }
}

/// Send one settings push on one tunnel and log the outcome.
async fn push(tunnel: &Tunnel, settings: &TenantSettings) {
    let tenant = &tunnel.tenant;
    let body = match serde_json::to_vec(settings) {
        Ok(body) => body,
        Err(error) => {
            tracing::warn!(tenant = %tenant, %error, "cannot encode settings");
            return;
        }
    };
    let mut req = Request::new(ferry_http::full(body));
    *req.method_mut() = Method::POST;
    match http::Uri::builder()
        .scheme("http")
        .authority("ferry.invalid")
        .path_and_query(SETTINGS_PATH)
        .build()
    {
        Ok(uri) => *req.uri_mut() = uri,
        Err(error) => {
            tracing::warn!(%error, "settings push URI");
            return;
        }
    }
    req.headers_mut()
        .insert(CONTROL, HeaderValue::from_static(CONTROL_SETTINGS));
    req.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let sent = tokio::time::timeout(PUSH_TIMEOUT, async {
        match tunnel.sender.send(req).await {
            Ok(resp) => Ok(resp),
            Err(SendFailure::Unsent(_, why) | SendFailure::Lost(why)) => Err(why),
        }
    })
    .await;
    match sent {
        Ok(Ok(resp)) if resp.status().is_success() => {
            tracing::info!(tenant = %tenant, connector_id = tunnel.connector_id, "settings pushed")
        }
        Ok(Ok(resp)) => tracing::warn!(
            tenant = %tenant, connector_id = tunnel.connector_id, status = resp.status().as_u16(),
            "connector refused the settings push"
        ),
        Ok(Err(error)) => tracing::warn!(
            tenant = %tenant, connector_id = tunnel.connector_id, %error, "settings push failed"
        ),
        Err(_) => tracing::warn!(
            tenant = %tenant, connector_id = tunnel.connector_id, "settings push timed out"
        ),
    }
}
