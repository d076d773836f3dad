//! The `ferry` binary: parses the command line, loads the layered configuration, starts tracing, installs signal
//! handlers and maps failures to exit codes. Everything else is a library call (`ferry_app::run`,
//! `ferry_connector::run`, `ferry_admin::Management` for the management commands in [`cli`]).
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad command line or configuration, 3 the connector's credentials
//! were refused (`--exit-on-auth-failure`).
#![forbid(unsafe_code)]

mod cert;
mod cli;

/// jemalloc instead of glibc's malloc: 5 to 12% fewer instructions per relayed or proxied request, for about
/// 1 MiB more idle RSS (docs/performance.md, "Changes and their effect"). mimalloc saved as much but tripled
/// the idle RSS. Its settings (a background thread that gives freed memory back, within about a second) are
/// compiled into jemalloc from `.cargo/config.toml`, where the reasons are (docs/performance.md, "Memory after
/// load").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ferry_config::{Config, ConfigSource, HostMode, Override};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// `ferry connector --exit-on-auth-failure`: the node refused the tenant's credentials.
const EXIT_AUTH_FAILURE: u8 = 3;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Relay and edge gateway: reach private HTTP services through connectors"
)]
struct Cli {
    /// TOML configuration file (flags win over FERRY_* variables, which win over the file).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: every role on the embedded store by default, or some roles of a cluster (--roles, --transport).
    Serve(ServeArgs),
    /// Manage tenants, in the local store or with --api on a remote node.
    Tenant {
        #[command(subcommand)]
        command: cli::TenantCommand,
    },
    /// Manage a tenant's connector secrets, locally or with --api.
    Secret {
        #[command(subcommand)]
        command: cli::SecretCommand,
    },
    /// Manage the management API's keys, locally or with --api.
    AdminKey {
        #[command(subcommand)]
        command: cli::AdminKeyCommand,
    },
    /// Manage operator accounts of the management API and the dashboard, locally or with --api.
    User {
        #[command(subcommand)]
        command: cli::UserCommand,
    },
    /// Apply the store's pending migrations and exit.
    Migrate {
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Run a connector: dial a Ferry node and serve its targets.
    Connector(ConnectorArgs),
    /// Certificates for TLS without a PKI: `ferry cert dev` makes a CA and a server certificate.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Edge gateway tools that need no node: `ferry gateway import-nginx nginx.conf -o ferry.toml`.
    Gateway {
        #[command(subcommand)]
        command: cli::gateway::GatewayCommand,
    },
    /// Check the configuration (file, FERRY_* variables) and print it as it would be used, secrets masked.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell completion script: `ferry completions bash > /etc/bash_completion.d/ferry`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `ferry man > ferry.1 && man ./ferry.1`.
    Man,
}

#[derive(Subcommand)]
enum CertCommand {
    /// Write a development CA (ca.pem, ca-key.pem) and a server certificate signed by it for the given names
    /// (server.pem, server-key.pem; keys mode 0600): serve with --tls-cert/--tls-key, trust with --ca-file.
    Dev {
        /// A DNS name or IP address the server certificate is for; repeat for more (e.g. --name localhost
        /// --name 127.0.0.1).
        #[arg(long = "name", value_name = "NAME", required = true)]
        names: Vec<String>,
        /// The directory to write the four files to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// How many days the certificates are valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Replace files that already exist.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration (--config FILE, FERRY_* variables) and print the effective settings as TOML
    /// with secrets masked; an invalid one exits with 2 and names the key.
    Check,
}

impl Command {
    /// `tenant`, `secret`, `admin-key`: the commands that print their own outcome.
    fn is_management(&self) -> bool {
        matches!(
            self,
            Self::Tenant { .. } | Self::Secret { .. } | Self::AdminKey { .. } | Self::User { .. }
        )
    }
}

#[derive(Args)]
struct ServeArgs {
    /// Public listener address, e.g. 0.0.0.0:8443 (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
    /// Admin listener address (management API), default 127.0.0.1:8081.
    #[arg(long)]
    admin_listen: Option<String>,
    #[command(flatten)]
    data: DataDirArg,
    /// PEM certificate chain for TLS on the public listener.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the public listener.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Roles to run: all (default) or a comma-separated list of gateway, relay, management, worker
    /// (FERRY_ROLES). Splitting roles needs a bus (--transport) and PostgreSQL (FERRY_DATABASE_URL).
    #[arg(long, value_name = "ROLES")]
    roles: Option<String>,
    /// The bus between nodes: memory (default, one process), nats://HOST:PORT, tls://HOST:PORT,
    /// amqp://USER:PASS@HOST:PORT/VHOST or amqps://… (FERRY_TRANSPORT; prefer the variable when the URL has a
    /// password).
    #[arg(long, value_name = "URL")]
    transport: Option<String>,
    /// This node's id (FERRY_NODE_ID); default: generated once and kept in the data directory.
    #[arg(long)]
    node_id: Option<String>,
}

#[derive(Args)]
struct DataDirArg {
    /// Directory of the embedded store (default ./ferry-data), created if missing.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The store's database URL (postgres://… or sqlite://…) instead of the data directory's SQLite file
    /// (FERRY_DATABASE_URL; prefer the variable when the URL has a password).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

#[derive(Args)]
struct ConnectorArgs {
    /// Ferry's base URL, e.g. https://ferry.example.com.
    #[arg(long)]
    server: Option<String>,
    /// The tenant this connector serves.
    #[arg(long)]
    tenant: Option<String>,
    /// The tenant's connector secret (prefer FERRY_SECRET, which stays out of the process list).
    #[arg(long)]
    secret: Option<String>,
    /// A target as NAME=URL, e.g. app=http://127.0.0.1:3000; repeat for more.
    #[arg(long = "target", value_name = "NAME=URL")]
    targets: Vec<String>,
    /// Send the client's Host to this target instead of the target's own; repeat for more.
    #[arg(long = "preserve-host", value_name = "NAME")]
    preserve_host: Vec<String>,
    /// Extra PEM CA certificates to trust for the server, https targets and a TLS-inspecting proxy.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// HTTP proxy to reach the server through, http://[user:password@]host:port (default: HTTPS_PROXY /
    /// HTTP_PROXY, with NO_PROXY); `none` for no proxy.
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
    /// File with the proxy's credentials as one line user:password.
    #[arg(long, value_name = "PATH")]
    proxy_auth_file: Option<PathBuf>,
    /// How the tunnel is carried: auto (default; a WebSocket when the tunnel upgrade is refused on the way),
    /// upgrade, or websocket.
    #[arg(long, value_name = "auto|upgrade|websocket")]
    transport: Option<String>,
    /// Trust the node's certificate if its SHA-256 fingerprint is this (hex, colons allowed; as `openssl x509
    /// -noout -fingerprint -sha256` prints it), whatever its issuer: for self-signed nodes; repeat for more.
    #[arg(long = "pin-sha256", value_name = "HEX")]
    pin_sha256: Vec<String>,
    /// Exit with code 3 when the node refuses the tenant's credentials, instead of retrying every
    /// connector.auth_failure_delay (5 min): for supervisors that should see it.
    #[arg(long)]
    exit_on_auth_failure: bool,
    /// Serve the connector's Prometheus metrics at http://ADDR/metrics (default: off).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Tunnels to keep open to the node, each on a thread of its own (default 0: one per CPU, at most 4).
    #[arg(long, value_name = "N")]
    tunnels: Option<u32>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands that need neither the configuration nor the runtime.
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "ferry",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::Man => {
            let man = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            return match man.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ferry: man: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Cert {
            command:
                CertCommand::Dev {
                    names,
                    out,
                    days,
                    force,
                },
        } => return cert_dev(names, out, *days, *force),
        Command::Gateway { command } => return cli::gateway::run(command),
        _ => {}
    }
    let (config, source) = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferry: configuration: {}", chain(&e));
            return ExitCode::from(2);
        }
    };
    if let Command::Config {
        command: ConfigCommand::Check,
    } = &cli.command
    {
        for notice in source.notices() {
            eprintln!("ferry: warning: {notice}");
        }
        // the gateway's pools build their clients inside a runtime, as at start
        let checked = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                rt.block_on(async { ferry_app::check_config(&config) })
                    .map_err(|e| chain(&anyhow::Error::new(e)))
            });
        if let Err(e) = checked {
            eprintln!("ferry: configuration: {e}");
            return ExitCode::FAILURE;
        }
        return match ferry_config::effective_toml(&config) {
            Ok(text) => {
                eprintln!("configuration is valid; the effective settings follow, secrets masked");
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ferry: configuration: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut log = config.log.clone();
    if cli.command.is_management() && log.level == ferry_config::LogSettings::default().level {
        // A management command prints what it did on stderr itself; the store's and the API's info lines
        // (the audit lines a node logs) would only repeat it. FERRY_LOG / RUST_LOG still show them.
        log.level = "warn".to_owned();
    }
    let telemetry = match ferry_telemetry::init(&log, &config.telemetry) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ferry: logging: {e}");
            return ExitCode::from(2);
        }
    };
    for notice in source.notices() {
        tracing::warn!("{notice}");
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // 0: tokio's default, one worker per CPU the process may use (cgroup quotas included).
    if config.runtime.worker_threads > 0 {
        builder.worker_threads(config.runtime.worker_threads);
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferry: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::debug!(
        worker_threads = runtime.metrics().num_workers(),
        "async runtime started"
    );
    // Run on a worker thread, not on this one: a future `block_on` drives directly (the connector's tunnel, for
    // one) is woken through a futex on every event another task signals, which costs a syscall per request.
    let work = runtime.spawn(execute(cli.command, config, source));
    let outcome = match runtime.block_on(work) {
        Ok(outcome) => outcome,
        Err(e) => Err(anyhow::anyhow!("the main task failed: {e}")),
    };
    // the spans not yet exported go out before the process ends (the exporter has its own thread)
    telemetry.shutdown();
    match outcome {
        Ok(code) => code,
        Err(e) => {
            let text = chain(&e);
            tracing::error!("{text}");
            eprintln!("ferry: {text}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<(Config, ConfigSource)> {
    let mut overrides = Vec::new();
    let mut preserve_host = Vec::new();
    match &cli.command {
        Command::Serve(a) => {
            if let Some(v) = &a.listen {
                overrides.push(Override::new("server.listen", v.as_str()));
            }
            if let Some(v) = &a.admin_listen {
                overrides.push(Override::new("server.admin.listen", v.as_str()));
            }
            data_dir_override(&a.data, &mut overrides);
            if let Some(v) = &a.tls_cert {
                overrides.push(Override::new("server.tls_cert", v.display().to_string()));
            }
            if let Some(v) = &a.tls_key {
                overrides.push(Override::new("server.tls_key", v.display().to_string()));
            }
            for (path, value) in [
                ("node.roles", &a.roles),
                ("node.transport", &a.transport),
                ("node.id", &a.node_id),
            ] {
                if let Some(v) = value {
                    overrides.push(Override::new(path, v.as_str()));
                }
            }
        }
        Command::Tenant { command } => target_data_dir(command.target(), &mut overrides),
        Command::Secret { command } => target_data_dir(command.target(), &mut overrides),
        Command::AdminKey { command } => target_data_dir(command.target(), &mut overrides),
        Command::User { command } => target_data_dir(command.target(), &mut overrides),
        Command::Migrate { data } => data_dir_override(data, &mut overrides),
        Command::Cert { .. }
        | Command::Gateway { .. }
        | Command::Config { .. }
        | Command::Completions { .. }
        | Command::Man => {}
        Command::Connector(a) => {
            for (path, value) in [
                ("connector.server", &a.server),
                ("connector.tenant", &a.tenant),
                ("connector.secret", &a.secret),
                ("connector.proxy", &a.proxy),
                ("connector.transport", &a.transport),
                ("connector.metrics_listen", &a.metrics_listen),
            ] {
                if let Some(v) = value {
                    overrides.push(Override::new(path, v.as_str()));
                }
            }
            if let Some(v) = &a.ca_file {
                overrides.push(Override::new("connector.ca_file", v.display().to_string()));
            }
            if let Some(v) = &a.proxy_auth_file {
                overrides.push(Override::new(
                    "connector.proxy_auth_file",
                    v.display().to_string(),
                ));
            }
            if !a.targets.is_empty() {
                overrides.push(Override::targets(&a.targets)?);
            }
            if !a.pin_sha256.is_empty() {
                overrides.push(Override::new("connector.pin_sha256", a.pin_sha256.clone()));
            }
            if a.exit_on_auth_failure {
                overrides.push(Override::new("connector.exit_on_auth_failure", true));
            }
            if let Some(n) = a.tunnels {
                overrides.push(Override::new("connector.tunnels", i64::from(n)));
            }
            preserve_host.clone_from(&a.preserve_host);
        }
    }
    let source = ferry_config::ConfigSource {
        file: cli.config.clone(),
        env: std::env::vars().collect(),
        overrides,
    };
    let mut config = source.load()?;
    for name in preserve_host {
        let target = config
            .connector
            .targets
            .iter_mut()
            .find(|t| t.name.as_str() == name)
            .with_context(|| format!("--preserve-host {name}: no such target"))?;
        target.host = HostMode::Client;
    }
    Ok((config, source))
}

fn target_data_dir(target: &cli::Target, overrides: &mut Vec<Override>) {
    store_overrides(
        target.data_dir.as_ref(),
        target.database_url.as_ref(),
        overrides,
    );
}

fn data_dir_override(arg: &DataDirArg, overrides: &mut Vec<Override>) {
    store_overrides(arg.data_dir.as_ref(), arg.database_url.as_ref(), overrides);
}

fn store_overrides(
    data_dir: Option<&PathBuf>,
    database_url: Option<&String>,
    overrides: &mut Vec<Override>,
) {
    if let Some(v) = data_dir {
        overrides.push(Override::new("server.data_dir", v.display().to_string()));
    }
    if let Some(v) = database_url {
        overrides.push(Override::new("server.database_url", v.as_str()));
    }
}

async fn execute(
    command: Command,
    config: Config,
    source: ConfigSource,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(_) => {
            raise_open_files();
            let listeners = ferry_app::Listeners::bind(&config).await?;
            let (public, extra, admin) = (
                listeners.public.url(),
                listeners.extra_urls(),
                listeners.admin_url(),
            );
            if admin.is_none() {
                tracing::info!("management api disabled (server.admin.enabled = false)");
            }
            // printed once the store is open and the node serves: a script (or `ferry tenant create`) that waits
            // for these lines finds the store and the API ready
            let listeners = listeners.when_ready(move || {
                println!("ferry listening on {public}");
                for url in extra {
                    println!("ferry also listening on {url}");
                }
                if let Some(url) = admin {
                    println!("ferry admin listening on {url}");
                }
                if let Err(error) = std::io::stdout().flush() {
                    tracing::warn!(%error, "cannot write the listening lines to stdout");
                }
            });
            ferry_app::run_with_source(config, Some(source), listeners, shutdown_signal()).await?;
        }
        Command::Tenant { command } => return managed(cli::tenant(command, &config).await),
        Command::Secret { command } => return managed(cli::secret(command, &config).await),
        Command::AdminKey { command } => return managed(cli::admin_key(command, &config).await),
        Command::User { command } => return managed(cli::user(command, &config).await),
        Command::Migrate { .. } => cli::migrate(&config).await?,
        Command::Cert { .. }
        | Command::Gateway { .. }
        | Command::Config { .. }
        | Command::Completions { .. }
        | Command::Man => anyhow::bail!("answered before the runtime starts"),
        Command::Connector(_) => {
            raise_open_files();
            match ferry_connector::run(config.connector, shutdown_signal()).await {
                Ok(()) => {}
                Err(e @ ferry_connector::ConnectorError::AuthFailed { .. }) => {
                    eprintln!("ferry: {e}");
                    return Ok(ExitCode::from(EXIT_AUTH_FAILURE));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry cert dev`: write the files, say what they are for.
fn cert_dev(names: &[String], out: &std::path::Path, days: u32, force: bool) -> ExitCode {
    match cert::dev(names, out, days, force) {
        Ok(made) => {
            let dir = made.dir.display();
            println!(
                "wrote {dir}/{{{},{},{},{}}}",
                cert::CA_CERT,
                cert::CA_KEY,
                cert::SERVER_CERT,
                cert::SERVER_KEY
            );
            println!(
                "node:      ferry serve --tls-cert {dir}/{} --tls-key {dir}/{}",
                cert::SERVER_CERT,
                cert::SERVER_KEY
            );
            println!(
                "connector: ferry connector --ca-file {dir}/{} …",
                cert::CA_CERT
            );
            println!(
                "   or pin: ferry connector --pin-sha256 {} …",
                made.server_fingerprint
            );
            println!(
                "curl:      curl --cacert {dir}/{} https://{}:8080/healthz",
                cert::CA_CERT,
                names[0]
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferry: cert dev: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error with its causes on one line, `a: b: c`, leaving out a cause whose text the line already holds (many
/// errors print their source in their own message: "bind 0.0.0.0:80: Address already in use (os error 98)"
/// would otherwise end with the same cause twice).
fn chain(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// Raise the soft open-file limit to the hard one (a node holds a file per connection; many systems start
/// services at 1024), and say what the process got.
fn raise_open_files() {
    match ferry_gateway::raise_open_files_limit() {
        Ok((before, after)) if before != after => {
            tracing::info!(before, after, "open-file limit raised to the hard limit")
        }
        Ok((_, after)) => tracing::debug!(limit = after, "open-file limit"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
}

/// The exit code of a management command: its failure printed, 2 for the caller's mistakes, else 1.
fn managed(result: anyhow::Result<()>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("ferry: {}", chain(&e));
            Ok(cli::exit_code(&e))
        }
    }
}

/// Resolves on the first SIGTERM or Ctrl-C; a second one exits at once.
async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("signal received, shutting down (send it again to exit at once)");
    tokio::spawn(async {
        wait_for_signal().await;
        tracing::warn!("second signal, exiting now");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM ({e}); Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory as _;

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("bind 127.0.0.1:80: {source}")]
        struct Bind {
            source: std::io::Error,
        }
        let e = anyhow::Error::new(Bind {
            source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use"),
        })
        .context("public listener");
        assert_eq!(
            super::chain(&e),
            "public listener: bind 127.0.0.1:80: Address already in use"
        );
    }

    /// Every command and every argument of the command tree says what it is for in `--help`.
    #[test]
    fn every_command_and_argument_has_help() {
        let command = Cli::command();
        command.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&command, "ferry", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:#?}");
    }

    fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || matches!(id, "help" | "version") {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} <{id}>"));
            }
        }
        for sub in command.get_subcommands() {
            let sub_path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                missing.push(sub_path.clone());
            }
            walk(sub, &sub_path, missing);
        }
    }
}
