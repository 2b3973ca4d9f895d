//! A typed client for the admin API.

use reqwest::{Method, StatusCode};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    ADMIN_PREFIX, CreateRoomRequest, CreateRoomResponse, ErrorBody, KnockList, KnockQuery,
    RoomDetail, RoomList,
};

/// What can go wrong talking to knockd.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// knockd could not be reached.
    #[error("cannot reach knockd at {url}: {message}")]
    Unreachable {
        /// The base URL tried.
        url: String,
        /// Why.
        message: String,
    },
    /// knockd answered with an error.
    #[error("{status}: {} ({})", body.error, body.errcode)]
    Api {
        /// HTTP status.
        status: u16,
        /// The error body.
        body: ErrorBody,
    },
    /// knockd answered something this client does not understand.
    #[error("unexpected answer from knockd: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The Matrix errcode, for API errors.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Self::Api { body, .. } => Some(&body.errcode),
            _ => None,
        }
    }

    /// The HTTP status, for API errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Admin API client: a base URL and a bearer token.
#[derive(Clone, Debug)]
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for `base` (e.g. `http://127.0.0.1:8449`) with a bearer token.
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Self {
        // reqwest is built without a default TLS provider; install ring once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            token: token.into(),
            http: reqwest::Client::new(),
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{ADMIN_PREFIX}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Protocol(e.to_string()));
        }
        let body = serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_else(|_| ErrorBody {
            errcode: "M_UNKNOWN".to_owned(),
            error: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
        });
        Err(ClientError::Api { status: status.as_u16(), body })
    }

    /// `POST /rooms`
    pub async fn create_room(
        &self,
        request: &CreateRoomRequest,
    ) -> Result<CreateRoomResponse, ClientError> {
        self.call(Method::POST, "/rooms", Some(request)).await
    }

    /// `GET /rooms`
    pub async fn list_rooms(
        &self,
        from: Option<&str>,
        limit: Option<u32>,
    ) -> Result<RoomList, ClientError> {
        let mut query = Vec::new();
        if let Some(from) = from {
            query.push(format!("from={}", encode(from)));
        }
        if let Some(limit) = limit {
            query.push(format!("limit={limit}"));
        }
        let path = if query.is_empty() {
            "/rooms".to_owned()
        } else {
            format!("/rooms?{}", query.join("&"))
        };
        self.call::<(), _>(Method::GET, &path, None).await
    }

    /// `GET /rooms/{roomId}`
    pub async fn room(&self, room_id: &str) -> Result<RoomDetail, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/rooms/{}", encode(room_id)), None).await
    }

    /// `GET /knocks` with filters.
    pub async fn list_knocks(&self, query: &KnockQuery) -> Result<KnockList, ClientError> {
        let mut params = Vec::new();
        let mut push = |name: &str, value: &Option<String>| {
            if let Some(v) = value {
                params.push(format!("{name}={}", encode(v)));
            }
        };
        push("status", &query.status);
        push("room_id", &query.room_id);
        push("server", &query.server);
        push("user_id", &query.user_id);
        push("from", &query.from);
        if let Some(limit) = query.limit {
            params.push(format!("limit={limit}"));
        }
        let path = if params.is_empty() {
            "/knocks".to_owned()
        } else {
            format!("/knocks?{}", params.join("&"))
        };
        self.call::<(), _>(Method::GET, &path, None).await
    }

    /// `GET /knocks/{id}`
    pub async fn knock(&self, id: i64) -> Result<crate::KnockDetail, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/knocks/{id}"), None).await
    }

    /// `POST /knocks/{id}/approve`
    pub async fn approve(
        &self,
        id: i64,
        reason: Option<&str>,
    ) -> Result<crate::Decision, ClientError> {
        let body = crate::ApproveRequest { reason: reason.map(str::to_owned) };
        self.call(Method::POST, &format!("/knocks/{id}/approve"), Some(&body)).await
    }

    /// `POST /knocks/{id}/deny`
    pub async fn deny(
        &self,
        id: i64,
        reason: Option<&str>,
        ban: bool,
    ) -> Result<crate::Decision, ClientError> {
        let body = crate::DenyRequest { reason: reason.map(str::to_owned), ban };
        self.call(Method::POST, &format!("/knocks/{id}/deny"), Some(&body)).await
    }

    /// `POST /knocks/approve` (bulk)
    pub async fn approve_many(
        &self,
        ids: &[i64],
        reason: Option<&str>,
    ) -> Result<crate::BulkResponse, ClientError> {
        let body =
            crate::BulkRequest { ids: ids.to_vec(), reason: reason.map(str::to_owned), ban: false };
        self.call(Method::POST, "/knocks/approve", Some(&body)).await
    }

    /// `POST /knocks/deny` (bulk)
    pub async fn deny_many(
        &self,
        ids: &[i64],
        reason: Option<&str>,
        ban: bool,
    ) -> Result<crate::BulkResponse, ClientError> {
        let body = crate::BulkRequest { ids: ids.to_vec(), reason: reason.map(str::to_owned), ban };
        self.call(Method::POST, "/knocks/deny", Some(&body)).await
    }

    /// `GET /decisions`
    pub async fn decisions(
        &self,
        query: &crate::DecisionQuery,
    ) -> Result<crate::DecisionList, ClientError> {
        let mut params = Vec::new();
        for (name, value) in [
            ("room_id", &query.room_id),
            ("actor", &query.actor),
            ("action", &query.action),
            ("from", &query.from),
        ] {
            if let Some(v) = value {
                params.push(format!("{name}={}", encode(v)));
            }
        }
        if let Some(k) = query.knock_id {
            params.push(format!("knock_id={k}"));
        }
        if let Some(l) = query.limit {
            params.push(format!("limit={l}"));
        }
        let path = if params.is_empty() {
            "/decisions".to_owned()
        } else {
            format!("/decisions?{}", params.join("&"))
        };
        self.call::<(), _>(Method::GET, &path, None).await
    }

    /// `PUT /rooms/{roomId}`
    pub async fn update_room(
        &self,
        room_id: &str,
        settings: &crate::RoomSettings,
    ) -> Result<crate::EventIds, ClientError> {
        self.call(Method::PUT, &format!("/rooms/{}", encode(room_id)), Some(settings)).await
    }

    /// `POST /rooms/{roomId}/members`
    pub async fn add_member(
        &self,
        room_id: &str,
        user_id: &str,
        power_level: Option<i64>,
    ) -> Result<crate::EventIds, ClientError> {
        let body = crate::AddMember { user_id: user_id.to_owned(), power_level };
        self.call(Method::POST, &format!("/rooms/{}/members", encode(room_id)), Some(&body)).await
    }

    /// `DELETE /rooms/{roomId}/members/{userId}`
    pub async fn remove_member(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<crate::EventIds, ClientError> {
        self.call::<(), _>(
            Method::DELETE,
            &format!("/rooms/{}/members/{}", encode(room_id), encode(user_id)),
            None,
        )
        .await
    }

    /// `PUT /rooms/{roomId}/power_levels/{userId}`
    pub async fn set_power_level(
        &self,
        room_id: &str,
        user_id: &str,
        level: i64,
    ) -> Result<crate::EventIds, ClientError> {
        let body = crate::SetPowerLevel { power_level: level };
        self.call(
            Method::PUT,
            &format!("/rooms/{}/power_levels/{}", encode(room_id), encode(user_id)),
            Some(&body),
        )
        .await
    }

    /// `GET /outbox`
    pub async fn outbox(&self) -> Result<crate::OutboxStatus, ClientError> {
        self.call::<(), _>(Method::GET, "/outbox", None).await
    }

    /// `GET /version`: the daemon's version.
    pub async fn version(&self) -> Result<crate::ServerVersion, ClientError> {
        self.call::<(), _>(Method::GET, "/version", None).await
    }

    /// `POST /outbox/{id}/retry`: a parked item back in the queue.
    pub async fn outbox_retry(&self, id: i64) -> Result<crate::OutboxAction, ClientError> {
        self.call::<(), _>(Method::POST, &format!("/outbox/{id}/retry"), None).await
    }

    /// `DELETE /outbox/{id}`: a parked item dropped.
    pub async fn outbox_drop(&self, id: i64) -> Result<crate::OutboxAction, ClientError> {
        self.call::<(), _>(Method::DELETE, &format!("/outbox/{id}"), None).await
    }

    /// `GET /events`: the queue-change stream as a raw response (server-sent events).
    pub async fn events(&self) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{ADMIN_PREFIX}/events", self.base);
        let response = self.http.get(&url).bearer_auth(&self.token).send().await.map_err(|e| {
            ClientError::Unreachable { url: self.base.clone(), message: e.to_string() }
        })?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body = response
                .json::<ErrorBody>()
                .await
                .unwrap_or(ErrorBody { errcode: "M_UNKNOWN".into(), error: "error".into() });
            return Err(ClientError::Api { status, body });
        }
        Ok(response)
    }

    /// A raw GET, for endpoints without a typed method yet.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        self.call::<(), _>(Method::GET, path, None).await
    }

    /// Whether the status means "not found".
    pub fn is_not_found(err: &ClientError) -> bool {
        err.status() == Some(StatusCode::NOT_FOUND.as_u16())
    }
}

/// What stays as it is in a path segment or query value: RFC 3986's unreserved characters.
/// Everything else is percent-encoded, as Synapse encodes (`!`, `:`, `@`, `$` too).
const UNRESERVED_KEPT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encodes a path segment or query value (the one encoder knockd, knockctl and the tests
/// share).
pub fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED_KEPT).to_string()
}
