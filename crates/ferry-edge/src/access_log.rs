//! The access log: one line per request answered by a gateway route or the relay, in nginx's `combined` format
//! (with duration, request id, route and upstream appended) or as one JSON object, written through tracing with
//! target `ferry::access` once the response body has ended (so that the bytes sent are the body's real size).
//!
//! Owns: what an entry holds, both line formats, and the response-body wrapper that counts bytes and writes the
//! line when the body ends or is dropped. Does not own: which requests are logged (the app's routes call
//! [`AccessEntry::begin`] and [`AccessEntry::finish`]) or where tracing writes (`ferry-telemetry`).

use ferry_config::AccessLog;
use ferry_http::{Body, Counted, Guarded};
use ferry_proto::headers::X_REQUEST_ID;
use http::{header, HeaderValue, Request, Response, Version};
use http_body_util::BodyExt;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The tracing target of access-log lines (filter with `RUST_LOG=ferry::access=info`, or off with
/// `ferry::access=off`).
pub const TARGET: &str = "ferry::access";

/// A response extension naming what answered the request: an upstream server (`10.0.1.10:8080`) or a relay
/// target (`tenant/target`). The access log shows it; nothing else reads it.
#[derive(Debug, Clone)]
pub struct Upstream(pub String);

/// What is known about a request when it arrives, waiting for its response.
#[derive(Debug)]
pub struct AccessEntry {
    format: AccessLog,
    started: Instant,
    time: SystemTime,
    client: Option<std::net::IpAddr>,
    method: String,
    target: String,
    protocol: &'static str,
    referer: Option<String>,
    user_agent: Option<String>,
    request_id: String,
}

impl AccessEntry {
    /// Start an entry for `req`, or `None` when the access log is off. Makes sure the request carries a valid
    /// `x-request-id` (the client's, or a new one), so that the line, the upstream and the response share it.
    pub fn begin<B>(format: AccessLog, req: &mut Request<B>) -> Option<Self> {
        if format == AccessLog::Off {
            return None;
        }
        let request_id = ferry_http::request_id(req);
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            req.headers_mut().insert(X_REQUEST_ID, v);
        }
        let header = |name: header::HeaderName| {
            req.headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        Some(Self {
            format,
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
            let text = match line.entry.format {
                AccessLog::Json => json(&line, bytes),
                _ => combined(&line, bytes),
            };
            tracing::info!(target: TARGET, "{text}");
        }
    }
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
        let entry = AccessEntry::begin(AccessLog::Json, &mut req).expect("on");
        assert!(
            req.headers().contains_key(X_REQUEST_ID),
            "a request id is set"
        );
        assert!(AccessEntry::begin(AccessLog::Off, &mut req).is_none());
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
        let entry = AccessEntry::begin(AccessLog::Combined, &mut req).expect("on");
        let line = Line {
            entry,
            status: 201,
            route: Some("api".into()),
            upstream: Some("127.0.0.1:9".into()),
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
