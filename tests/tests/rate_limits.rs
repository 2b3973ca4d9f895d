//! Federation edge under abuse (item 5): knock rate limits per origin and per room, a cap on a
//! room's pending knocks, and no re-sending of what arrived over `/send`.

use std::time::Duration;

use knockd_shared::{CreateRoomRequest, KnockQuery};
use knockd_tests::{SimServer, TestBackend, TestDb, TestKnockd, backends};
use reqwest::StatusCode;
use serde_json::{Value, json};

const FAST: [(&str, &str); 3] = [
    ("KNOCKD_OUTBOX_MIN_BACKOFF_MS", "50"),
    ("KNOCKD_OUTBOX_MAX_BACKOFF_MS", "300"),
    ("KNOCKD_OUTBOX_POLL_MS", "50"),
];

async fn start(extra: &[(&str, &str)], backend: TestBackend) -> TestKnockd {
    let mut env: Vec<(&str, &str)> = FAST.to_vec();
    env.extend_from_slice(extra);
    TestKnockd::start_with(TestDb::new(backend), &env).await
}

async fn room(k: &TestKnockd) -> String {
    k.admin
        .create_room(&CreateRoomRequest { room_version: Some("12".into()), ..Default::default() })
        .await
        .unwrap()
        .room_id
}

/// A 429 `M_LIMIT_EXCEEDED`: its `retry_after_ms`.
fn limited(status: StatusCode, body: &Value) -> u64 {
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED", "{body}");
    let ms = body["retry_after_ms"].as_u64().unwrap_or_else(|| panic!("no retry_after_ms: {body}"));
    assert!(ms > 0, "{body}");
    ms
}

/// make_knock for `local`: the room version and the template to sign.
async fn make(k: &TestKnockd, sim: &SimServer, room_id: &str, local: &str) -> (String, Value) {
    let user = sim.user(local);
    let (status, made) = sim.make_knock(&k.server_name, room_id, user.as_str()).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    (made["room_version"].as_str().unwrap().to_owned(), made["event"].clone())
}

