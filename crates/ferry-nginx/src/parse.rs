//! nginx's configuration syntax: directives (`name arg…;`), blocks (`name arg… { … }`), quoted strings with
//! nginx's escapes, `#` comments, and `include` resolved in place (a path relative to the main file's directory,
//! as nginx's configuration prefix, with `*`, `?` and `[…]` wildcards, files in sorted order).
//!
//! Hand-written: no crate on crates.io parses nginx configurations well enough (the ones there skip escapes,
//! `${var}` inside words or includes), and the grammar is small. Variables are kept as text; nothing here knows
//! what a directive means.

use crate::NginxError;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Includes nested deeper than this are taken for a loop.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Where a directive was written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub file: Arc<PathBuf>,
    pub line: usize,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One directive, with its block when it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Directive>>,
    pub at: Position,
    /// A number unique in the whole configuration (includes included), in reading order.
    pub id: usize,
}

impl Directive {
    /// The directives of its block (none without one).
    pub fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }

    /// The `i`th argument, or `""`.
    pub fn arg(&self, i: usize) -> &str {
        self.args.get(i).map(String::as_str).unwrap_or("")
    }
}

/// Read `path` and every file it includes.
pub fn parse_file(path: &Path) -> Result<Vec<Directive>, NginxError> {
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut reader = Reader { base, next_id: 0 };
    reader.file(path, 0)
}

/// Parse `text` as if read from `name` (includes relative to the current directory).
pub fn parse_str(text: &str, name: &str) -> Result<Vec<Directive>, NginxError> {
    let mut reader = Reader {
        base: PathBuf::from("."),
        next_id: 0,
    };
    reader.text(text, Arc::new(PathBuf::from(name)), 0)
}

struct Reader {
    base: PathBuf,
    next_id: usize,
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
}

impl Reader {
    fn file(&mut self, path: &Path, depth: usize) -> Result<Vec<Directive>, NginxError> {
        let text = std::fs::read_to_string(path).map_err(|source| NginxError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.text(&text, Arc::new(path.to_path_buf()), depth)
    }

    fn text(
        &mut self,
        text: &str,
        file: Arc<PathBuf>,
        depth: usize,
    ) -> Result<Vec<Directive>, NginxError> {
        let tokens = tokenize(text, &file)?;
        let mut pos = 0;
        let list = self.block(&tokens, &mut pos, &file, depth, false)?;
        Ok(list)
    }

    /// Directives until a `}` (inside a block) or the end (at the top).
    fn block(
        &mut self,
        tokens: &[(Token, usize)],
        pos: &mut usize,
        file: &Arc<PathBuf>,
        depth: usize,
        inside: bool,
    ) -> Result<Vec<Directive>, NginxError> {
        let syntax = |line: usize, message: String| NginxError::Syntax {
            at: Position {
                file: file.clone(),
                line,
            },
            message,
        };
        let mut out = Vec::new();
        loop {
            let Some((token, line)) = tokens.get(*pos) else {
                if inside {
                    let last = tokens.last().map(|t| t.1).unwrap_or(1);
                    return Err(syntax(
                        last,
                        "unexpected end of file, expecting \"}\"".into(),
                    ));
                }
                return Ok(out);
            };
            *pos += 1;
            let name = match token {
                Token::Close if inside => return Ok(out),
                Token::Close => return Err(syntax(*line, "unexpected \"}\"".into())),
                Token::Open => return Err(syntax(*line, "unexpected \"{\"".into())),
                Token::Semicolon => return Err(syntax(*line, "unexpected \";\"".into())),
                Token::Word(w) => w.clone(),
            };
            let at = Position {
                file: file.clone(),
                line: *line,
            };
            let mut args = Vec::new();
            let block = loop {
                match tokens.get(*pos) {
                    None => {
                        return Err(syntax(
                            *line,
                            format!("directive \"{name}\" is not terminated by \";\""),
                        ))
                    }
                    Some((Token::Word(w), _)) => {
                        args.push(w.clone());
                        *pos += 1;
                    }
                    Some((Token::Semicolon, _)) => {
                        *pos += 1;
                        break None;
                    }
                    Some((Token::Open, _)) => {
                        *pos += 1;
                        break Some(());
                    }
                    Some((Token::Close, _)) => {
                        return Err(syntax(
                            *line,
                            format!("directive \"{name}\" is not terminated by \";\""),
                        ))
                    }
                }
            };
            if block.is_none() && name == "include" {
                let [pattern] = args.as_slice() else {
                    return Err(syntax(
                        *line,
                        "\"include\" takes one file or pattern".into(),
                    ));
                };
                out.extend(self.include(pattern, &at, depth)?);
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let block = match block {
                Some(()) => Some(self.block(tokens, pos, file, depth, true)?),
                None => None,
            };
            out.push(Directive {
                name,
                args,
                block,
                at,
                id,
            });
        }
    }

    fn include(
        &mut self,
        pattern: &str,
        at: &Position,
        depth: usize,
    ) -> Result<Vec<Directive>, NginxError> {
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(NginxError::Syntax {
                at: at.clone(),
                message: format!("includes nested more than {MAX_INCLUDE_DEPTH} deep (a loop?)"),
            });
        }
        let full = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            self.base.join(pattern)
        };
        let files = if has_wildcard(pattern) {
            expand(&full)
        } else {
            vec![full]
        };
        let mut out = Vec::new();
        for f in files {
            out.extend(self.file(&f, depth + 1).map_err(|e| match e {
                NginxError::Read { path, source } => NginxError::Include {
                    at: at.clone(),
                    path,
                    source,
                },
                other => other,
            })?);
        }
        Ok(out)
    }
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The files a wildcard path names, sorted (directories skipped); none is not an error, as in nginx.
fn expand(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for part in pattern.components() {
        let text = part.as_os_str().to_string_lossy();
        if !has_wildcard(&text) {
            for f in &mut found {
                f.push(part.as_os_str());
            }
            continue;
        }
        let mut next = Vec::new();
        for dir in &found {
            let listing = if dir.as_os_str().is_empty() {
                std::fs::read_dir(".")
            } else {
                std::fs::read_dir(dir)
            };
            let Ok(entries) = listing else { continue };
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') && wildcard_matches(&text, n))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        found = next;
    }
    found.retain(|f| f.is_file());
    found
}

/// Shell-style matching of one path component: `*`, `?` and `[abc]`/`[a-z]`/`[!a]` classes.
fn wildcard_matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => {
                let Some(end) = p.iter().skip(1).position(|c| *c == ']').map(|e| e + 1) else {
                    return n.first() == Some(&'[') && go(&p[1..], &n[1..]);
                };
                let Some(c) = n.first() else { return false };
                let mut class = &p[1..end];
                let negate = matches!(class.first(), Some('!' | '^'));
                if negate {
                    class = &class[1..];
                }
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        hit |= class[i] <= *c && *c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == *c;
                        i += 1;
                    }
                }
                hit != negate && go(&p[end + 1..], &n[1..])
            }
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    go(&p, &n)
}

