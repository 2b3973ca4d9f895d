//! Answers from knockd, queue events and failures in, state and effects out.

use knockd_shared::{BulkItem, ErrorBody, KnockList, QueueEvent};
use ratatui::crossterm::event::KeyCode;

use super::fixtures::*;
use crate::tui::{
    App, Effect, Msg,
    app::{Conn, Verb},
};

#[test]
fn pages_load_lazily_near_the_end_and_stale_pages_are_dropped() {
    let mut app = App::new("http://x", NOW, false);
    app.update(Msg::Resize { width: 80, height: 24 });
    let effects = app.start();
    answer(&mut app, &effects, many(1, page_size()), Some("500"));
    assert_eq!(app.knocks.len(), page_size());
    // Moving near the end asks for the next page, after the last loaded id.
    let mut asked = None;
    for _ in 0..page_size() {
        let effects = app.update(key('j'));
        if let Some(Effect::Fetch { query, start, seq }) = effects.first() {
            asked = Some((query.from.clone(), *start, *seq));
            break;
        }
    }
    let (from, start, seq) = asked.expect("a next-page request");
    assert_eq!((from.as_deref(), start), (Some("500"), page_size()));
    // A queue event while it is in flight: the answer lands, then the page shown reloads once.
    assert!(app.update(Msg::Queue(event(9_999, "pending"))).is_empty());
    let page = KnockList { knocks: many(501, 10), next: None };
    let effects = app.update(Msg::Page { seq, start, result: Ok(page) });
    assert_eq!(app.knocks.len(), page_size() + 10);
    assert!(matches!(effects.first(), Some(Effect::Fetch { start, .. }) if *start > 0));
    // An answer to an older request is ignored.
    let old = KnockList { knocks: vec![], next: None };
    app.update(Msg::Page { seq, start: 0, result: Ok(old) });
    assert_eq!(app.knocks.len(), page_size() + 10);
}

#[test]
fn capital_g_loads_every_page_and_stays_at_the_end() {
    let mut app = App::new("http://x", NOW, false);
    let effects = app.start();
    answer(&mut app, &effects, many(1, 500), Some("500"));
    let effects = app.update(key('G'));
    answer(&mut app, &effects, many(501, 500), Some("1000"));
    assert_eq!(selected_id(&app), 1000);
    assert!(app.loading.is_some(), "asks for the next page by itself");
    let last = KnockList { knocks: many(1001, 3), next: None };
    app.update(Msg::Page { seq: app.seq, start: 1000, result: Ok(last) });
    assert_eq!(selected_id(&app), 1003);
    assert!(!app.want_end);
}

fn event(id: i64, status: &str) -> QueueEvent {
    QueueEvent {
        kind: "knock".into(),
        knock_id: Some(id),
        room_id: None,
        status: Some(status.into()),
    }
}

#[test]
fn events_remove_decided_knocks_and_keep_the_selection() {
    let mut app = loaded(80, 24);
    app.update(key('j'));
    app.update(key('j'));
    assert_eq!(selected_id(&app), 12);
    let effects = app.update(Msg::Queue(event(7, "denied")));
    assert!(app.knock_by_id(7).is_none());
    assert_eq!(selected_id(&app), 12, "still on the same knock");
    assert!(matches!(effects.first(), Some(Effect::Fetch { .. })), "refetches the page shown");
    // The selected knock itself goes: the next one is selected.
    app.loading = None;
    app.update(Msg::Queue(event(12, "approved")));
    assert_eq!(selected_id(&app), 15);
}

#[test]
fn decision_errors_go_to_the_status_line() {
    let mut app = loaded(80, 24);
    app.update(key('a'));
    let conflict = ErrorBody {
        errcode: "M_CONFLICT".into(),
        error: "knock 3 is already decided\x1b[0m".into(),
    };
    let item = BulkItem { id: 3, decision: None, error: Some(conflict) };
    app.update(Msg::Decided { verb: Verb::Approve, result: Ok(vec![item]) });
    let status = app.status.clone().unwrap();
    assert!(status.error && status.text.contains("M_CONFLICT"), "{status:?}");
    assert!(!status.text.contains('\x1b'), "escaped: {status:?}");
    let ok =
        BulkItem { id: 7, decision: Some(decision(7, "approve", "pending", None)), error: None };
    app.update(Msg::Decided { verb: Verb::Approve, result: Ok(vec![ok]) });
    let status = app.status.clone().unwrap();
    assert!(!status.error && status.text.contains("delivery pending"), "{status:?}");
    // A failed invite of a knock approved here is reported when its event arrives.
    app.update(Msg::Queue(event(7, "approve_failed")));
    assert!(app.status.as_ref().unwrap().text.contains("approve failed"));
}

#[test]
fn an_unreachable_daemon_shows_the_banner_until_the_stream_is_back() {
    let mut app = loaded(80, 24);
    app.update(Msg::StreamDown(unreachable()));
    assert!(matches!(app.conn, Conn::Down { since_ms: NOW, .. }));
    app.update(Msg::Tick { now_ms: NOW + 5_000 });
    app.update(Msg::StreamDown(unreachable()));
    assert!(matches!(app.conn, Conn::Down { since_ms: NOW, .. }), "keeps when it went down");
    let effects = app.update(Msg::StreamUp);
    assert_eq!(app.conn, Conn::Up);
    assert!(matches!(effects.first(), Some(Effect::Fetch { .. })), "reloads what it missed");
}

#[test]
fn nothing_selected_is_not_an_error_that_panics() {
    let mut app = App::new("http://x", NOW, false);
    for c in "jkgGadb e JK/".chars() {
        app.update(key(c));
        app.update(code(KeyCode::Esc));
    }
    app.update(code(KeyCode::Enter));
    app.update(code(KeyCode::PageDown));
    assert!(app.selected_knock().is_none());
}
