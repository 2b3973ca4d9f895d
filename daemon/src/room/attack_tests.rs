//! Attacks on the room engine, found by review: state resolution shortcuts that must give the
//! same answer as ruma's full resolution (what Synapse computes), resolved keys that must not
//! linger, and room IDs a stranger names.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use ruma::{OwnedEventId, OwnedServerName, OwnedUserId};
use serde_json::json;

use super::{
    Applied, Fetcher, RoomTxn, StateKey, StateMap,
    accept::{self, Placing, Verdict, store_accepted},
    effects::Source,
    local, parse_stored, resolve,
    state_before::Mode,
};
use crate::{
    matrix::{EventTemplate, KeyRing, Pdu, now_ms},
    store::{DatabaseUrl, Db, StoreError, events as ev, rooms},
};

fn user(s: &str) -> OwnedUserId {
    OwnedUserId::try_from(s).unwrap()
}

/// A SQLite database with an empty v10 room row, its first events made by `@admin:test.example`
/// (create, join, power levels, join rule knock) inside `then`, which gets the write.
async fn with_room<T: Send + 'static>(
    then: impl FnOnce(&mut RoomTxn<'_>, &mut HashMap<OwnedEventId, Arc<Pdu>>) -> Result<T, StoreError>
    + Send
    + 'static,
) -> T {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&DatabaseUrl::sqlite(&dir.path().join("t.db"))).await.unwrap();
    let server: OwnedServerName = "test.example".try_into().unwrap();
    let keys = Arc::new(KeyRing::from_seed(server.clone(), "k", &[7; 32]).unwrap());
    let out = db
        .write(move |conn| -> Result<T, StoreError> {
            let c = user("@admin:test.example");
            let mut room = super::tests::knock_room(conn, &keys, &c)?;
            // Every event so far, for resolution's fetch.
            let mut events = HashMap::new();
            for (_, id, text) in ev::room_events(conn, room.ctx.room_id.as_str(), 0, 100)? {
                let pdu = parse_stored(&id, &text)?;
                events.insert(pdu.event_id.clone(), Arc::new(pdu));
            }
            let mut applied = Applied::default();
            let mut txn = RoomTxn::new(conn, &mut room, &keys, &mut applied);
            then(&mut txn, &mut events)
        })
        .await
        .unwrap();
    drop(dir);
    out
}

fn member(who: &OwnedUserId, sender: &OwnedUserId, membership: &str) -> EventTemplate {
    EventTemplate::state("m.room.member", who.as_str(), sender, json!({ "membership": membership }))
}

fn all_keys(states: &[&StateMap]) -> BTreeSet<StateKey> {
    states.iter().flat_map(|s| s.keys().cloned()).collect()
}

// resolve.rs claims its knock-only fast path "gives the same answer" as full resolution. It does
// not check the knock against the states' common part: here both states have the room's join
// rule `invite` (changed after the knock was made, and the old `knock` rule is in both auth
// chains through @w's join), so state resolution v2 refuses the knock in its iterative auth
// checks and leaves @u out; the fast path puts the knock in. Reachable through a gap: the
// origin's /state_ids is our current state plus its own user's knock (allowed by its auth
// events, which cite the old join rule); `persist::accepted(merge_before)` then resolves the two
// with no common ancestor in memory, and the fast path answers.
#[tokio::test]
async fn fast_path_agrees_with_full_resolution_when_the_join_rule_changed() {
    let (fast, path, full) = with_room(|txn, events| {
        let admin = user("@admin:test.example");
        let (w, u) = (user("@w:test.example"), user("@u:test.example"));
        for t in [member(&w, &admin, "invite"), member(&w, &w, "join")] {
            let pdu = local::append(txn, &t, now_ms(), &[])?;
            events.insert(pdu.event_id.clone(), Arc::new(pdu));
        }
        // @u's knock while the rule is `knock` (made, not stored: it exists on another fork).
        let (knock, _) = local::build(
            txn.conn,
            txn.room,
            txn.keys,
            &member(&u, &u, "knock"),
            now_ms(),
            Mode::Look,
        )?;
        events.insert(knock.event_id.clone(), Arc::new(knock.clone()));
        let rule =
            EventTemplate::state("m.room.join_rules", "", &admin, json!({ "join_rule": "invite" }));
        let pdu = local::append(txn, &rule, now_ms() + 1, &[])?;
        events.insert(pdu.event_id.clone(), Arc::new(pdu));
        let without = txn.room.current.state.clone();
        let mut with = without.clone();
        with.insert(("m.room.member".into(), u.to_string()), knock.event_id.clone());
        let fetch = |id: &ruma::EventId| events.get(id).cloned();
        let states = [&without, &with];
        let (fast, path) =
            resolve::resolve(&txn.room.ctx.rules, &states, &all_keys(&states), &fetch)
                .map_err(StoreError::Corrupt)?;
        let full =
            resolve::full(&txn.room.ctx.rules, &states, &fetch).map_err(StoreError::Corrupt)?;
        Ok((fast, path, full))
    })
    .await;
    let key = ("m.room.member".to_owned(), "@u:test.example".to_owned());
    assert_eq!(path, resolve::Path::Full, "the knock cites a join rule the states no longer hold");
    assert_eq!(
        fast.get(&key),
        full.get(&key),
        "fast path: {:?}, full resolution: {:?}",
        fast.get(&key),
        full.get(&key)
    );
}

