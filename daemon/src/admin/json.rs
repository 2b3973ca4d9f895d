//! A JSON body extractor whose errors are Matrix-style.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest admin request body.
pub const MAX_ADMIN_BODY: usize = 64 * 1024;

/// A JSON request body: `M_NOT_JSON` when it is not JSON, `M_BAD_JSON` when it has the wrong shape.
pub struct AdminJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AdminJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let req = req
            .map(|body| axum::body::Body::new(http_body_util::Limited::new(body, MAX_ADMIN_BODY)));
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::TooLarge(format!("request body over {MAX_ADMIN_BODY} bytes")))?;
        let bytes = if bytes.is_empty() { Bytes::from_static(b"{}") } else { bytes };
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Err(e) => Err(ApiError::BadRequest("M_NOT_JSON", format!("body is not JSON: {e}"))),
            Ok(value) => serde_json::from_value(value)
                .map(AdminJson)
                .map_err(|e| ApiError::bad_json(e.to_string())),
        }
    }
}
