//! TUI speed with 100,000 pending knocks in memory: first paint, rendering into a 120x40 test
//! backend, and key handling (each key followed by a render, as the real loop does). Prints the
//! median and p99 of many iterations; asserts nothing. Run: `cargo bench -p knockctl`.
//! Budgets: first paint ≤ 200 ms, each keystroke ≤ 16 ms.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use knockctl::tui::{App, Effect, Msg, view};
use knockd_shared::{KnockList, KnockSummary};
use ratatui::{
    Terminal,
    backend::TestBackend,
    crossterm::event::{KeyCode, KeyEvent, KeyModifiers},
};

const KNOCKS: usize = 100_000;
const NOW: i64 = 1_700_000_000_000;

fn knock(id: i64) -> KnockSummary {
    KnockSummary {
        id,
        room_id: format!("!room{}:knock.example", id % 7),
        room_name: Some(format!("Room {}", id % 7)),
        user_id: format!("@user{id}:server{}.example", id % 97),
        display_name: Some(format!("User {id}")),
        avatar_url: None,
        event_id: format!("$event{id}"),
        reason: Some(format!("Hello, I am user {id} and I would like to join \x1b[31mplease\n")),
        origin_server: format!("server{}.example", id % 97),
        status: "pending".into(),
        received_at_ms: NOW - (KNOCKS as i64 - id) * 1000,
        content_redacted: false,
    }
}

fn key(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

type Term = Terminal<TestBackend>;

fn terminal() -> Term {
    Terminal::new(TestBackend::new(120, 40)).expect("test terminal")
}

fn draw(terminal: &mut Term, app: &App) {
    terminal.draw(|f| view::render(app, f)).expect("draw");
}

/// An app with every knock loaded (the worst case: `G` loaded all pages).
fn loaded(knocks: &[KnockSummary]) -> App {
    let mut app = App::new("http://127.0.0.1:8449", NOW, false);
    app.update(Msg::Resize { width: 120, height: 40 });
    let Some(Effect::Fetch { seq, start, .. }) =
        app.start().into_iter().find(|e| matches!(e, Effect::Fetch { .. }))
    else {
        panic!("no first fetch")
    };
    let page = KnockList { knocks: knocks.to_vec(), next: None };
    app.update(Msg::Page { seq, start, result: Ok(page) });
    app
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{name:<44} n={:<6} median {:>9.3?}  p99 {:>9.3?}  max {:>9.3?}",
        samples.len(),
        at(0.5),
        at(0.99),
        samples[samples.len() - 1]
    );
}

fn measure(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

fn main() {
    let knocks: Vec<KnockSummary> = (1..=KNOCKS as i64).map(knock).collect();
    println!("knockctl TUI, {KNOCKS} pending knocks, 120x40 test backend");

    // First paint: a new app drawn before anything was fetched, on a new terminal.
    report(
        "first paint (new app + terminal + draw)",
        measure(200, || {
            let mut app = App::new("http://127.0.0.1:8449", NOW, false);
            app.start();
            let mut t = terminal();
            draw(&mut t, &app);
            black_box(t);
        }),
    );
    // A first page of 500 arriving and drawn.
    report(
        "first page (500 knocks) applied + draw",
        measure(200, || {
            let app = loaded(&knocks[..500]);
            let mut t = terminal();
            draw(&mut t, &app);
            black_box(t);
        }),
    );

    let mut app = loaded(&knocks);
    let mut t = terminal();
    report("render, top of the queue", measure(2000, || draw(&mut t, &app)));
    app.update(key(KeyCode::Char('G')));
    report("render, end of the queue", measure(2000, || draw(&mut t, &app)));

    app.update(key(KeyCode::Char('g')));
    report(
        "key j + render",
        measure(5000, || {
            app.update(key(KeyCode::Char('j')));
            draw(&mut t, &app);
        }),
    );
    let mut down = true;
    report(
        "key G / g (alternating) + render",
        measure(2000, || {
            app.update(key(KeyCode::Char(if down { 'G' } else { 'g' })));
            down = !down;
            draw(&mut t, &app);
        }),
    );
    report(
        "key Space (mark) + render",
        measure(2000, || {
            app.update(key(KeyCode::Char(' ')));
            draw(&mut t, &app);
        }),
    );
    app.update(key(KeyCode::Esc));
    app.update(key(KeyCode::Char('/')));
    let text = "user4242 ";
    let mut i = 0;
    report(
        "filter line typing (one char) + render",
        measure(5000, || {
            let c = text.as_bytes()[i % text.len()] as char;
            i += 1;
            app.update(key(KeyCode::Char(c)));
            draw(&mut t, &app);
        }),
    );
    // Applying a free-text filter matches every loaded row once (Enter, not each keystroke).
    let samples = (0..20)
        .map(|_| {
            let mut app = loaded(&knocks);
            app.update(key(KeyCode::Char('/')));
            for c in "user4242".chars() {
                app.update(key(KeyCode::Char(c)));
            }
            let t0 = Instant::now();
            app.update(key(KeyCode::Enter));
            draw(&mut t, &app);
            t0.elapsed()
        })
        .collect();
    report("filter Enter: match 100,000 rows + render", samples);
    let mut app = loaded(&knocks);
    app.update(key(KeyCode::Enter));
    report(
        "key j with the detail pane open + render",
        measure(2000, || {
            app.update(key(KeyCode::Char('j')));
            draw(&mut t, &app);
        }),
    );
}
