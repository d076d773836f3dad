//! End to end, against the built `ferry` binary: an upstream of a gateway pool killed and revived while clients
//! keep sending (bounded in count and time). Requests whose connection fails are retried on the other server,
//! the dead one is ejected, and it gets traffic again after `fail_timeout` once it is back.

use crate::common::{write_file, TempDir, BIN};
use ferry_testkit::{FerryServer, ServerOptions};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A keep-alive HTTP/1.1 upstream on a fixed address answering `GET` with its name; `stop` closes the listener
/// and every connection, `start` on the same address brings it back.
struct Upstream {
    name: &'static str,
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Upstream {
    async fn new(name: &'static str) -> anyhow::Result<Self> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let mut u = Self {
            name,
            addr: l.local_addr()?,
            served: Arc::default(),
            task: None,
        };
        u.run(l);
        Ok(u)
    }

    fn run(&mut self, listener: TcpListener) {
        let (name, served) = (self.name, self.served.clone());
        self.task = Some(tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                while conns.try_join_next().is_some() {}
                let served = served.clone();
                conns.spawn(async move {
                    let _ = serve(s, name, &served).await;
                });
            }
        }));
    }

    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => {
                    self.run(l);
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebind {}: {e}", self.addr);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(stream: TcpStream, name: &str, served: &AtomicUsize) -> anyhow::Result<()> {
    let mut io = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        loop {
            let mut h = String::new();
            anyhow::ensure!(io.read_line(&mut h).await? > 0, "closed in head");
            if h.trim_end().is_empty() {
                break;
            }
        }
        served.fetch_add(1, Ordering::SeqCst);
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{name}",
            name.len()
        );
        io.get_mut().write_all(resp.as_bytes()).await?;
    }
}

#[tokio::test]
async fn upstream_killed_and_revived_under_load() -> anyhow::Result<()> {
    let mut a = Upstream::new("a").await?;
    let b = Upstream::new("b").await?;
    let dir = TempDir::new("ferry-gw-failover-")?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        &format!(
            r#"
[[gateway.routes]]
upstream = "pool"

[gateway.upstreams.pool]
servers = [{{ url = "http://{}" }}, {{ url = "http://{}" }}]
max_fails = 1
fail_timeout = "500ms"
connect_timeout = "1s"
"#,
            a.addr, b.addr
        ),
    )?;
    let server = FerryServer::start(BIN, ServerOptions::default().config(&config)).await?;
    let url = format!("{}/load", server.url());
    let client = ferry_testkit::http_client();
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = JoinSet::new();
    const WORKERS: usize = 4;
    for _ in 0..WORKERS {
        let (client, url, ok, failed, stop) = (
            client.clone(),
            url.clone(),
            ok.clone(),
            failed.clone(),
            stop.clone(),
        );
        workers.spawn(async move {
            // bounded: at most 5000 requests per worker, and the test stops them after a few seconds
            for _ in 0..5000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let r = client
                    .get(&url)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => {
                        let s = r.status();
                        let body = r.text().await.unwrap_or_default();
                        failed.lock().expect("lock").push(format!("{s} {body}"));
                    }
                    Err(e) => failed.lock().expect("lock").push(e.to_string()),
                }
            }
        });
    }
    let wait_ok = |n: usize| {
        let ok = ok.clone();
        async move {
            ferry_testkit::eventually(Duration::from_secs(20), || {
                let ok = ok.clone();
                async move {
                    anyhow::ensure!(ok.load(Ordering::SeqCst) >= n, "not yet");
                    Ok(())
                }
            })
            .await
        }
    };
    wait_ok(200).await?;
    assert!(a.served.load(Ordering::SeqCst) > 50, "a takes part");
    a.stop();
    // the abort takes effect at the tasks' next await: count from a little later
    wait_ok(ok.load(Ordering::SeqCst) + 50).await?;
    let a_at_kill = a.served.load(Ordering::SeqCst);
    wait_ok(ok.load(Ordering::SeqCst) + 300).await?;
    assert_eq!(a.served.load(Ordering::SeqCst), a_at_kill, "a is down");
    a.start().await?;
    // after fail_timeout the revived server is tried again and takes traffic
    ferry_testkit::eventually(Duration::from_secs(20), || {
        let served = a.served.load(Ordering::SeqCst);
        async move {
            anyhow::ensure!(served > a_at_kill + 50, "a not back yet ({served})");
            Ok(())
        }
    })
    .await?;
    stop.store(true, Ordering::SeqCst);
    while workers.join_next().await.is_some() {}
    let failed = failed.lock().expect("lock").clone();
    // only requests in flight on a's connections at the moment it died may fail
    assert!(
        failed.len() <= WORKERS,
        "{} failed: {failed:?}",
        failed.len()
    );
    assert!(b.served.load(Ordering::SeqCst) > 300);
    eprintln!(
        "ok {} failed {} a {} b {}",
        ok.load(Ordering::SeqCst),
        failed.len(),
        a.served.load(Ordering::SeqCst),
        b.served.load(Ordering::SeqCst)
    );
    Ok(())
}
