//! `knockctl show ID`: one knock with its decisions and the knocker's history.

use knockd_shared::{Decision, KnockDetail, KnockSummary};

use super::Ctx;
use crate::{
    exit::CliError,
    output::{Cell, Output, Style, Table, age, escape, utc},
};

/// History rows shown in text mode (`--json` has them all).
const HISTORY_ROWS: usize = 10;

pub async fn run(ctx: &Ctx, id: i64) -> Result<(), CliError> {
    let detail = ctx.client()?.knock(id).await?;
    if ctx.out.json {
        return ctx.out.json(&detail);
    }
    ctx.out.write(&render(&ctx.out, &detail))
}

fn render(out: &Output, d: &KnockDetail) -> String {
    let k = &d.knock;
    let mut text = format!(
        "{} {}  {}\n",
        out.paint(Style::Bold, "knock"),
        out.paint(Style::Bold, &k.id.to_string()),
        out.paint(Style::for_status(&k.status), &k.status)
    );
    let room = match &k.room_name {
        Some(name) => format!("{}  ({})", escape(name), escape(&k.room_id)),
        None => escape(&k.room_id),
    };
    let user = match &k.display_name {
        Some(name) => format!("{}  \"{}\"", escape(&k.user_id), escape(name)),
        None => escape(&k.user_id),
    };
    let mut field = |label: &str, value: &str| {
        text.push_str(&format!("  {}{value}\n", out.paint(Style::Dim, &format!("{label:<10}"))));
    };
    field("room", &room);
    field("user", &user);
    field("server", &escape(&k.origin_server));
    field("received", &format!("{} ({} ago)", utc(k.received_at_ms), age(k.received_at_ms)));
    field("event", &escape(&k.event_id));
    if let Some(avatar) = &k.avatar_url {
        field("avatar", &escape(avatar));
    }
    if k.content_redacted {
        field("note", "content hash mismatch: the event was redacted (reason and name lost)");
    } else {
        field("reason", &k.reason.as_deref().map(escape).unwrap_or_else(|| "(none)".into()));
    }
    section(&mut text, out, "decisions", decisions(&d.decisions));
    section(&mut text, out, "this user's other knocks on this room", knocks(&d.user_history));
    section(&mut text, out, "recent knocks from this server", knocks(&d.server_history));
    text
}

fn section(text: &mut String, out: &Output, title: &str, table: Table) {
    text.push('\n');
    if table.is_empty() {
        text.push_str(&format!("{}: none\n", out.paint(Style::Bold, title)));
    } else {
        text.push_str(&format!("{}:\n", out.paint(Style::Bold, title)));
        text.push_str(&out.render(&table));
    }
}

fn decisions(decisions: &[Decision]) -> Table {
    let mut table =
        Table::new(&[("WHEN", 20), ("ACTION", 7), ("BY", 32), ("DELIVERY", 10), ("REASON", 200)]);
    for d in decisions.iter().take(HISTORY_ROWS) {
        let delivery = match &d.delivery_error {
            Some(e) => format!("{} ({e})", d.delivery),
            None => d.delivery.clone(),
        };
        table.row(vec![
            Cell::new(&utc(d.decided_at_ms)),
            Cell::new(&d.action),
            Cell::new(&d.actor),
            Cell::new(&delivery),
            Cell::new(d.reason.as_deref().unwrap_or("")),
        ]);
    }
    table
}

fn knocks(knocks: &[KnockSummary]) -> Table {
    let mut table = Table::new(&[
        ("ID", 10),
        ("STATUS", 16),
        ("USER", 36),
        ("ROOM", 24),
        ("AGE", 5),
        ("REASON", 200),
    ]);
    for k in knocks.iter().take(HISTORY_ROWS) {
        table.row(vec![
            Cell::new(&k.id.to_string()),
            Cell::styled(&k.status, Style::for_status(&k.status)),
            Cell::new(&k.user_id),
            Cell::new(k.room_name.as_deref().unwrap_or(&k.room_id)),
            Cell::styled(&age(k.received_at_ms), Style::Dim),
            Cell::new(k.reason.as_deref().unwrap_or("")),
        ]);
    }
    table
}
