//! Domain logic: rooms, knocks and their events. No HTTP types here.

pub mod budget;
pub mod delivery;
pub mod discovery;
pub mod gap;
pub mod joins;
pub mod knocks;
pub mod membership;
pub mod moderation;
pub mod outbox_items;
pub mod queue;
pub mod ratelimit;
pub mod reads;
pub mod rooms;
pub mod scope;
pub mod settings;
pub mod transactions;
pub mod visibility;

use std::sync::Arc;

use crate::{
    config::Config,
    matrix::{KeyRing, client::FederationClient, remote_keys::RemoteKeys},
    store::{Db, StoreError},
};

/// Everything a request handler needs.
#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    /// This knockd among those sharing the database (random, kept in the data dir).
    pub instance_id: Arc<str>,
    pub db: Db,
    pub keys: Arc<KeyRing>,
    pub federation: Arc<FederationClient>,
    pub remote_keys: Arc<RemoteKeys>,
    /// Wakes the outbound sender after a commit that queued work.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    /// One inbound transaction per origin at a time.
    pub origin_locks: Arc<transactions::OriginLocks>,
    /// Queue changes for live admin UIs (`GET /events`). Only this process's changes.
    pub queue_events: tokio::sync::broadcast::Sender<knockd_shared::QueueEvent>,
    /// The room engine: every write to a room's state goes through it.
    pub rooms: Arc<crate::room::Engine>,
    /// Knock requests per origin server and per room (this process's count).
    pub knock_limits: Arc<ratelimit::KnockLimits>,
    /// This knockd's Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl AppState {
    pub fn new(config: Config, db: Db, keys: KeyRing, instance_id: String) -> Result<Self, String> {
        let keys = Arc::new(keys);
        let timeout = std::time::Duration::from_millis(config.federation.request_timeout_ms);
        let federation = Arc::new(FederationClient::new(
            keys.clone(),
            config.federation.verify_certificates,
            timeout,
            config.federation.address_policy.clone(),
        )?);
        let remote_keys = Arc::new(RemoteKeys::new(
            db.clone(),
            federation.clone(),
            config.federation.trusted_key_servers.clone(),
        ));
        let knock_limits = Arc::new(ratelimit::KnockLimits::new(
            config.knock_limits.per_origin,
            config.knock_limits.per_room,
        ));
        let metrics = Arc::new(crate::metrics::Metrics::new());
        db.observe_pool_waits(metrics.pool_waits());
        let outbox_wake = Arc::new(tokio::sync::Notify::new());
        let queue_events = tokio::sync::broadcast::channel(1024).0;
        let rooms = Arc::new(
            crate::room::Engine::new(
                db.clone(),
                keys.clone(),
                outbox_wake.clone(),
                queue_events.clone(),
            )
            .with_dummy_event_threshold(config.dummy_event_threshold)
            .with_metrics(metrics.clone()),
        );
        Ok(Self {
            config: Arc::new(config),
            instance_id: instance_id.into(),
            db,
            keys,
            federation,
            remote_keys,
            outbox_wake,
            queue_events,
            rooms,
            origin_locks: Arc::new(transactions::OriginLocks::default()),
            knock_limits,
            metrics,
        })
    }

    /// Tells live admin UIs about a queue change (nobody listening is fine).
    pub fn publish(
        &self,
        kind: &str,
        knock_id: Option<i64>,
        room_id: Option<&str>,
        status: Option<&str>,
    ) {
        let _ = self.queue_events.send(knockd_shared::QueueEvent {
            kind: kind.to_owned(),
            knock_id,
            room_id: room_id.map(str::to_owned),
            status: status.map(str::to_owned),
        });
    }
}

impl AppState {
    /// Takes a membership request of `origin` in `room_id` (make_knock, send_knock, a knock over
    /// /send, send_join, send_leave) off the rate limits, or refuses it.
    pub fn admit_knock(&self, origin: &str, room_id: &str) -> Result<(), ServiceError> {
        self.knock_limits.admit(origin, room_id).map_err(|limited| {
            let (which, key) = if limited.origin {
                ("from your server", origin)
            } else {
                ("to this room", room_id)
            };
            tracing::info!(%origin, %room_id, retry_after_ms = limited.retry_after_ms, "knock rate limited");
            ServiceError::LimitExceeded(
                format!("too many knock, join or leave requests {which} ({key}); try again later"),
                limited.retry_after_ms,
            )
        })
    }
}

/// Domain errors; `error.rs` maps them to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// 400 `M_INVALID_PARAM`
    #[error("{0}")]
    Invalid(String),
    /// 400 `M_BAD_JSON`
    #[error("{0}")]
    BadJson(String),
    /// 400 `M_MISSING_PARAM`
    #[error("{0}")]
    MissingParam(String),
    /// 400 `M_INCOMPATIBLE_ROOM_VERSION` with the room's version
    #[error("the room's version {0} is not one the requesting server supports")]
    IncompatibleRoomVersion(String),
    /// 413 `M_TOO_LARGE`
    #[error("{0}")]
    TooLarge(String),
    /// 403 `M_FORBIDDEN`
    #[error("{0}")]
    Forbidden(String),
    /// 404 `M_NOT_FOUND`
    #[error("{0}")]
    NotFound(String),
    /// 400 `M_UNABLE_TO_AUTHORISE_JOIN`
    #[error("{0}")]
    UnableToAuthoriseJoin(String),
    /// 409: already decided, or decided concurrently.
    #[error("{0}")]
    Conflict(String),
    /// 429 `M_LIMIT_EXCEEDED`: too many requests; try again after the given milliseconds.
    #[error("{0}")]
    LimitExceeded(String, u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<diesel::result::Error> for ServiceError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Store(e.into())
    }
}
