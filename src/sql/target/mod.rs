//! A relational target: connection, foreign-key introspection, and the set-based,
//! transactional retirement of a batch of subjects.

mod schema;

use super::plan::{self, Action, Plan, Value};
use super::render;
use crate::db::Dialect;
use crate::sql::pool::{Pool, with_pool};
use chrono::{DateTime, NaiveDateTime, Utc};
use schema::{check_columns, check_transactional, introspect};
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};

/// What went wrong with a target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The URL is missing or unusable.
    #[error("target {target}: {problem}")]
    Config {
        /// Target name.
        target: String,
        /// What is wrong and what to do.
        problem: String,
    },
    /// The database could not be reached.
    #[error("target {target}: cannot connect to {url}: {source}")]
    Connect {
        /// Target name.
        target: String,
        /// URL, password redacted.
        url: String,
        /// Driver error.
        source: sqlx::Error,
    },
    /// The schema does not fit the config.
    #[error("target {target}: {problem}")]
    Schema {
        /// Target name.
        target: String,
        /// What does not fit.
        problem: String,
    },
    /// A statement failed; the batch's transaction was rolled back.
    #[error(
        "target {target}: {context} failed (the transaction was rolled back; nothing was deleted): {source}"
    )]
    Query {
        /// Target name.
        target: String,
        /// What was being done.
        context: String,
        /// Driver error.
        source: sqlx::Error,
    },
}

impl crate::error::Classified for TargetError {
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            TargetError::Config { .. } | TargetError::Schema { .. } => ErrorKind::Config,
            TargetError::Connect { .. } | TargetError::Query { .. } => ErrorKind::Unreachable,
        }
    }
}

/// `ids` padded to the next power of two by repeating the last one, which changes no
/// `IN (…)` result: a target then sees a handful of statement texts instead of one per
/// batch size, and its prepared statements stay cached (see `pool::STATEMENT_CACHE`).
fn padded(ids: &[i64]) -> Vec<i64> {
    let mut out = ids.to_vec();
    if let Some(&last) = ids.last() {
        out.resize(ids.len().next_power_of_two(), last);
    }
    out
}

/// A query with a rendered statement's values and its id lists bound.
macro_rules! bound {
    ($rendered:expr, $ids:expr) => {{
        let rendered = $rendered;
        let mut query = sqlx::query(sqlx::AssertSqlSafe(rendered.sql));
        for value in &rendered.leading {
            query = match value {
                Value::Int(n) => query.bind(*n),
                Value::Text(t) => query.bind(t.clone()),
                Value::Null => query.bind(None::<i64>),
            };
        }
        for _ in 0..rendered.id_lists {
            for id in $ids {
                query = query.bind(*id);
            }
        }
        query
    }};
}

/// Runs a `(subject, n)` query in the transaction.
macro_rules! per_subject {
    ($tx:expr, $rendered:expr, $ids:expr) => {
        bound!($rendered, $ids)
            .fetch_all(&mut *$tx)
            .await
            .and_then(|rows| {
                rows.iter()
                    .map(|r| Ok((r.try_get::<i64, _>("subject")?, r.try_get::<i64, _>("n")?)))
                    .collect::<Result<Vec<(i64, i64)>, sqlx::Error>>()
            })
    };
}

/// A subject handed to the target: its id and the time after which activity cancels it.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    /// Root key value.
    pub id: i64,
    /// Activity after this time cancels the deletion; `None` skips the check (requested).
    pub active_after: Option<DateTime<Utc>>,
    /// Whether the source's exclusions are re-checked (false only when an operator
    /// overrode them for this subject).
    pub check_exclusions: bool,
    /// SQL on the root table that must still hold (the rule that selected the subject:
    /// still unconfirmed, its predicate), checked in the deleting transaction when the
    /// root table is the source's; `None`: nothing beyond activity.
    pub still_selected: Option<String>,
}

/// The result for one subject of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum SubjectResult {
    /// Deleted (or already gone).
    Retired {
        /// Whether the root row was already gone.
        already_gone: bool,
        /// This subject's rows per `table (action)`, counted in the deleting transaction
        /// just before each statement.
        rows: BTreeMap<String, u64>,
    },
    /// Active after the reference time: not deleted.
    Active(DateTime<Utc>),
    /// Excluded now (made staff, allow-listed since it was opened): not deleted.
    Excluded(String),
    /// No longer matches the rule that selected it (an unverified account confirmed its
    /// email): not deleted.
    NoLongerSelected,
    /// Has rows behind protected links: not deleted. Every such link, with its rows.
    Protected(Vec<(String, u64)>),
    /// Not deleted, and why (rows of other users that cannot be kept, the placeholder
    /// account).
    Refused(String),
}

