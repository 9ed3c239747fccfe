//! Duplicate detection by event id within a horizon of event time.
//!
//! Above `max_hot_keys` the oldest half of the ids (by event time) moves to
//! a `ColdStore` (on disk in production, see `spill`); lookups check both.
//! The cold store is behind a trait so this stays pure and testable.
//!
//! Each id is kept as a 128-bit hash with its event time in whole seconds,
//! 24 bytes a slot whatever the id's length: about 42 bytes a key at 10 M
//! keys with the table's spare capacity, and never above 64 (the table is at
//! least 7/16 full). Second precision only delays forgetting by under a second. Ids older than the horizon behind the
//! watermark are forgotten; such an event is late anyway, since the horizon is
//! longer than the allowed lateness.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The dedup key of an event: its tenant and id, hashed.
pub fn dedup_key(tenant: &str, event_id: &str) -> u128 {
    let mut buf = Vec::with_capacity(tenant.len() + event_id.len() + 1);
    buf.extend_from_slice(tenant.as_bytes());
    buf.push(0);
    buf.extend_from_slice(event_id.as_bytes());
    xxhash_rust::xxh3::xxh3_128(&buf)
}

/// The keys are already uniform hashes, so hashing them again is wasted work.
#[derive(Default)]
pub struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A key as stored: two words, so a slot is aligned to 8 bytes, not 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    hi: u64,
    lo: u64,
}

impl From<u128> for Slot {
    fn from(k: u128) -> Self {
        Self {
            hi: (k >> 64) as u64,
            lo: k as u64,
        }
    }
}

impl std::hash::Hash for Slot {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hi ^ self.lo);
    }
}

/// Event time in whole seconds since the epoch, clamped to what `u32` holds.
fn secs(ms: i64) -> u32 {
    ms.div_euclid(1000).clamp(0, u32::MAX as i64) as u32
}

/// Whether `evict_before(cutoff)` forgets an id seen at `event_time`. The
/// changelog drops a segment of ids by this same rule: a segment dropped
/// while the store still held one of its ids (the store keeps whole seconds)
/// would make a restore forget an id the running processor still knew.
pub fn evicted_by(cutoff: i64, event_time: i64) -> bool {
    secs(event_time) < secs(cutoff)
}

/// Where ids go when memory is full: keys with their event time in seconds.
pub trait ColdStore: Send {
    fn contains(&self, key: u128) -> bool;
    /// The stored event time of `key`, if any.
    fn get(&self, key: u128) -> Option<u32>;
    fn put_all(&mut self, entries: &[(u128, u32)]);
    /// Forgets keys with event time before `cutoff`; returns how many.
    fn evict_before(&mut self, cutoff: u32) -> usize;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The first error the store hit, if any: its answers since are unsure.
    fn failure(&self) -> Option<String> {
        None
    }
}

#[derive(Default)]
pub struct DedupStore {
    seen: HashMap<Slot, u32, BuildHasherDefault<PrehashedHasher>>,
    cold: Option<Box<dyn ColdStore>>,
    max_hot_keys: usize,
}

impl std::fmt::Debug for DedupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupStore")
            .field("hot", &self.seen.len())
            .field("cold", &self.cold.as_ref().map(|c| c.len()))
            .finish()
    }
}

