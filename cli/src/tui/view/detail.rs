//! The detail pane: the knocker, the reason (short or in full), the room as the knocker saw it,
//! decisions with their delivery state, and the knocker's and the server's history.

use knockd_shared::{Decision, KnockDetail, KnockSummary};
use ratatui::{
    Frame,
    layout::Rect,
    style::Style,
    text::{Line, Span},
    widgets::{Block, Borders, Paragraph, Wrap},
};

use super::theme::Theme;
use crate::{
    output::{age_at, utc},
    tui::{
        app::App,
        room::RoomContext,
        sanitize::{clean, cut, fit, width},
    },
};

/// History rows shown.
const HISTORY: usize = 5;

pub fn render(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let block = if app.detail.is_some() && app.width >= crate::tui::layout::SPLIT_WIDTH {
        Block::new().borders(Borders::LEFT).border_style(theme.dim())
    } else {
        Block::new()
    };
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let (Some(detail), Some(k)) = (&app.detail, app.selected_knock()) else {
        frame.render_widget(Paragraph::new("No knock selected."), inner);
        return;
    };
    let w = usize::from(inner.width.saturating_sub(1));
    let mut p = Lines { lines: Vec::new(), w, theme };
    knock(&mut p, app, k, detail.data.as_deref());
    match (&detail.data, &detail.error) {
        (Some(d), _) => rest(&mut p, app, d),
        (None, Some(e)) => p.push(Line::styled(cut(e, w), theme.error())),
        (None, None) => p.push(Line::styled("loading details…", theme.dim())),
    }
    let paragraph = Paragraph::new(p.lines).wrap(Wrap { trim: false }).scroll((detail.scroll, 0));
    frame.render_widget(paragraph, inner);
}

struct Lines<'t> {
    lines: Vec<Line<'static>>,
    w: usize,
    theme: &'t Theme,
}

impl Lines<'_> {
    fn push(&mut self, line: Line<'static>) {
        self.lines.push(line);
    }

    /// `label    value`, the value escaped and cut to the pane.
    fn field(&mut self, label: &str, value: &str, style: Style) {
        let value = fit(value, self.w.saturating_sub(10));
        self.push(Line::from(vec![
            Span::styled(format!("{label:<9} "), self.theme.label()),
            Span::styled(value, style),
        ]));
    }

    /// A blank line and a heading (untrusted parts already escaped).
    fn heading(&mut self, text: String) {
        self.push(Line::default());
        self.push(Line::styled(cut(&text, self.w), self.theme.title()));
    }
}

fn knock(p: &mut Lines, app: &App, k: &KnockSummary, data: Option<&KnockDetail>) {
    let theme = p.theme;
    p.push(Line::from(vec![
        Span::styled(format!("Knock {} · ", k.id), theme.title()),
        Span::styled(k.status.clone(), theme.status(&k.status)),
    ]));
    p.field("User", &k.user_id, Style::new());
    if let Some(name) = &k.display_name {
        p.field("Name", name, Style::new());
    }
    p.field("Server", &k.origin_server, Style::new());
    let when = format!("{} ({} ago)", utc(k.received_at_ms), age_at(app.now_ms, k.received_at_ms));
    p.field("Received", &when, Style::new());
    if let Some(avatar) = &k.avatar_url {
        p.field("Avatar", avatar, theme.dim());
    }
    reason(p, app, k);
    let last = data.and_then(|d| d.decisions.iter().max_by_key(|d| d.decided_at_ms));
    match (k.status.as_str(), last) {
        ("delivery_pending", _) => {
            p.field("Delivery", "approved; the invite is on its way", theme.status("pending"))
        }
        ("approve_failed", Some(d)) => {
            let why = d.delivery_error.as_deref().unwrap_or("no reason given");
            p.field("Delivery", &format!("approve failed: {why}"), theme.error());
        }
        ("approve_failed", None) => p.field("Delivery", "approve failed", theme.error()),
        _ => {}
    }
}

