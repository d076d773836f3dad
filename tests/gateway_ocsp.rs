//! End to end, against the built `ferry` binary: OCSP stapling with responses Ferry fetches (`[gateway.tls]
//! ocsp_stapling`). The responder is OpenSSL's own (`openssl ocsp` in responder mode, behind a small HTTP server
//! of this test on 127.0.0.1), the test PKI is made with `openssl` (a leaf with an Authority Information Access
//! OCSP URL, its chain file with the issuer, the responder's index file), and the staple is read by a real client,
//! `openssl s_client -status`. Without `openssl` these tests are skipped, except under CI (`CI` set), where they
//! fail.

use crate::common::{write_file, TempDir, BIN};
use ferry_testkit::{FerryServer, ServerOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether `openssl` can be run; under CI its absence is an error.
fn have_openssl() -> anyhow::Result<bool> {
    let ok = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var_os("CI").is_some() {
        anyhow::bail!(
            "the openssl command is needed by the OCSP tests (CI is set): install openssl"
        );
    }
    if !ok {
        eprintln!("skipped: no openssl command");
    }
    Ok(ok)
}

/// Run `openssl ARGS` in `dir`.
fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A CA (EC P-256) in `dir`, which signs leaves and answers OCSP for them from `index.txt`.
struct Pki {
    dir: PathBuf,
    index: Vec<String>,
}

impl Pki {
    fn new(dir: &Path) -> anyhow::Result<Self> {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=Ferry OCSP Test CA",
                "-days",
                "30",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )?;
        let pki = Self {
            dir: dir.to_owned(),
            index: Vec::new(),
        };
        pki.write_index()?;
        Ok(pki)
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn write_index(&self) -> anyhow::Result<()> {
        let mut text = self.index.join("\n");
        text.push('\n');
        write_file(
            &self.dir,
            "index.txt",
            if self.index.is_empty() { "" } else { &text },
        )?;
        Ok(())
    }

    /// A leaf for `name` with serial `serial` (hex), whose AIA names `ocsp` (if any), in the index as good
    /// (`V`) or revoked (`R`); its chain file has the CA after it when `with_issuer`. Returns (chain, key).
    fn leaf(
        &mut self,
        name: &str,
        serial: &str,
        ocsp: Option<&str>,
        revoked: bool,
        with_issuer: bool,
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
            ],
        )?;
        let mut ext = format!("subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\n");
        if let Some(url) = ocsp {
            ext.push_str(&format!("authorityInfoAccess=OCSP;URI:{url}\n"));
        }
        let ext_file = write_file(&self.dir, &format!("{name}.ext"), &ext)?;
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &format!("0x{serial}"),
                "-days",
                "30",
                "-extfile",
                &ext_file.display().to_string(),
                "-out",
                &crt,
            ],
        )?;
        let mut chain = std::fs::read_to_string(self.dir.join(&crt))?;
        if with_issuer {
            chain.push_str(&std::fs::read_to_string(self.ca())?);
        }
        let chain = write_file(&self.dir, &format!("{name}-chain.pem"), &chain)?;
        self.index.push(match revoked {
            false => format!("V\t301231000000Z\t\t{serial}\tunknown\t/CN={name}"),
            true => format!(
                "R\t301231000000Z\t240101000000Z,keyCompromise\t{serial}\tunknown\t/CN={name}"
            ),
        });
        self.write_index()?;
        Ok((chain, self.dir.join(key)))
    }
}

