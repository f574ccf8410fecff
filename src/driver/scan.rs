//! The scan: page through the source for inactive users and open their retirements,
//! idempotently, behind the blast-radius guard.

use crate::config::{Policy, Source};
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
    /// Last login; `None`: never logged in.
    pub last_login: Option<chrono::NaiveDateTime>,
    /// Sign-up.
    pub date_joined: Option<chrono::NaiveDateTime>,
}

impl Candidate {
    fn of(user: &Inactive) -> Self {
        Self {
            id: user.id,
            last_login: user.last_login,
            date_joined: user.date_joined,
        }
    }

    /// `inactive since <last login>`, or `never logged in since <sign-up>`. Formatted only
    /// when shown: a dry run of a large source holds many candidates.
    pub fn why(&self) -> String {
        let at = |t: chrono::NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S").to_string();
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
}

impl crate::error::Classified for ScanError {
    fn kind(&self) -> crate::error::ErrorKind {
        match self {
            ScanError::Source(e) => crate::error::Classified::kind(e),
            ScanError::Store(e) => crate::error::Classified::kind(e),
        }
    }
}

/// Options of one scan.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanOptions {
    /// Write nothing; report what would be enqueued.
    pub dry_run: bool,
    /// Consider at most this many candidates.
    pub limit: Option<usize>,
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
async fn read_range(
    reader: &SourceReader,
    source: &Source,
    mut after: i64,
    upto: i64,
    cutoff: chrono::NaiveDateTime,
    limit: Option<usize>,
    with_times: bool,
) -> Result<RangeRead, SourceError> {
    let mut read = RangeRead::default();
    while after < upto {
        let page = reader
            .inactive_page(after, upto, cutoff, source.batch_size, with_times)
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

/// Scans the source once. A refusal by the blast-radius guard is not an error: the report
/// says why in `counts.refused` and nothing is enqueued.
#[allow(clippy::too_many_arguments)]
pub async fn scan(
    store: &dyn Store,
    graph: &StateGraph,
    reader: &SourceReader,
    source: &Source,
    policy: &Policy,
    key: &HashKey,
    now: DateTime<Utc>,
    options: ScanOptions,
) -> Result<ScanReport, ScanError> {
    let started = std::time::Instant::now();
    let inactive_after = source
        .inactive_after
        .map(|d| d.0)
        .unwrap_or(policy.inactive_after);
    let cutoff = crate::domain::before(now, inactive_after).naive_utc();
    let mut counts = ScanRecord {
        started_at: now,
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
        ms = started.elapsed().as_millis() as u64,
        candidates = candidates.len(),
        "scan: pages read"
    );
    let subjects: Vec<String> = candidates.iter().map(|c| c.id.to_string()).collect();
    let open = store.open_among(&subjects).await?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "scan: open retirements checked"
    );
    counts.already_open = open.len() as i64;
    let new: Vec<&Inactive> = candidates
        .iter()
        .filter(|c| !open.contains(&c.id.to_string()))
        .collect();
    // Activity reported to lethe (`touch`) counts like a login the source does not show.
    let since = cutoff.and_utc();
    let new: Vec<&Inactive> = if store.any_activity_since(since).await? {
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
        source.max_new_per_scan,
        source.max_new_share,
    ) {
        counts.refused = Some(refusal);
    }
    if options.dry_run {
        counts.finished_at = Utc::now();
        return Ok(ScanReport {
            counts,
            first,
            candidates: new.iter().map(|c| Candidate::of(c)).collect(),
            dry_run: true,
        });
    }
    if counts.refused.is_none() && !new.is_empty() {
        let rows: Vec<NewRetirement> = new
            .iter()
            .map(|c| NewRetirement {
                locale: c.locale.clone(),
                ..NewRetirement::hashed(
                    key,
                    c.id,
                    c.email.clone(),
                    c.username.clone(),
                    crate::domain::Reason::INACTIVE,
                )
            })
            .collect();
        let outcomes = store.enqueue(graph.initial(), &rows, "scan", now).await?;
        counts.enqueued = outcomes
            .iter()
            .filter(|o| matches!(o, EnqueueOutcome::Created(_)))
            .count() as i64;
        counts.already_open += outcomes.len() as i64 - counts.enqueued;
    }
    counts.finished_at = crate::domain::truncate_micros(Utc::now());
    store.record_scan(&counts).await?;
    let refused = if counts.refused.is_some() {
        "true"
    } else {
        "false"
    };
    crate::metrics::count("lethe_scan_runs_total", &[("refused", refused)], 1);
    crate::metrics::count(
        "lethe_scan_candidates_total",
        &[("kind", "inactive")],
        counts.inactive.max(0) as u64,
    );
    crate::metrics::count(
        "lethe_scan_candidates_total",
        &[("kind", "enqueued")],
        counts.enqueued.max(0) as u64,
    );
    tracing::info!(
        seen = counts.seen,
        inactive = counts.inactive,
        excluded = counts.excluded,
        already_open = counts.already_open,
        enqueued = counts.enqueued,
        refused = counts.refused.is_some(),
        "scan finished"
    );
    Ok(ScanReport {
        counts,
        first,
        candidates: Vec::new(),
        dry_run: false,
    })
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
