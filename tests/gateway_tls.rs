//! End to end, against the built `ferry` binary: the public listener's TLS for the gateway, driven by curl:
//! certificates chosen by SNI, client certificates required and verified against a CA bundle, and forged
//! client-certificate headers stripped before the upstream sees them.

use crate::common::{write_file, TempDir, BIN};
use ferry_testkit::{EchoReply, FerryServer, ServerOptions, TargetKind, TargetServer, TestPki};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A CA that signs leaves, all written under `dir`.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    path: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key)?;
        let path = write_file(dir, &format!("{name}.pem"), &cert.pem())?;
        Ok(Self { cert, key, path })
    }

    /// A leaf for `names` (with common name `cn`): its certificate and key files.
    fn leaf(
        &self,
        dir: &Path,
        file: &str,
        cn: &str,
        names: &[&str],
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        let key = KeyPair::generate()?;
        let mut p =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &self.cert, &self.key)?;
        Ok((
            write_file(dir, &format!("{file}.pem"), &cert.pem())?,
            write_file(dir, &format!("{file}-key.pem"), &key.serialize_pem())?,
        ))
    }
}

/// curl over HTTP/2 to `https://{name}:{port}{path}` resolved to loopback; `Err` with curl's message when it
/// fails (handshake refused…).
async fn curl(
    name: &str,
    port: u16,
    path: &str,
    ca: &Path,
    client: Option<&(PathBuf, PathBuf)>,
    headers: &[&str],
) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--fail", "--max-time", "10", "--http2", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{name}:{port}:127.0.0.1")]);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg(format!("https://{name}:{port}{path}"));
    let out =
        tokio::time::timeout(Duration::from_secs(20), cmd.kill_on_drop(true).output()).await??;
    anyhow::ensure!(
        out.status.success(),
        "curl {name}{path}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test]
async fn sni_certificates_and_required_client_certificates() -> anyhow::Result<()> {
    let dir = TempDir::new("ferry-gw-tls-")?;
    let d = dir.path();
    let main_ca = Ca::new(d, "main-ca")?;
    let api_ca = Ca::new(d, "api-ca")?;
    let client_ca = Ca::new(d, "client-ca")?;
    let stranger_ca = Ca::new(d, "stranger-ca")?;
    let default = main_ca.leaf(d, "default", "localhost", &["localhost"])?;
    let api = api_ca.leaf(d, "api", "api.example.test", &["api.example.test"])?;
    let client = client_ca.leaf(d, "client", "client one", &["client.example.test"])?;
    let stranger = stranger_ca.leaf(d, "stranger", "stranger", &["client.example.test"])?;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let config = write_file(
        d,
        "ferry.toml",
        &format!(
            r#"
[gateway.tls]
client_auth = "required"
client_ca = "{}"
certificates = [{{ hosts = ["api.example.test"], cert = "{}", key = "{}" }}]

[[gateway.routes]]
upstream = "echo"

[gateway.upstreams.echo]
servers = [{{ url = "{}" }}]
"#,
            client_ca.path.display(),
            api.0.display(),
            api.1.display(),
            echo.url()
        ),
    )?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .tls(&default.0, &default.1)
            .config(&config),
    )
    .await?;
    let port = server.addr().port();

    // each name gets its own certificate: only its own CA verifies it
    let body = curl(
        "api.example.test",
        port,
        "/x",
        &api_ca.path,
        Some(&client),
        &[],
    )
    .await?;
    let e: EchoReply = serde_json::from_str(&body)?;
    assert_eq!(e.uri, "/x");
    curl("localhost", port, "/x", &main_ca.path, Some(&client), &[]).await?;
    assert!(curl(
        "api.example.test",
        port,
        "/x",
        &main_ca.path,
        Some(&client),
        &[]
    )
    .await
    .is_err());

    // client certificates are required, and only those of the configured CA
    let no_cert = curl("localhost", port, "/x", &main_ca.path, None, &[]).await;
    assert!(no_cert.is_err(), "connected without a client certificate");
    let wrong = curl("localhost", port, "/x", &main_ca.path, Some(&stranger), &[]).await;
    assert!(wrong.is_err(), "connected with a certificate of another CA");

    // forged client-certificate headers never reach the upstream
    let body = curl(
        "localhost",
        port,
        "/x",
        &main_ca.path,
        Some(&client),
        &[
            "X-SSL-Client-Verify: SUCCESS",
            "X-SSL-Client-S-DN: CN=admin",
            "X-Forwarded-Client-Cert: By=spiffe://forged",
        ],
    )
    .await?;
    let e: EchoReply = serde_json::from_str(&body)?;
    // The upstream sees Ferry's own values (nginx names, the default), never the forged ones.
    assert_eq!(e.header_all("x-ssl-client-verify"), vec!["SUCCESS"]);
    let subject = e.header_all("x-ssl-client-s-dn");
    assert_eq!(subject.len(), 1, "one subject header: {subject:?}");
    assert!(subject[0].contains("client one"), "{subject:?}");
    assert!(!subject[0].contains("admin"), "{subject:?}");
    assert!(e
        .header("x-ssl-client-i-dn")
        .is_some_and(|v| v.contains("client-ca")));
    assert_eq!(e.header("x-ssl-client-fingerprint").map(str::len), Some(64));
    assert!(e
        .header("x-ssl-protocol")
        .is_some_and(|v| v.starts_with("TLSv1.")));
    let pem = e.header("x-ssl-client-cert").unwrap_or_default();
    assert!(
        pem.starts_with("-----BEGIN%20CERTIFICATE-----"),
        "URL-encoded PEM on one line: {pem}"
    );
    assert!(
        !e.has_header("x-forwarded-client-cert"),
        "the Envoy header is not configured, so the forged one is dropped"
    );
    Ok(())
}

