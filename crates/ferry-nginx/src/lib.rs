//! From nginx to Ferry: reads an nginx configuration of the common kind (servers, listeners, TLS with client and
//! upstream certificates, `location`s, `proxy_pass`, `upstream` blocks, header directives, `return`, `rewrite`,
//! static files, compression, request buffering, logs, error pages) and builds the
//! equivalent Ferry configuration as `ferry-config`'s own types, with a [`Report`] of every directive it did not
//! translate and of those Ferry does by itself.
//!
//! Owns: nginx's syntax ([`parse`]) and the translation ([`translate`]). Does not own: Ferry's config format
//! (`ferry-config`), checking the result beyond what this crate builds (`ferry config check` and the gateway's own
//! validation do), or the command line (`ferry gateway import-nginx` in the binary).
#![forbid(unsafe_code)]

pub mod ciphers;
pub mod parse;
pub mod report;
pub mod translate;

pub use ciphers::{map_ciphers, Ciphers};
pub use parse::{parse_file, parse_str, Directive, Position};
pub use report::{Note, NoteKind, Report};
pub use translate::{to_toml, translate, without_host_files, Imported};

use std::path::{Path, PathBuf};

/// Why an nginx configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NginxError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{at}: cannot include {}: {source}", path.display())]
    Include {
        at: Position,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{at}: {message}")]
    Syntax { at: Position, message: String },
    #[error("cannot write the Ferry configuration as TOML: {0}")]
    Serialize(String),
}

/// Read the nginx configuration at `path` (with its includes) and translate it.
pub fn import_file(path: &Path) -> Result<Imported, NginxError> {
    Ok(translate(&parse_file(path)?))
}
