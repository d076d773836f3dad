//! The management commands (`ferry tenant|secret|admin-key|user …`, `ferry migrate`): on the local store, or with
//! `--api URL --api-key KEY` on a remote node through its management API. Both go through
//! [`ferry_admin::Management`], so they validate and answer alike.

pub mod gateway;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ferry_admin::model::*;
use ferry_admin::{Management, ManagementError};
use ferry_config::Config;

/// Where a management command works: the local store, or a remote node's API.
///
/// Flags choose: `--api` goes remote, `--data-dir`/`--database-url`/`--create` stay local, and both kinds at once
/// are refused. Without either, `FERRY_API_URL` in the environment goes remote, else the local store.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Directory of the embedded store (default ./ferry-data); local mode only. It must exist (see --create).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The store's database URL (postgres://… or sqlite://…) instead of the data directory; local mode only
    /// (FERRY_DATABASE_URL; prefer the variable when the URL has a password).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Create the local store if it does not exist yet (without it, a missing store is an error, so that a
    /// command run from another directory does not make a second, empty store).
    #[arg(long)]
    pub create: bool,
    /// Work on a remote node through its management API at this URL (the admin listener's); default
    /// FERRY_API_URL when no local flag is given.
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// The admin key (or token) for --api; prefer FERRY_API_KEY, which stays out of the process list.
    #[arg(long, env = "FERRY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print JSON instead of plain text.
    #[arg(long)]
    pub json: bool,
}

/// Where a management command goes, once flags and environment are weighed ([`Target::mode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The local store (data directory or database URL).
    Local,
    /// A remote node's management API at this URL.
    Remote(String),
}

