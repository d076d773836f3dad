//! What each of Ferry's fuzz targets does with one input (`fuzz/fuzz_targets/*.rs` call these; so does the corpus
//! replay test, `tests/corpus.rs`, which runs every committed corpus and crash file as an ordinary test).
//!
//! Owns: the properties checked on arbitrary input beyond "does not panic": the relay path rule never lets a dot
//! segment through once decoded; normalised gateway paths are normal and stay so; the HTTP/1.1 watch finds the
//! same smuggling head however the bytes are split; tunnel protocol 2's frames read the same however the bytes are
//! split and encode back as they were read; hop-by-hop stripping leaves none behind; a bearer token is
//! accepted only when signed by the key it names and obeying every claim rule ([`tokens`]); the route table picks
//! what docs/gateway.md's rule picks ([`routes`]); whatever nginx configuration parses, its translation is a
//! configuration Ferry loads ([`nginx`]). Does not own the parsers themselves (ferry-proto,
//! ferry-config, ferry-token, ferry-route). Only light crates are fuzzed, so that a fuzz build stays short in CI;
//! what is not fuzzed is listed in `fuzz/README.md`.
#![forbid(unsafe_code)]

mod input;
mod routes;
mod tokens;

pub use routes::routes;
pub use tokens::tokens;

use ferry_proto::h1::{H1Watch, Seen};
use ferry_proto::normalize::normalize_path;
use ferry_proto::path::{check_rest, split_relay_path_with, PathRule};

/// The names of the targets, in the order `scripts/fuzz` runs them.
pub const TARGETS: &[&str] = &[
    "relay_path",
    "normalize",
    "h1_watch",
    "headers",
    "tunnel_messages",
    "tunnel_frames",
    "config",
    "tokens",
    "routes",
    "nginx",
];

/// Run the target `name` on `data`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "relay_path" => relay_path(data),
        "normalize" => normalize(data),
        "h1_watch" => h1_watch(data),
        "headers" => headers(data),
        "tunnel_messages" => tunnel_messages(data),
        "tunnel_frames" => tunnel_frames(data),
        "config" => config(data),
        "tokens" => tokens(data),
        "routes" => routes(data),
        "nginx" => nginx(data),
        _ => return false,
    }
    true
}

/// Percent-decode `s` (invalid escapes kept literally).
fn decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// The relay path rule: splitting never panics, and an accepted rest holds no segment that is `.` or `..` once
/// decoded (segments split at `/` and `\`, and before `;`), nor an encoded slash under the default rule.
pub fn relay_path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };
    for allow in [false, true] {
        let rule = PathRule {
            allow_encoded_slashes: allow,
        };
        let _ = split_relay_path_with(path, query, rule);
        if check_rest(path.as_bytes(), rule).is_ok() {
            let lower = path.to_ascii_lowercase();
            if !allow {
                assert!(
                    !lower.contains("%2f") && !lower.contains("%5c"),
                    "encoded slash accepted: {path:?}"
                );
            }
            for segment in decode(path.as_bytes()).split(|&b| b == b'/' || b == b'\\') {
                let segment = segment.split(|&b| b == b';').next().unwrap_or_default();
                assert!(
                    segment != b"." && segment != b"..",
                    "dot segment accepted: {path:?}"
                );
            }
        }
    }
}

/// Gateway path normalisation: a normalised path starts with `/`, has no empty, `.` or `..` segment, no encoded
/// unreserved character, and normalising it again changes nothing.
pub fn normalize(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = format!("/{text}");
    for allow in [false, true] {
        let Ok(normal) = normalize_path(&path, allow) else {
            continue;
        };
        assert!(normal.starts_with('/'), "{path:?} -> {normal:?}");
        let inner = normal.strip_suffix('/').unwrap_or(&normal);
        for segment in inner.split('/').skip(1) {
            assert!(
                !segment.is_empty() && segment != "." && segment != "..",
                "{path:?} -> {normal:?}"
            );
        }
        let again = normalize_path(&normal, allow).map(|p| p.into_owned());
        assert_eq!(again.as_deref(), Ok(&*normal), "not idempotent: {path:?}");
    }
}

/// The HTTP/1.1 watch: fed the same bytes whole, one at a time, or in pieces of 7, it finds the same number of
/// heads and the same smuggling head (at the same offset).
pub fn h1_watch(data: &[u8]) {
    let outcome = |step: usize| {
        let mut w = H1Watch::new();
        let mut offset = 0;
        for piece in data.chunks(step.max(1)) {
            if let Seen::Ambiguous { at } = w.feed(piece) {
                return (w.heads(), Some(offset + at));
            }
            offset += piece.len();
        }
        (w.heads(), None)
    };
    let whole = outcome(data.len());
    assert_eq!(whole, outcome(1), "byte by byte");
    assert_eq!(whole, outcome(7), "in pieces of 7");
}

/// Header rules on arbitrary header lists: after hop-by-hop stripping no hop-by-hop header (nor one that
/// `Connection` named) is left, `TE` only as `trailers`; internal `ferry-*` headers are recognised whatever
/// their case.
pub fn headers(data: &[u8]) {
    let mut map = http::HeaderMap::new();
    let mut named = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        if name == http::header::CONNECTION {
            if let Ok(v) = value.to_str() {
                named.extend(
                    v.split(',')
                        .filter_map(|t| http::HeaderName::from_bytes(t.trim().as_bytes()).ok()),
                );
            }
        }
        map.append(name, value);
    }
    let _ = ferry_proto::headers::strip_hop_by_hop(&mut map);
    for gone in [
        http::header::CONNECTION,
        http::header::UPGRADE,
        http::header::TRANSFER_ENCODING,
        http::header::PROXY_AUTHORIZATION,
        http::HeaderName::from_static("keep-alive"),
    ] {
        assert!(!map.contains_key(&gone), "{gone} left");
    }
    for n in &named {
        assert!(!map.contains_key(n), "{n}, named by Connection, left");
    }
    for te in map.get_all(http::header::TE) {
        assert_eq!(te, "trailers");
    }
    for name in map.keys() {
        let lower = name.as_str().to_ascii_lowercase();
        if lower.starts_with("ferry-") {
            assert!(ferry_proto::headers::is_internal(name) || lower == "ferry-error");
        }
    }
}

