//! The writer's promises: every write is answered once its batch committed; a failed write
//! undoes only itself, in the store and in memory; a leader whose request goes away leaves its
//! batch committed and answered.

use std::sync::Arc;

use diesel::RunQueryDsl;
use ruma::{OwnedServerName, RoomVersionId};
use serde_json::json;

use super::{Engine, LoadedRoom, RoomTxn, local};
use crate::{
    matrix::{EventTemplate, KeyRing, now_ms},
    store::{DatabaseUrl, Db, DbConn, StoreError},
};

struct Fixture {
    _dir: tempfile::TempDir,
    db: Db,
    engine: Arc<Engine>,
    room_id: String,
    creator: ruma::OwnedUserId,
}

/// A v10 room made by `creator`: create, join, power levels (the creator at 100), join rule
/// knock.
pub(super) fn knock_room(
    conn: &mut DbConn,
    keys: &KeyRing,
    creator: &ruma::UserId,
) -> Result<LoadedRoom, StoreError> {
    let create = json!({ "creator": creator.as_str(), "room_version": "10" });
    let rest = vec![
        ("m.room.member", json!({ "membership": "join" })),
        ("m.room.power_levels", json!({ "users": { creator.as_str(): 100 } })),
        ("m.room.join_rules", json!({ "join_rule": "knock" })),
    ];
    local::create_room(conn, keys, &RoomVersionId::V10, creator, false, create, rest, 1)
}

/// A SQLite database holding a v10 room made by `@admin:test.example` (create, join, power
/// levels, join rule knock), and an engine over it.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&DatabaseUrl::sqlite(&dir.path().join("t.db"))).await.unwrap();
    let server: OwnedServerName = "test.example".try_into().unwrap();
    let keys = Arc::new(KeyRing::from_seed(server.clone(), "k", &[7; 32]).unwrap());
    let creator = ruma::OwnedUserId::try_from("@admin:test.example").unwrap();
    let (k, c) = (keys.clone(), creator.clone());
    let room_id = db
        .write(move |conn| -> Result<String, StoreError> {
            Ok(knock_room(conn, &k, &c)?.ctx.room_id.to_string())
        })
        .await
        .unwrap();
    let engine = Arc::new(Engine::new(
        db.clone(),
        keys,
        Arc::new(tokio::sync::Notify::new()),
        tokio::sync::broadcast::channel(16).0,
    ));
    Fixture { _dir: dir, db, engine, room_id, creator }
}

fn topic(txn: &mut RoomTxn<'_>, creator: &ruma::UserId, text: &str) -> Result<String, StoreError> {
    let template = EventTemplate::state("m.room.topic", "", creator, json!({ "topic": text }));
    Ok(local::append(txn, &template, now_ms(), &[])?.event_id.to_string())
}

fn count_events(conn: &mut DbConn) -> Result<i64, StoreError> {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let n: N = diesel::sql_query("SELECT COUNT(*) AS n FROM events").get_result(conn)?;
    Ok(n.n)
}

#[tokio::test]
async fn a_failed_write_undoes_only_itself_in_the_store_and_in_memory() {
    let f = fixture().await;
    let before = f.db.read(count_events).await.unwrap();
    let writes = (0..60).map(|i| {
        let (engine, room_id, creator) = (f.engine.clone(), f.room_id.clone(), f.creator.clone());
        tokio::spawn(async move {
            engine
                .write(&room_id, move |txn| {
                    let id = topic(txn, &creator, &format!("topic {i}"))?;
                    // Every third write fails after writing its event.
                    if i % 3 == 0 {
                        return Err(StoreError::Rejected(format!("no {i}")));
                    }
                    Ok(id)
                })
                .await
        })
    });
    let answers = futures::future::join_all(writes).await;
    let mut kept = Vec::new();
    for (i, answer) in answers.into_iter().enumerate() {
        match answer.unwrap() {
            Ok(id) => kept.push(id),
            Err(e) => assert!(i % 3 == 0 && e.to_string() == format!("no {i}"), "{i}: {e}"),
        }
    }
    assert_eq!(kept.len(), 40);
    let after = f.db.read(count_events).await.unwrap();
    assert_eq!(after - before, 40, "only the successful writes' events are stored");
    // Memory is what is stored: the topic in the current state is a stored one, and every
    // extremity is a stored event.
    let room = f.engine.snapshot(&f.room_id).await.unwrap().unwrap();
    let current = room.current_id("m.room.topic", "").unwrap().to_string();
    assert!(kept.contains(&current), "{current}");
    let room_id = f.room_id.clone();
    let stored =
        f.db.read(move |conn| crate::store::events::extremities(conn, &room_id, 100))
            .await
            .unwrap();
    let in_memory: Vec<(String, i64)> =
        room.extremities_by_depth().into_iter().map(|(id, d)| (id.to_string(), d)).collect();
    assert_eq!(in_memory, stored);
}