/// An OCSP responder on 127.0.0.1: each POSTed request answered by `openssl ocsp` from the CA's index. While
/// down, it accepts connections and closes them at once.
struct Responder {
    url: String,
    up: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Responder {
    async fn start(dir: &Path, up: bool) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/ocsp", listener.local_addr()?);
        let up = Arc::new(AtomicBool::new(up));
        let hits = Arc::new(AtomicUsize::new(0));
        let dir = dir.to_owned();
        let (up2, hits2) = (up.clone(), hits.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(stream);
                    continue;
                }
                let (dir, hits) = (dir.clone(), hits2.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (dir, hits) = (dir.clone(), hits.clone());
                        async move { answer(&dir, &hits, req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            url,
            up,
            hits,
            task,
        })
    }
}

type Reply = http::Response<http_body_util::Full<bytes::Bytes>>;

/// One OCSP exchange through `openssl ocsp`.
async fn answer(
    dir: &Path,
    hits: &AtomicUsize,
    req: http::Request<hyper::body::Incoming>,
) -> Result<Reply, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let fail = |status: u16, why: String| {
        eprintln!("test responder: {why}");
        let mut r = Reply::new(http_body_util::Full::new(bytes::Bytes::from(why)));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
        Ok(r)
    };
    let n = hits.fetch_add(1, Ordering::SeqCst);
    if req.method() != http::Method::POST
        || req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes())
            != Some(b"application/ocsp-request")
    {
        return fail(
            400,
            format!("not an OCSP POST: {} {:?}", req.method(), req.headers()),
        );
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return fail(400, e.to_string()),
    };
    let (reqin, respout) = (format!("req-{n}.der"), format!("resp-{n}.der"));
    if let Err(e) = std::fs::write(dir.join(&reqin), &body) {
        return fail(500, e.to_string());
    }
    let out = tokio::process::Command::new("openssl")
        .args([
            "ocsp",
            "-index",
            "index.txt",
            "-CA",
            "ca.pem",
            "-rsigner",
            "ca.pem",
            "-rkey",
            "ca.key",
            "-reqin",
            &reqin,
            "-respout",
            &respout,
            "-ndays",
            "1",
        ])
        .current_dir(dir)
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => return fail(500, String::from_utf8_lossy(&o.stderr).into_owned()),
        Err(e) => return fail(500, e.to_string()),
    }
    match std::fs::read(dir.join(&respout)) {
        Ok(der) => {
            let mut r = Reply::new(http_body_util::Full::new(bytes::Bytes::from(der)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/ocsp-response"),
            );
            Ok(r)
        }
        Err(e) => fail(500, e.to_string()),
    }
}

/// What `openssl s_client -status` saw of the staple for `name`: `None` when no response was sent, else the
/// text it printed of it.
async fn staple(port: u16, name: &str, ca: &Path) -> anyhow::Result<Option<String>> {
    let mut cmd = tokio::process::Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-servername",
        name,
        "-status",
    ])
    .arg("-CAfile")
    .arg(ca)
    .arg("-verify_return_error")
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(15), cmd.output()).await??;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        text.contains("Verify return code: 0 (ok)"),
        "s_client {name}: handshake not verified\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("OCSP response: no response sent") {
        return Ok(None);
    }
    anyhow::ensure!(
        text.contains("OCSP Response Data:"),
        "s_client {name}: no OCSP section\n{text}"
    );
    Ok(Some(text))
}

