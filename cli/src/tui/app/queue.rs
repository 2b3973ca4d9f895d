//! The queue: rows, selection, scrolling, lazy paging, and reacting to queue events.

use knockd_shared::{KnockDetail, KnockList, KnockSummary, QueueEvent, RoomList};
use ratatui::layout::Rect;

use super::{App, Conn, Detail, Effect, FetchError, RoomChoice};
use crate::tui::layout;

/// Rows kept loaded beyond the selection, besides two screens.
const AHEAD: usize = 50;

impl App {
    /// Rows in the (filtered) view.
    pub fn view_len(&self) -> usize {
        self.view.as_ref().map_or(self.knocks.len(), Vec::len)
    }

    /// The index into `knocks` of view row `pos`.
    pub fn index_of(&self, pos: usize) -> Option<usize> {
        match &self.view {
            Some(v) => v.get(pos).copied(),
            None => (pos < self.knocks.len()).then_some(pos),
        }
    }

    /// View row `pos`.
    pub fn row(&self, pos: usize) -> Option<&KnockSummary> {
        self.index_of(pos).map(|i| &self.knocks[i])
    }

    /// The selected knock.
    pub fn selected_knock(&self) -> Option<&KnockSummary> {
        self.row(self.selected)
    }

    /// A loaded knock by id.
    pub fn knock_by_id(&self, id: i64) -> Option<&KnockSummary> {
        self.knocks.binary_search_by_key(&id, |k| k.id).ok().map(|i| &self.knocks[i])
    }

    /// How many rows the list shows (at least 1).
    pub fn list_rows(&self) -> usize {
        let areas = layout::areas(Rect::new(0, 0, self.width, self.height), self);
        let list = areas.list.unwrap_or(areas.main);
        usize::from(list.height.saturating_sub(1)).max(1)
    }

    pub(super) fn move_by(&mut self, delta: isize) -> Vec<Effect> {
        let last = self.view_len().saturating_sub(1) as isize;
        let to = (self.selected as isize).saturating_add(delta).clamp(0, last.max(0));
        self.move_to(to as usize)
    }

    pub(super) fn move_to(&mut self, pos: usize) -> Vec<Effect> {
        self.want_end = false;
        self.selected = pos.min(self.view_len().saturating_sub(1));
        self.settle()
    }

    pub(super) fn bottom(&mut self) -> Vec<Effect> {
        let effects = self.move_to(usize::MAX);
        if self.next.is_none() {
            return effects;
        }
        self.want_end = true;
        self.info("loading all pages for G…");
        effects.into_iter().chain(self.more()).collect()
    }

    pub(super) fn toggle_mark(&mut self) -> Vec<Effect> {
        let Some(id) = self.selected_knock().map(|k| k.id) else { return Vec::new() };
        if !self.marked.remove(&id) {
            self.marked.insert(id);
        }
        self.move_by(1)
    }

    pub(super) fn toggle_detail(&mut self) -> Vec<Effect> {
        self.detail_open = !self.detail_open;
        if !self.detail_open {
            self.detail = None;
        }
        self.settle()
    }

    /// After a change of selection, size or rows: scroll, follow with the detail pane, and load
    /// more when the selection nears the end of what is loaded.
    pub(super) fn settle(&mut self) -> Vec<Effect> {
        let len = self.view_len();
        self.selected = self.selected.min(len.saturating_sub(1));
        let rows = self.list_rows();
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + rows {
            self.offset = self.selected + 1 - rows;
        }
        self.offset = self.offset.min(len.saturating_sub(1));
        let mut effects = self.sync_detail();
        effects.extend(self.more());
        effects
    }

    fn sync_detail(&mut self) -> Vec<Effect> {
        if !self.detail_open {
            return Vec::new();
        }
        let id = self.selected_knock().map(|k| k.id);
        match id {
            Some(id) if self.detail.as_ref().is_none_or(|d| d.id != id) => {
                self.detail = Some(Detail { id, data: None, error: None, scroll: 0 });
                vec![Effect::FetchDetail(id)]
            }
            Some(_) => Vec::new(),
            None => {
                self.detail = None;
                Vec::new()
            }
        }
    }

    fn more(&mut self) -> Vec<Effect> {
        if self.loading.is_some() || self.next.is_none() {
            return Vec::new();
        }
        let near_end = self.view_len() < self.selected + 2 * self.list_rows() + AHEAD;
        if self.want_end || near_end { vec![self.request(self.knocks.len())] } else { Vec::new() }
    }

    /// Asks for a page replacing the loaded knocks from index `start` on.
    pub(super) fn request(&mut self, start: usize) -> Effect {
        let start = start.min(self.knocks.len());
        self.seq += 1;
        self.loading = Some(self.seq);
        let from = start.checked_sub(1).map(|i| self.knocks[i].id.to_string());
        Effect::Fetch { seq: self.seq, start, query: self.query.knock_query(from) }
    }