/// The tunnel's messages as the node and connector read them: the targets a connector announces in its
/// handshake (`Ferry-Targets`), and the settings document the node pushes (`TenantSettings`, at most 64 KiB).
pub fn tunnel_messages(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(targets) = ferry_proto::tunnel::parse_targets(text) {
            for t in targets {
                assert!(ferry_proto::TargetName::new(t.as_str()).is_ok());
            }
        }
    }
    if let Ok(settings) = serde_json::from_slice::<ferry_proto::TenantSettings>(data) {
        // what the node sends, the connector reads back the same
        let again = serde_json::to_vec(&settings).expect("settings serialise");
        let back: ferry_proto::TenantSettings =
            serde_json::from_slice(&again).expect("settings read back");
        assert_eq!(back, settings);
    }
}

/// Tunnel protocol 2's frames (`ferry_proto::frames`) from arbitrary bytes: the same frames and the same verdict
/// whether the bytes come whole or in two pieces; every frame read encodes to bytes that read back as it; a
/// window's credit never passes its limit whatever is taken and granted.
pub fn tunnel_frames(data: &[u8]) {
    use bytes::{BufMut, BytesMut};
    use ferry_proto::frames::{Frame, Window, MAX_WINDOW};
    const MAX: u32 = 1024;
    fn read_all(pieces: &[&[u8]]) -> (Vec<Frame>, bool) {
        let (mut src, mut frames) = (BytesMut::new(), Vec::new());
        for piece in pieces {
            src.put_slice(piece);
            loop {
                match Frame::decode(&mut src, MAX) {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(_) => return (frames, true),
                }
            }
        }
        (frames, false)
    }
    let (whole, refused) = read_all(&[data]);
    let cut = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let (first, second) = data.split_at(cut);
    assert_eq!(read_all(&[first, second]), (whole.clone(), refused));
    for frame in &whole {
        let mut wire = BytesMut::new();
        frame.encode(&mut wire);
        assert_eq!(
            Frame::decode(&mut wire, MAX).ok().flatten().as_ref(),
            Some(frame)
        );
        assert!(wire.is_empty());
    }
    let mut window = Window::new(u32::from_be_bytes([0, 0, 255, 255]));
    for pair in data.chunks_exact(4) {
        let n = u32::from_be_bytes([pair[0], pair[1], pair[2], pair[3]]);
        let before = window.credit();
        if pair[0] & 1 == 0 {
            let taken = window.take(n as usize).is_ok();
            assert_eq!(taken, n <= before);
        } else if window.grant(n).is_err() {
            assert_eq!(window.credit(), before);
        }
        assert!(window.credit() <= MAX_WINDOW);
    }
}

/// The configuration as `ferry` loads it: a TOML file, or `FERRY_*` variables, through parsing, the variable
/// table and validation; errors are fine, panics are not.
pub fn config(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if mode % 2 == 0 {
        let path =
            std::env::temp_dir().join(format!("ferry-fuzz-config-{}.toml", std::process::id()));
        if std::fs::write(&path, text).is_ok() {
            let _ = ferry_config::load(Some(&path), Vec::new(), Vec::new());
        }
    } else {
        let env: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let _ = ferry_config::load(None, env, Vec::new());
    }
}

/// An nginx configuration through `ferry-nginx`: a parse error names a line of the text; whatever parses
/// translates into TOML that `ferry-config` loads, and reads back as the same gateway and listeners (what
/// `ferry gateway import-nginx` promises).
pub fn nginx(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("include") {
        return; // it would read files of this machine
    }
    let directives = match ferry_nginx::parse_str(text, "fuzz.conf") {
        Ok(d) => d,
        Err(ferry_nginx::NginxError::Syntax { at, .. }) => {
            assert!(
                at.line >= 1 && at.line <= text.lines().count() + 1,
                "line {}",
                at.line
            );
            return;
        }
        Err(_) => return,
    };
    let imported = ferry_nginx::translate(&directives);
    let toml = ferry_nginx::to_toml(&imported.config, "fuzz.conf").expect("serialises");
    let loaded = match ferry_config::load_text(&toml, "out.toml") {
        Ok(c) => c,
        Err(e) => panic!("the translation does not load: {e}\n{toml}"),
    };
    assert_eq!(loaded.gateway, imported.config.gateway, "{toml}");
    assert_eq!(
        loaded.server.listeners, imported.config.server.listeners,
        "{toml}"
    );
}

/// Seed inputs made by code (they hold signatures), by target: what `fuzz/corpus/TARGET/` starts from. The
/// committed seeds are these (`tests/corpus.rs` checks that they are there and unchanged where they do not
/// depend on the clock).
pub fn generated_seeds(target: &str) -> Vec<(&'static str, Vec<u8>)> {
    match target {
        "tokens" => tokens::seeds(),
        "routes" => routes::seeds(),
        _ => Vec::new(),
    }
}
