//! Running knockctl against a test knockd.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use knockd_shared::{CreateRoomRequest, KnockQuery};
use knockd_tests::{SimServer, TestBackend, TestDb, TestKnockd};
use serde_json::Value;

/// Fast outbound retries, so approvals are delivered quickly.
const FAST: [(&str, &str); 3] = [
    ("KNOCKD_OUTBOX_MIN_BACKOFF_MS", "50"),
    ("KNOCKD_OUTBOX_MAX_BACKOFF_MS", "300"),
    ("KNOCKD_OUTBOX_POLL_MS", "50"),
];

pub async fn start(backend: TestBackend) -> TestKnockd {
    TestKnockd::start_with(TestDb::new(backend), &FAST).await
}

/// What one knockctl run did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Asserts the exit code, showing the run when it differs.
    #[track_caller]
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(self.code, code, "unexpected exit code: {self:?}");
        self
    }
}

/// The knockctl binary, with a clean environment for its own variables.
pub fn command(url: &str, token_file: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_knockctl"));
    for var in ["KNOCKCTL_URL", "KNOCKCTL_TOKEN", "KNOCKCTL_TOKEN_FILE", "KNOCKD_DATA_DIR"] {
        cmd.env_remove(var);
    }
    cmd.arg("--url").arg(url).arg("--token-file").arg(token_file).args(args);
    cmd
}

/// The admin token file of a test knockd.
pub fn token_file(k: &TestKnockd) -> PathBuf {
    k.data_dir.join(knockd_shared::ADMIN_TOKEN_FILE)
}

/// Runs knockctl against `k` with stdin closed (not a terminal).
pub async fn knockctl(k: &TestKnockd, args: &[&str]) -> Run {
    run_raw(command(&k.admin_url, &token_file(k), args), None).await
}

/// Runs knockctl against `k` with `input` on stdin.
pub async fn knockctl_stdin(k: &TestKnockd, args: &[&str], input: &str) -> Run {
    run_raw(command(&k.admin_url, &token_file(k), args), Some(input.to_owned())).await
}

/// Runs a prepared command off the runtime's threads, so the in-process knockd keeps serving.
pub async fn run_raw(mut cmd: Command, input: Option<String>) -> Run {
    tokio::task::spawn_blocking(move || {
        cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn knockctl");
        if let Some(input) = input {
            child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        }
        let out = child.wait_with_output().expect("knockctl output");
        Run {
            code: out.status.code().expect("exit code, not a signal"),
            stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
        }
    })
    .await
    .expect("join")
}

/// A knock room.
pub async fn room(k: &TestKnockd, name: &str) -> String {
    k.admin
        .create_room(&CreateRoomRequest { name: Some(name.into()), ..Default::default() })
        .await
        .expect("create room")
        .room_id
}

/// Knocks `local` from `sim` with `reason` and returns the knock's queue id.
pub async fn knock(
    k: &TestKnockd,
    sim: &SimServer,
    room_id: &str,
    local: &str,
    reason: &str,
) -> i64 {
    let (status, body) = sim.knock(&k.server_name, room_id, local, Some(reason)).await;
    assert_eq!(status.as_u16(), 200, "{body}");
    k.admin
        .list_knocks(&KnockQuery {
            user_id: Some(sim.user(local).to_string()),
            room_id: Some(room_id.into()),
            ..Default::default()
        })
        .await
        .expect("list knocks")
        .knocks[0]
        .id
}

/// The knock's status.
pub async fn status(k: &TestKnockd, id: i64) -> String {
    k.admin.knock(id).await.expect("knock").knock.status
}

/// Waits until the knock has one of `statuses`.
pub async fn wait_status(k: &TestKnockd, id: i64, statuses: &[&str]) {
    for _ in 0..400 {
        if statuses.contains(&status(k, id).await.as_str()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("knock {id} never reached {statuses:?}: it is {}", status(k, id).await);
}
