//! The access log: one line per request answered by a gateway route or the relay, in nginx's `combined` format
//! (with duration, request id, route and upstream appended), as one JSON object, or in a format of the
//! operator's own (`access_log_format`, nginx's variables), written once the response body has ended (so that
//! the bytes sent are the body's real size): through tracing with target `ferry::access`, or to a file of its own.
//!
//! Owns: what an entry holds, the line formats, the response-body wrapper that counts bytes and writes the line
//! when the body ends or is dropped, and the file sink (a thread of its own, reopened for logrotate). Does not
//! own: which requests are logged (the app's routes call [`AccessEntry::begin`] and [`AccessEntry::finish`]),
//! when the file is reopened (the gateway: SIGUSR1, SIGHUP) or where tracing writes (`ferry-telemetry`).

use crate::EdgeError;
use ferry_config::{AccessLog, GatewayConfig};
use ferry_http::{Body, Counted, Guarded, TlsInfo};
use ferry_proto::headers::X_REQUEST_ID;
use http::{header, HeaderValue, Request, Response, Version};
use http_body_util::BodyExt;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The tracing target of access-log lines (filter with `RUST_LOG=ferry::access=info`, or off with
/// `ferry::access=off`).
pub const TARGET: &str = "ferry::access";

/// Lines waiting for the file writer at most; beyond, lines are dropped (and counted) rather than holding up
/// requests behind a slow disk.
const FILE_QUEUE: usize = 65_536;

/// A response extension naming what answered the request: an upstream server (`10.0.1.10:8080`) or a relay
/// target (`tenant/target`). The access log shows it; nothing else reads it.
#[derive(Debug, Clone)]
pub struct Upstream(pub String);

/// A response extension: how long the upstream server took from the request sent to its response head
/// (`$upstream_response_time`).
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTime(pub Duration);

/// The access log in force: its line format and where lines go. Built from `[gateway]`; `None` when off.
#[derive(Debug)]
pub struct AccessLogger {
    format: LineFormat,
    sink: Sink,
}

#[derive(Debug, Clone, PartialEq)]
enum LineFormat {
    Combined,
    Json,
    Custom(Vec<Piece>),
}

type Piece = crate::template::Part<Var>;

/// The variables of `access_log_format`, nginx's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    RemoteAddr,
    TimeLocal,
    TimeIso8601,
    Request,
    RequestMethod,
    RequestUri,
    ServerProtocol,
    Status,
    BodyBytesSent,
    RequestTime,
    UpstreamResponseTime,
    UpstreamAddr,
    HttpReferer,
    HttpUserAgent,
    Host,
    RequestId,
    Route,
    SslProtocol,
    SslClientVerify,
    SslClientSDn,
    SslClientIDn,
}

const VARS: [(&str, Var); 21] = [
    ("remote_addr", Var::RemoteAddr),
    ("time_local", Var::TimeLocal),
    ("time_iso8601", Var::TimeIso8601),
    ("request", Var::Request),
    ("request_method", Var::RequestMethod),
    ("request_uri", Var::RequestUri),
    ("server_protocol", Var::ServerProtocol),
    ("status", Var::Status),
    ("body_bytes_sent", Var::BodyBytesSent),
    ("request_time", Var::RequestTime),
    ("upstream_response_time", Var::UpstreamResponseTime),
    ("upstream_addr", Var::UpstreamAddr),
    ("http_referer", Var::HttpReferer),
    ("http_user_agent", Var::HttpUserAgent),
    ("host", Var::Host),
    ("request_id", Var::RequestId),
    ("route", Var::Route),
    ("ssl_protocol", Var::SslProtocol),
    ("ssl_client_verify", Var::SslClientVerify),
    ("ssl_client_s_dn", Var::SslClientSDn),
    ("ssl_client_i_dn", Var::SslClientIDn),
];