impl SubjectResult {
    /// `protected: a.b (2 rows), c.d (1 row)`, as events and status show it.
    pub fn protected_reason(links: &[(String, u64)]) -> String {
        let named: Vec<String> = links
            .iter()
            .map(|(link, n)| format!("{link} ({n} row{})", if *n == 1 { "" } else { "s" }))
            .collect();
        format!("protected: {}", named.join(", "))
    }
}

impl SubjectResult {
    /// Deleted by this batch (not already gone, not kept).
    pub fn deleted_now(&self) -> bool {
        matches!(
            self,
            SubjectResult::Retired {
                already_gone: false,
                ..
            }
        )
    }
}

/// The outcome of one batch: per subject, and rows affected per table for the batch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchReport {
    /// Per subject id.
    pub subjects: HashMap<i64, SubjectResult>,
    /// Rows changed per `table (action)` for all the subjects deleted in this batch.
    pub rows: BTreeMap<String, u64>,
    /// Subjects deleted together in this batch.
    pub deleted: usize,
    /// Rows each statement changed, in order: link, action, rows.
    pub steps: Vec<(String, String, u64)>,
}

/// A connected target with its plan.
pub struct Target {
    /// Target name.
    pub name: String,
    /// Dialect.
    pub dialect: Dialect,
    /// Pool.
    pub pool: Pool,
    /// Deletion plan.
    pub plan: Plan,
    /// Activity column of the root table.
    pub activity_column: String,
    /// The source's exclusions, re-checked in the deleting transaction.
    exclusions: Option<crate::config::Source>,
    /// Bounds the deleting transactions running at once on this target.
    slots: tokio::sync::Semaphore,
}

fn redact(url: &str) -> String {
    crate::db::redact_url(url)
}

impl Target {
    /// Connects, introspects the foreign keys and builds the plan; every problem names
    /// the target and the table or column at fault.
    pub async fn connect(config: &crate::config::Target) -> Result<Self, TargetError> {
        let url = config.url.clone().ok_or_else(|| TargetError::Config {
            target: config.name.clone(),
            problem: format!("no URL: set {} (or url in pipeline.toml)", config.url_env()),
        })?;
        Dialect::from_url(&url).map_err(|problem| TargetError::Config {
            target: config.name.clone(),
            problem,
        })?;
        // Pool::connect, so MySQL targets get READ COMMITTED like every other pool.
        // One connection per deleting transaction, and one for previews and checks.
        let connections = u32::try_from(config.parallel_batches + 1).unwrap_or(u32::MAX);
        let (dialect, pool) =
            Pool::connect(&url, connections)
                .await
                .map_err(|source| TargetError::Connect {
                    target: config.name.clone(),
                    url: redact(&url),
                    source,
                })?;
        let schema_error = |problem: String| TargetError::Schema {
            target: config.name.clone(),
            problem,
        };
        let (links, columns) = introspect(dialect, &pool)
            .await
            .map_err(|e| schema_error(format!("cannot read the schema: {e}")))?;
        check_columns(
            dialect,
            &config.rules,
            &config.activity_column,
            &links,
            &columns,
        )
        .map_err(schema_error)?;
        let plan = plan::build(&links, &config.rules).map_err(|e| schema_error(e.to_string()))?;
        check_transactional(&pool, &plan)
            .await
            .map_err(|e| schema_error(format!("cannot read the table engines: {e}")))?
            .map_or(Ok(()), |problem| Err(schema_error(problem)))?;
        if let Some(placeholder) = plan.reassign_to {
            let sql = format!(
                "SELECT COUNT(*) FROM {} WHERE {} = {}",
                dialect.quote(&plan.root_table),
                dialect.quote(&plan.root_key),
                dialect.param(1)
            );
            let found: i64 = with_pool!(&pool, p => sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(placeholder)
                .fetch_one(p)
                .await
                .and_then(|r| r.try_get(0)))
            .map_err(|e| schema_error(format!("cannot look up reassign_to: {e}")))?;
            if found == 0 {
                return Err(schema_error(format!(
                    "reassign_to = {placeholder}: no such row in {}.{} (create the placeholder account first)",
                    plan.root_table, plan.root_key
                )));
            }
        }
        Ok(Self {
            name: config.name.clone(),
            dialect,
            pool,
            plan,
            activity_column: config.activity_column.clone(),
            exclusions: config.exclusions.clone(),
            slots: tokio::sync::Semaphore::new(config.parallel_batches),
        })
    }