/// With `client_auth = "optional_no_ca"` on the listener, a route with `require_client_cert` refuses clients
/// without a certificate (403 `client_certificate_required`) while the other routes stay open to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_may_require_a_client_certificate() -> anyhow::Result<()> {
    let dir = TempDir::new("ferry-gw-route-cert-")?;
    let d = dir.path();
    let main_ca = Ca::new(d, "main-ca")?;
    let client_ca = Ca::new(d, "client-ca")?;
    let stranger_ca = Ca::new(d, "stranger-ca")?;
    let default = main_ca.leaf(d, "default", "localhost", &["localhost"])?;
    let client = client_ca.leaf(d, "client", "client one", &["client.example.test"])?;
    let stranger = stranger_ca.leaf(d, "stranger", "stranger", &["client.example.test"])?;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let config = write_file(
        d,
        "ferry.toml",
        &format!(
            r#"
[gateway.tls]
client_auth = "optional_no_ca"
client_ca = "{}"

[[gateway.routes]]
name = "admin"
path = "/admin"
require_client_cert = true
upstream = "echo"

[[gateway.routes]]
name = "public"
upstream = "echo"
hsts = "max-age=63072000; includeSubDomains"
request_headers = {{ set = {{ "X-Client-DN" = "$ssl_client_s_dn", "X-Proto" = "$scheme $ssl_protocol" }} }}

[gateway.upstreams.echo]
servers = [{{ url = "{}" }}]
"#,
            client_ca.path.display(),
            echo.url()
        ),
    )?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .tls(&default.0, &default.1)
            .config(&config),
    )
    .await?;
    let port = server.addr().port();

    let body = curl("localhost", port, "/public", &main_ca.path, None, &[]).await?;
    let e: EchoReply = serde_json::from_str(&body)?;
    assert_eq!(e.header("x-ssl-client-verify"), Some("NONE"));
    // header control: TLS variables in request headers (none without a certificate), HSTS over TLS
    assert_eq!(e.header("x-client-dn"), None, "{:?}", e.headers);
    assert_eq!(e.header("x-proto"), Some("https TLSv1.3"));
    let tls_client = ferry_testkit::client::client_builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
            &main_ca.path,
        )?)?)
        .resolve("localhost", server.addr())
        .build()?;
    let resp = tls_client
        .get(format!("https://localhost:{port}/public"))
        .send()
        .await?;
    assert_eq!(
        resp.headers()
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok()),
        Some("max-age=63072000; includeSubDomains")
    );

    let refused = curl("localhost", port, "/admin/x", &main_ca.path, None, &[]).await;
    let why = format!("{refused:?}");
    assert!(
        why.contains("403") || why.contains("client_certificate_required"),
        "no certificate, no /admin: {why}"
    );

    let body = curl(
        "localhost",
        port,
        "/admin/x",
        &main_ca.path,
        Some(&client),
        &[],
    )
    .await?;
    let e: EchoReply = serde_json::from_str(&body)?;
    assert_eq!(e.header("x-ssl-client-verify"), Some("SUCCESS"));

    // A certificate of another CA gets in on an optional_no_ca listener, marked as failed (as nginx's
    // optional_no_ca does), with its details; a route that requires a certificate refuses it.
    let body = curl(
        "localhost",
        port,
        "/public",
        &main_ca.path,
        Some(&stranger),
        &[],
    )
    .await?;
    let e: EchoReply = serde_json::from_str(&body)?;
    let verify = e.header("x-ssl-client-verify").unwrap_or_default();
    assert_eq!(verify, "FAILED:unable to get local issuer certificate");
    assert!(e
        .header("x-client-dn")
        .is_some_and(|v| v.contains("CN=stranger")));
    assert!(e
        .header("x-ssl-client-s-dn")
        .is_some_and(|v| v.contains("stranger")));
    let refused = curl(
        "localhost",
        port,
        "/admin/x",
        &main_ca.path,
        Some(&stranger),
        &[],
    )
    .await;
    assert!(
        format!("{refused:?}").contains("403"),
        "a failed certificate does not open /admin: {refused:?}"
    );
    Ok(())
}

