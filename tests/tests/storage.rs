//! Storage on every backend: state groups with deltas (forks included) and durability across a
//! restart.

use knockd::store::{
    DatabaseUrl, Db, StoreError,
    rooms::{self, RoomRow},
    state,
};
use knockd_shared::CreateRoomRequest;
use knockd_tests::{TestDb, TestKnockd, backends};

fn key(t: &str, k: &str) -> (String, String) {
    (t.to_owned(), k.to_owned())
}

#[tokio::test]
async fn state_groups_resolve_lookups_through_forks() {
    for backend in backends() {
        let test_db = TestDb::new(backend);
        let db = Db::connect(&DatabaseUrl::parse(&test_db.url).unwrap()).await.unwrap();
        db.write(|conn| -> Result<(), StoreError> {
            rooms::insert(
                conn,
                &RoomRow {
                    room_id: "!r:example.org".into(),
                    room_version: "10".into(),
                    creator: "@a:example.org".into(),
                    created_ms: 0,
                    is_public: false,
                    current_group: None,
                    version: 0,
                },
            )?;
            let room = "!r:example.org";
            let g1 = state::new_group(
                conn,
                room,
                None,
                &[(key("m.room.create", ""), "$create".into())],
            )?;
            let g2 = state::new_group(
                conn,
                room,
                Some(g1),
                &[(key("m.room.member", "@a"), "$join".into())],
            )?;
            let g3 = state::new_group(
                conn,
                room,
                Some(g2),
                &[(key("m.room.join_rules", ""), "$jr1".into())],
            )?;
            // Two forks from g2 (g2 is no longer a chain tip): knocks from one stale template.
            let k1 = state::new_group(
                conn,
                room,
                Some(g2),
                &[(key("m.room.member", "@k1"), "$k1".into())],
            )?;
            let k2 = state::new_group(
                conn,
                room,
                Some(g2),
                &[(key("m.room.member", "@k2"), "$k2".into())],
            )?;
            // A fork of a fork, and a chain growing on the first fork.
            let k1b = state::new_group(
                conn,
                room,
                Some(k1),
                &[(key("m.room.member", "@k1"), "$k1-again".into())],
            )?;
            let g4 = state::new_group(
                conn,
                room,
                Some(g3),
                &[(key("m.room.join_rules", ""), "$jr2".into())],
            )?;

            assert_eq!(state::lookup(conn, g4, "m.room.join_rules", "")?.as_deref(), Some("$jr2"));
            assert_eq!(state::lookup(conn, g3, "m.room.join_rules", "")?.as_deref(), Some("$jr1"));
            assert_eq!(state::lookup(conn, g2, "m.room.join_rules", "")?, None);
            assert_eq!(
                state::lookup(conn, k1, "m.room.join_rules", "")?,
                None,
                "fork from g2 predates jr1"
            );
            assert_eq!(state::lookup(conn, k1, "m.room.create", "")?.as_deref(), Some("$create"));
            assert_eq!(
                state::lookup(conn, k2, "m.room.member", "@k1")?,
                None,
                "sibling forks are separate"
            );
            assert_eq!(
                state::lookup(conn, k1b, "m.room.member", "@k1")?.as_deref(),
                Some("$k1-again")
            );
            assert_eq!(state::lookup(conn, k1, "m.room.member", "@k1")?.as_deref(), Some("$k1"));

            let full = state::full_state(conn, k1b)?;
            assert_eq!(full.len(), 3);
            assert_eq!(
                full.get(&key("m.room.member", "@k1")).map(String::as_str),
                Some("$k1-again")
            );
            assert_eq!(full.get(&key("m.room.member", "@a")).map(String::as_str), Some("$join"));
            assert_eq!(state::full_state(conn, g4)?.len(), 3);

            // Several keys in one query agree with one-by-one lookups, on every group; a pair
            // made of one asked key's type and another's state_key is not answered.
            let asked = [
                key("m.room.member", "@k1"),
                key("m.room.member", "@a"),
                key("m.room.join_rules", ""),
                key("m.room.create", ""),
                key("m.room.join_rules", "@k1"),
            ];
            for g in [g1, g2, g3, g4, k1, k2, k1b] {
                let many = state::lookup_many(conn, g, &asked)?;
                for k in &asked {
                    assert_eq!(
                        many.get(k),
                        state::lookup(conn, g, &k.0, &k.1)?.as_ref(),
                        "{k:?} at {g}"
                    );
                }
                let expected = full_state_of(conn, g, &asked)?;
                assert_eq!(many, expected, "group {g}");
            }
            assert_eq!(
                state::lookup_many(conn, k1b, &[key("m.room.member", "@k1")])?
                    .get(&key("m.room.member", "@k1"))
                    .map(String::as_str),
                Some("$k1-again")
            );

            // Groups made before ancestries were stored (NULL) are walked instead, with the same
            // answers, and a group made on one of them stores its ancestry.
            let groups = [g1, g2, g3, g4, k1, k2, k1b];
            let mut stored = Vec::new();
            for g in groups {
                stored.push((state::ancestry(conn, g)?, state::full_state(conn, g)?));
            }
            assert_eq!(stored[6].0.len(), 2, "k1b extends the fork k1 started on the main chain");
            use diesel::RunQueryDsl;
            diesel::sql_query("UPDATE state_groups SET ancestry = NULL")
                .execute(conn)
                .map_err(StoreError::from)?;
            for (g, (anc, full)) in groups.iter().zip(&stored) {
                assert_eq!(&state::ancestry(conn, *g)?, anc, "group {g} walked");
                assert_eq!(&state::full_state(conn, *g)?, full, "group {g} walked");
            }
            let k2b = state::new_group(
                conn,
                room,
                Some(k2),
                &[(key("m.room.member", "@k3"), "$k3".into())],
            )?;
            let mut expected = stored[5].1.clone();
            expected.insert(key("m.room.member", "@k3"), "$k3".into());
            assert_eq!(state::full_state(conn, k2b)?, expected);
            // k2 was its chain's tip: k2b extends that chain.
            let (chain, pos) = stored[5].0[0];
            let mut extended = vec![(chain, pos + 1)];
            extended.extend_from_slice(&stored[5].0[1..]);
            assert_eq!(state::ancestry(conn, k2b)?, extended);
            Ok(())
        })
        .await
        .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
    }
}