fn reason(p: &mut Lines, app: &App, k: &KnockSummary) {
    let theme = p.theme;
    let label = Span::styled(format!("{:<9} ", "Reason"), theme.label());
    let text = match (&k.reason, k.content_redacted) {
        (_, true) => {
            return p.field("Reason", "(redacted: the content hash did not match)", theme.dim());
        }
        (None, false) => return p.field("Reason", "(none)", theme.dim()),
        (Some(r), false) => r,
    };
    if !app.expanded {
        let short = fit(text, p.w.saturating_sub(10));
        let cut = short.ends_with('…') || text.contains('\n');
        let hint = if cut { " (e: full)" } else { "" };
        let short = if hint.is_empty() { short } else { fit(text, p.w.saturating_sub(20)) };
        p.push(Line::from(vec![label, Span::raw(short), Span::styled(hint, theme.dim())]));
        return;
    }
    // In full: one screen line per line of the reason, each escaped, wrapped by the paragraph.
    let mut first = Some(label);
    for part in text.split('\n').take(200) {
        let lead = first.take().unwrap_or_else(|| Span::raw(" ".repeat(10)));
        p.push(Line::from(vec![lead, Span::raw(clean(part))]));
    }
}

fn rest(p: &mut Lines, app: &App, d: &KnockDetail) {
    let theme = p.theme;
    let room = RoomContext::from_pdus(&d.knock_room_state);
    p.heading("Room as the knocker saw it".into());
    let none = theme.dim();
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    p.field("Name", &or_none(&room.name), Style::new());
    p.field("Topic", &or_none(&room.topic), Style::new());
    p.field("Avatar", &or_none(&room.avatar_url), none);
    p.field("Alias", &or_none(&room.alias), Style::new());
    let join =
        format!("{} · room version {}", or_none(&room.join_rule), or_none(&room.room_version));
    p.field("Join rule", &join, Style::new());
    let enc = room.encryption.as_deref().map_or("no".to_owned(), |a| format!("yes ({a})"));
    p.field("Encrypted", &enc, Style::new());

    p.heading(format!("Decisions ({})", d.decisions.len()));
    for dec in d.decisions.iter().take(HISTORY) {
        decision(p, app, dec, "");
    }
    p.heading(format!("Earlier knocks by this user here ({})", d.user_history.len()));
    for old in d.user_history.iter().take(HISTORY) {
        let reason = old.reason.as_deref().unwrap_or("");
        let ago = age_at(app.now_ms, old.received_at_ms);
        let line = format!("#{} {} {ago} ago \"{reason}\"", old.id, old.status);
        p.push(Line::styled(fit(&line, p.w), theme.status(&old.status)));
        for dec in d.user_decisions.iter().filter(|x| x.knock_id == old.id).take(2) {
            decision(p, app, dec, "  ");
        }
    }
    let mut counts: Vec<(String, usize)> = Vec::new();
    for k in &d.server_history {
        match counts.iter_mut().find(|(s, _)| *s == k.status) {
            Some((_, n)) => *n += 1,
            None => counts.push((k.status.clone(), 1)),
        }
    }
    let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let server = clean(&d.knock.origin_server);
    p.heading(format!("Recent knocks from {server} ({})", d.server_history.len()));
    if !summary.is_empty() {
        p.push(Line::raw(fit(&summary.join(", "), p.w)));
    }
}

/// `approve · failed: M_X… · by @mod:x 3m ago "reason"`, the delivery state in its colour.
fn decision(p: &mut Lines, app: &App, d: &Decision, indent: &str) {
    let delivery = match (d.delivery.as_str(), &d.delivery_error) {
        ("pending", _) => "delivery pending".to_owned(),
        (state, Some(e)) => format!("{state}: {e}"),
        (state, None) => state.to_owned(),
    };
    let reason = d.reason.as_deref().map(|r| format!(" \"{r}\"")).unwrap_or_default();
    let ago = age_at(app.now_ms, d.decided_at_ms);
    let head = fit(&format!("{indent}{} · ", d.action), p.w);
    let mut left = p.w.saturating_sub(width(&head));
    let delivery = fit(&delivery, left.min(48));
    left = left.saturating_sub(width(&delivery));
    let by = fit(&format!(" · by {} {ago} ago{reason}", d.actor), left);
    let style = p.theme.status(&d.delivery);
    p.push(Line::from(vec![Span::raw(head), Span::styled(delivery, style), Span::raw(by)]));
}
