//! Local users and their admin tokens (stored as SHA-256 hashes).

use diesel::prelude::*;
use sha2::{Digest, Sha256};

use super::{DbConn, StoreError, optional, schema::*};
use crate::with_backend;

pub fn ensure_user(conn: &mut DbConn, user_id: &str, now_ms: i64) -> Result<(), StoreError> {
    with_backend!(conn, |c| diesel::insert_into(local_users::table)
        .values((local_users::user_id.eq(user_id), local_users::created_ms.eq(now_ms)))
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(())
}

pub fn user_exists(conn: &mut DbConn, user_id: &str) -> Result<bool, StoreError> {
    Ok(optional(
        local_users::table.find(user_id).select(local_users::user_id).first::<String>(conn),
    )?
    .is_some())
}

/// Hex SHA-256 of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Stores a token for a user; the token itself is never stored.
pub fn add_token(
    conn: &mut DbConn,
    token: &str,
    user_id: &str,
    label: Option<&str>,
    now_ms: i64,
) -> Result<String, StoreError> {
    add_token_expiring(conn, token, user_id, label, now_ms, None)
}

/// [`add_token`] for a token that stops working at `expires_ms` (`None`: never).
pub fn add_token_expiring(
    conn: &mut DbConn,
    token: &str,
    user_id: &str,
    label: Option<&str>,
    now_ms: i64,
    expires_ms: Option<i64>,
) -> Result<String, StoreError> {
    let hash = hash_token(token);
    let token_id = hash[..12].to_owned();
    diesel::insert_into(admin_tokens::table)
        .values((
            admin_tokens::token_id.eq(&token_id),
            admin_tokens::token_hash.eq(&hash),
            admin_tokens::user_id.eq(user_id),
            admin_tokens::label.eq(label),
            admin_tokens::created_ms.eq(now_ms),
            admin_tokens::expires_ms.eq(expires_ms),
        ))
        .execute(conn)?;
    Ok(token_id)
}

/// Whether a token is known: `Some(true)` live, `Some(false)` revoked, `None` never issued.
pub fn token_live(conn: &mut DbConn, token: &str) -> Result<Option<bool>, StoreError> {
    let revoked: Option<Option<i64>> = optional(
        admin_tokens::table
            .filter(admin_tokens::token_hash.eq(hash_token(token)))
            .select(admin_tokens::revoked_ms)
            .first(conn),
    )?;
    Ok(revoked.map(|r| r.is_none()))
}

/// The user a live token belongs to: neither revoked nor expired at `now_ms`.
pub fn user_for_token(
    conn: &mut DbConn,
    token: &str,
    now_ms: i64,
) -> Result<Option<String>, StoreError> {
    optional(
        admin_tokens::table
            .filter(admin_tokens::token_hash.eq(hash_token(token)))
            .filter(admin_tokens::revoked_ms.is_null())
            .filter(admin_tokens::expires_ms.is_null().or(admin_tokens::expires_ms.gt(now_ms)))
            .select(admin_tokens::user_id)
            .first(conn),
    )
}

#[derive(Clone, Debug, Queryable)]
pub struct TokenRow {
    pub token_id: String,
    pub user_id: String,
    pub label: Option<String>,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
    pub expires_ms: Option<i64>,
}

pub fn tokens(conn: &mut DbConn) -> Result<Vec<TokenRow>, StoreError> {
    Ok(admin_tokens::table
        .select((
            admin_tokens::token_id,
            admin_tokens::user_id,
            admin_tokens::label,
            admin_tokens::created_ms,
            admin_tokens::revoked_ms,
            admin_tokens::expires_ms,
        ))
        .order(admin_tokens::created_ms.asc())
        .load(conn)?)
}

/// Revokes a token by its id; false when there is no live token with that id.
pub fn revoke(conn: &mut DbConn, token_id: &str, now_ms: i64) -> Result<bool, StoreError> {
    let n = diesel::update(
        admin_tokens::table
            .filter(admin_tokens::token_id.eq(token_id))
            .filter(admin_tokens::revoked_ms.is_null()),
    )
    .set(admin_tokens::revoked_ms.eq(now_ms))
    .execute(conn)?;
    Ok(n == 1)
}

/// `(display name, avatar URL)` of a local user.
pub type Profile = (Option<String>, Option<String>);

/// A local user's profile, if the user exists.
pub fn profile(conn: &mut DbConn, user_id: &str) -> Result<Option<Profile>, StoreError> {
    optional(
        local_users::table
            .find(user_id)
            .select((local_users::display_name, local_users::avatar_url))
            .first(conn),
    )
}
