//! Aligned text tables whose cells are always escaped and cut to fit.

use super::{Style, display_width, escape, paint, truncate};

/// One table cell: escaped text and an optional style.
#[derive(Clone, Debug)]
pub struct Cell {
    text: String,
    style: Option<Style>,
}

impl Cell {
    /// A plain cell; the text is escaped.
    pub fn new(text: &str) -> Self {
        Self { text: escape(text), style: None }
    }

    /// A styled cell; the text is escaped.
    pub fn styled(text: &str, style: Style) -> Self {
        Self { text: escape(text), style: Some(style) }
    }
}

/// Columns with a header and a maximum width; the last column takes what is left of the line.
#[derive(Clone, Debug)]
pub struct Table {
    columns: Vec<(&'static str, usize)>,
    rows: Vec<Vec<Cell>>,
}

/// Space between columns.
const GAP: usize = 2;
/// The last column gets at least this much.
const MIN_LAST: usize = 12;

impl Table {
    /// A table with `(header, max width)` columns.
    pub fn new(columns: &[(&'static str, usize)]) -> Self {
        Self { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// Adds a row (missing cells are empty).
    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn widths(&self, line_width: usize) -> Vec<usize> {
        let n = self.columns.len();
        let mut widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (header, max))| {
                let longest = self
                    .rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| display_width(&c.text))
                    .max()
                    .unwrap_or(0);
                longest.max(header.len()).min(*max)
            })
            .collect();
        if n > 0 {
            let others: usize = widths[..n - 1].iter().sum::<usize>() + (n - 1) * GAP;
            let room = line_width.saturating_sub(others).max(MIN_LAST);
            widths[n - 1] = widths[n - 1].min(room);
        }
        widths
    }

    /// The table as text lines, coloured when `color`.
    pub fn render(&self, color: bool, line_width: usize) -> String {
        let widths = self.widths(line_width);
        let mut out = String::new();
        let header: Vec<Cell> =
            self.columns.iter().map(|(h, _)| Cell::styled(h, Style::Bold)).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let last = i + 1 == widths.len();
                let (text, style) =
                    row.get(i).map(|c| (c.text.as_str(), c.style)).unwrap_or(("", None));
                let text = truncate(text, *width);
                let pad = if last { 0 } else { width.saturating_sub(display_width(&text)) + GAP };
                match style {
                    Some(s) => line.push_str(&paint(color, s, &text)),
                    None => line.push_str(&text),
                }
                line.push_str(&" ".repeat(pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_and_cuts_the_last_column() {
        let mut t = Table::new(&[("ID", 10), ("REASON", 500)]);
        t.row(vec![Cell::new("1"), Cell::new("short")]);
        t.row(vec![Cell::new("22"), Cell::new(&"x".repeat(100))]);
        let text = t.render(false, 40);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ID  REASON");
        assert_eq!(lines[1], "1   short");
        assert_eq!(lines[2].chars().count(), 40);
        assert!(lines[2].ends_with('…'));
    }

    #[test]
    fn wide_characters_align_by_columns() {
        let mut t = Table::new(&[("USER", 20), ("NOTE", 30)]);
        t.row(vec![Cell::new("@日本語:example.org"), Cell::new("a")]);
        t.row(vec![Cell::new("@bob:example.org"), Cell::new("b")]);
        t.row(vec![Cell::new("👋👋"), Cell::new("c")]);
        let text = t.render(false, 80);
        let notes: Vec<usize> =
            text.lines().map(|l| display_width(&l[..l.rfind("  ").unwrap() + 2])).collect();
        assert!(notes.iter().all(|w| *w == notes[0]), "{text}");
    }

    #[test]
    fn escapes_cells() {
        let mut t = Table::new(&[("A", 10), ("B", 10)]);
        t.row(vec![Cell::new("a\nb"), Cell::new("\x1b[2J")]);
        let text = t.render(false, 80);
        assert_eq!(text.lines().nth(1), Some("a\\nb  \\u{1b}[2J"));
    }
}
