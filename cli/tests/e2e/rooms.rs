//! rooms, completions, man and the bare command.

use std::process::Command;

use knockd_tests::backends;

use crate::common::{knockctl, run_raw, start};

#[tokio::test(flavor = "multi_thread")]
async fn rooms_create_list_show_and_set() {
    for backend in backends() {
        let k = start(backend).await;
        let created =
            knockctl(&k, &["rooms", "create", "--version", "11", "--name", "Hall", "--json"])
                .await
                .expect(0)
                .json();
        let room_id = created["room_id"].as_str().expect("room_id").to_owned();
        assert_eq!(created["room_version"], "11", "{backend:?}: {created}");

        // Text mode prints just the room ID on stdout.
        let plain = knockctl(&k, &["rooms", "create", "--name", "Annex", "--topic", "t"]).await;
        let plain_id = plain.expect(0).stdout.trim().to_owned();
        assert!(plain_id.starts_with('!'), "{plain_id}");
        assert_eq!(k.admin.room(&plain_id).await.unwrap().summary.room_version, "10");

        let rooms = knockctl(&k, &["rooms", "list", "--json"]).await.expect(0).json();
        let ids: Vec<&str> =
            rooms.as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap()).collect();
        assert_eq!(ids, [room_id.as_str(), plain_id.as_str()]);
        let table = knockctl(&k, &["rooms", "list"]).await.expect(0).stdout;
        assert!(table.starts_with("ROOM ID") && table.contains("Hall"), "{table}");

        let shown = knockctl(&k, &["rooms", "show", &room_id, "--json"]).await.expect(0).json();
        assert_eq!(shown["name"], "Hall");
        assert_eq!(shown["join_rule"], "knock");
        assert!(shown["state"].as_array().unwrap().iter().any(|s| s["type"] == "m.room.create"));
        let text = knockctl(&k, &["rooms", "show", &room_id]).await.expect(0).stdout;
        assert!(text.starts_with(&room_id) && text.contains("m.room.create"), "{text}");

        let set = knockctl(&k, &["rooms", "set", &room_id, "--topic", "Welcome", "--json"])
            .await
            .expect(0)
            .json();
        assert_eq!(set["event_ids"].as_array().unwrap().len(), 1, "{set}");
        assert_eq!(k.admin.room(&room_id).await.unwrap().summary.topic.as_deref(), Some("Welcome"));
        knockctl(&k, &["rooms", "set", &room_id]).await.expect(2);

        let member = format!("@mod:{}", k.server_name);
        let added =
            knockctl(&k, &["rooms", "add-member", &room_id, &member, "--power-level", "50"])
                .await
                .expect(0);
        assert!(added.stdout.lines().all(|l| l.starts_with('$')), "{added:?}");
        let power = knockctl(&k, &["rooms", "power", &room_id, &member, "-1", "--json"]).await;
        assert_eq!(power.expect(0).json()["event_ids"].as_array().unwrap().len(), 1);
        knockctl(&k, &["rooms", "remove-member", &room_id, &member]).await.expect(0);
        k.stop().await;
    }
}

fn bare(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_knockctl"));
    cmd.args(args);
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn completions_man_and_help_need_no_daemon() {
    let bash = run_raw(bare(&["completions", "bash"]), None).await.expect(0);
    assert!(bash.stdout.contains("_knockctl") && bash.stdout.contains("approve"), "{bash:?}");
    let zsh = run_raw(bare(&["completions", "zsh"]), None).await.expect(0);
    assert!(zsh.stdout.starts_with("#compdef knockctl"), "{zsh:?}");

    let man = run_raw(bare(&["man"]), None).await.expect(0);
    assert!(man.stdout.contains(".TH knockctl 1"), "roff: {man:?}");
    assert!(man.stdout.contains(".SH NAME") && man.stdout.contains("approve"));

    let help = run_raw(bare(&[]), None).await.expect(0);
    assert!(help.stdout.contains("Usage: knockctl") && help.stdout.contains("Exit codes:"));
    let long = run_raw(bare(&["--help"]), None).await.expect(0);
    assert!(long.stdout.contains("6  knockd unreachable"), "{long:?}");
    let usage = run_raw(bare(&["frobnicate"]), None).await.expect(2);
    assert!(usage.stdout.is_empty());
}
