//! Where things go on the screen. Shared by the renderer and by the state (which needs to know
//! how many rows the list shows to scroll and page).

use ratatui::layout::Rect;

use super::app::{App, Conn, Mode};

/// Below this width the detail pane replaces the list instead of sitting beside it.
pub const SPLIT_WIDTH: u16 = 100;

/// The screen's parts; absent ones do not fit or are not shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Areas {
    pub title: Rect,
    pub banner: Option<Rect>,
    /// Everything between the bars.
    pub main: Rect,
    pub list: Option<Rect>,
    pub detail: Option<Rect>,
    pub input: Option<Rect>,
    pub status: Option<Rect>,
}

/// Splits `area` for the app's state. Never panics, whatever the size.
pub fn areas(area: Rect, app: &App) -> Areas {
    let mut rest = area;
    let top = |rest: &mut Rect| -> Option<Rect> {
        (rest.height > 0).then(|| {
            let r = Rect { height: 1, ..*rest };
            rest.y += 1;
            rest.height -= 1;
            r
        })
    };
    let title = top(&mut rest).unwrap_or_default();
    let bottom = |rest: &mut Rect| -> Option<Rect> {
        (rest.height > 0).then(|| {
            rest.height -= 1;
            Rect { y: rest.y + rest.height, height: 1, ..*rest }
        })
    };
    let status = bottom(&mut rest);
    let banner = if matches!(app.conn, Conn::Down { .. }) { top(&mut rest) } else { None };
    let input = if app.mode == Mode::Filter { bottom(&mut rest) } else { None };
    let main = rest;
    let (list, detail) = if !app.detail_open {
        (Some(main), None)
    } else if main.width < SPLIT_WIDTH {
        (None, Some(main))
    } else {
        let left = main.width * 11 / 20;
        let list = Rect { width: left, ..main };
        let detail = Rect { x: main.x + left, width: main.width - left, ..main };
        (Some(list), Some(detail))
    };
    Areas { title, banner, main, list, detail, input, status }
}

/// A centred rectangle of at most `width` x `height` inside `area`.
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let (w, h) = (width.min(area.width), height.min(area.height));
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}
