//! End to end, against the built `ferry` binary: routes per listener (`listeners = [...]` on a route, `name` on a
//! `[[server.listeners]]` entry). A node with a named internal listener and a named port-80 listener that
//! redirects to HTTPS: a route limited to the internal listener exists there only (the next matching route answers
//! elsewhere), a route limited to the redirecting listener answers there before its redirect (an ACME challenge),
//! and reloads move a route to another listener, refuse a name no listener has, and rename a listener without
//! moving its open connections off the routes that name it.

use crate::common::{write_file, TempDir, BIN};
use ferry_testkit::process::run_ferry;
use ferry_testkit::{FerryServer, RawConn, RawResponse, ServerOptions};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// The node's config: an internal listener named `internal_name`, a port-80-like listener `http` that redirects,
/// both on port 0; the app answers everywhere, `admin` only on the listeners `admin_on` names, `acme` on `http`.
fn config(internal_name: &str, admin_on: &str) -> String {
    format!(
        "version = 1\n\
         [log]\nlevel = \"info\"\n\
         [[server.listeners]]\nname = \"{internal_name}\"\nlisten = \"127.0.0.1:0\"\n\
         [[server.listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\nredirect_to_https = true\n\
         [[gateway.routes]]\nname = \"app\"\nrespond = {{ body = \"app\" }}\n\
         [[gateway.routes]]\nname = \"admin\"\npath = \"/admin\"\nlisteners = [{admin_on}]\nrespond = {{ body = \"admin\" }}\n\
         [[gateway.routes]]\nname = \"acme\"\npath = \"/.well-known/acme-challenge/\"\nlisteners = [\"http\"]\nrespond = {{ body = \"token\" }}\n"
    )
}

/// Replace `path` atomically (write a temporary file, rename), as deploy tools do.
fn replace(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)?;
    Ok(())
}

async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<RawResponse> {
    let head = format!("GET {path} HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n");
    ferry_testkit::raw::request(addr, head.as_bytes(), T).await
}

/// The body of a `200` answer to `GET path` on `addr`.
async fn body(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let resp = get(addr, path).await?;
    anyhow::ensure!(resp.status == 200, "GET {path} on {addr}: {resp:?}");
    Ok(String::from_utf8(resp.body)?)
}

/// Write `text` as `dir/name`, run `ferry --config FILE config check` on it and assert that the check failed;
/// returns its stderr.
async fn config_check_fails(dir: &Path, name: &str, text: &str) -> anyhow::Result<String> {
    let file = write_file(dir, name, text)?;
    let out = run_ferry(
        BIN,
        &["--config", &file.display().to_string(), "config", "check"],
        &[],
    )
    .await?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    Ok(stderr)
}