// A leader's request may go away mid-batch; the other writes of its batch are still committed
// and answered as such.
#[tokio::test]
async fn a_leader_dropped_mid_batch_leaves_the_others_committed_and_answered() {
    let f = fixture().await;
    let before = f.db.read(count_events).await.unwrap();
    let spawn = |i: i64| {
        let (engine, room_id, creator) = (f.engine.clone(), f.room_id.clone(), f.creator.clone());
        tokio::spawn(async move {
            engine
                .write(&room_id, move |txn| {
                    topic(txn, &creator, &format!("slow {i}"))?;
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    Ok::<_, StoreError>(i)
                })
                .await
        })
    };
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(60));
    // 1 leads a batch alone; 2 and 3 queue behind it, and 2 leads the next batch with 3.
    let first = spawn(1);
    pause().await;
    let second = spawn(2);
    pause().await;
    let third = spawn(3);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    second.abort();
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(third.await.unwrap().expect("3 committed and answered"), 3);
    let after = f.db.read(count_events).await.unwrap();
    assert_eq!(after - before, 3, "2's write commits with its batch");
}

// Another writer (another knockd on the same database) changed the room: the next batch sees
// the version moved and reads the room again instead of building on what it held.
#[tokio::test]
async fn a_room_written_elsewhere_is_read_again() {
    let f = fixture().await;
    let (room_id, creator) = (f.room_id.clone(), f.creator.clone());
    f.engine.write(&room_id, move |txn| topic(txn, &creator, "one")).await.unwrap();
    // A second engine over the same database writes the room.
    let other = Engine::new(
        f.db.clone(),
        Arc::new(KeyRing::from_seed("test.example".try_into().unwrap(), "k", &[7; 32]).unwrap()),
        Arc::new(tokio::sync::Notify::new()),
        tokio::sync::broadcast::channel(16).0,
    );
    let (room_id, creator) = (f.room_id.clone(), f.creator.clone());
    let two = other.write(&room_id, move |txn| topic(txn, &creator, "two")).await.unwrap();
    let (room_id, creator) = (f.room_id.clone(), f.creator.clone());
    let three = f
        .engine
        .write(&room_id, move |txn| {
            // The state this write sees is the other engine's.
            let seen = txn.room.current_id("m.room.topic", "").map(|id| id.to_string());
            let three = topic(txn, &creator, "three")?;
            Ok::<_, StoreError>((seen, three))
        })
        .await
        .unwrap();
    assert_eq!(three.0.as_deref(), Some(two.as_str()));
    let room = f.engine.snapshot(&f.room_id).await.unwrap().unwrap();
    assert_eq!(room.extremities_by_depth().len(), 1, "the new event follows the other's");
    assert_eq!(room.current_id("m.room.topic", "").unwrap().as_str(), three.1);
}

