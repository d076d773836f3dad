//! Relay paths: splitting `/relay/{tenant}/{target}/{rest}` and making sure `rest` cannot leave the target's base.
//!
//! The rest of the path is forwarded byte for byte (percent-encoding untouched). A path whose segments include
//! `.` or `..`, literally or percent-encoded, is refused rather than normalised: a target would resolve it against
//! its base path, and a relay must not let a client walk out of it.

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
}

/// Split a request path and query into tenant, target and the rest.
pub fn split_relay_path<'a>(
    path: &'a str,
    query: Option<&str>,
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
    if rest.as_bytes().split(|&b| b == b'/').any(is_dot_segment) {
        return Err(PathError::DotSegment);
    }
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

/// `.` or `..`, each dot possibly percent-encoded (`%2e`, `%2E`). Runs on every segment of every relayed path:
/// no allocation.
fn is_dot_segment(segment: &[u8]) -> bool {
    let mut rest = segment;
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', e, tail @ ..] if e.eq_ignore_ascii_case(&b'e') => tail,
            _ => return false,
        };
        dots += 1;
        if dots > 2 {
            return false;
        }
    }
    dots > 0
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
        let p = split_relay_path("/relay/demo/app/a%2Fb%20c/", Some("x=%41")).expect("valid");
        assert_eq!(p.rest, "/a%2Fb%20c/?x=%41");
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

    #[test]
    fn joins() {
        assert_eq!(join_base("/", "/x?q"), "/x?q");
        assert_eq!(join_base("", "/x"), "/x");
        assert_eq!(join_base("/api/", "/x"), "/api/x");
        assert_eq!(join_base("/api", "/"), "/api/");
    }
}
