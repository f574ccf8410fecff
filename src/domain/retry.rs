//! Exponential backoff with jitter, capped. The schedule is stored as `due_at` in the store.

use std::time::Duration;

/// Retry delays: `base * 2^(attempt-1)`, capped at `cap`, then jittered into `[d/2, d]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySchedule {
    /// Delay after the first failed attempt (before jitter).
    pub base: Duration,
    /// Upper bound of any delay.
    pub cap: Duration,
}

impl RetrySchedule {
    /// Delay before the next try after `attempt` failures; `entropy` picks the jitter.
    pub fn delay(&self, attempt: u32, entropy: u64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(32);
        let full = self
            .base
            .checked_mul(1u32 << exponent.min(31))
            .unwrap_or(self.cap)
            .min(self.cap);
        let half = full / 2;
        let spread = (full - half).as_millis() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            entropy % (spread + 1)
        };
        half + Duration::from_millis(jitter)
    }
}

/// A cheap, well-mixed 64-bit value from a seed (splitmix64), for jitter without a RNG crate.
pub fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Jitter entropy for one retry of one retirement.
pub fn retry_entropy(id: i64, attempt: i32, now: chrono::DateTime<chrono::Utc>) -> u64 {
    mix((id as u64) ^ ((attempt as u64) << 48) ^ now.timestamp_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: RetrySchedule = RetrySchedule {
        base: Duration::from_secs(60),
        cap: Duration::from_secs(3600),
    };

    #[test]
    fn grows_exponentially_within_jitter_bounds() {
        for attempt in 1..=6u32 {
            let full = Duration::from_secs(60 * (1 << (attempt - 1)));
            for entropy in [0, 1, 12345, u64::MAX] {
                let d = SCHEDULE.delay(attempt, mix(entropy));
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn never_exceeds_the_cap() {
        for attempt in [7, 10, 31, 32, 100, u32::MAX] {
            let d = SCHEDULE.delay(attempt, mix(attempt as u64));
            assert!(
                d <= SCHEDULE.cap && d >= SCHEDULE.cap / 2,
                "{attempt}: {d:?}"
            );
        }
    }

    #[test]
    fn jitter_spreads_retries() {
        let delays: std::collections::HashSet<_> =
            (0..50).map(|i| SCHEDULE.delay(3, mix(i))).collect();
        assert!(delays.len() > 40);
    }
}
