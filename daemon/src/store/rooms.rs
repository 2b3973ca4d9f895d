//! Rooms we host.

use diesel::prelude::*;

use super::{DbConn, StoreError, optional, schema::rooms};

#[derive(Clone, Debug, Queryable)]
pub struct RoomRow {
    pub room_id: String,
    pub room_version: String,
    pub creator: String,
    pub created_ms: i64,
    pub is_public: bool,
    pub current_group: Option<i64>,
    /// Bumped by every write to the room's state (the room engine's cache check).
    pub version: i64,
}

pub fn insert(conn: &mut DbConn, room: &RoomRow) -> Result<(), StoreError> {
    diesel::insert_into(rooms::table)
        .values((
            rooms::room_id.eq(&room.room_id),
            rooms::room_version.eq(&room.room_version),
            rooms::creator.eq(&room.creator),
            rooms::created_ms.eq(room.created_ms),
            rooms::is_public.eq(room.is_public),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn get(conn: &mut DbConn, room_id: &str) -> Result<Option<RoomRow>, StoreError> {
    optional(rooms::table.find(room_id).first(conn))
}

/// Rooms ordered by creation, after the cursor `(created_ms, room_id)`, among `only` (`None`:
/// every room).
pub fn list(
    conn: &mut DbConn,
    only: Option<&[String]>,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<RoomRow>, StoreError> {
    let mut query = rooms::table.into_boxed();
    if let Some(only) = only {
        query = query.filter(rooms::room_id.eq_any(only));
    }
    if let Some((ms, id)) = after {
        query = query.filter(
            rooms::created_ms.gt(ms).or(rooms::created_ms.eq(ms).and(rooms::room_id.gt(id))),
        );
    }
    Ok(query.order((rooms::created_ms.asc(), rooms::room_id.asc())).limit(limit).load(conn)?)
}

/// Takes the room's row lock for the rest of the transaction (PostgreSQL; SQLite has one writer)
/// and reads the room's state version; `None` when the room is not hosted here.
pub fn lock_version(conn: &mut DbConn, room_id: &str) -> Result<Option<i64>, StoreError> {
    let query = rooms::table.find(room_id).select(rooms::version);
    match conn {
        super::DbConn::Pg(c) => optional(query.for_update().first::<i64>(c)),
        super::DbConn::Sqlite(c) => optional(query.first::<i64>(c)),
    }
}

/// Records that the room's state changed: instances holding an older version reload it.
pub fn set_version(conn: &mut DbConn, room_id: &str, version: i64) -> Result<(), StoreError> {
    diesel::update(rooms::table.find(room_id)).set(rooms::version.eq(version)).execute(conn)?;
    Ok(())
}

/// `(type, state_key, event_id, membership)`
pub type CurrentRow = (String, String, String, Option<String>);

/// Every entry of the room's current state.
pub fn current_state_rows(conn: &mut DbConn, room_id: &str) -> Result<Vec<CurrentRow>, StoreError> {
    use super::schema::current_state as cs;
    Ok(cs::table
        .filter(cs::room_id.eq(room_id))
        .select((cs::event_type, cs::state_key, cs::event_id, cs::membership))
        .load(conn)?)
}

/// `(server, joined member count)` of every server with a joined member.
pub fn joined_counts(conn: &mut DbConn, room_id: &str) -> Result<Vec<(String, i64)>, StoreError> {
    use super::schema::room_servers as rs;
    Ok(rs::table
        .filter(rs::room_id.eq(room_id))
        .filter(rs::joined.gt(0))
        .select((rs::server_name, rs::joined))
        .load(conn)?)
}

/// The state group equal to the room's current state.
pub fn current_group(conn: &mut DbConn, room_id: &str) -> Result<Option<i64>, StoreError> {
    Ok(rooms::table.find(room_id).select(rooms::current_group).first(conn)?)
}

pub fn set_current_group(
    conn: &mut DbConn,
    room_id: &str,
    group: Option<i64>,
) -> Result<(), StoreError> {
    diesel::update(rooms::table.find(room_id)).set(rooms::current_group.eq(group)).execute(conn)?;
    Ok(())
}

/// `(joined, knocking)` member counts from current state.
pub fn membership_counts(conn: &mut DbConn, room_id: &str) -> Result<(i64, i64), StoreError> {
    use super::schema::current_state as cs;
    let count = |conn: &mut DbConn, m: &str| -> Result<i64, StoreError> {
        Ok(cs::table
            .filter(cs::room_id.eq(room_id))
            .filter(cs::membership.eq(m))
            .count()
            .get_result(conn)?)
    };
    Ok((count(conn, "join")?, count(conn, "knock")?))
}

/// Every event ID in the room's current state.
pub fn current_state_ids(conn: &mut DbConn, room_id: &str) -> Result<Vec<String>, StoreError> {
    use super::schema::current_state as cs;
    Ok(cs::table.filter(cs::room_id.eq(room_id)).select(cs::event_id).load(conn)?)
}

/// Servers with at least one joined member (kept by `add_joined`; no member scan).
pub fn joined_servers(conn: &mut DbConn, room_id: &str) -> Result<Vec<String>, StoreError> {
    use super::schema::room_servers as rs;
    Ok(rs::table
        .filter(rs::room_id.eq(room_id))
        .filter(rs::joined.gt(0))
        .order(rs::server_name.asc())
        .select(rs::server_name)
        .load(conn)?)
}

/// Adds `delta` to a server's joined-member count in a room.
pub fn add_joined(
    conn: &mut DbConn,
    room_id: &str,
    server: &str,
    delta: i64,
) -> Result<(), StoreError> {
    use super::schema::room_servers as rs;
    crate::with_backend!(conn, |c| diesel::insert_into(rs::table)
        .values((rs::room_id.eq(room_id), rs::server_name.eq(server), rs::joined.eq(delta.max(0))))
        .on_conflict((rs::room_id, rs::server_name))
        .do_update()
        .set(rs::joined.eq(rs::joined + delta))
        .execute(c))?;
    Ok(())
}

/// Joined members of our own server.
pub fn local_joined_members(
    conn: &mut DbConn,
    room_id: &str,
    our_server: &str,
) -> Result<Vec<String>, StoreError> {
    use super::schema::current_state as cs;
    let users: Vec<String> = cs::table
        .filter(cs::room_id.eq(room_id))
        .filter(cs::membership.eq("join"))
        .select(cs::state_key)
        .load(conn)?;
    Ok(users
        .into_iter()
        .filter(|u| u.split_once(':').is_some_and(|(_, s)| s == our_server))
        .collect())
}

pub fn set_public(conn: &mut DbConn, room_id: &str, public: bool) -> Result<(), StoreError> {
    diesel::update(rooms::table.find(room_id)).set(rooms::is_public.eq(public)).execute(conn)?;
    Ok(())
}

/// Rooms listed in the public directory.
pub fn public_rooms(conn: &mut DbConn) -> Result<Vec<String>, StoreError> {
    Ok(rooms::table
        .filter(rooms::is_public.eq(true))
        .order(rooms::created_ms.asc())
        .select(rooms::room_id)
        .load(conn)?)
}

/// Every room's canonical alias event ID, for alias lookups (rooms are few).
pub fn alias_events(conn: &mut DbConn) -> Result<Vec<(String, String)>, StoreError> {
    use super::schema::current_state as cs;
    Ok(cs::table
        .filter(cs::event_type.eq("m.room.canonical_alias"))
        .filter(cs::state_key.eq(""))
        .select((cs::room_id, cs::event_id))
        .load(conn)?)
}

/// A room where a user is joined, with what their power there is read from.
#[derive(Clone, Debug)]
pub struct JoinedRoom {
    pub room_id: String,
    pub room_version: String,
    /// The stored PDU text of the current `m.room.create`.
    pub create: Option<String>,
    /// The stored PDU text of the current `m.room.power_levels`, if the room has one.
    pub power_levels: Option<String>,
}

/// Every room whose current state has the user joined (two queries: rooms are few, and each one
/// is probed by its own key, never by scanning the members of all rooms).
pub fn joined_with_power(conn: &mut DbConn, user_id: &str) -> Result<Vec<JoinedRoom>, StoreError> {
    use super::schema::{current_state as cs, events as ev};
    let joined: Vec<(String, String)> = rooms::table
        .inner_join(
            cs::table.on(cs::room_id
                .eq(rooms::room_id)
                .and(cs::event_type.eq("m.room.member"))
                .and(cs::state_key.eq(user_id))),
        )
        .filter(cs::membership.eq("join"))
        .select((rooms::room_id, rooms::room_version))
        .order(rooms::room_id.asc())
        .load(conn)?;
    if joined.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = joined.iter().map(|(id, _)| id.as_str()).collect();
    let pdus: Vec<(String, String, String)> = cs::table
        .inner_join(ev::table.on(ev::event_id.eq(cs::event_id)))
        .filter(cs::room_id.eq_any(&ids))
        .filter(cs::event_type.eq_any(["m.room.create", "m.room.power_levels"]))
        .filter(cs::state_key.eq(""))
        .select((cs::room_id, cs::event_type, ev::pdu))
        .load(conn)?;
    let pdu_of = |room: &str, event_type: &str| {
        pdus.iter().find(|(r, t, _)| r == room && t == event_type).map(|(_, _, p)| p.clone())
    };
    Ok(joined
        .into_iter()
        .map(|(room_id, room_version)| JoinedRoom {
            create: pdu_of(&room_id, "m.room.create"),
            power_levels: pdu_of(&room_id, "m.room.power_levels"),
            room_id,
            room_version,
        })
        .collect())
}

/// A user's membership in a room's current state, if any.
pub fn membership(
    conn: &mut DbConn,
    room_id: &str,
    user_id: &str,
) -> Result<Option<String>, StoreError> {
    use super::schema::current_state as cs;
    Ok(super::optional(
        cs::table
            .filter(cs::room_id.eq(room_id))
            .filter(cs::event_type.eq("m.room.member"))
            .filter(cs::state_key.eq(user_id))
            .select(cs::membership)
            .first::<Option<String>>(conn),
    )?
    .flatten())
}
