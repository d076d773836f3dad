//! The path a gateway route is chosen by, stripped by and forwarded with: the request's path normalised as nginx
//! does before matching `location`s (docs/gateway.md, "Paths"; used by `ferry-edge`), so that `/gw/x/../admin` cannot slip past a
//! route for `/gw/admin` and `/static/../secret.txt` cannot leave `/static/`.
//!
//! - percent-encoded unreserved characters (RFC 3986 §2.3: letters, digits, `-`, `.`, `_`, `~`) are decoded,
//!   other escapes kept (their hex digits uppercased);
//! - an encoded slash or backslash (`%2F`, `%5C`) and a literal backslash are refused unless the gateway allows
//!   encoded slashes (then they are kept encoded and do not separate segments); `%00` is refused, and so is a
//!   `%` that starts no escape (as nginx does: `%1%65` would become a new escape once decoded);
//! - dot segments (`.`, `..`, also encoded) are resolved (RFC 3986 §5.2.4); one that would climb above the root
//!   is refused;
//! - runs of slashes are merged into one (nginx's `merge_slashes`).
//!
//! The query is never touched.

use std::borrow::Cow;

/// Why a path cannot be normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    #[error("path contains an encoded slash or a backslash")]
    EncodedSlash,
    #[error("path contains an encoded NUL (%00)")]
    EncodedNul,
    #[error("path climbs above the root with '..'")]
    AboveRoot,
    #[error("path contains a '%' that starts no percent-encoded byte")]
    BadEscape,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Normalise `path` (which starts with `/`); borrowed when it is already normal, the common case.
pub fn normalize_path(
    path: &str,
    allow_encoded_slashes: bool,
) -> Result<Cow<'_, str>, PathProblem> {
    let bytes = path.as_bytes();
    let suspicious = bytes.contains(&b'%')
        || bytes.contains(&b'\\')
        || bytes.windows(2).any(|w| w == b"//" || w == b"/.");
    if !suspicious {
        return Ok(Cow::Borrowed(path));
    }
    // 1. decode what needs no encoding; refuse what could split or end a path at the target
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                let d = h * 16 + l;
                i += 3;
                match d {
                    0 => return Err(PathProblem::EncodedNul),
                    b'/' | b'\\' if !allow_encoded_slashes => {
                        return Err(PathProblem::EncodedSlash)
                    }
                    d if unreserved(d) => decoded.push(d),
                    d => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        decoded.extend_from_slice(&[
                            b'%',
                            HEX[usize::from(d >> 4)],
                            HEX[usize::from(d & 15)],
                        ]);
                    }
                }
                continue;
            }
            // like nginx: a `%` that starts no escape is a bad request (and could start one after decoding)
            return Err(PathProblem::BadEscape);
        }
        if b == b'\\' {
            if !allow_encoded_slashes {
                return Err(PathProblem::EncodedSlash);
            }
            decoded.extend_from_slice(b"%5C");
            i += 1;
            continue;
        }
        decoded.push(b);
        i += 1;
    }
    // 2. resolve dot segments and merge slashes
    let mut out: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split(|&b| b == b'/').skip(1) {
        trailing_slash = false;
        match segment {
            b"" => trailing_slash = true,
            b"." => trailing_slash = true,
            b".." => {
                if out.pop().is_none() {
                    return Err(PathProblem::AboveRoot);
                }
                trailing_slash = true;
            }
            s => out.push(s),
        }
    }
    let mut joined = Vec::with_capacity(decoded.len());
    for s in &out {
        joined.push(b'/');
        joined.extend_from_slice(s);
    }
    if trailing_slash || out.is_empty() {
        joined.push(b'/');
    }
    // only ASCII went in (the path of a parsed URI), and the decoded bytes are unreserved ASCII
    Ok(Cow::Owned(String::from_utf8_lossy(&joined).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_paths() {
        use PathProblem::*;
        let table: &[(&str, Result<&str, PathProblem>)] = &[
            ("/", Ok("/")),
            ("/a/b", Ok("/a/b")),
            ("/.well-known/x", Ok("/.well-known/x")),
            ("/gw/x/../admin", Ok("/gw/admin")),
            ("/gw/./admin", Ok("/gw/admin")),
            ("/gw//admin", Ok("/gw/admin")),
            ("//gw///admin//", Ok("/gw/admin/")),
            ("/gw/%61dmin", Ok("/gw/admin")),
            ("/gw/x/%2e%2e/admin", Ok("/gw/admin")),
            ("/gw/x/.%2E/admin/", Ok("/gw/admin/")),
            ("/static/../secret.txt", Ok("/secret.txt")),
            ("/a/b/..", Ok("/a/")),
            ("/a/b/.", Ok("/a/b/")),
            ("/a/%7e%2d%5f", Ok("/a/~-_")),
            ("/a/%20b%3a", Ok("/a/%20b%3A")),
            ("/a/..x/...", Ok("/a/..x/...")),
            ("/..", Err(AboveRoot)),
            ("/a/../../etc/passwd", Err(AboveRoot)),
            ("/%2e%2e/x", Err(AboveRoot)),
            ("/a%2fb", Err(EncodedSlash)),
            ("/a%5Cb", Err(EncodedSlash)),
            ("/a\\b", Err(EncodedSlash)),
            ("/a%00b", Err(EncodedNul)),
            ("/a/%zz", Err(BadEscape)),
            ("/a%2", Err(BadEscape)),
            ("/st/i~/ta/%1%65t", Err(BadEscape)),
        ];
        for (path, want) in table {
            let got = normalize_path(path, false).map(|p| p.into_owned());
            assert_eq!(got.as_deref().map_err(|e| *e), *want, "{path}");
        }
        // allowed encoded slashes stay encoded and do not split segments
        assert_eq!(
            normalize_path("/a/..%2Fb", true).as_deref(),
            Ok("/a/..%2Fb")
        );
        assert_eq!(normalize_path("/a\\b", true).as_deref(), Ok("/a%5Cb"));
        // already normal: borrowed
        assert!(matches!(
            normalize_path("/api/v1/x", false),
            Ok(Cow::Borrowed(_))
        ));
    }
}