/// Plain HTTP sent to the TLS listener gets a plain-HTTP `400` that says to use https (nginx's "plain HTTP
/// request was sent to HTTPS port"), not a TLS alert that a client would read as an HTTP/0.9 response; TLS on the
/// same port still works.
#[tokio::test]
async fn plain_http_to_the_tls_listener_gets_a_400_that_says_so() -> anyhow::Result<()> {
    let pki = ferry_testkit::TestPki::new()?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default().tls(pki.cert_path(), pki.key_path()),
    )
    .await?;
    let resp = ferry_testkit::raw::request(
        server.addr(),
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        Duration::from_secs(10),
    )
    .await?;
    assert_eq!(resp.status, 400);
    let body = String::from_utf8_lossy(&resp.body);
    assert!(body.contains("https://"), "{body}");
    assert!(
        resp.headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("ferry-error") && v == "bad_request"),
        "{:?}",
        resp.headers
    );
    server
        .output()
        .wait_stderr("plain HTTP on a TLS listener", Duration::from_secs(10))
        .await?;
    let client = ferry_testkit::client::client_builder()
        .add_root_certificate(pki.reqwest_ca()?)
        .build()?;
    let ok = client
        .get(format!("{}/healthz", server.url()))
        .timeout(Duration::from_secs(10))
        .send()
        .await?;
    assert_eq!(ok.status(), 200);
    Ok(())
}

/// Several public listeners (`[[server.listeners]]`): a plain-HTTP one that redirects everything to HTTPS with
/// `308` (method and body kept), and a second TLS one serving what the main listener serves; all of them stop on
/// SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_listeners_redirect_to_https_and_serve_alike() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let dir = TempDir::new("ferry-gw-listeners-")?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        r#"
[[server.listeners]]
listen = "127.0.0.1:0"
redirect_to_https = true
https_port = 8443

[[server.listeners]]
listen = "127.0.0.1:0"
tls = true

