//! The scan: page through the source for each selection rule's subjects and open their
//! retirements, idempotently, behind each rule's blast-radius guard.

use crate::config::{Pipeline, Rule, Select, Source};
use crate::domain::{StateGraph, check_blast_radius};
use crate::pii::HashKey;
use crate::sql::source::{Inactive, SourceError, SourceReader};
use crate::store::{EnqueueOutcome, NewRetirement, ScanRecord, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// What a scan found and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ScanReport {
    /// The counts, as recorded.
    #[serde(flatten)]
    pub counts: ScanRecord,
    /// The first new candidates (ids only), for `--dry-run`.
    pub first: Vec<i64>,
    /// Every new candidate and why it is one (dry runs only; empty otherwise).
    pub candidates: Vec<Candidate>,
    /// Whether anything was written.
    pub dry_run: bool,
}

/// A user a scan would open a retirement for; serialized with `why` it is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The source's primary key.
    pub id: i64,
    /// What its rule selects by.
    pub select: Select,
    /// Last login; `None`: never logged in.
    pub last_login: Option<chrono::NaiveDateTime>,
    /// Sign-up.
    pub date_joined: Option<chrono::NaiveDateTime>,
}

impl Candidate {
    fn of(user: &Inactive, select: Select) -> Self {
        Self {
            id: user.id,
            select,
            last_login: user.last_login,
            date_joined: user.date_joined,
        }
    }

    /// `inactive since <last login>`, or `never logged in since <sign-up>`. Formatted only
    /// when shown: a dry run of a large source holds many candidates.
    pub fn why(&self) -> String {
        let at = |t: chrono::NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S").to_string();
        match self.select {
            Select::Unverified => {
                return match self.date_joined {
                    Some(joined) => format!("never confirmed, signed up {}", at(joined)),
                    None => "never confirmed".to_string(),
                };
            }
            Select::Where => return "matches the rule's predicate".to_string(),
            Select::Inactive => {}
        }
        match (self.last_login, self.date_joined) {
            (Some(login), _) => format!("inactive since {}", at(login)),
            (None, Some(joined)) => format!("never logged in since {}", at(joined)),
            (None, None) => "never logged in".to_string(),
        }
    }
}

impl Serialize for Candidate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Candidate", 4)?;
        s.serialize_field("id", &self.id)?;
        s.serialize_field("last_login", &self.last_login)?;
        s.serialize_field("date_joined", &self.date_joined)?;
        s.serialize_field("why", &self.why())?;
        s.end()
    }
}

/// Why a scan could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The rule asked for cannot run (unknown, disabled) or there is no `[source]`.
    #[error("scan: {0}")]
    Rule(String),
}

impl crate::error::Classified for ScanError {
    fn kind(&self) -> crate::error::ErrorKind {
        match self {
            ScanError::Source(e) => crate::error::Classified::kind(e),
            ScanError::Store(e) => crate::error::Classified::kind(e),
            ScanError::Rule(_) => crate::error::ErrorKind::Config,
        }
    }
}

/// Options of one scan.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Write nothing; report what would be enqueued.
    pub dry_run: bool,
    /// Consider at most this many candidates (per rule).
    pub limit: Option<usize>,
    /// Run only this rule (enabled or not); `None`: every enabled rule, in order.
    pub rule: Option<String>,
}

