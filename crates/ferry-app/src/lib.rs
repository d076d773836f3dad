//! Wiring of a Ferry node: opens the store, loads the token issuer, builds the relay, routes the public
//! listener's paths, and runs the ordered shutdown.
//!
//! Owns: [`Listeners::bind`] (every socket bound before anything is served), [`run`] (the node until shutdown),
//! the path routing of the public listener, and the shutdown order: not ready → no new requests → drain
//! in-flight (deadline) → close tunnels. Does not own: any protocol logic (relay, tunnel, auth), flags or signals
//! (the binary).
#![forbid(unsafe_code)]

mod bridge;
mod routes;

use ferry_auth::TokenIssuer;
use ferry_config::Config;
use ferry_gateway::{Listener, ServeOptions, TlsFiles};
use ferry_relay::Relay;
use ferry_store::Store;
use ferry_tunnel::TunnelOptions;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The audience of connector tokens.
pub const TUNNEL_AUDIENCE: &str = "ferry-tunnel";
/// Token requests verified at once (each costs an argon2 hash).
const TOKEN_CHECKS_AT_ONCE: usize = 4;

/// Why the node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("public listener")]
    Listener(#[from] ferry_gateway::GatewayError),
    #[error("store")]
    Store(#[from] ferry_store::StoreError),
    #[error("token issuer")]
    Auth(#[from] ferry_auth::AuthError),
    #[error("cannot bind the admin listener on {addr}")]
    AdminListener {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gateway config")]
    Gateway(#[from] ferry_edge::EdgeError),
}

/// Every socket of a node, bound before serving.
pub struct Listeners {
    pub public: Listener,
    /// The management API's listener (`[server.admin]`); `None` when disabled.
    pub admin: Option<tokio::net::TcpListener>,
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Self, AppError> {
        // the gateway config is checked before anything is bound or announced
        ferry_edge::Gateway::validate(&config.gateway)?;
        let s = &config.server;
        let tls = match (&s.tls_cert, &s.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        let public = Listener::bind_with(s.listen, tls_options(config, tls)?).await?;
        let admin = match s.admin.enabled {
            true => Some(
                tokio::net::TcpListener::bind(s.admin.listen)
                    .await
                    .map_err(|source| AppError::AdminListener {
                        addr: s.admin.listen,
                        source,
                    })?,
            ),
            false => None,
        };
        Ok(Self { public, admin })
    }

    /// `http://ADDR` of the admin listener, if there is one.
    pub fn admin_url(&self) -> Option<String> {
        let addr = self.admin.as_ref()?.local_addr().ok()?;
        Some(format!("http://{addr}"))
    }
}

/// The public listener's TLS: `server.tls_cert`/`tls_key` as the default certificate, plus `[gateway.tls]`
/// (certificates by SNI, client certificates, reloading).
fn tls_options(
    config: &Config,
    default: Option<TlsFiles>,
) -> Result<Option<ferry_gateway::TlsOptions>, AppError> {
    let g = &config.gateway.tls;
    let Some(default) = default else {
        if *g != ferry_config::GatewayTls::default() {
            return Err(ferry_edge::EdgeError::Config {
                path: "gateway.tls".into(),
                message: "needs server.tls_cert and server.tls_key".into(),
            }
            .into());
        }
        return Ok(None);
    };
    Ok(Some(ferry_gateway::TlsOptions {
        default,
        sni: g
            .certificates
            .iter()
            .map(|c| {
                let files = TlsFiles {
                    cert: c.cert.clone(),
                    key: c.key.clone(),
                };
                (c.hosts.clone(), files)
            })
            .collect(),
        client_auth: match g.client_auth {
            ferry_config::ClientAuth::Off => ferry_gateway::ClientAuth::Off,
            ferry_config::ClientAuth::Optional => ferry_gateway::ClientAuth::Optional,
            ferry_config::ClientAuth::Required => ferry_gateway::ClientAuth::Required,
        },
        client_ca: g.client_ca.clone(),
        reload_interval: Some(g.reload_interval).filter(|d| !d.is_zero()),
    }))
}

/// Open the configured store: the database of `server.database_url` (SQLite or PostgreSQL), or without it the
/// embedded SQLite file in the data directory.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, AppError> {
    let url = config.server.database_url.as_ref().map(|u| u.expose());
    Ok(ferry_store::open_url(url, &config.server.data_dir).await?)
}

/// Shared state of the public listener's routes.
pub(crate) struct Node {
    pub relay: Arc<Relay>,
    pub issuer: TokenIssuer,
    pub ready: AtomicBool,
    pub max_header_size: usize,
    /// Bounds concurrent argon2 verifications of the token endpoint.
    pub token_checks: tokio::sync::Semaphore,
    /// The edge gateway's route table (`[gateway]`); without routes it claims no request.
    pub edge: Arc<ferry_edge::Gateway>,
    /// The public listener's URL when it names a specific address: the discovery document's base without
    /// `public_url`.
    pub listener_url: Option<String>,
}

/// Run a node until `shutdown` resolves, then drain and return.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AppError> {
    run_with_source(config, None, listeners, shutdown).await
}

/// [`run`], knowing where `config` came from: with a config file, its `[gateway]` section is reloaded on SIGHUP
/// and on change (read again with the same layering), unless the routes live in a `gateway.file`.
pub async fn run_with_source(
    config: Config,
    source: Option<ferry_config::ConfigSource>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AppError> {
    let s = &config.server;
    let node_id = s
        .node_id
        .clone()
        .unwrap_or_else(|| format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let store = open_store(&config).await?;
    // The built-in issuer, the external OIDC provider if configured, and the tunnel verifier accepting either;
    // `auth.admin_check` is the management API's OIDC admin check. Key maintenance and JWKS refresh run until
    // the end of `run`.
    let auth = ferry_auth::NodeAuth::start(store.clone(), &s.auth, TUNNEL_AUDIENCE).await?;
    let _auth_tasks = auth.tasks;
    let issuer = auth.issuer;
    let admin_check = auth.admin_check;
    let tunnel_options = TunnelOptions {
        keepalive_interval: s.tunnel.keepalive_interval,
        keepalive_timeout: s.tunnel.keepalive_timeout,
        ..TunnelOptions::default()
    };
    let relay = Relay::new(
        node_id.clone(),
        s.relay.clone(),
        tunnel_options,
        store.clone(),
        auth.verifier.clone(),
    );
    let edge = ferry_edge::Gateway::new(
        &config.gateway,
        Arc::new(routes::RelayRoutes(relay.clone())),
    )?;
    edge.spawn_reload(&config.gateway, source);
    let node = Arc::new(Node {
        edge,
        relay: relay.clone(),
        issuer,
        ready: AtomicBool::new(true),
        max_header_size: s.http.max_header_size,
        token_checks: tokio::sync::Semaphore::new(TOKEN_CHECKS_AT_ONCE),
        listener_url: (!listeners.public.local_addr().ip().is_unspecified())
            .then(|| listeners.public.url()),
    });
    let options = ServeOptions::new(&s.http, s.drain_timeout);
    let background = relay.spawn_background(listeners.public.url());
    // Changes made through this node's API reach the relay at once (other nodes poll the store); bearer tokens
    // that are not admin keys go to the external provider's admin-role check when one is configured.
    let admin = listeners.admin.map(|listener| {
        let metrics = {
            let relay = relay.clone();
            let edge = node.edge.clone();
            Arc::new(move || format!("{}{}", relay.render_metrics(), edge.render_metrics()))
        };
        let mut api = ferry_admin::AdminApi::new(store)
            .notifier(Arc::new(bridge::RelayNotifier(relay.clone())))
            .metrics(metrics)
            .max_body_size(s.admin.max_body_size);
        if let Some(check) = admin_check {
            api = api.token_check(Arc::new(bridge::AdminTokens(check)));
        }
        ferry_admin::AdminServer::spawn(listener, api)
    });
    tracing::info!(node_id, addr = %listeners.public.local_addr(), "node started");
    let drain_started = {
        let node = node.clone();
        async move {
            shutdown.await;
            tracing::info!("shutdown requested: not ready, taking no new requests");
            node.ready.store(false, Ordering::SeqCst);
            node.relay.start_draining();
        }
    };
    ferry_gateway::serve(
        listeners.public,
        routes::handler(node),
        options,
        drain_started,
    )
    .await;
    if let Some(admin) = admin {
        admin.shutdown(s.drain_timeout).await;
    }
    let closed = relay.close_tunnels();
    drop(background);
    relay.flush().await;
    tracing::info!(tunnels = closed, "tunnels closed, node stopped");
    Ok(())
}