[[gateway.routes]]
path = "/hello"
respond = { body = "hello\n" }
"#,
    )?;
    let mut server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .tls(pki.cert_path(), pki.key_path())
            .config(&config),
    )
    .await?;
    let extra: Vec<String> = server.extra_listeners();
    assert_eq!(extra.len(), 2, "{}", server.output().stdout());
    assert!(extra[0].starts_with("http://") && extra[1].starts_with("https://"));
    let plain = extra[0].trim_start_matches("http://").parse()?;
    let resp = ferry_testkit::raw::request(
        plain,
        b"POST /some/path?q=1 HTTP/1.1\r\nHost: Shop.Example.test:80\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await?;
    assert_eq!(resp.status, 308, "{resp:?}");
    assert_eq!(
        resp.header("location"),
        Some("https://shop.example.test:8443/some/path?q=1")
    );
    let resp = ferry_testkit::raw::request(
        plain,
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await?;
    assert_eq!(resp.status, 400, "no host, no redirect: {resp:?}");

    for base in [server.url().to_owned(), extra[1].clone()] {
        let addr: std::net::SocketAddr = base.trim_start_matches("https://").parse()?;
        let client = ferry_testkit::client::client_builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
                pki.ca_path(),
            )?)?)
            .resolve("localhost", addr)
            .build()?;
        let url = format!("https://localhost:{}", addr.port());
        let resp = client.get(format!("{url}/hello")).send().await?;
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(resp.text().await?, "hello\n");
    }
    server.sigterm()?;
    let status = server.wait_exit(Duration::from_secs(20)).await?;
    assert!(status.success(), "{status:?}");
    Ok(())
}

