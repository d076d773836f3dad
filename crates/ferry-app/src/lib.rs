//! Wiring of a Ferry node by its roles: opens the store and the bus, loads the token issuer, builds the sides of
//! the relay the roles ask for (gateway: the client side and the edge routes; relay: the tunnel side;
//! management: the admin API; worker: the cluster chores), joins the cluster, routes the public listener's
//! paths, and runs the ordered shutdown.
//!
//! Owns: [`Listeners::bind`] (every socket bound before anything is served), [`run`] (the node until shutdown),
//! the node id ([`node_id`]), the path routing of the public listener, and the shutdown order: not ready →
//! grace for load balancers → no new requests or tunnels → drain in-flight (deadline) → leave presence → stop
//! the worker (its lease released) → record disconnections → close tunnels, store and bus. Does not own: any
//! protocol logic (relay, tunnel, auth, cluster), flags or signals (the binary).
#![forbid(unsafe_code)]

mod bridge;
mod listeners;
mod metrics;
mod routes;
mod supervise;

use ferry_auth::TokenIssuer;
use ferry_config::{Config, Role};
use ferry_gateway::{Listener, ServeOptions, TlsFiles};
use ferry_relay::{Cluster, Dispatcher, Hub, NodeIdentity, Relay};
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
    #[error("bus")]
    Bus(#[from] ferry_bus::BusError),
    #[error("cannot start the threads of the runtime per core")]
    Cores(#[source] std::io::Error),
    #[error("background task {name:?} failed: {why}")]
    TaskFailed { name: &'static str, why: String },
    #[error(
        "another `ferry serve` is running on the SQLite store {path} (it holds {lock}): one SQLite store serves one \
         node; stop the other node, give this one its own --data-dir, or run several nodes on PostgreSQL \
         (docs/cluster.md)"
    )]
    StoreInUse { path: String, lock: String },
    #[error("node id file {path}")]
    NodeId {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Every socket of a node, bound before serving.
pub struct Listeners {
    pub public: Listener,
    /// `[[server.listeners]]`, in order, with their settings: each serves what `public` serves, or redirects to
    /// HTTPS; a TLS one shares `public`'s TLS settings.
    pub extra: Vec<(Listener, ferry_config::ExtraListener)>,
    /// The management API's listener (`[server.admin]`); `None` when disabled.
    pub admin: Option<tokio::net::TcpListener>,
    /// Called once the node is ready to serve (store open, signing keys loaded, bus connected), just before it
    /// accepts: the binary prints its `ferry listening on` lines here, so that whoever waits for them can use
    /// the node's store and API at once.
    on_ready: Option<Box<dyn FnOnce() + Send>>,
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Self, AppError> {
        // the gateway config is checked before anything is bound or announced
        ferry_edge::Gateway::validate_on(
            &config.gateway,
            &ferry_edge::ListenerNames::of_config(&config.server),
        )?;
        check_endpoint_listeners(&config.server)?;
        let s = &config.server;
        let tls = match (&s.tls_cert, &s.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        let public = Listener::bind_with(s.listen, tls_options(config, tls.clone())?)
            .await?
            .with_proxy_protocol(s.proxy_protocol)
            .with_http3(s.http3)
            .map_err(|e| listener_error(("server.http3".into(), http3_error(e))))?;
        let mut extra = Vec::with_capacity(s.listeners.len());
        let shared_tls = public.tls_reloader();
        for (i, l) in s.listeners.iter().enumerate() {
            // a listener with TLS settings of its own gets them (every file read now), the others share public's
            let own = match l.has_own_tls() {
                true => Some(
                    listeners::start_own_tls(i, l, &config.gateway.tls, tls.as_ref())
                        .map_err(listener_error)?,
                ),
                false => None,
            };
            let tls = match l.tls {
                true => own.as_ref().or(shared_tls.as_ref()),
                false => None,
            };
            let listener = Listener::bind_sharing(l.listen, tls)?
                .with_proxy_protocol(l.proxy_protocol)
                .with_http3(l.http3)
                .map_err(|e| {
                    listener_error((format!("server.listeners[{i}].http3"), http3_error(e)))
                })?;
            extra.push((listener, l.clone()));
        }
        let admin = match s.admin.enabled && config.node.roles.has(Role::Management) {
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
        Ok(Self {
            public,
            extra,
            admin,
            on_ready: None,
        })
    }

    /// Call `announce` once the node is ready to serve on these listeners (see [`Listeners`]).
    pub fn when_ready(mut self, announce: impl FnOnce() + Send + 'static) -> Self {
        self.on_ready = Some(Box::new(announce));
        self
    }

    /// The URLs of the `[[server.listeners]]`, in order.
    pub fn extra_urls(&self) -> Vec<String> {
        self.extra.iter().map(|(l, _)| l.url()).collect()
    }

    /// `http://ADDR` of the admin listener, if there is one.
    pub fn admin_url(&self) -> Option<String> {
        let addr = self.admin.as_ref()?.local_addr().ok()?;
        Some(format!("http://{addr}"))
    }
}

/// What `ferry config check` adds to parsing: everything a start checks before it binds, nothing bound or
/// served. The gateway's routes and upstreams are compiled (names, URLs, templates, upstream CA and client
/// certificate files) and the listener's TLS settings built with every file read.
pub fn check_config(config: &Config) -> Result<(), AppError> {
    ferry_edge::Gateway::validate_on(
        &config.gateway,
        &ferry_edge::ListenerNames::of_config(&config.server),
    )?;
    check_endpoint_listeners(&config.server)?;
    let default = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let main_tls = tls_options(config, default.clone())?;
    if let Some(options) = &main_tls {
        options.load_files()?;
    }
    let http3 = |key: String, options: Option<&ferry_gateway::TlsOptions>| match options {
        None => Err(listener_error((key, "HTTP/3 needs a TLS listener".into()))),
        Some(o) => o
            .check_http3()
            .map_err(|e| listener_error((key, http3_error(e)))),
    };
    if config.server.http3 {
        http3("server.http3".into(), main_tls.as_ref())?;
    }
    for (i, l) in config.server.listeners.iter().enumerate() {
        let own = match l.has_own_tls() {
            true => Some(
                listeners::own_tls_options(i, l, &config.gateway.tls, default.as_ref())
                    .and_then(|options| {
                        options
                            .load_files()
                            .map_err(|e| listeners::tls_error(i, l, e))?;
                        Ok(options)
                    })
                    .map_err(listener_error)?,
            ),
            false => None,
        };
        if l.http3 && l.tls {
            http3(
                format!("server.listeners[{i}].http3"),
                own.as_ref().or(main_tls.as_ref()),
            )?;
        }
    }
    Ok(())
}

/// `server.relay.listeners` and `server.tunnel.listeners` name listeners that exist.
fn check_endpoint_listeners(server: &ferry_config::ServerConfig) -> Result<(), AppError> {
    let known = server.listener_names();
    for (key, names) in [
        ("server.relay.listeners", &server.relay.listeners),
        ("server.tunnel.listeners", &server.tunnel.listeners),
    ] {
        if let Some(unknown) = names.iter().find(|n| !known.contains(&n.as_str())) {
            return Err(listener_error((
                key.to_owned(),
                format!(
                    "no listener named {unknown:?} (server.listen is \"main\"; the names are {})",
                    known.join(", ")
                ),
            )));
        }
    }
    Ok(())
}

/// The addresses of the listeners `names` names (`None`: every listener, as for an empty list).
fn endpoint_listeners(
    names: &[String],
    bound: &ferry_edge::ListenerNames,
) -> Option<Vec<std::net::SocketAddr>> {
    if names.is_empty() {
        return None;
    }
    Some(names.iter().filter_map(|n| bound.address(n)).collect())
}

/// Why a listener cannot serve HTTP/3, without the key the caller names.
pub(crate) fn http3_error(e: ferry_gateway::GatewayError) -> String {
    match e {
        ferry_gateway::GatewayError::Settings { message, .. } => message,
        ferry_gateway::GatewayError::Bind { addr, source } => {
            format!("UDP port {addr} for HTTP/3: {source}")
        }
        e => e.to_string(),
    }
}

/// An error of a `[[server.listeners]]` entry's TLS settings, by its key.
fn listener_error((path, message): (String, String)) -> AppError {
    AppError::Gateway(ferry_edge::EdgeError::Config { path, message })
}

/// The public listener's TLS: `server.tls_cert`/`tls_key` as the default certificate, plus `[gateway.tls]`
/// (certificates by SNI, client certificates, versions and suites, reloading).
fn tls_options(
    config: &Config,
    default: Option<TlsFiles>,
) -> Result<Option<ferry_gateway::TlsOptions>, AppError> {
    gateway_tls_options(&config.gateway.tls, default).map_err(AppError::from)
}

/// The [`ferry_gateway::TlsOptions`] of `[gateway.tls]` with `default` as the default certificate (`None`: no
/// TLS, and then `[gateway.tls]` must be empty).
pub(crate) fn gateway_tls_options(
    g: &ferry_config::GatewayTls,
    default: Option<TlsFiles>,
) -> Result<Option<ferry_gateway::TlsOptions>, ferry_edge::EdgeError> {
    let Some(default) = default else {
        if *g != ferry_config::GatewayTls::default() {
            return Err(ferry_edge::EdgeError::Config {
                path: "gateway.tls".into(),
                message: "needs server.tls_cert and server.tls_key".into(),
            });
        }
        return Ok(None);
    };
    let client_auth = |mode: ferry_config::ClientAuth| match mode {
        ferry_config::ClientAuth::Off => ferry_gateway::ClientAuth::Off,
        ferry_config::ClientAuth::Optional => ferry_gateway::ClientAuth::Optional,
        ferry_config::ClientAuth::OptionalNoCa => ferry_gateway::ClientAuth::OptionalNoCa,
        ferry_config::ClientAuth::Required => ferry_gateway::ClientAuth::Required,
    };
    Ok(Some(ferry_gateway::TlsOptions {
        default,
        ocsp_response: g.ocsp_response.clone(),
        sni: g
            .certificates
            .iter()
            .map(|c| ferry_gateway::SniSite {
                names: c.hosts.clone(),
                files: TlsFiles {
                    cert: c.cert.clone(),
                    key: c.key.clone(),
                },
                ocsp_response: c.ocsp_response.clone(),
                client_auth: c.client_auth.map(client_auth),
                client_ca: c.client_ca.clone(),
            })
            .collect(),
        client_auth: client_auth(g.client_auth),
        client_ca: g.client_ca.clone(),
        client_crl: g.client_crl.clone(),
        verify_depth: g.verify_depth,
        protocols: g.protocols.clone(),
        cipher_suites: g.cipher_suites.clone(),
        reload_interval: Some(g.reload_interval).filter(|d| !d.is_zero()),
        ocsp_stapling: g.ocsp_stapling,
        ocsp_responder: g.ocsp_responder.clone(),
    }))
}

/// How a reload of the config file changes `[gateway.tls]`: on the public listener, whose TLS settings every TLS
/// listener shares (prepared with every file read before any is changed). `None` when it does not speak TLS.
fn tls_reload(config: &Config, public: &Listener) -> Option<ferry_edge::TlsReload> {
    let reloader = public.tls_reloader()?;
    let default = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => return None,
    };
    Some(Box::new(move |tls: &ferry_config::GatewayTls| {
        let options = gateway_tls_options(tls, Some(default.clone()))
            .map_err(|e| e.to_string())?
            .ok_or("gateway.tls: no TLS listener")?;
        let prepared = reloader.prepare(options).map_err(|e| e.to_string())?;
        Ok(Box::new(move || prepared.commit()) as Box<dyn FnOnce() + Send>)
    }))
}

/// Open the configured store: the database of `server.database_url` (SQLite or PostgreSQL), or without it the
/// embedded SQLite file in the data directory.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, AppError> {
    let url = config.server.database_url.as_ref().map(|u| u.expose());
    Ok(ferry_store::open_url(url, &config.server.data_dir).await?)
}

/// Shared state of the public listener's routes; a part is `None` when this node does not run its role.
pub(crate) struct Node {
    /// The client side of the relay (`gateway` role).
    pub relay: Option<Arc<Relay>>,
    /// The tunnel side of the relay (`relay` role).
    pub hub: Option<Arc<Hub>>,
    /// This node in its cluster: serves other nodes' requests on the node link when links are on.
    pub cluster: Arc<Cluster>,
    pub issuer: Arc<TokenIssuer>,
    pub ready: AtomicBool,
    pub max_header_size: usize,
    /// Bounds concurrent argon2 verifications of the token endpoint.
    pub token_checks: tokio::sync::Semaphore,
    /// The edge gateway's route table (`[gateway]`, `gateway` role); without routes it claims no request.
    pub edge: Option<Arc<ferry_edge::Gateway>>,
    /// The token endpoint's results, for `/metrics`.
    pub token_metrics: metrics::TokenMetrics,
    /// The public listener's URL when it names a specific address: the discovery document's base without
    /// `public_url`.
    pub listener_url: Option<String>,
    /// The listeners (bound addresses) whose `/relay/…` paths reach the relay; `None`: every one.
    pub relay_on: Option<Vec<std::net::SocketAddr>>,
    /// The listeners that take tunnels; `None`: every one.
    pub tunnel_on: Option<Vec<std::net::SocketAddr>>,
}

impl Node {
    /// Whether `req` came in on one of `on`'s listeners (`None`: any).
    pub(crate) fn arrived_on<B>(
        on: &Option<Vec<std::net::SocketAddr>>,
        req: &http::Request<B>,
    ) -> bool {
        match on {
            None => true,
            Some(addrs) => req
                .extensions()
                .get::<ferry_http::ClientInfo>()
                .is_some_and(|c| addrs.contains(&c.listener)),
        }
    }
}

/// Run a node until `shutdown` resolves, then drain and return.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AppError> {
    run_with_source(config, None, listeners, shutdown).await
}

/// This node's id: `node.id`, else the one kept in the data directory (`node-id`), else a new one, kept there.
pub fn node_id(config: &Config) -> Result<String, AppError> {
    if let Some(id) = &config.node.id {
        return Ok(id.clone());
    }
    let dir = &config.server.data_dir;
    let path = dir.join(NODE_ID_FILE);
    let keep = |source| AppError::NodeId {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim().to_owned();
            ferry_config::check_node_id(&id)
                .map_err(|m| keep(std::io::Error::new(std::io::ErrorKind::InvalidData, m)))?;
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            // the data directory holds the store's keys: private from the start (docs/security.md)
            let mut dirs = std::fs::DirBuilder::new();
            dirs.recursive(true);
            let mut file = std::fs::OpenOptions::new();
            file.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
                dirs.mode(0o700);
                file.mode(0o600);
            }
            dirs.create(dir).map_err(keep)?;
            use std::io::Write as _;
            file.open(&path)
                .and_then(|mut f| f.write_all(format!("{id}\n").as_bytes()))
                .map_err(keep)?;
            Ok(id)
        }
        Err(e) => Err(keep(e)),
    }
}

