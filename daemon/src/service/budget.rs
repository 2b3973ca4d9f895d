//! What one inbound `/send` may make knockd fetch from its origin: `/get_missing_events`,
//! `/state_ids` and `/event` requests together, bounded in count, bytes and time, the events
//! taken in from `/get_missing_events` bounded in number, and at most one state fill per room. Without it, an origin answering every `/get_missing_events` with
//! new events that cite new prev events would keep knockd fetching for as long as it liked.

use std::{
    collections::HashSet,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Requests one transaction may cause.
pub const MAX_REQUESTS: u32 = 100;
/// Events from `/get_missing_events` one transaction may bring in (each is checked and stored,
/// and may itself cite events we lack).
pub const MAX_EVENTS: usize = 200;
/// Bytes of answers one transaction may cause us to read.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;
/// How long one transaction's fetching may take in all.
pub const MAX_TIME: Duration = Duration::from_secs(60);

/// The budget of one inbound transaction.
#[derive(Debug)]
pub struct FetchBudget {
    deadline: Instant,
    spent: Mutex<Spent>,
}

#[derive(Debug, Default)]
struct Spent {
    requests: u32,
    events: usize,
    bytes: usize,
    filled_rooms: HashSet<String>,
}

impl Default for FetchBudget {
    fn default() -> Self {
        Self::new(MAX_TIME)
    }
}

impl FetchBudget {
    pub fn new(time: Duration) -> Self {
        Self { deadline: Instant::now() + time, spent: Mutex::default() }
    }

    fn spent(&self) -> std::sync::MutexGuard<'_, Spent> {
        self.spent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `n` requests from the budget; `Err` (nothing taken) when they do not fit, or time
    /// or bytes are spent. `Ok` says how long they may take.
    pub fn take(&self, n: u32) -> Result<Duration, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let mut spent = self.spent();
        if left.is_zero() {
            return Err("this transaction's time for fetching is spent".to_owned());
        }
        if spent.bytes >= MAX_BYTES {
            return Err("this transaction's bytes for fetching are spent".to_owned());
        }
        if spent.requests.saturating_add(n) > MAX_REQUESTS {
            return Err(format!(
                "{n} more requests would exceed this transaction's {MAX_REQUESTS}"
            ));
        }
        spent.requests += n;
        Ok(left)
    }

    /// How many of `n` fetched events may be taken in (the rest are dropped).
    pub fn take_events(&self, n: usize) -> usize {
        let mut spent = self.spent();
        let allowed = n.min(MAX_EVENTS.saturating_sub(spent.events));
        spent.events += allowed;
        allowed
    }

    /// Counts the bytes of an answer.
    pub fn read(&self, bytes: usize) {
        let mut spent = self.spent();
        spent.bytes = spent.bytes.saturating_add(bytes);
    }

    /// True the first time a room's state is filled in this transaction, false after.
    pub fn first_fill(&self, room_id: &str) -> bool {
        self.spent().filled_rooms.insert(room_id.to_owned())
    }

    /// Requests still to be had.
    pub fn requests_left(&self) -> u32 {
        MAX_REQUESTS.saturating_sub(self.spent().requests)
    }

    /// Requests taken so far.
    pub fn requests(&self) -> u32 {
        self.spent().requests
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_time_and_fills_are_bounded() {
        let budget = FetchBudget::default();
        assert!(budget.take(MAX_REQUESTS - 1).is_ok());
        assert!(budget.take(2).is_err(), "over the count: nothing taken");
        assert!(budget.take(1).is_ok());
        assert!(budget.take(1).is_err());
        assert_eq!(budget.requests(), MAX_REQUESTS);
        assert!(
            budget.first_fill("!a:x") && !budget.first_fill("!a:x") && budget.first_fill("!b:x")
        );
        let late = FetchBudget::new(Duration::ZERO);
        assert!(late.take(1).is_err(), "no time left");
        let events = FetchBudget::default();
        assert_eq!(events.take_events(MAX_EVENTS - 5), MAX_EVENTS - 5);
        assert_eq!(events.take_events(20), 5);
        assert_eq!(events.take_events(1), 0);
        let heavy = FetchBudget::default();
        heavy.read(MAX_BYTES);
        assert!(heavy.take(1).is_err(), "no bytes left");
    }
}
