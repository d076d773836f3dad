//! Client-side helpers: a reqwest client fit for tests, relay URLs, and the check of Ferry's error shape.

use std::time::Duration;

/// A reqwest client: no proxy from the environment, no automatic decompression, bounded connect time.
pub fn http_client() -> reqwest::Client {
    client_builder().build().unwrap_or_default()
}

/// The builder behind [`http_client`], to add a CA or change limits.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(64)
        .redirect(reqwest::redirect::Policy::none())
}

/// `{server}/relay/{tenant}/{target}{rest}`.
pub fn relay_url(server: &str, tenant: &str, target: &str, rest: &str) -> String {
    format!(
        "{}/relay/{tenant}/{target}{rest}",
        server.trim_end_matches('/')
    )
}

/// What Ferry's error responses carry, checked on status, headers and body.
#[derive(Debug, Clone)]
pub struct FerryError {
    pub status: u16,
    pub code: String,
    pub request_id: String,
    pub body: String,
}

/// Check that a response is Ferry's error `code` with `status`: a `ferry-error` header, an `x-request-id` header,
/// a `text/plain` content type and the one-line body `{code}: {message} (request id {id})`.
pub fn check_ferry_error(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    want_status: u16,
    want_code: &str,
) -> anyhow::Result<FerryError> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body = String::from_utf8_lossy(body).into_owned();
    let ctx = || format!("status {status}, headers {headers:?}, body {body:?}");
    anyhow::ensure!(
        status == want_status,
        "want status {want_status}, got {}",
        ctx()
    );
    let code =
        header("ferry-error").ok_or_else(|| anyhow::anyhow!("no ferry-error header: {}", ctx()))?;
    anyhow::ensure!(
        code == want_code,
        "want ferry-error {want_code}, got {}",
        ctx()
    );
    let request_id = header("x-request-id")
        .ok_or_else(|| anyhow::anyhow!("no x-request-id header: {}", ctx()))?;
    anyhow::ensure!(!request_id.is_empty(), "empty x-request-id: {}", ctx());
    let ctype = header("content-type").unwrap_or_default();
    anyhow::ensure!(
        ctype.starts_with("text/plain"),
        "want text/plain, got {}",
        ctx()
    );
    let line = body.strip_suffix('\n').unwrap_or(&body);
    anyhow::ensure!(!line.contains('\n'), "body is not one line: {}", ctx());
    anyhow::ensure!(
        line.starts_with(&format!("{want_code}: "))
            && line.ends_with(&format!(" (request id {request_id})")),
        "body is not `{want_code}: <message> (request id {request_id})`: {}",
        ctx()
    );
    Ok(FerryError {
        status,
        code,
        request_id,
        body,
    })
}

/// [`check_ferry_error`] on a reqwest response (reads its body).
pub async fn expect_ferry_error(
    resp: reqwest::Response,
    want_status: u16,
    want_code: &str,
) -> anyhow::Result<FerryError> {
    let status = resp.status().as_u16();
    let headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = crate::within(Duration::from_secs(30), "error body", resp.bytes()).await??;
    check_ferry_error(status, &headers, &body, want_status, want_code)
}
