//! In-memory token buckets for knock requests: one per origin server and one per room.
//!
//! A request takes one token from its origin's bucket and one from its room's, or from neither:
//! a refusal by one bucket costs the other nothing, so an origin that is over its own limit does
//! not drain the room's bucket for everyone else. Buckets refill continuously at `rate` tokens a
//! second up to `burst`. A full bucket is the same as no bucket, so those are dropped when the
//! table reaches its size bound; if that is not enough, the longest-untouched ones go (which only
//! ever gives their keys a fresh full bucket). Memory stays bounded whatever the number of keys.

use std::{collections::HashMap, sync::Mutex, time::Instant};

/// One bucket's settings. `rate` 0 turns the bucket off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// The most tokens a bucket holds (the burst allowed after a quiet time).
    pub burst: u32,
}

impl Rate {
    pub const OFF: Rate = Rate { per_second: 0.0, burst: 0 };

    pub fn is_off(&self) -> bool {
        self.per_second <= 0.0 || self.burst == 0
    }
}

/// The most keys one table holds.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Debug)]
struct Table {
    rate: Rate,
    buckets: HashMap<String, Bucket>,
    max_keys: usize,
}

impl Table {
    fn new(rate: Rate, max_keys: usize) -> Self {
        Self { rate, buckets: HashMap::new(), max_keys: max_keys.max(4) }
    }

    /// The tokens `key` has now (without storing anything).
    fn level(&self, key: &str, now: Instant) -> f64 {
        let burst = f64::from(self.rate.burst);
        match self.buckets.get(key) {
            Some(b) => {
                let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
                (b.tokens + elapsed * self.rate.per_second).min(burst)
            }
            None => burst,
        }
    }

    /// Milliseconds until `key` has a whole token, given its level.
    fn wait_ms(&self, level: f64) -> u64 {
        let missing = (1.0 - level).max(0.0);
        ((missing / self.rate.per_second) * 1000.0).ceil().max(1.0) as u64
    }

    fn take(&mut self, key: &str, level: f64, now: Instant) {
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            self.prune(now);
        }
        self.buckets.insert(key.to_owned(), Bucket { tokens: level - 1.0, updated: now });
    }

    /// Drops full buckets; if the table is still over three quarters full, the longest-untouched
    /// buckets too, down to three quarters (so pruning happens at most once per quarter of the
    /// bound's worth of new keys).
    fn prune(&mut self, now: Instant) {
        let burst = f64::from(self.rate.burst);
        let per_second = self.rate.per_second;
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            b.tokens + elapsed * per_second < burst
        });
        let keep = self.max_keys * 3 / 4;
        if self.buckets.len() > keep {
            let mut ages: Vec<(Instant, String)> =
                self.buckets.iter().map(|(k, b)| (b.updated, k.clone())).collect();
            ages.sort_unstable();
            let drop = self.buckets.len() - keep;
            for (_, key) in ages.into_iter().take(drop) {
                self.buckets.remove(&key);
            }
        }
    }
}

/// Which limit refused a request, and when to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    /// The per-origin bucket (else the per-room one).
    pub origin: bool,
    pub retry_after_ms: u64,
}

/// The knock limits: per origin server and per room.
#[derive(Debug)]
pub struct KnockLimits {
    tables: Mutex<(Table, Table)>,
}

impl KnockLimits {
    pub fn new(per_origin: Rate, per_room: Rate) -> Self {
        Self::with_max_keys(per_origin, per_room, DEFAULT_MAX_KEYS)
    }

    pub fn with_max_keys(per_origin: Rate, per_room: Rate, max_keys: usize) -> Self {
        Self {
            tables: Mutex::new((Table::new(per_origin, max_keys), Table::new(per_room, max_keys))),
        }
    }

    /// Takes a token for one knock request of `origin` in `room_id`, or says how long to wait.
    pub fn admit(&self, origin: &str, room_id: &str) -> Result<(), Limited> {
        self.admit_at(origin, room_id, Instant::now())
    }

