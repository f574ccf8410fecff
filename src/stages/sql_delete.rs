//! The sql_delete handler: retires a batch from a relational target in one transaction.

use super::{BatchError, Handler};
use crate::clock::Clock;
use crate::domain::{Outcome, StageResult, deletion_hold};
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
    grace: std::time::Duration,
    clock: Arc<dyn Clock>,
    /// The source, to re-read exclusions just before a batch when the target's own
    /// transaction cannot (its root table is not the source's).
    source: Option<Arc<SourceReader>>,
}

impl SqlDeleteHandler {
    /// A handler on a connected target; nothing is deleted before `warned_at + grace`, nor
    /// anyone the source excludes now (re-read through `source` when given).
    pub fn new(
        target: Arc<Target>,
        grace: std::time::Duration,
        clock: Arc<dyn Clock>,
        source: Option<Arc<SourceReader>>,
    ) -> Self {
        Self {
            target,
            grace,
            clock,
            source,
        }
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
        for c in batch {
            // Invariant 2, whatever the pipeline: no deletion without notice and grace.
            if let Some(hold) = deletion_hold(&c.reason, c.warned_at, self.grace, now) {
                results.insert(c.id, StageResult::new(hold));
                continue;
            }
            match c.subject.trim().parse::<i64>() {
                Ok(id) => {
                    by_subject.entry(id).or_default().push(c.id);
                    emails.insert(id, c.email.clone());
                    subjects.push(Subject {
                        id,
                        // A requested retirement is not cancelled by activity; an inactive one is,
                        // if the subject logged in after the warning (or after it was opened).
                        active_after: (!c.reason.is_requested())
                            .then(|| c.warned_at.unwrap_or(c.created_at)),
                        // An operator's override at enqueue holds here too.
                        check_exclusions: !c.exclusion_override,
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
        let mut report = self
            .target
            .retire(&subjects)
            .await
            .map_err(|e| BatchError(e.to_string()))?;
        for (id, why) in excluded {
            report.subjects.insert(id, SubjectResult::Excluded(why));
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
