//! The outbound queue under a slow or refusing destination (security issue: outbox lease and
//! retries): one transaction in flight per destination, also when the destination stalls past the
//! request timeout and the lease, also with two knockd instances on one PostgreSQL; a started
//! transaction is resent with the same txnId and body until answered; 401, 404 and timeouts are
//! retried, never dropped; a body refused again and again is parked, with the reason.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use futures::future::join_all;
use knockd_shared::{CreateRoomRequest, RoomSettings};
use knockd_tests::{
    SimServer, TestBackend, TestDb, TestKnockd, backends,
    sim::{Inbox, Mode},
};
use serde_json::json;

/// Fast retries, a 1 s request timeout and a 2 s lease: a 3 s stall outlasts both.
const QUICK: [(&str, &str); 5] = [
    ("KNOCKD_OUTBOX_MIN_BACKOFF_MS", "50"),
    ("KNOCKD_OUTBOX_MAX_BACKOFF_MS", "300"),
    ("KNOCKD_OUTBOX_POLL_MS", "50"),
    ("KNOCKD_FEDERATION_REQUEST_TIMEOUT_MS", "1000"),
    ("KNOCKD_OUTBOX_LEASE_MS", "2000"),
];
const STALL_MS: u64 = 3_000;

/// A room of `k` with a member on `sim`'s server: every event of the room goes to `sim`.
async fn room_with_remote_member(k: &TestKnockd, sim: &SimServer) -> String {
    let room_id = k.admin.create_room(&CreateRoomRequest::default()).await.unwrap().room_id;
    let member = sim.user("member");
    for (sender, membership) in [(k.admin_user(), "invite"), (member.to_string(), "join")] {
        k.seed_state(
            &room_id,
            &sender,
            "m.room.member",
            member.as_str(),
            json!({ "membership": membership }),
        )
        .await
        .unwrap();
    }
    room_id
}

/// Changes the topic `n` times through `k`'s admin API; returns the topics (one PDU each).
async fn topics(k: &TestKnockd, room_id: &str, label: &str, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let topic = format!("{label} {i}");
        let settings = RoomSettings { topic: Some(topic.clone()), ..RoomSettings::default() };
        k.admin.update_room(room_id, &settings).await.unwrap();
        out.push(topic);
    }
    out
}

fn topics_in(body: &serde_json::Value) -> Vec<String> {
    body["pdus"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["content"]["topic"].as_str().map(str::to_owned))
        .collect()
}

/// Every topic was answered, each sent under exactly one txnId (resent only as that same
/// transaction), and every attempt of a txnId carried the same body.
fn delivered_exactly_once(inbox: &Inbox, wanted: &[String]) -> Result<(), String> {
    let mut bodies: HashMap<&str, &serde_json::Value> = HashMap::new();
    let mut txns_of: HashMap<String, HashSet<&str>> = HashMap::new();
    for (txn_id, body) in inbox.send_attempts.iter().chain(&inbox.transactions) {
        if *bodies.entry(txn_id).or_insert(body) != body {
            return Err(format!("{txn_id} was sent with two different bodies"));
        }
        for topic in topics_in(body) {
            txns_of.entry(topic).or_default().insert(txn_id);
        }
    }
    let answered: HashSet<String> =
        inbox.transactions.iter().flat_map(|(_, b)| topics_in(b)).collect();
    for topic in wanted {
        match txns_of.get(topic).map(HashSet::len) {
            Some(1) if answered.contains(topic) => {}
            Some(1) => return Err(format!("{topic:?} was never answered")),
            Some(n) => return Err(format!("{topic:?} went out in {n} different transactions")),
            None => return Err(format!("{topic:?} never went out")),
        }
    }
    Ok(())
}

async fn wait_delivered(sim: &SimServer, wanted: &[String], secs: u64) -> Inbox {
    let answered = |i: &Inbox| {
        let got: HashSet<String> = i.transactions.iter().flat_map(|(_, b)| topics_in(b)).collect();
        wanted.iter().all(|t| got.contains(t))
    };
    sim.wait_for(secs, "every topic answered", answered).await
}

