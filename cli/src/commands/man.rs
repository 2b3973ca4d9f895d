//! `knockctl man`: the man page (roff) on stdout, or one page per command into a directory.

use std::path::Path;

use clap::CommandFactory;

use super::Ctx;
use crate::{cli::Cli, exit::CliError};

pub fn run(ctx: &Ctx, out_dir: Option<&Path>) -> Result<(), CliError> {
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(Cli::command(), dir))
            .map_err(|e| {
            CliError::failure(format!("cannot write man pages to {}: {e}", dir.display()))
        })?;
        ctx.out.note(&format!("wrote man pages to {}", dir.display()));
        return Ok(());
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .map_err(|e| CliError::failure(format!("cannot render the man page: {e}")))?;
    ctx.out.write(&String::from_utf8_lossy(&page))
}
