//! `ferry gateway …`: commands about the edge gateway's configuration that need no node. `import-nginx` reads an
//! nginx configuration and writes the equivalent Ferry configuration (`ferry-nginx` does the work), prints the
//! report of what it left out on stderr, and checks what it wrote as `ferry config check` and `ferry serve` would.

use anyhow::Context as _;
use clap::Subcommand;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum GatewayCommand {
    /// Translate an nginx configuration (servers, listen, TLS, locations, proxy_pass, upstream blocks, headers,
    /// return, rewrite, logs) into a Ferry configuration; every directive left out is reported on stderr with
    /// its file and line. Exits 0 with a report, 2 when the nginx file cannot be read or parsed.
    ImportNginx {
        /// The nginx configuration (nginx.conf or a site file); includes are read relative to its directory.
        file: PathBuf,
        /// Write the Ferry configuration to this file instead of stdout.
        #[arg(short, long, value_name = "OUT")]
        output: Option<PathBuf>,
    },
}

/// Run a `ferry gateway` command.
pub fn run(command: &GatewayCommand) -> ExitCode {
    match command {
        GatewayCommand::ImportNginx { file, output } => import_nginx(file, output.as_deref()),
    }
}

fn import_nginx(file: &Path, output: Option<&Path>) -> ExitCode {
    let imported = match ferry_nginx::import_file(file) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("ferry: import-nginx: {e}");
            return ExitCode::from(2);
        }
    };
    for line in imported.report.lines() {
        eprintln!("{line}");
    }
    let count = |k| imported.report.of(k).count();
    eprintln!(
        "ferry: import-nginx: {} directives not translated, {} not needed (Ferry does them itself), {} approximated",
        count(ferry_nginx::NoteKind::NotTranslated),
        count(ferry_nginx::NoteKind::NotNeeded),
        count(ferry_nginx::NoteKind::Approximated),
    );
    match write_and_check(&imported, file, output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry: import-nginx: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn write_and_check(
    imported: &ferry_nginx::Imported,
    file: &Path,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let text = ferry_nginx::to_toml(&imported.config, &file.display().to_string())?;
    let name = match output {
        Some(out) => {
            std::fs::write(out, &text)
                .with_context(|| format!("cannot write {}", out.display()))?;
            out.display().to_string()
        }
        None => {
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("cannot write to stdout")?;
            "the output".to_owned()
        }
    };
    check(&text, &name).with_context(|| {
        format!("{name} does not pass Ferry's validation (a bug in the importer: please report it with the nginx file)")
    })?;
    eprintln!(
        "ferry: import-nginx: {name} is a valid Ferry configuration (the certificate, error-page and static files \
         it names are checked by `ferry config check` where they are)"
    );
    Ok(())
}

/// What `ferry-config` checks, then what `ferry serve` checks of `[gateway]` before binding (route table, pools),
/// without reading the files the configuration names (certificates, error pages, static directories): they are
/// on the nginx host, not necessarily here; `ferry config check` there reads them.
fn check(text: &str, name: &str) -> anyhow::Result<()> {
    let config = ferry_config::load_text(text, name)?;
    ferry_edge::Gateway::validate_on(
        &ferry_nginx::without_host_files(&config.gateway),
        &ferry_edge::ListenerNames::of_config(&config.server),
    )?;
    Ok(())
}
