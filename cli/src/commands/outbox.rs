//! `knockctl outbox`: the outbound federation queue.

use super::Ctx;
use crate::{
    cli::OutboxCommand,
    exit::CliError,
    output::{Cell, Style, Table, age},
};

pub async fn run(ctx: &Ctx, action: Option<&OutboxCommand>) -> Result<(), CliError> {
    let done = match action {
        None => return status(ctx).await,
        Some(OutboxCommand::Retry { id }) => ctx.client()?.outbox_retry(*id).await?,
        Some(OutboxCommand::Drop { id }) => ctx.client()?.outbox_drop(*id).await?,
    };
    if ctx.out.json {
        return ctx.out.json(&done);
    }
    ctx.out.line(&format!("outbox item {} {}", done.id, done.status))
}

async fn status(ctx: &Ctx) -> Result<(), CliError> {
    let status = ctx.client()?.outbox().await?;
    if ctx.out.json {
        return ctx.out.json(&status);
    }
    ctx.out.line(&format!("pending: {}", status.pending))?;
    ctx.out.line(&format!("parked:  {}", status.parked.len()))?;
    if status.parked.is_empty() {
        return Ok(());
    }
    let mut table = Table::new(&[
        ("ID", 10),
        ("DESTINATION", 32),
        ("KIND", 8),
        ("QUEUED", 6),
        ("PARKED", 6),
        ("ERROR", 1000),
    ]);
    for item in &status.parked {
        table.row(vec![
            Cell::new(&item.id.to_string()),
            Cell::new(&item.destination),
            Cell::new(&item.kind),
            Cell::styled(&age(item.created_ms), Style::Dim),
            Cell::styled(&item.parked_ms.map(age).unwrap_or_default(), Style::Dim),
            Cell::styled(item.last_error.as_deref().unwrap_or(""), Style::Red),
        ]);
    }
    ctx.out.line("")?;
    ctx.out.table(&table)
}
