//! `knockctl list`: the knock queue, following cursors up to `--limit`.

use knockd_shared::{AdminClient, KnockQuery, KnockSummary};

use super::Ctx;
use crate::{
    cli::ListArgs,
    exit::CliError,
    output::{Cell, Style, Table, age},
};

/// The API's largest page.
const PAGE: usize = 1000;

pub async fn run(ctx: &Ctx, args: &ListArgs) -> Result<(), CliError> {
    let client = ctx.client()?;
    let (knocks, more) = fetch(&client, args).await?;
    if more {
        ctx.out.note(&format!(
            "showing the first {} knocks; there are more (raise --limit, or 0 for all)",
            knocks.len()
        ));
    }
    if ctx.out.json {
        return ctx.out.json(&knocks);
    }
    if knocks.is_empty() {
        let what = if args.status == "all" { String::new() } else { format!("{} ", args.status) };
        ctx.out.note(&format!("no {what}knocks"));
        return Ok(());
    }
    ctx.out.table(&table(&knocks, args.status != "pending"))
}

/// Up to `--limit` knocks (all with 0), and whether there are more.
async fn fetch(
    client: &AdminClient,
    args: &ListArgs,
) -> Result<(Vec<KnockSummary>, bool), CliError> {
    let mut knocks = Vec::new();
    let mut from = None;
    loop {
        let want = if args.limit == 0 { PAGE } else { (args.limit - knocks.len()).min(PAGE) };
        let page = client
            .list_knocks(&KnockQuery {
                status: Some(args.status.clone()),
                room_id: args.room.clone(),
                server: args.server.clone(),
                user_id: args.user.clone(),
                from,
                limit: Some(want as u32),
            })
            .await?;
        knocks.extend(page.knocks);
        match page.next {
            None => return Ok((knocks, false)),
            Some(_) if args.limit != 0 && knocks.len() >= args.limit => {
                return Ok((knocks, true));
            }
            Some(next) => from = Some(next),
        }
    }
}

fn table(knocks: &[KnockSummary], with_status: bool) -> Table {
    let mut columns = vec![("ID", 10)];
    if with_status {
        columns.push(("STATUS", 16));
    }
    columns.extend([("ROOM", 24), ("USER", 36), ("SERVER", 24), ("AGE", 5), ("REASON", 1000)]);
    let mut table = Table::new(&columns);
    for k in knocks {
        let mut row = vec![Cell::new(&k.id.to_string())];
        if with_status {
            row.push(Cell::styled(&k.status, Style::for_status(&k.status)));
        }
        let reason = match (&k.reason, k.content_redacted) {
            (_, true) => Cell::styled("(redacted)", Style::Dim),
            (Some(r), false) => Cell::new(r),
            (None, false) => Cell::new(""),
        };
        row.extend([
            Cell::new(k.room_name.as_deref().unwrap_or(&k.room_id)),
            Cell::new(&k.user_id),
            Cell::new(&k.origin_server),
            Cell::styled(&age(k.received_at_ms), Style::Dim),
            reason,
        ]);
        table.row(row);
    }
    table
}