async fn on_keep_alive(conn: &mut RawConn, path: &str) -> anyhow::Result<String> {
    let head = format!("GET {path} HTTP/1.1\r\nHost: example.com\r\n\r\n");
    conn.send(head.as_bytes()).await?;
    let resp = conn.read_response().await?;
    anyhow::ensure!(resp.status == 200, "GET {path}: {resp:?}");
    Ok(String::from_utf8(resp.body)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_exists_on_its_listeners_only_and_reloads_move_it() -> anyhow::Result<()> {
    let dir = TempDir::new("ferry-gw-listeners-")?;
    let file = write_file(
        dir.path(),
        "ferry.toml",
        &config("internal", "\"internal\""),
    )?;
    let server = FerryServer::start(
        BIN,
        ServerOptions {
            no_admin: true,
            ..ServerOptions::default()
        }
        .config(&file),
    )
    .await?;
    // the extra listeners' ports, chosen by the OS, in order
    let extra: Vec<SocketAddr> = server
        .output()
        .wait_for(T, "two `also listening` lines", |_, _| {
            let addrs: Vec<SocketAddr> = server
                .extra_listeners()
                .iter()
                .filter_map(|u| u.strip_prefix("http://"))
                .filter_map(|a| a.parse().ok())
                .collect();
            (addrs.len() == 2).then_some(addrs)
        })
        .await?;
    let (main, internal, http) = (server.addr(), extra[0], extra[1]);

    // the admin route exists on the internal listener only: on main the next matching route (the app) answers
    assert_eq!(body(internal, "/admin/users").await?, "admin");
    assert_eq!(body(main, "/admin/users").await?, "app");
    assert_eq!(body(internal, "/other").await?, "app");
    // the redirecting listener: the route that names it answers, every other request is redirected (routes of
    // every listener and of other listeners included)
    assert_eq!(
        body(http, "/.well-known/acme-challenge/t0k3n").await?,
        "token"
    );
    for path in ["/other", "/admin/users"] {
        let resp = get(http, path).await?;
        assert_eq!(resp.status, 308, "{path}: {resp:?}");
        assert_eq!(
            resp.header("location"),
            Some(format!("https://example.com{path}").as_str())
        );
    }
    // the challenge route is not main's: a /.well-known/ path Ferry does not answer itself goes to the routes
    assert_eq!(
        body(main, "/.well-known/acme-challenge/t0k3n").await?,
        "app"
    );

    // a keep-alive connection to the internal listener, open across the reloads below
    let mut held = RawConn::connect(internal).await?;
    assert_eq!(on_keep_alive(&mut held, "/admin/x").await?, "admin");

    // a reload moves the admin route to the main listener
    replace(&file, &config("internal", "\"main\""))?;
    server
        .output()
        .wait_stderr("gateway route table reloaded", T)
        .await?;
    assert_eq!(body(main, "/admin/users").await?, "admin");
    assert_eq!(body(internal, "/admin/users").await?, "app");
    assert_eq!(on_keep_alive(&mut held, "/admin/x").await?, "app");

    // a name no listener has refuses the whole reload, naming the route and the name; nothing changes
    replace(&file, &config("internal", "\"main\", \"intrenal\""))?;
    server
        .output()
        .wait_stderr("gateway section of the config file refused", T)
        .await?;
    assert!(
        server.output().stderr_contains(
            "gateway.routes[1].listeners: route \"admin\": no listener named \"intrenal\""
        ),
        "{}",
        server.output().tail(10)
    );
    assert_eq!(body(main, "/admin/users").await?, "admin");

    // the internal listener renamed, and the route limited to it under its new name, in one reload: the same
    // socket, so the connection opened before the rename gets the route as well as new connections do
    replace(&file, &config("staff", "\"staff\""))?;
    server
        .output()
        .wait_stderr("listener changed by a reload", T)
        .await?;
    assert_eq!(body(internal, "/admin/users").await?, "admin");
    assert_eq!(body(main, "/admin/users").await?, "app");
    assert_eq!(on_keep_alive(&mut held, "/admin/x").await?, "admin");
    assert_eq!(
        body(http, "/.well-known/acme-challenge/t0k3n").await?,
        "token"
    );
    Ok(())
}

/// A route naming a listener the config does not have is refused at load (`ferry config check`, and a start),
/// with the route's key and the name.
#[tokio::test]
async fn an_unknown_listener_name_is_refused_at_load() -> anyhow::Result<()> {
    let dir = TempDir::new("ferry-gw-listeners-check-")?;
    let good = write_file(dir.path(), "good.toml", &config("internal", "\"internal\""))?;
    let out = run_ferry(
        BIN,
        &["--config", &good.display().to_string(), "config", "check"],
        &[],
    )
    .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr =
        config_check_fails(dir.path(), "bad.toml", &config("internal", "\"staff\"")).await?;
    assert!(
        stderr
            .contains("gateway.routes[1].listeners: route \"admin\": no listener named \"staff\""),
        "{stderr}"
    );
    // two listeners of one name: refused with the second one's key
    let stderr = config_check_fails(
        dir.path(),
        "twice.toml",
        "version = 1\n[[server.listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n[[server.listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .await?;
    assert!(stderr.contains("server.listeners[1].name"), "{stderr}");
    Ok(())
}

/// `[server.tunnel] listeners` and `[server.relay] listeners`: connectors reach the node on a listener of their
/// own, `/relay/…` is served on the main listener only; the tunnel path on the main listener and the relay path
/// on the connectors' listener answer 404; an unknown name is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_and_the_tunnel_on_listeners_of_their_choosing() -> anyhow::Result<()> {
    use ferry_testkit::{Connector, ConnectorOptions, TargetKind, TargetServer};
    let dir = TempDir::new("ferry-endpoint-listeners-")?;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        "version = 1\n\
         [server.relay]\nlisteners = [\"main\"]\n\
         [server.tunnel]\nlisteners = [\"connectors\"]\n\
         [[server.listeners]]\nname = \"connectors\"\nlisten = \"127.0.0.1:0\"\n",
    )?;
    let server = FerryServer::start(BIN, ServerOptions::default().config(&config)).await?;
    let connectors: SocketAddr = server
        .extra_listeners()
        .iter()
        .find_map(|u| u.strip_prefix("http://"))
        .ok_or_else(|| anyhow::anyhow!("no extra listener: {}", server.output().stdout()))?
        .parse()?;
    let secret = server.create_tenant("demo").await?;
    let _connector = Connector::start(
        BIN,
        &format!("http://{connectors}"),
        "demo",
        &secret,
        &[("app", &echo.url())],
        ConnectorOptions::default(),
    )
    .await?;
    server.output().wait_stderr("tunnel attached", T).await?;

    let resp = get(server.addr(), "/relay/demo/app/x").await?;
    assert_eq!(resp.status, 200, "the relay on main: {resp:?}");
    let resp = get(connectors, "/relay/demo/app/x").await?;
    assert_eq!(
        resp.status, 404,
        "no relay on the connectors' listener: {resp:?}"
    );
    let resp = get(server.addr(), "/_ferry/tunnel").await?;
    assert_eq!(resp.status, 404, "no tunnel on main: {resp:?}");
    assert!(
        String::from_utf8_lossy(&resp.body).contains("server.tunnel.listeners"),
        "{resp:?}"
    );

    let stderr = config_check_fails(
        dir.path(),
        "bad.toml",
        "version = 1\n[server.tunnel]\nlisteners = [\"nowhere\"]\n",
    )
    .await?;
    assert!(
        stderr.contains("server.tunnel.listeners: no listener named \"nowhere\""),
        "{stderr}"
    );
    Ok(())
}
