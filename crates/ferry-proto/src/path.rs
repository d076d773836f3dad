//! Relay paths: splitting `/relay/{tenant}/{target}/{rest}` and making sure `rest` cannot leave the target's base.
//!
//! The rest of the path is forwarded byte for byte (percent-encoding untouched), so the rule is judged on what a
//! target could make of it after decoding (docs/operations.md, "The path rule"):
//!
//! - an encoded slash or backslash (`%2F`, `%5C`) is refused unless [`PathRule::allow_encoded_slashes`]: many
//!   targets decode it before resolving the path (Python's `http.server`, static file servers), so `..%2f` would
//!   walk out of the base path;
//! - a segment that is `.` or `..` once percent-decoded (`%2e`, `%2E`), also before a `;` parameter (`..;x`,
//!   which servlet containers read as `..`), is refused rather than normalised; segments are split at `/` and at
//!   `\`, and, when encoded slashes are allowed, at their decoded form too;
//! - an encoded NUL (`%00`) is refused (targets written in C truncate at it).

/// The prefix of every relayed request.
pub const RELAY_PREFIX: &str = "/relay/";

/// The parts of a relay path; `rest` always starts with `/` and keeps its query.
#[derive(Debug, PartialEq, Eq)]
pub struct RelayPath<'a> {
    pub tenant: &'a str,
    pub target: &'a str,
    /// Path after the target, starting with `/`, with the original query (`?…`) appended when present.
    pub rest: String,
}

/// Why a relay path was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must look like /relay/{{tenant}}/{{target}}/{{path}}")]
    Shape,
    #[error("path contains a '.' or '..' segment")]
    DotSegment,
    #[error("path contains an encoded slash or backslash (%2F, %5C)")]
    EncodedSlash,
    #[error("path contains an encoded NUL (%00)")]
    EncodedNul,
}

/// How the rest of a relay path is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathRule {
    /// Let `%2F` and `%5C` through (they still split segments for the dot-segment check).
    pub allow_encoded_slashes: bool,
}

/// Split a request path and query into tenant, target and the rest, judging the rest by the default
/// [`PathRule`] (encoded slashes refused).
pub fn split_relay_path<'a>(
    path: &'a str,
    query: Option<&str>,
) -> Result<RelayPath<'a>, PathError> {
    split_relay_path_with(path, query, PathRule::default())
}

/// Split a request path and query into tenant, target and the rest, judging the rest by `rule`.
pub fn split_relay_path_with<'a>(
    path: &'a str,
    query: Option<&str>,
    rule: PathRule,
) -> Result<RelayPath<'a>, PathError> {
    // Runs on every relayed request: slashes are found with plain byte loops, which on paths this short cost a
    // fraction of `str::find`'s searcher set-up.
    let tail = path.strip_prefix(RELAY_PREFIX).ok_or(PathError::Shape)?;
    let (tenant, tail) = match slash(tail) {
        Some(i) => (&tail[..i], &tail[i + 1..]),
        None => (tail, ""),
    };
    let (target, rest) = match slash(tail) {
        Some(i) => (&tail[..i], &tail[i..]),
        None => (tail, "/"),
    };
    if tenant.is_empty() || target.is_empty() {
        return Err(PathError::Shape);
    }
    check_rest(rest.as_bytes(), rule)?;
    let mut rest = rest.to_owned();
    if let Some(q) = query {
        rest.push('?');
        rest.push_str(q);
    }
    Ok(RelayPath {
        tenant,
        target,
        rest,
    })
}

/// The position of the first `/` in `s`.
fn slash(s: &str) -> Option<usize> {
    s.bytes().position(|b| b == b'/')
}

/// The value of a hex digit.
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Judge the rest of a relay path (without its query) by `rule`. Runs on every relayed request: one pass over the
/// bytes, no allocation.
pub fn check_rest(rest: &[u8], rule: PathRule) -> Result<(), PathError> {
    // The current segment, as decoded: how many dots it has so far, whether anything else was in it, and whether
    // a `;` ended the part that counts.
    let mut dots = 0u8;
    let mut other = false;
    let mut params = false;
    let mut i = 0;
    fn end_segment(dots: &mut u8, other: &mut bool, params: &mut bool) -> Result<(), PathError> {
        let dot_segment = !*other && (*dots == 1 || *dots == 2);
        *dots = 0;
        *other = false;
        *params = false;
        if dot_segment {
            Err(PathError::DotSegment)
        } else {
            Ok(())
        }
    }
    while i < rest.len() {
        let (byte, encoded) = match rest[i] {
            b'%' => match (
                rest.get(i + 1).copied().and_then(hex),
                rest.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    i += 3;
                    (h * 16 + l, true)
                }
                _ => {
                    i += 1;
                    (b'%', false)
                }
            },
            b => {
                i += 1;
                (b, false)
            }
        };
        match byte {
            b'/' | b'\\' => {
                if encoded && !rule.allow_encoded_slashes {
                    return Err(PathError::EncodedSlash);
                }
                end_segment(&mut dots, &mut other, &mut params)?;
            }
            0 if encoded => return Err(PathError::EncodedNul),
            _ if params => {}
            b';' => params = true,
            b'.' => dots = dots.saturating_add(1),
            _ => other = true,
        }
    }
    end_segment(&mut dots, &mut other, &mut params)
}

