//! A map with a size bound, for caches keyed by names strangers choose (server names from
//! X-Matrix headers, key IDs, discovered host names): past its capacity the least recently used
//! entry goes, so a flood of new names costs at most `capacity` entries.

use std::{
    borrow::Borrow,
    collections::{BTreeMap, HashMap},
    hash::Hash,
};

/// How many names each per-name cache keeps. Real peers are far fewer; at this size an entry
/// costs a few hundred bytes, so a full cache stays in the low megabytes.
pub const NAME_CACHE_CAPACITY: usize = 10_000;

/// A least-recently-used map of at most `capacity` entries (see [`BoundedMap::insert_with`] for
/// entries that must not go while in use).
#[derive(Debug)]
pub struct BoundedMap<K, V> {
    capacity: usize,
    entries: HashMap<K, (V, u64)>,
    /// Last use → key, oldest first.
    order: BTreeMap<u64, K>,
    clock: u64,
}

impl<K: Hash + Eq + Clone, V> BoundedMap<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The entry, marked as used just now.
    pub fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.tick();
        let (k, (_, used)) = self.entries.get_key_value(key)?;
        let k = k.clone();
        let old = *used;
        self.order.remove(&old);
        self.order.insert(now, k);
        let entry = self.entries.get_mut(key)?;
        entry.1 = now;
        Some(&entry.0)
    }

    /// Inserts (or replaces) an entry and drops the least recently used ones past the capacity.
    pub fn insert(&mut self, key: K, value: V) {
        self.insert_with(key, value, |_| true);
    }

    /// Like [`insert`](Self::insert), but only entries `evictable` says may go are dropped: when
    /// none may, the map stays over its capacity until some may (the next insert trims it).
    pub fn insert_with(&mut self, key: K, value: V, evictable: impl Fn(&V) -> bool) {
        let now = self.tick();
        if let Some((_, old)) = self.entries.insert(key.clone(), (value, now)) {
            self.order.remove(&old);
        }
        self.order.insert(now, key);
        self.trim(evictable);
    }

    /// The entry for `key`, made by `make` (and the map trimmed) when missing; marked as used.
    pub fn get_or_insert_with(
        &mut self,
        key: K,
        make: impl FnOnce() -> V,
        evictable: impl Fn(&V) -> bool,
    ) -> &V {
        if self.entries.contains_key(&key) {
            return self.get(&key).expect("present");
        }
        self.insert_with(key.clone(), make(), evictable);
        &self.entries.get(&key).expect("just inserted (never evicts the newest)").0
    }

    fn trim(&mut self, evictable: impl Fn(&V) -> bool) {
        if self.entries.len() <= self.capacity {
            return;
        }
        let newest = self.clock;
        let mut victims = Vec::new();
        let mut excess = self.entries.len() - self.capacity;
        for (used, key) in &self.order {
            if excess == 0 || *used == newest {
                break;
            }
            if self.entries.get(key).is_some_and(|(v, _)| evictable(v)) {
                victims.push(*used);
                excess -= 1;
            }
        }
        for used in victims {
            if let Some(key) = self.order.remove(&used) {
                self.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn the_least_recently_used_entry_goes_past_the_capacity() {
        let mut m = BoundedMap::new(3);
        for (k, v) in [("a", 1), ("b", 2), ("c", 3)] {
            m.insert(k.to_owned(), v);
        }
        assert_eq!(m.get("a"), Some(&1), "a is now the most recently used");
        m.insert("d".to_owned(), 4);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get("b"), None, "b was the least recently used");
        let kept = (m.get("a").copied(), m.get("c").copied(), m.get("d").copied());
        assert_eq!(kept, (Some(1), Some(3), Some(4)));
        m.insert("c".to_owned(), 30);
        assert_eq!(m.len(), 3, "replacing does not grow the map");
        assert_eq!(m.get("c"), Some(&30));
    }

    #[test]
    fn a_flood_of_names_keeps_the_map_at_its_capacity() {
        let mut m = BoundedMap::new(100);
        m.insert("kept".to_owned(), 0);
        for i in 0..10_000 {
            m.insert(format!("stranger-{i}"), i);
            if i % 50 == 0 {
                assert!(m.get("kept").is_some(), "an entry in use stays");
            }
        }
        assert_eq!(m.len(), 100);
        assert!(m.get("stranger-9999").is_some());
        assert!(m.get("stranger-0").is_none());
        assert_eq!(m.order.len(), m.entries.len(), "order and entries agree");
    }

    #[test]
    fn entries_in_use_are_not_evicted() {
        let mut m: BoundedMap<String, Arc<()>> = BoundedMap::new(2);
        let unused = |v: &Arc<()>| Arc::strong_count(v) == 1;
        let held_a = m.get_or_insert_with("a".to_owned(), Arc::default, unused).clone();
        let held_b = m.get_or_insert_with("b".to_owned(), Arc::default, unused).clone();
        let c = m.get_or_insert_with("c".to_owned(), Arc::default, unused).clone();
        assert_eq!(m.len(), 3, "over the capacity while everything is held");
        assert!(Arc::ptr_eq(m.get("a").unwrap(), &held_a), "a held entry keeps its identity");
        drop(c);
        drop(held_b);
        m.get_or_insert_with("d".to_owned(), Arc::default, unused);
        assert_eq!(m.len(), 2, "trimmed once entries are free");
        assert!(Arc::ptr_eq(m.get("a").unwrap(), &held_a), "the held one stayed");
        assert!(m.get("d").is_some());
    }

    #[test]
    fn get_or_insert_returns_the_existing_entry() {
        let mut m = BoundedMap::new(2);
        assert_eq!(*m.get_or_insert_with("a".to_owned(), || 1, |_| true), 1);
        assert_eq!(*m.get_or_insert_with("a".to_owned(), || 2, |_| true), 1);
        assert_eq!(m.len(), 1);
    }
}
