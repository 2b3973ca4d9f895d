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

/// `(chain, position)` of every chain a group's state draws on, from the group's own up to the
/// root.
pub type Ancestry = Vec<(i64, i64)>;

/// Creates a group = `parent` + `delta`, and returns its id.
pub fn new_group(
    conn: &mut DbConn,
    room_id: &str,
    parent: Option<i64>,
    delta: &[(StateKey, String)],
) -> Result<i64, StoreError> {
    let parent_ancestry = parent.map(|p| ancestry(conn, p)).transpose()?;
    let parent = parent.zip(parent_ancestry);
    let parent = parent.as_ref().map(|(id, anc)| (*id, anc.as_slice()));
    Ok(new_group_placed(conn, room_id, parent, &|_| None, delta)?.0)
}

/// [`new_group`] for a caller that knows the parent's ancestry and, through `tip_of`, the tip
/// of chains it made (the store is asked for the others). Returns the new group's id and
/// ancestry.
pub fn new_group_placed(
    conn: &mut DbConn,
    room_id: &str,
    parent: Option<(i64, &[(i64, i64)])>,
    tip_of: &dyn Fn(i64) -> Option<i64>,
    delta: &[(StateKey, String)],
) -> Result<(i64, Ancestry), StoreError> {
    let parent_ancestry = parent.map(|(_, a)| a).unwrap_or_default();
    let parent = parent.map(|(id, _)| id);
    // Extend the parent's chain when the parent is its tip; else start a chain based on it.
    let extend = match parent_ancestry.first() {
        Some(&(chain_id, chain_pos)) => {
            let tip: i64 = match tip_of(chain_id) {
                Some(tip) => tip,
                None => {
                    state_chains::table.find(chain_id).select(state_chains::tip_pos).first(conn)?
                }
            };
            (tip == chain_pos).then_some((chain_id, chain_pos))
        }
        None => None,
    };
    let (chain_id, chain_pos, inherited) = match extend {
        Some((chain_id, pos)) => {
            diesel::update(state_chains::table.find(chain_id))
                .set(state_chains::tip_pos.eq(pos + 1))
                .execute(conn)?;
            (chain_id, pos + 1, &parent_ancestry[1..])
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
            (chain_id, 0, parent_ancestry)
        }
    };
    let mut own = vec![(chain_id, chain_pos)];
    own.extend_from_slice(inherited);
    let ancestry_text = format_ancestry(&own);
    let group_id: i64 = with_backend!(conn, |c| diesel::insert_into(state_groups::table)
        .values((
            state_groups::room_id.eq(room_id),
            state_groups::chain_id.eq(chain_id),
            state_groups::chain_pos.eq(chain_pos),
            state_groups::parent_group.eq(parent),
            state_groups::ancestry.eq(&ancestry_text),
        ))
        .returning(state_groups::group_id)
        .get_result(c))?;
    // One statement for the whole delta on PostgreSQL (a merge carries every key of the other
    // branches).
    for rows in delta.chunks(500) {
        let rows: Vec<_> = rows
            .iter()
            .map(|((event_type, state_key), event_id)| {
                (
                    state_deltas::chain_id.eq(chain_id),
                    state_deltas::event_type.eq(event_type),
                    state_deltas::state_key.eq(state_key),
                    state_deltas::chain_pos.eq(chain_pos),
                    state_deltas::group_id.eq(group_id),
                    state_deltas::event_id.eq(event_id),
                )
            })
            .collect();
        match conn {
            DbConn::Pg(c) => {
                diesel::insert_into(state_deltas::table).values(&rows).execute(c)?;
            }
            // In-process: one statement per row costs no round trip.
            DbConn::Sqlite(c) => {
                for row in rows {
                    diesel::insert_into(state_deltas::table).values(row).execute(c)?;
                }
            }
        }
    }
    Ok((group_id, own))
}

/// The position of a chain's last group.
pub fn chain_tip(conn: &mut DbConn, chain_id: i64) -> Result<i64, StoreError> {
    Ok(state_chains::table.find(chain_id).select(state_chains::tip_pos).first(conn)?)
}

