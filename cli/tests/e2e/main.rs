//! knockctl end to end: the real binary against a real knockd started in-process, on SQLite and
//! (with KNOCKD_TEST_DATABASE_URL) PostgreSQL.

mod common;
mod errors;
mod outbox;
mod queue;
mod rooms;
mod tui;
mod watch;
