//! Remote servers' verify keys, as fetched and checked.

use diesel::prelude::*;

use super::{DbConn, StoreError, schema::server_keys as sk};
use crate::with_backend;

#[derive(Clone, Debug, Queryable)]
pub struct KeyRow {
    pub server_name: String,
    pub key_id: String,
    pub verify_key: String,
    pub valid_until_ms: i64,
    pub expired_ms: Option<i64>,
    pub fetched_ms: i64,
}

pub fn for_server(conn: &mut DbConn, server: &str) -> Result<Vec<KeyRow>, StoreError> {
    Ok(sk::table.filter(sk::server_name.eq(server)).load(conn)?)
}

pub fn upsert(conn: &mut DbConn, row: &KeyRow) -> Result<(), StoreError> {
    with_backend!(conn, |c| diesel::insert_into(sk::table)
        .values((
            sk::server_name.eq(&row.server_name),
            sk::key_id.eq(&row.key_id),
            sk::verify_key.eq(&row.verify_key),
            sk::valid_until_ms.eq(row.valid_until_ms),
            sk::expired_ms.eq(row.expired_ms),
            sk::fetched_ms.eq(row.fetched_ms),
        ))
        .on_conflict((sk::server_name, sk::key_id))
        .do_update()
        .set((
            sk::verify_key.eq(&row.verify_key),
            sk::valid_until_ms.eq(row.valid_until_ms),
            sk::expired_ms.eq(row.expired_ms),
            sk::fetched_ms.eq(row.fetched_ms),
        ))
        .execute(c))?;
    Ok(())
}
