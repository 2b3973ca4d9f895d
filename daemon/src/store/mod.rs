//! Storage: Diesel over PostgreSQL or SQLite, blocking work on a thread pool.

mod conn;
pub mod decisions;
pub mod events;
pub mod knocks;
pub mod outbox;
pub mod rooms;
pub mod schema;
pub mod server_keys;
pub mod state;
pub mod txns;
pub mod users;

use std::sync::Arc;

pub use conn::{Backend, DatabaseUrl, DbConn, redact_url};
use diesel::Connection;

/// Storage errors, in domain terms.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("{0}")]
    Connect(String),
    #[error("database migration: {0}")]
    Migration(String),
    #[error("database: {0}")]
    Backend(#[from] diesel::result::Error),
    #[error("database pool: {0}")]
    Pool(String),
    #[error("invalid stored data: {0}")]
    Corrupt(String),
    /// A domain check inside a transaction failed; the transaction was rolled back.
    #[error("{0}")]
    Rejected(String),
    /// An outbox write of a sender whose destination lease was taken over (or released); the
    /// transaction was rolled back.
    #[error("the outbox lease of this destination is no longer ours")]
    LeaseLost,
}

/// The database handle: a connection pool plus, for SQLite, the single-writer lock.
#[derive(Clone)]
pub struct Db {
    pool: conn::Pool,
    backend: Backend,
    /// SQLite has one writer: serialising write transactions here avoids busy errors on lock
    /// upgrades. PostgreSQL uses row locks instead.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Where the wait for a connection is recorded (metrics), once set.
    pool_waits: Arc<std::sync::OnceLock<metrics::Histogram>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("backend", &self.backend).finish_non_exhaustive()
    }
}

impl Db {
    /// Connects (surfacing the real connection error), applies migrations, then opens the pool.
    pub async fn connect(url: &DatabaseUrl) -> Result<Self, StoreError> {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut first = conn::establish(&url)?;
            conn::migrate(&mut first)?;
            drop(first);
            Ok(Self {
                pool: conn::pool(&url),
                backend: url.backend(),
                write_lock: Arc::new(tokio::sync::Mutex::new(())),
                pool_waits: Arc::default(),
            })
        })
        .await
        .map_err(|e| StoreError::Pool(e.to_string()))?
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Records every wait for a connection (and, on SQLite, for the writer's turn) in `waits`.
    pub fn observe_pool_waits(&self, waits: metrics::Histogram) {
        let _ = self.pool_waits.set(waits);
    }

    /// Runs read-only work on a pooled connection.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        self.read_since(std::time::Instant::now(), f).await
    }

    /// [`Db::read`], its wait counted from `asked`.
    async fn read_since<T, E, F>(&self, asked: std::time::Instant, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        let pool = self.pool.clone();
        let waits = self.pool_waits.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(|e| E::from(StoreError::Pool(e.to_string())))?;
            if let Some(waits) = waits.get() {
                waits.record(asked.elapsed().as_secs_f64());
            }
            f(&mut conn)
        })
        .await
        .map_err(|e| E::from(StoreError::Pool(e.to_string())))?
    }

    /// Runs work in one transaction: all of it commits or none of it does.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + From<diesel::result::Error> + Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        let asked = std::time::Instant::now();
        let guard = match self.backend {
            Backend::Sqlite => Some(self.write_lock.clone().lock_owned().await),
            Backend::Postgres => None,
        };
        // The lock goes with the transaction: a caller that gives up waiting (a dropped request)
        // must not let another writer in while its transaction still runs.
        self.read_since(asked, move |conn| {
            let _guard = guard;
            conn.transaction(f)
        })
        .await
    }

    /// Readiness: the database answers and every migration is applied.
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.read(|conn| -> Result<(), StoreError> {
            if conn::migrations_applied(conn)? {
                Ok(())
            } else {
                Err(StoreError::Migration("migrations pending".to_owned()))
            }
        })
        .await
    }
}

/// Turns "no row" into `None`.
pub fn optional<T>(r: Result<T, diesel::result::Error>) -> Result<Option<T>, StoreError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(diesel::result::Error::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A named savepoint inside the caller's transaction, opened and closed by hand (diesel's
/// nested transactions take a closure; a room write opens one only when it first writes to the
/// store directly, see `room::RoomTxn`).
pub mod savepoint {
    use diesel::RunQueryDsl;

    use super::{DbConn, StoreError};

    const NAME: &str = "knockd_write";

    pub fn open(conn: &mut DbConn) -> Result<(), StoreError> {
        diesel::sql_query(format!("SAVEPOINT {NAME}")).execute(conn)?;
        Ok(())
    }

    pub fn release(conn: &mut DbConn) -> Result<(), StoreError> {
        diesel::sql_query(format!("RELEASE SAVEPOINT {NAME}")).execute(conn)?;
        Ok(())
    }

    /// Undoes everything since [`open`] and closes the savepoint.
    pub fn roll_back(conn: &mut DbConn) -> Result<(), StoreError> {
        diesel::sql_query(format!("ROLLBACK TO SAVEPOINT {NAME}")).execute(conn)?;
        release(conn)
    }

    /// Whether the transaction can still run statements (on PostgreSQL a failed statement
    /// leaves it unusable until rolled back).
    pub fn usable(conn: &mut DbConn) -> bool {
        diesel::sql_query("SELECT 1").execute(conn).is_ok()
    }
}
