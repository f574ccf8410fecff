//! The grace handler: waits until `warned_at + policy.grace_period`, sends the configured
//! reminders once each, and re-checks activity in the source: a subject who logged in
//! after the warning is cancelled (invariant 1).

use super::email::Notifier;
use super::{BatchError, Handler};
use crate::clock::Clock;
use crate::config::GraceSettings;
use crate::domain::{Outcome, StageResult, grace_ends, reminders_due};
use crate::sql::source::SourceReader;
use crate::store::Claimed;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Waits out the grace period.
pub struct GraceHandler {
    settings: GraceSettings,
    grace: Duration,
    notifier: Option<Arc<Notifier>>,
    source: Option<Arc<SourceReader>>,
    clock: Arc<dyn Clock>,
}

impl GraceHandler {
    /// A handler; `notifier` is needed for reminders, `source` for the re-check.
    pub fn new(
        settings: GraceSettings,
        grace: Duration,
        notifier: Option<Arc<Notifier>>,
        source: Option<Arc<SourceReader>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            settings,
            grace,
            notifier,
            source,
            clock,
        }
    }

    /// Subjects of `batch` whose last login is after their warning.
    async fn active_again(
        &self,
        batch: &[&Claimed],
    ) -> Result<HashMap<i64, DateTime<Utc>>, BatchError> {
        let Some(source) = &self.source else {
            return Ok(HashMap::new());
        };
        let ids: Vec<i64> = batch
            .iter()
            .filter(|c| !c.reason.is_requested())
            .filter_map(|c| c.subject.trim().parse().ok())
            .collect();
        let logins = source
            .last_logins(&ids)
            .await
            .map_err(|e| BatchError(e.to_string()))?;
        let mut out = HashMap::new();
        for c in batch {
            let Ok(id) = c.subject.trim().parse::<i64>() else {
                continue;
            };
            if let (Some(Some(login)), Some(warned)) = (logins.get(&id), c.warned_at)
                && login.and_utc() > warned
            {
                out.insert(c.id, login.and_utc());
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Handler for GraceHandler {
    /// Right after the warning it re-reads the source and waits; reminders come later.
    fn quick(&self) -> bool {
        true
    }

    async fn handle(&self, batch: &[Claimed]) -> Result<HashMap<i64, StageResult>, BatchError> {
        let now = self.clock.now();
        let mut results = HashMap::new();
        let mut waiting: Vec<&Claimed> = Vec::new();
        for c in batch {
            if c.warned_at.is_none() {
                results.insert(
                    c.id,
                    StageResult::new(Outcome::Fail {
                        error: "no warning was recorded, so the grace period cannot start (the warning stage must come first)".into(),
                    }),
                );
            } else {
                waiting.push(c);
            }
        }
        let active = if self.settings.recheck {
            self.active_again(&waiting).await?
        } else {
            HashMap::new()
        };
        let mut remind: Vec<Claimed> = Vec::new();
        // Per retirement to remind: reminders due, next due time, end of grace.
        let mut due_counts: HashMap<i64, (usize, DateTime<Utc>, DateTime<Utc>)> = HashMap::new();
        for c in waiting {
            let Some(warned) = c.warned_at else { continue };
            if let Some(at) = active.get(&c.id) {
                results.insert(
                    c.id,
                    StageResult::new(Outcome::Cancel {
                        why: format!("active again at {}", at.to_rfc3339()),
                    }),
                );
                continue;
            }
            let end = grace_ends(warned, self.grace);
            if now >= end {
                results.insert(
                    c.id,
                    StageResult::new(Outcome::Done).with_detail(
                        json!({ "grace_ended": end, "rechecked": self.settings.recheck }),
                    ),
                );
                continue;
            }
            let (due, next) = reminders_due(warned, self.grace, &self.settings.reminders, now);
            if due > c.reminders_sent.max(0) as usize {
                // Only the latest due reminder is sent: after downtime, one message, not a burst.
                remind.push(c.clone());
                due_counts.insert(c.id, (due, next, end));
            } else {
                results.insert(c.id, wait(next, end, c.reminders_sent, None));
            }
        }
        if let (Some(notifier), false) = (&self.notifier, remind.is_empty()) {
            let (grace, template) = (self.grace, self.settings.reminder_template.as_str());
            let sent = notifier
                .send_all(
                    &remind,
                    template,
                    // One Message-ID per reminder, the same if it is resent.
                    |c| format!("{}.{template}.{}", c.id, c.reminders_sent + 1),
                    |c| grace_ends(c.warned_at.unwrap_or(now), grace),
                )
                .await;
            // The warning was delivered; a reminder that cannot be is recorded and the
            // grace period goes on (or stops, if the operator asked for that).
            let policy = notifier.config.on_undeliverable;
            for (id, sent) in sent {
                let Some((due, next, end)) = due_counts.get(&id).copied() else {
                    continue;
                };
                let result = sent.outcome(policy, "reminder undeliverable", |detail| {
                    wait(next, end, due as i32, Some(detail))
                });
                results.insert(id, result);
            }
        }
        Ok(results)
    }
}

/// Stay until the next reminder or the end of grace, recording the reminders sent.
fn wait(
    next: DateTime<Utc>,
    end: DateTime<Utc>,
    reminders_sent: i32,
    detail: Option<serde_json::Value>,
) -> StageResult {
    let why = if next < end {
        format!("next reminder at {}", next.to_rfc3339())
    } else {
        format!("grace period until {}", end.to_rfc3339())
    };
    let mut r = StageResult::new(Outcome::Wait { until: next, why });
    r.detail = detail;
    r.reminders_sent = Some(reminders_sent);
    r
}