impl Target {
    /// Local or remote: an explicit flag wins over the environment (`FERRY_API_URL`, read with `env`); local and
    /// remote flags together are a usage error.
    pub fn mode(&self, env: impl Fn(&str) -> Option<String>) -> Result<Mode, Usage> {
        let local_flag = [
            self.data_dir.is_some().then_some("--data-dir"),
            self.database_url.is_some().then_some("--database-url"),
            self.create.then_some("--create"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
        match (&self.api, local_flag.first()) {
            (Some(_), Some(flag)) => Err(Usage(format!(
                "--api works on a remote node and {flag} on the local store; give one of them"
            ))),
            (Some(url), None) => Ok(Mode::Remote(url.clone())),
            (None, Some(_)) => Ok(Mode::Local),
            (None, None) => match env("FERRY_API_URL").filter(|u| !u.trim().is_empty()) {
                Some(url) => Ok(Mode::Remote(url)),
                None => Ok(Mode::Local),
            },
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant; prints its first connector secret (once) on stdout.
    Create {
        /// The tenant's name: the first segment after /relay/ (lowercase letters, digits and '-').
        name: String,
        /// A name for people, shown in lists (default: the name).
        #[arg(long)]
        display_name: Option<String>,
        /// Free text about the tenant.
        #[arg(long)]
        description: Option<String>,
        /// A setting as KEY=VALUE, e.g. max_body_size=1048576; repeat for more.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List tenants (one page; --after for the next).
    List {
        /// Only names or display names containing this (case-insensitive).
        #[arg(long)]
        filter: Option<String>,
        /// At most this many tenants (default 100).
        #[arg(long)]
        limit: Option<u32>,
        /// The `next` cursor of the previous page.
        #[arg(long)]
        after: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Show one tenant with its settings.
    Show {
        /// The tenant's name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Change a tenant's display name, description or settings (merged; others stay).
    Update {
        /// The tenant's name.
        name: String,
        /// A new name for people.
        #[arg(long)]
        display_name: Option<String>,
        /// A new description.
        #[arg(long)]
        description: Option<String>,
        /// A setting as KEY=VALUE; repeat for more.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a tenant and all its secrets.
    Delete {
        /// The tenant's name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Give a tenant another connector secret; prints it (once) on stdout.
    Create {
        /// The tenant's name.
        tenant: String,
        /// The secret is refused after this long, e.g. 30d.
        #[arg(long, conflicts_with = "expires_at")]
        expires_in: Option<humantime::Duration>,
        /// The secret is refused from this unix time (seconds) on.
        #[arg(long)]
        expires_at: Option<i64>,
        #[command(flatten)]
        target: Target,
    },
    /// List a tenant's secrets (metadata only).
    List {
        /// The tenant's name.
        tenant: String,
        #[command(flatten)]
        target: Target,
    },
    /// Revoke one of a tenant's secrets.
    Revoke {
        /// The tenant's name.
        tenant: String,
        /// The secret's id (from `ferry secret list`).
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum AdminKeyCommand {
    /// Create a management API key; prints it (once) on stdout.
    Create {
        /// Who holds the key or what it is for.
        name: String,
        /// What the key may do (default admin).
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
        /// A tenant an operator key may see; repeat for more (operators only).
        #[arg(long = "tenant", value_name = "TENANT")]
        tenants: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List admin keys (metadata only).
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Revoke an admin key.
    Revoke {
        /// The key's id (from `ferry admin-key list`).
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

/// A role of the management API.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleArg {
    /// Everything, users and admin keys included.
    Admin,
    /// Only the tenants given with --tenant.
    Operator,
    /// Read everything but secrets; change nothing.
    Viewer,
}

impl From<RoleArg> for RoleName {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Admin => RoleName::Admin,
            RoleArg::Operator => RoleName::Operator,
            RoleArg::Viewer => RoleName::Viewer,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create an operator account; without --password-stdin a password is generated and printed (once) on
    /// stdout.
    Create {
        /// The name to sign in with.
        name: String,
        /// What the account may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// A tenant an operator may see; repeat for more (operators only).
        #[arg(long = "tenant", value_name = "TENANT")]
        tenants: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Disable an account: it cannot sign in and its sessions end.
    Disable {
        /// The account's name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Enable a disabled account.
    Enable {
        /// The account's name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete an account and end its sessions.
    Delete {
        /// The account's name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Set a new password (its sessions end); without --password-stdin one is generated and printed once.
    Passwd {
        /// The account's name.
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        target: Target,
    },
}

impl UserCommand {
    pub fn target(&self) -> &Target {
        match self {
            Self::Create { target, .. }
            | Self::List { target }
            | Self::Disable { target, .. }
            | Self::Enable { target, .. }
            | Self::Delete { target, .. }
            | Self::Passwd { target, .. } => target,
        }
    }
}

/// The first line of standard input, without its line ending: a password never given on the command line.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err(Usage("--password-stdin: standard input has no password".to_owned()).into());
    }
    Ok(password)
}

pub async fn user(command: UserCommand, config: &Config) -> anyhow::Result<()> {
    let json = command.target().json;
    let api = backend(command.target(), config).await?;
    match command {
        UserCommand::Create {
            name,
            role,
            tenants,
            password_stdin,
            ..
        } => {
            let password = if password_stdin {
                Some(password_from_stdin()?)
            } else {
                None
            };
            let created = api
                .create_user(&UserCreate {
                    name,
                    role: role.into(),
                    tenants: (!tenants.is_empty()).then_some(tenants),
                    password,
                })
                .await?;
            if json {
                output::json(&created)?;
            } else {
                eprintln!("created user {} ({})", created.user.name, created.user.role);
                if let Some(p) = &created.password {
                    eprintln!("its generated password follows and is shown only now");
                    println!("{p}");
                }
            }
        }
        UserCommand::List { .. } => {
            let list = api.list_users().await?;
            if json {
                output::json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .items
                    .iter()
                    .map(|u| {
                        vec![
                            u.name.clone(),
                            u.role.to_string(),
                            u.tenants.join(","),
                            if u.disabled { "yes" } else { "no" }.to_owned(),
                            output::time(Some(u.created_at)),
                            output::time(u.last_sign_in_at),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "NAME",
                        "ROLE",
                        "TENANTS",
                        "DISABLED",
                        "CREATED",
                        "LAST SIGN-IN",
                    ],
                    &rows,
                );
            }
        }
        UserCommand::Disable { name, .. } => {
            let user = api.set_user_disabled(&name, true).await?;
            if json {
                output::json(&user)?;
            }
            eprintln!("disabled user {name}; its sessions have ended");
        }
        UserCommand::Enable { name, .. } => {
            let user = api.set_user_disabled(&name, false).await?;
            if json {
                output::json(&user)?;
            }
            eprintln!("enabled user {name}");
        }
        UserCommand::Delete { name, .. } => {
            api.delete_user(&name).await?;
            eprintln!("deleted user {name}; its sessions have ended");
        }
        UserCommand::Passwd {
            name,
            password_stdin,
            ..
        } => {
            let password = if password_stdin {
                Some(password_from_stdin()?)
            } else {
                None
            };
            let changed = api
                .set_password(&name, &PasswordChange { password })
                .await?;
            eprintln!("set a new password for {name}; its sessions have ended");
            if let Some(p) = &changed.password {
                eprintln!("the generated password follows and is shown only now");
                println!("{p}");
            }
        }
    }
    Ok(())
}

impl TenantCommand {
    pub fn target(&self) -> &Target {
        match self {
            Self::Create { target, .. }
            | Self::List { target, .. }
            | Self::Show { target, .. }
            | Self::Update { target, .. }
            | Self::Delete { target, .. } => target,
        }
    }
}

impl SecretCommand {
    pub fn target(&self) -> &Target {
        match self {
            Self::Create { target, .. }
            | Self::List { target, .. }
            | Self::Revoke { target, .. } => target,
        }
    }
}

impl AdminKeyCommand {
    pub fn target(&self) -> &Target {
        match self {
            Self::Create { target, .. } | Self::List { target } | Self::Revoke { target, .. } => {
                target
            }
        }
    }
}

/// The operations for `target`: a client of the remote API, or the local store.
async fn backend(target: &Target, config: &Config) -> anyhow::Result<Box<dyn Management>> {
    match target.mode(|name| std::env::var(name).ok())? {
        Mode::Remote(url) => match &target.api_key {
            Some(key) => Ok(Box::new(ferry_admin::Client::new(&url, key)?)),
            None => Err(Usage(format!(
                "the management API at {url} (--api or FERRY_API_URL) needs --api-key or FERRY_API_KEY; \
                 for the local store give --data-dir"
            ))
            .into()),
        },
        Mode::Local => {
            let store = open_local(config, target.create).await?;
            Ok(Box::new(ferry_admin::Admin::new(store)))
        }
    }
}

/// Open the local store for a management command: refuse a SQLite store that does not exist unless `create`,
/// and say on stderr which store is used.
async fn open_local(config: &Config, create: bool) -> anyhow::Result<Arc<dyn ferry_store::Store>> {
    let url = config.server.database_url.as_ref().map(|u| u.expose());
    let data_dir = &config.server.data_dir;
    let described = match ferry_store::sqlite_file(url, data_dir) {
        Some(file) => {
            let file = std::path::absolute(&file).unwrap_or(file);
            if !create && !file.exists() {
                return Err(Usage(format!(
                    "no store at {} (data directory {}); give the --data-dir that `ferry serve` uses, \
                     or --create to make a new store there",
                    file.display(),
                    file.parent().map_or_else(String::new, |d| d.display().to_string()),
                ))
                .into());
            }
            format!("sqlite://{}", file.display())
        }
        None => ferry_store::describe_url(url, data_dir).unwrap_or_else(|| "?".to_owned()),
    };
    let store = ferry_app::open_store(config).await?;
    eprintln!("using store {described}");
    Ok(store)
}

/// A command-line mistake: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Exit code 2 for the caller's mistakes (bad command line, refused values), else 1.
pub fn exit_code(error: &anyhow::Error) -> ExitCode {
    if error.downcast_ref::<Usage>().is_some() {
        return ExitCode::from(2);
    }
    match error.downcast_ref::<ManagementError>() {
        Some(ManagementError::Api(e)) if matches!(e.status.as_u16(), 400 | 422) => {
            ExitCode::from(2)
        }
        _ => ExitCode::FAILURE,
    }
}

/// `--set KEY=VALUE` pairs as settings: VALUE is read as JSON (numbers, booleans), else as text.
fn parse_settings(pairs: &[String]) -> anyhow::Result<Option<Settings>> {
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut map = serde_json::Map::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| Usage(format!("--set {pair}: expected KEY=VALUE")))?;
        let value = serde_json::from_str(value.trim())
            .unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
        map.insert(key.trim().to_owned(), value);
    }
    serde_json::from_value(serde_json::Value::Object(map))
        .map(Some)
        .map_err(|e| Usage(format!("--set: {e}")).into())
}

fn tenant_fields(t: &TenantView) -> anyhow::Result<()> {
    output::fields(&[
        ("name", t.name.clone()),
        ("display_name", t.display_name.clone()),
        ("description", t.description.clone()),
        ("settings", serde_json::to_string(&t.settings)?),
        ("created_at", output::time(Some(t.created_at))),
        ("updated_at", output::time(Some(t.updated_at))),
    ]);
    Ok(())
}

pub async fn tenant(command: TenantCommand, config: &Config) -> anyhow::Result<()> {
    let json = command.target().json;
    let api = backend(command.target(), config).await?;
    match command {
        TenantCommand::Create {
            name,
            display_name,
            description,
            settings,
            ..
        } => {
            let request = TenantCreate {
                name: name.clone(),
                display_name,
                description,
                settings: parse_settings(&settings)?,
            };
            let created = api
                .create_tenant(&request)
                .await
                .with_context(|| format!("create tenant {name}"))?;
            if json {
                output::json(&created)?;
            } else {
                eprintln!(
                    "created tenant {}; its connector secret follows and is shown only now",
                    created.tenant.name
                );
                println!("{}", created.secret.secret);
            }
        }
        TenantCommand::List {
            filter,
            limit,
            after,
            ..
        } => {
            let page = api
                .list_tenants(&TenantListQuery {
                    limit,
                    after,
                    filter,
                })
                .await?;
            if json {
                output::json(&page)?;
            } else {
                let rows: Vec<Vec<String>> = page
                    .items
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.display_name.clone(),
                            output::time(Some(t.created_at)),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "DISPLAY NAME", "CREATED"], &rows);
                if let Some(next) = page.next {
                    eprintln!("more: --after {next}");
                }
            }
        }
        TenantCommand::Show { name, .. } => {
            let t = api.get_tenant(&name).await?;
            if json {
                output::json(&t)?;
            } else {
                tenant_fields(&t)?;
            }
        }
        TenantCommand::Update {
            name,
            display_name,
            description,
            settings,
            ..
        } => {
            let request = TenantUpdate {
                display_name,
                description,
                settings: parse_settings(&settings)?,
            };
            let t = api.update_tenant(&name, &request).await?;
            if json {
                output::json(&t)?;
            } else {
                tenant_fields(&t)?;
            }
        }
        TenantCommand::Delete { name, .. } => {
            api.delete_tenant(&name).await?;
            eprintln!("deleted tenant {name}");
        }
    }
    Ok(())
}

pub async fn secret(command: SecretCommand, config: &Config) -> anyhow::Result<()> {
    let json = command.target().json;
    let api = backend(command.target(), config).await?;
    match command {
        SecretCommand::Create {
            tenant,
            expires_in,
            expires_at,
            ..
        } => {
            let expires_at = match expires_in {
                Some(d) => Some(
                    ferry_store::unix_now()
                        .saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
                ),
                None => expires_at,
            };
            let created = api
                .create_secret(&tenant, &SecretCreate { expires_at })
                .await?;
            if json {
                output::json(&created)?;
            } else {
                eprintln!(
                    "created secret {} of tenant {tenant}; it follows and is shown only now",
                    created.id
                );
                println!("{}", created.secret);
            }
        }
        SecretCommand::List { tenant, .. } => {
            let list = api.list_secrets(&tenant).await?;
            if json {
                output::json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .items
                    .iter()
                    .map(|s| {
                        vec![
                            s.id.clone(),
                            if s.active { "active" } else { "inactive" }.to_owned(),
                            output::time(Some(s.created_at)),
                            output::time(s.expires_at),
                            output::time(s.revoked_at),
                        ]
                    })
                    .collect();
                output::table(&["ID", "STATE", "CREATED", "EXPIRES", "REVOKED"], &rows);
            }
        }
        SecretCommand::Revoke { tenant, id, .. } => {
            api.revoke_secret(&tenant, &id).await?;
            eprintln!("revoked secret {id} of tenant {tenant}");
        }
    }
    Ok(())
}

pub async fn admin_key(command: AdminKeyCommand, config: &Config) -> anyhow::Result<()> {
    let json = command.target().json;
    let api = backend(command.target(), config).await?;
    match command {
        AdminKeyCommand::Create {
            name,
            role,
            tenants,
            ..
        } => {
            let created = api
                .create_admin_key(&AdminKeyCreate {
                    name,
                    role: role.map(RoleName::from),
                    tenants: (!tenants.is_empty()).then_some(tenants),
                })
                .await?;
            if json {
                output::json(&created)?;
            } else {
                eprintln!(
                    "created admin key {}; it follows and is shown only now",
                    created.id
                );
                println!("{}", created.key);
            }
        }
        AdminKeyCommand::List { .. } => {
            let list = api.list_admin_keys().await?;
            if json {
                output::json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .items
                    .iter()
                    .map(|k| {
                        vec![
                            k.id.clone(),
                            k.name.clone(),
                            k.role.to_string(),
                            k.tenants.join(","),
                            output::time(Some(k.created_at)),
                            output::time(k.revoked_at),
                        ]
                    })
                    .collect();
                output::table(
                    &["ID", "NAME", "ROLE", "TENANTS", "CREATED", "REVOKED"],
                    &rows,
                );
            }
        }
        AdminKeyCommand::Revoke { id, .. } => {
            api.revoke_admin_key(&id).await?;
            eprintln!("revoked admin key {id}");
        }
    }
    Ok(())
}

/// `ferry migrate`: open the store, which applies pending migrations.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store: Arc<dyn ferry_store::Store> = ferry_app::open_store(config).await?;
    drop(store);
    let location = match &config.server.database_url {
        Some(_) => "the database of server.database_url".to_owned(),
        None => config
            .server
            .data_dir
            .join(ferry_store::SQLITE_FILE_NAME)
            .display()
            .to_string(),
    };
    println!("migrations applied to {location}");
    Ok(())
}
