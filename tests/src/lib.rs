//! End-to-end test harness: start knockd in-process on ephemeral ports, on SQLite or PostgreSQL,
//! and talk to it the way remote homeservers and admins do.

pub mod db;
pub mod knockd;
pub mod sim;

pub use db::{TestBackend, TestDb, backends};
pub use knockd::TestKnockd;
pub use sim::SimServer;

/// Reference data kept in the repository (copied from the team's fixtures: the spec's signing
/// vectors and rooms made by Synapse), so that a fresh clone tests on its own.
pub fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Installs the ring crypto provider (reqwest and axum-server are built without a default one).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A random lowercase hex string.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("random bytes");
    hex::encode(buf)
}