/// `[gateway.tls]` changes by a reload of the config file, without a restart: a new virtual host with its own
/// certificate, a host that requires client certificates while the rest stay optional (a request for it on a
/// connection made for another name is answered 421), strict `optional` (a certificate that does not verify
/// counts as none), TLS versions; a reload with a missing file is refused and the settings in use stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_settings_change_by_a_reload() -> anyhow::Result<()> {
    const T: Duration = Duration::from_secs(20);
    let dir = TempDir::new("ferry-gw-tls-reload-")?;
    let d = dir.path();
    let main_ca = Ca::new(d, "main-ca")?;
    let client_ca = Ca::new(d, "client-ca")?;
    let stranger_ca = Ca::new(d, "stranger-ca")?;
    let default = main_ca.leaf(d, "default", "localhost", &["localhost"])?;
    let new_host = main_ca.leaf(d, "new", "new", &["new.example.test"])?;
    let secure = main_ca.leaf(d, "secure", "secure", &["secure.example.test"])?;
    let client = client_ca.leaf(d, "client", "client one", &["client.example.test"])?;
    let stranger = stranger_ca.leaf(d, "stranger", "stranger", &["client.example.test"])?;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let routes = format!(
        "[[gateway.routes]]\nupstream = \"echo\"\n[gateway.upstreams.echo]\nservers = [{{ url = \"{}\" }}]\n",
        echo.url()
    );
    let config = write_file(d, "ferry.toml", &routes)?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .tls(&default.0, &default.1)
            .config(&config),
    )
    .await?;
    let port = server.addr().port();
    let ca = &main_ca.path;
    assert!(
        curl("new.example.test", port, "/", ca, None, &[])
            .await
            .is_err(),
        "no certificate for the new name yet"
    );

    let tls = |certificates: &str| {
        format!(
            r#"{routes}
[gateway.tls]
client_auth = "optional"
client_ca = "{}"
protocols = ["TLSv1.3"]
{certificates}
"#,
            client_ca.path.display()
        )
    };
    let certificates = format!(
        r#"
[[gateway.tls.certificates]]
hosts = ["new.example.test"]
cert = "{}"
key = "{}"

[[gateway.tls.certificates]]
hosts = ["secure.example.test"]
cert = "{}"
key = "{}"
client_auth = "required"
"#,
        new_host.0.display(),
        new_host.1.display(),
        secure.0.display(),
        secure.1.display()
    );
    let tmp = config.with_extension("tmp");
    std::fs::write(&tmp, tls(&certificates))?;
    std::fs::rename(&tmp, &config)?;
    server
        .output()
        .wait_stderr("gateway.tls reloaded", T)
        .await?;

    let body = curl("new.example.test", port, "/n", ca, None, &[]).await?;
    let e: EchoReply = serde_json::from_str(&body)?;
    assert_eq!(e.header("x-ssl-client-verify"), Some("NONE"));
    // strict optional: a certificate of another CA counts as none, its details are not passed
    let body = curl("localhost", port, "/", ca, Some(&stranger), &[]).await?;
    let e: EchoReply = serde_json::from_str(&body)?;
    assert_eq!(e.header("x-ssl-client-verify"), Some("NONE"));
    assert_eq!(e.header("x-ssl-client-s-dn"), None, "{:?}", e.headers);
    let body = curl("localhost", port, "/", ca, Some(&client), &[]).await?;
    let e: EchoReply = serde_json::from_str(&body)?;
    assert_eq!(e.header("x-ssl-client-verify"), Some("SUCCESS"));
    // the host that requires certificates
    assert!(
        curl("secure.example.test", port, "/", ca, None, &[])
            .await
            .is_err(),
        "secure.example.test needs a client certificate"
    );
    let body = curl("secure.example.test", port, "/s", ca, Some(&client), &[]).await?;
    let e: EchoReply = serde_json::from_str(&body)?;
    assert_eq!(e.header("x-ssl-client-verify"), Some("SUCCESS"));
    // ... and cannot be reached over a connection made for another name
    let misdirected = curl(
        "localhost",
        port,
        "/",
        ca,
        Some(&client),
        &["Host: secure.example.test"],
    )
    .await;
    assert!(
        format!("{misdirected:?}").contains("421"),
        "{misdirected:?}"
    );
    // TLS 1.2 is no longer offered
    let old = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--tls-max", "1.2", "--cacert"])
        .arg(ca)
        .args([
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
            &format!("https://localhost:{port}/"),
        ])
        .output()
        .await?;
    assert!(!old.status.success(), "a TLS 1.2 client is refused");

    // a reload naming a missing file is refused; the settings in use stay
    std::fs::write(
        &tmp,
        tls(&format!(
            "{certificates}\n[[gateway.tls.certificates]]\nhosts = [\"gone.example.test\"]\ncert = \"{0}/gone.pem\"\nkey = \"{0}/gone-key.pem\"\n",
            d.display()
        )),
    )?;
    std::fs::rename(&tmp, &config)?;
    server
        .output()
        .wait_stderr("gateway section of the config file refused", T)
        .await?;
    assert!(server.output().stderr_contains("gone.pem"));
    curl("new.example.test", port, "/n", ca, None, &[]).await?;
    Ok(())
}