/// Join a target's base path (`/api` or `/`) with a relayed rest (`/x?q`), without doubling the slash.
pub fn join_base(base_path: &str, rest: &str) -> String {
    let base = base_path.trim_end_matches('/');
    let mut joined = String::with_capacity(base.len() + rest.len());
    joined.push_str(base);
    joined.push_str(rest);
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits() {
        let p = split_relay_path("/relay/demo/app/some/path", Some("q=1")).expect("valid");
        assert_eq!(p.tenant, "demo");
        assert_eq!(p.target, "app");
        assert_eq!(p.rest, "/some/path?q=1");
        let p = split_relay_path("/relay/demo/app", None).expect("valid");
        assert_eq!(p.rest, "/");
        let p = split_relay_path("/relay/demo/app/", None).expect("valid");
        assert_eq!(p.rest, "/");
        let p = split_relay_path("/relay/demo/app/a%3Ab%20c/", Some("x=%41")).expect("valid");
        assert_eq!(p.rest, "/a%3Ab%20c/?x=%41");
    }

    #[test]
    fn refuses_bad_shapes_and_dot_segments() {
        assert_eq!(split_relay_path("/other", None), Err(PathError::Shape));
        assert_eq!(split_relay_path("/relay/demo", None), Err(PathError::Shape));
        assert_eq!(split_relay_path("/relay//app", None), Err(PathError::Shape));
        for bad in [
            "/relay/d/a/../x",
            "/relay/d/a/..",
            "/relay/d/a/./x",
            "/relay/d/a/%2e%2e/x",
            "/relay/d/a/.%2E/x",
            "/relay/d/a/x/%2E",
        ] {
            assert_eq!(
                split_relay_path(bad, None),
                Err(PathError::DotSegment),
                "{bad}"
            );
        }
        for fine in [
            "/relay/d/a/..x/.well-known",
            "/relay/d/a/.../x",
            "/relay/d/a/%2e%2e%2e/x",
            "/relay/d/a/%2/x",
            "/relay/d/a/%2ex/x",
            "/relay/d/a/x%2e/y",
            "/relay/d/a//x",
        ] {
            assert!(split_relay_path(fine, None).is_ok(), "{fine}");
        }
    }

    /// The path rule on a table of encodings: what each is refused as with the default rule, and with encoded
    /// slashes allowed (`None`: let through).
    #[test]
    fn encodings_table() {
        use PathError::*;
        let allow = PathRule {
            allow_encoded_slashes: true,
        };
        let table: &[(&str, Option<PathError>, Option<PathError>)] = &[
            (
                "/files/..%2fsecret.txt",
                Some(EncodedSlash),
                Some(DotSegment),
            ),
            (
                "/files/..%2Fsecret.txt",
                Some(EncodedSlash),
                Some(DotSegment),
            ),
            (
                "/files/%2e%2e%2fsecret.txt",
                Some(EncodedSlash),
                Some(DotSegment),
            ),
            (
                "/files/%2E%2E%2Fsecret.txt",
                Some(EncodedSlash),
                Some(DotSegment),
            ),
            (
                "/files/.%2e%2fsecret.txt",
                Some(EncodedSlash),
                Some(DotSegment),
            ),
            (
                "/files/..%5csecret.txt",
                Some(EncodedSlash),
                Some(DotSegment),
            ),
            ("/files/..\\secret.txt", Some(DotSegment), Some(DotSegment)),
            (
                "/files/%2e%2e\\secret.txt",
                Some(DotSegment),
                Some(DotSegment),
            ),
            ("/files/..;/secret.txt", Some(DotSegment), Some(DotSegment)),
            (
                "/files/..;jsessionid=1/secret.txt",
                Some(DotSegment),
                Some(DotSegment),
            ),
            ("/files/%2e;x/y", Some(DotSegment), Some(DotSegment)),
            ("/files/a%2fb", Some(EncodedSlash), None),
            ("/files/a%5Cb", Some(EncodedSlash), None),
            ("/files/a%00b", Some(EncodedNul), Some(EncodedNul)),
            ("/files/%2e%2e", Some(DotSegment), Some(DotSegment)),
            ("/files/x/%2E", Some(DotSegment), Some(DotSegment)),
            // fine either way
            ("/files/a%20b", None, None),
            ("/files/..x", None, None),
            ("/files/...", None, None),
            ("/files/%2e%2e%2e", None, None),
            ("/files/x..%2e", None, None),
            ("/files/a;b/..c", None, None),
            ("/files/%2", None, None),
            ("/files/%zz..", None, None),
            ("/files/%252e%252e%252f", None, None),
            ("/", None, None),
        ];
        for (rest, default, allowed) in table {
            assert_eq!(
                check_rest(rest.as_bytes(), PathRule::default()).err(),
                *default,
                "{rest} (default rule)"
            );
            assert_eq!(
                check_rest(rest.as_bytes(), allow).err(),
                *allowed,
                "{rest} (encoded slashes allowed)"
            );
        }
        // through the splitter, which never judges the query
        assert_eq!(
            split_relay_path("/relay/d/a/..%2fx", None),
            Err(EncodedSlash)
        );
        assert!(split_relay_path("/relay/d/a/x", Some("next=..%2f..%2f")).is_ok());
        assert_eq!(
            split_relay_path_with("/relay/d/a/b%2Fc", None, allow)
                .map(|p| p.rest)
                .as_deref(),
            Ok("/b%2Fc")
        );
    }

    #[test]
    fn joins() {
        assert_eq!(join_base("/", "/x?q"), "/x?q");
        assert_eq!(join_base("", "/x"), "/x");
        assert_eq!(join_base("/api/", "/x"), "/api/x");
        assert_eq!(join_base("/api", "/"), "/api/");
    }
}
