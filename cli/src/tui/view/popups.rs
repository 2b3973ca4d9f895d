//! The reason prompt and the confirmation popup.

use ratatui::{
    Frame,
    layout::{Position, Rect},
    text::{Line, Span},
    widgets::{Block, Borders, Clear, Paragraph},
};

use super::theme::Theme;
use crate::tui::{
    app::{Pending, Prompt, Verb},
    keys::{self, Context, TEMPLATES},
    layout::centered,
    sanitize::{clean, cut, tail, width},
};

fn popup<'a>(
    frame: &mut Frame,
    area: Rect,
    title: String,
    lines: Vec<Line<'a>>,
    theme: &Theme,
) -> Rect {
    let height = lines.len() as u16 + 2;
    let area = centered(area, 64, height);
    let block = Block::new().borders(Borders::ALL).title(cut(&title, 60)).style(theme.popup());
    let inner = block.inner(area);
    frame.render_widget(Clear, area);
    frame.render_widget(Paragraph::new(lines).block(block), area);
    inner
}

/// `y Enter: yes, do it   n Esc: no`, from the key table.
fn hints(context: Context, theme: &Theme) -> Line<'static> {
    let mut spans = Vec::new();
    for (keys, text) in keys::help(context) {
        spans.push(Span::styled(keys, theme.key()));
        spans.push(Span::raw(format!(": {text}   ")));
    }
    Line::from(spans)
}

fn title(verb: Verb) -> &'static str {
    match verb {
        Verb::Approve => "Approve",
        Verb::Deny => "Deny",
        Verb::Ban => "Deny and ban",
    }
}

pub fn prompt(frame: &mut Frame, area: Rect, p: &Prompt, theme: &Theme) {
    let mut lines = vec![Line::styled(cut(&p.targets.label, 60), theme.title())];
    if p.targets.ids.len() > 1 {
        lines.extend(p.targets.lines.iter().map(|l| Line::raw(cut(&format!("  {l}"), 60))));
    }
    lines.push(Line::default());
    // The end of a long reason stays visible while typing.
    let text = clean(&p.text);
    let tail = tail(&text, 56).to_owned();
    lines.push(Line::from(vec![Span::styled("> ", theme.key()), Span::raw(tail.clone())]));
    lines.push(Line::default());
    for (i, t) in TEMPLATES.iter().enumerate() {
        lines.push(Line::from(vec![
            Span::styled(format!("{} ", i + 1), theme.key()),
            Span::raw(*t),
        ]));
    }
    lines.push(Line::styled("(digits pick a template while the reason is empty)", theme.dim()));
    let mut hint: Vec<Span> = Vec::new();
    for (keys, text) in keys::help(Context::Reason).skip(1) {
        hint.push(Span::styled(keys, theme.key()));
        hint.push(Span::raw(format!(": {text}   ")));
    }
    lines.push(Line::from(hint));
    let cursor_row = lines.iter().position(|l| l.spans.first().is_some_and(|s| s.content == "> "));
    let cursor_row = cursor_row.unwrap_or(0) as u16;
    let title = format!(" {}: reason ", title(p.verb));
    let inner = popup(frame, area, title, lines, theme);
    let x = inner.x + 2 + width(&tail) as u16;
    if cursor_row < inner.height && x < inner.right() {
        frame.set_cursor_position(Position { x, y: inner.y + cursor_row });
    }
}

pub fn confirm(frame: &mut Frame, area: Rect, p: &Pending, theme: &Theme) {
    let mut lines = vec![Line::styled(
        cut(&format!("{} {}?", title(p.verb), p.targets.label), 60),
        theme.title(),
    )];
    if p.targets.ids.len() > 1 {
        lines.extend(p.targets.lines.iter().map(|l| Line::raw(cut(&format!("  {l}"), 60))));
    }
    match &p.reason {
        Some(r) => lines.push(Line::raw(cut(&format!("Reason: {}", clean(r)), 60))),
        None if p.verb != Verb::Approve => lines.push(Line::styled("No reason.", theme.dim())),
        None => {}
    }
    match p.verb {
        Verb::Ban => lines.push(Line::styled("Banned users cannot knock again.", theme.error())),
        Verb::Deny => lines.push(Line::raw("The knock is rejected (a kick).")),
        Verb::Approve => lines.push(Line::raw("knockd invites the knockers.")),
    }
    lines.push(Line::default());
    lines.push(hints(Context::Confirm, theme));
    popup(frame, area, format!(" {}? ", title(p.verb)), lines, theme);
}
