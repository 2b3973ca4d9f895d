//! The moderation queue as admins see it.

use knockd_shared::{KnockList, KnockQuery, KnockSummary};

use super::{AppState, ServiceError, scope::Scope};
use crate::room::load_pdus;
use crate::store::{DbConn, StoreError, events as ev, knocks};

/// The knocks of the rooms in scope, oldest first.
pub async fn list(
    app: &AppState,
    scope: &Scope,
    query: KnockQuery,
) -> Result<KnockList, ServiceError> {
    let status = match query.status.as_deref() {
        None => Some(knocks::PENDING.to_owned()),
        Some("all") => None,
        Some(s) if knocks::ALL_STATUSES.contains(&s) => Some(s.to_owned()),
        Some(s) => {
            return Err(ServiceError::Invalid(format!(
                "unknown status {s:?}: expected one of {} or all",
                knocks::ALL_STATUSES.join(", ")
            )));
        }
    };
    let after = match &query.from {
        None => None,
        Some(c) => Some(
            c.parse::<i64>().map_err(|_| ServiceError::Invalid(format!("invalid cursor {c:?}")))?,
        ),
    };
    let limit = i64::from(query.limit.unwrap_or(100).clamp(1, 1000));
    let mut filter = knocks::KnockFilter {
        status,
        room_id: query.room_id,
        origin_server: query.server,
        user_id: query.user_id,
        rooms: None,
    };
    let scope = scope.clone();
    app.db
        .read(move |conn| -> Result<_, StoreError> {
            filter.rooms = scope.rooms(conn)?;
            let rows = knocks::list(conn, &filter, after, limit + 1)?;
            let more = rows.len() as i64 > limit;
            let mut names = std::collections::HashMap::new();
            let mut out = Vec::new();
            for row in rows.into_iter().take(limit as usize) {
                if !names.contains_key(&row.room_id) {
                    let name = room_name(conn, &row.room_id)?;
                    names.insert(row.room_id.clone(), name);
                }
                let name = names.get(&row.room_id).cloned().flatten();
                out.push(summary(row, name));
            }
            let next = more.then(|| out.last().map(|k| k.id.to_string())).flatten();
            Ok(KnockList { knocks: out, next })
        })
        .await
        .map_err(Into::into)
}

fn room_name(conn: &mut DbConn, room_id: &str) -> Result<Option<String>, StoreError> {
    let Some(id) = ev::current(conn, room_id, "m.room.name", "")? else { return Ok(None) };
    Ok(load_pdus(conn, &[id])?
        .first()
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p.content.get()).ok())
        .and_then(|c| c.get("name").and_then(|n| n.as_str()).map(str::to_owned)))
}

pub fn summary(row: knocks::KnockRow, room_name: Option<String>) -> KnockSummary {
    KnockSummary {
        id: row.knock_id,
        room_id: row.room_id,
        room_name,
        user_id: row.user_id,
        display_name: row.display_name,
        avatar_url: row.avatar_url,
        event_id: row.event_id,
        reason: row.reason,
        origin_server: row.origin_server,
        status: row.status,
        received_at_ms: row.received_ms,
        content_redacted: row.content_redacted,
    }
}

/// One knock with its context: the state the knocker saw, decisions, and history. A knock of a
/// room out of scope is answered like one that does not exist.
pub async fn show(
    app: &AppState,
    scope: &Scope,
    knock_id: i64,
) -> Result<knockd_shared::KnockDetail, ServiceError> {
    use crate::store::decisions;
    let scope = scope.clone();
    app.db
        .read(move |conn| -> Result<_, ServiceError> {
            let rooms = scope.rooms(conn)?;
            let row = knocks::get(conn, knock_id)?
                .filter(|k| rooms.as_ref().is_none_or(|rooms| rooms.contains(&k.room_id)))
                .ok_or_else(|| ServiceError::NotFound(format!("no knock {knock_id}")))?;
            let name = room_name(conn, &row.room_id)?;
            let state: Vec<serde_json::Value> =
                serde_json::from_str(&row.knock_room_state).unwrap_or_default();
            let user_rows: Vec<_> = knocks::history_for_user(conn, &row.room_id, &row.user_id, 50)?
                .into_iter()
                .filter(|k| k.knock_id != knock_id)
                .collect();
            let server_rows: Vec<_> =
                knocks::history_for_server(conn, &row.origin_server, rooms.as_deref(), 51)?
                    .into_iter()
                    .filter(|k| k.knock_id != knock_id)
                    .take(50)
                    .collect();
            let view = |r: decisions::DecisionRow| {
                super::moderation::decision_view(r, Some(row.user_id.clone()))
            };
            let own = decisions::for_knocks(conn, &[knock_id])?.into_iter().map(view).collect();
            let earlier_ids: Vec<i64> = user_rows.iter().map(|k| k.knock_id).collect();
            let user_decisions =
                decisions::for_knocks(conn, &earlier_ids)?.into_iter().map(view).collect();
            let mut names = std::collections::HashMap::new();
            let mut summarize =
                |conn: &mut DbConn, r: knocks::KnockRow| -> Result<KnockSummary, StoreError> {
                    if !names.contains_key(&r.room_id) {
                        names.insert(r.room_id.clone(), room_name(conn, &r.room_id)?);
                    }
                    let n = names.get(&r.room_id).cloned().flatten();
                    Ok(summary(r, n))
                };
            let user_history =
                user_rows.into_iter().map(|r| summarize(conn, r)).collect::<Result<_, _>>()?;
            let server_history =
                server_rows.into_iter().map(|r| summarize(conn, r)).collect::<Result<_, _>>()?;
            Ok(knockd_shared::KnockDetail {
                knock: summary(row, name),
                knock_room_state: state,
                decisions: own,
                user_history,
                user_decisions,
                server_history,
            })
        })
        .await
}

/// The audit log of the rooms in scope, newest first.
pub async fn decisions(
    app: &AppState,
    scope: &Scope,
    query: knockd_shared::DecisionQuery,
) -> Result<knockd_shared::DecisionList, ServiceError> {
    use crate::store::decisions as dc;
    let before = match &query.from {
        None => None,
        Some(c) => Some(
            c.parse::<i64>().map_err(|_| ServiceError::Invalid(format!("invalid cursor {c:?}")))?,
        ),
    };
    let limit = i64::from(query.limit.unwrap_or(100).clamp(1, 1000));
    let mut filter = dc::DecisionFilter {
        room_id: query.room_id,
        actor: query.actor,
        action: query.action,
        knock_id: query.knock_id,
        rooms: None,
    };
    let scope = scope.clone();
    app.db
        .read(move |conn| -> Result<_, ServiceError> {
            filter.rooms = scope.rooms(conn)?;
            let rows = dc::list(conn, &filter, before, limit + 1)?;
            let more = rows.len() as i64 > limit;
            let mut out = Vec::new();
            for row in rows.into_iter().take(limit as usize) {
                let user = knocks::get(conn, row.knock_id)?.map(|k| k.user_id);
                out.push(super::moderation::decision_view(row, user));
            }
            let next = more.then(|| out.last().map(|d| d.id.to_string())).flatten();
            Ok(knockd_shared::DecisionList { decisions: out, next })
        })
        .await
}