    fn admit_at(&self, origin: &str, room_id: &str, now: Instant) -> Result<(), Limited> {
        let mut guard = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let (by_origin, by_room) = &mut *guard;
        let origin_level = (!by_origin.rate.is_off()).then(|| by_origin.level(origin, now));
        if let Some(level) = origin_level
            && level < 1.0
        {
            return Err(Limited { origin: true, retry_after_ms: by_origin.wait_ms(level) });
        }
        let room_level = (!by_room.rate.is_off()).then(|| by_room.level(room_id, now));
        if let Some(level) = room_level
            && level < 1.0
        {
            return Err(Limited { origin: false, retry_after_ms: by_room.wait_ms(level) });
        }
        if let Some(level) = origin_level {
            by_origin.take(origin, level, now);
        }
        if let Some(level) = room_level {
            by_room.take(room_id, level, now);
        }
        Ok(())
    }

    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let guard = self.tables.lock().unwrap();
        (guard.0.buckets.len(), guard.1.buckets.len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SLOW: Rate = Rate { per_second: 2.0, burst: 3 };

    #[test]
    fn burst_then_refill() {
        let limits = KnockLimits::new(SLOW, Rate::OFF);
        let t0 = Instant::now();
        for _ in 0..3 {
            limits.admit_at("a.example", "!r", t0).unwrap();
        }
        let refused = limits.admit_at("a.example", "!r", t0).unwrap_err();
        assert!(refused.origin);
        assert_eq!(refused.retry_after_ms, 500);
        // Another origin has its own bucket.
        limits.admit_at("b.example", "!r", t0).unwrap();
        // Half a second later: one token back, exactly one request.
        let t1 = t0 + Duration::from_millis(500);
        limits.admit_at("a.example", "!r", t1).unwrap();
        assert!(limits.admit_at("a.example", "!r", t1).is_err());
    }

    #[test]
    fn the_room_bucket_is_shared_and_a_refusal_costs_nothing() {
        let limits = KnockLimits::new(Rate { per_second: 1.0, burst: 1 }, SLOW);
        let t0 = Instant::now();
        limits.admit_at("a", "!r", t0).unwrap();
        // a is over its own limit: refused by the origin bucket, the room keeps its tokens.
        for _ in 0..10 {
            assert!(limits.admit_at("a", "!r", t0).unwrap_err().origin);
        }
        limits.admit_at("b", "!r", t0).unwrap();
        limits.admit_at("c", "!r", t0).unwrap();
        let refused = limits.admit_at("d", "!r", t0).unwrap_err();
        assert!(!refused.origin);
        // d was refused by the room: its own bucket was not charged.
        limits.admit_at("d", "!other", t0).unwrap();
        assert!(limits.admit_at("d", "!other", t0).is_err());
    }

    #[test]
    fn off_means_off() {
        let limits = KnockLimits::new(Rate::OFF, Rate { per_second: 0.0, burst: 5 });
        let t0 = Instant::now();
        for _ in 0..1000 {
            limits.admit_at("a", "!r", t0).unwrap();
        }
        assert_eq!(limits.sizes(), (0, 0));
    }

    #[test]
    fn many_keys_stay_bounded() {
        let limits = KnockLimits::with_max_keys(SLOW, SLOW, 100);
        let t0 = Instant::now();
        for i in 0..10_000 {
            limits.admit_at(&format!("s{i}.example"), &format!("!r{i}"), t0).unwrap();
            let (o, r) = limits.sizes();
            assert!(o <= 100 && r <= 100, "{o} {r}");
        }
        // A recently limited origin is kept over older ones while pruning.
        let t1 = t0 + Duration::from_millis(1);
        for i in 0..3 {
            limits.admit_at("busy", &format!("!x{i}"), t1).unwrap();
        }
        // Enough new keys to prune at least once, too few to reach the newer buckets.
        for i in 0..50 {
            limits.admit_at(&format!("n{i}"), &format!("!y{i}"), t1).unwrap();
        }
        assert!(limits.admit_at("busy", "!z", t1).is_err());
    }
}
