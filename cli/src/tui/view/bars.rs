//! The title bar, the "knockd unreachable" banner, and the status bar.

use ratatui::{
    Frame,
    layout::{Alignment, Rect},
    text::{Line, Span},
    widgets::Paragraph,
};

use super::theme::Theme;
use crate::{
    output::age_at,
    tui::{
        app::{App, Conn},
        sanitize::{clean, cut, width},
    },
};

/// `knockctl · pending · all rooms · "text"` and the position on the right.
pub fn title(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let q = &app.query;
    let mut parts = vec![q.status.clone()];
    parts.push(match &q.room {
        Some(room) => format!("room {}", clean(&app.room_label(room))),
        None => "all rooms".into(),
    });
    if let Some(server) = &q.server {
        parts.push(format!("server {}", clean(server)));
    }
    if let Some(user) = &q.user {
        parts.push(format!("user {}", clean(user)));
    }
    if !q.text.is_empty() {
        parts.push(format!("\"{}\"", clean(&q.text)));
    }
    let more = if app.next.is_some() { "+" } else { "" };
    let mut right = match (&app.view, app.loaded) {
        (_, false) => "loading…".to_owned(),
        (Some(v), true) => format!("{} of {}{more} loaded match", v.len(), group(app.knocks.len())),
        (None, true) if app.knocks.is_empty() => "0".to_owned(),
        (None, true) => format!("{}/{}{more}", group(app.selected + 1), group(app.knocks.len())),
    };
    if !app.marked.is_empty() {
        right = format!("{} marked · {right}", app.marked.len());
    }
    let right = format!("{right} ");
    let left_width = usize::from(area.width).saturating_sub(width(&right) + 1);
    let left = cut(&format!(" knockctl · {}", parts.join(" · ")), left_width);
    let pad = usize::from(area.width).saturating_sub(width(&left) + width(&right));
    let line = Line::from(vec![
        Span::styled(left, theme.bar().bold()),
        Span::styled(" ".repeat(pad), theme.bar()),
        Span::styled(right, theme.bar()),
    ]);
    frame.render_widget(Paragraph::new(line).style(theme.bar()), area);
}

/// The banner shown while knockd is unreachable.
pub fn banner(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let Conn::Down { message, since_ms } = &app.conn else { return };
    let text = format!(
        " knockd unreachable at {} for {} (retrying): {}",
        clean(&app.url),
        age_at(app.now_ms, *since_ms),
        message
    );
    let text = cut(&text, usize::from(area.width));
    frame.render_widget(Paragraph::new(text).style(theme.banner()), area);
}

/// The last action's outcome (or errors), and where help is.
pub fn status(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let hint = "? help  q quit ";
    let room = usize::from(area.width).saturating_sub(hint.len() + 1);
    let (text, style) = match &app.status {
        Some(s) if s.error => (cut(&format!(" {}", s.text), room), theme.error()),
        Some(s) => (cut(&format!(" {}", s.text), room), ratatui::style::Style::new()),
        None => (cut(" a approve  d deny  b ban  Space mark  / filter", room), theme.dim()),
    };
    let hint_shown = if usize::from(area.width) > hint.len() + 1 { hint } else { "" };
    frame.render_widget(Paragraph::new(Span::styled(text, style)), area);
    frame.render_widget(
        Paragraph::new(Span::styled(hint_shown, theme.key())).alignment(Alignment::Right),
        area,
    );
}

/// `100000` as `100,000`.
pub fn group(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
