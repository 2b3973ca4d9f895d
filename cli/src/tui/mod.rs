//! `knockctl tui` (and `knockctl` alone on a terminal): the interactive moderation queue.
//!
//! The state ([`app`]) is pure: keys, answers and stream events go in as messages, effects come
//! out for [`io`] to run. [`view`] renders the state into a frame; [`keys`] is the key table the
//! help overlay is generated from; [`sanitize`] makes untrusted text safe for the terminal.

pub mod app;
mod io;
pub mod keys;
pub mod layout;
pub mod room;
pub mod sanitize;
pub mod view;

#[cfg(test)]
mod tests;

use std::{
    io::{IsTerminal, stdin, stdout},
    time::Duration,
};

use ratatui::DefaultTerminal;
use tokio::{sync::mpsc, time::MissedTickBehavior};

pub use self::app::{App, Effect, Msg};
use crate::{commands::Ctx, exit::CliError, output::now_ms};

/// Runs the TUI until the user quits.
pub async fn run(ctx: &Ctx) -> Result<(), CliError> {
    if !stdin().is_terminal() || !stdout().is_terminal() {
        return Err(CliError::usage(
            "the TUI needs a terminal on stdin and stdout (scripts: use list, show, approve, deny)",
        ));
    }
    if ctx.out.json {
        return Err(CliError::usage("the TUI has no JSON output (drop --json)"));
    }
    let client = ctx.client()?;
    let mut terminal = ratatui::try_init()
        .map_err(|e| CliError::failure(format!("cannot set up the terminal: {e}")))?;
    let result = event_loop(&mut terminal, client, ctx.out.colored()).await;
    ratatui::restore();
    result
}

fn draw(terminal: &mut DefaultTerminal, app: &App) -> Result<(), CliError> {
    terminal
        .draw(|frame| view::render(app, frame))
        .map(|_| ())
        .map_err(|e| CliError::failure(format!("cannot draw: {e}")))
}

async fn event_loop(
    terminal: &mut DefaultTerminal,
    client: knockd_shared::AdminClient,
    color: bool,
) -> Result<(), CliError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    io::read_keys(tx.clone());
    let stream = tokio::spawn(io::stream_events(client.clone(), tx.clone()));
    let mut app = App::new(client.base_url(), now_ms(), color);
    if let Ok(size) = terminal.size() {
        app.update(Msg::Resize { width: size.width, height: size.height });
    }
    // Paint before the first answer.
    draw(terminal, &app)?;
    let mut runner = io::Runner::new(client, tx);
    app.start().into_iter().for_each(|e| runner.run(e));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let result = loop {
        let msg = tokio::select! {
            Some(msg) = rx.recv() => msg,
            _ = tick.tick() => Msg::Tick { now_ms: now_ms() },
        };
        let mut effects = app.update(msg);
        // Apply whatever else is queued before drawing once.
        while let Ok(msg) = rx.try_recv() {
            effects.extend(app.update(msg));
        }
        if effects.contains(&Effect::Quit) {
            break Ok(());
        }
        effects.into_iter().for_each(|e| runner.run(e));
        if let Err(e) = draw(terminal, &app) {
            break Err(e);
        }
    };
    stream.abort();
    runner.abort();
    result
}
