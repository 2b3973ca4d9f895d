//! Fault suite (issue "Federation edge under abuse and faults", item 8): what knockd answered stays
//! true when many callers race, and nothing is decided or delivered twice.

use std::{collections::HashMap, time::Duration};

use futures::future::join_all;
use knockd_shared::{ClientError, CreateRoomRequest, DecisionQuery, KnockQuery};
use knockd_tests::{SimServer, TestDb, TestKnockd, backends};
use reqwest::StatusCode;

const FAST: [(&str, &str); 3] = [
    ("KNOCKD_OUTBOX_MIN_BACKOFF_MS", "50"),
    ("KNOCKD_OUTBOX_MAX_BACKOFF_MS", "300"),
    ("KNOCKD_OUTBOX_POLL_MS", "50"),
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Approve,
    Deny,
    Ban,
}

// 1,000 concurrent approve/deny/ban calls on 50 knocks (20 calls each, the three actions mixed):
// each knock gets exactly one decision — one call answered 200, every other 409 — the audit log
// has one entry per knock with the winning action, the room's state agrees, and each approved
// knocker's server receives its invite exactly once.
#[tokio::test]
async fn a_thousand_concurrent_decisions_make_exactly_one_each() {
    const KNOCKS: usize = 50;
    const CALLS: usize = 1_000;
    for backend in backends() {
        let k = TestKnockd::start_with(TestDb::new(backend), &FAST).await;
        let sim = SimServer::start().await;
        let room_id = k
            .admin
            .create_room(&CreateRoomRequest {
                room_version: Some("12".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .room_id;
        for i in 0..KNOCKS {
            let (s, b) = sim.knock(&k.server_name, &room_id, &format!("u{i}"), None).await;
            assert_eq!(s, StatusCode::OK, "{b}");
        }
        let query =
            KnockQuery { room_id: Some(room_id.clone()), limit: Some(1000), ..Default::default() };
        let knocks = k.admin.list_knocks(&query).await.unwrap().knocks;
        assert_eq!(knocks.len(), KNOCKS);
        let user_of: HashMap<i64, String> =
            knocks.iter().map(|n| (n.id, n.user_id.clone())).collect();

        let calls = (0..CALLS).map(|i| {
            let id = knocks[i % KNOCKS].id;
            let action = [Action::Approve, Action::Deny, Action::Ban][(i / KNOCKS + i) % 3];
            let admin = k.admin.clone();
            async move {
                let reason = Some("race");
                let answer = match action {
                    Action::Approve => admin.approve(id, reason).await,
                    Action::Deny => admin.deny(id, reason, false).await,
                    Action::Ban => admin.deny(id, reason, true).await,
                };
                (id, action, answer)
            }
        });
        let answers = join_all(calls).await;

        let mut won: HashMap<i64, Action> = HashMap::new();
        for (id, action, answer) in answers {
            match answer {
                Ok(_) => {
                    let before = won.insert(id, action);
                    assert!(before.is_none(), "{backend:?}: knock {id} decided twice");
                }
                Err(ClientError::Api { status, .. }) => {
                    assert_eq!(status, 409, "{backend:?}: knock {id}: {action:?}");
                }
                Err(e) => panic!("{backend:?}: knock {id}: {e}"),
            }
        }
        assert_eq!(won.len(), KNOCKS, "{backend:?}: every knock decided once");

        let decisions = k
            .admin
            .decisions(&DecisionQuery {
                room_id: Some(room_id.clone()),
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap()
            .decisions;
        assert_eq!(decisions.len(), KNOCKS, "{backend:?}: one audit entry per knock");
        for d in &decisions {
            let expected = match won[&d.knock_id] {
                Action::Approve => "approve",
                Action::Deny => "deny",
                Action::Ban => "ban",
            };
            assert_eq!(d.action, expected, "{backend:?}: knock {}", d.knock_id);
        }

        let approved: Vec<&String> = won
            .iter()
            .filter(|(_, a)| **a == Action::Approve)
            .map(|(id, _)| &user_of[id])
            .collect();
        assert!(!approved.is_empty());
        let invited_users = |inbox: &knockd_tests::sim::Inbox| -> Vec<String> {
            inbox
                .invites
                .iter()
                .filter_map(|i| i["event"]["state_key"].as_str().map(str::to_owned))
                .collect()
        };
        sim.wait_for(30, "every approval's invite", |inbox| {
            invited_users(inbox).len() >= approved.len()
        })
        .await;
        // Anything sent twice would have come by now.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut invited = invited_users(&sim.inbox());
        invited.sort();
        let mut wanted: Vec<String> = approved.iter().map(|u| u.to_string()).collect();
        wanted.sort();
        assert_eq!(invited, wanted, "{backend:?}: each approved knocker invited exactly once");
        // The state: an approved knocker is invited once their server countersigned the invite.
        let mut tries = 0;
        loop {
            let detail = k.admin.room(&room_id).await.unwrap();
            let wrong: Vec<String> = won
                .iter()
                .filter_map(|(id, action)| {
                    let user = &user_of[id];
                    let membership = detail
                        .state
                        .iter()
                        .find(|s| s.event_type == "m.room.member" && &s.state_key == user)
                        .and_then(|s| s.content["membership"].as_str());
                    let expected = match action {
                        Action::Approve => "invite",
                        Action::Deny => "leave",
                        Action::Ban => "ban",
                    };
                    (membership != Some(expected))
                        .then(|| format!("{user}: {membership:?}, not {expected}"))
                })
                .collect();
            if wrong.is_empty() {
                break;
            }
            tries += 1;
            assert!(tries < 200, "{backend:?}: {wrong:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        k.stop().await;
    }
}

/// The knock's outcome: 200, or the status of a refusal.
async fn knock(k: &TestKnockd, sim: &SimServer, room_id: &str, local: &str) -> StatusCode {
    sim.knock(&k.server_name, room_id, local, None).await.0
}

// The database refuses writes — PostgreSQL read-only (a role whose new sessions are read-only, and
// knockd's connections cut), SQLite held by another writer past knockd's busy timeout: knocks and
// decisions get 5xx, never 200, and nothing of them is stored; once the database takes writes
// again, knockd recovers without a restart.
#[tokio::test]
async fn a_database_refusing_writes_gets_5xx_never_200_and_knockd_recovers() {
    for backend in backends() {
        let mut db = TestDb::new(backend);
        let fault = match backend {
            knockd_tests::TestBackend::Postgres => Fault::read_only_role(&mut db),
            knockd_tests::TestBackend::Sqlite => Fault::Sqlite { url: db.url.clone(), held: None },
        };
        refusing_writes(db, fault).await;
    }
}

// The database full: every insert into the tables a knock or a decision writes fails as a full
// disk does (PostgreSQL's SQLSTATE 53100 disk_full, SQLite's "database or disk is full", raised by
// triggers the test adds and then drops): 5xx, never 200, nothing half-written, and knockd
// recovers once there is room again.
#[tokio::test]
async fn a_full_database_gets_5xx_never_200_and_knockd_recovers() {
    for backend in backends() {
        let db = TestDb::new(backend);
        let fault = Fault::Full { url: db.url.clone(), backend };
        refusing_writes(db, fault).await;
    }
}

async fn refusing_writes(db: TestDb, mut fault: Fault) {
    let backend = db.backend;
    {
        let k = TestKnockd::start_with(db, &FAST).await;
        let sim = SimServer::start().await;
        let room_id = k.admin.create_room(&CreateRoomRequest::default()).await.unwrap().room_id;
        assert_eq!(knock(&k, &sim, &room_id, "before").await, StatusCode::OK);
        let first = k
            .admin
            .list_knocks(&KnockQuery { room_id: Some(room_id.clone()), ..Default::default() })
            .await
            .unwrap()
            .knocks[0]
            .id;

        fault.start();
        let status = knock(&k, &sim, &room_id, "during").await;
        assert!(status.is_server_error(), "{backend:?}: a knock while writes fail: {status}");
        match k.admin.approve(first, None).await {
            Err(ClientError::Api { status, .. }) => {
                assert!(status >= 500, "{backend:?}: approve while writes fail: {status}")
            }
            other => panic!("{backend:?}: approve while writes fail: {other:?}"),
        }
        fault.stop();

        let pending = |k: &TestKnockd| {
            let admin = k.admin.clone();
            let room_id = room_id.clone();
            async move {
                let query = KnockQuery {
                    room_id: Some(room_id),
                    status: Some("pending".into()),
                    ..Default::default()
                };
                admin.list_knocks(&query).await.unwrap().knocks
            }
        };
        let waiting = pending(&k).await;
        assert_eq!(waiting.len(), 1, "{backend:?}: only the knock made before: {waiting:?}");
        assert_eq!(waiting[0].id, first, "{backend:?}: the approval was not half-written");
        let decisions = k.admin.decisions(&DecisionQuery::default()).await.unwrap().decisions;
        assert!(decisions.is_empty(), "{backend:?}: {decisions:?}");

        // Recovered: the first request on a fresh connection may still fail, then it works.
        let mut status = knock(&k, &sim, &room_id, "after").await;
        for _ in 0..20 {
            if status == StatusCode::OK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            status = knock(&k, &sim, &room_id, "after").await;
        }
        assert_eq!(status, StatusCode::OK, "{backend:?}: knockd recovers");
        k.admin.approve(first, None).await.expect("approve after recovery");
        assert_eq!(pending(&k).await.len(), 1, "{backend:?}: 'after' waits, 'before' approved");
        k.stop().await;
        fault.clean_up();
    }
}

/// A database that stops taking writes and takes them again.
enum Fault {
    /// knockd connects as `role`; read-only is that role's default for new sessions.
    Postgres { admin_url: String, role: String },
    /// Another connection holds SQLite's write lock.
    Sqlite { url: String, held: Option<diesel::SqliteConnection> },
    /// Inserts fail as on a full disk (triggers on knockd's tables in `url`'s database).
    Full { url: String, backend: knockd_tests::TestBackend },
}

/// The tables a knock, a knock's event or a decision inserts into.
const FULL_TABLES: [&str; 3] = ["events", "knocks", "decisions"];

impl Fault {
    /// A role of its own (so that no other test's database is touched) for knockd on `db`.
    fn read_only_role(db: &mut TestDb) -> Self {
        let admin_url = std::env::var("KNOCKD_TEST_DATABASE_URL").unwrap();
        let role = format!("ro_{}", knockd_tests::random_hex(6));
        Self::sql(&admin_url, &format!("CREATE ROLE {role} LOGIN SUPERUSER"));
        let (scheme, rest) = db.url.split_once("://").unwrap();
        let host = rest.split_once('@').map_or(rest, |(_, h)| h);
        db.url = format!("{scheme}://{role}@{host}");
        Fault::Postgres { admin_url, role }
    }

    fn sql(url: &str, sql: &str) {
        use diesel::{Connection, RunQueryDsl};
        let mut conn = diesel::PgConnection::establish(url).unwrap();
        diesel::sql_query(sql).execute(&mut conn).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Ends the role's sessions: knockd's next connections get the role's new defaults.
    fn cut(admin_url: &str, role: &str) {
        Self::sql(
            admin_url,
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
            ),
        );
    }

    fn start(&mut self) {
        use diesel::{Connection, RunQueryDsl};
        match self {
            Fault::Postgres { admin_url, role } => {
                Self::sql(
                    admin_url,
                    &format!("ALTER ROLE {role} SET default_transaction_read_only = on"),
                );
                Self::cut(admin_url, role);
            }
            Fault::Sqlite { url, held } => {
                let path = url.strip_prefix("sqlite://").unwrap();
                let mut conn = diesel::SqliteConnection::establish(path).unwrap();
                diesel::sql_query("BEGIN EXCLUSIVE").execute(&mut conn).unwrap();
                *held = Some(conn);
            }
            Fault::Full { url, backend: knockd_tests::TestBackend::Postgres } => {
                let mut sql = String::from(
                    "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                     RAISE EXCEPTION 'could not extend file: No space left on device' \
                     USING ERRCODE = '53100'; END $$;",
                );
                for t in FULL_TABLES {
                    sql.push_str(&format!(
                        "CREATE TRIGGER full_{t} BEFORE INSERT ON {t} FOR EACH ROW \
                         EXECUTE FUNCTION disk_full();"
                    ));
                }
                Self::batch_pg(url, &sql);
            }
            Fault::Full { url, backend: knockd_tests::TestBackend::Sqlite } => {
                let mut sql = String::new();
                for t in FULL_TABLES {
                    sql.push_str(&format!(
                        "CREATE TRIGGER full_{t} BEFORE INSERT ON {t} \
                         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;"
                    ));
                }
                Self::batch_sqlite(url, &sql);
            }
        }
    }

    fn batch_pg(url: &str, sql: &str) {
        use diesel::{Connection, connection::SimpleConnection};
        let mut conn = diesel::PgConnection::establish(url).unwrap();
        conn.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn batch_sqlite(url: &str, sql: &str) {
        use diesel::{Connection, connection::SimpleConnection};
        let path = url.strip_prefix("sqlite://").unwrap();
        let mut conn = diesel::SqliteConnection::establish(path).unwrap();
        conn.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn stop(&mut self) {
        use diesel::RunQueryDsl;
        match self {
            Fault::Postgres { admin_url, role } => {
                Self::sql(
                    admin_url,
                    &format!("ALTER ROLE {role} RESET default_transaction_read_only"),
                );
                Self::cut(admin_url, role);
            }
            Fault::Sqlite { held, .. } => {
                if let Some(mut conn) = held.take() {
                    diesel::sql_query("ROLLBACK").execute(&mut conn).unwrap();
                }
            }
            Fault::Full { url, backend } => {
                let drops: String =
                    FULL_TABLES.iter().map(|t| format!("DROP TRIGGER full_{t} ON {t};")).collect();
                match backend {
                    knockd_tests::TestBackend::Postgres => {
                        Self::batch_pg(url, &format!("{drops} DROP FUNCTION disk_full();"))
                    }
                    knockd_tests::TestBackend::Sqlite => {
                        let drops = drops.replace(" ON events", "").replace(" ON knocks", "");
                        let drops = drops.replace(" ON decisions", "");
                        Self::batch_sqlite(url, &drops)
                    }
                }
            }
        }
    }

    fn clean_up(&self) {
        if let Fault::Postgres { admin_url, role } = self {
            Self::cut(admin_url, role);
            Self::sql(admin_url, &format!("DROP OWNED BY {role}"));
            Self::sql(admin_url, &format!("DROP ROLE {role}"));
        }
    }
}

/// A loopback TCP proxy in front of PostgreSQL that can cut every connection and refuse new ones
/// for a while: to knockd, a database restart.
struct CutProxy {
    addr: std::net::SocketAddr,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    live: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    async fn start(upstream: String) -> Self {
        use std::sync::{Arc, Mutex, atomic::AtomicBool};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (d, l) = (down.clone(), live.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if d.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                l.lock().unwrap().push(pipe.abort_handle());
            }
        });
        Self { addr, down, live, task }
    }

    /// A proxy in front of `db`'s PostgreSQL, `db` pointed at it
    /// (`postgres://user@host:port/db?…` → the same through the proxy).
    async fn in_front_of(db: &mut TestDb) -> Self {
        let (scheme, rest) = db.url.split_once("://").unwrap();
        let (user, rest) = rest.split_once('@').unwrap();
        let (host, tail) = rest.split_once('/').unwrap();
        let proxy = Self::start(host.to_owned()).await;
        db.url = format!("{scheme}://{user}@{}/{tail}", proxy.addr);
        proxy
    }

    /// Cuts every connection and refuses new ones until [`Self::up`].
    fn down(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for pipe in self.live.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }

    fn up(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.down();
        self.task.abort();
    }
}

// PostgreSQL "restarted" (every connection cut, new ones refused for a second) while knocks
// stream in from four servers, each retrying what failed with the same signed event: every knock
// ends up answered 200 (knockd recovers without a restart), each is in the queue once, and the
// room's state in memory is the stored one.
#[tokio::test]
async fn postgres_restarted_while_knocks_stream_in() {
    use knockd_tests::TestBackend;
    if !backends().contains(&TestBackend::Postgres) {
        eprintln!("skipped: KNOCKD_TEST_DATABASE_URL is not set");
        return;
    }
    const PER_SERVER: usize = 25;
    let mut db = TestDb::new(TestBackend::Postgres);
    let proxy = CutProxy::in_front_of(&mut db).await;
    let k = TestKnockd::start_with(db, &FAST).await;
    let room_id = k.admin.create_room(&CreateRoomRequest::default()).await.unwrap().room_id;
    let sims = [
        SimServer::start().await,
        SimServer::start().await,
        SimServer::start().await,
        SimServer::start().await,
    ];

    let streams = sims.iter().map(|sim| {
        let (server, room_id) = (k.server_name.clone(), room_id.clone());
        async move {
            let mut refused = 0;
            for i in 0..PER_SERVER {
                let user = sim.user(&format!("s{i}"));
                // make_knock, retried until it answers; then the same event until it is taken.
                let (version, template) = loop {
                    let (s, made) = sim.make_knock(&server, &room_id, user.as_str()).await;
                    if s == StatusCode::OK {
                        break (
                            made["room_version"].as_str().unwrap().to_owned(),
                            made["event"].clone(),
                        );
                    }
                    assert!(s.is_server_error(), "make_knock: {s} {made}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                let (id, pdu) = sim.sign_template(&version, &template, None);
                for attempt in 0.. {
                    let (s, b) = sim.send_knock(&server, &room_id, id.as_str(), &pdu).await;
                    if s == StatusCode::OK {
                        break;
                    }
                    assert!(
                        s.is_server_error(),
                        "send_knock: only 5xx while the database is away: {s} {b}"
                    );
                    assert!(attempt < 100, "knockd never recovered: {s} {b}");
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            refused
        }
    });
    let cut = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.down();
        tokio::time::sleep(Duration::from_secs(1)).await;
        proxy.up();
    };
    let (refused, ()) = tokio::join!(join_all(streams), cut);
    let refused: usize = refused.iter().sum();
    eprintln!("answers other than 200 while the database was away: {refused}");

    let query =
        KnockQuery { room_id: Some(room_id.clone()), limit: Some(1000), ..Default::default() };
    let knocks = k.admin.list_knocks(&query).await.unwrap().knocks;
    let mut users: Vec<&str> = knocks.iter().map(|n| n.user_id.as_str()).collect();
    users.sort();
    let total = users.len();
    users.dedup();
    assert_eq!(users.len(), total, "no knock twice");
    assert_eq!(total, PER_SERVER * sims.len(), "every knock answered 200 is in the queue");
    assert!(knocks.iter().all(|n| n.status == "pending"));

    let room = k.app.rooms.snapshot(&room_id).await.unwrap().expect("room");
    let memory: std::collections::BTreeMap<(String, String), String> =
        room.current.state.iter().map(|(key, id)| (key.clone(), id.to_string())).collect();
    let r = room_id.clone();
    let stored: std::collections::BTreeMap<(String, String), String> = k
        .app
        .db
        .read(move |conn| -> Result<_, knockd::store::StoreError> {
            Ok(knockd::store::rooms::current_state_rows(conn, &r)?
                .into_iter()
                .map(|(t, s, id, _)| ((t, s), id))
                .collect())
        })
        .await
        .unwrap();
    assert_eq!(memory, stored);
    let knocking = stored.keys().filter(|(t, _)| t == "m.room.member").count();
    assert_eq!(knocking, PER_SERVER * sims.len() + 1, "the knocks and the creator");
    k.stop().await;
}

// A knocker's server down for a long time (many back-off rounds at short settings): the approvals
// wait as delivery_pending, nothing is parked, and when it returns each invite arrives once.
#[tokio::test]
async fn a_server_down_for_long_gets_its_invites_when_it_returns() {
    for backend in backends() {
        let k = TestKnockd::start_with(TestDb::new(backend), &FAST).await;
        let sim = SimServer::start().await;
        let room_id = k.admin.create_room(&CreateRoomRequest::default()).await.unwrap().room_id;
        for i in 0..5 {
            assert_eq!(knock(&k, &sim, &room_id, &format!("d{i}")).await, StatusCode::OK);
        }
        let query = KnockQuery { room_id: Some(room_id.clone()), ..Default::default() };
        let ids: Vec<i64> =
            k.admin.list_knocks(&query).await.unwrap().knocks.iter().map(|n| n.id).collect();
        sim.set_mode(knockd_tests::sim::Mode::Down);
        for id in &ids {
            k.admin.approve(*id, None).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        let attempts = sim.inbox().invite_attempts;
        assert!(attempts >= 10, "{backend:?}: retried all along: {attempts} attempts");
        for id in &ids {
            assert_eq!(k.admin.knock(*id).await.unwrap().knock.status, "delivery_pending");
        }
        let outbox = k.admin.outbox().await.unwrap();
        assert!(outbox.parked.is_empty(), "{backend:?}: {outbox:?}");
        assert_eq!(outbox.pending, ids.len() as i64, "{backend:?}");

        sim.set_mode(knockd_tests::sim::Mode::Accept);
        for id in &ids {
            let mut status = String::new();
            for _ in 0..200 {
                status = k.admin.knock(*id).await.unwrap().knock.status;
                if status == "approved" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(status, "approved", "{backend:?}: knock {id}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sim.inbox().invites.len(), ids.len(), "{backend:?}: each invite once");
        k.stop().await;
    }
}

// Found by the test above: a server knockd had never seen, asking while PostgreSQL was away, was
// answered 401 (as if its signature were bad) because its key could not be looked up. Our own
// failure is a 503, so that the server tries again; once the database is back, it is served.
#[tokio::test]
async fn a_new_server_asking_while_the_database_is_away_gets_503_not_401() {
    use knockd_tests::TestBackend;
    if !backends().contains(&TestBackend::Postgres) {
        eprintln!("skipped: KNOCKD_TEST_DATABASE_URL is not set");
        return;
    }
    let mut db = TestDb::new(TestBackend::Postgres);
    let proxy = CutProxy::in_front_of(&mut db).await;
    let k = TestKnockd::start_with(db, &FAST).await;
    let room_id = k.admin.create_room(&CreateRoomRequest::default()).await.unwrap().room_id;
    let stranger = SimServer::start().await;
    proxy.down();
    let user = stranger.user("new");
    let (status, body) = stranger.make_knock(&k.server_name, &room_id, user.as_str()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    proxy.up();
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        status = stranger.make_knock(&k.server_name, &room_id, user.as_str()).await.0;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::OK);
    k.stop().await;
}
