//! Exit codes: not found, already decided, unreachable, bad token, partial bulk failures.

use std::net::TcpListener;

use knockd_tests::{SimServer, backends};

use crate::common::{command, knock, knockctl, room, run_raw, start};

#[tokio::test(flavor = "multi_thread")]
async fn api_errors_have_their_exit_codes() {
    for backend in backends() {
        let k = start(backend).await;
        let sim = SimServer::start().await;
        let room_id = room(&k, "Errors").await;
        let id = knock(&k, &sim, &room_id, "dave", "hi").await;
        let other = knock(&k, &sim, &room_id, "erin", "hi").await;

        let missing = knockctl(&k, &["show", "987654"]).await.expect(3);
        assert!(missing.stderr.starts_with("knockctl: ") && missing.stderr.contains("M_NOT_FOUND"));
        assert_eq!(missing.stderr.lines().count(), 1, "{missing:?}");
        knockctl(&k, &["approve", "987654"]).await.expect(3);
        knockctl(&k, &["rooms", "show", "!nope:example.org"]).await.expect(3);

        knockctl(&k, &["approve", &id.to_string()]).await.expect(0);
        let again = knockctl(&k, &["deny", &id.to_string()]).await.expect(4);
        assert!(again.stderr.contains("M_CONFLICT"), "{backend:?}: {again:?}");
        let again = knockctl(&k, &["approve", &id.to_string(), "--json"]).await.expect(4);
        assert_eq!(again.json()["results"][0]["error"]["errcode"], "M_CONFLICT");

        // Bulk: the failures are named; mixed failures exit 1, same-kind ones with their code.
        let mixed = knockctl(&k, &["approve", &id.to_string(), "987654"]).await.expect(1);
        let lines: Vec<&str> = mixed.stderr.lines().collect();
        assert_eq!(lines.len(), 3, "a line per failure and a summary: {mixed:?}");
        assert!(lines[0].contains(&format!("knock {id}")) && lines[0].contains("M_CONFLICT"));
        assert!(lines[1].contains("knock 987654") && lines[1].contains("M_NOT_FOUND"));
        assert!(mixed.stderr.contains("2 of 2 knocks failed"), "{mixed:?}");
        let partial = knockctl(&k, &["approve", &other.to_string(), &id.to_string(), "--json"])
            .await
            .expect(4);
        let results = partial.json()["results"].clone();
        assert_eq!(results[0]["decision"]["knock_id"], other);
        assert_eq!(results[1]["error"]["errcode"], "M_CONFLICT");
        assert!(partial.stderr.contains(&format!("1 of 2 knocks failed: {id}")), "{partial:?}");

        // A bad token and a missing token file.
        let bad = k.data_dir.join("bad.token");
        std::fs::write(&bad, "not-a-token\n").unwrap();
        let run = run_raw(command(&k.admin_url, &bad, &["list"]), None).await.expect(5);
        assert!(run.stderr.contains("M_UNKNOWN_TOKEN"), "{run:?}");
        let gone = k.data_dir.join("missing.token");
        run_raw(command(&k.admin_url, &gone, &["list"]), None).await.expect(5);

        // Bad ids are usage errors.
        knockctl(&k, &["approve", "twelve"]).await.expect(2);
        knockctl(&k, &["show", "twelve"]).await.expect(2);

        let outbox = knockctl(&k, &["outbox", "--json"]).await.expect(0).json();
        assert!(outbox["pending"].is_i64() && outbox["parked"].is_array(), "{outbox}");
        k.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_daemon_exits_6() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let dir = std::env::temp_dir().join(format!("knockctl-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("admin.token");
    std::fs::write(&token, "whatever").unwrap();
    for args in [&["list"][..], &["approve", "1"], &["watch"], &["rooms", "list", "--json"]] {
        let run = run_raw(command(&url, &token, args), None).await.expect(6);
        assert!(run.stdout.is_empty(), "{run:?}");
        assert!(run.stderr.starts_with("knockctl: cannot reach knockd"), "{run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// `knockctl version`: its own version and the daemon's, as text and JSON.
#[tokio::test(flavor = "multi_thread")]
async fn version_names_both() {
    let k = start(knockd_tests::TestBackend::Sqlite).await;
    let json = knockctl(&k, &["version", "--json"]).await.expect(0).json();
    assert_eq!(json["knockctl"], env!("CARGO_PKG_VERSION"), "{json}");
    assert!(json["knockd"].as_str().is_some_and(|v| !v.is_empty()), "{json}");
    let text = knockctl(&k, &["version"]).await.expect(0);
    assert!(text.stdout.starts_with("knockctl ") && text.stdout.contains("\nknockd "), "{text:?}");
    k.stop().await;
}