fn parse_format(text: &str) -> Result<Vec<Piece>, String> {
    crate::template::parse(text, |name| {
        VARS.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                format!(
                    "unknown variable ${name}; known: {}",
                    VARS.iter()
                        .map(|(n, _)| format!("${n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    })
}

#[derive(Debug)]
enum Sink {
    Tracing,
    File(FileSink),
}

enum FileMsg {
    Line(String),
    Reopen,
}

/// Lines go to a thread that owns the file: a request never waits for the disk.
#[derive(Debug)]
struct FileSink {
    path: PathBuf,
    tx: mpsc::SyncSender<FileMsg>,
    dropped: Arc<AtomicU64>,
}

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o640);
    }
    options.open(path)
}

impl FileSink {
    fn start(path: &Path) -> Result<Self, String> {
        let file = open_log(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (tx, rx) = mpsc::sync_channel::<FileMsg>(FILE_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let owned = path.to_path_buf();
        let lost = dropped.clone();
        std::thread::Builder::new()
            .name("ferry-access-log".into())
            .spawn(move || write_lines(owned, file, rx, lost))
            .map_err(|e| format!("cannot start the access-log writer: {e}"))?;
        Ok(Self {
            path: path.to_path_buf(),
            tx,
            dropped,
        })
    }
}

/// The writer thread: lines are buffered and flushed whenever the queue runs dry; `Reopen` closes the file and
/// opens the path again (after logrotate moved it away). Ends when every sender is gone.
fn write_lines(
    path: PathBuf,
    file: std::fs::File,
    rx: mpsc::Receiver<FileMsg>,
    dropped: Arc<AtomicU64>,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                FileMsg::Line(line) => {
                    if let Err(e) = out
                        .write_all(line.as_bytes())
                        .and_then(|()| out.write_all(b"\n"))
                    {
                        if !failing {
                            tracing::error!(file = %path.display(), "cannot write the access log: {e}");
                        }
                        failing = true;
                    } else {
                        failing = false;
                    }
                }
                FileMsg::Reopen => {
                    let _ = out.flush();
                    match open_log(&path) {
                        Ok(file) => {
                            out = std::io::BufWriter::with_capacity(64 * 1024, file);
                            tracing::info!(file = %path.display(), "access log reopened");
                        }
                        Err(e) => {
                            tracing::error!(file = %path.display(), "cannot reopen the access log, writing on to the old file: {e}")
                        }
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(file = %path.display(), lost, "access-log lines dropped: the disk did not keep up");
        }
    }
}

impl AccessLogger {
    /// The access log `config` asks for; `None` when off. Errors name the key.
    pub fn from_config(config: &GatewayConfig) -> Result<Option<Arc<Self>>, EdgeError> {
        let bad = |field: &str, message: String| EdgeError::Config {
            path: format!("gateway.{field}"),
            message,
        };
        let format = match config.access_log {
            AccessLog::Off => {
                if config.access_log_file.is_some() || config.access_log_format.is_some() {
                    return Err(bad(
                        "access_log",
                        "is off, but access_log_file or access_log_format is set: say combined, json or custom"
                            .into(),
                    ));
                }
                return Ok(None);
            }
            AccessLog::Combined => LineFormat::Combined,
            AccessLog::Json => LineFormat::Json,
            AccessLog::Custom => {
                let text = config.access_log_format.as_deref().ok_or_else(|| {
                    bad(
                        "access_log_format",
                        "access_log = \"custom\" needs it".into(),
                    )
                })?;
                LineFormat::Custom(parse_format(text).map_err(|m| bad("access_log_format", m))?)
            }
        };
        if config.access_log_format.is_some() && config.access_log != AccessLog::Custom {
            return Err(bad(
                "access_log_format",
                "only used with access_log = \"custom\"".into(),
            ));
        }
        let sink = match &config.access_log_file {
            Some(path) => Sink::File(FileSink::start(path).map_err(|m| bad("access_log_file", m))?),
            None => Sink::Tracing,
        };
        Ok(Some(Arc::new(Self { format, sink })))
    }

    /// Whether `config` asks for this very log (same format and destination): a reload keeps it then.
    pub(crate) fn same_as(&self, config: &GatewayConfig) -> bool {
        let format = match (config.access_log, config.access_log_format.as_deref()) {
            (AccessLog::Combined, None) => LineFormat::Combined,
            (AccessLog::Json, None) => LineFormat::Json,
            (AccessLog::Custom, Some(text)) => match parse_format(text) {
                Ok(pieces) => LineFormat::Custom(pieces),
                Err(_) => return false,
            },
            _ => return false,
        };
        let path = match &self.sink {
            Sink::File(f) => Some(&f.path),
            Sink::Tracing => None,
        };
        format == self.format && path == config.access_log_file.as_ref()
    }

    /// The format's kind.
    pub fn kind(&self) -> AccessLog {
        match self.format {
            LineFormat::Combined => AccessLog::Combined,
            LineFormat::Json => AccessLog::Json,
            LineFormat::Custom(_) => AccessLog::Custom,
        }
    }

    /// Close and open the file again (logrotate moved it away); nothing for the log through tracing.
    pub fn reopen(&self) {
        if let Sink::File(f) = &self.sink {
            if f.tx.try_send(FileMsg::Reopen).is_err() {
                tracing::warn!(file = %f.path.display(), "access log busy: reopening later");
                let _ = f.tx.send(FileMsg::Reopen);
            }
        }
    }

    fn write(&self, line: String) {
        match &self.sink {
            Sink::Tracing => tracing::info!(target: TARGET, "{line}"),
            Sink::File(f) => {
                if f.tx.try_send(FileMsg::Line(line)).is_err() {
                    f.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn needs(&self, wanted: &[Var]) -> bool {
        match &self.format {
            LineFormat::Custom(pieces) => pieces
                .iter()
                .any(|p| matches!(p, Piece::Var(v) if wanted.contains(v))),
            _ => false,
        }
    }
}

/// What is known about a request when it arrives, waiting for its response.
#[derive(Debug)]
pub struct AccessEntry {
    logger: Arc<AccessLogger>,
    started: Instant,
    time: SystemTime,
    client: Option<std::net::IpAddr>,
    method: String,
    target: String,
    protocol: &'static str,
    referer: Option<String>,
    user_agent: Option<String>,
    request_id: String,
    /// Kept only when the format reads them.
    host: Option<String>,
    tls: Option<Arc<TlsInfo>>,
}

impl AccessEntry {
    /// Start an entry for `req`, or `None` when the access log is off. Makes sure the request carries a valid
    /// `x-request-id` (the client's, or a new one), so that the line, the upstream and the response share it.
    pub fn begin<B>(logger: Option<Arc<AccessLogger>>, req: &mut Request<B>) -> Option<Self> {
        let logger = logger?;
        let request_id = ferry_http::request_id(req);
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            req.headers_mut().insert(X_REQUEST_ID, v);
        }
        let header = |name: header::HeaderName| {
            req.headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let host = if logger.needs(&[Var::Host]) {
            crate::route::request_host(req)
        } else {
            None
        };
        let tls = if logger.needs(&[
            Var::SslProtocol,
            Var::SslClientVerify,
            Var::SslClientSDn,
            Var::SslClientIDn,
        ]) {
            req.extensions().get::<Arc<TlsInfo>>().cloned()
        } else {
            None
        };
        Some(Self {
            logger,
            started: Instant::now(),
            time: SystemTime::now(),
            client: req
                .extensions()
                .get::<ferry_http::ClientInfo>()
                .map(|c| c.remote_addr.ip()),
            method: req.method().as_str().to_owned(),
            target: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned()),
            protocol: protocol(req.version()),
            referer: header(header::REFERER),
            user_agent: header(header::USER_AGENT),
            request_id,
            host,
            tls,
        })
    }

    /// Wrap `resp`'s body so that the line is written when it ends (or is dropped), with the bytes it carried.
    /// `route` is the gateway route that answered, if any.
    pub fn finish(self, route: Option<&str>, resp: Response<Body>) -> Response<Body> {
        let (parts, body) = resp.into_parts();
        let request_id = parts
            .headers
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map_or(self.request_id.clone(), str::to_owned);
        let bytes = Arc::new(AtomicU64::new(0));
        let pending = Pending {
            line: Some(Line {
                entry: self,
                status: parts.status.as_u16(),
                route: route.map(str::to_owned),
                upstream: parts.extensions.get::<Upstream>().map(|u| u.0.clone()),
                upstream_time: parts.extensions.get::<UpstreamTime>().map(|t| t.0),
                request_id,
            }),
            bytes: bytes.clone(),
        };
        let body = Guarded::new(Counted::new(body, bytes), pending).boxed_unsync();
        Response::from_parts(parts, body)
    }
}

struct Line {
    entry: AccessEntry,
    status: u16,
    route: Option<String>,
    upstream: Option<String>,
    upstream_time: Option<Duration>,
    request_id: String,
}

/// Held by the response body; writes the line when dropped (the body ended, failed or was dropped).
struct Pending {
    line: Option<Line>,
    bytes: Arc<AtomicU64>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(line) = self.line.take() {
            let bytes = self.bytes.load(Ordering::Relaxed);
            let logger = line.entry.logger.clone();
            let text = match &logger.format {
                LineFormat::Json => json(&line, bytes),
                LineFormat::Combined => combined(&line, bytes),
                LineFormat::Custom(pieces) => custom(pieces, &line, bytes),
            };
            logger.write(text);
        }
    }
}

/// A line of `access_log_format`; absent values are `-`, as nginx writes them.
fn custom(pieces: &[Piece], line: &Line, bytes: u64) -> String {
    let e = &line.entry;
    let mut s = String::with_capacity(256);
    let cert = std::cell::OnceCell::new();
    let cert_value = |i: usize| -> Option<String> {
        let tls = e.tls.as_deref()?;
        cert.get_or_init(|| crate::client_cert::nginx_values(tls))
            .get(i)
            .cloned()
            .flatten()
    };
    for piece in pieces {
        let var = match piece {
            Piece::Text(t) => {
                s.push_str(t);
                continue;
            }
            Piece::Var(v) => *v,
        };
        let value: Option<String> = match var {
            Var::RemoteAddr => e.client.map(|ip| ip.to_string()),
            Var::TimeLocal => Some(clf_time(e.time)),
            Var::TimeIso8601 => Some(rfc3339_time(e.time)),
            Var::Request => Some(format!("{} {} {}", e.method, e.target, e.protocol)),
            Var::RequestMethod => Some(e.method.clone()),
            Var::RequestUri => Some(e.target.clone()),
            Var::ServerProtocol => Some(e.protocol.to_owned()),
            Var::Status => Some(line.status.to_string()),
            Var::BodyBytesSent => Some(bytes.to_string()),
            Var::RequestTime => Some(format!("{:.3}", e.started.elapsed().as_secs_f64())),
            Var::UpstreamResponseTime => line
                .upstream_time
                .map(|t| format!("{:.3}", t.as_secs_f64())),
            Var::UpstreamAddr => line.upstream.clone(),
            Var::HttpReferer => e.referer.clone(),
            Var::HttpUserAgent => e.user_agent.clone(),
            Var::Host => e.host.clone(),
            Var::RequestId => Some(line.request_id.clone()),
            Var::Route => line.route.clone(),
            Var::SslProtocol => cert_value(crate::client_cert::field::PROTOCOL),
            Var::SslClientVerify => cert_value(crate::client_cert::field::VERIFY),
            Var::SslClientSDn => cert_value(crate::client_cert::field::S_DN),
            Var::SslClientIDn => cert_value(crate::client_cert::field::I_DN),
        };
        match value.filter(|v| !v.is_empty()) {
            Some(v) => s.push_str(&escape(&v)),
            None => s.push('-'),
        }
    }
    s
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// nginx's `combined` (`$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
/// "$http_referer" "$http_user_agent"`), then `rt=` seconds, `id=`, `route="…"` and `upstream="…"`.
fn combined(line: &Line, bytes: u64) -> String {
    let e = &line.entry;
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" rt={:.3} id={} route=\"{}\" upstream=\"{}\"",
        e.client.map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
        clf_time(e.time),
        escape(&e.method),
        escape(&e.target),
        e.protocol,
        line.status,
        bytes,
        escape(e.referer.as_deref().unwrap_or("-")),
        escape(e.user_agent.as_deref().unwrap_or("-")),
        e.started.elapsed().as_secs_f64(),
        escape(&line.request_id),
        escape(line.route.as_deref().unwrap_or("-")),
        escape(line.upstream.as_deref().unwrap_or("-")),
    );
    s
}

fn json(line: &Line, bytes: u64) -> String {
    let e = &line.entry;
    let duration_ms = (e.started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
    serde_json::json!({
        "time": rfc3339_time(e.time),
        "client": e.client.map(|ip| ip.to_string()),
        "method": e.method,
        "path": e.target,
        "protocol": e.protocol,
        "status": line.status,
        "bytes_sent": bytes,
        "referer": e.referer,
        "user_agent": e.user_agent,
        "duration_ms": duration_ms,
        "request_id": line.request_id,
        "route": line.route,
        "upstream": line.upstream,
        "upstream_response_ms": line.upstream_time.map(|t| (t.as_secs_f64() * 1_000_000.0).round() / 1000.0),
    })
    .to_string()
}

/// As nginx escapes variables in its log: `"`, `\`, control characters and bytes above 0x7e as `\xHH`.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// Year, month (1-12), day (1-31) of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day, hour, minute, second, millisecond) in UTC.
fn utc(t: SystemTime) -> (i64, i64, i64, i64, i64, i64, u32) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(0);
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    (
        y,
        mo,
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis(),
    )
}

/// `23/Nov/2026:12:51:56 +0000`, nginx's `$time_local` (in UTC).
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = utc(t);
    let month = usize::try_from(mo - 1)
        .ok()
        .and_then(|i| MONTHS.get(i))
        .unwrap_or(&"Jan");
    format!("{d:02}/{month}/{y}:{h:02}:{mi:02}:{s:02} +0000")
}

/// `2026-11-23T12:51:56.123Z`.
fn rfc3339_time(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ms) = utc(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn logger(kind: AccessLog, format: Option<&str>) -> Option<Arc<AccessLogger>> {
        AccessLogger::from_config(&GatewayConfig {
            access_log: kind,
            access_log_format: format.map(str::to_owned),
            ..GatewayConfig::default()
        })
        .expect("access log")
    }

    #[test]
    fn custom_lines_use_nginx_variables() {
        let mut req = Request::builder()
            .uri("/a?b=1")
            .header("host", "Shop.Example:8443")
            .body(())
            .expect("request");
        let log = logger(
            AccessLog::Custom,
            Some("$remote_addr \"$request\" $status $body_bytes_sent ut=$upstream_response_time up=$upstream_addr host=$host dn=$ssl_client_s_dn $$"),
        );
        let entry = AccessEntry::begin(log, &mut req).expect("on");
        let line = Line {
            entry,
            status: 200,
            route: None,
            upstream: Some("10.0.0.1:80".into()),
            upstream_time: Some(Duration::from_millis(1500)),
            request_id: "abc".into(),
        };
        let Some(LineFormat::Custom(pieces)) = Some(&line.entry.logger.format) else {
            panic!("custom");
        };
        let text = custom(pieces, &line, 7);
        assert_eq!(
            text,
            "- \"GET /a?b=1 HTTP/1.1\" 200 7 ut=1.500 up=10.0.0.1:80 host=shop.example dn=- $"
        );
        for (kind, format, key) in [
            (AccessLog::Custom, None, "gateway.access_log_format"),
            (
                AccessLog::Custom,
                Some("$nope"),
                "gateway.access_log_format",
            ),
            (
                AccessLog::Combined,
                Some("$status"),
                "gateway.access_log_format",
            ),
            (AccessLog::Off, Some("$status"), "gateway.access_log"),
        ] {
            let e = AccessLogger::from_config(&GatewayConfig {
                access_log: kind,
                access_log_format: format.map(str::to_owned),
                ..GatewayConfig::default()
            })
            .expect_err("refused")
            .to_string();
            assert!(e.starts_with(key), "{e}");
        }
    }

    #[test]
    fn times_are_formatted_in_utc() {
        // 2026-11-23T12:51:56.250Z
        let t = UNIX_EPOCH + Duration::from_millis(1_795_438_316_250);
        assert_eq!(clf_time(t), "23/Nov/2026:12:51:56 +0000");
        assert_eq!(rfc3339_time(t), "2026-11-23T12:51:56.250Z");
        assert_eq!(clf_time(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
        // a leap day
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339_time(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn strings_are_escaped_as_nginx_does() {
        assert_eq!(escape("curl/8.0"), "curl/8.0");
        assert_eq!(escape("a\"b\\c\nd"), "a\\x22b\\x5Cc\\x0Ad");
        assert_eq!(escape("é"), "\\xC3\\xA9");
    }

    #[tokio::test]
    async fn a_line_is_written_when_the_body_ends() {
        let mut req = Request::builder()
            .method("POST")
            .uri("/api/x?q=1")
            .header("user-agent", "test/1")
            .body(())
            .expect("request");
        let entry = AccessEntry::begin(logger(AccessLog::Json, None), &mut req).expect("on");
        assert!(
            req.headers().contains_key(X_REQUEST_ID),
            "a request id is set"
        );
        assert!(AccessEntry::begin(logger(AccessLog::Off, None), &mut req).is_none());
        let mut resp = Response::new(ferry_http::full("hello"));
        resp.extensions_mut().insert(Upstream("10.0.0.1:80".into()));
        let resp = entry.finish(Some("api"), resp);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"hello");
    }

    #[test]
    fn both_formats_carry_every_field() {
        let mut req = Request::builder()
            .uri("/a?b=1")
            .header("referer", "https://r.example/")
            .body(())
            .expect("request");
        let entry = AccessEntry::begin(logger(AccessLog::Combined, None), &mut req).expect("on");
        let line = Line {
            entry,
            status: 201,
            route: Some("api".into()),
            upstream: Some("127.0.0.1:9".into()),
            upstream_time: Some(Duration::from_millis(12)),
            request_id: "abc".into(),
        };
        let c = combined(&line, 42);
        assert!(
            c.starts_with("- - - ["),
            "no client address known here: {c}"
        );
        assert!(
            c.contains("] \"GET /a?b=1 HTTP/1.1\" 201 42 \"https://r.example/\" \"-\" rt="),
            "{c}"
        );
        assert!(
            c.ends_with(" id=abc route=\"api\" upstream=\"127.0.0.1:9\""),
            "{c}"
        );
        let j: serde_json::Value = serde_json::from_str(&json(&line, 42)).expect("json");
        assert_eq!(j["status"], 201);
        assert_eq!(j["bytes_sent"], 42);
        assert_eq!(j["path"], "/a?b=1");
        assert_eq!(j["route"], "api");
        assert_eq!(j["upstream"], "127.0.0.1:9");
        assert_eq!(j["request_id"], "abc");
        assert!(j["user_agent"].is_null());
    }
}
