//! `Backoff`: how long to wait before the next attempt. Exponential with
//! full jitter, never shorter than the server's `Retry-After`.
//!
//! Written here rather than with a backoff crate: the delay must yield to
//! each answer's `Retry-After`, and the schedule must stay a pure function
//! of the attempt and a jitter draw, so that it can be tested without time.

use std::time::Duration;

/// Exponential backoff: attempt `n` (from 1) waits a uniform draw from
/// `[0, min(max, initial * 2^(n-1))]`, and at least `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling to 10 s.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The wait before retry `attempt` (1 for the first retry), given a
    /// jitter draw in `[0, 1)` and the server's `Retry-After`, if any.
    pub fn delay(&self, attempt: u32, jitter: f64, retry_after: Option<Duration>) -> Duration {
        let exp = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        let ceiling = self.initial.saturating_mul(exp).min(self.max);
        let drawn = ceiling.mul_f64(jitter.clamp(0.0, 1.0));
        drawn.max(retry_after.unwrap_or_default())
    }
}

/// A jitter draw in `[0, 1)`: SplitMix64 over the clock and a counter,
/// enough to spread clients apart (no cryptographic need).
pub(crate) fn jitter() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = nanos ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_to_the_max_and_retry_after_wins() {
        let b = Backoff::default();
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(b.delay(1, 0.999_999, None)), 99);
        assert_eq!(ms(b.delay(2, 0.999_999, None)), 199);
        assert_eq!(ms(b.delay(8, 0.999_999, None)), 9_999);
        assert_eq!(ms(b.delay(60, 0.999_999, None)), 9_999);
        assert_eq!(ms(b.delay(3, 0.0, None)), 0);
        assert_eq!(
            b.delay(1, 0.5, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