// `state_before::merge` stores a resolved state as a base group plus additions; a key the
// resolution drops stays as the base had it ("state resolution dropped keys" is only logged).
// Natural case: @u's knock is pending; a remote admin who had not seen it sets the join rule to
// `invite` (prev: before the knock). v2 resolution orders the join rules, then checks the knock
// against `invite` and drops it; merge picks the current state (which has the knock) as base
// (fewest chains, first in order) and the knock stays in our current state, in memory and in the
// store, where Synapse's state has none.
#[tokio::test]
async fn a_key_resolution_drops_does_not_stay_in_the_current_state() {
    let (current, truth) = with_room(|txn, events| {
        let admin = user("@admin:test.example");
        let u = user("@u:test.example");
        let without_knock = txn.room.clone();
        let knock = local::append(txn, &member(&u, &u, "knock"), now_ms(), &[])?;
        events.insert(knock.event_id.clone(), Arc::new(knock));
        let with_knock = txn.room.current.state.clone();
        // The remote admin's join rule change, on the state before the knock.
        let mut elsewhere = without_knock;
        let rule =
            EventTemplate::state("m.room.join_rules", "", &admin, json!({ "join_rule": "invite" }));
        let (rule, _) =
            local::build(txn.conn, &mut elsewhere, txn.keys, &rule, now_ms() + 1, Mode::Look)?;
        let mut after_rule = elsewhere.current.state.clone();
        after_rule.insert(("m.room.join_rules".into(), String::new()), rule.event_id.clone());
        let Verdict::Accepted { before } = accept::decide(txn, &rule)? else {
            return Err(StoreError::Corrupt("the join rule change is not accepted".into()));
        };
        let source = Source::Transaction {
            origin: "test.example",
            content_redacted: false,
            knock_state: &[],
        };
        let placing = Placing { outlier: false, merge_before: false };
        store_accepted(txn, rule, &before, placing, source)?;
        let states = [&with_knock, &after_rule];
        let fetch = Fetcher::new(txn.conn, txn.room);
        let truth = resolve::full(&txn.room.ctx.rules, &states, &|id| fetch.get(id))
            .map_err(StoreError::Corrupt)?;
        drop(fetch);
        let room_id = txn.room.ctx.room_id.to_string();
        let stored: StateMap = rooms::current_state_rows(txn.conn()?, &room_id)?
            .into_iter()
            .map(|(t, k, id, _)| ((t, k), OwnedEventId::try_from(id).unwrap()))
            .collect();
        assert_eq!(stored, txn.room.current.state, "memory and store agree (both wrong)");
        Ok((txn.room.current.state.clone(), truth))
    })
    .await;
    let key = ("m.room.member".to_owned(), "@u:test.example".to_owned());
    assert_eq!(truth.get(&key), None, "state resolution v2 drops the knock");
    assert_eq!(current.get(&key), truth.get(&key), "the current state keeps the dropped knock");
}

// `Engine::snapshot` (make_knock/make_join/make_leave, send_*'s first look) takes a slot for any
// room ID the request names, and for one not hosted here runs a write transaction (SQLite: the
// process-wide write lock) to find out. The slots are an LRU of 256: a stranger naming 256 room
// IDs (make_join and make_leave have no rate limit) evicts every idle hosted room, whose next
// write reads its whole current state again.
#[tokio::test]
async fn room_ids_a_stranger_names_do_not_evict_hosted_rooms() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&DatabaseUrl::sqlite(&dir.path().join("t.db"))).await.unwrap();
    let server: OwnedServerName = "test.example".try_into().unwrap();
    let keys = Arc::new(KeyRing::from_seed(server.clone(), "k", &[7; 32]).unwrap());
    let k = keys.clone();
    let room_id = db
        .write(move |conn| -> Result<String, StoreError> {
            let c = user("@admin:test.example");
            Ok(super::tests::knock_room(conn, &k, &c)?.ctx.room_id.to_string())
        })
        .await
        .unwrap();
    let engine = super::Engine::new(
        db.clone(),
        keys,
        Arc::new(tokio::sync::Notify::new()),
        tokio::sync::broadcast::channel(16).0,
    );
    engine.write(&room_id, |_| Ok::<_, StoreError>(())).await.unwrap();
    let held = |engine: &super::Engine| {
        let mut slots = engine.slots.lock().unwrap();
        slots
            .get(&room_id)
            .map(|s| s.leader.try_lock().map(|g| g.is_some()).unwrap_or(false))
            .unwrap_or(false)
    };
    assert!(held(&engine), "the room is in memory after a write");
    for i in 0..super::MAX_ROOMS {
        let name = format!("!nothere{i}:evil.example");
        assert!(engine.snapshot(&name).await.unwrap().is_none());
    }
    assert!(held(&engine), "room IDs named by a stranger evicted the hosted room from memory");
    drop(dir);
}
