//! knockctl: the admin tool for knockd. Scriptable commands today; an interactive TUI later.
//!
//! The modules: `cli` (the command line), `commands` (one file per verb), `output` (text, JSON,
//! colour) and `exit` (exit codes and errors).

mod cli;
mod commands;
mod exit;
mod output;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::{
    cli::Cli,
    commands::Ctx,
    exit::{CliError, Exit},
    output::Output,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Usage errors exit 2 here; --help and --version exit 0.
    let cli = Cli::parse();
    let out = Output::new(cli.global.json, cli.global.color);
    let result = match cli.command {
        Some(command) => commands::run(command, &Ctx { global: cli.global, out }).await,
        // No subcommand: this is where the interactive TUI will start (when stdin and stdout
        // are terminals). Until then, print the help.
        None => no_command(&out),
    };
    match result {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            if !e.message.is_empty() {
                out.error(&e.message);
            }
            e.code.into()
        }
    }
}

fn no_command(out: &Output) -> Result<(), CliError> {
    out.write(&Cli::command().render_long_help().to_string())
}
