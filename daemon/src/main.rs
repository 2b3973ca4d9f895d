//! knockd command line: run the daemon, check or print configuration.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use knockd::{
    config::{Config, EXAMPLE, LogFormat, Overrides},
    server::{Listeners, prepare, serve},
};

#[derive(Debug, Parser)]
#[command(name = "knockd", version, about = "Resident Matrix homeserver for knock-gated rooms")]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "KNOCKD_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Matrix server name (overrides KNOCKD_SERVER_NAME and the file).
    #[arg(long, global = true)]
    server_name: Option<String>,
    /// Data directory (key, token, certificate, SQLite database).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Database URL: postgres://… or sqlite://PATH.
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Federation listen address.
    #[arg(long, global = true)]
    federation_listen: Option<String>,
    /// Admin API listen address (loopback).
    #[arg(long, global = true)]
    admin_listen: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Administration of local users' admin tokens.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Print a shell completion script for knockd.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print knockd's man page (roff).
    Man,
    /// Exit 0 when the knockd of this configuration is ready (its admin listener's /readyz), 1
    /// otherwise: for probes.
    Healthcheck,
    /// The server's signing key.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Print the current key ID and public key, and the keys it replaced.
    Show,
    /// Replace the signing key with a new one; the old one stays published in old_verify_keys.
    /// Stop every knockd sharing the key first, and copy signing.key and old_verify_keys to the
    /// other instances' data dirs before starting them.
    Rotate {
        /// Rotate even though a knockd seems to be listening on this configuration's addresses.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Admin API bearer tokens (stored hashed; a new token is shown once).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token for a local user (created if needed), e.g. --user @mod:example.org.
    Create {
        #[arg(long)]
        user: String,
        #[arg(long)]
        label: Option<String>,
        /// The token stops working after this long: "30d", "12h", "90m" (default: never).
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List tokens (ids, users, labels; never the tokens themselves).
    List,
    /// Revoke a token by its id.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration (ranges, the log filter, TLS files) without binding ports or
    /// touching the database.
    Check {
        /// Answer as JSON: {"ok": true, …the resolved settings} or {"ok": false, "error": …}.
        #[arg(long)]
        json: bool,
    },
    /// Print a commented example configuration.
    Example,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        server_name: cli.server_name.clone(),
        data_dir: cli.data_dir.clone(),
        database_url: cli.database_url.clone(),
        federation_listen: cli.federation_listen.clone(),
        admin_listen: cli.admin_listen.clone(),
    };
    if let Some(Command::Config { command: ConfigCommand::Example }) = &cli.command {
        print!("{EXAMPLE}");
        return ExitCode::SUCCESS;
    }
    // Neither needs a configuration.
    match &cli.command {
        Some(Command::Completions { shell }) => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(*shell, &mut command, "knockd", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Some(Command::Man) => {
            use clap::CommandFactory;
            return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("knockd: cannot write the man page: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let env = |name: &str| std::env::var(name).ok();
    let loaded = Config::load(cli.config.as_deref(), &env, &overrides).map_err(|e| e.to_string());
    if let Some(Command::Config { command: ConfigCommand::Check { json } }) = &cli.command {
        let checked = loaded.and_then(|c| check_tls_files(&c).map(|()| c));
        return match (checked, json) {
            (Ok(c), true) => {
                println!("{}", settings_json(&c));
                ExitCode::SUCCESS
            }
            (Ok(c), false) => {
                println!(
                    "configuration ok: server_name {}, federation {} (tls {:?}), admin {}, \
                     database {}",
                    c.server_name,
                    c.federation.listen,
                    c.federation.tls,
                    c.admin.listen,
                    c.database_url
                );
                ExitCode::SUCCESS
            }
            (Err(e), true) => {
                println!("{}", serde_json::json!({ "ok": false, "error": e }));
                ExitCode::FAILURE
            }
            (Err(e), false) => {
                eprintln!("knockd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("knockd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Admin { command: AdminCommand::Token { command } }) = &cli.command {
        return match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => match rt.block_on(token_command(&config, command)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("knockd: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("knockd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Healthcheck) = &cli.command {
        return match healthcheck(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("knockd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Key { command }) = &cli.command {
        return match key_command(&config, command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("knockd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    init_tracing(&config.log, config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("knockd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("knockd: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), knockd::StartError> {
    let listeners = Listeners::bind(&config)?;
    let app = prepare(&config).await?;
    if !config.server_name_is_local()
        && config.federation.tls == knockd::config::TlsMode::SelfSigned
    {
        tracing::warn!(
            server_name = %config.server_name,
            "federation uses a SELF-SIGNED certificate, but the server name is public: real homeservers \
             verify certificates and will refuse to talk to knockd. Configure federation.tls = \"files\" \
             with a real certificate, or \"off\" behind a TLS-terminating reverse proxy."
        );
    }
    tracing::info!(
        server_name = %config.server_name,
        federation = %config.federation.listen,
        admin = %config.admin.listen,
        database = %config.database_url,
        key_id = %app.keys.key_id(),
        "knockd started; admin token in {}",
        config.data_dir.join(knockd_shared::ADMIN_TOKEN_FILE).display()
    );
    let shutdown = async {
        shutdown_signal().await;
        knockd::systemd::notify("STOPPING=1");
    };
    if let Some(interval) = knockd::systemd::watchdog_interval() {
        tokio::spawn(knockd::systemd::watchdog(interval));
    }
    // SIGHUP (systemctl reload) must never end knockd, TLS or not: caught from here on (the
    // TLS listener reloads its certificate on it).
    #[cfg(unix)]
    if let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        && config.federation.tls == knockd::config::TlsMode::Off
    {
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: no TLS certificate to reload (federation.tls = \"off\")");
            }
        });
    }
    // The listeners are bound: connections wait in their backlog until served.
    knockd::systemd::notify("READY=1");
    serve(app, listeners, shutdown).await
}

/// `knockd healthcheck`: asks the admin listener's `/readyz` (database reachable, migrations
/// applied, key loaded), as a container or systemd probe would.
fn healthcheck(config: &Config) -> Result<(), String> {
    use std::io::{Read, Write};
    let addr = config.admin.listen;
    let timeout = std::time::Duration::from_secs(5);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("not ready: nothing answers on {addr} ({e})"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| format!("not ready: {e}"))?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer.lines().next().unwrap_or_default().to_owned();
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.trim()).unwrap_or_default();
    if status.starts_with("HTTP/1.1 200") {
        println!("ready: {body}");
        Ok(())
    } else if status.is_empty() {
        Err(format!("not ready: no answer from {addr}"))
    } else {
        Err(format!("not ready: {status}: {body}"))
    }
}

async fn token_command(config: &Config, command: &TokenCommand) -> Result<(), String> {
    use knockd::{
        matrix::now_ms,
        store::{Db, StoreError, users},
    };
    let db = Db::connect(&config.database_url).await.map_err(|e| e.to_string())?;
    match command {
        TokenCommand::Create { user, label, expires_in } => {
            let expires_ms = match expires_in {
                None => None,
                Some(text) => match knockd::config::parse_millis(text) {
                    Some(ms) if ms > 0 => Some(now_ms().saturating_add(ms)),
                    _ => {
                        return Err(format!(
                            "--expires-in {text:?}: expected a duration like 30d, 12h, 90m"
                        ));
                    }
                },
            };
            let user_id =
                ruma::UserId::parse(user).map_err(|e| format!("{user:?} is not a user ID: {e}"))?;
            if user_id.server_name() != config.server_name {
                return Err(format!(
                    "{user_id} is not a user of this server ({})",
                    config.server_name
                ));
            }
            let token = knockd::server::new_token()?;
            let (t, u, l) = (token.clone(), user_id.to_string(), label.clone());
            let id = db
                .write(move |conn| -> Result<String, StoreError> {
                    users::ensure_user(conn, &u, now_ms())?;
                    users::add_token_expiring(conn, &t, &u, l.as_deref(), now_ms(), expires_ms)
                })
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("token {id} created for {user_id}; it is shown once:");
            println!("{token}");
        }
        TokenCommand::List => {
            let rows = db
                .read(|conn| -> Result<_, StoreError> { users::tokens(conn) })
                .await
                .map_err(|e| e.to_string())?;
            println!("ID\tUSER\tLABEL\tCREATED_MS\tREVOKED_MS\tEXPIRES_MS");
            let or_dash =
                |v: Option<i64>| v.map(|m| m.to_string()).unwrap_or_else(|| "-".to_owned());
            for r in rows {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    r.token_id,
                    r.user_id,
                    r.label.unwrap_or_default(),
                    r.created_ms,
                    or_dash(r.revoked_ms),
                    or_dash(r.expires_ms)
                );
            }
        }
        TokenCommand::Revoke { id } => {
            let i = id.clone();
            let done = db
                .write(move |conn| -> Result<bool, StoreError> {
                    users::revoke(conn, &i, now_ms())
                })
                .await
                .map_err(|e| e.to_string())?;
            if !done {
                return Err(format!("no live token with id {id}"));
            }
            eprintln!("token {id} revoked");
        }
    }
    Ok(())
}

/// With `federation.tls = "files"`: both files readable and PEM.
fn check_tls_files(config: &Config) -> Result<(), String> {
    if let knockd::config::TlsMode::Files { cert, key } = &config.federation.tls {
        for (what, path) in [("federation.cert", cert), ("federation.key", key)] {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{what} = {}: {e}", path.display()))?;
            if !text.contains("-----BEGIN ") {
                return Err(format!("{what} = {}: not a PEM file", path.display()));
            }
        }
    }
    Ok(())
}

/// The resolved settings an operator checks (the database URL without its password).
fn settings_json(c: &Config) -> serde_json::Value {
    let tls = match &c.federation.tls {
        knockd::config::TlsMode::Off => "off".to_owned(),
        knockd::config::TlsMode::SelfSigned => "self-signed".to_owned(),
        knockd::config::TlsMode::Files { .. } => "files".to_owned(),
    };
    serde_json::json!({
        "ok": true,
        "server_name": c.server_name.as_str(),
        "data_dir": c.data_dir.display().to_string(),
        "database_url": c.database_url.to_string(),
        "log": c.log,
        "log_format": format!("{:?}", c.log_format).to_lowercase(),
        "federation": {
            "listen": c.federation.listen.to_string(),
            "tls": tls,
            "request_timeout_ms": c.federation.request_timeout_ms,
        },
        "admin": { "listen": c.admin.listen.to_string() },
        "metrics": { "listen": c.metrics.listen.map(|a| a.to_string()) },
        "outbox": {
            "min_backoff_ms": c.outbox.min_backoff_ms,
            "max_backoff_ms": c.outbox.max_backoff_ms,
            "park_after_ms": c.outbox.park_after_ms,
            "poll_ms": c.outbox.poll_ms,
        },
        "knock": {
            "expire_after_ms": c.knock_expire_after_ms,
            "max_pending_per_room": c.knock_limits.max_pending_per_room,
        },
    })
}

fn key_command(config: &Config, command: &KeyCommand) -> Result<(), String> {
    use knockd::matrix::keys::{self, KeyRing};
    let path = config.data_dir.join(knockd::server::SIGNING_KEY_FILE);
    match command {
        KeyCommand::Show => {
            if !path.exists() {
                return Err(format!(
                    "no signing key at {} (knockd creates one when it first starts)",
                    path.display()
                ));
            }
            let ring = KeyRing::load_or_generate(config.server_name.clone(), &path)
                .map_err(|e| e.to_string())?;
            println!("{}\t{}\tcurrent", ring.key_id(), ring.public_key_base64());
            for old in ring.old_keys() {
                println!("{}\t{}\texpired_ts {}", old.key_id, old.public, old.expired_ts);
            }
        }
        KeyCommand::Rotate { force } => {
            let timeout = std::time::Duration::from_millis(500);
            let listening = [config.admin.listen, config.federation.listen]
                .into_iter()
                .find(|addr| std::net::TcpStream::connect_timeout(addr, timeout).is_ok());
            if let (Some(addr), false) = (listening, force) {
                return Err(format!(
                    "something listens on {addr}, one of this knockd's addresses: stop knockd \
                     (every instance sharing this key) before rotating, or pass --force"
                ));
            }
            let done = keys::rotate(&path, knockd::matrix::now_ms().max(0) as u64)
                .map_err(|e| e.to_string())?;
            eprintln!(
                "signing key rotated: {} replaces {} (published as old, expired_ts {}); copy {} \
                 and {} to every other instance's data dir, then start knockd",
                done.new_key_id,
                done.old_key_id,
                done.expired_ts,
                path.display(),
                keys::old_keys_path(&path).display()
            );
            let kept = knockd::matrix::remote_keys::MAX_OLD_VERIFY_KEYS;
            if done.old_keys > kept {
                eprintln!(
                    "note: {} old keys are published; other knockd servers keep only the {kept} \
                     most recently expired, so they can no longer check events signed with the \
                     oldest",
                    done.old_keys
                );
            }
            println!("{}", done.new_key_id);
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn init_tracing(filter: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let filter = std::env::var("RUST_LOG").ok().unwrap_or_else(|| filter.to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        // Fields flattened to the top level, as log collectors expect.
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => {
            // https://no-color.org: set and not empty means no colour.
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            logs.with_ansi(std::io::stderr().is_terminal() && !no_color).init()
        }
    }
}