/// Which ids [`reserve_ids`] hands out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    Group,
    Chain,
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}

/// `n` ids for groups or chains written later in the same transaction ([`insert_groups`]), all
/// above `above`. On PostgreSQL from the table's sequence (never handed out twice, even when the
/// transaction rolls back); on SQLite, whose one writer holds the database for the whole
/// transaction, above the largest one stored.
pub fn reserve_ids(
    conn: &mut DbConn,
    kind: IdKind,
    n: i64,
    above: i64,
) -> Result<Vec<i64>, StoreError> {
    let (table, column) = match kind {
        IdKind::Group => ("state_groups", "group_id"),
        IdKind::Chain => ("state_chains", "chain_id"),
    };
    match conn {
        DbConn::Pg(c) => {
            let rows: Vec<IdRow> = diesel::sql_query(format!(
                "SELECT nextval(pg_get_serial_sequence('{table}', '{column}')) AS id \
                 FROM generate_series(1, $1)"
            ))
            .bind::<diesel::sql_types::BigInt, _>(n)
            .load(c)?;
            Ok(rows.into_iter().map(|r| r.id).collect())
        }
        DbConn::Sqlite(c) => {
            let row: IdRow =
                diesel::sql_query(format!("SELECT COALESCE(MAX({column}), 0) AS id FROM {table}"))
                    .get_result(c)?;
            let from = row.id.max(above) + 1;
            Ok((from..from + n).collect())
        }
    }
}

/// A new state chain (see [`insert_groups`]).
#[derive(Clone, Debug)]
pub struct NewChain {
    pub chain_id: i64,
    pub base_group: Option<i64>,
    pub tip_pos: i64,
}

/// A new state group, its place and its delta (see [`insert_groups`]).
#[derive(Clone, Debug)]
pub struct NewGroup {
    pub group_id: i64,
    pub chain_id: i64,
    pub chain_pos: i64,
    pub parent: Option<i64>,
    pub ancestry: std::sync::Arc<[(i64, i64)]>,
    pub delta: Vec<(StateKey, String)>,
}

/// Writes groups made with reserved ids: the new chains, the groups, their deltas, and the new
/// tips of stored chains they extend. A few statements whatever their number.
pub fn insert_groups(
    conn: &mut DbConn,
    room_id: &str,
    chains: &[NewChain],
    groups: &[NewGroup],
    tips: &[(i64, i64)],
) -> Result<(), StoreError> {
    for chunk in chains.chunks(500) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|c| {
                (
                    state_chains::chain_id.eq(c.chain_id),
                    state_chains::room_id.eq(room_id),
                    state_chains::base_group.eq(c.base_group),
                    state_chains::tip_pos.eq(c.tip_pos),
                )
            })
            .collect();
        with_backend!(conn, |c| diesel::insert_into(state_chains::table).values(&rows).execute(c))?;
    }
    let texts: Vec<String> = groups.iter().map(|g| format_ancestry(&g.ancestry)).collect();
    for (chunk, texts) in groups.chunks(300).zip(texts.chunks(300)) {
        let rows: Vec<_> = chunk
            .iter()
            .zip(texts)
            .map(|(g, text)| {
                (
                    state_groups::group_id.eq(g.group_id),
                    state_groups::room_id.eq(room_id),
                    state_groups::chain_id.eq(g.chain_id),
                    state_groups::chain_pos.eq(g.chain_pos),
                    state_groups::parent_group.eq(g.parent),
                    state_groups::ancestry.eq(text),
                )
            })
            .collect();
        with_backend!(conn, |c| diesel::insert_into(state_groups::table).values(&rows).execute(c))?;
    }
    let deltas: Vec<_> = groups
        .iter()
        .flat_map(|g| {
            g.delta.iter().map(move |((event_type, state_key), event_id)| {
                (
                    state_deltas::chain_id.eq(g.chain_id),
                    state_deltas::event_type.eq(event_type),
                    state_deltas::state_key.eq(state_key),
                    state_deltas::chain_pos.eq(g.chain_pos),
                    state_deltas::group_id.eq(g.group_id),
                    state_deltas::event_id.eq(event_id),
                )
            })
        })
        .collect();
    for chunk in deltas.chunks(500) {
        with_backend!(conn, |c| diesel::insert_into(state_deltas::table).values(chunk).execute(c))?;
    }
    for (chain_id, tip) in tips {
        diesel::update(state_chains::table.find(chain_id))
            .set(state_chains::tip_pos.eq(tip))
            .execute(conn)?;
    }
    Ok(())
}

