//! The queue list: only the rows on screen are built, so it costs the same with 100,000 knocks.

use knockd_shared::KnockSummary;
use ratatui::{
    Frame,
    layout::{Alignment, Constraint, Rect},
    text::{Line, Span},
    widgets::{Cell, Paragraph, Row, Table},
};

use super::theme::Theme;
use crate::{
    output::age_at,
    tui::{app::App, layout::SPLIT_WIDTH, sanitize::fit},
};

/// Column widths for a list `width` wide; the reason takes the rest. Columns shrink, then go,
/// when the list is narrow (0: not shown).
struct Columns {
    id: u16,
    status: u16,
    room: u16,
    user: u16,
    server: u16,
    reason: u16,
}

/// The reason gets at least this much before other columns shrink.
const REASON_MIN: u16 = 16;

type Shrink = fn(&mut Columns);

const SHRINK: [Shrink; 7] = [
    |c| c.server = 0,
    |c| c.room = c.room.min(8),
    |c| c.user = c.user.min(18),
    |c| c.status = c.status.min(14),
    |c| c.user = c.user.min(14),
    |c| c.room = 0,
    |c| c.status = 0,
];

impl Columns {
    fn new(width: u16, id: u16, with_status: bool) -> Self {
        let wide = width >= SPLIT_WIDTH + 20;
        let mut c = Self {
            id,
            status: if with_status { 16 } else { 0 },
            room: if wide { 18 } else { 12 },
            user: if wide { 30 } else { 24 },
            server: if wide { 18 } else { 0 },
            reason: 0,
        };
        for shrink in SHRINK {
            if c.used() + REASON_MIN <= width {
                break;
            }
            shrink(&mut c);
        }
        c.reason = width.saturating_sub(c.used());
        c
    }

    /// Columns before the reason, with a space after each.
    fn used(&self) -> u16 {
        [2, self.id, 4, self.status, self.room, self.user, self.server]
            .iter()
            .filter(|w| **w > 0)
            .map(|w| w + 1)
            .sum()
    }

    /// (header, width) of the columns shown.
    fn shown(&self) -> Vec<(&'static str, u16)> {
        let all = [
            ("", 2),
            ("ID", self.id),
            ("AGE", 4),
            ("STATUS", self.status),
            ("ROOM", self.room),
            ("USER", self.user),
            ("SERVER", self.server),
            ("REASON", self.reason),
        ];
        all.into_iter().filter(|(_, w)| *w > 0).collect()
    }
}

pub fn render(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    if area.height == 0 || area.width == 0 {
        return;
    }
    if app.view_len() == 0 {
        return empty(frame, area, app, theme);
    }
    let rows = usize::from(area.height.saturating_sub(1)).max(1);
    // Keep the selection visible even if the state was not told the size.
    let offset = app.offset.min(app.selected).max((app.selected + 1).saturating_sub(rows));
    let end = (offset + rows).min(app.view_len());
    let shown: Vec<&KnockSummary> = (offset..end).filter_map(|p| app.row(p)).collect();
    let id_width = shown.iter().map(|k| k.id.to_string().len()).max().unwrap_or(2).max(2) as u16;
    let with_status = app.query.status != "pending";
    let cols = Columns::new(area.width, id_width, with_status);
    let (header, widths): (Vec<&str>, Vec<Constraint>) =
        cols.shown().into_iter().map(|(h, w)| (h, Constraint::Length(w))).unzip();
    let header = Row::new(header).style(theme.header());
    let body = shown.iter().enumerate().map(|(i, k)| row(app, theme, &cols, k, offset + i));
    let table = Table::new(body, widths).header(header).column_spacing(1);
    frame.render_widget(table, area);
}

fn row<'a>(app: &App, theme: &Theme, cols: &Columns, k: &KnockSummary, pos: usize) -> Row<'a> {
    let selected = pos == app.selected;
    let marked = app.marked.contains(&k.id);
    let marker = format!("{}{}", if selected { ">" } else { " " }, if marked { "*" } else { " " });
    let room = k.room_name.as_deref().unwrap_or(&k.room_id);
    let mut cells = vec![
        Cell::from(Span::styled(marker, theme.marked())),
        Cell::from(k.id.to_string()),
        Cell::from(Span::styled(age_at(app.now_ms, k.received_at_ms), theme.dim())),
    ];
    if cols.status > 0 {
        let status = fit(&k.status, usize::from(cols.status));
        cells.push(Cell::from(Span::styled(status, theme.status(&k.status))));
    }
    if cols.room > 0 {
        cells.push(Cell::from(fit(room, usize::from(cols.room))));
    }
    cells.push(Cell::from(fit(&k.user_id, usize::from(cols.user))));
    if cols.server > 0 {
        cells.push(Cell::from(fit(&k.origin_server, usize::from(cols.server))));
    }
    let reason = match (&k.reason, k.content_redacted) {
        (_, true) => Span::styled("(redacted)", theme.dim()),
        (Some(r), false) => Span::raw(fit(r, usize::from(cols.reason))),
        (None, false) => Span::raw(""),
    };
    if cols.reason > 0 {
        cells.push(Cell::from(reason));
    }
    let style = match (selected, marked) {
        (true, _) => theme.selected(),
        (false, true) => theme.marked(),
        _ => ratatui::style::Style::new(),
    };
    Row::new(cells).style(style)
}

fn empty(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let what =
        if app.query.status == "all" { String::new() } else { format!("{} ", app.query.status) };
    let lines: Vec<Line> = if !app.loaded {
        vec![Line::from("Loading knocks…")]
    } else if app.view.is_some() || app.query != Default::default() {
        vec![
            Line::from(format!("No {what}knocks match the filter.")),
            Line::styled("Esc clears it; / edits it.", theme.dim()),
        ]
    } else {
        vec![
            Line::from(format!("No {what}knocks.")),
            Line::styled("New knocks appear here as they arrive.", theme.dim()),
        ]
    };
    let top = area.height.saturating_sub(lines.len() as u16) / 2;
    let area = Rect { y: area.y + top, height: area.height - top, ..area };
    frame.render_widget(Paragraph::new(lines).alignment(Alignment::Center), area);
}
