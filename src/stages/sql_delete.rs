//! The sql_delete handler: retires a batch from a relational target in one transaction.

use super::{BatchError, Handler, Reasons};
use crate::clock::Clock;
use crate::domain::{Outcome, StageResult};
use crate::sql::source::SourceReader;
use crate::sql::target::{Subject, SubjectResult, Target};
use crate::store::Claimed;
use async_trait::async_trait;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// Deletes subjects from one target.
pub struct SqlDeleteHandler {
    target: Arc<Target>,
    reasons: Arc<Reasons>,
    clock: Arc<dyn Clock>,
    /// The source, to re-read exclusions just before a batch when the target's own
    /// transaction cannot (its root table is not the source's).
    source: Option<Arc<SourceReader>>,
}

impl SqlDeleteHandler {
    /// A handler on a connected target; nothing is deleted before the hold of the
    /// retirement's reason is over, nor anyone the source excludes now or the rule that
    /// selected them no longer selects (re-read through `source` when given).
    pub fn new(
        target: Arc<Target>,
        reasons: Arc<Reasons>,
        clock: Arc<dyn Clock>,
        source: Option<Arc<SourceReader>>,
    ) -> Self {
        Self {
            target,
            reasons,
            clock,
            source,
        }
    }

    /// Subjects of `subjects` whose rule no longer selects them, read from the source
    /// before the batch (the target's transaction checks it when its root is the source's).
    async fn unselected_now(&self, subjects: &[Subject]) -> Result<Vec<i64>, BatchError> {
        let Some(reader) = &self.source else {
            return Ok(Vec::new());
        };
        let rechecked: Vec<(i64, &str)> = subjects
            .iter()
            .filter_map(|s| Some((s.id, s.still_selected.as_deref()?)))
            .collect();
        let gone = reader
            .no_longer_selected(&rechecked)
            .await
            .map_err(|e| BatchError(format!("re-checking the rule: {e}")))?;
        Ok(gone.into_iter().collect())
    }

    /// Subjects of `subjects` the source excludes now (made staff, allow-listed), with why.
    async fn excluded_now(
        &self,
        subjects: &[Subject],
        emails: &HashMap<i64, Option<String>>,
    ) -> Result<HashMap<i64, String>, BatchError> {
        let Some(reader) = &self.source else {
            return Ok(HashMap::new());
        };
        let ids: Vec<i64> = subjects
            .iter()
            .filter(|s| s.check_exclusions)
            .map(|s| s.id)
            .collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let subjects: Vec<(i64, Option<&str>)> = ids
            .iter()
            .map(|id| (*id, emails.get(id).and_then(|e| e.as_deref())))
            .collect();
        let rules = reader
            .exclusion_rules(&subjects)
            .await
            .map_err(|e| BatchError(format!("re-checking the exclusions: {e}")))?;
        Ok(rules
            .into_iter()
            .map(|(id, rule)| {
                (
                    id,
                    format!("excluded by source.{rule} (re-checked before deleting)"),
                )
            })
            .collect())
    }
}

#[async_trait]
impl Handler for SqlDeleteHandler {
    async fn handle(&self, batch: &[Claimed]) -> Result<HashMap<i64, StageResult>, BatchError> {
        let mut results = HashMap::new();
        let mut subjects = Vec::new();
        let mut by_subject: HashMap<i64, Vec<i64>> = HashMap::new();
        let mut emails: HashMap<i64, Option<String>> = HashMap::new();
        let now = self.clock.now();
        let mut claimed_of: HashMap<i64, &Claimed> = HashMap::new();
        // The rules' conditions in the dialect of whoever checks them.
        let dialect = match &self.source {
            Some(reader) => reader.dialect(),
            None => self.target.dialect,
        };
        for c in batch {
            // Invariant 2, whatever the pipeline: no deletion before the reason's policy allows.
            if let Some(held) = self.reasons.hold(c, now) {
                results.insert(c.id, held);
                continue;
            }
            match c.subject.trim().parse::<i64>() {
                Ok(id) => {
                    by_subject.entry(id).or_default().push(c.id);
                    emails.insert(id, c.email.clone());
                    claimed_of.insert(id, c);
                    subjects.push(Subject {
                        id,
                        // A requested retirement is not cancelled by activity; an inactive one is,
                        // if the subject logged in after the warning (or after it was opened).
                        active_after: self
                            .reasons
                            .activity_cancels(c)
                            .then(|| c.warned_at.unwrap_or(c.created_at)),
                        // An operator's override at enqueue holds here too.
                        check_exclusions: !c.exclusion_override,
                        still_selected: self.reasons.still_selected(c, dialect),
                    });
                }
                Err(_) => {
                    results.insert(
                        c.id,
                        StageResult::new(Outcome::Fail {
                            error: format!(
                                "target {}: subject id is not an integer",
                                self.target.name
                            ),
                        }),
                    );
                }
            }
        }
        let excluded = self.excluded_now(&subjects, &emails).await?;
        subjects.retain(|s| !excluded.contains_key(&s.id));
        let unselected = self.unselected_now(&subjects).await?;
        subjects.retain(|s| !unselected.contains(&s.id));
        let mut report = self
            .target
            .retire(&subjects)
            .await
            .map_err(|e| BatchError(e.to_string()))?;
        for (id, why) in excluded {
            report.subjects.insert(id, SubjectResult::Excluded(why));
        }
        for id in unselected {
            report.subjects.insert(id, SubjectResult::NoLongerSelected);
        }
        for (subject, retirements) in by_subject {
            let result = match report.subjects.get(&subject) {
                Some(SubjectResult::Retired { already_gone, rows }) => {
                    StageResult::new(Outcome::Done).with_detail(json!({
                        "target": self.target.name,
                        "already_gone": already_gone,
                        "rows": rows,
                        "batch_subjects": report.deleted,
                    }))
                }
                Some(SubjectResult::Active(at)) => StageResult::new(Outcome::Cancel {
                    why: format!("active again at {}", at.to_rfc3339()),
                }),
                Some(SubjectResult::Excluded(why)) => StageResult::new(Outcome::Cancel {
                    why: format!("target {}: {why}", self.target.name),
                }),
                Some(SubjectResult::NoLongerSelected) => StageResult::new(Outcome::Cancel {
                    why: match claimed_of.get(&subject) {
                        Some(c) => self.reasons.unselected_why(c, now),
                        None => "no longer selected by its rule".into(),
                    },
                }),
                Some(SubjectResult::Protected(links)) => StageResult::new(Outcome::Fail {
                    error: SubjectResult::protected_reason(links),
                })
                .with_detail(json!({
                    "target": self.target.name,
                    "protected": links.iter().map(|(link, n)| json!({"link": link, "rows": n})).collect::<Vec<_>>(),
                })),
                Some(SubjectResult::Refused(why)) => StageResult::new(Outcome::Fail {
                    error: format!("target {}: {why}", self.target.name),
                })
                .with_detail(json!({ "target": self.target.name })),
                None => StageResult::new(Outcome::Retry {
                    error: format!("target {}: no result for this subject", self.target.name),
                }),
            };
            for id in retirements {
                results.insert(id, result.clone());
            }
        }
        Ok(results)
    }
}