/// The ancestry of a group made before ancestries were stored, as one recursive query:
/// `(chain, position, distance)`.
fn ancestry_walk(group: i64) -> String {
    format!(
        "WITH RECURSIVE anc(chain_id, pos, depth) AS ( \
           SELECT chain_id, chain_pos, 0 FROM state_groups WHERE group_id = {group} \
           UNION ALL \
           SELECT g.chain_id, g.chain_pos, anc.depth + 1 FROM anc \
           JOIN state_chains c ON c.chain_id = anc.chain_id \
           JOIN state_groups g ON g.group_id = c.base_group)"
    )
}

#[derive(QueryableByName)]
struct EventIdRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    event_id: String,
}

#[derive(QueryableByName)]
struct ChainPosRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    chain_id: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pos: i64,
}

/// The event holding `(event_type, state_key)` in the state of `group`: the group's ancestry,
/// then one query, whatever its depth.
pub fn lookup(
    conn: &mut DbConn,
    group: i64,
    event_type: &str,
    state_key: &str,
) -> Result<Option<String>, StoreError> {
    let anc = anc_cte(conn, group)?;
    let tail = "SELECT d.event_id AS event_id FROM anc JOIN state_deltas d \
                ON d.chain_id = anc.chain_id AND d.chain_pos <= anc.pos";
    let rows: Vec<EventIdRow> = match conn {
        DbConn::Pg(c) => diesel::sql_query(format!(
            "{} {tail} WHERE d.event_type = $1 AND d.state_key = $2 \
             ORDER BY anc.depth ASC, d.chain_pos DESC LIMIT 1",
            anc
        ))
        .bind::<diesel::sql_types::Text, _>(event_type)
        .bind::<diesel::sql_types::Text, _>(state_key)
        .load(c)?,
        DbConn::Sqlite(c) => diesel::sql_query(format!(
            "{} {tail} WHERE d.event_type = ? AND d.state_key = ? \
             ORDER BY anc.depth ASC, d.chain_pos DESC LIMIT 1",
            anc
        ))
        .bind::<diesel::sql_types::Text, _>(event_type)
        .bind::<diesel::sql_types::Text, _>(state_key)
        .load(c)?,
    };
    Ok(rows.into_iter().next().map(|r| r.event_id))
}

/// The events holding each of `keys` in the state of `group`, in one query (what [`lookup`] does
/// for one key). Keys the state lacks are absent from the answer.
pub fn lookup_many(
    conn: &mut DbConn,
    group: i64,
    keys: &[StateKey],
) -> Result<BTreeMap<StateKey, String>, StoreError> {
    if keys.is_empty() {
        return Ok(BTreeMap::new());
    }
    let anc = anc_cte(conn, group)?;
    let sql = |placeholder: &dyn Fn(usize) -> String| {
        let list = |from: usize| {
            (0..keys.len()).map(|i| placeholder(from + i)).collect::<Vec<_>>().join(", ")
        };
        format!(
            "{}, hits AS (SELECT d.event_type, d.state_key, d.event_id, ROW_NUMBER() OVER ( \
                 PARTITION BY d.event_type, d.state_key ORDER BY anc.depth ASC, d.chain_pos DESC) AS rn \
               FROM anc JOIN state_deltas d ON d.chain_id = anc.chain_id AND d.chain_pos <= anc.pos \
               WHERE d.event_type IN ({}) AND d.state_key IN ({})) \
             SELECT event_type, state_key, event_id FROM hits WHERE rn = 1",
            anc,
            list(1),
            list(1 + keys.len())
        )
    };
    let binds = keys.iter().map(|k| &k.0).chain(keys.iter().map(|k| &k.1));
    let rows: Vec<KeyValueRow> = match conn {
        DbConn::Pg(c) => {
            let mut q = diesel::sql_query(sql(&|i| format!("${i}"))).into_boxed::<diesel::pg::Pg>();
            for v in binds {
                q = q.bind::<diesel::sql_types::Text, _>(v.clone());
            }
            q.load(c)?
        }
        DbConn::Sqlite(c) => {
            let mut q =
                diesel::sql_query(sql(&|_| "?".to_owned())).into_boxed::<diesel::sqlite::Sqlite>();
            for v in binds {
                q = q.bind::<diesel::sql_types::Text, _>(v.clone());
            }
            q.load(c)?
        }
    };
    // The two IN lists also match type/key pairs nobody asked for.
    Ok(rows
        .into_iter()
        .map(|r| ((r.event_type, r.state_key), r.event_id))
        .filter(|(key, _)| keys.contains(key))
        .collect())
}

