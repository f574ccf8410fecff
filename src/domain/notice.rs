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

/// What a reason's notice policy demands before anything is deleted: with `required`, a
/// recorded notice and `hold` behind it; without, `hold` behind the opening (a cool-off,
/// possibly zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoticeRule {
    /// Whether a notice accepted by the mail server must be recorded first.
    pub required: bool,
    /// The grace period after the notice (required), or the cool-off after the opening.
    pub hold: Duration,
}

impl NoticeRule {
    /// When the hold ends for a retirement opened at `opened_at` and warned at `warned_at`;
    /// `None` while a required notice is not recorded.
    pub fn ends(
        &self,
        warned_at: Option<DateTime<Utc>>,
        opened_at: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if self.required {
            warned_at.map(|at| grace_ends(at, self.hold))
        } else {
            Some(after(opened_at, self.hold))
        }
    }
}

/// `None` when a deleting stage may run now; otherwise what it must answer instead. The
/// reason's policy (`rule`) decides; a reason without a policy is never deleted, whatever
/// the pipeline says.
pub fn deletion_hold(
    reason: &super::Reason,
    rule: Option<&NoticeRule>,
    warned_at: Option<DateTime<Utc>>,
    opened_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<Outcome> {
    let Some(rule) = rule else {
        return Some(Outcome::Fail {
            error: format!(
                "reason {reason} has no notice policy: nothing is deleted (add [notice.{reason}] to pipeline.toml, then resume)"
            ),
        });
    };
    match rule.ends(warned_at, opened_at) {
        None => Some(Outcome::Fail {
            error: format!(
                "no warning was recorded: nobody is deleted without notice (reason {reason} requires one: add an email stage with the warning template before this one)"
            ),
        }),
        Some(end) if now < end => Some(Outcome::Wait {
            until: end,
            why: if rule.required {
                format!(
                    "the grace period after the warning runs until {}",
                    end.to_rfc3339()
                )
            } else {
                format!(
                    "the cool-off after the opening runs until {}",
                    end.to_rfc3339()
                )
            },
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

    const INACTIVE: NoticeRule = NoticeRule {
        required: true,
        hold: Duration::from_secs(30 * 86_400),
    };

    #[test]
    fn deletion_waits_for_the_whole_grace_period() {
        let warned = Some(t("2026-01-01T00:00:00Z"));
        let opened = t("2025-12-31T00:00:00Z");
        let hold = |now| deletion_hold(&Reason::INACTIVE, Some(&INACTIVE), warned, opened, now);
        assert!(
            matches!(hold(t("2026-01-30T23:59:59Z")), Some(Outcome::Wait { until, .. }) if until == t("2026-01-31T00:00:00Z")),
            "{:?}",
            hold(t("2026-01-30T23:59:59Z"))
        );
        assert_eq!(hold(t("2026-01-31T00:00:00Z")), None);
    }

    #[test]
    fn no_warning_means_no_deletion_when_the_policy_requires_one() {
        let now = t("2026-01-01T00:00:00Z");
        assert!(matches!(
            deletion_hold(&Reason::INACTIVE, Some(&INACTIVE), None, now, now),
            Some(Outcome::Fail { .. })
        ));
        let none = NoticeRule {
            required: false,
            hold: Duration::ZERO,
        };
        assert_eq!(
            deletion_hold(&Reason::REQUESTED, Some(&none), None, now, now),
            None
        );
    }

    #[test]
    fn a_cool_off_runs_from_the_opening_without_a_notice() {
        let opened = t("2026-01-01T00:00:00Z");
        let cool_off = NoticeRule {
            required: false,
            hold: 7 * DAY,
        };
        let hold = |now| deletion_hold(&Reason::REQUESTED, Some(&cool_off), None, opened, now);
        assert!(matches!(
            hold(t("2026-01-07T23:59:59Z")),
            Some(Outcome::Wait { until, .. }) if until == t("2026-01-08T00:00:00Z")
        ));
        assert_eq!(hold(t("2026-01-08T00:00:00Z")), None);
    }

    #[test]
    fn a_reason_without_a_policy_is_never_deleted() {
        let now = t("2026-01-01T00:00:00Z");
        let hold = deletion_hold(&Reason::from("bored"), None, Some(now), now, now);
        assert!(
            matches!(&hold, Some(Outcome::Fail { error }) if error.contains("[notice.bored]")),
            "{hold:?}"
        );
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
