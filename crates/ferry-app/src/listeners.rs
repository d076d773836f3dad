//! The node's `[[server.listeners]]` while it serves: each one's serving task, and a reload of the config file
//! that adds, changes or removes them without touching the other listeners' connections. An added listener is
//! bound before the reload counts as applied (a port in use refuses it as a whole); a changed one keeps its
//! socket and changes what new connections get (TLS, PROXY protocol, redirect, connection caps); a removed one
//! stops accepting and drains its own connections.
//!
//! A reload also says which names the listeners have, with their bound addresses ([`ferry_edge::ListenerNames`]),
//! so that the routes limited to some listeners are compiled against the listeners as they will be: a kept
//! listener keeps its socket and address whatever its name becomes, so its open connections' requests stay on
//! the routes that name it.
//!
//! A TLS listener shares the public listener's TLS settings (`server.tls_cert` and `[gateway.tls]`) unless it
//! sets TLS keys of its own: then it has TLS settings of its own, `[gateway.tls]` with its keys put over it,
//! rebuilt (every file read before any is used) by a reload that changes either.

use ferry_config::{ExtraListener, GatewayTls};
use ferry_gateway::{
    ConnectionCaps, GatewayError, Handler, Listener, ListenerControl, PreparedTls, ServeOptions,
    TlsFiles, TlsOptions, TlsReloader,
};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The extra listeners of a serving node.
#[derive(Clone)]
pub(crate) struct ExtraListeners {
    shared: Arc<Shared>,
}

/// Makes the handler of a listener that redirects to HTTPS on the given port.
pub(crate) type RedirectHandler = Arc<dyn Fn(u16) -> Handler + Send + Sync>;

