//! list, show, approve and deny, including the `list --json | jq | xargs approve` pipeline.

use knockd_tests::{SimServer, backends};
use serde_json::Value;

use crate::common::{knock, knockctl, knockctl_stdin, room, start, status, wait_status};

const FIELDS: [&str; 9] = [
    "id",
    "room_id",
    "room_name",
    "user_id",
    "display_name",
    "reason",
    "origin_server",
    "status",
    "received_at_ms",
];

#[tokio::test(flavor = "multi_thread")]
async fn list_prints_the_documented_json_and_a_safe_table() {
    for backend in backends() {
        let k = start(backend).await;
        let sim = SimServer::start().await;
        let room_id = room(&k, "Lobby").await;
        let id = knock(&k, &sim, &room_id, "alice", "hi\nthere \x1b[31mred\u{202e}").await;

        let list = knockctl(&k, &["list", "--json"]).await.expect(0).json();
        let items = list.as_array().expect("a JSON array");
        assert_eq!(items.len(), 1, "{backend:?}: {list}");
        let item = &items[0];
        for field in FIELDS {
            assert!(item.get(field).is_some(), "{backend:?}: missing {field}: {item}");
        }
        assert_eq!(item["id"], id);
        assert_eq!(item["room_id"], room_id.as_str());
        assert_eq!(item["room_name"], "Lobby");
        assert_eq!(item["user_id"], sim.user("alice").as_str());
        assert_eq!(item["origin_server"], sim.server_name.as_str());
        assert_eq!(item["status"], "pending");
        assert_eq!(item["reason"], "hi\nthere \x1b[31mred\u{202e}");
        assert!(item["received_at_ms"].as_i64().unwrap() > 0);

        let text = knockctl(&k, &["list"]).await.expect(0).stdout;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
        assert_eq!(header, ["ID", "ROOM", "USER", "SERVER", "AGE", "REASON"]);
        let row = lines.next().expect("a row");
        assert!(row.starts_with(&id.to_string()) && row.contains("Lobby"), "{row}");
        assert!(row.contains("hi\\nthere \\u{1b}[31mred\\u{202e}"), "escaped reason: {row}");
        assert!(!text.contains('\x1b') && !text.contains('\u{202e}'), "raw controls: {text:?}");
        assert_eq!(lines.next(), None);

        // Other statuses, filters and the limit.
        let none = knockctl(&k, &["list", "--status", "approved", "--json"]).await.expect(0);
        assert_eq!(none.json(), Value::Array(vec![]));
        let other = knockctl(&k, &["list", "--server", "elsewhere.example", "--json"]).await;
        assert_eq!(other.expect(0).json(), Value::Array(vec![]));
        let bad = knockctl(&k, &["list", "--status", "bogus"]).await.expect(2);
        assert!(bad.stdout.is_empty());
        k.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn list_follows_cursors_up_to_the_limit() {
    for backend in backends() {
        let k = start(backend).await;
        let sim = SimServer::start().await;
        let room_id = room(&k, "Busy").await;
        let mut ids = Vec::new();
        for user in ["u1", "u2", "u3"] {
            ids.push(knock(&k, &sim, &room_id, user, "hello").await);
        }
        let two = knockctl(&k, &["list", "--limit", "2", "--json"]).await.expect(0);
        let got: Vec<i64> =
            two.json().as_array().unwrap().iter().map(|v| v["id"].as_i64().unwrap()).collect();
        assert_eq!(got, ids[..2], "{backend:?}");
        assert!(two.stderr.contains("more"), "says there are more: {two:?}");
        let all = knockctl(&k, &["list", "--limit", "0", "--status", "all", "--json"]).await;
        assert_eq!(all.expect(0).json().as_array().unwrap().len(), 3);
        k.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pipeline_approves_the_knocks_a_filter_selects() {
    for backend in backends() {
        let k = start(backend).await;
        let (good, bad) = (SimServer::start().await, SimServer::start().await);
        let room_id = room(&k, "Club").await;
        let alice = knock(&k, &good, &room_id, "alice", "friend").await;
        let bob = knock(&k, &good, &room_id, "bob", "friend").await;
        let mallory = knock(&k, &bad, &room_id, "mallory", "spam").await;

        // knockctl list --json | jq -r '.[] | select(.origin_server=="good") | .id'
        let list = knockctl(&k, &["list", "--json"]).await.expect(0).json();
        let ids: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|item| item["origin_server"] == good.server_name.as_str())
            .map(|item| item["id"].to_string())
            .collect();
        assert_eq!(ids, [alice.to_string(), bob.to_string()], "{backend:?}");

        // | xargs knockctl approve
        let mut args = vec!["approve"];
        args.extend(ids.iter().map(String::as_str));
        let run = knockctl(&k, &args).await.expect(0);
        assert_eq!(run.stdout.lines().count(), 2, "one line per approval: {run:?}");
        for id in [alice, bob] {
            wait_status(&k, id, &["approved"]).await;
        }
        assert_eq!(status(&k, mallory).await, "pending");

        // The same, with the ids on stdin.
        let run = knockctl_stdin(&k, &["approve", "--json"], &format!("{mallory}\n")).await;
        let results = run.expect(0).json();
        assert_eq!(results["results"][0]["id"], mallory);
        assert_eq!(results["results"][0]["decision"]["action"], "approve");
        // Nothing on stdin: nothing to do.
        let run = knockctl_stdin(&k, &["approve"], "").await.expect(0);
        assert!(run.stderr.contains("nothing to do"), "{run:?}");
        k.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn show_prints_a_knock() {
    for backend in backends() {
        let k = start(backend).await;
        let sim = SimServer::start().await;
        let room_id = room(&k, "Shown").await;
        let id = knock(&k, &sim, &room_id, "carol", "please\tlet me in").await;
        let detail = knockctl(&k, &["show", &id.to_string(), "--json"]).await.expect(0).json();
        assert_eq!(detail["id"], id, "{backend:?}");
        assert_eq!(detail["user_id"], sim.user("carol").as_str());
        assert!(detail["decisions"].as_array().unwrap().is_empty());
        assert!(detail["knock_room_state"].is_array());

        let text = knockctl(&k, &["show", &id.to_string()]).await.expect(0).stdout;
        assert!(text.starts_with(&format!("knock {id}  pending")), "{text}");
        assert!(text.contains(sim.user("carol").as_str()) && text.contains("Shown"), "{text}");
        assert!(text.contains("please\\tlet me in"), "escaped reason: {text}");
        k.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_deny_needs_yes_when_not_on_a_terminal() {
    for backend in backends() {
        let k = start(backend).await;
        let sim = SimServer::start().await;
        let room_id = room(&k, "Strict").await;
        let a = knock(&k, &sim, &room_id, "spam1", "buy").await;
        let b = knock(&k, &sim, &room_id, "spam2", "buy").await;
        let (a_s, b_s) = (a.to_string(), b.to_string());

        let refused = knockctl(&k, &["deny", "--ban", &a_s, &b_s]).await.expect(2);
        assert!(refused.stderr.starts_with("knockctl: ") && refused.stderr.contains("--yes"));
        assert_eq!(refused.stderr.lines().count(), 1, "one line: {refused:?}");
        assert!(refused.stdout.is_empty());
        assert_eq!(
            (status(&k, a).await, status(&k, b).await),
            ("pending".into(), "pending".into())
        );
        let log = knockctl(&k, &["log", "--json"]).await.expect(0).json();
        assert_eq!(log, Value::Array(vec![]), "{backend:?}: nothing decided");

        // With --yes, ids on stdin.
        let run = knockctl_stdin(
            &k,
            &["deny", "--ban", "--yes", "--reason", "spam"],
            &format!("{a}\n{b}\n"),
        )
        .await
        .expect(0);
        assert_eq!(run.stdout.lines().count(), 2, "{run:?}");
        assert_eq!((status(&k, a).await, status(&k, b).await), ("banned".into(), "banned".into()));
        let log = knockctl(&k, &["log", "--action", "ban", "--json"]).await.expect(0).json();
        let mut knocks: Vec<i64> =
            log.as_array().unwrap().iter().map(|d| d["knock_id"].as_i64().unwrap()).collect();
        knocks.sort();
        assert_eq!(knocks, [a, b]);
        assert!(log.as_array().unwrap().iter().all(|d| d["reason"] == "spam"));
        let text = knockctl(&k, &["log"]).await.expect(0).stdout;
        assert!(text.starts_with("WHEN") && text.contains("ban"), "{text}");

        // One id is not bulk: no confirmation needed.
        let c = knock(&k, &sim, &room_id, "spam3", "buy").await;
        knockctl(&k, &["deny", &c.to_string()]).await.expect(0);
        assert_eq!(status(&k, c).await, "denied");
        k.stop().await;
    }
}
