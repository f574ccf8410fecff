//! Time arithmetic that cannot panic: chrono panics when a sum overflows, and a duration
//! comes from config or a retry schedule.

use chrono::{DateTime, TimeDelta, Utc};
use std::time::Duration;

/// The latest instant lethe writes: both stores keep it (SQLite as text, Postgres as
/// `timestamptz`), far beyond any lease, grace period or retry.
pub fn far_future() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The earliest instant lethe writes (year 1).
fn far_past() -> DateTime<Utc> {
    DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `t + d`, saturating at [`far_future`].
pub fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .map_or_else(far_future, |at| at.min(far_future()))
}

/// `t - d`, saturating at the year 1.
pub fn before(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_sub_signed(d))
        .map_or_else(far_past, |at| at.max(far_past()))
}

/// Truncates to microseconds, the precision both stores keep.
pub fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::DurationRound;
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_durations_saturate_instead_of_panicking() {
        let now = Utc::now();
        assert_eq!(after(now, Duration::MAX), far_future());
        assert_eq!(after(now, Duration::from_secs(u64::MAX / 4)), far_future());
        assert_eq!(before(now, Duration::MAX), far_past());
        assert_eq!(after(far_future(), Duration::from_secs(1)), far_future());
        let d = Duration::from_secs(90);
        assert_eq!(after(now, d) - now, TimeDelta::seconds(90));
        assert_eq!(now - before(now, d), TimeDelta::seconds(90));
    }

    #[test]
    fn truncation_keeps_microseconds() {
        let t = DateTime::from_timestamp(1, 123_456_789).unwrap();
        assert_eq!(truncate_micros(t).timestamp_subsec_nanos(), 123_456_000);
    }
}
