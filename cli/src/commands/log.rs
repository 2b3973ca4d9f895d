//! `knockctl log`: the decision log, newest first, following cursors up to `--limit`.

use knockd_shared::{Decision, DecisionQuery};

use super::Ctx;
use crate::{
    cli::LogArgs,
    exit::CliError,
    output::{Cell, Style, Table, utc},
};

/// The API's largest page.
const PAGE: usize = 1000;

pub async fn run(ctx: &Ctx, args: &LogArgs) -> Result<(), CliError> {
    let client = ctx.client()?;
    let mut decisions: Vec<Decision> = Vec::new();
    let mut from = None;
    let mut more = false;
    loop {
        let want = if args.limit == 0 { PAGE } else { (args.limit - decisions.len()).min(PAGE) };
        let page = client
            .decisions(&DecisionQuery {
                room_id: args.room.clone(),
                actor: args.actor.clone(),
                action: args.action.clone(),
                knock_id: args.knock,
                from,
                limit: Some(want as u32),
            })
            .await?;
        decisions.extend(page.decisions);
        match page.next {
            None => break,
            Some(_) if args.limit != 0 && decisions.len() >= args.limit => {
                more = true;
                break;
            }
            Some(next) => from = Some(next),
        }
    }
    if more {
        ctx.out.note(&format!(
            "showing the latest {} decisions; there are more (raise --limit, or 0 for all)",
            decisions.len()
        ));
    }
    if ctx.out.json {
        return ctx.out.json(&decisions);
    }
    if decisions.is_empty() {
        ctx.out.note("no decisions");
        return Ok(());
    }
    let mut table = Table::new(&[
        ("WHEN", 20),
        ("ACTION", 7),
        ("KNOCK", 8),
        ("USER", 36),
        ("BY", 32),
        ("DELIVERY", 10),
        ("REASON", 1000),
    ]);
    for d in &decisions {
        let style = if d.action == "approve" { Style::Green } else { Style::Red };
        let delivery_style = match d.delivery.as_str() {
            "failed" | "dropped" => Style::Red,
            "pending" => Style::Yellow,
            _ => Style::Dim,
        };
        table.row(vec![
            Cell::new(&utc(d.decided_at_ms)),
            Cell::styled(&d.action, style),
            Cell::new(&d.knock_id.to_string()),
            Cell::new(d.user_id.as_deref().unwrap_or("")),
            Cell::new(&d.actor),
            Cell::styled(&d.delivery, delivery_style),
            Cell::new(d.reason.as_deref().unwrap_or("")),
        ]);
    }
    ctx.out.table(&table)
}