async fn pending(k: &TestKnockd, room_id: &str) -> Vec<knockd_shared::KnockSummary> {
    k.admin
        .list_knocks(&KnockQuery {
            room_id: Some(room_id.into()),
            status: Some("pending".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .knocks
}

// A burst of knock requests from one origin beyond its bucket: 429 with retry_after_ms, for
// make_knock and send_knock alike; another origin is still let in; after the wait, the first
// origin is too.
#[tokio::test]
async fn one_origin_is_limited_and_recovers() {
    for backend in backends() {
        let k = start(
            &[("KNOCKD_KNOCK_RATE_PER_ORIGIN", "2"), ("KNOCKD_KNOCK_BURST_PER_ORIGIN", "4")],
            backend,
        )
        .await;
        let flood = SimServer::start().await;
        let other = SimServer::start().await;
        let room_id = room(&k).await;
        // Two whole knocks (make + send each) take the burst.
        for local in ["a0", "a1"] {
            let (s, b) = flood.knock(&k.server_name, &room_id, local, None).await;
            assert_eq!(s, StatusCode::OK, "{backend:?}: {b}");
        }
        let user = flood.user("a2");
        let (s, b) = flood.make_knock(&k.server_name, &room_id, user.as_str()).await;
        let wait = limited(s, &b);
        assert!(wait <= 500, "one token at 2/s: {b}");

        // Another server's knocks are not affected.
        let (s, b) = other.knock(&k.server_name, &room_id, "b0", None).await;
        assert_eq!(s, StatusCode::OK, "{b}");

        // After the wait: one token, enough for the make_knock but not also the send_knock.
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let (version, template) = make(&k, &flood, &room_id, "a2").await;
        let (id, pdu) = flood.sign_template(&version, &template, None);
        let (s, b) = flood.send_knock(&k.server_name, &room_id, id.as_str(), &pdu).await;
        let wait = limited(s, &b);
        assert_eq!(k.event_status(id.as_str()).await, None, "refused before anything is stored");
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let (s, b) = flood.send_knock(&k.server_name, &room_id, id.as_str(), &pdu).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(pending(&k, &room_id).await.len(), 4);
        k.stop().await;
    }
}

// The room's bucket is shared by every origin; another room has its own. Knocks over /send count
// toward the same buckets, refused one by one in the transaction's answer.
#[tokio::test]
async fn the_room_bucket_and_knocks_over_send() {
    for backend in backends() {
        let k = start(
            &[
                ("KNOCKD_KNOCK_RATE_PER_ORIGIN", "0"),
                ("KNOCKD_KNOCK_RATE_PER_ROOM", "0.1"),
                ("KNOCKD_KNOCK_BURST_PER_ROOM", "2"),
            ],
            backend,
        )
        .await;
        let sims = [SimServer::start().await, SimServer::start().await, SimServer::start().await];
        let room_id = room(&k).await;
        let quiet = room(&k).await;
        make(&k, &sims[0], &room_id, "u").await;
        make(&k, &sims[1], &room_id, "u").await;
        let user = sims[2].user("u");
        let (s, b) = sims[2].make_knock(&k.server_name, &room_id, user.as_str()).await;
        let wait = limited(s, &b);
        assert!(wait > 5_000 && wait <= 10_000, "one token at 0.1/s: {b}");
        assert!(b["error"].as_str().unwrap().contains("room"), "{b}");
        make(&k, &sims[2], &quiet, "u").await;

        // /send: the origin's knocks in the quiet room. One token is left there: the first knock
        // is taken, the second refused in the answer, the transaction itself is 200.
        let mut pdus = Vec::new();
        let mut ids = Vec::new();
        for user in [sims[0].user("v"), sims[0].user("w")] {
            let template = k
                .template(
                    &quiet,
                    user.as_str(),
                    "m.room.member",
                    Some(user.as_str()),
                    json!({ "membership": "knock" }),
                )
                .await;
            let (id, pdu) = sims[0].sign_event("12", template);
            ids.push(id.to_string());
            pdus.push(pdu);
        }
        let (s, answer) = sims[0].send_txn(&k.server_name, "t1", &pdus, &[]).await;
        assert_eq!(s, StatusCode::OK, "{answer}");
        assert_eq!(answer["pdus"][&ids[0]], json!({}), "{answer}");
        let refused = answer["pdus"][&ids[1]]["error"].as_str().unwrap_or_default();
        assert!(refused.starts_with("M_LIMIT_EXCEEDED"), "{answer}");
        assert_eq!(k.event_status(&ids[1]).await, None);
        assert_eq!(pending(&k, &quiet).await.len(), 1);
        k.stop().await;
    }
}

// A room holds at most max_pending_per_room pending knocks: the next knock is refused with
// M_LIMIT_EXCEEDED (a user's new knock replacing their own still goes through), and a decision
// makes room again.
#[tokio::test]
async fn pending_knocks_per_room_are_capped() {
    for backend in backends() {
        let k = start(&[("KNOCKD_KNOCK_MAX_PENDING_PER_ROOM", "2")], backend).await;
        let sim = SimServer::start().await;
        let room_id = room(&k).await;
        let other_room = room(&k).await;
        for local in ["p0", "p1"] {
            let (s, b) = sim.knock(&k.server_name, &room_id, local, None).await;
            assert_eq!(s, StatusCode::OK, "{backend:?}: {b}");
        }
        let (s, b) = sim.knock(&k.server_name, &room_id, "p2", None).await;
        limited(s, &b);
        assert!(b["error"].as_str().unwrap().contains("2 knocks waiting"), "{b}");
        // A knock again by one already waiting replaces theirs: the count stays 2.
        let (s, b) = sim.knock(&k.server_name, &room_id, "p0", Some("again")).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        // Another room is not full.
        let (s, b) = sim.knock(&k.server_name, &other_room, "p2", None).await;
        assert_eq!(s, StatusCode::OK, "{b}");

        let waiting = pending(&k, &room_id).await;
        assert_eq!(waiting.len(), 2);
        k.admin.deny(waiting[0].id, None, false).await.unwrap();
        let (s, b) = sim.knock(&k.server_name, &room_id, "p2", None).await;
        assert_eq!(s, StatusCode::OK, "a decision frees a place: {b}");
        let (s, b) = sim.knock(&k.server_name, &room_id, "p3", None).await;
        limited(s, &b);
        assert_eq!(pending(&k, &room_id).await.len(), 2);
        k.stop().await;
    }
}

// The cap holds over /send too (attack: a server with a member in the room sends its users'
// knocks as PDUs rather than through send_knock): past the cap, each knock is refused in the
// transaction's answer with M_LIMIT_EXCEEDED, within one transaction as across, and kept
// soft-failed (in the graph, never queued).
#[tokio::test]
async fn the_pending_cap_holds_over_send() {
    for backend in backends() {
        let k = start(&[("KNOCKD_KNOCK_MAX_PENDING_PER_ROOM", "2")], backend).await;
        let sim = SimServer::start().await;
        let room_id = room(&k).await;
        let (s, b) = sim.knock(&k.server_name, &room_id, "p0", None).await;
        assert_eq!(s, StatusCode::OK, "{backend:?}: {b}");

        let mut pdus = Vec::new();
        let mut ids = Vec::new();
        for local in ["v", "w", "x"] {
            let user = sim.user(local);
            let template = k
                .template(
                    &room_id,
                    user.as_str(),
                    "m.room.member",
                    Some(user.as_str()),
                    json!({ "membership": "knock" }),
                )
                .await;
            let (id, pdu) = sim.sign_event("12", template);
            ids.push(id.to_string());
            pdus.push(pdu);
        }
        let (s, answer) = sim.send_txn(&k.server_name, "cap1", &pdus, &[]).await;
        assert_eq!(s, StatusCode::OK, "{answer}");
        assert_eq!(answer["pdus"][&ids[0]], json!({}), "{backend:?}: {answer}");
        for id in &ids[1..] {
            let refused = answer["pdus"][id]["error"].as_str().unwrap_or_default();
            assert!(refused.starts_with("M_LIMIT_EXCEEDED"), "{backend:?}: {answer}");
            assert!(refused.contains("2 knocks waiting"), "{answer}");
            assert_eq!(k.event_status(id).await.as_deref(), Some("soft_failed"));
        }
        assert_eq!(pending(&k, &room_id).await.len(), 2);
        k.stop().await;
    }
}

/// A room with a joined member `local` of `sim`'s server: knocked, approved, joined.
async fn room_with_member(k: &TestKnockd, sim: &SimServer, local: &str) -> String {
    let room_id = room(k).await;
    let (s, b) = sim.knock(&k.server_name, &room_id, local, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id = pending(k, &room_id).await[0].id;
    k.admin.approve(id, None).await.unwrap();
    for _ in 0..200 {
        if k.admin.knock(id).await.unwrap().knock.status == "approved" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, b) = sim.membership("join", &k.server_name, &room_id, local).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    room_id
}

/// A knock template of `sim`'s user `local`.
async fn knock_template(k: &TestKnockd, sim: &SimServer, room_id: &str, local: &str) -> Value {
    let user = sim.user(local);
    let content = json!({ "membership": "knock" });
    k.template(room_id, user.as_str(), "m.room.member", Some(user.as_str()), content).await
}

/// `member` sends only a message citing the last of a chain of `n` knocks, which knockd fetches
/// through /get_missing_events; the message must be taken. The chain's statuses, in order.
async fn send_knock_chain(
    k: &TestKnockd,
    sim: &SimServer,
    room_id: &str,
    member: &str,
    n: usize,
) -> Vec<String> {
    let mut chain = Vec::new();
    let mut prev: Option<String> = None;
    let mut depth = 0;
    for i in 1..=n {
        let mut t = knock_template(k, sim, room_id, &format!("c{i}")).await;
        if let Some(p) = &prev {
            t["prev_events"] = json!([p]);
            t["depth"] = json!(depth + 1);
        }
        depth = t["depth"].as_u64().unwrap();
        let (id, pdu) = sim.sign_event("12", t);
        prev = Some(id.to_string());
        chain.push((id.to_string(), pdu));
    }
    let member = sim.user(member);
    let mut message =
        k.template(room_id, member.as_str(), "m.room.message", None, json!({ "body": "hi" })).await;
    message["prev_events"] = json!([prev.clone().unwrap()]);
    message["depth"] = json!(depth + 1);
    let (message_id, message) = sim.sign_event("12", message);
    sim.serve_missing_events(chain.iter().map(|(_, p)| p.clone()).collect());
    let (s, answer) = sim.send_txn(&k.server_name, "chain", &[message], &[]).await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    assert_eq!(answer["pdus"][message_id.as_str()], json!({}), "{answer}");
    let mut statuses = Vec::new();
    for (id, _) in &chain {
        statuses.push(k.event_status(id).await.unwrap_or_default());
    }
    statuses
}

// A knock fetched to fill a gap takes a token from its origin's bucket too: past the burst, the
// fetched knocks are soft-failed (in the graph, not queued) and the message citing them is taken.
#[tokio::test]
async fn knocks_fetched_to_fill_a_gap_count_against_the_origin_rate() {
    for backend in backends() {
        let k = start(
            &[("KNOCKD_KNOCK_RATE_PER_ORIGIN", "0.001"), ("KNOCKD_KNOCK_BURST_PER_ORIGIN", "6")],
            backend,
        )
        .await;
        let sim = SimServer::start().await;
        let room_id = room_with_member(&k, &sim, "m").await;
        let statuses = send_knock_chain(&k, &sim, &room_id, "m", 6).await;
        let taken = statuses.iter().take_while(|s| *s == "accepted").count();
        assert!(taken < 6, "{backend:?}: the burst runs out: {statuses:?}");
        assert!(
            statuses[taken..].iter().all(|s| s == "soft_failed"),
            "{backend:?}: past the burst, soft-failed: {statuses:?}"
        );
        assert_eq!(pending(&k, &room_id).await.len(), taken, "{backend:?}");
        k.stop().await;
    }
}

// Found by review: the cap holds for knocks knockd fetches too. A joined server sends only a
// message citing the last of a chain of five knocks; knockd fetches the chain through
// /get_missing_events (the origin chooses what that answers): three fit the cap, the others are
// soft-failed, and the message itself is taken. In a later transaction a knock refused by the cap
// and a message citing it: the message is taken (no hole in the graph).
#[tokio::test]
async fn the_pending_cap_holds_for_knocks_fetched_to_fill_a_gap() {
    for backend in backends() {
        let k = start(&[("KNOCKD_KNOCK_MAX_PENDING_PER_ROOM", "3")], backend).await;
        let sim = SimServer::start().await;
        let room_id = room_with_member(&k, &sim, "m").await;
        let member = sim.user("m");
        let statuses = send_knock_chain(&k, &sim, &room_id, "m", 5).await;
        assert_eq!(
            statuses,
            ["accepted", "accepted", "accepted", "soft_failed", "soft_failed"],
            "{backend:?}"
        );
        assert_eq!(pending(&k, &room_id).await.len(), 3, "{backend:?}");

        // A knock refused by the cap, and a message citing it, in one transaction.
        let (refused_id, refused) =
            sim.sign_event("12", knock_template(&k, &sim, &room_id, "c6").await);
        let mut cites = k
            .template(&room_id, member.as_str(), "m.room.message", None, json!({ "body": "x" }))
            .await;
        cites["prev_events"] = json!([refused_id.as_str()]);
        let (cites_id, cites) = sim.sign_event("12", cites);
        let (s, answer) = sim.send_txn(&k.server_name, "cites", &[refused, cites], &[]).await;
        assert_eq!(s, StatusCode::OK, "{answer}");
        let error = answer["pdus"][refused_id.as_str()]["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("M_LIMIT_EXCEEDED"), "{backend:?}: {answer}");
        assert_eq!(answer["pdus"][cites_id.as_str()], json!({}), "{backend:?}: {answer}");
        assert_eq!(k.event_status(cites_id.as_str()).await.as_deref(), Some("accepted"));
        assert_eq!(pending(&k, &room_id).await.len(), 3, "{backend:?}");
        k.stop().await;
    }
}

// What a joined server sends over /send is not sent on to the room's other servers (the origin
// sends it to them itself); a knock knockd accepted through send_knock is.
#[tokio::test]
async fn send_pdus_are_not_fanned_out_again() {
    for backend in backends() {
        let k = start(&[], backend).await;
        let a = SimServer::start().await;
        let b = SimServer::start().await;
        let knocker = SimServer::start().await;
        let room_id = room(&k).await;
        for sim in [&a, &b] {
            let user = sim.user("member");
            k.seed_state(
                &room_id,
                &k.admin_user(),
                "m.room.member",
                user.as_str(),
                json!({ "membership": "invite" }),
            )
            .await
            .unwrap();
            k.seed_state(
                &room_id,
                user.as_str(),
                "m.room.member",
                user.as_str(),
                json!({ "membership": "join" }),
            )
            .await
            .unwrap();
        }
        let member = a.user("member");
        let message = k
            .template(
                &room_id,
                member.as_str(),
                "m.room.message",
                None,
                json!({ "msgtype": "m.text", "body": "from a" }),
            )
            .await;
        let (mid, mpdu) = a.sign_event("12", message);
        let (s, answer) = a.send_txn(&k.server_name, "m1", &[mpdu], &[]).await;
        assert_eq!(s, StatusCode::OK, "{answer}");
        assert_eq!(answer["pdus"][mid.as_str()], json!({}), "{answer}");
        assert_eq!(k.event_status(mid.as_str()).await.as_deref(), Some("accepted"));

        // Queued after the message: once b has the knock, it would have had the message too.
        let (s, body) = knocker.knock(&k.server_name, &room_id, "eve", None).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let eve = knocker.user("eve");
        let inbox = b
            .wait_for(10, "the knock at b", |inbox| {
                inbox.pdus().iter().any(|p| {
                    p["state_key"] == eve.as_str() && p["content"]["membership"] == "knock"
                })
            })
            .await;
        let sent_on: Vec<_> = inbox
            .pdus()
            .into_iter()
            .filter(|p| p["content"]["body"] == "from a" || p["event_id"] == mid.as_str())
            .collect();
        assert!(sent_on.is_empty(), "{backend:?}: a's message re-sent to b: {sent_on:?}");
        k.stop().await;
    }
}

// send_join and send_leave count against the same limits as knocks: each may make the room's
// writer work out an old state for a stranger, so a server cannot replay them without bound.
#[tokio::test]
async fn joins_and_leaves_count_against_the_limits() {
    for backend in backends() {
        let env =
            [("KNOCKD_KNOCK_RATE_PER_ORIGIN", "0.01"), ("KNOCKD_KNOCK_BURST_PER_ORIGIN", "4")];
        let k = start(&env, backend).await;
        let sim = SimServer::start().await;
        let room_id = room(&k).await;
        // make_knock and send_knock: two tokens.
        let (status, body) = sim.knock(&k.server_name, &room_id, "ann", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let user = sim.user("ann");
        let (status, made) =
            sim.make_membership("leave", &k.server_name, &room_id, user.as_str()).await;
        assert_eq!(status, StatusCode::OK, "{made}");
        let (id, pdu) = sim.sign_template("12", &made["event"], None);
        // The rescind, then the same again (answered from the store): the last two tokens.
        for _ in 0..2 {
            let (status, body) =
                sim.send_membership("leave", 2, &k.server_name, &room_id, id.as_str(), &pdu).await;
            assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        }
        let (status, body) =
            sim.send_membership("leave", 2, &k.server_name, &room_id, id.as_str(), &pdu).await;
        limited(status, &body);
        assert!(body["error"].as_str().unwrap().contains("join or leave"), "{body}");
        k.stop().await;
    }
}
