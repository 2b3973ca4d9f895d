//! knockctl: the admin tool for knockd. Scriptable commands, and an interactive TUI when run
//! without a subcommand on a terminal (or as `knockctl tui`).

use std::{
    io::{IsTerminal, stdin, stdout},
    process::ExitCode,
};

use clap::{CommandFactory, Parser};
use knockctl::{
    cli::{Cli, Command},
    commands::{self, Ctx},
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
        // No subcommand: the TUI on a terminal, else (or with --json) the help.
        None if stdin().is_terminal() && stdout().is_terminal() && !cli.global.json => {
            commands::run(Command::Tui, &Ctx { global: cli.global, out }).await
        }
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