/// Take the lock that keeps a second `ferry serve` off the SQLite store in `file`: an exclusive lock on
/// `FILE.lock` beside it, released when the returned file is dropped or the process ends (also by `kill -9`).
/// `None` where the file system cannot lock (the node then starts with a warning).
fn lock_sqlite_store(file: &std::path::Path) -> Result<Option<std::fs::File>, AppError> {
    let lock_path = std::path::PathBuf::from(format!("{}.lock", file.display()));
    let in_use = || AppError::StoreInUse {
        path: file.display().to_string(),
        lock: lock_path.display().to_string(),
    };
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut dirs = std::fs::DirBuilder::new();
        dirs.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            dirs.mode(0o700);
        }
        if let Err(error) = dirs.create(dir) {
            tracing::warn!(dir = %dir.display(), %error, "cannot create the store's directory for its lock");
            return Ok(None);
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let lock = match options.open(&lock_path) {
        Ok(f) => f,
        Err(error) => {
            tracing::warn!(lock = %lock_path.display(), %error, "cannot open the store's lock file; starting without it");
            return Ok(None);
        }
    };
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(std::fs::TryLockError::WouldBlock) => Err(in_use()),
        Err(std::fs::TryLockError::Error(error)) => {
            tracing::warn!(lock = %lock_path.display(), %error, "cannot lock the store; starting without the lock");
            Ok(None)
        }
    }
}

