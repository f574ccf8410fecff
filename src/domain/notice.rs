//! Invariant 2 as pure rules: no deletion before `warned_at + grace`, and when grace
//! reminders fall due.

use super::Outcome;
use super::time::after;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// When the grace period of a subject warned at `warned_at` ends.
pub fn grace_ends(warned_at: DateTime<Utc>, grace: Duration) -> DateTime<Utc> {
    after(warned_at, grace)
}

/// `None` when a deleting stage may run now; otherwise what it must answer instead.
/// A requested retirement (the user asked) needs no notice; any other needs a recorded
/// warning and the whole grace period behind it, whatever the pipeline says.
pub fn deletion_hold(
    reason: &super::Reason,
    warned_at: Option<DateTime<Utc>>,
    grace: Duration,
    now: DateTime<Utc>,
) -> Option<Outcome> {
    if reason.is_requested() {
        return None;
    }
    match warned_at {
        None => Some(Outcome::Fail {
            error: "no warning was recorded: nobody is deleted without notice (add an email stage with the warning template before this one)".into(),
        }),
        Some(at) if now < grace_ends(at, grace) => Some(Outcome::Wait {
            until: grace_ends(at, grace),
            why: format!(
                "the grace period after the warning runs until {}",
                grace_ends(at, grace).to_rfc3339()
            ),
        }),
        Some(_) => None,
    }
}

/// Reminders `before` the end of grace (e.g. 14d, 7d): how many are due at `now`, and
/// when the next one (or the end) is due.
pub fn reminders_due(
    warned_at: DateTime<Utc>,
    grace: Duration,
    before: &[Duration],
    now: DateTime<Utc>,
) -> (usize, DateTime<Utc>) {
    let end = grace_ends(warned_at, grace);
    let mut times: Vec<DateTime<Utc>> = before
        .iter()
        .map(|b| super::time::before(end, *b))
        .collect();
    times.sort();
    let due = times.iter().filter(|t| **t <= now).count();
    let next = times.get(due).copied().unwrap_or(end);
    (due, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Reason;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }
    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn deletion_waits_for_the_whole_grace_period() {
        let warned = Some(t("2026-01-01T00:00:00Z"));
        let hold = deletion_hold(
            &Reason::INACTIVE,
            warned,
            30 * DAY,
            t("2026-01-30T23:59:59Z"),
        );
        assert!(
            matches!(hold, Some(Outcome::Wait { until, .. }) if until == t("2026-01-31T00:00:00Z")),
            "{hold:?}"
        );
        assert_eq!(
            deletion_hold(
                &Reason::INACTIVE,
                warned,
                30 * DAY,
                t("2026-01-31T00:00:00Z")
            ),
            None
        );
    }

    #[test]
    fn no_warning_means_no_deletion_unless_requested() {
        let now = t("2026-01-01T00:00:00Z");
        assert!(matches!(
            deletion_hold(&Reason::INACTIVE, None, DAY, now),
            Some(Outcome::Fail { .. })
        ));
        assert_eq!(deletion_hold(&Reason::REQUESTED, None, DAY, now), None);
    }

    #[test]
    fn reminders_fall_due_in_order_before_the_end() {
        let warned = t("2026-01-01T00:00:00Z");
        let before = [7 * DAY, 14 * DAY];
        assert_eq!(
            reminders_due(warned, 30 * DAY, &before, warned),
            (0, t("2026-01-17T00:00:00Z"))
        );
        assert_eq!(
            reminders_due(warned, 30 * DAY, &before, t("2026-01-17T00:00:00Z")),
            (1, t("2026-01-24T00:00:00Z"))
        );
        assert_eq!(
            reminders_due(warned, 30 * DAY, &before, t("2026-01-25T00:00:00Z")),
            (2, t("2026-01-31T00:00:00Z"))
        );
    }
}