struct Shared {
    /// The handler of a listener that serves (not one that redirects).
    handler: Handler,
    /// The handler of one that redirects (the routes that name it answer first).
    redirect: RedirectHandler,
    /// The address `server.listen` is bound to: the main listener of [`ferry_edge::ListenerNames`].
    main: SocketAddr,
    options: ServeOptions,
    /// The public listener's TLS settings, which every TLS listener without settings of its own shares (and a
    /// `[gateway.tls]` reload changes).
    tls: Option<TlsReloader>,
    /// `server.tls_cert`/`tls_key`: the default certificate of a listener with TLS settings of its own but no
    /// `cert` of its own.
    default_cert: Option<TlsFiles>,
    /// `[gateway.tls]` as the listeners with settings of their own were last built with.
    gateway_tls: Mutex<GatewayTls>,
    /// Becomes true when the node drains: every listener stops accepting.
    stop_all: watch::Receiver<bool>,
    running: Mutex<Vec<Running>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

struct Running {
    config: ExtraListener,
    control: ListenerControl,
    /// Its TLS settings of its own (`None`: plain, or sharing the public listener's).
    own_tls: Option<TlsReloader>,
    /// The bound address (the configured one, or the port the OS picked for port 0).
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Running {
    /// `http://ADDR` or `https://ADDR`, as its settings say now.
    fn url(&self) -> String {
        let scheme = if self.config.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

/// What a reload does to the running listeners, bound and checked before any of it is applied.
struct Plan {
    /// In the new order: an index into the running ones with its new settings, or a bound new listener.
    keep: Vec<Step>,
    /// Running ones that are gone from the list.
    removed: Vec<usize>,
    /// The `[gateway.tls]` the plan was made with.
    gateway_tls: GatewayTls,
}

enum Step {
    Keep(usize, ExtraListener, OwnTls),
    Add(Box<Listener>, ExtraListener, Option<TlsReloader>),
}

/// What a reload does to a kept listener's TLS settings of its own.
enum OwnTls {
    /// None before, none now (plain, or sharing the public listener's).
    None,
    /// The settings in use stay.
    Same,
    /// New settings for its switch, loaded and checked.
    Reload(Box<PreparedTls>),
    /// A switch of its own, new (it had none before).
    Start(TlsReloader),
}

/// The TLS settings of listener `index` with settings of its own: `[gateway.tls]` (`base`) with its keys put
/// over it, and its own certificate or `default` (`server.tls_cert`). Errors name the listener's key.
pub(crate) fn own_tls_options(
    index: usize,
    config: &ExtraListener,
    base: &GatewayTls,
    default: Option<&TlsFiles>,
) -> Result<TlsOptions, (String, String)> {
    let default = match (config.own_certificate(), default) {
        (Some((cert, key)), _) => TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        },
        (None, Some(files)) => files.clone(),
        (None, None) => return Err(no_tls(index)),
    };
    let options = crate::gateway_tls_options(&config.tls_settings(base), Some(default))
        .map_err(|e| (format!("server.listeners[{index}]"), e.to_string()))?
        .ok_or_else(|| no_tls(index))?;
    options.check().map_err(|e| tls_error(index, config, e))?;
    Ok(options)
}

/// Start TLS settings of its own for listener `index` (every file read), as [`own_tls_options`] builds them.
pub(crate) fn start_own_tls(
    index: usize,
    config: &ExtraListener,
    base: &GatewayTls,
    default: Option<&TlsFiles>,
) -> Result<TlsReloader, (String, String)> {
    let options = own_tls_options(index, config, base, default)?;
    TlsReloader::start(options).map_err(|e| tls_error(index, config, e))
}

/// A TLS error of listener `index`, with the key it comes from: the listener's own when it set it
/// (`server.listeners[1].client_ca`), else the listener and the `[gateway.tls]` key it inherited.
pub(crate) fn tls_error(
    index: usize,
    config: &ExtraListener,
    error: GatewayError,
) -> (String, String) {
    let listener = format!("server.listeners[{index}]");
    match &error {
        GatewayError::Settings { key, message } => {
            let field = key.strip_prefix("gateway.tls.").unwrap_or(key);
            let top = field.split(['[', '.']).next().unwrap_or(field);
            if config.own_tls_keys().contains(&top) {
                (format!("{listener}.{field}"), message.clone())
            } else {
                (listener, format!("{key} (from [gateway.tls]): {message}"))
            }
        }
        GatewayError::Certificate { path, .. } | GatewayError::Key { path, .. } => {
            match file_key(config, Path::new(path)) {
                Some(field) => (format!("{listener}.{field}"), error.to_string()),
                None => (listener, error.to_string()),
            }
        }
        _ => (listener, error.to_string()),
    }
}

/// Which of the listener's own keys names `path`, if one does.
fn file_key(config: &ExtraListener, path: &Path) -> Option<String> {
    let is = |p: &Option<std::path::PathBuf>| p.as_deref() == Some(path);
    if is(&config.cert) {
        return Some("cert".into());
    }
    if is(&config.key) {
        return Some("key".into());
    }
    if is(&config.client_ca) {
        return Some("client_ca".into());
    }
    if is(&config.ocsp_response) {
        return Some("ocsp_response".into());
    }
    if let Some(k) = config.client_crl.iter().flatten().position(|p| p == path) {
        return Some(format!("client_crl[{k}]"));
    }
    for (j, c) in config.certificates.iter().flatten().enumerate() {
        for (field, p) in [
            ("cert", Some(&c.cert)),
            ("key", Some(&c.key)),
            ("client_ca", c.client_ca.as_ref()),
            ("ocsp_response", c.ocsp_response.as_ref()),
        ] {
            if p.is_some_and(|p| p == path) {
                return Some(format!("certificates[{j}].{field}"));
            }
        }
    }
    None
}

impl ExtraListeners {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        handler: Handler,
        redirect: RedirectHandler,
        main: SocketAddr,
        options: ServeOptions,
        tls: Option<TlsReloader>,
        default_cert: Option<TlsFiles>,
        gateway_tls: GatewayTls,
        stop_all: watch::Receiver<bool>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                handler,
                redirect,
                main,
                options,
                tls,
                default_cert,
                gateway_tls: Mutex::new(gateway_tls),
                stop_all,
                running: Mutex::new(Vec::new()),
                tasks: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Serve `listener` (bound at start, or by a reload) as `config` says.
    pub(crate) fn serve(&self, listener: Listener, config: ExtraListener) {
        let shared = &self.shared;
        let (stop, own_stop) = watch::channel(false);
        let addr = listener.local_addr();
        let control = listener.control();
        let own_tls = config
            .has_own_tls()
            .then(|| listener.tls_reloader())
            .flatten();
        let listener = listener.with_connection_caps(shared.caps_for(&config));
        let mut all = shared.stop_all.clone();
        let mut own = own_stop;
        let stopped = async move {
            tokio::select! {
                _ = all.wait_for(|s| *s) => {}
                _ = own.wait_for(|s| *s) => {}
            }
        };
        let task = tokio::spawn(ferry_gateway::serve(
            listener,
            shared.handler_for(&config),
            shared.options.clone(),
            stopped,
        ));
        let mut tasks = lock(&shared.tasks);
        // listeners removed by earlier reloads are done draining: no need to keep their handles
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
        drop(tasks);
        lock(&shared.running).push(Running {
            config,
            control,
            own_tls,
            addr,
            stop,
        });
    }

    /// Wait for every listener's task to end (after the node's drain began: each stops accepting and drains).
    pub(crate) async fn finished(&self) {
        let tasks = std::mem::take(&mut *lock(&self.shared.tasks));
        futures_util::future::join_all(tasks).await;
    }

    /// The hook a reload of the config file calls with the new `[[server.listeners]]` list and `[gateway.tls]`.
    pub(crate) fn reload_hook(&self) -> ferry_edge::ListenersReload {
        let this = self.clone();
        Box::new(move |wanted: &[ExtraListener], gateway_tls: &GatewayTls| {
            let plan = this.plan(wanted, gateway_tls)?;
            let names = this.names_after(&plan);
            let this = this.clone();
            Ok(ferry_edge::PreparedListeners {
                names,
                commit: Box::new(move || this.apply(plan)),
            })
        })
    }

    /// The listeners' names and bound addresses once `plan` is in use: a kept listener keeps its address (its
    /// socket), whatever its name becomes.
    fn names_after(&self, plan: &Plan) -> ferry_edge::ListenerNames {
        let running = lock(&self.shared.running);
        let named = plan.keep.iter().filter_map(|step| match step {
            Step::Keep(j, config, _) => {
                let addr = running.get(*j)?.addr;
                Some((config.name.clone()?, addr))
            }
            Step::Add(listener, config, _) => Some((config.name.clone()?, listener.local_addr())),
        });
        ferry_edge::ListenerNames::bound(self.shared.main, named.collect::<Vec<_>>())
    }

    /// Match `wanted` with the running listeners (by address; those on port 0 in order), bind the new ones and
    /// load the TLS settings of those with settings of their own.
    fn plan(&self, wanted: &[ExtraListener], gateway_tls: &GatewayTls) -> Result<Plan, String> {
        let shared = &self.shared;
        let running: Vec<(ExtraListener, Option<TlsReloader>)> = lock(&shared.running)
            .iter()
            .map(|r| (r.config.clone(), r.own_tls.clone()))
            .collect();
        let tls_changed = *lock(&shared.gateway_tls) != *gateway_tls;
        let joined = |(key, message): (String, String)| format!("{key}: {message}");
        let mut taken = vec![false; running.len()];
        let mut keep = Vec::with_capacity(wanted.len());
        for (i, config) in wanted.iter().enumerate() {
            let same = running.iter().enumerate().position(|(j, (r, _))| {
                !taken[j]
                    && r.listen.ip() == config.listen.ip()
                    && r.listen.port() == config.listen.port()
            });
            if let Some(j) = same {
                taken[j] = true;
                let (old, old_tls) = &running[j];
                if old.http3 != config.http3 {
                    return Err(format!(
                        "server.listeners[{i}].http3: turning HTTP/3 on or off needs a restart (its UDP socket is bound at start)"
                    ));
                }
                let own = match (config.has_own_tls(), old_tls) {
                    (false, _) => {
                        if config.tls && shared.tls.is_none() {
                            return Err(joined(no_tls(i)));
                        }
                        OwnTls::None
                    }
                    (true, Some(_)) if old == config && !tls_changed => OwnTls::Same,
                    (true, Some(switch)) => {
                        let options =
                            own_tls_options(i, config, gateway_tls, shared.default_cert.as_ref())
                                .map_err(joined)?;
                        let prepared = switch
                            .prepare(options)
                            .map_err(|e| joined(tls_error(i, config, e)))?;
                        OwnTls::Reload(Box::new(prepared))
                    }
                    (true, None) => OwnTls::Start(
                        start_own_tls(i, config, gateway_tls, shared.default_cert.as_ref())
                            .map_err(joined)?,
                    ),
                };
                keep.push(Step::Keep(j, config.clone(), own));
                continue;
            }
            let own = match config.has_own_tls() {
                true => Some(
                    start_own_tls(i, config, gateway_tls, shared.default_cert.as_ref())
                        .map_err(joined)?,
                ),
                false => None,
            };
            let tls = match (config.tls, &own, &shared.tls) {
                (false, _, _) => None,
                (true, Some(own), _) => Some(own),
                (true, None, Some(tls)) => Some(tls),
                (true, None, None) => return Err(joined(no_tls(i))),
            };
            let listener = Listener::bind_sharing(config.listen, tls)
                .map_err(|e| format!("server.listeners[{i}].listen: {e}"))?
                .with_http3(config.http3)
                .map_err(|e| format!("server.listeners[{i}].http3: {}", crate::http3_error(e)))?;
            keep.push(Step::Add(Box::new(listener), config.clone(), own));
        }
        let removed = (0..running.len()).filter(|j| !taken[*j]).collect();
        Ok(Plan {
            keep,
            removed,
            gateway_tls: gateway_tls.clone(),
        })
    }

    fn apply(&self, plan: Plan) {
        let shared = &self.shared;
        let old = std::mem::take(&mut *lock(&shared.running));
        let mut old: Vec<Option<Running>> = old.into_iter().map(Some).collect();
        for j in plan.removed {
            if let Some(r) = old.get_mut(j).and_then(Option::take) {
                tracing::info!(listener = %r.url(), "listener removed by a reload: it accepts no more connections and drains its own");
                let _ = r.stop.send(true);
            }
        }
        for step in plan.keep {
            match step {
                Step::Keep(j, config, own) => {
                    let Some(mut r) = old.get_mut(j).and_then(Option::take) else {
                        continue;
                    };
                    let (own_tls, new_switch) = match own {
                        OwnTls::None => (None, r.own_tls.is_some()),
                        OwnTls::Same => (r.own_tls.take(), false),
                        OwnTls::Reload(prepared) => {
                            prepared.commit();
                            if r.config == config {
                                tracing::info!(listener = %r.url(), "listener's TLS settings reloaded with [gateway.tls]: new connections get them");
                            }
                            (r.own_tls.take(), false)
                        }
                        OwnTls::Start(switch) => (Some(switch), true),
                    };
                    if r.config != config || new_switch {
                        let tls = match (config.tls, &own_tls) {
                            (false, _) => None,
                            (true, Some(own)) => Some(own),
                            (true, None) => shared.tls.as_ref(),
                        };
                        r.control.change(
                            tls,
                            config.proxy_protocol,
                            Some(shared.handler_for(&config)),
                            shared.caps_for(&config),
                        );
                        r.config = config;
                        tracing::info!(listener = %r.url(), "listener changed by a reload: new connections get its new settings");
                    }
                    r.own_tls = own_tls;
                    lock(&shared.running).push(r);
                }
                Step::Add(listener, config, _own) => {
                    tracing::info!(listener = %listener.url(), "listener added by a reload");
                    self.serve(*listener, config);
                }
            }
        }
        *lock(&shared.gateway_tls) = plan.gateway_tls;
    }

    /// The URLs of the running listeners, in order.
    #[cfg(test)]
    fn urls(&self) -> Vec<String> {
        lock(&self.shared.running)
            .iter()
            .map(Running::url)
            .collect()
    }
}

impl Shared {
    fn handler_for(&self, config: &ExtraListener) -> Handler {
        match config.redirect_to_https {
            true => (self.redirect)(config.https_port),
            false => self.handler.clone(),
        }
    }

    /// The caps of a listener with caps of its own (`None`: the node's `[server.http]` ones).
    fn caps_for(&self, config: &ExtraListener) -> Option<ConnectionCaps> {
        caps_for(config, &self.options)
    }
}

/// The caps of `config`'s connections when it sets any (the other one from `options`).
pub(crate) fn caps_for(config: &ExtraListener, options: &ServeOptions) -> Option<ConnectionCaps> {
    if config.max_connections.is_none() && config.max_connections_per_ip.is_none() {
        return None;
    }
    Some(ConnectionCaps {
        max_connections: config.max_connections.unwrap_or(options.max_connections),
        max_connections_per_ip: config
            .max_connections_per_ip
            .unwrap_or(options.max_connections_per_ip),
    })
}

fn no_tls(i: usize) -> (String, String) {
    (
        format!("server.listeners[{i}].tls"),
        "this node started without server.tls_cert and server.tls_key; a TLS listener needs cert and key of its own, or a restart with them".to_owned(),
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(listen: &str) -> ExtraListener {
        ExtraListener {
            listen: listen.parse().expect("an address"),
            ..ExtraListener::default()
        }
    }

    fn ok_handler() -> Handler {
        Arc::new(|_req| Box::pin(async { http::Response::new(ferry_http::full("served")) }))
    }

    fn redirect_handler() -> RedirectHandler {
        Arc::new(|port| crate::routes::redirect_to_https(port, None))
    }

    fn main_addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }

    async fn get(addr: &str) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /x HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    fn addr_of(url: &str) -> String {
        url.split_once("://").map_or(url, |(_, a)| a).to_owned()
    }

    /// A reload adds a listener, turns one into a redirect in place (same socket), and removes one; a port in
    /// use refuses the whole reload and changes nothing.
    #[tokio::test]
    async fn a_reload_adds_changes_and_removes_listeners() {
        let (stop_tx, stop_rx) = watch::channel(false);
        let options = ServeOptions::new(
            &ferry_config::HttpSettings::default(),
            Duration::from_secs(1),
        );
        let set = ExtraListeners::new(
            ok_handler(),
            redirect_handler(),
            main_addr(),
            options,
            None,
            None,
            GatewayTls::default(),
            stop_rx,
        );
        let none = GatewayTls::default();
        let first =
            Listener::bind_sharing("127.0.0.1:0".parse().expect("addr"), None).expect("bind");
        let first_addr = first.local_addr().to_string();
        set.serve(first, entry("127.0.0.1:0"));
        assert!(get(&first_addr).await.expect("get").contains("served"));
        let hook = set.reload_hook();

        // the first stays (port 0 entries match in order) but redirects; a second one is added
        let mut redirect = entry("127.0.0.1:0");
        redirect.redirect_to_https = true;
        (hook(&[redirect.clone(), entry("127.0.0.1:0")], &none)
            .expect("prepared")
            .commit)();
        let urls = set.urls();
        assert_eq!(urls.len(), 2);
        assert_eq!(addr_of(&urls[0]), first_addr, "the same socket");
        let answer = get(&first_addr).await.expect("get");
        assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
        let second_addr = addr_of(&urls[1]);
        assert!(get(&second_addr).await.expect("get").contains("served"));

        // a port in use refuses the reload: nothing changes
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let busy = entry(&taken.local_addr().expect("addr").to_string());
        let refusal = match hook(&[busy], &none) {
            Ok(_) => panic!("a port in use was taken"),
            Err(e) => e,
        };
        assert!(
            refusal.starts_with("server.listeners[0].listen"),
            "{refusal}"
        );
        assert_eq!(set.urls(), urls);

        // one port-0 entry left: the first running one stays (serving again), the second is removed
        (hook(&[entry("127.0.0.1:0")], &none)
            .expect("prepared")
            .commit)();
        assert_eq!(set.urls().len(), 1);
        assert_eq!(addr_of(&set.urls()[0]), first_addr);
        assert!(get(&first_addr).await.expect("get").contains("served"));
        let mut closed = false;
        for _ in 0..100 {
            if get(&second_addr).await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(closed, "the removed listener still accepts");

        let _ = stop_tx.send(true);
        tokio::time::timeout(Duration::from_secs(5), set.finished())
            .await
            .expect("every listener ended");
    }

    /// A listener's own `max_connections` caps its connections (the newest beyond gets 503), and a reload
    /// changes the cap for new connections.
    #[tokio::test]
    async fn a_listener_caps_its_own_connections_and_a_reload_changes_the_cap() {
        use tokio::io::AsyncWriteExt;
        let (stop_tx, stop_rx) = watch::channel(false);
        let options = ServeOptions::new(
            &ferry_config::HttpSettings::default(),
            Duration::from_secs(1),
        );
        let set = ExtraListeners::new(
            ok_handler(),
            redirect_handler(),
            main_addr(),
            options,
            None,
            None,
            GatewayTls::default(),
            stop_rx,
        );
        let none = GatewayTls::default();
        let capped = |max: usize| ExtraListener {
            max_connections: Some(max),
            ..entry("127.0.0.1:0")
        };
        let listener =
            Listener::bind_sharing("127.0.0.1:0".parse().expect("addr"), None).expect("bind");
        let addr = listener.local_addr().to_string();
        set.serve(listener, capped(1));
        // one connection held open (a request head not finished) fills the cap of 1
        let mut held = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        held.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
        let mut refused = String::new();
        for _ in 0..50 {
            refused = get(&addr).await.unwrap_or_default();
            if refused.starts_with("HTTP/1.1 503") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.contains("too_many_connections"), "{refused}");

        (set.reload_hook()(&[capped(2)], &none)
            .expect("prepared")
            .commit)();
        assert!(get(&addr).await.expect("get").contains("served"));
        drop(held);

        let _ = stop_tx.send(true);
        tokio::time::timeout(Duration::from_secs(5), set.finished())
            .await
            .expect("every listener ended");
    }

    /// The names a reload gives the routes: a kept listener keeps its socket's address whatever its name becomes
    /// (its open connections stay on the routes that name it), an added one has its new socket's, a removed or
    /// unnamed one none; the main listener is always there.
    #[tokio::test]
    async fn a_reload_names_listeners_by_their_sockets() {
        let (stop_tx, stop_rx) = watch::channel(false);
        let options = ServeOptions::new(
            &ferry_config::HttpSettings::default(),
            Duration::from_secs(1),
        );
        let set = ExtraListeners::new(
            ok_handler(),
            redirect_handler(),
            main_addr(),
            options,
            None,
            None,
            GatewayTls::default(),
            stop_rx,
        );
        let none = GatewayTls::default();
        let named = |name: &str| ExtraListener {
            name: Some(name.to_owned()),
            ..entry("127.0.0.1:0")
        };
        let first =
            Listener::bind_sharing("127.0.0.1:0".parse().expect("addr"), None).expect("bind");
        let first_addr = first.local_addr();
        set.serve(first, named("internal"));
        let hook = set.reload_hook();

        // renamed, and a named one added
        let prepared = hook(&[named("admin"), named("extra")], &none).expect("prepared");
        let names = prepared.names.clone();
        assert_eq!(
            names.names().collect::<Vec<_>>(),
            ["main", "admin", "extra"]
        );
        assert_eq!(names.address("main"), Some(main_addr()));
        assert_eq!(names.address("admin"), Some(first_addr), "the same socket");
        let added = names.address("extra").expect("bound");
        assert_ne!(added, first_addr);
        assert_eq!(names.address("internal"), None, "the old name is gone");
        (prepared.commit)();

        // the added one removed, the first one unnamed: only main is left to name
        let prepared = hook(&[entry("127.0.0.1:0")], &none).expect("prepared");
        assert_eq!(prepared.names.names().collect::<Vec<_>>(), ["main"]);
        (prepared.commit)();

        let _ = stop_tx.send(true);
        tokio::time::timeout(Duration::from_secs(5), set.finished())
            .await
            .expect("every listener ended");
    }

    /// TLS errors of a listener with settings of its own name its key when it set it, else the listener and the
    /// `[gateway.tls]` key.
    #[test]
    fn tls_errors_name_the_listeners_key() {
        let config = ExtraListener {
            tls: true,
            cert: Some("/etc/ssl/partner.pem".into()),
            key: Some("/etc/ssl/partner.key".into()),
            client_crl: Some(vec!["/a.crl".into(), "/b.crl".into()]),
            cipher_suites: Some(vec!["NOPE".into()]),
            ..entry("127.0.0.1:0")
        };
        let cert = |path: &str| GatewayError::Certificate {
            path: path.to_owned(),
            message: "No such file".to_owned(),
        };
        let (key, message) = tls_error(3, &config, cert("/etc/ssl/partner.pem"));
        assert_eq!(key, "server.listeners[3].cert");
        assert!(message.contains("/etc/ssl/partner.pem"), "{message}");
        let (key, _) = tls_error(3, &config, cert("/b.crl"));
        assert_eq!(key, "server.listeners[3].client_crl[1]");
        let (key, _) = tls_error(3, &config, cert("/etc/ssl/main-ca.pem"));
        assert_eq!(key, "server.listeners[3]");
        let settings = |key: &str| GatewayError::Settings {
            key: format!("gateway.tls.{key}"),
            message: "bad".to_owned(),
        };
        assert_eq!(
            tls_error(3, &config, settings("cipher_suites")),
            (
                "server.listeners[3].cipher_suites".to_owned(),
                "bad".to_owned()
            )
        );
        let (key, message) = tls_error(3, &config, settings("protocols"));
        assert_eq!(key, "server.listeners[3]");
        assert!(
            message.starts_with("gateway.tls.protocols (from [gateway.tls])"),
            "{message}"
        );
        // without a certificate of its own or server.tls_cert there is nothing to serve
        let shared_cert = ExtraListener {
            tls: true,
            client_auth: Some(ferry_config::ClientAuth::Off),
            ..entry("127.0.0.1:0")
        };
        let (key, _) = own_tls_options(0, &shared_cert, &GatewayTls::default(), None)
            .expect_err("no certificate");
        assert_eq!(key, "server.listeners[0].tls");
    }
}