/// The file in the data directory that keeps a generated node id.
pub const NODE_ID_FILE: &str = "node-id";

/// [`run`], knowing where `config` came from: with a config file, its `[gateway]` section is reloaded on SIGHUP
/// and on change (read again with the same layering), unless the routes live in a `gateway.file`.
pub async fn run_with_source(
    config: Config,
    source: Option<ferry_config::ConfigSource>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AppError> {
    let s = &config.server;
    let n = &config.node;
    let roles = n.roles;
    let node_id = node_id(&config)?;
    let started_at = ferry_store::unix_now();
    let database_url = s.database_url.as_ref().map(|u| u.expose());
    // one node per SQLite store: held until this function returns
    let _store_lock = match ferry_store::sqlite_file(database_url, &s.data_dir) {
        Some(file) => lock_sqlite_store(&file)?,
        None => None,
    };
    // every store call and bus message is measured for /metrics (docs/metrics.md)
    let metered_store = Arc::new(ferry_store::MeteredStore::new(open_store(&config).await?));
    let store: Arc<dyn Store> = metered_store.clone();
    if let Some(store) = ferry_store::describe_url(database_url, &s.data_dir) {
        tracing::info!(%store, "store opened");
    }
    // The built-in issuer, the external OIDC provider if configured, and the tunnel verifier accepting either;
    // `auth.admin_check` is the management API's OIDC admin check. Key maintenance and JWKS refresh run until
    // the end of `run`.
    // Signing keys: every node loads them (and creates the first one of an empty store, atomically); rotating and
    // retiring them is the active worker's job.
    let auth = ferry_auth::NodeAuth::start_with(
        store.clone(),
        &s.auth,
        TUNNEL_AUDIENCE,
        ferry_auth::KeyDuty::LoadOnly,
    )
    .await?;
    let _auth_tasks = auth.tasks;
    let issuer = Arc::new(auth.issuer);
    let admin_check = auth.admin_check;
    let oidc_sign_in = auth.sign_in;
    let bus_unmetered = ferry_bus::connect(
        n.transport.expose(),
        &ferry_bus::BusOptions {
            connection_name: node_id.clone(),
            credentials_file: n.bus.credentials_file.clone(),
            ca_file: n.bus.ca_file.clone(),
            client_cert: n.bus.client_cert.clone(),
            client_key: n.bus.client_key.clone(),
        },
    )
    .await?;
    let metered_bus = Arc::new(ferry_bus::MeteredBus::new(bus_unmetered));
    let bus: Arc<dyn ferry_bus::Bus> = metered_bus.clone();
    // what this node knows of tenants, shared by both sides of the relay: a change seen by either is seen by both
    let relay_metrics = Arc::new(ferry_relay::RelayMetrics::new(s.admin.metrics_max_tenants));
    let tenants = Arc::new(
        ferry_relay::TenantCache::new(n.cluster.store_poll_interval)
            .with_metrics(relay_metrics.clone()),
    );
    let hub = roles.has(Role::Relay).then(|| {
        let tunnel_options = TunnelOptions {
            keepalive_interval: s.tunnel.keepalive_interval,
            keepalive_timeout: s.tunnel.keepalive_timeout,
            ..TunnelOptions::default()
        };
        Hub::new(
            node_id.clone(),
            tunnel_options,
            store.clone(),
            auth.verifier.clone(),
            tenants.clone(),
        )
    });
    let address = n.address.clone().unwrap_or_else(|| listeners.public.url());
    let cluster = Cluster::start(
        bus.clone(),
        NodeIdentity {
            node_id: node_id.clone(),
            roles: roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(","),
            address: address.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at,
        },
        n.cluster.clone(),
        hub.clone(),
    )
    .await?;
    {
        let signer = issuer.clone();
        let me = node_id.clone();
        cluster.enable_links(ferry_relay::cluster::link::LinkSettings {
            send: n.cluster.links,
            issue_token: Arc::new(move || {
                signer
                    .issue_node(&me)
                    .map(|t| (t.access_token, std::time::Duration::from_secs(t.expires_in)))
                    .map_err(|e| e.to_string())
            }),
            verifier: issuer.builtin_verifier(),
            connector_wait: s.relay.connector_wait,
        });
    }
    let relay = roles.has(Role::Gateway).then(|| {
        Relay::new(
            node_id.clone(),
            s.relay.clone(),
            store.clone(),
            auth.verifier.clone(),
            tenants.clone(),
            Dispatcher::new(hub.clone(), Some(cluster.clone()), s.relay.connector_wait),
        )
    });
    let changes = ferry_relay::watch::Changes {
        hub: hub.clone(),
        relay: relay.clone(),
    };
    {
        let changes = changes.clone();
        cluster.set_event_listener(Arc::new(move |event| {
            let changes = changes.clone();
            let event = event.clone();
            tokio::spawn(async move { changes.apply(&event).await });
        }));
    }
    // routes limited to some listeners, and the relay's and tunnel's listeners, are compared with the addresses
    // they are bound to
    let names = ferry_edge::ListenerNames::bound(
        listeners.public.local_addr(),
        listeners
            .extra
            .iter()
            .filter_map(|(l, c)| Some((c.name.clone()?, l.local_addr())))
            .collect::<Vec<_>>(),
    );
    let relay_on = endpoint_listeners(&s.relay.listeners, &names);
    let tunnel_on = endpoint_listeners(&s.tunnel.listeners, &names);
    let edge = match &relay {
        Some(relay) => {
            let edge = ferry_edge::Gateway::with_listeners(
                &config.gateway,
                names,
                Arc::new(routes::RelayRoutes(relay.clone())),
            )?;
            Some(edge)
        }
        None => None,
    };
    let node = Arc::new(Node {
        edge,
        relay: relay.clone(),
        hub: hub.clone(),
        cluster: cluster.clone(),
        issuer,
        ready: AtomicBool::new(true),
        max_header_size: s.http.max_header_size,
        token_checks: tokio::sync::Semaphore::new(TOKEN_CHECKS_AT_ONCE),
        token_metrics: metrics::TokenMetrics::default(),
        listener_url: (!listeners.public.local_addr().ip().is_unspecified())
            .then(|| listeners.public.url()),
        relay_on,
        tunnel_on,
    });
    let cores = match config.runtime.per_core {
        true => {
            let n = tokio::runtime::Handle::current().metrics().num_workers();
            let cores = ferry_http::cores::Cores::start(n).map_err(AppError::Cores)?;
            tracing::debug!(cores = n, "public connections served on a runtime per core");
            Some(Arc::new(cores))
        }
        false => None,
    };
    let options = ServeOptions::new(&s.http, s.drain_timeout).on_cores(cores);
    let background = ferry_relay::watch::spawn_background(
        store.clone(),
        ferry_relay::watch::NodeAbout {
            node_id: node_id.clone(),
            address,
            roles: roles.to_string(),
            started_at,
        },
        hub.clone(),
        relay.clone(),
        n.cluster.store_poll_interval,
    );
    // The worker role: compete for the cluster's one worker lease; the active worker runs the chores, and presence
    // shows which node it is.
    let worker = roles.has(Role::Worker).then(|| {
        let settings = ferry_worker::WorkerSettings {
            lease_ttl: n.worker.lease_ttl,
            renew_every: n.worker.lease_ttl / 3,
            retry: n.worker.retry_interval,
        };
        let chores = ferry_worker::chores(&ferry_worker::ChoreSettings {
            request_log_retention: s.relay.request_log_retention,
            history_retention: s.relay.history_retention,
            audit_retention: s.admin.audit_retention,
            signing_keys: Some(ferry_auth::issuer_settings(&s.auth, TUNNEL_AUDIENCE)),
            ..Default::default()
        });
        ferry_worker::Worker::start(store.clone(), node_id.clone(), settings, chores)
    });
    let worker_presence = worker.as_ref().map(|w| {
        let mut state = w.subscribe();
        let cluster = cluster.clone();
        tokio::spawn(async move {
            loop {
                let active = state.borrow_and_update().active;
                cluster.set_worker_active(active);
                if state.changed().await.is_err() {
                    // the worker stopped (shutdown): this task's work is done; wait to be aborted
                    std::future::pending::<()>().await;
                }
            }
        })
    });
    // Changes made through this node's API are applied here at once and announced to the other nodes on the bus;
    // bearer tokens that are not admin keys go to the external provider's admin-role check when one is configured.
    let admin = match (roles.has(Role::Management), listeners.admin) {
        (true, Some(listener)) => {
            let metrics = {
                let mut registry = ferry_metrics::prometheus_client::registry::Registry::default();
                ferry_metrics::ProcessCollector::register(&mut registry);
                relay_metrics.register(&mut registry);
                if let Some(hub) = &hub {
                    hub.register_metrics(&mut registry);
                }
                if let Some(relay) = &relay {
                    relay.register_metrics(&mut registry);
                }
                if let Some(edge) = &node.edge {
                    edge.register_metrics(&mut registry);
                }
                node.token_metrics.register(&mut registry);
                metered_bus.register(&mut registry);
                metered_store.register(&mut registry);
                let registry = Arc::new(registry);
                Arc::new(move || ferry_metrics::render(&registry))
            };
            let mut api = ferry_admin::AdminApi::new(store.clone())
                .notifier(Arc::new(bridge::ClusterNotifier {
                    changes: changes.clone(),
                    cluster: cluster.clone(),
                }))
                .cluster_view(Arc::new(bridge::PresenceView(cluster.clone())))
                .metrics(metrics)
                .request_log(s.relay.request_log)
                .max_body_size(s.admin.max_body_size)
                .sessions(ferry_admin::SessionSettings {
                    idle_timeout: s.admin.session_idle_timeout,
                    max_age: s.admin.session_max_age,
                    attempts_per_account: s.admin.sign_in_attempts_per_account,
                    attempts_per_address: s.admin.sign_in_attempts_per_address,
                });
            if let Some(edge) = &node.edge {
                api = api.gateway_view(Arc::new(bridge::EdgeView {
                    node_id: node_id.clone(),
                    edge: edge.clone(),
                }));
            }
            if let Some(check) = admin_check {
                api = api.token_check(Arc::new(bridge::AdminTokens(check)));
            }
            if let Some(sign_in) = oidc_sign_in {
                api = api.oidc_sign_in(sign_in);
            }
            Some(ferry_admin::AdminServer::spawn(listener, api))
        }
        _ => None,
    };
    tracing::info!(node_id, roles = %roles, bus = bus.kind(), addr = %listeners.public.local_addr(), "node started");
    if let Some(announce) = listeners.on_ready {
        announce();
    }
    let grace = s.shutdown_grace;
    let mut supervisor = supervise::Supervisor::default();
    supervisor.watch(cluster.take_tasks());
    supervisor.watch(background.into_tasks());
    supervisor.watch(worker_presence.map(|t| ("worker state in presence", t)));
    let failed: Arc<std::sync::Mutex<Option<(&'static str, String)>>> = Arc::default();
    let drain_started = {
        let node = node.clone();
        let failed = failed.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                (name, why) = supervisor.failure() => {
                    tracing::error!(task = name, "background task failed ({why}); stopping the node");
                    if let Ok(mut f) = failed.lock() {
                        *f = Some((name, why));
                    }
                }
            }
            tracing::info!(grace = ?grace, "shutdown requested: not ready; serving on while load balancers notice");
            node.ready.store(false, Ordering::SeqCst);
            if !grace.is_zero() {
                tokio::time::sleep(grace).await;
            }
            tracing::info!("taking no new requests or tunnels; draining");
            if let Some(relay) = &node.relay {
                relay.start_draining();
            }
            if let Some(hub) = &node.hub {
                hub.start_draining();
            }
        }
    };
    // every public listener stops accepting when the drain starts
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let edge = node.edge.clone();
    let redirect: listeners::RedirectHandler = {
        let node = node.clone();
        Arc::new(move |port| routes::redirect_to_https(port, Some(node.clone())))
    };
    let handler = routes::handler(node);
    let default_cert = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let extra = listeners::ExtraListeners::new(
        handler.clone(),
        redirect,
        listeners.public.local_addr(),
        options.clone(),
        listeners.public.tls_reloader(),
        default_cert,
        config.gateway.tls.clone(),
        stop_rx.clone(),
    );
    // the gateway's reload (of the main config file) also changes `[gateway.tls]` and `[[server.listeners]]`
    if let Some(edge) = &edge {
        let node_reload = ferry_edge::NodeReload {
            tls: tls_reload(&config, &listeners.public),
            listeners: Some(extra.reload_hook()),
        };
        edge.spawn_reload(&config.gateway, source, node_reload);
    }
    for (listener, settings) in listeners.extra {
        extra.serve(listener, settings);
    }
    let public = ferry_gateway::serve(
        listeners.public,
        handler,
        options.clone(),
        stopped(stop_rx.clone()),
    );
    let drain = async move {
        drain_started.await;
        let _ = stop_tx.send(true);
    };
    tokio::join!(drain, public);
    extra.finished().await;
    if let Some(admin) = admin {
        admin.shutdown(s.drain_timeout).await;
    }
    // leave presence before the tunnels close, so that other nodes stop sending here at once
    cluster.leave().await;
    if let Some(worker) = worker {
        worker.stop().await;
    }
    if let Some(hub) = &hub {
        hub.record_all_disconnected().await;
    }
    let closed = hub.as_ref().map_or(0, |h| h.close_tunnels());
    if let Some(relay) = &relay {
        relay.flush().await;
    }
    bus.close().await;
    tracing::info!(tunnels = closed, "tunnels closed, node stopped");
    let failure = failed.lock().ok().and_then(|mut f| f.take());
    match failure {
        Some((name, why)) => Err(AppError::TaskFailed { name, why }),
        None => Ok(()),
    }
}
