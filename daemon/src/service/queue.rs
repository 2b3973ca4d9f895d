//! The moderation queue as admins see it.

use knockd_shared::{KnockList, KnockQuery, KnockSummary};

use super::{AppState, ServiceError, events::load_pdus};
use crate::store::{DbConn, StoreError, events as ev, knocks};

/// Every status a knock row can have.
pub const STATUSES: [&str; 2] = [knocks::PENDING, knocks::REPLACED];

pub async fn list(app: &AppState, query: KnockQuery) -> Result<KnockList, ServiceError> {
    let status = match query.status.as_deref() {
        None => Some(knocks::PENDING.to_owned()),
        Some("all") => None,
        Some(s) if STATUSES.contains(&s) => Some(s.to_owned()),
        Some(s) => {
            return Err(ServiceError::Invalid(format!(
                "unknown status {s:?}: expected one of {} or all",
                STATUSES.join(", ")
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
    let filter = knocks::KnockFilter {
        status,
        room_id: query.room_id,
        origin_server: query.server,
        user_id: query.user_id,
    };
    app.db
        .read(move |conn| -> Result<_, StoreError> {
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
