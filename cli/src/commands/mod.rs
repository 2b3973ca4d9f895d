//! One module per verb; `run` dispatches.

mod approve;
mod completions;
mod decide;
mod deny;
mod list;
mod log;
mod man;
mod outbox;
mod rooms;
mod show;
mod watch;

use std::path::Path;

use knockd_shared::{ADMIN_TOKEN_FILE, AdminClient};

use crate::{
    cli::{Command, Global},
    exit::{CliError, Exit},
    output::Output,
};

/// What every command gets: the global flags and the output settings.
pub struct Ctx {
    /// `--url`, `--token-file`, …
    pub global: Global,
    /// Where and how to print.
    pub out: Output,
}

impl Ctx {
    /// An admin API client for `--url` with the admin token.
    pub fn client(&self) -> Result<AdminClient, CliError> {
        Ok(AdminClient::new(self.global.url.clone(), token(&self.global)?))
    }
}

/// The token: `--token-file` / `KNOCKCTL_TOKEN_FILE`, else `KNOCKCTL_TOKEN`, else
/// `<data dir>/admin.token`.
fn token(global: &Global) -> Result<String, CliError> {
    if let Some(path) = &global.token_file {
        return read_token(path);
    }
    if let Ok(token) = std::env::var("KNOCKCTL_TOKEN")
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_owned());
    }
    read_token(&global.data_dir.join(ADMIN_TOKEN_FILE))
}

fn read_token(path: &Path) -> Result<String, CliError> {
    let token = std::fs::read_to_string(path).map_err(|e| {
        CliError::new(
            Exit::Forbidden,
            format!(
                "cannot read the admin token from {}: {e} (use --token-file, --data-dir or \
                 KNOCKCTL_TOKEN)",
                path.display()
            ),
        )
    })?;
    let token = token.trim();
    if token.is_empty() {
        return Err(CliError::new(
            Exit::Forbidden,
            format!("the admin token file {} is empty", path.display()),
        ));
    }
    Ok(token.to_owned())
}

/// Runs one command.
pub async fn run(command: Command, ctx: &Ctx) -> Result<(), CliError> {
    match command {
        Command::List(args) => list::run(ctx, &args).await,
        Command::Show { id } => show::run(ctx, id).await,
        Command::Approve(args) => approve::run(ctx, &args).await,
        Command::Deny(args) => deny::run(ctx, &args).await,
        Command::Rooms(command) => rooms::run(ctx, command).await,
        Command::Log(args) => log::run(ctx, &args).await,
        Command::Outbox { action } => outbox::run(ctx, action.as_ref()).await,
        Command::Watch => watch::run(ctx).await,
        Command::Version => version(ctx).await,
        Command::Tui => crate::tui::run(ctx).await,
        Command::Completions { shell } => completions::run(ctx, shell),
        Command::Man { out_dir } => man::run(ctx, out_dir.as_deref()),
    }
}

/// `knockctl version`: its own version, and knockd's (exit 6 when knockd cannot be reached).
async fn version(ctx: &Ctx) -> Result<(), CliError> {
    let own = env!("CARGO_PKG_VERSION");
    let server = ctx.client()?.version().await?;
    if ctx.out.json {
        return ctx.out.json(&serde_json::json!({ "knockctl": own, "knockd": server.version }));
    }
    ctx.out.line(&format!("knockctl {own}"))?;
    ctx.out.line(&format!("{} {}", server.server, server.version))
}