    /// The queue changed: refetch the page shown (after the one in flight, if any).
    pub(super) fn changed(&mut self) -> Vec<Effect> {
        if self.loading.is_some() {
            self.stale = true;
            return Vec::new();
        }
        let top = self.index_of(self.offset).unwrap_or(self.knocks.len());
        vec![self.request(top)]
    }

    pub(super) fn on_page(
        &mut self,
        seq: u64,
        start: usize,
        result: Result<KnockList, FetchError>,
    ) -> Vec<Effect> {
        if self.loading != Some(seq) {
            return Vec::new(); // superseded
        }
        self.loading = None;
        let page = match result {
            Ok(page) => page,
            Err(e) => {
                (self.want_end, self.stale) = (false, false);
                self.failed("cannot load knocks", e);
                return Vec::new();
            }
        };
        if matches!(self.conn, Conn::Down { .. }) {
            self.conn = Conn::Up;
        }
        let selected = self.selected_knock().map(|k| k.id);
        let start = start.min(self.knocks.len());
        self.knocks.truncate(start);
        self.knocks.extend(page.knocks);
        self.next = page.next;
        self.loaded = true;
        self.refilter_from(start);
        self.reselect(selected);
        if self.status.as_ref().is_some_and(|s| s.text == super::REFRESHING) {
            self.status = None;
        }
        if self.next.is_none() && self.want_end {
            self.want_end = false;
            self.status = None;
        }
        let mut effects = Vec::new();
        if std::mem::take(&mut self.stale) {
            effects.extend(self.changed());
        }
        effects.extend(self.settle());
        effects
    }

    /// Selects the knock `id`, or the one after it when it is gone (or the last with `G`).
    pub(super) fn reselect(&mut self, id: Option<i64>) {
        let len = self.view_len();
        if self.want_end {
            self.selected = len.saturating_sub(1);
        } else if let Some(id) = id {
            self.selected = match &self.view {
                Some(v) => v.partition_point(|&i| self.knocks[i].id < id),
                None => self.knocks.partition_point(|k| k.id < id),
            };
        }
        self.selected = self.selected.min(len.saturating_sub(1));
    }

    /// Recomputes the view for knocks from index `start` on.
    pub(super) fn refilter_from(&mut self, start: usize) {
        let Some(needle) = self.query.needle() else {
            self.view = None;
            return;
        };
        let mut view = self.view.take().unwrap_or_default();
        view.retain(|&i| i < start);
        view.extend(
            (start..self.knocks.len())
                .filter(|&i| super::filter::matches(&self.knocks[i], &needle)),
        );
        self.view = Some(view);
    }

    pub(super) fn on_rooms(&mut self, result: Result<RoomList, FetchError>) -> Vec<Effect> {
        match result {
            Ok(list) => {
                self.rooms = list
                    .rooms
                    .into_iter()
                    .map(|r| RoomChoice { room_id: r.room_id, name: r.name })
                    .collect();
            }
            Err(e) => self.failed("cannot load rooms", e),
        }
        Vec::new()
    }

    pub(super) fn on_detail(
        &mut self,
        id: i64,
        result: Result<Box<KnockDetail>, FetchError>,
    ) -> Vec<Effect> {
        let Some(detail) = self.detail.as_mut().filter(|d| d.id == id) else { return Vec::new() };
        match result {
            Ok(data) => (detail.data, detail.error) = (Some(data), None),
            Err(e) if e.unreachable => self.failed("", e),
            Err(e) => detail.error = Some(e.message),
        }
        Vec::new()
    }

    pub(super) fn on_event(&mut self, event: QueueEvent) -> Vec<Effect> {
        let mut effects = Vec::new();
        if let (Some(id), Some(status)) = (event.knock_id, event.status.as_deref()) {
            if let Ok(i) = self.knocks.binary_search_by_key(&id, |k| k.id) {
                if self.query.status_matches(status) {
                    self.knocks[i].status = status.to_owned();
                } else {
                    self.remove_at(i);
                    self.marked.remove(&id);
                }
            }
            if status == "approve_failed" && self.decided_here.contains(&id) {
                self.error(format!(
                    "knock {id}: the invite could not be delivered (approve failed); see details"
                ));
            }
        }
        let open = self.detail.as_ref().map(|d| d.id);
        if let Some(open) = open
            && (event.knock_id == Some(open) || event.kind == "resync")
        {
            effects.push(Effect::FetchDetail(open));
        }
        effects.extend(self.changed());
        effects
    }

    fn remove_at(&mut self, i: usize) {
        let selected = self.selected_knock().map(|k| k.id);
        self.knocks.remove(i);
        if let Some(view) = &mut self.view {
            view.retain(|&j| j != i);
            view.iter_mut().filter(|j| **j > i).for_each(|j| *j -= 1);
        }
        self.reselect(selected);
        self.offset = self.offset.min(self.selected);
    }
}
