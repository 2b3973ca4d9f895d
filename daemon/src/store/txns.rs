//! Answers to inbound transactions, per (origin, txnId).

use diesel::prelude::*;

use super::{DbConn, StoreError, optional, schema::inbound_txns as t};
use crate::with_backend;

pub fn answer(conn: &mut DbConn, origin: &str, txn_id: &str) -> Result<Option<String>, StoreError> {
    optional(t::table.find((origin, txn_id)).select(t::response).first(conn))
}

pub fn remember(
    conn: &mut DbConn,
    origin: &str,
    txn_id: &str,
    response: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    with_backend!(conn, |c| diesel::insert_into(t::table)
        .values((
            t::origin.eq(origin),
            t::txn_id.eq(txn_id),
            t::response.eq(response),
            t::received_ms.eq(now_ms)
        ))
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(())
}

/// Forgets answers received before `cutoff_ms` (an origin retries a txnId for minutes, not days);
/// returns how many.
pub fn forget_before(conn: &mut DbConn, cutoff_ms: i64) -> Result<usize, StoreError> {
    Ok(diesel::delete(t::table.filter(t::received_ms.lt(cutoff_ms))).execute(conn)?)
}

/// How many answers are remembered for `origin`.
pub fn count_for(conn: &mut DbConn, origin: &str) -> Result<i64, StoreError> {
    Ok(t::table.filter(t::origin.eq(origin)).count().get_result(conn)?)
}
