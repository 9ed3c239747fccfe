//! Event-time windows: which windows an event time falls into.
//!
//! Tumbling windows are hopping windows whose advance equals their size.
//! Windows are aligned to the epoch, `[start, start + size)`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Window {
    pub start: i64,
    pub end: i64,
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

    /// The windows that contain `ts`, oldest first.
    pub fn assign(&self, ts: i64) -> impl Iterator<Item = Window> + '_ {
        let last_start = ts.div_euclid(self.advance_ms) * self.advance_ms;
        let count = (self.size_ms + self.advance_ms - 1) / self.advance_ms;
        (0..count)
            .rev()
            .map(move |i| last_start - i * self.advance_ms)
            .map(move |start| Window {
                start,
                end: start + self.size_ms,
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
