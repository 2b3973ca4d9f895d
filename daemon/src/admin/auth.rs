//! Bearer-token authentication of admin requests.

use axum::{extract::FromRequestParts, http::request::Parts};
use ruma::OwnedUserId;

use crate::{
    error::ApiError,
    service::{AppState, scope::Scope},
    store::users,
};

/// The local user a valid bearer token belongs to.
#[derive(Clone, Debug)]
pub struct AdminUser(pub OwnedUserId);

impl AdminUser {
    /// What this user sees and decides: everything for the server admin, else the rooms they
    /// moderate (see `service::scope`).
    pub fn scope(&self, app: &AppState) -> Scope {
        Scope::of(app, &self.0)
    }
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Token("M_MISSING_TOKEN", "missing bearer token".to_owned()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Token(
                    "M_MISSING_TOKEN",
                    "expected `Authorization: Bearer <token>`".to_owned(),
                )
            })?
            .to_owned();
        let now = crate::matrix::now_ms();
        let user = state.db.read(move |conn| users::user_for_token(conn, &token, now)).await?;
        let user = user.ok_or_else(|| {
            ApiError::Token("M_UNKNOWN_TOKEN", "unknown, revoked or expired token".to_owned())
        })?;
        OwnedUserId::try_from(user)
            .map(AdminUser)
            .map_err(|e| ApiError::Internal(format!("stored token user: {e}")))
    }
}
