//! The database connection: one Diesel code base over PostgreSQL and SQLite.
//!
//! The backend is chosen from the URL scheme, never by letting Diesel's derived `establish` guess
//! (it tries every backend and swallows the real error).

use std::{fmt, time::Duration};

use diesel::{
    Connection, PgConnection, RunQueryDsl, SqliteConnection,
    r2d2::{self, ManageConnection},
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::StoreError;

pub const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");

/// A connection to either backend. Queries written against it run on both.
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

/// Runs one expression against the concrete backend connection, for the few queries the
/// multi-backend cannot express (upserts, `RETURNING`, row locks). The body is compiled once per
/// backend.
#[macro_export]
macro_rules! with_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::store::DbConn::Pg($c) => $body,
            $crate::store::DbConn::Sqlite($c) => $body,
        }
    };
}

/// Which database a URL points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A database URL. Its `Debug` and `Display` never show a password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Parses `postgres://…`, `postgresql://…` or `sqlite://PATH` (also `sqlite:PATH`).
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self(url.to_owned()));
        }
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if path.is_empty() {
                return Err("sqlite URL has no file path (expected sqlite://PATH)".to_owned());
            }
            return Ok(Self(url.to_owned()));
        }
        Err(format!(
            "unsupported database URL {:?}: expected postgres://… or sqlite://PATH",
            redact_url(url)
        ))
    }

    /// A SQLite URL for the given file path.
    pub fn sqlite(path: &std::path::Path) -> Self {
        Self(format!("sqlite://{}", path.display()))
    }

    pub fn backend(&self) -> Backend {
        if self.0.starts_with("sqlite:") { Backend::Sqlite } else { Backend::Postgres }
    }

    /// The SQLite file path, for SQLite URLs.
    pub fn sqlite_path(&self) -> Option<&str> {
        self.0.strip_prefix("sqlite://").or_else(|| self.0.strip_prefix("sqlite:"))
    }

    /// The URL with its secret, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Replaces the password of `scheme://user:password@host` with `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let redacted = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_owned(),
    };
    // Hide `password=` query or keyword parameters too.
    match redacted.find("password=") {
        Some(i) => {
            let end = redacted[i..].find(['&', ' ']).map_or(redacted.len(), |e| i + e);
            format!("{}password=***{}", &redacted[..i], &redacted[end..])
        }
        None => redacted,
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", redact_url(&self.0))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// Opens one connection, with the per-connection settings SQLite needs.
pub fn establish(url: &DatabaseUrl) -> Result<DbConn, StoreError> {
    match url.backend() {
        Backend::Postgres => PgConnection::establish(url.expose()).map(DbConn::Pg).map_err(|e| {
            StoreError::Connect(format!(
                "cannot connect to PostgreSQL at {url}: {}",
                first_line(&e.to_string())
            ))
        }),
        Backend::Sqlite => {
            let path = url.sqlite_path().unwrap_or_default();
            let mut conn = SqliteConnection::establish(path).map_err(|e| {
                StoreError::Connect(format!("cannot open SQLite database {path}: {e}"))
            })?;
            for pragma in [
                "PRAGMA journal_mode = WAL",
                "PRAGMA busy_timeout = 10000",
                "PRAGMA foreign_keys = ON",
                "PRAGMA synchronous = FULL",
            ] {
                diesel::sql_query(pragma).execute(&mut conn).map_err(|e| {
                    StoreError::Connect(format!("cannot configure SQLite database {path}: {e}"))
                })?;
            }
            Ok(DbConn::Sqlite(conn))
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or(s).to_owned()
}

/// Applies pending migrations, refusing a database that a newer knockd has migrated.
pub fn migrate(conn: &mut DbConn) -> Result<usize, StoreError> {
    fn run<C, B>(conn: &mut C, source: EmbeddedMigrations) -> Result<usize, StoreError>
    where
        B: diesel::backend::Backend,
        C: MigrationHarness<B>,
    {
        use diesel::migration::MigrationSource;
        let known: Vec<String> = MigrationSource::<B>::migrations(&source)
            .map_err(|e| StoreError::Migration(e.to_string()))?
            .iter()
            .map(|m| m.name().version().to_string())
            .collect();
        let applied =
            conn.applied_migrations().map_err(|e| StoreError::Migration(e.to_string()))?;
        if let Some(newer) = applied.iter().map(|v| v.to_string()).find(|v| !known.contains(v)) {
            return Err(StoreError::Migration(format!(
                "the database was migrated by a newer knockd (schema version {newer} is unknown to this \
                 build); upgrade knockd or use another database"
            )));
        }
        let done = conn
            .run_pending_migrations(source)
            .map_err(|e| StoreError::Migration(format!("applying migrations failed: {e}")))?;
        Ok(done.len())
    }
    match conn {
        DbConn::Pg(c) => run(c, PG_MIGRATIONS),
        DbConn::Sqlite(c) => run(c, SQLITE_MIGRATIONS),
    }
}

/// True when every embedded migration has been applied.
pub fn migrations_applied(conn: &mut DbConn) -> Result<bool, StoreError> {
    let pending = match conn {
        DbConn::Pg(c) => c.has_pending_migration(PG_MIGRATIONS),
        DbConn::Sqlite(c) => c.has_pending_migration(SQLITE_MIGRATIONS),
    };
    pending.map(|p| !p).map_err(|e| StoreError::Migration(e.to_string()))
}

/// r2d2 manager that establishes by URL scheme.
#[derive(Debug)]
pub struct Manager {
    url: DatabaseUrl,
}

impl ManageConnection for Manager {
    type Connection = DbConn;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConn, r2d2::Error> {
        establish(&self.url).map_err(|e| {
            r2d2::Error::ConnectionError(diesel::ConnectionError::BadConnection(e.to_string()))
        })
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), r2d2::Error> {
        diesel::sql_query("SELECT 1").execute(conn).map(|_| ()).map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConn) -> bool {
        std::thread::panicking()
            || <<DbConn as Connection>::TransactionManager as diesel::connection::TransactionManager<DbConn>>::is_broken_transaction_manager(conn)
    }
}

pub type Pool = r2d2::Pool<Manager>;

pub fn pool(url: &DatabaseUrl) -> Pool {
    let size = match url.backend() {
        Backend::Postgres => 16,
        Backend::Sqlite => 8,
    };
    r2d2::Pool::builder()
        .max_size(size)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_secs(10))
        .build_unchecked(Manager { url: url.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_hide_passwords() {
        let pg = DatabaseUrl::parse("postgres://knockd:s3cret@db.example:5432/knockd").unwrap();
        assert_eq!(pg.backend(), Backend::Postgres);
        assert_eq!(pg.to_string(), "postgres://knockd:***@db.example:5432/knockd");
        assert!(!format!("{pg:?}").contains("s3cret"));
        let kw = DatabaseUrl::parse("postgresql://u@h/db?password=hunter2&sslmode=off").unwrap();
        assert!(!kw.to_string().contains("hunter2"));
        let lite = DatabaseUrl::parse("sqlite://./knockd-data/knockd.db").unwrap();
        assert_eq!(lite.backend(), Backend::Sqlite);
        assert_eq!(lite.sqlite_path(), Some("./knockd-data/knockd.db"));
        assert!(DatabaseUrl::parse("mysql://x").is_err());
        assert!(DatabaseUrl::parse("sqlite://").is_err());
    }
}
