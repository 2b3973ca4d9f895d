//! `knockctl deny ID… [--ban]`: kick or ban the knockers. Several ids are a bulk destructive
//! action: confirmed on a terminal, and only with `--yes` elsewhere.

use std::io::{BufRead, IsTerminal, Write};

use super::{
    Ctx,
    decide::{self, Verb},
};
use crate::{cli::DenyArgs, exit::CliError};

pub async fn run(ctx: &Ctx, args: &DenyArgs) -> Result<(), CliError> {
    let Some(ids) = decide::gather_ids(&args.ids.ids)? else {
        return decide::nothing_to_do(ctx);
    };
    if ids.len() > 1 && !args.yes {
        confirm(&ids, args.ban)?;
    }
    decide::decide(ctx, &ids, args.reason.as_deref(), Verb::Deny { ban: args.ban }).await
}

/// Asks on the terminal; without one, refuses (exit 2) since `--yes` was not given.
fn confirm(ids: &[i64], ban: bool) -> Result<(), CliError> {
    let what = if ban { "deny and ban" } else { "deny" };
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(CliError::usage(format!(
            "refusing to {what} {} knocks without confirmation when not on a terminal; \
             nothing was decided (pass --yes)",
            ids.len()
        )));
    }
    eprint!("knockctl: {what} {} knocks ({})? [y/N] ", ids.len(), list.join(", "));
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::failure(format!("cannot read the answer: {e}")))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(CliError::failure("aborted; nothing was decided")),
    }
}
