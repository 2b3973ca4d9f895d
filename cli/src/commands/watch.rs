//! `knockctl watch`: the queue-change stream as JSON lines, one `QueueEvent` per line, until
//! interrupted. The output is JSON lines with or without `--json`.

use std::io::IsTerminal;

use knockd_shared::QueueEvent;

use super::Ctx;
use crate::{
    exit::{CliError, Exit},
    sse::SseParser,
};

pub async fn run(ctx: &Ctx) -> Result<(), CliError> {
    let mut response = ctx.client()?.events().await?;
    if std::io::stderr().is_terminal() {
        ctx.out.note("watching the knock queue (Ctrl-C to stop)");
    }
    let mut parser = SseParser::default();
    // Interrupting is the normal way to stop: exit 0.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let chunk = tokio::select! {
            _ = &mut interrupted => return Ok(()),
            chunk = response.chunk() => chunk,
        };
        let bytes = match chunk {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Err(CliError::new(Exit::Unreachable, "knockd ended the event stream"));
            }
            Err(e) => {
                return Err(CliError::new(
                    Exit::Unreachable,
                    format!("lost the event stream: {e}"),
                ));
            }
        };
        for data in parser.push(&bytes) {
            match serde_json::from_str::<QueueEvent>(&data) {
                Ok(event) => ctx.out.json_line(&event)?,
                Err(e) => {
                    ctx.out.error(&format!("ignoring an event knockctl does not understand: {e}"))
                }
            }
        }
    }
}