/// The rules a scan with `options` runs, in order, or why none can run.
pub fn rules_to_run<'a>(
    pipeline: &'a Pipeline,
    rule: Option<&str>,
) -> Result<Vec<&'a Rule>, String> {
    match rule {
        None => Ok(pipeline.rules.iter().filter(|r| r.enabled).collect()),
        Some(name) => match pipeline.rule(name) {
            Some(r) if r.enabled => Ok(vec![r]),
            Some(_) => Err(format!(
                "rule {name:?} is disabled (enabled = false in pipeline.toml): it runs nothing"
            )),
            None => Err(format!(
                "no rule is called {name:?} (rules: {})",
                pipeline
                    .rules
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        },
    }
}

/// What one id range of the source held.
#[derive(Default)]
struct RangeRead {
    candidates: Vec<Inactive>,
    inactive: i64,
    excluded: i64,
}

/// Pages through `after` < id <= `upto` by key, keeping the users not excluded nor
/// allow-listed, at most `limit` of them.
#[allow(clippy::too_many_arguments)]
async fn read_range(
    reader: &SourceReader,
    source: &Source,
    rule: &Rule,
    mut after: i64,
    upto: i64,
    cutoff: chrono::NaiveDateTime,
    limit: Option<usize>,
    with_times: bool,
) -> Result<RangeRead, SourceError> {
    let mut read = RangeRead::default();
    while after < upto {
        let page = reader
            .candidates_page(rule, after, upto, cutoff, source.batch_size, with_times)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        let full = page.len() == source.batch_size;
        for user in page {
            read.inactive += 1;
            if user.excluded || source.allowed(user.id, user.email.as_deref()) {
                read.excluded += 1;
                continue;
            }
            if limit.is_some_and(|limit| read.candidates.len() >= limit) {
                return Ok(read);
            }
            read.candidates.push(user);
        }
        if !full {
            break;
        }
    }
    Ok(read)
}

/// How long a starting daemon waits before its first scan: what is left of `interval`
/// since the last recorded scan (nothing when none is recorded or one is overdue; the whole
/// interval when the recorded one is in the future, a clock set back).
pub fn first_scan_delay(
    last: Option<DateTime<Utc>>,
    interval: std::time::Duration,
    now: DateTime<Utc>,
) -> std::time::Duration {
    let Some(last) = last else {
        return std::time::Duration::ZERO;
    };
    let elapsed = (now - last).to_std().unwrap_or(std::time::Duration::ZERO);
    interval.saturating_sub(elapsed)
}

/// Scans the source once for each rule `options` selects, in order. A subject an earlier
/// enabled rule also selects is that rule's (first rule wins, whichever runs first): a
/// later rule counts it as `overlap` and leaves it.
/// A refusal by a rule's blast-radius guard is not an error: its report says why in
/// `counts.refused` and that rule enqueues nothing.
pub async fn scan(
    store: &dyn Store,
    graph: &StateGraph,
    reader: &SourceReader,
    pipeline: &Pipeline,
    key: &HashKey,
    now: DateTime<Utc>,
    options: ScanOptions,
) -> Result<Vec<ScanReport>, ScanError> {
    let source = pipeline
        .source
        .as_ref()
        .ok_or_else(|| ScanError::Rule("pipeline.toml has no [source] to scan".into()))?;
    let rules = rules_to_run(pipeline, options.rule.as_deref()).map_err(ScanError::Rule)?;
    let mut reports = Vec::with_capacity(rules.len());
    for rule in rules {
        let earlier: Vec<&Rule> = pipeline
            .rules
            .iter()
            .take_while(|r| r.name != rule.name)
            .filter(|r| r.enabled)
            .collect();
        let run = RuleScan {
            store,
            graph,
            reader,
            source,
            rule,
            earlier,
            limits_at: rule.limits_at(pipeline.implicit_rule),
            key,
        };
        reports.push(run.scan(now, &options).await?);
    }
    Ok(reports)
}

/// One rule's scan and what it reads from.
struct RuleScan<'a> {
    store: &'a dyn Store,
    graph: &'a StateGraph,
    reader: &'a SourceReader,
    source: &'a Source,
    rule: &'a Rule,
    /// The enabled rules before it: their subjects are theirs.
    earlier: Vec<&'a Rule>,
    limits_at: String,
    key: &'a HashKey,
}

