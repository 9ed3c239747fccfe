//! Which changelog key each new version of a state key is written under.
//!
//! Every state key has two changelog keys, its slots: `<key>` (slot 0, the
//! key as it was before slots existed) and `<key>#1`. A new version always
//! goes to the slot that does *not* hold the key's last committed version.
//!
//! Why: compaction keeps the newest record of each changelog key by offset,
//! and nisshi 0.7 compacts without regard for transactions (on every start
//! and every 10 minutes). With one key per state key, a version inside a
//! transaction that is still open replaces the committed version; if that
//! transaction then aborts (the broker was killed under it), the committed
//! version is gone and a restore silently starts that window or dedup segment
//! over. With two slots, the newest record of the committed version's slot is
//! that version until a newer one has committed in the other slot, so
//! whatever compaction removes is never the last committed version.
//!
//! Deleting a key writes a tombstone to the free slot. Once that commits, the
//! other slot still holds the older value, so the next batch tombstones that
//! slot too, and the key is forgotten.

use super::format::StateRecord;
use std::collections::HashMap;

const SLOT_1_SUFFIX: &str = "#1";

/// One of a state key's two changelog keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Zero = 0,
    One = 1,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::Zero => Slot::One,
            Slot::One => Slot::Zero,
        }
    }

    /// The changelog key of `key` in this slot.
    pub fn key(self, key: &str) -> String {
        match self {
            Slot::Zero => key.to_string(),
            Slot::One => format!("{key}{SLOT_1_SUFFIX}"),
        }
    }

    /// The state key and slot of a changelog key.
    pub fn parse(changelog_key: &str) -> (&str, Slot) {
        match changelog_key.strip_suffix(SLOT_1_SUFFIX) {
            Some(key) => (key, Slot::One),
            None => (changelog_key, Slot::Zero),
        }
    }
}

/// Where each state key's last committed version sits, and what the batch
/// being written will change once it commits.
#[derive(Debug, Default)]
pub struct ChangelogSlots {
    /// Keys whose last committed version holds a value: its slot.
    live: HashMap<String, Slot>,
    /// Keys whose last committed version is a tombstone while the other
    /// slot still holds an older value: the slot to clear. Kept apart from
    /// `live` so a batch finds them without scanning every key.
    to_clear: HashMap<String, Slot>,
    /// The batch in flight: state key → (slot, tombstone), last write wins.
    pending: HashMap<String, (Slot, bool)>,
}

impl ChangelogSlots {
    /// Notes that a restore found `key`'s last committed version in `slot`.
    /// `stale_other` says the other slot's newest record holds a value, which
    /// matters only under a tombstone: that value must be cleared.
    pub fn restored(&mut self, key: &str, slot: Slot, tombstone: bool, stale_other: bool) {
        match (tombstone, stale_other) {
            (false, _) => self.live.insert(key.to_string(), slot),
            (true, true) => self.to_clear.insert(key.to_string(), slot.other()),
            (true, false) => None, // both slots are empty of values
        };
    }

    /// Moves a batch's records to their slots' changelog keys, and adds a
    /// tombstone for the older slot of every key deleted by an earlier commit.
    pub fn place(&mut self, records: Vec<StateRecord>) -> Vec<StateRecord> {
        let Some(upto) = records.iter().map(|r| r.upto).max() else {
            return records;
        };
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            // The slot not holding the last committed version; a key whose
            // committed version is a tombstone goes where the old value is.
            let slot = match (self.live.get(&r.key), self.to_clear.get(&r.key)) {
                (Some(committed), _) => committed.other(),
                (None, Some(&stale)) => stale,
                (None, None) => Slot::Zero,
            };
            self.pending
                .insert(r.key.clone(), (slot, r.value.is_none()));
            out.push(StateRecord {
                key: slot.key(&r.key),
                ..r
            });
        }
        for (key, &slot) in &self.to_clear {
            if !self.pending.contains_key(key) {
                out.push(StateRecord {
                    key: slot.key(key),
                    value: None,
                    upto,
                });
                self.pending.insert(key.clone(), (slot, true));
            }
        }
        out
    }

    /// The batch placed last has committed.
    pub fn commit(&mut self) {
        for (key, (slot, tombstone)) in self.pending.drain() {
            if !tombstone {
                self.to_clear.remove(&key);
                self.live.insert(key, slot);
            } else if self.live.remove(&key).is_some() {
                // The other slot holds the value this tombstone deletes.
                self.to_clear.insert(key, slot.other());
            } else {
                // Both slots now end in a tombstone (or were never written).
                self.to_clear.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, value: Option<u8>, upto: i64) -> StateRecord {
        StateRecord {
            key: key.into(),
            value: value.map(|v| vec![v]),
            upto,
        }
    }

    #[test]
    fn keys_round_trip_and_slot_zero_is_the_bare_key() {
        for key in ["meta", "win/60000", "win2/0", "dedup/17"] {
            assert_eq!(Slot::Zero.key(key), key);
            assert_eq!(Slot::parse(&Slot::Zero.key(key)), (key, Slot::Zero));
            assert_eq!(Slot::parse(&Slot::One.key(key)), (key, Slot::One));
        }
    }

    #[test]
    fn versions_alternate_only_after_a_commit() {
        let mut s = ChangelogSlots::default();
        let placed = s.place(vec![rec("w", Some(1), 5)]);
        assert_eq!(placed[0].key, "w");
        // Not committed (aborted): the retry goes to the same slot.
        s.pending.clear();
        assert_eq!(s.place(vec![rec("w", Some(1), 5)])[0].key, "w");
        s.commit();
        assert_eq!(s.place(vec![rec("w", Some(2), 9)])[0].key, "w#1");
        s.commit();
        assert_eq!(s.place(vec![rec("w", Some(3), 12)])[0].key, "w");
    }

    #[test]
    fn a_deleted_key_is_cleared_from_its_older_slot_by_the_next_batch() {
        let mut s = ChangelogSlots::default();
        s.place(vec![rec("w", Some(1), 5)]);
        s.commit();
        let placed = s.place(vec![rec("w", None, 9)]);
        assert_eq!(placed, vec![rec("w#1", None, 9)]);
        s.commit();
        let placed = s.place(vec![rec("meta", Some(0), 12)]);
        assert_eq!(placed, vec![rec("meta", Some(0), 12), rec("w", None, 12)]);
        s.commit();
        assert_eq!(s.live.len(), 1, "only meta is remembered: {s:?}");
        assert!(s.to_clear.is_empty(), "{s:?}");
        // An empty batch writes nothing, clears included.
        assert!(s.place(vec![]).is_empty());
    }
}