// Forks made in one batch: the resolved current state is worked out in memory and written once
// when the batch ends. Whatever failed in between, the store ends up holding what memory holds:
// the current-state rows, the state group the room points at, and the joined counts.
#[tokio::test]
async fn forks_in_one_batch_leave_store_and_memory_agreeing() {
    use super::{
        accept::{self, Placing, Verdict},
        effects::Source,
        state_before::Mode,
    };
    let f = fixture().await;
    // Every event below is made on this copy: each one forks the room.
    let start = f.engine.snapshot(&f.room_id).await.unwrap().unwrap();
    let writes = (0..24).map(|i| {
        let (engine, room_id, start) = (f.engine.clone(), f.room_id.clone(), start.clone());
        tokio::spawn(async move {
            engine
                .write(&room_id, move |txn| {
                    let user = ruma::OwnedUserId::try_from(format!("@u{i}:test.example")).unwrap();
                    let template = EventTemplate::state(
                        "m.room.member",
                        user.as_str(),
                        &user,
                        json!({ "membership": "knock" }),
                    );
                    let (conn, _, keys) = txn.parts()?;
                    let mut fork = start;
                    let (pdu, _) =
                        local::build(conn, &mut fork, keys, &template, now_ms(), Mode::Look)?;
                    let placing = Placing { outlier: false, merge_before: false };
                    let source = Source::Transaction {
                        origin: "test.example",
                        content_redacted: false,
                        knock_state: &[],
                    };
                    match accept::decide(txn, &pdu)? {
                        Verdict::Accepted { before } => {
                            accept::store_accepted(txn, pdu, &before, placing, source)?;
                        }
                        verdict => accept::store_refused(txn, &pdu, &verdict, false)?,
                    }
                    // Every third write fails after storing its event.
                    if i % 3 == 0 {
                        return Err(StoreError::Rejected(format!("no {i}")));
                    }
                    Ok(i)
                })
                .await
        })
    });
    let kept: Vec<i64> = futures::future::join_all(writes)
        .await
        .into_iter()
        .filter_map(|answer| answer.unwrap().ok())
        .collect();
    assert_eq!(kept.len(), 16);
    let room = f.engine.snapshot(&f.room_id).await.unwrap().unwrap();
    for i in 0..24 {
        let knocked = room.current_id("m.room.member", &format!("@u{i}:test.example")).is_some();
        assert_eq!(knocked, kept.contains(&i), "@u{i}");
    }
    let room_id = f.room_id.clone();
    let (rows, group_state, joined) =
        f.db.read(move |conn| {
            let mut rows: Vec<(String, String, String)> =
                crate::store::rooms::current_state_rows(conn, &room_id)?
                    .into_iter()
                    .map(|(t, k, id, _)| (t, k, id))
                    .collect();
            rows.sort();
            let group = crate::store::rooms::current_group(conn, &room_id)?.unwrap();
            let group_state = crate::store::state::full_state(conn, group)?;
            let mut joined = crate::store::rooms::joined_counts(conn, &room_id)?;
            joined.sort();
            Ok::<_, StoreError>((rows, group_state, joined))
        })
        .await
        .unwrap();
    let in_memory: Vec<(String, String, String)> = room
        .current
        .state
        .iter()
        .map(|((t, k), id)| (t.clone(), k.clone(), id.to_string()))
        .collect();
    assert_eq!(rows, in_memory, "current-state rows");
    let grouped: Vec<(String, String, String)> =
        group_state.into_iter().map(|((t, k), id)| (t, k, id)).collect();
    assert_eq!(grouped, in_memory, "the state group the room points at");
    let joined_in_memory: Vec<(String, i64)> =
        room.joined.iter().map(|(s, n)| (s.clone(), *n)).collect();
    assert_eq!(joined, joined_in_memory, "joined counts");
}

