//! Types of knockd's admin API and a typed client for it, shared by knockctl and the tests.

pub mod client;
pub mod types;

pub use client::{AdminClient, ClientError};
pub use types::*;

/// The admin API's path prefix.
pub const ADMIN_PREFIX: &str = "/_knockd/admin/v1";
/// Where knockd writes the local admin's token inside its data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The admin listener's default address.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:8449";