/// A `[[server.listeners]]` entry with TLS settings of its own (nginx's `server { listen 8443 ssl;
/// ssl_certificate …; ssl_client_certificate …; ssl_verify_client on; }`): its own certificate and a required
/// client certificate of its own CA, while the main listener and a TLS listener without settings of its own keep
/// `server.tls_cert` and `[gateway.tls]` (optional client certificates of another CA). The client certificate's
/// details reach the upstream from the listener's connections as from the main one's. A reload that changes the
/// listener's certificate applies to new connections; one naming a missing file is refused, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_with_a_certificate_and_client_ca_of_its_own() -> anyhow::Result<()> {
    const T: Duration = Duration::from_secs(20);
    let dir = TempDir::new("ferry-gw-listener-tls-")?;
    let d = dir.path();
    let main_ca = Ca::new(d, "main-ca")?;
    let partner_ca = Ca::new(d, "partner-ca")?;
    let renewed_ca = Ca::new(d, "renewed-ca")?;
    let staff_ca = Ca::new(d, "staff-ca")?;
    let partners_ca = Ca::new(d, "partners-clients-ca")?;
    let default = main_ca.leaf(d, "default", "localhost", &["localhost"])?;
    let partner = partner_ca.leaf(d, "partner", "localhost", &["localhost"])?;
    let renewed = renewed_ca.leaf(d, "renewed", "localhost", &["localhost"])?;
    let staff = staff_ca.leaf(d, "staff", "staff one", &["client.example.test"])?;
    let partner_client =
        partners_ca.leaf(d, "partner-client", "partner one", &["client.example.test"])?;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let text = |cert: &Path, key: &Path, more_tls: &str| {
        format!(
            r#"
[gateway.tls]
client_auth = "optional"
client_ca = "{staff_ca}"
{more_tls}

[[server.listeners]]
listen = "127.0.0.1:0"
tls = true

[[server.listeners]]
listen = "127.0.0.1:0"
tls = true
cert = "{cert}"
key = "{key}"
client_auth = "required"
client_ca = "{partners_ca}"

[[gateway.routes]]
upstream = "echo"

[gateway.upstreams.echo]
servers = [{{ url = "{echo}" }}]
"#,
            staff_ca = staff_ca.path.display(),
            partners_ca = partners_ca.path.display(),
            cert = cert.display(),
            key = key.display(),
            echo = echo.url()
        )
    };
    let config = write_file(d, "ferry.toml", &text(&partner.0, &partner.1, ""))?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .tls(&default.0, &default.1)
            .config(&config),
    )
    .await?;
    let port = |url: &str| -> anyhow::Result<u16> {
        let addr: std::net::SocketAddr = url.trim_start_matches("https://").parse()?;
        Ok(addr.port())
    };
    let extra: Vec<u16> = server
        .extra_listeners()
        .iter()
        .map(String::as_str)
        .map(port)
        .collect::<anyhow::Result<_>>()?;
    assert_eq!(extra.len(), 2, "{}", server.output().stdout());
    let (main, shared, own) = (server.addr().port(), extra[0], extra[1]);
    let verify = |body: &str| -> anyhow::Result<EchoReply> { Ok(serde_json::from_str(body)?) };

    // the main listener and the listener sharing its settings: the main certificate, optional staff certificates
    for p in [main, shared] {
        let e = verify(&curl("localhost", p, "/m", &main_ca.path, None, &[]).await?)?;
        assert_eq!(e.header("x-ssl-client-verify"), Some("NONE"), "port {p}");
        let e = verify(&curl("localhost", p, "/m", &main_ca.path, Some(&staff), &[]).await?)?;
        assert_eq!(e.header("x-ssl-client-verify"), Some("SUCCESS"), "port {p}");
        assert!(e
            .header("x-ssl-client-s-dn")
            .is_some_and(|v| v.contains("staff one")));
        // a partner's certificate is not of the staff CA: counted as none there
        let e = verify(
            &curl(
                "localhost",
                p,
                "/m",
                &main_ca.path,
                Some(&partner_client),
                &[],
            )
            .await?,
        )?;
        assert_eq!(e.header("x-ssl-client-verify"), Some("NONE"), "port {p}");
        assert!(
            curl("localhost", p, "/m", &partner_ca.path, None, &[])
                .await
                .is_err(),
            "port {p} serves the main certificate"
        );
    }

    // the listener of its own: its certificate, and a partner certificate required
    assert!(
        curl(
            "localhost",
            own,
            "/p",
            &main_ca.path,
            Some(&partner_client),
            &[]
        )
        .await
        .is_err(),
        "the listener's own certificate is not the main one"
    );
    let refused = curl("localhost", own, "/p", &partner_ca.path, None, &[]).await;
    assert!(refused.is_err(), "connected without a client certificate");
    let refused = curl("localhost", own, "/p", &partner_ca.path, Some(&staff), &[]).await;
    assert!(
        refused.is_err(),
        "connected with a certificate of the main CA"
    );
    let e = verify(
        &curl(
            "localhost",
            own,
            "/p",
            &partner_ca.path,
            Some(&partner_client),
            &["X-SSL-Client-S-DN: CN=forged"],
        )
        .await?,
    )?;
    assert_eq!(e.uri, "/p");
    assert_eq!(e.header("x-ssl-client-verify"), Some("SUCCESS"));
    assert_eq!(e.header_all("x-ssl-client-s-dn"), vec!["CN=partner one"]);
    assert!(e
        .header("x-ssl-client-i-dn")
        .is_some_and(|v| v.contains("partners-clients-ca")));
    assert_eq!(e.header("x-ssl-client-fingerprint").map(str::len), Some(64));

    // a reload gives the listener another certificate: new connections get it
    let tmp = config.with_extension("tmp");
    std::fs::write(&tmp, text(&renewed.0, &renewed.1, ""))?;
    std::fs::rename(&tmp, &config)?;
    server
        .output()
        .wait_stderr("listener changed by a reload", T)
        .await?;
    let e = verify(
        &curl(
            "localhost",
            own,
            "/r",
            &renewed_ca.path,
            Some(&partner_client),
            &[],
        )
        .await?,
    )?;
    assert_eq!(e.header("x-ssl-client-verify"), Some("SUCCESS"));
    assert!(
        curl(
            "localhost",
            own,
            "/r",
            &partner_ca.path,
            Some(&partner_client),
            &[]
        )
        .await
        .is_err(),
        "the old certificate is gone"
    );
    assert!(
        curl("localhost", own, "/r", &renewed_ca.path, None, &[])
            .await
            .is_err(),
        "still a required client certificate"
    );
    curl("localhost", main, "/m", &main_ca.path, None, &[]).await?;
    curl("localhost", shared, "/m", &main_ca.path, None, &[]).await?;

    // a [gateway.tls] change reaches the listener's settings too (the keys it does not set are [gateway.tls]'s)
    std::fs::write(
        &tmp,
        text(&renewed.0, &renewed.1, "protocols = [\"TLSv1.3\"]"),
    )?;
    std::fs::rename(&tmp, &config)?;
    server
        .output()
        .wait_stderr("TLS settings reloaded with [gateway.tls]", T)
        .await?;
    let client = &partner_client;
    let tls12 = |p: u16, ca: PathBuf| async move {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--tls-max", "1.2", "--cacert"])
            .arg(&ca)
            .arg("--cert")
            .arg(&client.0)
            .arg("--key")
            .arg(&client.1)
            .args([
                "--resolve",
                &format!("localhost:{p}:127.0.0.1"),
                &format!("https://localhost:{p}/"),
            ])
            .output()
            .await?;
        anyhow::Ok(out.status.success())
    };
    assert!(
        !tls12(own, renewed_ca.path.clone()).await?,
        "TLS 1.2 is no longer offered"
    );
    assert!(
        !tls12(main, main_ca.path.clone()).await?,
        "nor on the main listener"
    );
    curl(
        "localhost",
        own,
        "/v",
        &renewed_ca.path,
        Some(&partner_client),
        &[],
    )
    .await?;

    // a reload naming a missing certificate file is refused with the listener's key; nothing changes
    let gone = d.join("gone.pem");
    std::fs::write(&tmp, text(&gone, &renewed.1, ""))?;
    std::fs::rename(&tmp, &config)?;
    server
        .output()
        .wait_stderr("gateway section of the config file refused", T)
        .await?;
    assert!(
        server.output().stderr_contains("server.listeners[1].cert"),
        "{}",
        server.output().tail(5)
    );
    curl(
        "localhost",
        own,
        "/r",
        &renewed_ca.path,
        Some(&partner_client),
        &[],
    )
    .await?;
    Ok(())
}

