//! `knockctl completions SHELL`: a completion script on stdout.

use clap::CommandFactory;
use clap_complete::Shell;

use super::Ctx;
use crate::{cli::Cli, exit::CliError};

pub fn run(ctx: &Ctx, shell: Shell) -> Result<(), CliError> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "knockctl", &mut script);
    ctx.out.write(&String::from_utf8_lossy(&script))
}
