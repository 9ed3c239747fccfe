//! Duplicate detection by event id within a horizon of event time.
//!
//! Each id is kept as a 128-bit hash with its event time, so memory per key is
//! fixed whatever the id's length. Ids older than the horizon behind the
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
    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

#[derive(Debug, Default, Clone)]
pub struct DedupStore {
    seen: HashMap<u128, i64, BuildHasherDefault<PrehashedHasher>>,
}

impl DedupStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `key`; true when it was not seen before.
    pub fn insert(&mut self, key: u128, event_time: i64) -> bool {
        use std::collections::hash_map::Entry;
        match self.seen.entry(key) {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(event_time);
                true
            }
        }
    }

    /// Loads a key from the changelog. A key forgotten and seen again lives in
    /// two segments; the live store holds its latest insertion, which is the
    /// later event time, so restore keeps the larger one.
    pub fn restore(&mut self, key: u128, event_time: i64) {
        let t = self.seen.entry(key).or_insert(event_time);
        *t = (*t).max(event_time);
    }

    pub fn contains(&self, key: u128) -> bool {
        self.seen.contains_key(&key)
    }

    /// Forgets keys whose event time is before `cutoff`; returns how many.
    pub fn evict_before(&mut self, cutoff: i64) -> usize {
        let before = self.seen.len();
        self.seen.retain(|_, t| *t >= cutoff);
        before - self.seen.len()
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Heap bytes held by the table (buckets plus control bytes).
    pub fn heap_bytes(&self) -> usize {
        let cap = self.seen.capacity();
        cap * (std::mem::size_of::<(u128, i64)>() + 1)
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
    fn tenants_do_not_collide_and_eviction_forgets_old_keys() {
        let mut d = DedupStore::new();
        assert!(d.insert(dedup_key("a", "1"), 10));
        assert!(d.insert(dedup_key("b", "1"), 20));
        assert!(!d.insert(dedup_key("a", "1"), 30));
        assert_eq!(d.evict_before(15), 1);
        assert!(d.insert(dedup_key("a", "1"), 30));
    }
}
