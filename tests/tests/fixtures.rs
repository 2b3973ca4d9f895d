//! Our use of ruma against the spec's signing test vectors and rooms made by Synapse 1.163
//! (`tests/fixtures`, copied from the team folder). KNOCK-SPEC A.3.

use std::collections::{BTreeMap, HashMap};

use knockd::matrix::{KeyRing, Pdu, auth, event, keys::decode_base64_lenient};
use knockd_tests::fixtures_dir;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, RoomVersionId,
    events::StateEventType,
    serde::{Base64, base64::Standard},
    signatures::{PublicKeyMap, Verified},
};
use serde_json::Value;

fn read_json(rel: &str) -> Value {
    let path = fixtures_dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture JSON")
}

fn canonical(value: &Value) -> CanonicalJsonObject {
    serde_json::from_value(value.clone()).expect("canonical JSON object")
}

fn spec_key() -> (KeyRing, Value) {
    let vectors = read_json("spec-vectors.json");
    let seed =
        decode_base64_lenient(vectors["signing_key"]["seed_unpadded_base64"].as_str().unwrap())
            .expect("lenient base64 decode of the spec seed");
    let seed: [u8; 32] = seed.try_into().expect("32-byte seed");
    let keys = KeyRing::from_seed("domain".try_into().unwrap(), "1", &seed).unwrap();
    (keys, vectors)
}