impl DedupStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that keeps at most `max_hot_keys` in memory and spills the
    /// rest to `cold`.
    pub fn spilling(cold: Box<dyn ColdStore>, max_hot_keys: usize) -> Self {
        Self {
            cold: Some(cold),
            max_hot_keys: max_hot_keys.max(2),
            ..Self::default()
        }
    }

    fn cold_time(&self, key: u128) -> Option<u32> {
        self.cold.as_ref().and_then(|c| c.get(key))
    }

    /// Records `key`; true when it was not seen before.
    pub fn insert(&mut self, key: u128, event_time: i64) -> bool {
        use std::collections::hash_map::Entry;
        match self.seen.entry(key.into()) {
            Entry::Occupied(_) => false,
            // Memory first: most duplicates are recent, and the cold store reads disk.
            Entry::Vacant(_) if self.cold.as_ref().is_some_and(|c| c.contains(key)) => false,
            Entry::Vacant(v) => {
                v.insert(secs(event_time));
                self.spill_if_full();
                true
            }
        }
    }

    /// Loads a key from the changelog. A key forgotten and seen again lives in
    /// two segments; the live store holds its latest insertion, which is the
    /// later event time, so restore keeps the larger one.
    pub fn restore(&mut self, key: u128, event_time: i64) {
        let event_time = secs(event_time).max(self.cold_time(key).unwrap_or(0));
        let t = self.seen.entry(key.into()).or_insert(event_time);
        *t = (*t).max(event_time);
        self.spill_if_full();
    }

    /// Moves the older half of the hot keys to the cold store, in one write.
    fn spill_if_full(&mut self) {
        let Some(cold) = self.cold.as_mut() else {
            return;
        };
        if self.seen.len() <= self.max_hot_keys {
            return;
        }
        let mut times: Vec<u32> = self.seen.values().copied().collect();
        let mid = times.len() / 2;
        let (_, &mut median, _) = times.select_nth_unstable(mid);
        let moving: Vec<(u128, u32)> = self
            .seen
            .iter()
            .filter(|(_, &t)| t < median)
            .map(|(k, &t)| (((k.hi as u128) << 64) | k.lo as u128, t))
            .collect();
        // All equal times: move half of them anyway, or nothing would move.
        let moving = if moving.is_empty() {
            self.seen
                .iter()
                .take(mid)
                .map(|(k, &t)| (((k.hi as u128) << 64) | k.lo as u128, t))
                .collect()
        } else {
            moving
        };
        cold.put_all(&moving);
        for (k, _) in &moving {
            self.seen.remove(&Slot::from(*k));
        }
        self.seen.shrink_to_fit();
    }

    pub fn contains(&self, key: u128) -> bool {
        self.seen.contains_key(&key.into()) || self.cold.as_ref().is_some_and(|c| c.contains(key))
    }

    /// Forgets keys whose event time is before `cutoff`, in whole seconds
    /// (see `evicted_by`); returns how many.
    pub fn evict_before(&mut self, cutoff: i64) -> usize {
        let before = self.seen.len();
        let cutoff = secs(cutoff);
        self.seen.retain(|_, t| *t >= cutoff);
        let cold = self.cold.as_mut().map_or(0, |c| c.evict_before(cutoff));
        before - self.seen.len() + cold
    }

    pub fn len(&self) -> usize {
        self.seen.len() + self.cold_len()
    }

    /// The cold store's error, if it hit one: the batch must not commit.
    pub fn failure(&self) -> Option<String> {
        self.cold.as_ref().and_then(|c| c.failure())
    }

    /// Keys held in the cold store.
    pub fn cold_len(&self) -> usize {
        self.cold.as_ref().map_or(0, |c| c.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held by the in-memory table: its buckets (a power of two,
    /// of which 7/8 are usable) times a slot plus its control byte.
    pub fn heap_bytes(&self) -> usize {
        let cap = self.seen.capacity();
        if cap == 0 {
            return 0;
        }
        let buckets = (cap * 8).div_ceil(7).next_power_of_two();
        buckets * (std::mem::size_of::<(Slot, u32)>() + 1)
    }
}

/// A cold store in memory, for tests of the spilling logic.
#[derive(Debug, Default)]
pub struct MemoryColdStore {
    keys: std::collections::BTreeMap<u128, u32>,
}

impl ColdStore for MemoryColdStore {
    fn contains(&self, key: u128) -> bool {
        self.keys.contains_key(&key)
    }
    fn get(&self, key: u128) -> Option<u32> {
        self.keys.get(&key).copied()
    }
    fn put_all(&mut self, entries: &[(u128, u32)]) {
        for &(k, t) in entries {
            let slot = self.keys.entry(k).or_insert(t);
            *slot = (*slot).max(t);
        }
    }
    fn evict_before(&mut self, cutoff: u32) -> usize {
        let before = self.keys.len();
        self.keys.retain(|_, t| *t >= cutoff);
        before - self.keys.len()
    }
    fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The changelog drops a segment by `evicted_by`; it must agree with
        /// what the store forgets, sub-second and negative times included.
        #[test]
        fn evicted_by_is_what_evict_before_forgets(
            times in prop::collection::vec(-5_000i64..5_000, 1..50),
            cutoff in -5_000i64..5_000,
        ) {
            let mut store = DedupStore::new();
            for (k, &t) in times.iter().enumerate() {
                store.insert(k as u128, t);
            }
            store.evict_before(cutoff);
            for (k, &t) in times.iter().enumerate() {
                prop_assert_eq!(store.contains(k as u128), !evicted_by(cutoff, t), "t = {}", t);
            }
        }

        #[test]
        fn new_exactly_once_per_distinct_key(ids in prop::collection::vec(0u32..50, 0..300)) {
            let mut d = DedupStore::new();
            let mut distinct = std::collections::HashSet::new();
            for id in &ids {
                let fresh = d.insert(dedup_key("t", &id.to_string()), 0);
                prop_assert_eq!(fresh, distinct.insert(*id));
            }
            prop_assert_eq!(d.len(), distinct.len());
        }
    }

    proptest! {
        /// Spilling changes where keys live, never the answers: the same
        /// inserts and evictions answer alike with a tiny hot set and with
        /// no spilling at all.
        #[test]
        fn spilling_answers_like_memory(
            ops in prop::collection::vec((0u32..200, 0i64..100_000, any::<bool>()), 0..400),
            hot in 2usize..20,
        ) {
            let mut plain = DedupStore::new();
            let mut spilled = DedupStore::spilling(Box::<MemoryColdStore>::default(), hot);
            for (id, t, evict) in ops {
                if evict {
                    prop_assert_eq!(plain.evict_before(t), spilled.evict_before(t));
                } else {
                    let k = dedup_key("t", &id.to_string());
                    prop_assert_eq!(plain.insert(k, t), spilled.insert(k, t));
                }
                prop_assert_eq!(plain.len(), spilled.len());
                prop_assert!(spilled.seen.len() <= hot);
            }
        }
    }

    #[test]
    fn a_slot_is_24_bytes_and_10m_keys_fit_in_64_bytes_each() {
        assert_eq!(std::mem::size_of::<(Slot, u32)>(), 24);
        let mut d = DedupStore::new();
        d.seen.reserve(10_000_000);
        let per_key = d.heap_bytes() as f64 / 10_000_000.0;
        assert!(per_key <= 64.0, "{per_key} bytes a key");
    }

    #[test]
    fn tenants_do_not_collide_and_eviction_forgets_old_keys() {
        let mut d = DedupStore::new();
        assert!(d.insert(dedup_key("a", "1"), 10_000));
        assert!(d.insert(dedup_key("b", "1"), 20_000));
        assert!(!d.insert(dedup_key("a", "1"), 30_000));
        assert_eq!(d.evict_before(15_000), 1);
        assert!(d.insert(dedup_key("a", "1"), 30_000));
    }
}