#[tokio::test]
async fn a_failed_transaction_leaves_nothing() {
    for backend in backends() {
        let test_db = TestDb::new(backend);
        let db = Db::connect(&DatabaseUrl::parse(&test_db.url).unwrap()).await.unwrap();
        let result = db
            .write(|conn| -> Result<(), StoreError> {
                rooms::insert(
                    conn,
                    &RoomRow {
                        room_id: "!r:example.org".into(),
                        room_version: "10".into(),
                        creator: "@a:example.org".into(),
                        created_ms: 0,
                        is_public: false,
                        current_group: None,
                        version: 0,
                    },
                )?;
                Err(StoreError::Rejected("stop".into()))
            })
            .await;
        assert!(result.is_err());
        let left = db.read(|conn| rooms::get(conn, "!r:example.org")).await;
        let left: Option<_> = left.map_err(|e: StoreError| e).unwrap();
        assert!(left.is_none(), "{backend:?}: rolled back");
    }
}

#[tokio::test]
async fn restart_keeps_key_token_and_rooms() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let created = k.admin.create_room(&CreateRoomRequest::default()).await.unwrap();
        let key_before = k.app.keys.public_key();
        let k = k.restart().await;
        assert_eq!(k.app.keys.public_key(), key_before, "{backend:?}: same signing key");
        let shown = k.admin.room(&created.room_id).await.unwrap();
        assert_eq!(shown.summary.room_id, created.room_id);
        k.stop().await;
    }
}

/// The asked keys of a group's full state (the slow, obvious way).
fn full_state_of(
    conn: &mut knockd::store::DbConn,
    group: i64,
    asked: &[(String, String)],
) -> Result<std::collections::BTreeMap<(String, String), String>, StoreError> {
    Ok(state::full_state(conn, group)?.into_iter().filter(|(k, _)| asked.contains(k)).collect())
}