fn signature_of(object: &CanonicalJsonObject) -> String {
    object["signatures"].as_object().unwrap()["domain"].as_object().unwrap()["ed25519:1"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn spec_json_signing_vectors_reproduce() {
    let (keys, vectors) = spec_key();
    assert_eq!(keys.key_id(), "ed25519:1");
    for case in vectors["json_signing"].as_array().unwrap() {
        let mut object = canonical(&case["input"]);
        keys.sign_json(&mut object).unwrap();
        assert_eq!(signature_of(&object), case["expected_signature"].as_str().unwrap());
    }
}

#[test]
fn spec_event_signing_vectors_reproduce() {
    let (keys, vectors) = spec_key();
    // The vectors use room version 1 redaction rules.
    let rules = RoomVersionId::V1.rules().unwrap();
    for case in vectors["event_signing"].as_array().unwrap() {
        let mut object = canonical(&case["input"]);
        object.remove("hashes");
        ruma::signatures::hash_and_sign_event("domain", keys.pair(), &mut object, &rules.redaction)
            .unwrap();
        let hash = object["hashes"].as_object().unwrap()["sha256"].as_str().unwrap().to_owned();
        assert_eq!(
            hash,
            case["expected_content_hash_sha256"].as_str().unwrap(),
            "{}",
            case["note"]
        );
        assert_eq!(
            signature_of(&object),
            case["expected_signature"].as_str().unwrap(),
            "{}",
            case["note"]
        );
    }
}

/// Synapse's two servers' keys, each response's self-signature checked first.
fn synapse_keys() -> PublicKeyMap {
    let doc = read_json("synapse/server-keys.json");
    let mut map = PublicKeyMap::new();
    for server in doc["servers"].as_array().unwrap() {
        let name = server["server_name"].as_str().unwrap().to_owned();
        let mut set = BTreeMap::new();
        for (id, key) in server["verify_keys"].as_object().unwrap() {
            set.insert(
                id.clone(),
                Base64::<Standard>::parse(key["key"].as_str().unwrap()).unwrap(),
            );
        }
        let mut own = PublicKeyMap::new();
        own.insert(name.clone(), set.clone());
        ruma::signatures::verify_json(&own, &canonical(server))
            .expect("key response self-signature");
        map.insert(name, set);
    }
    map
}

struct Room {
    version: RoomVersionId,
    room_id: String,
    events: Vec<(String, CanonicalJsonObject)>,
}

fn synapse_room(version: u8) -> Room {
    let doc = read_json(&format!("synapse/room-v{version}.json"));
    Room {
        version: RoomVersionId::try_from(doc["room_version"].as_str().unwrap()).unwrap(),
        room_id: doc["room_id"].as_str().unwrap().to_owned(),
        events: doc["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["event_id"].as_str().unwrap().to_owned(), canonical(&e["pdu"])))
            .collect(),
    }
}

const VERSIONS: [u8; 6] = [7, 8, 9, 10, 11, 12];

#[test]
fn synapse_events_verify_and_ids_recompute() {
    let keys = synapse_keys();
    for v in VERSIONS {
        let room = synapse_room(v);
        let rules = event::rules(&room.version).unwrap();
        for (id, pdu) in &room.events {
            assert_eq!(
                event::event_id(pdu, &rules).unwrap().as_str(),
                id,
                "v{v}: event ID of {id}"
            );
            assert_eq!(event::verify(pdu, &keys, &rules), Ok(Verified::All), "v{v}: {id}");
        }
        if rules.authorization.room_create_event_id_as_room_id {
            let create = OwnedEventId::try_from(room.events[0].0.as_str()).unwrap();
            assert_eq!(event::room_id_from_create(&create).unwrap().as_str(), room.room_id, "v{v}");
        }
    }
}

#[test]
fn synapse_rooms_pass_ruma_auth_rules_in_order() {
    for v in VERSIONS {
        let room = synapse_room(v);
        let rules = event::rules(&room.version).unwrap();
        let mut seen: HashMap<OwnedEventId, Pdu> = HashMap::new();
        let mut state: HashMap<(StateEventType, String), Pdu> = HashMap::new();
        let mut memberships = Vec::new();
        for (id, json) in &room.events {
            let pdu = Pdu::from_canonical(id.as_str().try_into().unwrap(), json.clone()).unwrap();
            auth::check_against_auth_events(&rules.authorization, &pdu, |e| seen.get(e).cloned())
                .unwrap_or_else(|e| panic!("v{v}: {id} against its auth events: {e}"));
            auth::check_against_state(&rules.authorization, &pdu, |t, k| {
                state.get(&(t.clone(), k.to_owned())).cloned()
            })
            .unwrap_or_else(|e| panic!("v{v}: {id} against the state before it: {e}"));
            if let Some(key) = &pdu.state_key {
                state.insert((pdu.event_type.to_string().into(), key.clone()), pdu.clone());
            }
            if let Some(m) = pdu.membership() {
                memberships.push(m);
            }
            seen.insert(pdu.event_id.clone(), pdu);
        }
        for m in ["knock", "invite", "join", "leave", "ban"] {
            assert!(memberships.iter().any(|x| x == m), "v{v}: fixture has a {m}");
        }
    }
}

fn knock_of(room: &Room) -> (String, CanonicalJsonObject) {
    room.events
        .iter()
        .find(|(_, p)| {
            p["content"].as_object().and_then(|c| c.get("membership")).and_then(|m| m.as_str())
                == Some("knock")
                && p["content"].as_object().unwrap().contains_key("reason")
        })
        .cloned()
        .expect("a knock with a reason")
}

#[test]
fn tampered_knocks_fail_as_the_spec_says() {
    let keys = synapse_keys();
    for v in VERSIONS {
        let room = synapse_room(v);
        let rules = event::rules(&room.version).unwrap();
        let (id, knock) = knock_of(&room);

        // Content changed, signature still valid over the redacted form: use the redacted event.
        let mut changed = knock.clone();
        changed
            .get_mut("content")
            .and_then(CanonicalJsonValue::as_object_mut)
            .unwrap()
            .insert("reason".into(), CanonicalJsonValue::String("something else".into()));
        assert_eq!(event::verify(&changed, &keys, &rules), Ok(Verified::Signatures), "v{v}");
        let redacted = event::redact(changed, &rules).unwrap();
        let content = redacted["content"].as_object().unwrap();
        assert_eq!(content.get("membership").and_then(|m| m.as_str()), Some("knock"), "v{v}");
        assert!(!content.contains_key("reason"), "v{v}: reason must be redacted away");
        // The event ID is over the redacted form, so it is unchanged.
        assert_eq!(event::event_id(&redacted, &rules).unwrap().as_str(), id);

        // A field covered by the signature changed: rejected.
        let mut moved = knock.clone();
        moved.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(1u32.into()));
        assert!(event::verify(&moved, &keys, &rules).is_err(), "v{v}: changed timestamp must fail");

        // A corrupted signature: rejected.
        let mut forged = knock.clone();
        let sigs =
            forged.get_mut("signatures").and_then(CanonicalJsonValue::as_object_mut).unwrap();
        let server = sigs.values_mut().next().and_then(CanonicalJsonValue::as_object_mut).unwrap();
        let sig = server.values_mut().next().unwrap();
        let mut bytes = decode_base64_lenient(sig.as_str().unwrap()).unwrap();
        bytes[0] ^= 1;
        *sig = CanonicalJsonValue::String(Base64::<Standard, _>::new(bytes).encode());
        assert!(event::verify(&forged, &keys, &rules).is_err(), "v{v}: forged signature must fail");

        // Unknown key: rejected.
        assert!(event::verify(&knock, &PublicKeyMap::new(), &rules).is_err(), "v{v}: no keys");
    }
}