/// Split `text` into words, `;`, `{` and `}`, each with its line, as nginx's `ngx_conf_read_token` does.
fn tokenize(text: &str, file: &Arc<PathBuf>) -> Result<Vec<(Token, usize)>, NginxError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ';' => {
                out.push((Token::Semicolon, line));
                i += 1;
            }
            '{' => {
                out.push((Token::Open, line));
                i += 1;
            }
            '}' => {
                out.push((Token::Close, line));
                i += 1;
            }
            '"' | '\'' => {
                let start = line;
                let quote = c;
                i += 1;
                let mut raw = String::new();
                loop {
                    let Some(&ch) = chars.get(i) else {
                        return Err(NginxError::Syntax {
                            at: Position {
                                file: file.clone(),
                                line: start,
                            },
                            message: format!("unterminated string starting with {quote}"),
                        });
                    };
                    i += 1;
                    if ch == '\n' {
                        line += 1;
                    }
                    if ch == '\\' {
                        if let Some(&next) = chars.get(i) {
                            raw.push('\\');
                            raw.push(next);
                            if next == '\n' {
                                line += 1;
                            }
                            i += 1;
                            continue;
                        }
                    }
                    if ch == quote {
                        break;
                    }
                    raw.push(ch);
                }
                let after = chars.get(i).copied();
                if let Some(a) = after {
                    if !(a.is_whitespace() || a == ';' || a == '{' || a == ')') {
                        return Err(NginxError::Syntax {
                            at: Position {
                                file: file.clone(),
                                line,
                            },
                            message: format!("unexpected \"{a}\" after a quoted string"),
                        });
                    }
                }
                out.push((Token::Word(unescape(&raw)), start));
            }
            _ => {
                let start = line;
                let mut raw = String::new();
                let mut in_var_braces = false;
                while let Some(&ch) = chars.get(i) {
                    if ch == '\\' {
                        if let Some(&next) = chars.get(i + 1) {
                            raw.push(ch);
                            raw.push(next);
                            i += 2;
                            continue;
                        }
                    }
                    if ch == '{' && raw.ends_with('$') {
                        in_var_braces = true;
                    } else if ch == '}' && in_var_braces {
                        in_var_braces = false;
                    } else if ch.is_whitespace() || ch == ';' || ch == '{' || ch == '}' {
                        break;
                    }
                    raw.push(ch);
                    i += 1;
                }
                out.push((Token::Word(unescape(&raw)), start));
            }
        }
    }
    Ok(out)
}

