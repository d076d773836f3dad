//! The node's `[[server.listeners]]` while it serves: each one's serving task, and a reload of the config file
//! that adds, changes or removes them without touching the other listeners' connections. An added listener is
//! bound before the reload counts as applied (a port in use refuses it as a whole); a changed one keeps its
//! socket and changes what new connections get (TLS, PROXY protocol, redirect); a removed one stops accepting
//! and drains its own connections.

use crate::routes;
use ferry_config::ExtraListener;
use ferry_gateway::{Handler, Listener, ListenerControl, ServeOptions, TlsReloader};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The extra listeners of a serving node.
#[derive(Clone)]
pub(crate) struct ExtraListeners {
    shared: Arc<Shared>,
}

struct Shared {
    /// The handler of a listener that serves (not one that redirects).
    handler: Handler,
    options: ServeOptions,
    /// The public listener's TLS settings, which every TLS listener shares (and a `[gateway.tls]` reload changes).
    tls: Option<TlsReloader>,
    /// Becomes true when the node drains: every listener stops accepting.
    stop_all: watch::Receiver<bool>,
    running: Mutex<Vec<Running>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

struct Running {
    config: ExtraListener,
    control: ListenerControl,
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
}

enum Step {
    Keep(usize, ExtraListener),
    Add(Box<Listener>, ExtraListener),
}

impl ExtraListeners {
    pub(crate) fn new(
        handler: Handler,
        options: ServeOptions,
        tls: Option<TlsReloader>,
        stop_all: watch::Receiver<bool>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                handler,
                options,
                tls,
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
            addr,
            stop,
        });
    }

    /// Wait for every listener's task to end (after the node's drain began: each stops accepting and drains).
    pub(crate) async fn finished(&self) {
        let tasks = std::mem::take(&mut *lock(&self.shared.tasks));
        futures_util::future::join_all(tasks).await;
    }

    /// The hook a reload of the config file calls with the new `[[server.listeners]]` list.
    pub(crate) fn reload_hook(&self) -> ferry_edge::ListenersReload {
        let this = self.clone();
        Box::new(move |wanted: &[ExtraListener]| {
            let plan = this.plan(wanted)?;
            let this = this.clone();
            Ok(Box::new(move || this.apply(plan)) as Box<dyn FnOnce() + Send>)
        })
    }

    /// Match `wanted` with the running listeners (by address; those on port 0 in order) and bind the new ones.
    fn plan(&self, wanted: &[ExtraListener]) -> Result<Plan, String> {
        let running: Vec<ExtraListener> = lock(&self.shared.running)
            .iter()
            .map(|r| r.config.clone())
            .collect();
        let mut taken = vec![false; running.len()];
        let mut keep = Vec::with_capacity(wanted.len());
        for (i, config) in wanted.iter().enumerate() {
            let same = running.iter().enumerate().position(|(j, r)| {
                !taken[j]
                    && r.listen.ip() == config.listen.ip()
                    && r.listen.port() == config.listen.port()
            });
            if let Some(j) = same {
                taken[j] = true;
                if config.tls && self.shared.tls.is_none() {
                    return Err(no_tls(i));
                }
                keep.push(Step::Keep(j, config.clone()));
                continue;
            }
            let tls = match (config.tls, &self.shared.tls) {
                (false, _) => None,
                (true, Some(tls)) => Some(tls),
                (true, None) => return Err(no_tls(i)),
            };
            let listener = Listener::bind_sharing(config.listen, tls)
                .map_err(|e| format!("server.listeners[{i}].listen: {e}"))?;
            keep.push(Step::Add(Box::new(listener), config.clone()));
        }
        let removed = (0..running.len()).filter(|j| !taken[*j]).collect();
        Ok(Plan { keep, removed })
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
                Step::Keep(j, config) => {
                    let Some(mut r) = old.get_mut(j).and_then(Option::take) else {
                        continue;
                    };
                    if r.config != config {
                        let tls = if config.tls {
                            shared.tls.as_ref()
                        } else {
                            None
                        };
                        r.control.change(
                            tls,
                            config.proxy_protocol,
                            Some(shared.handler_for(&config)),
                        );
                        r.config = config;
                        tracing::info!(listener = %r.url(), "listener changed by a reload: new connections get its new settings");
                    }
                    lock(&shared.running).push(r);
                }
                Step::Add(listener, config) => {
                    tracing::info!(listener = %listener.url(), "listener added by a reload");
                    self.serve(*listener, config);
                }
            }
        }
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
            true => routes::redirect_to_https(config.https_port),
            false => self.handler.clone(),
        }
    }
}

fn no_tls(i: usize) -> String {
    format!("server.listeners[{i}].tls: this node started without server.tls_cert and server.tls_key; a TLS listener needs a restart with them")
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
            tls: false,
            redirect_to_https: false,
            https_port: 443,
            proxy_protocol: false,
        }
    }

    fn ok_handler() -> Handler {
        Arc::new(|_req| Box::pin(async { http::Response::new(ferry_http::full("served")) }))
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
        let set = ExtraListeners::new(ok_handler(), options, None, stop_rx);
        let first =
            Listener::bind_sharing("127.0.0.1:0".parse().expect("addr"), None).expect("bind");
        let first_addr = first.local_addr().to_string();
        set.serve(first, entry("127.0.0.1:0"));
        assert!(get(&first_addr).await.expect("get").contains("served"));
        let hook = set.reload_hook();

        // the first stays (port 0 entries match in order) but redirects; a second one is added
        let mut redirect = entry("127.0.0.1:0");
        redirect.redirect_to_https = true;
        hook(&[redirect.clone(), entry("127.0.0.1:0")]).expect("prepared")();
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
        let refusal = match hook(&[busy]) {
            Ok(_) => panic!("a port in use was taken"),
            Err(e) => e,
        };
        assert!(
            refusal.starts_with("server.listeners[0].listen"),
            "{refusal}"
        );
        assert_eq!(set.urls(), urls);

        // one port-0 entry left: the first running one stays (serving again), the second is removed
        hook(&[entry("127.0.0.1:0")]).expect("prepared")();
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
}
