//! Watermarks: how far event time has progressed.
//!
//! A partition's watermark is the largest event time it has seen minus the
//! out-of-orderness bound. The event time it observes is capped at the
//! server's receive time (`observed_time`): a client whose clock runs fast
//! cannot move the watermark past the server's clock and make every honest
//! event of its partition late. Lateness decisions use the partition's own
//! watermark, so that replaying a partition reproduces them exactly; the
//! processor-wide watermark (the minimum over active partitions) is what
//! operators watch.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    bound_ms: i64,
    max_event_time: Option<i64>,
}

impl Watermark {
    pub fn new(bound_ms: i64) -> Self {
        Self {
            bound_ms,
            max_event_time: None,
        }
    }

    pub fn restored(bound_ms: i64, max_event_time: Option<i64>) -> Self {
        Self {
            bound_ms,
            max_event_time,
        }
    }

    pub fn observe(&mut self, event_time: i64) {
        self.max_event_time = Some(
            self.max_event_time
                .map_or(event_time, |m| m.max(event_time)),
        );
    }

    pub fn max_event_time(&self) -> Option<i64> {
        self.max_event_time
    }

    /// `i64::MIN` until the first event.
    pub fn current(&self) -> i64 {
        self.max_event_time
            .map_or(i64::MIN, |m| m.saturating_sub(self.bound_ms))
    }
}

/// The time a watermark observes for an event: its event time, but never
/// past the time ingest received it. Windows still take the event time.
pub fn observed_time(event_time: i64, received_at: i64) -> i64 {
    event_time.min(received_at)
}

/// The processor-wide watermark: the minimum over partitions that have seen
/// input within `idle_timeout`. A quiet partition stops holding the others
/// back; if every partition is idle, the maximum is reported so the gauge
/// does not freeze at an old value.
pub fn combined(
    partitions: impl IntoIterator<Item = (i64, Instant)>,
    now: Instant,
    idle_timeout: Duration,
) -> Option<i64> {
    let mut active: Option<i64> = None;
    let mut any: Option<i64> = None;
    for (wm, last_input) in partitions {
        if wm == i64::MIN {
            continue;
        }
        any = Some(any.map_or(wm, |a: i64| a.max(wm)));
        if now.saturating_duration_since(last_input) < idle_timeout {
            active = Some(active.map_or(wm, |a: i64| a.min(wm)));
        }
    }
    active.or(any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn watermark_is_max_minus_bound_and_never_decreases(times in prop::collection::vec(-1_000_000i64..1_000_000, 1..200), bound in 0i64..10_000) {
            let mut w = Watermark::new(bound);
            let mut prev = i64::MIN;
            for (i, t) in times.iter().enumerate() {
                w.observe(*t);
                prop_assert!(w.current() >= prev);
                prev = w.current();
                prop_assert_eq!(w.current(), times[..=i].iter().max().unwrap() - bound);
            }
        }
    }

    #[test]
    fn idle_partition_does_not_hold_back_the_others() {
        let now = Instant::now();
        let idle = Duration::from_secs(30);
        let old = now - Duration::from_secs(60);
        assert_eq!(combined([(100, now), (50, now)], now, idle), Some(50));
        assert_eq!(combined([(100, now), (50, old)], now, idle), Some(100));
        assert_eq!(combined([(100, old), (50, old)], now, idle), Some(100));
        assert_eq!(combined([(i64::MIN, now)], now, idle), None);
    }
}
