//! The state at every event, as state groups with deltas.
//!
//! A group is its parent's state plus a delta. Groups are arranged in chains: a group whose parent
//! is the tip of a chain extends that chain; any other group starts a new chain whose base is the
//! parent. A lookup of one `(type, state_key)` is one indexed query per chain on the way to the
//! root (forks are shallow), so storing or reading state never loads the whole room.

use std::collections::BTreeMap;

use diesel::prelude::*;

use super::{DbConn, StoreError, optional, schema::*};
use crate::with_backend;

/// `(event type, state key)`
pub type StateKey = (String, String);
/// A full state map.
pub type StateMap = BTreeMap<StateKey, String>;

#[derive(Clone, Copy, Debug)]
struct GroupPos {
    chain_id: i64,
    chain_pos: i64,
}

fn group_pos(conn: &mut DbConn, group: i64) -> Result<GroupPos, StoreError> {
    let (chain_id, chain_pos) = state_groups::table
        .find(group)
        .select((state_groups::chain_id, state_groups::chain_pos))
        .first::<(i64, i64)>(conn)
        .map_err(|e| match e {
            diesel::result::Error::NotFound => {
                StoreError::Corrupt(format!("state group {group} missing"))
            }
            e => e.into(),
        })?;
    Ok(GroupPos { chain_id, chain_pos })
}

/// Creates a group = `parent` + `delta`, and returns its id.
pub fn new_group(
    conn: &mut DbConn,
    room_id: &str,
    parent: Option<i64>,
    delta: &[(StateKey, String)],
) -> Result<i64, StoreError> {
    // Extend the parent's chain when the parent is its tip; else start a chain based on it.
    let extend = match parent {
        Some(p) => {
            let pos = group_pos(conn, p)?;
            let tip: i64 =
                state_chains::table.find(pos.chain_id).select(state_chains::tip_pos).first(conn)?;
            (tip == pos.chain_pos).then_some(pos)
        }
        None => None,
    };
    let (chain_id, chain_pos) = match extend {
        Some(pos) => {
            diesel::update(state_chains::table.find(pos.chain_id))
                .set(state_chains::tip_pos.eq(pos.chain_pos + 1))
                .execute(conn)?;
            (pos.chain_id, pos.chain_pos + 1)
        }
        None => {
            let chain_id: i64 = with_backend!(conn, |c| diesel::insert_into(state_chains::table)
                .values((
                    state_chains::room_id.eq(room_id),
                    state_chains::base_group.eq(parent),
                    state_chains::tip_pos.eq(0i64),
                ))
                .returning(state_chains::chain_id)
                .get_result(c))?;
            (chain_id, 0)
        }
    };
    let group_id: i64 = with_backend!(conn, |c| diesel::insert_into(state_groups::table)
        .values((
            state_groups::room_id.eq(room_id),
            state_groups::chain_id.eq(chain_id),
            state_groups::chain_pos.eq(chain_pos),
            state_groups::parent_group.eq(parent),
        ))
        .returning(state_groups::group_id)
        .get_result(c))?;
    for ((event_type, state_key), event_id) in delta {
        diesel::insert_into(state_deltas::table)
            .values((
                state_deltas::chain_id.eq(chain_id),
                state_deltas::event_type.eq(event_type),
                state_deltas::state_key.eq(state_key),
                state_deltas::chain_pos.eq(chain_pos),
                state_deltas::group_id.eq(group_id),
                state_deltas::event_id.eq(event_id),
            ))
            .execute(conn)?;
    }
    Ok(group_id)
}

/// The event holding `(event_type, state_key)` in the state of `group`.
pub fn lookup(
    conn: &mut DbConn,
    group: i64,
    event_type: &str,
    state_key: &str,
) -> Result<Option<String>, StoreError> {
    let mut at = Some(group_pos(conn, group)?);
    while let Some(pos) = at {
        let found = optional(
            state_deltas::table
                .filter(state_deltas::chain_id.eq(pos.chain_id))
                .filter(state_deltas::event_type.eq(event_type))
                .filter(state_deltas::state_key.eq(state_key))
                .filter(state_deltas::chain_pos.le(pos.chain_pos))
                .order(state_deltas::chain_pos.desc())
                .select(state_deltas::event_id)
                .first::<String>(conn),
        )?;
        if found.is_some() {
            return Ok(found);
        }
        at = chain_base(conn, pos.chain_id)?;
    }
    Ok(None)
}

fn chain_base(conn: &mut DbConn, chain_id: i64) -> Result<Option<GroupPos>, StoreError> {
    let base: Option<i64> =
        state_chains::table.find(chain_id).select(state_chains::base_group).first(conn)?;
    base.map(|g| group_pos(conn, g)).transpose()
}

/// The whole state of `group`. Reads every delta on the way to the root: for endpoints that
/// must answer with full state, never for the per-event path.
pub fn full_state(conn: &mut DbConn, group: i64) -> Result<StateMap, StoreError> {
    let mut state = StateMap::new();
    let mut at = Some(group_pos(conn, group)?);
    while let Some(pos) = at {
        let rows: Vec<(String, String, String)> = state_deltas::table
            .filter(state_deltas::chain_id.eq(pos.chain_id))
            .filter(state_deltas::chain_pos.le(pos.chain_pos))
            .order(state_deltas::chain_pos.desc())
            .select((state_deltas::event_type, state_deltas::state_key, state_deltas::event_id))
            .load(conn)?;
        for (t, k, e) in rows {
            state.entry((t, k)).or_insert(e);
        }
        at = chain_base(conn, pos.chain_id)?;
    }
    Ok(state)
}

/// `(chain_id, position)` of every chain a group's state draws on, from the group up to the root.
pub fn ancestry(conn: &mut DbConn, group: i64) -> Result<Vec<(i64, i64)>, StoreError> {
    let mut out = Vec::new();
    let mut at = Some(group_pos(conn, group)?);
    while let Some(pos) = at {
        out.push((pos.chain_id, pos.chain_pos));
        at = chain_base(conn, pos.chain_id)?;
    }
    Ok(out)
}

/// The keys changed in a chain at positions `lo < pos <= hi`.
pub fn keys_changed(
    conn: &mut DbConn,
    chain_id: i64,
    lo: i64,
    hi: i64,
) -> Result<Vec<(StateKey, String)>, StoreError> {
    let rows: Vec<(String, String, String)> = state_deltas::table
        .filter(state_deltas::chain_id.eq(chain_id))
        .filter(state_deltas::chain_pos.gt(lo))
        .filter(state_deltas::chain_pos.le(hi))
        .order(state_deltas::chain_pos.desc())
        .select((state_deltas::event_type, state_deltas::state_key, state_deltas::event_id))
        .load(conn)?;
    Ok(rows.into_iter().map(|(t, k, e)| ((t, k), e)).collect())
}

/// Whether `(event_type, state_key)` changed in a chain at positions `lo < pos <= hi`.
pub fn key_changed(
    conn: &mut DbConn,
    chain_id: i64,
    lo: i64,
    hi: i64,
    event_type: &str,
    state_key: &str,
) -> Result<bool, StoreError> {
    let found = optional(
        state_deltas::table
            .filter(state_deltas::chain_id.eq(chain_id))
            .filter(state_deltas::event_type.eq(event_type))
            .filter(state_deltas::state_key.eq(state_key))
            .filter(state_deltas::chain_pos.gt(lo))
            .filter(state_deltas::chain_pos.le(hi))
            .select(state_deltas::chain_pos)
            .first::<i64>(conn),
    )?;
    Ok(found.is_some())
}