/// The staple for `name`, within `within` (asking again every 200 ms).
async fn staple_within(
    port: u16,
    name: &str,
    ca: &Path,
    within: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(text) = staple(port, name, ca).await? {
            return Ok(text);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no staple for {name} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn config(tls: &str) -> String {
    format!(
        r#"
[gateway.tls]
ocsp_stapling = true
{tls}

[[gateway.routes]]
respond = {{ status = 200, body = "ok\n" }}
"#
    )
}

/// A good certificate's response is fetched at start and stapled, checked for that certificate; a revoked one
/// gets no staple and an error line; certificates whose responses cannot be fetched (no issuer in the file, no
/// responder) are served without one and named in a warning; a reload of `[gateway.tls]` keeps the responses of
/// unchanged certificates without asking the responder again.
#[tokio::test]
async fn fetched_responses_are_stapled_and_revoked_certificates_are_not() -> anyhow::Result<()> {
    if !have_openssl()? {
        return Ok(());
    }
    let dir = TempDir::new("ferry-gw-ocsp-")?;
    let d = dir.path();
    let mut pki = Pki::new(d)?;
    let responder = Responder::start(d, true).await?;
    let url = responder.url.clone();
    let good = pki.leaf("localhost", "1001", Some(&url), false, true)?;
    let revoked = pki.leaf("revoked.test", "1002", Some(&url), true, true)?;
    let no_issuer = pki.leaf("no-issuer.test", "1003", Some(&url), false, false)?;
    let no_aia = pki.leaf("no-aia.test", "1004", None, false, true)?;
    let sni = |name: &str, (cert, key): &(PathBuf, PathBuf)| {
        format!(
            r#"{{ hosts = ["{name}"], cert = "{}", key = "{}" }}"#,
            cert.display(),
            key.display()
        )
    };
    let certificates = format!(
        "certificates = [{}, {}, {}]",
        sni("revoked.test", &revoked),
        sni("no-issuer.test", &no_issuer),
        sni("no-aia.test", &no_aia)
    );
    let config_path = write_file(d, "ferry.toml", &config(&certificates))?;
    let started = Instant::now();
    let server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .tls(&good.0, &good.1)
            .config(&config_path),
    )
    .await?;
    let port = server.addr().port();
    let out = server.output();

    // the good certificate's staple arrives within seconds, and is OpenSSL's successful answer for it
    let text = staple_within(port, "localhost", &pki.ca(), Duration::from_secs(15)).await?;
    eprintln!("staple after {:?}", started.elapsed());
    assert!(text.contains("OCSP Response Status: successful"), "{text}");
    assert!(text.contains("Cert Status: good"), "{text}");
    assert!(text.contains("Serial Number: 1001"), "{text}");
    assert!(text.contains("Next Update:"), "{text}");
    out.wait_stderr("OCSP response fetched", Duration::from_secs(5))
        .await?;

    // the revoked certificate: an error line, and no staple
    out.wait_stderr("the certificate is revoked", Duration::from_secs(15))
        .await?;
    assert!(out
        .stderr()
        .lines()
        .any(|l| l.contains("the certificate is revoked")
            && l.contains("revoked.test-chain.pem")
            && l.contains("ERROR")));
    assert_eq!(staple(port, "revoked.test", &pki.ca()).await?, None);

    // without the issuer in the file, or without a responder: served without stapling, with a warning naming it
    for (name, why) in [
        ("no-issuer.test", "no issuer certificate"),
        ("no-aia.test", "names no OCSP responder"),
    ] {
        assert!(
            out.stderr().lines().any(|l| l.contains(why)
                && l.contains(&format!("{name}-chain.pem"))
                && l.contains("WARN")),
            "warning for {name}\n{}",
            out.stderr()
        );
        assert_eq!(staple(port, name, &pki.ca()).await?, None, "{name}");
    }
    // only the two certificates with a responder and an issuer asked it
    assert_eq!(responder.hits.load(Ordering::SeqCst), 2);

    // a reload of [gateway.tls] builds the sites again: the unchanged certificates keep their responses
    std::fs::write(
        &config_path,
        config(&format!(
            "{certificates}\nprotocols = [\"TLSv1.2\", \"TLSv1.3\"]"
        )),
    )?;
    out.wait_stderr("gateway.tls reloaded", Duration::from_secs(15))
        .await?;
    let text = staple(port, "localhost", &pki.ca()).await?;
    assert!(
        text.is_some_and(|t| t.contains("Serial Number: 1001")),
        "stapled after the reload"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        responder.hits.load(Ordering::SeqCst),
        2,
        "no fetch again for unchanged certificates\n{}",
        out.stderr()
    );
    assert!(
        !out.stderr().contains("OCSP fetch failed"),
        "{}",
        out.stderr()
    );
    Ok(())
}

/// A responder that is down at start: the fetch fails with a warning, handshakes go on without a staple, and the
/// retry (after 5 s) staples the response once the responder answers.
#[tokio::test]
async fn a_responder_down_at_start_is_retried_until_it_answers() -> anyhow::Result<()> {
    if !have_openssl()? {
        return Ok(());
    }
    let dir = TempDir::new("ferry-gw-ocsp-down-")?;
    let d = dir.path();
    let mut pki = Pki::new(d)?;
    let responder = Responder::start(d, false).await?;
    let good = pki.leaf("localhost", "2001", Some(&responder.url), false, true)?;
    let config_path = write_file(d, "ferry.toml", &config(""))?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .tls(&good.0, &good.1)
            .config(&config_path),
    )
    .await?;
    let port = server.addr().port();
    let out = server.output();
    out.wait_stderr("OCSP fetch failed", Duration::from_secs(15))
        .await?;
    assert!(out
        .stderr()
        .lines()
        .any(|l| l.contains("OCSP fetch failed") && l.contains("WARN") && l.contains("retry_in")));
    // the listener serves meanwhile, without a staple
    assert_eq!(staple(port, "localhost", &pki.ca()).await?, None);

    responder.up.store(true, Ordering::SeqCst);
    let up_at = Instant::now();
    let text = staple_within(port, "localhost", &pki.ca(), Duration::from_secs(30)).await?;
    eprintln!("staple {:?} after the responder came up", up_at.elapsed());
    assert!(text.contains("Cert Status: good"), "{text}");
    assert!(text.contains("Serial Number: 2001"), "{text}");
    assert!(out.stderr_contains("OCSP response fetched"));
    Ok(())
}