// Knocks a batch queues are written when it ends: until then the pending-knock count sees
// them, a user's second knock replaces the first, and the admin event stream names each knock
// by the id it got.
#[tokio::test]
async fn knocks_held_back_are_counted_replaced_and_named() {
    use super::{
        accept::{self, Placing, Verdict},
        effects::{self, Source},
        state_before::Mode,
    };
    let f = fixture().await;
    let mut stream = f.engine.queue_events.subscribe();
    let counts = f
        .engine
        .write(&f.room_id, move |txn| {
            let mut knock = |who: &str, at: i64| -> Result<String, StoreError> {
                let user = ruma::OwnedUserId::try_from(who).unwrap();
                let template = EventTemplate::state(
                    "m.room.member",
                    user.as_str(),
                    &user,
                    json!({ "membership": "knock" }),
                );
                let keys = txn.keys;
                let (conn, room) = txn.engine();
                let (pdu, _) = local::build(conn, room, keys, &template, at, Mode::Look)?;
                let id = pdu.event_id.to_string();
                let Verdict::Accepted { before } = accept::decide(txn, &pdu)? else {
                    return Err(StoreError::Corrupt(format!("{who}'s knock refused")));
                };
                let source = Source::Handshake {
                    origin: "test.example",
                    content_redacted: false,
                    knock_state: &[],
                };
                let placing = Placing { outlier: false, merge_before: false };
                accept::store_accepted(txn, pdu, &before, placing, source)?;
                Ok(id)
            };
            let first = knock("@a:test.example", now_ms())?;
            knock("@b:test.example", now_ms() + 1)?;
            let second = knock("@a:test.example", now_ms() + 2)?;
            assert!(txn.room.pending.has_knocks(), "nothing written yet");
            let except_c = effects::pending_knocks_except(txn, "@c:test.example")?;
            let except_a = effects::pending_knocks_except(txn, "@a:test.example")?;
            Ok::<_, StoreError>((except_c, except_a, first, second))
        })
        .await
        .unwrap();
    let (except_c, except_a, first, second) = counts;
    assert_eq!((except_c, except_a), (2, 1), "@a's second knock replaces the first");
    let room_id = f.room_id.clone();
    let rows =
        f.db.read(move |conn| {
            let filter =
                crate::store::knocks::KnockFilter { room_id: Some(room_id), ..Default::default() };
            crate::store::knocks::list(conn, &filter, None, 100)
        })
        .await
        .unwrap();
    let status_of = |event: &str| {
        rows.iter().find(|k| k.event_id == event).map(|k| k.status.clone()).unwrap_or_default()
    };
    assert_eq!(status_of(&first), crate::store::knocks::REPLACED);
    assert_eq!(status_of(&second), crate::store::knocks::PENDING);
    assert_eq!(rows.iter().filter(|k| k.status == crate::store::knocks::PENDING).count(), 2);
    let mut named = Vec::new();
    while let Ok(event) = stream.try_recv() {
        if event.kind == "knock" {
            named.push(event.knock_id.expect("every new knock is named"));
        }
    }
    named.sort_unstable();
    let mut ids: Vec<i64> = rows.iter().map(|k| k.knock_id).collect();
    ids.sort_unstable();
    assert_eq!(named, ids);
}

