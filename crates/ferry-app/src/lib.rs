//! Wiring of a Ferry node: opens the store, loads the token issuer, builds the relay, routes the public
//! listener's paths, and runs the ordered shutdown.
//!
//! Owns: [`Listeners::bind`] (every socket bound before anything is served), [`run`] (the node until shutdown),
//! the path routing of the public listener, and the shutdown order: not ready → no new requests → drain
//! in-flight (deadline) → close tunnels. Does not own: any protocol logic (relay, tunnel, auth), flags or signals
//! (the binary).
#![forbid(unsafe_code)]

mod routes;

use ferry_auth::{IssuerSettings, TokenIssuer};
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
}

/// Every socket of a node, bound before serving.
pub struct Listeners {
    pub public: Listener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Self, AppError> {
        let s = &config.server;
        let tls = match (&s.tls_cert, &s.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        Ok(Self {
            public: Listener::bind(s.listen, tls.as_ref()).await?,
        })
    }
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
}

/// Run a node until `shutdown` resolves, then drain and return.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AppError> {
    let s = &config.server;
    let node_id = s
        .node_id
        .clone()
        .unwrap_or_else(|| format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let store = open_store(&config).await?;
    let issuer = TokenIssuer::load_or_create(
        store.clone(),
        IssuerSettings {
            issuer: s.auth.issuer.clone(),
            audience: TUNNEL_AUDIENCE.to_owned(),
            ttl: s.auth.token_ttl,
        },
    )
    .await?;
    let tunnel_options = TunnelOptions {
        keepalive_interval: s.tunnel.keepalive_interval,
        keepalive_timeout: s.tunnel.keepalive_timeout,
        ..TunnelOptions::default()
    };
    let relay = Relay::new(
        node_id.clone(),
        s.relay.clone(),
        tunnel_options,
        store,
        issuer.verifier(),
    );
    let node = Arc::new(Node {
        relay: relay.clone(),
        issuer,
        ready: AtomicBool::new(true),
        max_header_size: s.http.max_header_size,
        token_checks: tokio::sync::Semaphore::new(TOKEN_CHECKS_AT_ONCE),
    });
    let options = ServeOptions {
        max_header_size: s.http.max_header_size,
        header_read_timeout: s.http.header_read_timeout,
        drain_timeout: s.drain_timeout,
    };
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
    let closed = relay.close_tunnels();
    tracing::info!(tunnels = closed, "tunnels closed, node stopped");
    Ok(())
}
