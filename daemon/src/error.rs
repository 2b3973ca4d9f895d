//! The one place where errors become HTTP responses.
//!
//! Every error leaves as a Matrix-style `{"errcode", "error"}` body. Internal causes are logged,
//! never sent.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use knockd_shared::ErrorBody;

use crate::{service::ServiceError, store::StoreError};

/// An error that an endpoint answers with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{1}")]
    BadRequest(&'static str, String),
    #[error("{0}")]
    Unauthorized(String),
    /// 401 with a specific code (`M_MISSING_TOKEN`, `M_UNKNOWN_TOKEN`).
    #[error("{1}")]
    Token(&'static str, String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// 404 `M_UNRECOGNIZED`: no such endpoint.
    #[error("unrecognized request")]
    Unrecognized,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    /// 408: the request did not arrive in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// 400 `M_INCOMPATIBLE_ROOM_VERSION` with a top-level `room_version`.
    #[error("the room's version ({0}) is not one the requesting server supports")]
    IncompatibleRoomVersion(String),
    /// 429 `M_LIMIT_EXCEEDED` with `retry_after_ms` (and a `Retry-After` header, in seconds).
    #[error("{0}")]
    LimitExceeded(String, u64),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn bad_json(msg: impl Into<String>) -> Self {
        Self::BadRequest("M_BAD_JSON", msg.into())
    }

    pub fn invalid_param(msg: impl Into<String>) -> Self {
        Self::BadRequest("M_INVALID_PARAM", msg.into())
    }

    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(code, _) => (StatusCode::BAD_REQUEST, code),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED"),
            Self::Token(code, _) => (StatusCode::UNAUTHORIZED, code),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "M_NOT_FOUND"),
            Self::Unrecognized => (StatusCode::NOT_FOUND, "M_UNRECOGNIZED"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "M_CONFLICT"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
            Self::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "M_UNKNOWN"),
            Self::IncompatibleRoomVersion(_) => {
                (StatusCode::BAD_REQUEST, "M_INCOMPATIBLE_ROOM_VERSION")
            }
            Self::LimitExceeded(..) => (StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound("not found".to_owned()),
            StoreError::Conflict(m) => Self::Conflict(m),
            StoreError::Rejected(m) => Self::Forbidden(m),
            StoreError::Pool(m) | StoreError::Connect(m) => {
                Self::Unavailable(format!("database unavailable: {m}"))
            }
            e => Self::Internal(e.to_string()),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(m) => Self::BadRequest("M_INVALID_PARAM", m),
            ServiceError::BadJson(m) => Self::BadRequest("M_BAD_JSON", m),
            ServiceError::MissingParam(m) => Self::BadRequest("M_MISSING_PARAM", m),
            ServiceError::IncompatibleRoomVersion(v) => Self::IncompatibleRoomVersion(v),
            ServiceError::TooLarge(m) => Self::TooLarge(m),
            ServiceError::Forbidden(m) => Self::Forbidden(m),
            ServiceError::NotFound(m) => Self::NotFound(m),
            ServiceError::Conflict(m) => Self::Conflict(m),
            ServiceError::LimitExceeded(m, ms) => Self::LimitExceeded(m, ms),
            ServiceError::UnableToAuthoriseJoin(m) => {
                Self::BadRequest("M_UNABLE_TO_AUTHORISE_JOIN", m)
            }
            ServiceError::Store(s) => s.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, errcode) = self.status_and_code();
        let error = match &self {
            Self::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                "internal server error".to_owned()
            }
            Self::Unavailable(cause) => {
                tracing::warn!(%cause, "service unavailable");
                "service temporarily unavailable".to_owned()
            }
            other => other.to_string(),
        };
        if let Self::IncompatibleRoomVersion(version) = &self {
            let body =
                serde_json::json!({ "errcode": errcode, "error": error, "room_version": version });
            return (status, Json(body)).into_response();
        }
        if let Self::LimitExceeded(_, retry_after_ms) = &self {
            let body = serde_json::json!({
                "errcode": errcode,
                "error": error,
                "retry_after_ms": retry_after_ms,
            });
            let seconds = retry_after_ms.div_ceil(1000).max(1).to_string();
            return (status, [(axum::http::header::RETRY_AFTER, seconds)], Json(body))
                .into_response();
        }
        (status, Json(ErrorBody { errcode: errcode.to_owned(), error })).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_causes_are_not_sent() {
        let response = ApiError::Internal("password=hunter2".to_owned()).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn mapping_table() {
        assert_eq!(
            ApiError::bad_json("x").status_and_code(),
            (StatusCode::BAD_REQUEST, "M_BAD_JSON")
        );
        assert_eq!(ApiError::Unauthorized("x".into()).status_and_code().1, "M_UNAUTHORIZED");
        assert_eq!(
            ApiError::TooLarge("x".into()).status_and_code().0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(ApiError::from(StoreError::NotFound).status_and_code().0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn limit_exceeded_carries_the_wait() {
        let response = ApiError::LimitExceeded("slow down".into(), 1500).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "2");
        let bytes = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
        assert_eq!(body["retry_after_ms"], 1500);
    }
}