impl RuleScan<'_> {
    async fn scan(
        &self,
        now: DateTime<Utc>,
        options: &ScanOptions,
    ) -> Result<ScanReport, ScanError> {
        let (store, reader, source, rule, key) =
            (self.store, self.reader, self.source, self.rule, self.key);
        let started = std::time::Instant::now();
        let cutoff = crate::domain::before(now, rule.after).naive_utc();
        let mut counts = ScanRecord {
            started_at: now,
            rule: Some(rule.name.clone()),
            ..ScanRecord::default()
        };
        // The id range is read in two halves at once (the source's two threads scan where one
        // would), while the user count (the base of the share limit) runs beside them, each on
        // its own connection. A limited scan reads in order, one range, so it stops exactly.
        let halves = match (reader.id_range().await?, options.limit) {
            (Some((lo, hi)), None) => {
                let mid = ((i128::from(lo) + i128::from(hi)) / 2) as i64;
                [(i64::MIN, mid), (mid, i64::MAX)]
            }
            _ => [(i64::MIN, i64::MAX), (i64::MAX, i64::MAX)],
        };
        let read = |(after, upto)| {
            read_range(
                reader,
                source,
                rule,
                after,
                upto,
                cutoff,
                options.limit,
                options.dry_run,
            )
        };
        let (total, first_half, second_half) =
            tokio::join!(reader.count_users(), read(halves[0]), read(halves[1]));
        let total = total?;
        let mut candidates: Vec<Inactive> = Vec::new();
        for half in [first_half?, second_half?] {
            counts.inactive += half.inactive;
            counts.excluded += half.excluded;
            candidates.extend(half.candidates);
        }
        counts.seen = total;
        tracing::debug!(
            rule = %rule.name,
            ms = started.elapsed().as_millis() as u64,
            candidates = candidates.len(),
            "scan: pages read"
        );
        // First rule wins: a subject an earlier rule selects is that rule's.
        let before = candidates.len();
        for earlier in &self.earlier {
            let ids: Vec<i64> = candidates.iter().map(|c| c.id).collect();
            let cutoff = crate::domain::before(now, earlier.after).naive_utc();
            let theirs = reader.selected_by(earlier, cutoff, &ids).await?;
            candidates.retain(|c| !theirs.contains(&c.id));
        }
        counts.overlap = (before - candidates.len()) as i64;
        let subjects: Vec<String> = candidates.iter().map(|c| c.id.to_string()).collect();
        let open = store.open_among(&subjects).await?;
        counts.already_open = open.len() as i64;
        let new: Vec<&Inactive> = candidates
            .iter()
            .filter(|c| !open.contains(&c.id.to_string()))
            .collect();
        // Activity reported to lethe (`touch`) counts like a login the source does not show.
        let since = crate::domain::before(now, rule.after);
        let new: Vec<&Inactive> = if rule.select == Select::Inactive
            && store.any_activity_since(since).await?
        {
            let hashes: Vec<String> = new.iter().map(|c| key.subject(&c.id.to_string())).collect();
            let touched = store.recently_active(&hashes, since).await?;
            counts.excluded += touched.len() as i64;
            new.into_iter()
                .zip(&hashes)
                .filter(|(_, h)| !touched.contains(*h))
                .map(|(c, _)| c)
                .collect()
        } else {
            new
        };
        let first: Vec<i64> = new.iter().take(20).map(|c| c.id).collect();
        if let Err(refusal) = check_blast_radius(
            new.len() as u64,
            total.max(0) as u64,
            rule.max_new_per_scan,
            rule.max_new_share,
            &self.limits_at,
        ) {
            counts.refused = Some(refusal);
        }
        if options.dry_run {
            counts.finished_at = Utc::now();
            return Ok(ScanReport {
                counts,
                first,
                candidates: new.iter().map(|c| Candidate::of(c, rule.select)).collect(),
                dry_run: true,
            });
        }
        if counts.refused.is_none() && !new.is_empty() {
            let rows: Vec<NewRetirement> = new
                .iter()
                .map(|c| NewRetirement {
                    locale: c.locale.clone(),
                    rule: Some(rule.name.clone()),
                    ..NewRetirement::hashed(
                        key,
                        c.id,
                        c.email.clone(),
                        c.username.clone(),
                        rule.reason.clone(),
                    )
                })
                .collect();
            let outcomes = store
                .enqueue(self.graph.initial(), &rows, "scan", now)
                .await?;
            counts.enqueued = outcomes
                .iter()
                .filter(|o| matches!(o, EnqueueOutcome::Created(_)))
                .count() as i64;
            counts.already_open += outcomes.len() as i64 - counts.enqueued;
        }
        counts.finished_at = crate::domain::truncate_micros(Utc::now());
        store.record_scan(&counts).await?;
        record_metrics(rule, &counts);
        Ok(ScanReport {
            counts,
            first,
            candidates: Vec::new(),
            dry_run: false,
        })
    }
}

fn record_metrics(rule: &Rule, counts: &ScanRecord) {
    let refused = if counts.refused.is_some() {
        "true"
    } else {
        "false"
    };
    let name = rule.name.as_str();
    crate::metrics::count(
        "lethe_scan_runs_total",
        &[("rule", name), ("refused", refused)],
        1,
    );
    for (kind, n) in [("selected", counts.inactive), ("enqueued", counts.enqueued)] {
        crate::metrics::count(
            "lethe_scan_candidates_total",
            &[("rule", name), ("kind", kind)],
            n.max(0) as u64,
        );
    }
    tracing::info!(
        rule = name,
        seen = counts.seen,
        selected = counts.inactive,
        excluded = counts.excluded,
        already_open = counts.already_open,
        overlap = counts.overlap,
        enqueued = counts.enqueued,
        refused = counts.refused.is_some(),
        "scan finished"
    );
}

#[cfg(test)]
mod tests {
    use super::first_scan_delay;
    use std::time::Duration;

    #[test]
    fn the_first_scan_waits_for_the_rest_of_the_interval() {
        let now: chrono::DateTime<chrono::Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
        let hour = Duration::from_secs(3600);
        let ago = |m: i64| Some(now - chrono::Duration::minutes(m));
        assert_eq!(first_scan_delay(None, hour, now), Duration::ZERO);
        assert_eq!(
            first_scan_delay(ago(20), hour, now),
            Duration::from_secs(40 * 60)
        );
        assert_eq!(first_scan_delay(ago(90), hour, now), Duration::ZERO);
        assert_eq!(first_scan_delay(ago(-5), hour, now), hour);
    }
}
