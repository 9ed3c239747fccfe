//! Event-time windows: which windows an event time falls into, and what an
//! open window holds.
//!
//! Tumbling windows are hopping windows whose advance equals their size.
//! Windows are aligned to the epoch, `[start, start + size)`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// The dimensions one window row is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AggKey {
    pub tenant: String,
    pub name: String,
    pub channel: String,
}

/// One key's count and distinct users in a window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    pub count: i64,
    pub users: BTreeSet<String>,
}

/// An open window: what it has counted so far, per key. Written to the
/// changelog as it is (see `changelog::format`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowState {
    pub window: Window,
    pub keys: BTreeMap<AggKey, KeyState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowAssigner {
    size_ms: i64,
    advance_ms: i64,
}

impl WindowAssigner {
    pub fn tumbling(size_ms: i64) -> Self {
        Self::hopping(size_ms, size_ms)
    }

    /// Panics unless `0 < advance_ms <= size_ms`; config validation checks first.
    pub fn hopping(size_ms: i64, advance_ms: i64) -> Self {
        assert!(
            advance_ms > 0 && advance_ms <= size_ms,
            "window advance must be in (0, size]"
        );
        Self {
            size_ms,
            advance_ms,
        }
    }

    pub fn size_ms(&self) -> i64 {
        self.size_ms
    }

    /// The windows that contain `ts`, oldest first. A window whose start or
    /// end an i64 cannot hold (event times within a window of `i64::MIN` or
    /// `MAX`, which only a record written past ingest can carry) is left out
    /// rather than overflowed: found by `fuzz/` processor_avro.
    pub fn assign(&self, ts: i64) -> impl Iterator<Item = Window> + '_ {
        let last_start = ts.div_euclid(self.advance_ms).checked_mul(self.advance_ms);
        let count = (self.size_ms + self.advance_ms - 1) / self.advance_ms;
        (0..count)
            .rev()
            .filter_map(move |i| {
                let start = last_start?.checked_sub(i.checked_mul(self.advance_ms)?)?;
                let end = start.checked_add(self.size_ms)?;
                Some(Window { start, end })
            })
            .filter(move |w| w.start <= ts && ts < w.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tumbling_minute() {
        let a = WindowAssigner::tumbling(60_000);
        assert_eq!(
            a.assign(125_000).collect::<Vec<_>>(),
            vec![Window {
                start: 120_000,
                end: 180_000
            }]
        );
        assert_eq!(
            a.assign(-1).collect::<Vec<_>>(),
            vec![Window {
                start: -60_000,
                end: 0
            }]
        );
    }

    #[test]
    fn times_at_the_ends_of_i64_get_the_windows_that_fit() {
        let a = WindowAssigner::hopping(3_600_000, 300_000);
        assert_eq!(a.assign(i64::MAX).count(), 0);
        assert_eq!(a.assign(i64::MIN).count(), 0);
        // Hopping windows of which some fit: those, and no others.
        let near_max = i64::MAX - 1_000_000;
        let got: Vec<_> = a.assign(near_max).collect();
        assert!(!got.is_empty() && got.len() < 12);
        assert!(got.iter().all(|w| w.start <= near_max && near_max < w.end));
        let near_min = i64::MIN + 1_000_000;
        let got: Vec<_> = a.assign(near_min).collect();
        assert!(!got.is_empty() && got.len() < 12);
        assert!(got.iter().all(|w| w.start <= near_min && near_min < w.end));
    }

    proptest! {
        #[test]
        fn windows_are_exactly_those_containing_ts(
            ts in -10_000_000i64..10_000_000,
            advance in 1i64..5_000,
            factor in 1i64..6,
            extra in 0i64..1_000,
        ) {
            let size = advance * factor + extra.min(advance - 1);
            let a = WindowAssigner::hopping(size, advance);
            let got: Vec<_> = a.assign(ts).collect();
            for w in &got {
                prop_assert!(w.start <= ts && ts < w.end);
                prop_assert_eq!(w.start.rem_euclid(advance), 0);
                prop_assert_eq!(w.end - w.start, size);
            }
            // brute force: every aligned start within one size of ts
            let mut expected = vec![];
            let mut s = (ts - size).div_euclid(advance) * advance;
            while s <= ts {
                if s <= ts && ts < s + size { expected.push(Window { start: s, end: s + size }); }
                s += advance;
            }
            prop_assert_eq!(got, expected);
        }
    }
}
