//! Duplicate detection by event id within a horizon of event time.
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

#[derive(Debug, Default, Clone)]
pub struct DedupStore {
    seen: HashMap<Slot, u32, BuildHasherDefault<PrehashedHasher>>,
}

impl DedupStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `key`; true when it was not seen before.
    pub fn insert(&mut self, key: u128, event_time: i64) -> bool {
        use std::collections::hash_map::Entry;
        match self.seen.entry(key.into()) {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(secs(event_time));
                true
            }
        }
    }

    /// Loads a key from the changelog. A key forgotten and seen again lives in
    /// two segments; the live store holds its latest insertion, which is the
    /// later event time, so restore keeps the larger one.
    pub fn restore(&mut self, key: u128, event_time: i64) {
        let event_time = secs(event_time);
        let t = self.seen.entry(key.into()).or_insert(event_time);
        *t = (*t).max(event_time);
    }

    pub fn contains(&self, key: u128) -> bool {
        self.seen.contains_key(&key.into())
    }

    /// Forgets keys whose event time is before `cutoff`; returns how many.
    pub fn evict_before(&mut self, cutoff: i64) -> usize {
        let before = self.seen.len();
        let cutoff = secs(cutoff);
        self.seen.retain(|_, t| *t >= cutoff);
        before - self.seen.len()
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Heap bytes held by the table: its buckets (a power of two, of which
    /// 7/8 are usable) times a slot plus its control byte.
    pub fn heap_bytes(&self) -> usize {
        let cap = self.seen.capacity();
        if cap == 0 {
            return 0;
        }
        let buckets = (cap * 8).div_ceil(7).next_power_of_two();
        buckets * (std::mem::size_of::<(Slot, u32)>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
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