    /// Whether the deleting transaction re-checks the source's exclusions (the root
    /// table is the source's table).
    pub fn rechecks_exclusions(&self) -> bool {
        self.exclusions.is_some()
    }

    fn query_error(
        &self,
        context: impl Into<String>,
    ) -> impl FnOnce(sqlx::Error) -> TargetError + '_ {
        let context = context.into();
        move |source| TargetError::Query {
            target: self.name.clone(),
            context,
            source,
        }
    }

    /// Retires a batch in one transaction: locks and re-checks the root rows, skips
    /// active and protected subjects, deletes the rest set-based. Any error rolls back.
    pub async fn retire(&self, subjects: &[Subject]) -> Result<BatchReport, TargetError> {
        let _slot = self.slots.acquire().await;
        let mut attempt = 1;
        loop {
            match self.retire_once(subjects, true).await {
                // Batches touching the same rows (actor columns of each other's users) may
                // deadlock; the database rolled the victim back whole, so it is rerun at once.
                Err(TargetError::Query { source, .. })
                    if attempt < DEADLOCK_RETRIES && is_deadlock(&source) =>
                {
                    tracing::info!(target = %self.name, attempt, "batch deadlocked, rerunning it");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn retire_once(
        &self,
        subjects: &[Subject],
        commit: bool,
    ) -> Result<BatchReport, TargetError> {
        let d = self.dialect;
        let plan = &self.plan;
        let mut report = BatchReport::default();
        if subjects.is_empty() {
            return Ok(report);
        }
        let ids: Vec<i64> = subjects.iter().map(|s| s.id).collect();
        with_pool!(&self.pool, pool => {
            let mut tx = match d {
                Dialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
                _ => pool.begin().await,
            }
            .map_err(self.query_error("begin"))?;
            // Lock the root rows, then decide with what they say now (invariant 1).
            let ids = padded(&ids);
            let exclusions = self.exclusions.as_ref().map(|s| (s.exclude.as_str(), s.email_column.as_str()));
            // The rules' conditions are on the source's table: only checked here when it is the root.
            let mut conditions: Vec<&str> = Vec::new();
            if self.exclusions.is_some() {
                for condition in subjects.iter().filter_map(|s| s.still_selected.as_deref()) {
                    if !conditions.contains(&condition) {
                        conditions.push(condition);
                    }
                }
            }
            let rows = bound!(render::lock_roots(d, plan, &self.activity_column, exclusions, &conditions, ids.len()), &ids)
                .fetch_all(&mut *tx)
                .await
                .map_err(self.query_error(format!("lock {}", plan.root_table)))?;
            let mut present: HashMap<i64, (Option<DateTime<Utc>>, Option<&str>)> = HashMap::new();
            let mut unselected: Vec<(i64, usize)> = Vec::new();
            for row in &rows {
                let id: i64 = row.try_get("subject").map_err(self.query_error("read a root key"))?;
                let activity = row
                    .try_get::<Option<DateTime<Utc>>, _>("activity")
                    .or_else(|_| row.try_get::<Option<NaiveDateTime>, _>("activity").map(|t| t.map(|t| t.and_utc())))
                    .map_err(self.query_error(format!("read {}.{}", plan.root_table, self.activity_column)))?;
                let excluded = match &self.exclusions {
                    None => None,
                    Some(source) => {
                        let flag = row
                            .try_get::<i64, _>("excluded")
                            .or_else(|_| row.try_get::<i32, _>("excluded").map(i64::from))
                            .map_err(self.query_error("read the exclusion re-check"))?;
                        let email: Option<String> = row.try_get("email").map_err(self.query_error("read the email column"))?;
                        if flag != 0 {
                            Some("excluded by source.exclude")
                        } else if source.allowed(id, email.as_deref()) {
                            Some("allow-listed in [source]")
                        } else {
                            None
                        }
                    }
                };
                for k in 0..conditions.len() {
                    let column = format!("still_{k}");
                    let still = row
                        .try_get::<i64, _>(column.as_str())
                        .or_else(|_| row.try_get::<i32, _>(column.as_str()).map(i64::from))
                        .map_err(self.query_error("read the rule re-check"))?;
                    if still == 0 {
                        unselected.push((id, k));
                    }
                }
                present.insert(id, (activity, excluded));
            }
            let mut go: Vec<i64> = Vec::new();
            for s in subjects {
                let result = match present.get(&s.id) {
                    None => SubjectResult::Retired { already_gone: true, rows: BTreeMap::new() },
                    Some(_) if plan.reassign_to == Some(s.id) => SubjectResult::Refused(format!(
                        "{}.{} = {} is this target's reassign_to placeholder account: it is never retired",
                        plan.root_table, plan.root_key, s.id
                    )),
                    // Made staff or allow-listed since it was opened (invariant 3).
                    Some((_, Some(why))) if s.check_exclusions => SubjectResult::Excluded(format!("{why} (re-checked before deleting)")),
                    Some(_) if s.still_selected.as_deref().is_some_and(|c| {
                        unselected.iter().any(|(id, k)| *id == s.id && conditions[*k] == c)
                    }) => SubjectResult::NoLongerSelected,
                    Some((Some(at), _)) if s.active_after.is_some_and(|after| *at > after) => SubjectResult::Active(*at),
                    Some(_) => {
                        go.push(s.id);
                        continue;
                    }
                };
                report.subjects.insert(s.id, result);
            }
            // Protected rows keep a subject untouched (invariant 4); every protected
            // column it has rows behind is named, with the count.
            if !go.is_empty() && !plan.protect.is_empty() {
                let bound = padded(&go);
                let mut protected: HashMap<i64, Vec<(String, u64)>> = HashMap::new();
                for step in &plan.protect {
                    let counted = per_subject!(tx, render::rows_per_subject(d, plan, step, bound.len()), &bound)
                        .map_err(self.query_error(format!("check protected {}", step.link)))?;
                    for (id, n) in counted {
                        protected.entry(id).or_default().push((step.link.clone(), n.max(0) as u64));
                    }
                }
                go.retain(|id| !protected.contains_key(id));
                for (id, links) in protected {
                    report.subjects.insert(id, SubjectResult::Protected(links));
                }
            }
            // Rows of users who stay, behind a NOT NULL link that cannot be reassigned: their
            // subjects fail before anything is deleted (invariant 5). Failing one keeps more
            // rows of the others, so this runs until nothing changes.
            while !go.is_empty() && !plan.conflicts.is_empty() {
                let bound = padded(&go);
                let mut refused: BTreeMap<i64, Vec<String>> = BTreeMap::new();
                for conflict in &plan.conflicts {
                    let counted = per_subject!(tx, render::conflicts_per_subject(d, plan, conflict, bound.len()), &bound)
                        .map_err(self.query_error(format!("check kept rows of {}", conflict.step.link)))?;
                    for (id, n) in counted {
                        refused.entry(id).or_default().push(format!(
                            "{} ({n} rows of users not being retired, through {}; the column is NOT NULL: set reassign_to on the target, or protect the link)",
                            conflict.step.link,
                            conflict.columns.join(", ")
                        ));
                    }
                }
                if refused.is_empty() {
                    break;
                }
                go.retain(|id| !refused.contains_key(id));
                for (id, why) in refused {
                    report.subjects.insert(id, SubjectResult::Refused(format!("other users' rows: {}", why.join("; "))));
                }
            }
            if !go.is_empty() {
                let bound = padded(&go);
                let mut per_subject: HashMap<i64, BTreeMap<String, u64>> = HashMap::new();
                for step in &plan.steps {
                    let label = format!("{} ({})", step.table(), action_name(&step.action));
                    // Counted inside the transaction, after the root rows were locked: rows
                    // linked straight to a locked root cannot be added before the commit.
                    // A lone subject's count is the statement's own row count.
                    if go.len() > 1 {
                        let counted = per_subject!(tx, render::rows_per_subject(d, plan, step, bound.len()), &bound)
                            .map_err(self.query_error(format!("count {}", step.link)))?;
                        for (id, n) in counted {
                            *per_subject.entry(id).or_default().entry(label.clone()).or_default() += n.max(0) as u64;
                        }
                    }
                    let started = std::time::Instant::now();
                    let done = bound!(render::step(d, plan, step, bound.len()), &bound)
                        .execute(&mut *tx)
                        .await
                        .map_err(self.query_error(format!("{} {}", action_name(&step.action), step.link)))?;
                    tracing::debug!(target = %self.name, link = %step.link, action = action_name(&step.action),
                        rows = done.rows_affected(), ms = started.elapsed().as_millis() as u64, "plan step");
                    report.steps.push((step.link.clone(), action_name(&step.action).to_string(), done.rows_affected()));
                    if done.rows_affected() > 0 {
                        if let [only] = go.as_slice() {
                            per_subject.entry(*only).or_default().insert(label.clone(), done.rows_affected());
                        }
                        *report.rows.entry(label).or_default() += done.rows_affected();
                    }
                }
                let done = bound!(render::delete_roots(d, plan, bound.len()), &bound)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.query_error(format!("delete from {}", plan.root_table)))?;
                let root = format!("{} (delete)", plan.root_table);
                report.rows.insert(root.clone(), done.rows_affected());
                report.deleted = go.len();
                for id in &go {
                    let mut rows = per_subject.remove(id).unwrap_or_default();
                    rows.insert(root.clone(), 1);
                    report.subjects.insert(*id, SubjectResult::Retired { already_gone: false, rows });
                }
            }
            if commit {
                tx.commit().await.map_err(self.query_error("commit"))?;
            } else {
                tx.rollback().await.map_err(self.query_error("roll back"))?;
            }
        });
        Ok(report)
    }

    /// What retiring one subject would do, changing nothing (`lethe plan`): the verdict
    /// and the rows of each step. When the subject would be retired, the deletion runs in a
    /// transaction that is rolled back, so each count is what that statement changes; when
    /// it would be refused, each count is what the step's rows match.
    pub async fn preview(&self, subject: i64) -> Result<Preview, TargetError> {
        let _slot = self.slots.acquire().await;
        let report = self
            .retire_once(
                &[Subject {
                    id: subject,
                    active_after: None,
                    check_exclusions: true,
                    still_selected: None,
                }],
                false,
            )
            .await?;
        let verdict = report
            .subjects
            .get(&subject)
            .cloned()
            .unwrap_or(SubjectResult::Retired {
                already_gone: true,
                rows: BTreeMap::new(),
            });
        if report.deleted > 0 {
            return Ok(Preview {
                verdict,
                steps: report.steps,
                exact: true,
            });
        }
        let d = self.dialect;
        let plan = &self.plan;
        let mut steps = Vec::new();
        with_pool!(&self.pool, pool => {
            for step in plan.protect.iter().chain(&plan.steps) {
                let counted = bound!(render::rows_per_subject(d, plan, step, 1), &[subject])
                    .fetch_all(pool)
                    .await
                    .and_then(|rows| rows.iter().map(|r| r.try_get::<i64, _>("n")).sum::<Result<i64, _>>())
                    .map_err(self.query_error(format!("count {}", step.link)))?;
                steps.push((step.link.clone(), action_name(&step.action).to_string(), counted.max(0) as u64));
            }
        });
        Ok(Preview {
            verdict,
            steps,
            exact: false,
        })
    }
}

/// What `lethe plan` shows for one subject and target.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    /// What a retirement would do: retire it, or keep it and why.
    pub verdict: SubjectResult,
    /// Per step: link, action, rows.
    pub steps: Vec<(String, String, u64)>,
    /// Whether the counts are what each statement changes (the deletion was run and rolled
    /// back) rather than what each step matches.
    pub exact: bool,
}

/// How many times a deadlocked batch is run before the error goes to the driver.
const DEADLOCK_RETRIES: u32 = 5;

/// Deadlock or serialization failure: SQLSTATE 40001 (MySQL 1213, PostgreSQL) or 40P01.
fn is_deadlock(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01")))
}

/// A short name for an action, for events and `plan`.
pub fn action_name(action: &Action) -> &'static str {
    match action {
        Action::Delete => "delete",
        Action::Nullify(_) => "nullify",
        Action::Anonymize(_) => "anonymize",
        Action::Protect => "protect",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists_pad_to_a_power_of_two_with_the_last_id() {
        assert_eq!(padded(&[]), Vec::<i64>::new());
        assert_eq!(padded(&[7]), vec![7]);
        assert_eq!(padded(&[1, 2, 3]), vec![1, 2, 3, 3]);
        assert_eq!(padded(&(1..=500).collect::<Vec<_>>()).len(), 512);
    }
}