/// nginx's escapes: `\"`, `\'`, `\\` lose their backslash; `\t`, `\r`, `\n` become the control character; any
/// other backslash stays (so regular expressions keep `\d`).
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut it = raw.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.peek().copied() {
            Some(q @ ('"' | '\'' | '\\')) => {
                out.push(q);
                it.next();
            }
            Some('t') => {
                out.push('\t');
                it.next();
            }
            Some('r') => {
                out.push('\r');
                it.next();
            }
            Some('n') => {
                out.push('\n');
                it.next();
            }
            _ => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(d: &Directive) -> Vec<&str> {
        std::iter::once(d.name.as_str())
            .chain(d.args.iter().map(String::as_str))
            .collect()
    }

    #[test]
    fn directives_blocks_strings_and_comments() {
        let text = "# top\nhttp {\n  server { listen 80; # trailing\n    return 200 \"ok\\n\";\n    location ~ ^/u/(\\d+)$ { add_header X 'it''s'; }\n  }\n}\n";
        let err = parse_str(text, "t.conf").expect_err("quote followed by a quote");
        assert!(err.to_string().contains("t.conf:5"), "{err}");
        let text = "# top\nhttp {\n  server { listen 80; # trailing\n    return 200 \"ok\\n\";\n    location ~ ^/u/(\\d+)$ { add_header X \"a \\\"b\\\"\"; rewrite ^/(.*)${x} /$1 break; }\n  }\n}\n";
        let d = parse_str(text, "t.conf").expect("parses");
        assert_eq!(d.len(), 1);
        let server = &d[0].children()[0];
        assert_eq!(server.at.line, 3);
        assert_eq!(words(&server.children()[0]), ["listen", "80"]);
        assert_eq!(words(&server.children()[1]), ["return", "200", "ok\n"]);
        let loc = &server.children()[2];
        assert_eq!(words(loc), ["location", "~", "^/u/(\\d+)$"]);
        assert_eq!(loc.at.line, 5);
        assert_eq!(words(&loc.children()[0]), ["add_header", "X", "a \"b\""]);
        assert_eq!(
            words(&loc.children()[1]),
            ["rewrite", "^/(.*)${x}", "/$1", "break"]
        );
        let ids: Vec<usize> = [&d[0], server, loc].iter().map(|d| d.id).collect();
        assert_eq!(ids, [0, 1, 4]);
    }

    #[test]
    fn errors_carry_file_and_line() {
        for (text, line, what) in [
            ("http {\n server {\n", 2, "end of file"),
            ("listen 80\n", 1, "not terminated"),
            ("a;\n}\n", 2, "unexpected \"}\""),
            ("a \"open;\n\n", 1, "unterminated"),
        ] {
            let err = parse_str(text, "x.conf").expect_err(text);
            let s = err.to_string();
            assert!(
                s.contains(&format!("x.conf:{line}")) && s.contains(what),
                "{s}"
            );
        }
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_matches("*.conf", "a.conf"));
        assert!(!wildcard_matches("*.conf", "a.conf.bak"));
        assert!(wildcard_matches("site-?.conf", "site-1.conf"));
        assert!(wildcard_matches("[a-c]*", "beta"));
        assert!(!wildcard_matches("[!a-c]*", "beta"));
    }

    #[test]
    fn includes_are_resolved_relative_to_the_main_file_with_a_pattern() {
        let dir = std::env::temp_dir().join(format!("ferry-nginx-inc-{}", std::process::id()));
        let conf_d = dir.join("conf.d");
        std::fs::create_dir_all(&conf_d).expect("dir");
        std::fs::write(
            dir.join("nginx.conf"),
            "http {\n include conf.d/*.conf;\n}\n",
        )
        .expect("write");
        std::fs::write(conf_d.join("b.conf"), "server { listen 81; }\n").expect("write");
        std::fs::write(conf_d.join("a.conf"), "\nserver { listen 80; }\n").expect("write");
        std::fs::write(conf_d.join("a.conf.off"), "broken {").expect("write");
        let d = parse_file(&dir.join("nginx.conf")).expect("parses");
        let servers = d[0].children();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].children()[0].args, ["80"]);
        assert!(servers[0].at.file.ends_with("conf.d/a.conf"));
        assert_eq!(servers[0].at.line, 2);
        std::fs::write(dir.join("nginx.conf"), "include missing.conf;\n").expect("write");
        let err = parse_file(&dir.join("nginx.conf")).expect_err("missing include");
        assert!(err.to_string().contains("nginx.conf:1"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
