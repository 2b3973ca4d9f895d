//! The outbound queue survives kill -9 (issue: moderation, part 5): the real knockd binary is
//! killed while an approval waits for the knocker's server, restarted, and the invite is delivered
//! exactly once.

use std::{
    collections::{HashMap, HashSet},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures::future::join_all;
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

/// Retries `f` while knockd is away (connection errors and 5xx), up to 30 s.
async fn retrying<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(t) => return t,
            Err(e) => {
                assert!(Instant::now() < deadline, "{what}: knockd never came back: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

// kill -9 of knockd while two servers stream knocks and a moderator approves whatever waits:
// every knock answered 200 is there after the restart, every knock ends approved once, and each
// knocker's server gets one invite event (the same event if a delivery cut short is sent again).
#[tokio::test]
async fn kill_9_under_knock_and_approval_load() {
    const PER_SERVER: usize = 15;
    for backend in backends() {
        knockd_tests::install_crypto();
        let db = TestDb::new(backend);
        let data = tempfile::tempdir().unwrap();
        let (fed, adm) = (free_port(), free_port());
        let child = std::sync::Mutex::new(start(&db.url, data.path(), fed, adm));
        ready(adm).await;
        let token = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
        let admin = AdminClient::new(format!("http://127.0.0.1:{adm}"), token.trim());
        let room = admin.create_room(&CreateRoomRequest::default()).await.unwrap().room_id;
        let sims = [SimServer::start().await, SimServer::start().await];
        for sim in &sims {
            sim.tolerate_unreachable();
        }
        let server = format!("127.0.0.1:{fed}");
        let done = std::sync::atomic::AtomicUsize::new(0);

        let knocking = sims.iter().map(|sim| {
            let (server, room, done) = (&server, &room, &done);
            async move {
                for i in 0..PER_SERVER {
                    let user = sim.user(&format!("k{i}"));
                    let (version, template) = retrying("make_knock", || async {
                        let (s, made) = sim.make_knock(server, room, user.as_str()).await;
                        if s == StatusCode::OK {
                            let version = made["room_version"].as_str().unwrap().to_owned();
                            Ok((version, made["event"].clone()))
                        } else {
                            assert!(
                                !s.is_client_error() || s == StatusCode::UNAUTHORIZED,
                                "{s} {made}"
                            );
                            Err(format!("{s} {made}"))
                        }
                    })
                    .await;
                    let (id, pdu) = sim.sign_template(&version, &template, None);
                    retrying("send_knock", || async {
                        let (s, b) = sim.send_knock(server, room, id.as_str(), &pdu).await;
                        if s == StatusCode::OK { Ok(()) } else { Err(format!("{s} {b}")) }
                    })
                    .await;
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        // Approves what waits until the knocking is over and nothing waits.
        let approving = async {
            loop {
                let over = done.load(std::sync::atomic::Ordering::SeqCst) == sims.len();
                let query = KnockQuery {
                    room_id: Some(room.clone()),
                    status: Some("pending".into()),
                    ..Default::default()
                };
                let Ok(list) = admin.list_knocks(&query).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                if over && list.knocks.is_empty() {
                    return;
                }
                for knock in list.knocks {
                    // 409: decided by an approval whose answer the kill cut off.
                    let _ = admin.approve(knock.id, None).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let crash = async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            {
                let mut c = child.lock().unwrap();
                c.kill().unwrap(); // SIGKILL: no shutdown, no lease released
                c.wait().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            *child.lock().unwrap() = start(&db.url, data.path(), fed, adm);
        };
        tokio::join!(join_all(knocking), approving, crash);

        let query = KnockQuery {
            room_id: Some(room.clone()),
            status: Some("all".into()),
            limit: Some(1000),
            ..Default::default()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let knocks = loop {
            let knocks = admin.list_knocks(&query).await.unwrap().knocks;
            if knocks.iter().all(|k| k.status == "approved") {
                break knocks;
            }
            assert!(Instant::now() < deadline, "{backend:?}: not all approved: {knocks:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(knocks.len(), PER_SERVER * sims.len(), "{backend:?}: every knock, once");
        tokio::time::sleep(Duration::from_millis(500)).await;
        for sim in &sims {
            let inbox = sim.inbox();
            let mut invites: HashMap<String, HashSet<String>> = HashMap::new();
            for invite in &inbox.invites {
                let user = invite["event"]["state_key"].as_str().unwrap().to_owned();
                let id = invite_event_id(invite);
                invites.entry(user).or_default().insert(id);
            }
            assert_eq!(invites.len(), PER_SERVER, "{backend:?}: every knocker invited");
            for (user, ids) in &invites {
                assert_eq!(ids.len(), 1, "{backend:?}: {user} got one invite event: {ids:?}");
            }
            eprintln!(
                "{backend:?}: {} invite requests for {PER_SERVER} approvals",
                inbox.invites.len()
            );
        }
        let mut c = child.lock().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

/// The event ID of the invite in a `/v2/invite` request body.
fn invite_event_id(body: &serde_json::Value) -> String {
    let version = ruma::RoomVersionId::try_from(body["room_version"].as_str().unwrap()).unwrap();
    let rules = knockd::matrix::event::rules(&version).unwrap();
    let mut event: ruma::CanonicalJsonObject =
        serde_json::from_value(body["event"].clone()).unwrap();
    event.remove("signatures");
    knockd::matrix::event::event_id(&event, &rules).unwrap().to_string()
}
