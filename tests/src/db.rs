//! Test databases: a temporary SQLite file always; a fresh PostgreSQL schema whenever
//! `KNOCKD_TEST_DATABASE_URL` is set.

use std::path::PathBuf;

use diesel::{Connection, PgConnection, RunQueryDsl};

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestBackend {
    Sqlite,
    Postgres,
}

/// SQLite always; PostgreSQL too when `KNOCKD_TEST_DATABASE_URL` is set.
pub fn backends() -> Vec<TestBackend> {
    let mut out = vec![TestBackend::Sqlite];
    if pg_base_url().is_some() {
        out.push(TestBackend::Postgres);
    }
    out
}

fn pg_base_url() -> Option<String> {
    std::env::var("KNOCKD_TEST_DATABASE_URL").ok().filter(|u| !u.is_empty())
}

/// A database of its own for one test; dropped with it.
pub struct TestDb {
    pub backend: TestBackend,
    pub url: String,
    schema: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn new(backend: TestBackend) -> Self {
        match backend {
            TestBackend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path: PathBuf = dir.path().join("knockd.db");
                Self {
                    backend,
                    url: format!("sqlite://{}", path.display()),
                    schema: None,
                    _dir: Some(dir),
                }
            }
            TestBackend::Postgres => {
                let base = pg_base_url().expect("KNOCKD_TEST_DATABASE_URL");
                let schema = format!("t_{}", crate::random_hex(8));
                let mut conn = PgConnection::establish(&base)
                    .unwrap_or_else(|e| panic!("KNOCKD_TEST_DATABASE_URL: cannot connect: {e}"));
                diesel::sql_query(format!("CREATE SCHEMA {schema}"))
                    .execute(&mut conn)
                    .expect("create schema");
                let sep = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
                Self { backend, url, schema: Some((base, schema)), _dir: None }
            }
        }
    }

    /// The same database for a second knockd; dropping it leaves the database to this one.
    pub fn alias(&self) -> Self {
        Self { backend: self.backend, url: self.url.clone(), schema: None, _dir: None }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((base, schema)) = &self.schema
            && let Ok(mut conn) = PgConnection::establish(base)
        {
            let _ = diesel::sql_query(format!("DROP SCHEMA {schema} CASCADE")).execute(&mut conn);
        }
    }
}
