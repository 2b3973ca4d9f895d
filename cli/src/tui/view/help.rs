//! The help overlay, generated from the key table in two columns.

use ratatui::{
    Frame,
    layout::Rect,
    text::{Line, Span},
    widgets::{Block, Borders, Clear, Paragraph},
};

use super::theme::Theme;
use crate::tui::{
    keys::{self, Context},
    layout::centered,
    sanitize::cut,
};

/// Sections in the order they are placed.
const SECTIONS: [Context; 7] = [
    Context::Queue,
    Context::Decide,
    Context::General,
    Context::FilterLine,
    Context::Reason,
    Context::Input,
    Context::Confirm,
];

pub fn render(frame: &mut Frame, area: Rect, theme: &Theme) {
    let popup = centered(area, 80, 23);
    let close: Vec<String> = keys::help(Context::Help).map(|(k, _)| k).collect();
    let title = format!(" Keys ({}: close) ", close.join(" "));
    let block = Block::new().borders(Borders::ALL).title(title).style(theme.popup());
    let inner = block.inner(popup);
    frame.render_widget(Clear, popup);
    frame.render_widget(block, popup);
    // Each section goes to the shorter column.
    let mut columns: [Vec<Line>; 2] = [Vec::new(), Vec::new()];
    let col_width = usize::from(inner.width / 2).saturating_sub(1);
    let key_width = keys::BINDINGS
        .iter()
        .map(|b| b.keys.iter().map(|k| k.label().chars().count() + 1).sum::<usize>())
        .max()
        .unwrap_or(0);
    for context in SECTIONS {
        let two = inner.width >= 60;
        let column = if two && columns[1].len() < columns[0].len() { 1 } else { 0 };
        let lines = &mut columns[column];
        lines.push(Line::styled(context.title(), theme.title().underlined()));
        for (keys, text) in keys::help(context) {
            lines.push(Line::from(vec![
                Span::styled(format!("{keys:<key_width$}"), theme.key()),
                Span::raw(cut(text, col_width.saturating_sub(key_width))),
            ]));
        }
    }
    let [left, right] = columns;
    let half = inner.width / 2;
    let left_area = Rect { width: half, ..inner };
    let right_area =
        Rect { x: inner.x + half + 1, width: inner.width.saturating_sub(half + 1), ..inner };
    frame.render_widget(Paragraph::new(left), left_area);
    frame.render_widget(Paragraph::new(right), right_area);
}
