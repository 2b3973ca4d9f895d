//! Prometheus metrics (issue "Operations", item 2): scraped after known traffic, every count is
//! what that traffic makes it.

use std::{collections::BTreeMap, time::Duration};

use knockd_shared::{CreateRoomRequest, KnockQuery};
use knockd_tests::{SimServer, TestDb, TestKnockd, backends, sim::Mode};
use reqwest::StatusCode;
use serde_json::json;

/// The samples of a scrape: (name, labels) → value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

async fn scrape(k: &TestKnockd) -> Samples {
    let url = k.metrics_url.as_ref().expect("metrics listener");
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    parse(&response.text().await.unwrap())
}

fn parse(text: &str) -> Samples {
    let mut samples = Samples::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let mut labels = BTreeMap::new();
                for pair in rest.trim_end_matches('}').split("\",") {
                    let (k, v) = pair.split_once("=\"").unwrap();
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        samples.insert((name, labels), value.parse().unwrap());
    }
    samples
}

fn get(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    samples.get(&(name.to_owned(), labels)).copied()
}

const SEND_KNOCK: &str = "/_matrix/federation/v1/send_knock/{room_id}/{event_id}";

// Four knocks through send_knock with a cap of three pending (three taken, one refused by the
// cap), one knock over /send, an approval, a denial, an approval whose server is down: the
// knock, decision, federation, outbox, pool and batch figures all match.
#[tokio::test]
async fn a_scrape_after_known_traffic_counts_it() {
    for backend in backends() {
        let k = TestKnockd::start_with(
            TestDb::new(backend),
            &[
                ("KNOCKD_METRICS_LISTEN", "127.0.0.1:0"),
                ("KNOCKD_KNOCK_MAX_PENDING_PER_ROOM", "3"),
                ("KNOCKD_OUTBOX_MIN_BACKOFF_MS", "50"),
                ("KNOCKD_OUTBOX_MAX_BACKOFF_MS", "200"),
                ("KNOCKD_OUTBOX_POLL_MS", "50"),
            ],
        )
        .await;
        let sim = SimServer::start().await;
        let room_id = k
            .admin
            .create_room(&CreateRoomRequest {
                room_version: Some("10".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .room_id;
        for (local, expected) in [
            ("a", StatusCode::OK),
            ("b", StatusCode::OK),
            ("c", StatusCode::OK),
            ("d", StatusCode::TOO_MANY_REQUESTS),
        ] {
            let (s, b) = sim.knock(&k.server_name, &room_id, local, None).await;
            assert_eq!(s, expected, "{b}");
        }
        let query = |status: &str| KnockQuery {
            room_id: Some(room_id.clone()),
            status: Some(status.into()),
            ..Default::default()
        };
        let knocks = k.admin.list_knocks(&query("pending")).await.unwrap().knocks;
        let id_of = |local: &str| {
            let user = sim.user(local).to_string();
            knocks.iter().find(|n| n.user_id == user).unwrap().id
        };
        k.admin.approve(id_of("a"), None).await.unwrap();
        k.admin.deny(id_of("b"), None, false).await.unwrap();
        for _ in 0..200 {
            if k.admin.knock(id_of("a")).await.unwrap().knock.status == "approved" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // A knock over /send (two wait now: c and this one).
        let user = sim.user("e");
        let template = k
            .template(
                &room_id,
                user.as_str(),
                "m.room.member",
                Some(user.as_str()),
                json!({ "membership": "knock" }),
            )
            .await;
        let (id, pdu) = sim.sign_event("10", template);
        let (s, answer) = sim.send_txn(&k.server_name, "m1", &[pdu], &[]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(answer["pdus"][id.as_str()], json!({}), "{answer}");

        let m = scrape(&k).await;
        let case = format!("{backend:?}");
        let send_knock = [("room_version", "10"), ("via", "send_knock")];
        assert_eq!(get(&m, "knockd_knocks_received_total", &send_knock), Some(4.0), "{case}");
        assert_eq!(get(&m, "knockd_knocks_accepted_total", &send_knock), Some(3.0), "{case}");
        let limit = [("reason", "limit"), ("room_version", "10"), ("via", "send_knock")];
        assert_eq!(get(&m, "knockd_knocks_refused_total", &limit), Some(1.0), "{case}");
        let via_send = [("room_version", "10"), ("via", "transaction")];
        assert_eq!(get(&m, "knockd_knocks_received_total", &via_send), Some(1.0), "{case}");
        assert_eq!(get(&m, "knockd_knocks_accepted_total", &via_send), Some(1.0), "{case}");
        let room = [("room", room_id.as_str())];
        assert_eq!(get(&m, "knockd_pending_knocks", &room), Some(2.0), "{case}");
        let oldest = get(&m, "knockd_oldest_pending_knock_seconds", &room).unwrap();
        assert!((0.0..60.0).contains(&oldest), "{case}: {oldest}");
        for action in ["approve", "deny"] {
            let labels = [("action", action), ("actor_kind", "user")];
            assert_eq!(get(&m, "knockd_decisions_total", &labels), Some(1.0), "{case}: {action}");
        }
        assert_eq!(get(&m, "knockd_knock_decision_seconds_count", &[]), Some(2.0), "{case}");
        assert!(get(&m, "knockd_knock_decision_seconds_bucket", &[("le", "60")]).unwrap() >= 2.0);
        let ok = [("endpoint", SEND_KNOCK), ("status", "200")];
        assert_eq!(get(&m, "knockd_federation_requests_total", &ok), Some(3.0), "{case}");
        let limited = [("endpoint", SEND_KNOCK), ("status", "429")];
        assert_eq!(get(&m, "knockd_federation_requests_total", &limited), Some(1.0), "{case}");
        let timed = [("endpoint", SEND_KNOCK)];
        assert_eq!(get(&m, "knockd_federation_request_seconds_count", &timed), Some(4.0), "{case}");
        assert!(get(&m, "knockd_db_pool_wait_seconds_count", &[]).unwrap() > 0.0, "{case}");
        assert!(get(&m, "knockd_room_batch_writes_count", &[]).unwrap() > 0.0, "{case}");

        // The knocker's server down: the approval waits in the outbox and its failures count.
        sim.set_mode(Mode::Down);
        k.admin.approve(id_of("c"), None).await.unwrap();
        let destination = sim.server_name.to_string();
        let dest = [("destination", destination.as_str())];
        let mut failures = 0.0;
        for _ in 0..200 {
            let m = scrape(&k).await;
            failures = get(&m, "knockd_outbox_failures_total", &dest).unwrap_or(0.0);
            if failures >= 2.0 {
                assert_eq!(get(&m, "knockd_outbox_items", &dest), Some(1.0), "{case}");
                assert_eq!(get(&m, "knockd_pending_knocks", &room), Some(1.0), "{case}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(failures >= 2.0, "{case}: {failures}");
        sim.set_mode(Mode::Accept);
        for _ in 0..200 {
            let m = scrape(&k).await;
            if get(&m, "knockd_outbox_items", &dest) == Some(0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let m = scrape(&k).await;
        assert_eq!(get(&m, "knockd_outbox_items", &dest), Some(0.0), "{case}: delivered at last");

        // Every series the Grafana dashboard in contrib/ asks for exists.
        let dashboard = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/grafana/knockd.json"),
        )
        .unwrap();
        let names: std::collections::BTreeSet<&str> = m.keys().map(|(n, _)| n.as_str()).collect();
        let mut asked = 0;
        for (i, _) in dashboard.match_indices("knockd_") {
            let name: String = dashboard[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            if name.len() > "knockd_".len() && name != "knockd_" {
                assert!(names.contains(name.as_str()), "{case}: the dashboard asks for {name}");
                asked += 1;
            }
        }
        assert!(asked >= 12, "{asked}");
        k.stop().await;
    }
}

// Off by default: no listener unless metrics.listen is set.
#[tokio::test]
async fn metrics_are_off_by_default() {
    let k = TestKnockd::start(knockd_tests::TestBackend::Sqlite).await;
    assert!(k.metrics_url.is_none());
    assert!(k.app.config.metrics.listen.is_none());
    k.stop().await;
}
