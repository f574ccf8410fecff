//! The grace handler: waits until the end of the hold the retirement's reason sets (the
//! grace period after the warning, or a cool-off after the opening), sends that policy's
//! reminders once each, and re-checks the source: a subject who logged in after the
//! warning, or whom its rule no longer selects (an account confirmed), is cancelled
//! (invariant 1).

use super::email::Notifier;
use super::{BatchError, Handler, Reasons};
use crate::clock::Clock;
use crate::config::GraceSettings;
use crate::domain::{Outcome, StageResult, reminders_due};
use crate::sql::source::SourceReader;
use crate::store::Claimed;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// Waits out the grace period.
pub struct GraceHandler {
    settings: GraceSettings,
    reasons: Arc<Reasons>,
    notifier: Option<Arc<Notifier>>,
    source: Option<Arc<SourceReader>>,
    clock: Arc<dyn Clock>,
}

impl GraceHandler {
    /// A handler; `notifier` is needed for reminders, `source` for the re-check.
    pub fn new(
        settings: GraceSettings,
        reasons: Arc<Reasons>,
        notifier: Option<Arc<Notifier>>,
        source: Option<Arc<SourceReader>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            settings,
            reasons,
            notifier,
            source,
            clock,
        }
    }

    /// Retirements of `batch` to cancel, and why: their subject logged in after the warning
    /// (or the opening), or the rule that selected them no longer does.
    async fn cancelled(
        &self,
        batch: &[&Claimed],
        now: DateTime<Utc>,
    ) -> Result<HashMap<i64, String>, BatchError> {
        let mut out = HashMap::new();
        let Some(source) = &self.source else {
            return Ok(out);
        };
        let subject = |c: &Claimed| c.subject.trim().parse::<i64>().ok();
        let active: Vec<&Claimed> = batch
            .iter()
            .copied()
            .filter(|c| self.reasons.activity_cancels(c))
            .collect();
        let ids: Vec<i64> = active.iter().filter_map(|c| subject(c)).collect();
        if !ids.is_empty() {
            let logins = source
                .last_logins(&ids)
                .await
                .map_err(|e| BatchError(e.to_string()))?;
            for c in active {
                let since = c.warned_at.unwrap_or(c.created_at);
                if let Some(Some(login)) = subject(c).and_then(|id| logins.get(&id))
                    && login.and_utc() > since
                {
                    out.insert(
                        c.id,
                        format!("active again at {}", login.and_utc().to_rfc3339()),
                    );
                }
            }
        }
        let rechecked: Vec<(&Claimed, i64, String)> = batch
            .iter()
            .copied()
            .filter(|c| !out.contains_key(&c.id))
            .filter_map(|c| {
                Some((
                    c,
                    subject(c)?,
                    self.reasons.still_selected(c, source.dialect())?,
                ))
            })
            .collect();
        let subjects: Vec<(i64, &str)> = rechecked
            .iter()
            .map(|(_, id, condition)| (*id, condition.as_str()))
            .collect();
        let gone = source
            .no_longer_selected(&subjects)
            .await
            .map_err(|e| BatchError(e.to_string()))?;
        for (c, id, _) in &rechecked {
            if gone.contains(id) {
                out.insert(c.id, self.reasons.unselected_why(c, now));
            }
        }
        Ok(out)
    }
}

/// Where one waiting retirement stands.
struct Waiting {
    end: DateTime<Utc>,
    due: usize,
    next: DateTime<Utc>,
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
        let mut waiting: Vec<(&Claimed, Waiting)> = Vec::new();
        for c in batch {
            let policy = match self.reasons.fit(c) {
                Ok(policy) => policy,
                Err(error) => {
                    results.insert(c.id, StageResult::new(Outcome::Fail { error }));
                    continue;
                }
            };
            let Some(end) = policy.rule.ends(c.warned_at, c.created_at) else {
                results.insert(
                    c.id,
                    StageResult::new(Outcome::Fail {
                        error: "no warning was recorded, so the grace period cannot start (the warning stage must come first)".into(),
                    }),
                );
                continue;
            };
            let (due, next) = match c.warned_at {
                Some(warned) if policy.rule.required => {
                    reminders_due(warned, policy.rule.hold, &policy.reminders, now)
                }
                _ => (0, end),
            };
            waiting.push((c, Waiting { end, due, next }));
        }
        let cancelled = if self.settings.recheck {
            let claimed: Vec<&Claimed> = waiting.iter().map(|(c, _)| *c).collect();
            self.cancelled(&claimed, now).await?
        } else {
            HashMap::new()
        };
        let mut remind: Vec<Claimed> = Vec::new();
        let mut stands: HashMap<i64, Waiting> = HashMap::new();
        for (c, w) in waiting {
            if let Some(why) = cancelled.get(&c.id) {
                results.insert(c.id, StageResult::new(Outcome::Cancel { why: why.clone() }));
                continue;
            }
            if now >= w.end {
                results.insert(
                    c.id,
                    StageResult::new(Outcome::Done).with_detail(
                        json!({ "grace_ended": w.end, "rechecked": self.settings.recheck }),
                    ),
                );
                continue;
            }
            if w.due > c.reminders_sent.max(0) as usize {
                // Only the latest due reminder is sent: after downtime, one message, not a burst.
                remind.push(c.clone());
                stands.insert(c.id, w);
            } else {
                results.insert(c.id, wait(w.next, w.end, c.reminders_sent, None));
            }
        }
        if let (Some(notifier), false) = (&self.notifier, remind.is_empty()) {
            let template = |c: &Claimed| {
                self.reasons
                    .policy(c)
                    .map(|p| p.reminder_template.clone())
                    .unwrap_or_default()
            };
            let ends: HashMap<i64, DateTime<Utc>> =
                stands.iter().map(|(id, w)| (*id, w.end)).collect();
            let sent = notifier
                .send_all(
                    &remind,
                    template,
                    // One Message-ID per reminder, the same if it is resent.
                    |c| format!("{}.{}.{}", c.id, template(c), c.reminders_sent + 1),
                    |c| ends.get(&c.id).copied().unwrap_or(now),
                )
                .await;
            // The warning was delivered; a reminder that cannot be is recorded and the
            // grace period goes on (or stops, if the operator asked for that).
            let policy = notifier.config.on_undeliverable;
            for (id, sent) in sent {
                let Some(w) = stands.get(&id) else {
                    continue;
                };
                let result = sent.outcome(policy, "reminder undeliverable", |detail| {
                    wait(w.next, w.end, w.due as i32, Some(detail))
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
