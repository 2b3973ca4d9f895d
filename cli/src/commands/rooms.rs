//! `knockctl rooms …`: the rooms knockd hosts.

use knockd_shared::{CreateRoomRequest, EventIds, RoomDetail, RoomSettings, RoomSummary};

use super::Ctx;
use crate::{
    cli::{CreateArgs, RoomsCommand, SettingsArgs},
    exit::CliError,
    output::{Cell, Output, Style, Table, escape, truncate, utc},
};

pub async fn run(ctx: &Ctx, command: RoomsCommand) -> Result<(), CliError> {
    match command {
        RoomsCommand::List => list(ctx).await,
        RoomsCommand::Show { room_id } => show(ctx, &room_id).await,
        RoomsCommand::Create(args) => create(ctx, args).await,
        RoomsCommand::Set { room_id, settings } => {
            let settings = room_settings(settings);
            if settings == RoomSettings::default() {
                return Err(CliError::usage("nothing to change: give at least one setting flag"));
            }
            changed(ctx, ctx.client()?.update_room(&room_id, &settings).await?)
        }
        RoomsCommand::AddMember { room_id, user_id, power_level } => {
            changed(ctx, ctx.client()?.add_member(&room_id, &user_id, power_level).await?)
        }
        RoomsCommand::RemoveMember { room_id, user_id } => {
            changed(ctx, ctx.client()?.remove_member(&room_id, &user_id).await?)
        }
        RoomsCommand::Power { room_id, user_id, level } => {
            changed(ctx, ctx.client()?.set_power_level(&room_id, &user_id, level).await?)
        }
    }
}

fn room_settings(s: SettingsArgs) -> RoomSettings {
    RoomSettings {
        name: s.name,
        topic: s.topic,
        avatar_url: s.avatar_url,
        alias: s.alias,
        join_rule: s.join_rule,
        allow: s.allow,
        published: s.published,
    }
}

async fn list(ctx: &Ctx) -> Result<(), CliError> {
    let client = ctx.client()?;
    let mut rooms: Vec<RoomSummary> = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let page = client.list_rooms(from.as_deref(), Some(1000)).await?;
        rooms.extend(page.rooms);
        match page.next {
            Some(next) => from = Some(next),
            None => break,
        }
    }
    if ctx.out.json {
        return ctx.out.json(&rooms);
    }
    if rooms.is_empty() {
        ctx.out.note("no rooms yet (create one with `knockctl rooms create`)");
        return Ok(());
    }
    let mut table = Table::new(&[
        ("ROOM ID", 48),
        ("VERSION", 7),
        ("JOIN RULE", 16),
        ("JOINED", 6),
        ("KNOCKING", 8),
        ("NAME", 200),
    ]);
    for r in &rooms {
        table.row(vec![
            Cell::new(&r.room_id),
            Cell::new(&r.room_version),
            Cell::new(&r.join_rule),
            Cell::new(&r.joined_members.to_string()),
            Cell::new(&r.knocking_members.to_string()),
            Cell::new(r.name.as_deref().unwrap_or("")),
        ]);
    }
    ctx.out.table(&table)
}

async fn show(ctx: &Ctx, room_id: &str) -> Result<(), CliError> {
    let room = ctx.client()?.room(room_id).await?;
    if ctx.out.json {
        return ctx.out.json(&room);
    }
    ctx.out.write(&render(&ctx.out, &room))
}

fn render(out: &Output, room: &RoomDetail) -> String {
    let r = &room.summary;
    let mut text = format!(
        "{}  version {}  {}\n",
        out.paint(Style::Bold, &escape(&r.room_id)),
        escape(&r.room_version),
        escape(&r.join_rule)
    );
    let mut field = |label: &str, value: Option<String>| {
        if let Some(value) = value {
            text.push_str(&format!(
                "  {}{value}\n",
                out.paint(Style::Dim, &format!("{label:<12}"))
            ));
        }
    };
    field("name", r.name.as_deref().map(escape));
    field("topic", r.topic.as_deref().map(escape));
    field("alias", r.alias.as_deref().map(escape));
    field("avatar", r.avatar_url.as_deref().map(escape));
    field("allow", (!r.allow.is_empty()).then(|| escape(&r.allow.join(", "))));
    field("history", r.history_visibility.as_deref().map(escape));
    field("creator", Some(format!("{} at {}", escape(&r.creator), utc(r.created_ms))));
    field("members", Some(format!("{} joined, {} knocking", r.joined_members, r.knocking_members)));
    let forks = if r.forward_extremities > 1 { " (the room graph has a fork)" } else { "" };
    field("extremities", Some(format!("{}{forks}", r.forward_extremities)));
    let mut table =
        Table::new(&[("TYPE", 32), ("STATE KEY", 40), ("SENDER", 32), ("CONTENT", 1000)]);
    for s in &room.state {
        let content = serde_json::to_string(&s.content).unwrap_or_default();
        table.row(vec![
            Cell::new(&s.event_type),
            Cell::new(&s.state_key),
            Cell::new(&s.sender),
            Cell::styled(&truncate(&content, 200), Style::Dim),
        ]);
    }
    text.push_str(&format!(
        "\n{} ({} events):\n",
        out.paint(Style::Bold, "state"),
        room.state.len()
    ));
    text.push_str(&out.render(&table));
    text
}

async fn create(ctx: &Ctx, args: CreateArgs) -> Result<(), CliError> {
    let s = room_settings(args.settings);
    let request = CreateRoomRequest {
        room_version: Some(args.room_version),
        name: s.name,
        topic: s.topic,
        avatar_url: s.avatar_url,
        alias: s.alias,
        join_rule: s.join_rule,
        allow: s.allow,
        history_visibility: args.history_visibility,
        published: s.published.unwrap_or(false),
    };
    let created = ctx.client()?.create_room(&request).await?;
    if ctx.out.json {
        return ctx.out.json(&created);
    }
    // The room ID alone on stdout, so `ROOM=$(knockctl rooms create …)` works.
    ctx.out.line(&escape(&created.room_id))?;
    ctx.out.note(&format!("created a version {} room", escape(&created.room_version)));
    Ok(())
}

/// The events a change produced: JSON, or one event ID per line.
fn changed(ctx: &Ctx, ids: EventIds) -> Result<(), CliError> {
    if ctx.out.json {
        return ctx.out.json(&ids);
    }
    if ids.event_ids.is_empty() {
        ctx.out.note("nothing changed");
    }
    for id in &ids.event_ids {
        ctx.out.line(&escape(id))?;
    }
    Ok(())
}
