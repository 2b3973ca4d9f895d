//! Micro-benchmarks of the send_knock hot path, next to the raw ed25519 verify cost.
//! `cargo bench -p knockd --bench hot_path` (set KNOCKD_TEST_DATABASE_URL for PostgreSQL too).
//! Prints the median of 7 rounds per operation; see docs/BENCHMARKS.md.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use ed25519_dalek::{Signer, SigningKey, Verifier};
use knockd::{
    matrix::{KeyRing, event},
    store::{DatabaseUrl, Db, StoreError},
};
use ruma::{
    CanonicalJsonObject, RoomVersionId,
    api::federation::authentication::{XMatrix, XMatrixSigningInput},
    serde::{Base64, base64::Standard},
    signatures::PublicKeyMap,
};

fn measure(name: &str, iterations: u32, mut op: impl FnMut()) {
    for _ in 0..iterations.min(100) {
        op();
    }
    let mut rounds: Vec<Duration> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iterations {
                op();
            }
            t.elapsed() / iterations
        })
        .collect();
    rounds.sort();
    println!("{name:<44} {:>10.2} µs", rounds[3].as_secs_f64() * 1e6);
}

fn knock_pdu(keys: &KeyRing) -> CanonicalJsonObject {
    let rules = event::rules(&RoomVersionId::V10).expect("rules");
    let mut pdu: CanonicalJsonObject = serde_json::from_value(serde_json::json!({
        "type": "m.room.member",
        "room_id": "!abcdefghijklmnop:bench.example",
        "sender": "@knocker:remote.example",
        "state_key": "@knocker:remote.example",
        "content": { "membership": "knock", "displayname": "Knocker", "reason": "Let me in, I have read the rules." },
        "origin_server_ts": 1_795_000_000_000u64,
        "depth": 12,
        "prev_events": ["$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"],
        "auth_events": ["$bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "$ccccccccccccccccccccccccccccccccccccccccccc", "$ddddddddddddddddddddddddddddddddddddddddddd"],
    }))
    .expect("canonical");
    ruma::signatures::hash_and_sign_event(
        "remote.example",
        keys.pair(),
        &mut pdu,
        &rules.redaction,
    )
    .expect("sign");
    pdu
}

fn main() {
    let seed = [7u8; 32];
    let keys = KeyRing::from_seed("remote.example".try_into().expect("name"), "bench", &seed)
        .expect("key");
    let rules = event::rules(&RoomVersionId::V10).expect("rules");
    let pdu = knock_pdu(&keys);
    let key_map: PublicKeyMap = PublicKeyMap::from([(
        "remote.example".to_owned(),
        std::collections::BTreeMap::from([(
            keys.key_id(),
            Base64::<Standard>::parse(keys.public_key_base64()).expect("b64"),
        )]),
    )]);

    println!("operation                                    median per op");
    let dalek = SigningKey::from_bytes(&seed);
    let message = vec![0x42u8; 700];
    let signature = dalek.sign(&message);
    let verifying = dalek.verifying_key();
    measure("raw ed25519 verify (700 bytes)", 2000, || {
        black_box(verifying.verify(black_box(&message), &signature)).expect("verify");
    });
    measure("raw ed25519 sign (700 bytes)", 2000, || {
        black_box(dalek.sign(black_box(&message)));
    });

    let body = serde_json::to_vec(&pdu).expect("json");
    let path = "/_matrix/federation/v1/send_knock/%21abcdefghijklmnop%3Abench.example/%24xyz";
    let request =
        http::Request::builder().method("PUT").uri(path).body(body.clone()).expect("request");
    let x = XMatrix::sign_http_request(
        &request,
        XMatrixSigningInput::new(
            "remote.example".try_into().expect("o"),
            "bench.example".try_into().expect("d"),
            keys.pair(),
        ),
    )
    .expect("x-matrix");
    let ours: &ruma::ServerName = "bench.example".try_into().expect("name");
    measure("X-Matrix verify (send_knock request)", 1000, || {
        x.verify_http_request(black_box(&request), ours, &key_map).expect("verify");
    });
    measure("strict canonical JSON parse of the body", 2000, || {
        black_box(knockd::matrix::json::parse_object(black_box(&body)).expect("parse"));
    });
    measure("event verify (signature + content hash)", 1000, || {
        black_box(event::verify(black_box(&pdu), &key_map, &rules).expect("verify"));
    });
    measure("content hash", 2000, || {
        black_box(ruma::signatures::content_hash(black_box(&pdu)).expect("hash"));
    });
    measure("event ID (reference hash)", 2000, || {
        black_box(event::event_id(black_box(&pdu), &rules).expect("id"));
    });
    measure("hash and sign an event", 1000, || {
        let mut p = pdu.clone();
        ruma::signatures::hash_and_sign_event(
            "bench.example",
            keys.pair(),
            &mut p,
            &rules.redaction,
        )
        .expect("sign");
        black_box(p);
    });

    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let mut urls = vec![("SQLite", format!("sqlite://{}", dir.path().join("bench.db").display()))];
    if let Ok(pg) = std::env::var("KNOCKD_TEST_DATABASE_URL") {
        urls.push(("PostgreSQL", pg));
    }
    for (name, url) in urls {
        runtime.block_on(db_insert(name, &url, &pdu));
    }
}

/// One event row plus one state group, in its own transaction (what a knock writes, less the
/// queue row), measured end to end through the pool.
async fn db_insert(name: &str, url: &str, pdu: &CanonicalJsonObject) {
    let db = Db::connect(&DatabaseUrl::parse(url).expect("url")).await.expect("db");
    let room = format!("!bench{}:bench.example", std::process::id());
    let r = room.clone();
    db.write(move |conn| -> Result<(), StoreError> {
        knockd::store::rooms::insert(
            conn,
            &knockd::store::rooms::RoomRow {
                room_id: r,
                room_version: "10".into(),
                creator: "@a:bench.example".into(),
                created_ms: 0,
                is_public: false,
                current_group: None,
                version: 0,
            },
        )
    })
    .await
    .expect("room");
    let text = serde_json::to_string(pdu).expect("json");
    let mut samples = Vec::new();
    for i in 0..300 {
        let (room, text) = (room.clone(), text.clone());
        let t = Instant::now();
        db.write(move |conn| -> Result<(), StoreError> {
            let id = format!("$bench{i}-{}", std::process::id());
            let group = knockd::store::state::new_group(
                conn,
                &room,
                None,
                &[(("m.room.member".into(), format!("@u{i}:x")), id.clone())],
            )?;
            knockd::store::events::insert(
                conn,
                &knockd::store::events::NewEventRow {
                    event_id: &id,
                    room_id: &room,
                    event_type: "m.room.member",
                    state_key: Some("@u:x"),
                    sender: "@u:x",
                    origin_server_ts: 0,
                    depth: 1,
                    status: "accepted",
                    state_before: None,
                    state_after: Some(group),
                    pdu: &text,
                },
            )
        })
        .await
        .expect("insert");
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "{:<44} {:>10.2} µs",
        format!("database: event + state group ({name})"),
        samples[samples.len() / 2].as_secs_f64() * 1e6
    );
}
