//! The TUI's state and its pure update function: messages (keys, answers from knockd, stream
//! events, ticks) in, state and [`Effect`]s out. Nothing here does I/O or reads the clock, so it
//! is tested with plain key sequences and rendered into a test backend.

mod decide;
mod filter;
mod input;
mod queue;

use std::collections::BTreeSet;

use knockd_shared::{
    BulkItem, KnockDetail, KnockList, KnockQuery, KnockSummary, QueueEvent, RoomList,
};
use ratatui::crossterm::event::KeyEvent;

pub use self::{
    decide::{Pending, Prompt, Targets, Verb},
    filter::{Query, RoomChoice},
};

/// The status line while `r` reloads.
const REFRESHING: &str = "refreshing…";

/// Knocks asked for per page.
pub const PAGE: u32 = 500;

/// Something went wrong talking to knockd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchError {
    /// One line, already escaped.
    pub message: String,
    /// knockd could not be reached at all.
    pub unreachable: bool,
}

/// Everything that can happen to the TUI.
#[derive(Clone, Debug)]
pub enum Msg {
    Key(KeyEvent),
    Resize {
        width: u16,
        height: u16,
    },
    /// The clock moved (ages and the banner's "down for" are relative to it).
    Tick {
        now_ms: i64,
    },
    /// A page of knocks, for request `seq`, to replace the loaded knocks from `start` on.
    Page {
        seq: u64,
        start: usize,
        result: Result<KnockList, FetchError>,
    },
    Rooms(Result<RoomList, FetchError>),
    Detail {
        id: i64,
        result: Result<Box<KnockDetail>, FetchError>,
    },
    Decided {
        verb: Verb,
        result: Result<Vec<BulkItem>, FetchError>,
    },
    /// The event stream is connected.
    StreamUp,
    /// The event stream could not connect or broke; the runner retries by itself.
    StreamDown(FetchError),
    Queue(QueueEvent),
}

/// Side effects for the runner.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Fetch a page; answer with `Msg::Page { seq, start, .. }`.
    Fetch {
        seq: u64,
        start: usize,
        query: KnockQuery,
    },
    FetchRooms,
    FetchDetail(i64),
    Decide {
        verb: Verb,
        ids: Vec<i64>,
        reason: Option<String>,
    },
    Quit,
}

/// Which input has the keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Help,
    /// Typing in the filter line.
    Filter,
    /// Typing a deny or ban reason.
    Reason(Prompt),
    /// Asking before a decision.
    Confirm(Pending),
}

/// The open detail pane's knock.
#[derive(Clone, Debug, PartialEq)]
pub struct Detail {
    pub id: i64,
    pub data: Option<Box<KnockDetail>>,
    pub error: Option<String>,
    pub scroll: u16,
}

/// Whether knockd answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conn {
    /// Not known yet.
    Connecting,
    Up,
    Down {
        message: String,
        since_ms: i64,
    },
}

/// The status line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub text: String,
    pub error: bool,
}

/// The whole TUI state.
#[derive(Debug)]
pub struct App {
    /// "Now", injected (ms since the epoch).
    pub now_ms: i64,
    pub color: bool,
    /// knockd's admin URL, for the banner.
    pub url: String,
    pub width: u16,
    pub height: u16,
    /// Loaded knocks of the current query, ascending ids (oldest first).
    pub knocks: Vec<KnockSummary>,
    /// Cursor of the next page; `None` once everything is loaded.
    pub next: Option<String>,
    /// Indices into `knocks` matching the filter's free text (`None`: all of them).
    pub view: Option<Vec<usize>>,
    /// Selected row (a position in the view).
    pub selected: usize,
    /// First row shown.
    pub offset: usize,
    pub marked: BTreeSet<i64>,
    /// A first page arrived.
    pub loaded: bool,
    /// The page request in flight, by sequence number.
    pub loading: Option<u64>,
    pub seq: u64,
    /// The queue changed while a page was in flight: reload once it lands.
    pub stale: bool,
    /// `G` was pressed: keep loading and stay at the end.
    pub want_end: bool,
    pub query: Query,
    pub rooms: Vec<RoomChoice>,
    pub detail_open: bool,
    /// Show reasons in full in the detail pane.
    pub expanded: bool,
    pub detail: Option<Detail>,
    pub mode: Mode,
    pub filter_input: String,
    pub status: Option<Status>,
    pub conn: Conn,
    /// Knocks approved from this TUI, to report failed invites.
    pub decided_here: BTreeSet<i64>,
}

impl App {
    /// A fresh state, before anything was fetched.
    pub fn new(url: &str, now_ms: i64, color: bool) -> Self {
        Self {
            now_ms,
            color,
            url: url.to_owned(),
            width: 80,
            height: 24,
            knocks: Vec::new(),
            next: None,
            view: None,
            selected: 0,
            offset: 0,
            marked: BTreeSet::new(),
            loaded: false,
            loading: None,
            seq: 0,
            stale: false,
            want_end: false,
            query: Query::default(),
            rooms: Vec::new(),
            detail_open: false,
            expanded: false,
            detail: None,
            mode: Mode::Normal,
            filter_input: String::new(),
            status: None,
            conn: Conn::Connecting,
            decided_here: BTreeSet::new(),
        }
    }

    /// The first effects: the rooms and the first page.
    pub fn start(&mut self) -> Vec<Effect> {
        vec![Effect::FetchRooms, self.request(0)]
    }

    /// Applies one message.
    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Key(key) => self.on_key(key),
            Msg::Resize { width, height } => {
                (self.width, self.height) = (width, height);
                self.settle()
            }
            Msg::Tick { now_ms } => {
                self.now_ms = now_ms;
                Vec::new()
            }
            Msg::Page { seq, start, result } => self.on_page(seq, start, result),
            Msg::Rooms(result) => self.on_rooms(result),
            Msg::Detail { id, result } => self.on_detail(id, result),
            Msg::Decided { verb, result } => self.on_decided(verb, result),
            Msg::StreamUp => {
                self.conn = Conn::Up;
                self.changed()
            }
            Msg::StreamDown(e) => {
                self.failed("live updates stopped", e);
                Vec::new()
            }
            Msg::Queue(event) => self.on_event(event),
        }
    }

    fn info(&mut self, text: impl Into<String>) {
        self.status = Some(Status { text: text.into(), error: false });
    }

    fn error(&mut self, text: impl Into<String>) {
        self.status = Some(Status { text: text.into(), error: true });
    }

    /// Notes that knockd is unreachable (keeping the time it went down).
    fn down(&mut self, message: String) {
        let since_ms = match &self.conn {
            Conn::Down { since_ms, .. } => *since_ms,
            _ => self.now_ms,
        };
        self.conn = Conn::Down { message, since_ms };
    }

    /// Records a failed request: the banner when unreachable, else the status line.
    fn failed(&mut self, what: &str, e: FetchError) {
        if e.unreachable {
            self.down(e.message);
        } else {
            self.error(format!("{what}: {}", e.message));
        }
    }
}