/// HTTP/3 (`http3 = true`) on the public listener and on a TLS listener of `[[server.listeners]]`, driven by a
/// Rust HTTP/3 client (quinn and h3): the same routes as over TCP (an answer of the gateway's own, an upstream
/// pool that gets the request over HTTP/1.1 with the forwarding headers and the whole body), the TCP side's
/// `Alt-Svc` pointing at it, a route that does not exist answered 404, and a reload that turns HTTP/3 on for a
/// listener refused (its UDP socket is bound at start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_serves_the_same_routes_as_tcp() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let dir = TempDir::new("ferry-gw-h3-")?;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let config_text = |http3_on_second: bool| {
        format!(
            r#"
[server]
http3 = true

[[server.listeners]]
listen = "127.0.0.1:0"
tls = true
http3 = true

[[server.listeners]]
listen = "127.0.0.1:0"
tls = true
http3 = {http3_on_second}

[[gateway.routes]]
path = "/hello"
respond = {{ body = "hello\n" }}

[[gateway.routes]]
path = "/api/"
upstream = "echo"

[gateway.upstreams.echo]
servers = [{{ url = "{}" }}]
"#,
            echo.url()
        )
    };
    let config = write_file(dir.path(), "ferry.toml", &config_text(false))?;
    let mut server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .tls(pki.cert_path(), pki.key_path())
            .config(&config),
    )
    .await?;
    let extra: Vec<std::net::SocketAddr> = server
        .extra_listeners()
        .iter()
        .filter_map(|u| u.strip_prefix("https://"))
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    assert_eq!(extra.len(), 2, "{}", server.output().stdout());

    for addr in [server.addr(), extra[0]] {
        // over TCP, the answer says where HTTP/3 is
        let tcp = ferry_testkit::client::client_builder()
            .add_root_certificate(pki.reqwest_ca()?)
            .resolve("localhost", addr)
            .build()?;
        let resp = tcp
            .get(format!("https://localhost:{}/hello", addr.port()))
            .send()
            .await?;
        assert_eq!(
            resp.headers().get("alt-svc").and_then(|v| v.to_str().ok()),
            Some(format!("h3=\":{}\"; ma=86400", addr.port()).as_str())
        );

        let mut h3 =
            ferry_testkit::H3Client::connect(addr, "localhost", &pki.ca_path(), None).await?;
        let resp = h3.get("/hello").await?;
        assert_eq!(
            (resp.status, resp.text().as_str()),
            (200, "hello\n"),
            "{resp:?}"
        );
        let body: bytes::Bytes = (0..300 * 1024u32).map(|i| (i % 251) as u8).collect();
        let mut digest = ferry_testkit::Sha256Hex::new();
        digest.update(&body);
        let digest = digest.finish();
        let resp = h3
            .request(
                http::Method::POST,
                "/api/upload?x=1",
                &[("content-type", "application/octet-stream")],
                body.clone(),
            )
            .await?;
        assert_eq!(resp.status, 200, "{resp:?}");
        let e: EchoReply = serde_json::from_slice(&resp.body)?;
        assert_eq!(
            (e.method.as_str(), e.uri.as_str()),
            ("POST", "/api/upload?x=1")
        );
        assert_eq!(e.version, "HTTP/1.1", "upstreams get HTTP/1.1");
        assert_eq!(e.body_len, body.len() as u64);
        assert_eq!(e.body_sha256, digest);
        assert_eq!(
            e.header("host"),
            Some(format!("localhost:{}", addr.port()).as_str())
        );
        assert_eq!(e.header("x-forwarded-proto"), Some("https"));
        assert_eq!(e.header("x-forwarded-for"), Some("127.0.0.1"));
        let resp = h3.get("/nothing/here").await?;
        assert_eq!(resp.status, 404, "{resp:?}");
        h3.close().await;
    }
    // the second listener has no HTTP/3: no Alt-Svc
    let tcp = ferry_testkit::client::client_builder()
        .add_root_certificate(pki.reqwest_ca()?)
        .resolve("localhost", extra[1])
        .build()?;
    let resp = tcp
        .get(format!("https://localhost:{}/hello", extra[1].port()))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("alt-svc").is_none());

    // turning it on needs a restart: the reload is refused, naming the key (listeners on port 0 are matched in
    // order)
    let text = config_text(true);
    std::fs::write(&config, text)?;
    server
        .output()
        .wait_stderr(
            "server.listeners[1].http3: turning HTTP/3 on or off needs a restart",
            Duration::from_secs(20),
        )
        .await?;

    server.sigterm()?;
    let status = server.wait_exit(Duration::from_secs(20)).await?;
    assert!(status.success(), "{status:?}");
    Ok(())
}