async fn wait_outbox_empty(k: &TestKnockd) {
    for _ in 0..400 {
        if k.admin.outbox().await.unwrap().pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the outbox never emptied: {:?}", k.admin.outbox().await.unwrap());
}

/// The txnIds of the attempts so far, in order.
fn attempt_ids(inbox: &Inbox) -> Vec<String> {
    inbox.send_attempts.iter().map(|(id, _)| id.clone()).collect()
}

// A destination that holds every /send longer than the request timeout and the lease: knockd gives
// up on each attempt and retries the same transaction, never two at once, and when the destination
// recovers every PDU arrives in exactly one transaction.
#[tokio::test]
async fn a_stalled_destination_never_has_two_transactions_in_flight() {
    for backend in backends() {
        let k = TestKnockd::start_with(TestDb::new(backend), &QUICK).await;
        let sim = SimServer::start().await;
        let room_id = room_with_remote_member(&k, &sim).await;
        sim.set_mode(Mode::StallSends(STALL_MS));
        let wanted = topics(&k, &room_id, "stalled", 60).await;
        let stalled = sim.wait_for(30, "three attempts", |i| i.send_attempts.len() >= 3).await;
        let ids = attempt_ids(&stalled);
        assert!(
            ids.iter().all(|id| *id == ids[0]),
            "{backend:?}: one transaction retried: {ids:?}"
        );
        assert!(stalled.transactions.is_empty(), "{backend:?}: nothing answered while stalled");
        sim.set_mode(Mode::Accept);
        let inbox = wait_delivered(&sim, &wanted, 30).await;
        wait_outbox_empty(&k).await;
        let inbox = Inbox { max_sends_in_flight: sim.inbox().max_sends_in_flight, ..inbox };
        assert_eq!(inbox.max_sends_in_flight, 1, "{backend:?}: two transactions at once");
        assert!(inbox.transactions.iter().any(|(id, _)| *id == ids[0]), "{backend:?}");
        delivered_exactly_once(&inbox, &wanted).unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        assert_eq!(inbox.bad_signatures, 0);
        k.stop().await;
    }
}

// The case at the real defaults (60 s request timeout, lease derived from it): a
// destination that takes 45 s to answer a transaction sees it once, and nothing else meanwhile.
// Both backends run at once: this test waits out the 45 s.
#[tokio::test]
async fn a_45_second_stall_at_the_default_timeouts_sees_one_transaction() {
    join_all(backends().into_iter().map(stall_45_seconds)).await;
}

async fn stall_45_seconds(backend: TestBackend) {
    let poll = [("KNOCKD_OUTBOX_POLL_MS", "50")];
    let k = TestKnockd::start_with(TestDb::new(backend), &poll).await;
    let sim = SimServer::start().await;
    let room_id = room_with_remote_member(&k, &sim).await;
    sim.set_mode(Mode::StallSends(45_000));
    let mut wanted = topics(&k, &room_id, "slow", 1).await;
    sim.wait_for(10, "the first attempt", |i| !i.send_attempts.is_empty()).await;
    // Only the first transaction is held; anything sent after it is answered at once.
    sim.set_mode(Mode::Accept);
    wanted.extend(topics(&k, &room_id, "behind", 2).await);
    wait_delivered(&sim, &wanted, 90).await;
    wait_outbox_empty(&k).await;
    let inbox = sim.inbox();
    assert_eq!(inbox.max_sends_in_flight, 1, "{backend:?}: two transactions at once");
    let first = &inbox.send_attempts[0].0;
    let times = inbox.send_attempts.iter().filter(|(id, _)| id == first).count();
    assert_eq!(times, 1, "{backend:?}: the held transaction was answered, not resent");
    delivered_exactly_once(&inbox, &wanted).unwrap_or_else(|e| panic!("{backend:?}: {e}"));
    k.stop().await;
}

// Two knockd instances behind one server name on one PostgreSQL database, both with work for the
// same stalled destination: each has its own instance id, there is never more than one
// transaction in flight, and when the instance holding the lease stops, the other resends the
// started transaction (same txnId, same body) and everything arrives once.
#[tokio::test]
async fn two_instances_on_one_postgres_never_send_at_once() {
    if !backends().contains(&TestBackend::Postgres) {
        eprintln!("skipped: KNOCKD_TEST_DATABASE_URL is not set");
        return;
    }
    // The database outlives both instances, whichever is stopped first.
    let db = TestDb::new(TestBackend::Postgres);
    let first = TestKnockd::start_with(db.alias(), &QUICK).await;
    let second = first.start_peer(&QUICK).await;
    let mut ids = Vec::new();
    for k in [&first, &second] {
        let path = k.data_dir.join(knockd::server::INSTANCE_ID_FILE);
        let id = std::fs::read_to_string(&path).expect("instance.id").trim().to_owned();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
        assert!(id.len() >= 32, "{id:?}");
        assert_eq!(&*k.app.instance_id, id);
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "each instance has its own id");

    let sim = SimServer::start().await;
    let room_id = room_with_remote_member(&first, &sim).await;
    sim.set_mode(Mode::StallSends(STALL_MS));
    let mut wanted = Vec::new();
    for i in 0..3 {
        for k in [&first, &second] {
            wanted
                .extend(topics(k, &room_id, &format!("from {} round {i}", k.admin_url), 10).await);
        }
    }
    let stalled = sim.wait_for(30, "four attempts", |i| i.send_attempts.len() >= 4).await;
    let started = attempt_ids(&stalled);
    assert!(started.iter().all(|id| *id == started[0]), "one transaction retried: {started:?}");

    // Stop whichever instance holds the lease now; the other must take the transaction over.
    let destination = sim.server_name.to_string();
    let owner = lease_owner(&first, &destination).await;
    assert!(ids.contains(&owner), "leases are held under instance ids: {owner:?}");
    let (stopped, survivor) = if owner == ids[0] { (first, second) } else { (second, first) };
    stopped.stop().await;
    // From here on, only the survivor sends.
    let after_stop = sim.inbox().send_attempts.len();
    sim.set_mode(Mode::Accept);
    let inbox = wait_delivered(&sim, &wanted, 60).await;
    wait_outbox_empty(&survivor).await;
    let inbox = Inbox { max_sends_in_flight: sim.inbox().max_sends_in_flight, ..inbox };
    assert_eq!(inbox.max_sends_in_flight, 1, "two transactions at once");
    assert!(
        inbox.send_attempts[after_stop..].iter().any(|(id, _)| *id == started[0]),
        "the survivor resent the started transaction"
    );
    assert!(inbox.transactions.iter().any(|(id, _)| *id == started[0]), "the started one answered");
    delivered_exactly_once(&inbox, &wanted).unwrap_or_else(|e| panic!("{e}"));
    survivor.stop().await;
    drop(db);
}

/// Who holds the destination's lease (waiting out the moment between a release and a lease).
async fn lease_owner(k: &TestKnockd, destination: &str) -> String {
    for _ in 0..200 {
        let d = destination.to_owned();
        let row = k
            .app
            .db
            .read(move |conn| knockd::store::outbox::destination(conn, &d))
            .await
            .expect("destination row");
        if let Some(owner) = row.and_then(|row| row.lease_owner) {
            return owner;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nobody holds the lease of {destination}");
}

// 401, 404 and a timeout on /send are the destination's trouble, not the transaction's: knockd
// backs off and resends the same transaction until it is answered; nothing is dropped or parked.
#[tokio::test]
async fn a_401_404_or_timeout_is_retried_with_the_same_transaction() {
    for backend in backends() {
        let k = TestKnockd::start_with(TestDb::new(backend), &QUICK).await;
        let sim = SimServer::start().await;
        let room_id = room_with_remote_member(&k, &sim).await;
        let modes = [
            Mode::RefuseSends(401, "M_UNAUTHORIZED".into()),
            Mode::RefuseSends(404, "M_UNRECOGNIZED".into()),
            Mode::StallSends(STALL_MS),
        ];
        for mode in modes {
            let case = format!("{backend:?} {mode:?}");
            sim.clear_inbox();
            sim.set_mode(mode);
            let wanted = topics(&k, &room_id, &case, 3).await;
            let failing = sim.wait_for(30, "three attempts", |i| i.send_attempts.len() >= 3).await;
            let ids = attempt_ids(&failing);
            assert!(ids.iter().all(|id| *id == ids[0]), "{case}: one transaction retried: {ids:?}");
            let status = k.admin.outbox().await.unwrap();
            assert_eq!(status.pending, 3, "{case}: still queued");
            assert!(status.parked.is_empty(), "{case}: {:?}", status.parked);
            sim.set_mode(Mode::Accept);
            let inbox = wait_delivered(&sim, &wanted, 30).await;
            wait_outbox_empty(&k).await;
            assert!(inbox.transactions.iter().any(|(id, _)| *id == ids[0]), "{case}");
            delivered_exactly_once(&inbox, &wanted).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(sim.inbox().max_sends_in_flight, 1, "{case}: two transactions at once");
        }
        k.stop().await;
    }
}

// A body the destination refuses (400 M_BAD_JSON) is not resent forever: after
// outbox.park_after_refusals attempts its items are parked, shown with the reason in the admin
// API, and the destination gets the next items.
#[tokio::test]
async fn a_body_refused_again_and_again_is_parked_with_the_reason() {
    for backend in backends() {
        let mut env = QUICK.to_vec();
        env.push(("KNOCKD_OUTBOX_PARK_AFTER_REFUSALS", "3"));
        let k = TestKnockd::start_with(TestDb::new(backend), &env).await;
        let sim = SimServer::start().await;
        let room_id = room_with_remote_member(&k, &sim).await;
        sim.set_mode(Mode::RefuseSends(400, "M_BAD_JSON".into()));
        let refused = topics(&k, &room_id, "refused", 2).await;
        let mut status = k.admin.outbox().await.unwrap();
        for _ in 0..600 {
            if status.parked.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            status = k.admin.outbox().await.unwrap();
        }
        assert_eq!(status.parked.len(), 2, "{backend:?}: both parked: {status:?}");
        assert_eq!(status.pending, 0, "{backend:?}");
        for item in &status.parked {
            let why = item.last_error.as_deref().unwrap_or_default();
            assert_eq!(item.kind, "pdu");
            assert_eq!(item.destination, sim.server_name.as_str());
            assert!(why.contains("M_BAD_JSON") && why.contains("refused 3 times"), "{why}");
        }

        sim.set_mode(Mode::Accept);
        let next = topics(&k, &room_id, "next", 1).await;
        let inbox = wait_delivered(&sim, &next, 30).await;
        let mut attempts: HashMap<&str, usize> = HashMap::new();
        for (id, body) in &inbox.send_attempts {
            if topics_in(body).iter().any(|t| refused.contains(t)) {
                *attempts.entry(id).or_default() += 1;
            }
        }
        assert!(!attempts.is_empty() && attempts.values().all(|n| *n == 3), "{attempts:?}");
        let answered: Vec<String> =
            inbox.transactions.iter().flat_map(|(_, b)| topics_in(b)).collect();
        assert!(refused.iter().all(|t| !answered.contains(t)), "parked items stay parked");
        k.stop().await;
    }
}

// The fence itself, on the store: a sender whose lease ran out and was taken over (here by a
// later task of the same instance, so only the generation tells them apart) commits nothing, and
// the new holder finds the started transaction intact and finishes it.
#[tokio::test]
async fn a_sender_that_lost_its_lease_commits_nothing() {
    use knockd::{
        matrix::now_ms,
        store::{StoreError, outbox},
    };
    const HOUR: i64 = 3_600_000;
    // Never contacted: the leases below are held for hours, so knockd's own sender stays away.
    const DEST: &str = "fenced.example.org";
    for backend in backends() {
        let k = TestKnockd::start_with(TestDb::new(backend), &QUICK).await;
        let db = k.app.db.clone();
        let now = now_ms();
        let (old, ids) = db
            .write(move |conn| -> Result<_, StoreError> {
                let ids = vec![
                    outbox::enqueue(conn, DEST, outbox::KIND_PDU, "{}", "!room:example.org", now)?,
                    outbox::enqueue(conn, DEST, outbox::KIND_PDU, "{}", "!room:example.org", now)?,
                ];
                let old = outbox::lease(conn, DEST, "me", now, HOUR)?.expect("free");
                outbox::start_txn(conn, &old, "txn-a", "{\"pdus\":[{},{}]}", &ids)?;
                Ok((old, ids))
            })
            .await
            .unwrap();
        let new = db
            .write(move |conn| outbox::lease(conn, DEST, "me", now + 2 * HOUR, HOUR))
            .await
            .unwrap()
            .expect("an expired lease is taken");
        assert!(new.generation > old.generation, "{backend:?}");

        let o = old.clone();
        let renewed = db.write(move |conn| outbox::renew(conn, &o, now, HOUR)).await.unwrap();
        let first = ids[0];
        assert!(!renewed, "{backend:?}: renewed a lost lease");
        let attempts: Vec<(&str, Result<(), StoreError>)> = vec![
            ("finish_txn", write(&db, &old, |c, l| outbox::finish_txn(c, l, "txn-a")).await),
            ("start_txn", write(&db, &old, |c, l| outbox::start_txn(c, l, "x", "{}", &[])).await),
            ("succeeded", write(&db, &old, outbox::succeeded).await),
            (
                "failed",
                write(&db, &old, move |c, l| {
                    outbox::failed(c, l, "boom", now, (10, 20), |b| b).map(drop)
                })
                .await,
            ),
            (
                "refused",
                write(&db, &old, move |c, l| {
                    outbox::refused(c, l, "txn-a", "no", now, 1).map(drop)
                })
                .await,
            ),
            (
                "park_if_failing_since",
                write(&db, &old, move |c, l| {
                    outbox::park_if_failing_since(c, l, now, now).map(drop)
                })
                .await,
            ),
            ("delete_item", write(&db, &old, move |c, l| outbox::delete_item(c, l, first)).await),
        ];
        for (what, result) in attempts {
            assert!(matches!(result, Err(StoreError::LeaseLost)), "{backend:?} {what}: {result:?}");
        }
        write(&db, &old, outbox::release).await.expect("releasing a lost lease is a no-op");

        let row = destination(&db).await;
        assert_eq!(row.lease_owner.as_deref(), Some("me"), "{backend:?}");
        assert_eq!(row.lease_gen, new.generation, "{backend:?}: still the new holder's");
        assert_eq!(row.txn_id.as_deref(), Some("txn-a"), "{backend:?}");
        assert_eq!(row.txn_body.as_deref(), Some("{\"pdus\":[{},{}]}"), "{backend:?}");
        assert_eq!((row.backoff_ms, row.txn_refusals, row.last_error), (0, 0, None));
        assert_eq!(pending(&db).await, 2, "{backend:?}: nothing deleted or parked");

        write(&db, &new, |c, l| outbox::finish_txn(c, l, "txn-a")).await.unwrap();
        assert_eq!(pending(&db).await, 0, "{backend:?}: the new holder finished it");
        write(&db, &new, outbox::release).await.unwrap();
        assert_eq!(destination(&db).await.lease_owner, None, "{backend:?}");
        k.stop().await;
    }
}

// Items a pre-fencing knockd left marked for a transaction their destination no longer has go
// back to the queue at the next lease instead of waiting forever.
#[tokio::test]
async fn items_stranded_with_a_txn_id_are_requeued_at_the_next_lease() {
    use diesel::RunQueryDsl;
    use knockd::{
        matrix::now_ms,
        store::{StoreError, outbox},
    };
    const HOUR: i64 = 3_600_000;
    const DEST: &str = "fenced.example.org";
    for backend in backends() {
        let k = TestKnockd::start_with(TestDb::new(backend), &QUICK).await;
        let now = now_ms();
        let queued = k
            .app
            .db
            .write(move |conn| -> Result<_, StoreError> {
                let id =
                    outbox::enqueue(conn, DEST, outbox::KIND_PDU, "{}", "!room:example.org", now)?;
                let lease = outbox::lease(conn, DEST, "me", now, HOUR)?.expect("free");
                outbox::start_txn(conn, &lease, "txn-lost", "{}", &[id])?;
                // What the unfenced sender could leave: the destination forgot the transaction.
                diesel::sql_query(format!(
                    "UPDATE outbox_destinations SET txn_id = NULL, txn_body = NULL \
                     WHERE destination = '{DEST}'"
                ))
                .execute(conn)?;
                assert!(outbox::items(conn, DEST, outbox::KIND_PDU, 10)?.is_empty());
                let lease = outbox::lease(conn, DEST, "me", now + 2 * HOUR, HOUR)?.expect("taken");
                let items = outbox::items(conn, DEST, outbox::KIND_PDU, 10)?;
                outbox::release(conn, &lease)?;
                Ok(items.into_iter().map(|i| i.item_id).collect::<Vec<_>>())
            })
            .await
            .unwrap();
        assert_eq!(queued.len(), 1, "{backend:?}: the stranded item is queued again");
        k.stop().await;
    }
}

/// Runs one outbox write under `lease`.
async fn write<F>(
    db: &knockd::store::Db,
    lease: &knockd::store::outbox::Lease,
    f: F,
) -> Result<(), knockd::store::StoreError>
where
    F: FnOnce(
            &mut knockd::store::DbConn,
            &knockd::store::outbox::Lease,
        ) -> Result<(), knockd::store::StoreError>
        + Send
        + 'static,
{
    let lease = lease.clone();
    db.write(move |conn| f(conn, &lease)).await
}

async fn destination(db: &knockd::store::Db) -> knockd::store::outbox::Destination {
    db.read(|conn| knockd::store::outbox::destination(conn, "fenced.example.org"))
        .await
        .unwrap()
        .expect("row")
}

async fn pending(db: &knockd::store::Db) -> i64 {
    db.read(|conn| knockd::store::outbox::pending_count(conn, None)).await.unwrap()
}