// State groups a batch holds back take reserved ids; a group written directly in the same
// transaction (as a gap fill does, after the held rows are written out) takes another, and
// every one of them reads back.
#[tokio::test]
async fn held_back_groups_and_direct_ones_share_a_batch() {
    use super::{
        accept::{self, Placing, Verdict},
        effects::Source,
        state_before::Mode,
    };
    let f = fixture().await;
    let room_id = f.room_id.clone();
    let (groups, direct) = f
        .engine
        .write(&f.room_id, move |txn| {
            fn knock(txn: &mut RoomTxn<'_>, who: &str) -> Result<i64, StoreError> {
                let user = ruma::OwnedUserId::try_from(who).unwrap();
                let template = EventTemplate::state(
                    "m.room.member",
                    user.as_str(),
                    &user,
                    json!({ "membership": "knock" }),
                );
                let keys = txn.keys;
                let (conn, room) = txn.engine();
                let (pdu, _) = local::build(conn, room, keys, &template, now_ms(), Mode::Look)?;
                let id = pdu.event_id.clone();
                let Verdict::Accepted { before } = accept::decide(txn, &pdu)? else {
                    return Err(StoreError::Corrupt(format!("{who}'s knock refused")));
                };
                let source = Source::Transaction {
                    origin: "test.example",
                    content_redacted: false,
                    knock_state: &[],
                };
                let placing = Placing { outlier: false, merge_before: false };
                accept::store_accepted(txn, pdu, &before, placing, source)?;
                Ok(txn.room.placed(&id).and_then(|p| p.after.id).unwrap())
            }
            let a = knock(txn, "@a:test.example")?;
            let (conn, _, _) = txn.parts()?;
            let key = ("m.room.topic".to_owned(), String::new());
            let direct =
                crate::store::state::new_group(conn, &room_id, None, &[(key, "$t".into())])?;
            let b = knock(txn, "@b:test.example")?;
            let c = knock(txn, "@c:test.example")?;
            Ok::<_, StoreError>((vec![a, b, c], direct))
        })
        .await
        .unwrap();
    let mut all = groups.clone();
    all.push(direct);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 4, "four distinct groups: {groups:?} and {direct}");
    let states =
        f.db.read(move |conn| {
            groups
                .iter()
                .chain([&direct])
                .map(|g| crate::store::state::full_state(conn, *g))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .unwrap();
    let member = |who: &str| ("m.room.member".to_owned(), format!("@{who}:test.example"));
    assert!(states[0].contains_key(&member("a")));
    assert!(states[2].contains_key(&member("a")) && states[2].contains_key(&member("c")));
    assert_eq!(states[3].len(), 1, "the direct group holds its own delta");
}

// A write that wrote to the store directly (through `RoomTxn::conn`) and then failed is undone
// in the store by its savepoint, together with the rows of earlier writes it wrote out; those
// stay held in the room and are written when the batch ends.
#[tokio::test]
async fn a_failed_write_that_wrote_directly_is_rolled_back_to_its_savepoint() {
    let f = fixture().await;
    let before = f.db.read(count_events).await.unwrap();
    let writes = (0..30).map(|i| {
        let (engine, room_id, creator) = (f.engine.clone(), f.room_id.clone(), f.creator.clone());
        tokio::spawn(async move {
            engine
                .write(&room_id, move |txn| {
                    let id = topic(txn, &creator, &format!("topic {i}"))?;
                    if i % 2 == 1 {
                        let room_id = txn.room.ctx.room_id.to_string();
                        crate::store::rooms::set_public(txn.conn()?, &room_id, true)?;
                        return Err(StoreError::Rejected(format!("no {i}")));
                    }
                    Ok(id)
                })
                .await
        })
    });
    let answers = futures::future::join_all(writes).await;
    let kept: Vec<String> = answers.into_iter().filter_map(|a| a.unwrap().ok()).collect();
    assert_eq!(kept.len(), 15);
    let room_id = f.room_id.clone();
    let (after, public) =
        f.db.read(move |conn| {
            let public = crate::store::rooms::get(conn, &room_id)?.unwrap().is_public;
            Ok::<_, StoreError>((count_events(conn)?, public))
        })
        .await
        .unwrap();
    assert_eq!(after - before, 15, "only the successful writes' events are stored");
    assert!(!public, "every direct write was undone");
    let room = f.engine.snapshot(&f.room_id).await.unwrap().unwrap();
    let current = room.current_id("m.room.topic", "").unwrap().to_string();
    assert!(kept.contains(&current), "{current}");
}

// A batch's resolved current state is stored as what it adds to the current state written
// before, not to an older state where the forks met: its own delta is about the batch's size
// however far the forks reach back.
#[tokio::test]
async fn the_current_state_is_stored_as_the_batch_adds_to_it() {
    use super::{
        accept::{self, Placing, Verdict},
        effects::Source,
        state_before::Mode,
    };
    let f = fixture().await;
    // Every knock below cites this old state.
    let start = f.engine.snapshot(&f.room_id).await.unwrap().unwrap();
    for round in 0..3 {
        let writes = (0..10).map(|i| {
            let (engine, room_id, start) = (f.engine.clone(), f.room_id.clone(), start.clone());
            tokio::spawn(async move {
                engine
                    .write(&room_id, move |txn| {
                        let who = format!("@u{round}x{i}:test.example");
                        let user = ruma::OwnedUserId::try_from(who).unwrap();
                        let template = EventTemplate::state(
                            "m.room.member",
                            user.as_str(),
                            &user,
                            json!({ "membership": "knock" }),
                        );
                        let keys = txn.keys;
                        let (conn, _) = txn.engine();
                        let mut fork = start;
                        let (pdu, _) =
                            local::build(conn, &mut fork, keys, &template, now_ms(), Mode::Look)?;
                        let Verdict::Accepted { before } = accept::decide(txn, &pdu)? else {
                            return Err(StoreError::Corrupt("refused".into()));
                        };
                        let source = Source::Transaction {
                            origin: "test.example",
                            content_redacted: false,
                            knock_state: &[],
                        };
                        let placing = Placing { outlier: false, merge_before: false };
                        accept::store_accepted(txn, pdu, &before, placing, source)
                    })
                    .await
            })
        });
        for answer in futures::future::join_all(writes).await {
            answer.unwrap().unwrap();
        }
        let room_id = f.room_id.clone();
        let (own_delta, whole) =
            f.db.read(move |conn| {
                #[derive(diesel::QueryableByName)]
                struct N {
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    n: i64,
                }
                let group = crate::store::rooms::current_group(conn, &room_id)?.unwrap();
                let n: N = diesel::sql_query(format!(
                    "SELECT COUNT(*) AS n FROM state_deltas WHERE group_id = {group}"
                ))
                .get_result(conn)?;
                Ok::<_, StoreError>((n.n, crate::store::state::full_state(conn, group)?.len()))
            })
            .await
            .unwrap();
        assert_eq!(whole, 4 + 10 * (round + 1), "round {round}: every knock is in the state");
        assert!(
            own_delta <= 10,
            "round {round}: the current state's own delta is {own_delta} keys"
        );
    }
}

// The events a batch's writes name are looked up in one query at its start; an event stored by
// an earlier write of the batch is then known to the later ones, held back or written out.
#[tokio::test]
async fn an_event_sent_twice_in_one_batch_is_stored_once() {
    use super::{
        accept::{self, Placing, Verdict},
        effects::Source,
        state_before::Mode,
    };
    let f = fixture().await;
    let mut room = f.engine.snapshot(&f.room_id).await.unwrap().unwrap();
    let keys = f.engine.keys.clone();
    let user = ruma::OwnedUserId::try_from("@twice:test.example").unwrap();
    let template = EventTemplate::state(
        "m.room.member",
        user.as_str(),
        &user,
        json!({ "membership": "knock" }),
    );
    let (pdu, _) = f
        .db
        .read(move |conn| local::build(conn, &mut room, &keys, &template, now_ms(), Mode::Look))
        .await
        .unwrap();
    // A first write holds the room while the others queue: they make one batch, in order.
    let (engine, room_id) = (f.engine.clone(), f.room_id.clone());
    let first = tokio::spawn(async move {
        engine
            .write(&room_id, |_| {
                std::thread::sleep(std::time::Duration::from_millis(300));
                Ok::<_, StoreError>(())
            })
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut writes = Vec::new();
    for i in 0..6 {
        let (engine, room_id, pdu) = (f.engine.clone(), f.room_id.clone(), pdu.clone());
        writes.push(tokio::spawn(async move {
            let asked = vec![pdu.event_id.clone()];
            engine
                .write_events(&room_id, asked, move |txn| {
                    // Every other write also reads the store directly first.
                    if i % 2 == 1 {
                        txn.conn()?;
                    }
                    if let Some(row) = accept::stored(txn, &pdu.event_id)? {
                        return Ok::<_, StoreError>(row.status);
                    }
                    let Verdict::Accepted { before } = accept::decide(txn, &pdu)? else {
                        return Err(StoreError::Corrupt("refused".into()));
                    };
                    let source = Source::Handshake {
                        origin: "test.example",
                        content_redacted: false,
                        knock_state: &[],
                    };
                    let placing = Placing { outlier: false, merge_before: false };
                    accept::store_accepted(txn, pdu, &before, placing, source)?;
                    Ok("stored here".to_owned())
                })
                .await
        }));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    first.await.unwrap().unwrap();
    let mut answers: Vec<String> =
        futures::future::join_all(writes).await.into_iter().map(|a| a.unwrap().unwrap()).collect();
    answers.sort();
    assert_eq!(answers, ["accepted"; 5].into_iter().chain(["stored here"]).collect::<Vec<_>>());
    let n = f.db.read(count_events).await.unwrap();
    let room_id = f.room_id.clone();
    let knocks =
        f.db.read(move |conn| {
            let filter =
                crate::store::knocks::KnockFilter { room_id: Some(room_id), ..Default::default() };
            crate::store::knocks::list(conn, &filter, None, 10)
        })
        .await
        .unwrap();
    assert_eq!(knocks.len(), 1);
    assert!(n > 0);
}

// The memo of chain tips may be dropped in the middle of a batch (it has a bound): a chain the
// batch extended is then known by what the batch holds, not read stale from the store (where
// two groups would take one place in the chain and the batch could not be written).
#[tokio::test]
async fn a_dropped_tip_memo_does_not_place_two_groups_at_one_position() {
    use super::{
        accept::{self, Placing, Verdict},
        effects::Source,
        state_before::Mode,
    };
    let f = fixture().await;
    let start = f.engine.snapshot(&f.room_id).await.unwrap().unwrap();
    let placed = f
        .engine
        .write(&f.room_id, move |txn| {
            let mut groups = Vec::new();
            for i in 0..3 {
                if i == 2 {
                    txn.room.forget_tips();
                }
                let user = ruma::OwnedUserId::try_from(format!("@t{i}:test.example")).unwrap();
                let template = EventTemplate::state(
                    "m.room.member",
                    user.as_str(),
                    &user,
                    json!({ "membership": "knock" }),
                );
                let keys = txn.keys;
                let (conn, _) = txn.engine();
                let mut fork = start.clone();
                let (pdu, _) =
                    local::build(conn, &mut fork, keys, &template, now_ms(), Mode::Look)?;
                let id = pdu.event_id.clone();
                let Verdict::Accepted { before } = accept::decide(txn, &pdu)? else {
                    return Err(StoreError::Corrupt("refused".into()));
                };
                let source = Source::Transaction {
                    origin: "test.example",
                    content_redacted: false,
                    knock_state: &[],
                };
                let placing = Placing { outlier: false, merge_before: false };
                accept::store_accepted(txn, pdu, &before, placing, source)?;
                let after = txn.room.placed(&id).unwrap().after.clone();
                groups.push(after.ancestry.clone().unwrap()[0]);
            }
            Ok::<_, StoreError>(groups)
        })
        .await
        .expect("the batch is written");
    let mut places = placed.clone();
    places.sort_unstable();
    places.dedup();
    assert_eq!(places.len(), 3, "three groups, three places: {placed:?}");
}

// An event stored earlier in the same batch and since dropped from the recent states in memory
// is still found, with the state after it, when a later event cites it.
#[tokio::test]
async fn a_held_event_dropped_from_recent_states_can_still_be_cited() {
    use super::{
        accept::{self, Verdict},
        state_before::Mode,
    };
    let f = fixture().await;
    let creator = f.creator.clone();
    let verdict = f
        .engine
        .write(&f.room_id, move |txn| {
            topic(txn, &creator, "first")?;
            // The room as it stood after the first event: what a fork from there builds on.
            let mut then = txn.room.clone();
            for i in 0..(2 * super::loaded::RECENT_STATES + 10) {
                topic(txn, &creator, &format!("later {i}"))?;
            }
            let template =
                EventTemplate::state("m.room.topic", "", &creator, json!({ "topic": "a fork" }));
            let keys = txn.keys;
            let (conn, _) = txn.engine();
            let (fork, _) = local::build(conn, &mut then, keys, &template, now_ms(), Mode::Look)?;
            Ok::<_, StoreError>(match accept::decide(txn, &fork)? {
                Verdict::Accepted { .. } => "accepted".to_owned(),
                other => format!("{other:?}"),
            })
        })
        .await
        .unwrap();
    assert_eq!(verdict, "accepted");
}
