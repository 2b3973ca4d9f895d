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
