//! The state a changelog holds as of a committed offset: pure, no Kafka.
//!
//! The changelog may hold entries that were never committed: records of an
//! aborted transaction (a broker may show them, as nisshi 0.7 does), or of an
//! `ordered` flush that crashed before its offset commit. Each entry carries
//! `upto`, the last input offset it reflects, so restore keeps only entries
//! with `upto` below the committed offset. Because state is a function of the
//! input prefix (see `partition`), a stale entry kept this way holds only true
//! facts, and any entry it would contradict was written after it.
//!
//! Each state key is read from both of its slots (see `slots`), and the
//! restored state remembers which slot holds each key's committed version.
//! `PartitionState::restore` builds a partition's state from what this
//! returns.

use super::format::{
    dedup_segment_from, window_spec, StateRecord, StateValue, META_KEY, OWNER_KEY,
};
use super::slots::{ChangelogSlots, Slot};
use crate::dedup::DedupStore;
use crate::window::WindowState;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
#[error("changelog entry {key:?} is unreadable: {reason}")]
pub struct RestoreError {
    pub key: String,
    pub reason: String,
}

/// What a changelog holds as of a committed offset.
#[derive(Debug, Default)]
pub struct Restored {
    /// Open windows per spec (0 is the primary), by start.
    pub windows: Vec<BTreeMap<i64, WindowState>>,
    /// Dedup segments in the changelog: first offset → max event time.
    pub segments: BTreeMap<i64, i64>,
    /// The largest event time seen: the watermark's source.
    pub max_event_time: Option<i64>,
    /// Which slot holds each key's committed version.
    pub slots: ChangelogSlots,
    /// Records ignored because a newer version of their key came earlier.
    pub rolled_back: u64,
}

/// The state of `records` as of `committed` (the next offset to consume),
/// for `specs` window specs; the dedup ids go into `dedup`. Windows of a
/// spec no longer configured are dropped.
pub fn restore(
    specs: usize,
    dedup: &mut DedupStore,
    records: impl IntoIterator<Item = StateRecord>,
    committed: i64,
) -> Result<Restored, RestoreError> {
    let mut out = Restored {
        windows: vec![BTreeMap::new(); specs],
        ..Default::default()
    };
    let (versions, rolled_back) = committed_versions(records, committed);
    out.rolled_back = rolled_back;
    for Version {
        key,
        slot,
        value,
        other_holds_value,
    } in versions
    {
        if key != OWNER_KEY {
            out.slots
                .restored(&key, slot, value.is_none(), other_holds_value);
        }
        let Some(bytes) = value else { continue };
        let value = StateValue::decode(&bytes).map_err(|e| RestoreError {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        match value {
            StateValue::Meta { max_event_time } if key == META_KEY => {
                out.max_event_time = max_event_time
            }
            StateValue::Dedup {
                max_event_time,
                entries,
            } => {
                let from = dedup_segment_from(&key).ok_or_else(|| RestoreError {
                    key: key.clone(),
                    reason: "bad dedup key".into(),
                })?;
                out.segments.insert(from, max_event_time);
                for (k, t) in entries {
                    dedup.restore(k, t);
                }
            }
            StateValue::Window(w) => {
                if let Some(windows) = window_spec(&key).and_then(|k| out.windows.get_mut(k)) {
                    windows.insert(w.window.start, w);
                }
            }
            StateValue::Owner { .. } => {} // read by `format::last_owner`
            StateValue::Meta { .. } => {
                return Err(RestoreError {
                    key,
                    reason: "meta value under a non-meta key".into(),
                })
            }
        }
    }
    Ok(out)
}

/// A state key's committed version.
struct Version {
    key: String,
    slot: Slot,
    value: Option<Vec<u8>>,
    /// Whether the other slot's newest record holds a value.
    other_holds_value: bool,
}

/// Each state key's committed version, for keys with one; and how many
/// records were older than a version of their key that came before them.
///
/// The newest version of a key is the one with the highest `upto`, not the
/// last one in the log: a record can land after a newer version of its key
/// (a producer's retry across a broker restart, or an aborted batch of a
/// former owner that a broker without transaction markers shows), and taking
/// it would roll that key back. Records come in offset order.
fn committed_versions(
    records: impl IntoIterator<Item = StateRecord>,
    committed: i64,
) -> (Vec<Version>, u64) {
    #[derive(Default)]
    struct KeyLog {
        /// The version kept: (upto, slot, value).
        pick: Option<(i64, Slot, Option<Vec<u8>>)>,
        /// Whether each slot's newest record holds a value.
        newest_holds_value: [bool; 2],
    }
    let mut keys: BTreeMap<String, KeyLog> = BTreeMap::new();
    let mut rolled_back = 0u64;
    for r in records {
        let (key, slot) = Slot::parse(&r.key);
        let log = keys.entry(key.to_string()).or_default();
        log.newest_holds_value[slot as usize] = r.value.is_some();
        if r.upto >= committed {
            continue;
        }
        match &log.pick {
            Some((upto, ..)) if *upto > r.upto => rolled_back += 1,
            _ => log.pick = Some((r.upto, slot, r.value)),
        }
    }
    let versions = keys
        .into_iter()
        .filter_map(|(key, log)| {
            let (_, slot, value) = log.pick?; // never committed: skipped
            let other_holds_value = log.newest_holds_value[slot.other() as usize];
            Some(Version {
                key,
                slot,
                value,
                other_holds_value,
            })
        })
        .collect();
    (versions, rolled_back)
}
