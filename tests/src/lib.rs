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

/// Raises this process's soft limit on open files to `needed` when it is lower: a test that holds
/// many connections, both ends in this process, would otherwise stop at the soft limit many systems
/// start with (1024), under `cargo test` and cargo-nextest alike. Fails, saying so, when the hard
/// limit is lower than `needed`.
pub fn raise_open_files_limit(needed: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit are given a valid rlimit and change nothing else.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0, "getrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error());
    let needed = needed as libc::rlim_t;
    if limit.rlim_cur >= needed {
        return;
    }
    assert!(
        limit.rlim_max >= needed,
        "this test needs {needed} open files, and the hard limit is {} (see `ulimit -Hn`)",
        limit.rlim_max
    );
    limit.rlim_cur = needed;
    // SAFETY: as above.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(set, 0, "setrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error());
}

/// A random lowercase hex string.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("random bytes");
    hex::encode(buf)
}
