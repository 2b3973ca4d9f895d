//! The outbound queue survives kill -9 (issue: moderation, part 5): the real knockd binary is
//! killed while an approval waits for the knocker's server, restarted, and the invite is delivered
//! exactly once.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use knockd_shared::{AdminClient, CreateRoomRequest, KnockQuery};
use knockd_tests::{SimServer, TestDb, backends, sim::Mode};
use reqwest::StatusCode;

/// target/<profile>/knockd, next to this test binary's deps/ folder.
fn knockd_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("knockd")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(db_url: &str, data: &std::path::Path, fed: u16, adm: u16) -> Child {
    Command::new(knockd_binary())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KNOCKD_SERVER_NAME", format!("127.0.0.1:{fed}"))
        .env("KNOCKD_FEDERATION_LISTEN", format!("127.0.0.1:{fed}"))
        .env("KNOCKD_ADMIN_LISTEN", format!("127.0.0.1:{adm}"))
        .env("KNOCKD_DATA_DIR", data)
        .env("KNOCKD_DATABASE_URL", db_url)
        .env("KNOCKD_FEDERATION_VERIFY_CERTIFICATES", "false")
        .env("KNOCKD_FEDERATION_IP_RANGE_ALLOWLIST", "127.0.0.1")
        .env("KNOCKD_OUTBOX_MIN_BACKOFF_MS", "50")
        .env("KNOCKD_OUTBOX_MAX_BACKOFF_MS", "300")
        .env("KNOCKD_OUTBOX_POLL_MS", "50")
        .env("KNOCKD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("knockd binary (built by cargo for the daemon's own tests)")
}

async fn ready(adm: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{adm}/readyz")).await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("knockd did not become ready");
}

#[tokio::test]
async fn invite_is_delivered_exactly_once_after_kill_9() {
    for backend in backends() {
        knockd_tests::install_crypto();
        let db = TestDb::new(backend);
        let data = tempfile::tempdir().unwrap();
        let (fed, adm) = (free_port(), free_port());
        let mut child = start(&db.url, data.path(), fed, adm);
        ready(adm).await;
        let token = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
        let admin = AdminClient::new(format!("http://127.0.0.1:{adm}"), token.trim());
        let room = admin.create_room(&CreateRoomRequest::default()).await.unwrap().room_id;
        let sim = SimServer::start().await;
        let server = format!("127.0.0.1:{fed}");
        let (status, body) = sim.knock(&server, &room, "kim", Some("crash test")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let id = admin.list_knocks(&KnockQuery::default()).await.unwrap().knocks[0].id;
        sim.set_mode(Mode::Down);
        admin.approve(id, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;

        child.kill().unwrap(); // SIGKILL: no shutdown, no lease released
        child.wait().unwrap();
        sim.set_mode(Mode::Accept);
        let mut child = start(&db.url, data.path(), fed, adm);
        ready(adm).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = admin.knock(id).await.unwrap().knock.status;
            if status == "approved" {
                break;
            }
            assert!(Instant::now() < deadline, "{backend:?}: still {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sim.inbox().invites.len(), 1, "{backend:?}: exactly once");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
