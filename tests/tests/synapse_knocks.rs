//! Knocks made by Synapse 1.163 (`tests/fixtures/synapse`) pass knockd's send_knock pipeline
//! (shape, event ID, signature, auth three ways) when knockd holds the rest of the room.

use knockd::{
    matrix::{Pdu, now_ms},
    room::persist,
    service::membership::{self, Answer, Kind},
    store::{
        StoreError,
        rooms::{self, RoomRow},
        server_keys::{self, KeyRow},
    },
};
use knockd_shared::KnockQuery;
use knockd_tests::{TestKnockd, backends, fixtures_dir};
use ruma::{CanonicalJsonObject, OwnedEventId, OwnedServerName};
use serde_json::Value;

fn read(rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join(rel)).unwrap()).unwrap()
}

async fn seed_synapse_keys(k: &TestKnockd) {
    let doc = read("synapse/server-keys.json");
    let mut rows = Vec::new();
    for server in doc["servers"].as_array().unwrap() {
        for (key_id, key) in server["verify_keys"].as_object().unwrap() {
            rows.push(KeyRow {
                server_name: server["server_name"].as_str().unwrap().to_owned(),
                key_id: key_id.clone(),
                verify_key: key["key"].as_str().unwrap().to_owned(),
                valid_until_ms: server["valid_until_ts"].as_i64().unwrap(),
                expired_ms: None,
                fetched_ms: now_ms(),
            });
        }
    }
    k.app
        .db
        .write(move |conn| -> Result<(), StoreError> {
            for row in &rows {
                server_keys::upsert(conn, row)?;
            }
            Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn synapse_made_knocks_are_accepted() {
    for backend in backends() {
        for v in [7, 8, 9, 10, 11, 12] {
            let k = TestKnockd::start(backend).await;
            seed_synapse_keys(&k).await;
            let doc = read(&format!("synapse/room-v{v}.json"));
            let room_id = doc["room_id"].as_str().unwrap().to_owned();
            let events: Vec<(String, CanonicalJsonObject)> = doc["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["event_id"].as_str().unwrap().to_owned(),
                        serde_json::from_value(e["pdu"].clone()).unwrap(),
                    )
                })
                .collect();
            let creator = events[0].1["sender"].as_str().unwrap().to_owned();
            let row = RoomRow {
                room_id: room_id.clone(),
                room_version: v.to_string(),
                creator,
                created_ms: 0,
                is_public: false,
                current_group: None,
                version: 0,
            };
            k.app.db.write(move |conn| rooms::insert(conn, &row)).await.unwrap();
            let mut accepted = 0;
            for (id, pdu) in events {
                let is_knock = pdu["content"]
                    .as_object()
                    .and_then(|c| c.get("membership"))
                    .and_then(|m| m.as_str())
                    == Some("knock");
                if is_knock {
                    let origin: OwnedServerName = "127.0.0.1:8487".try_into().unwrap();
                    let answer = membership::send(
                        &k.app,
                        &origin,
                        Kind::Knock,
                        room_id.clone(),
                        id.clone(),
                        pdu,
                    )
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{backend:?} v{v}: Synapse's knock {id} refused: {e}")
                    });
                    let Answer::Knock(answer) = answer else { panic!("not a knock answer") };
                    assert_eq!(answer[0]["type"], "m.room.create");
                    accepted += 1;
                } else {
                    // Stored as it comes, each extending the current state.
                    k.app
                        .rooms
                        .write(&room_id, move |txn| -> Result<(), StoreError> {
                            let pdu = Pdu::from_canonical(OwnedEventId::try_from(id).unwrap(), pdu)
                                .map_err(StoreError::Corrupt)?;
                            let before = txn.room.current.clone();
                            let (conn, room, _) = txn.parts()?;
                            persist::accepted(
                                conn,
                                room,
                                &std::sync::Arc::new(pdu),
                                &before,
                                false,
                                false,
                            )?;
                            Ok(())
                        })
                        .await
                        .unwrap();
                }
            }
            assert_eq!(accepted, 3, "bob, carol and dave knocked");
            let all = k
                .admin
                .list_knocks(&KnockQuery { status: Some("all".into()), ..KnockQuery::default() })
                .await
                .unwrap();
            assert_eq!(all.knocks.len(), 3);
            let bob = all.knocks.iter().find(|x| x.user_id.starts_with("@bob")).unwrap();
            assert!(bob.reason.is_some(), "bob gave a reason");
            assert!(!bob.content_redacted);
            k.stop().await;
        }
    }
}