/// The whole state of `group`. Reads every delta on the way to the root: for endpoints that
/// must answer with full state, never for the per-event path.
pub fn full_state(conn: &mut DbConn, group: i64) -> Result<StateMap, StoreError> {
    let mut state = StateMap::new();
    for (chain_id, pos) in ancestry(conn, group)? {
        let rows: Vec<(String, String, String)> = state_deltas::table
            .filter(state_deltas::chain_id.eq(chain_id))
            .filter(state_deltas::chain_pos.le(pos))
            .order(state_deltas::chain_pos.desc())
            .select((state_deltas::event_type, state_deltas::state_key, state_deltas::event_id))
            .load(conn)?;
        for (t, k, e) in rows {
            state.entry((t, k)).or_insert(e);
        }
    }
    Ok(state)
}

/// `(chain_id, position)` of every chain a group's state draws on, from the group up to the root:
/// one row for groups that store it, a recursive walk for older ones.
pub fn ancestry(conn: &mut DbConn, group: i64) -> Result<Vec<(i64, i64)>, StoreError> {
    let stored: Option<Option<String>> =
        optional(state_groups::table.find(group).select(state_groups::ancestry).first(conn))?;
    match stored {
        None => Err(StoreError::Corrupt(format!("state group {group} missing"))),
        Some(Some(text)) => parse_ancestry(&text)
            .ok_or_else(|| StoreError::Corrupt(format!("state group {group} ancestry {text:?}"))),
        Some(None) => {
            let sql = format!(
                "{} SELECT chain_id, pos FROM anc ORDER BY depth ASC",
                ancestry_walk(group)
            );
            let rows: Vec<ChainPosRow> = diesel::sql_query(sql).load(conn)?;
            Ok(rows.into_iter().map(|r| (r.chain_id, r.pos)).collect())
        }
    }
}

fn format_ancestry(chains: &[(i64, i64)]) -> String {
    chains.iter().map(|(c, p)| format!("{c}:{p}")).collect::<Vec<_>>().join(",")
}

fn parse_ancestry(text: &str) -> Option<Vec<(i64, i64)>> {
    text.split(',')
        .map(|pair| {
            let (c, p) = pair.split_once(':')?;
            Some((c.parse().ok()?, p.parse().ok()?))
        })
        .collect()
}

/// `WITH anc(chain_id, pos, depth)`: the group's ancestry as a constant table (integers only).
fn anc_cte(conn: &mut DbConn, group: i64) -> Result<String, StoreError> {
    let rows: Vec<String> = ancestry(conn, group)?
        .iter()
        .enumerate()
        .map(|(depth, (chain, pos))| format!("({chain}, {pos}, {depth})"))
        .collect();
    Ok(format!("WITH anc(chain_id, pos, depth) AS (VALUES {})", rows.join(", ")))
}

#[derive(QueryableByName)]
struct KeyValueRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    event_type: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    state_key: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    event_id: String,
}
