//! The values the store takes and returns.

use crate::domain::Transition;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Arc;

/// A subject to enqueue, with its audit hashes already computed.
#[derive(Debug, Clone)]
pub struct NewRetirement {
    /// Source primary key.
    pub subject: String,
    /// Email, needed to warn the subject.
    pub email: Option<String>,
    /// Username, for templates.
    pub username: Option<String>,
    /// `inactive` or `requested`.
    pub reason: crate::domain::Reason,
    /// HMAC of the subject id.
    pub subject_hash: String,
    /// HMAC of the email.
    pub email_hash: Option<String>,
    /// Language for emails (`en`, `fr`...), when the source has one.
    pub locale: Option<String>,
    /// The selection rule that found it; `None` when opened by hand.
    pub rule: Option<String>,
}

impl NewRetirement {
    /// A subject to enqueue for `reason`, hashed with `key` (the only way the hashes are
    /// computed, so the scan and an operator's enqueue always agree).
    pub fn hashed(
        key: &crate::pii::HashKey,
        subject: i64,
        email: Option<String>,
        username: Option<String>,
        reason: crate::domain::Reason,
    ) -> Self {
        let subject = subject.to_string();
        NewRetirement {
            subject_hash: key.subject(&subject),
            email_hash: email.as_deref().map(|e| key.email(e)),
            subject,
            email,
            username,
            reason,
            locale: None,
            rule: None,
        }
    }
}

/// How an enqueue opens its retirements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnqueueOptions {
    /// An operator overrides the source's exclusions for these subjects.
    pub exclusion_override: bool,
}

impl EnqueueOptions {
    /// The detail of an `enqueued` event.
    pub fn event_detail(&self, reason: &str, rule: Option<&str>) -> String {
        let mut detail = serde_json::json!({ "reason": reason });
        if let Some(rule) = rule {
            detail["rule"] = serde_json::json!(rule);
        }
        if self.exclusion_override {
            detail["exclusion_override"] = serde_json::json!(true);
        }
        detail.to_string()
    }
}

/// What enqueueing one subject did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "id", rename_all = "snake_case")]
pub enum EnqueueOutcome {
    /// A new retirement with this id.
    Created(i64),
    /// The subject already has this open retirement; nothing was added.
    AlreadyOpen(i64),
}

/// A retirement claimed by a driver: what a handler needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// Retirement id.
    pub id: i64,
    /// Source primary key.
    pub subject: String,
    /// Email, if known.
    pub email: Option<String>,
    /// Username, if known.
    pub username: Option<String>,
    /// Why it was opened.
    pub reason: crate::domain::Reason,
    /// Current state.
    pub state: String,
    /// Attempt number of this claim (1 on the first try in this state), the fence; it
    /// includes the `lost_leases` claims, which are not failures.
    pub attempt: i32,
    /// Claims before this one, since the last written outcome, that never came back.
    pub lost_leases: i32,
    /// When the warning was accepted.
    pub warned_at: Option<DateTime<Utc>>,
    /// When the retirement was opened.
    pub created_at: DateTime<Utc>,
    /// Language for emails, if known.
    pub locale: Option<String>,
    /// Grace reminders sent so far.
    pub reminders_sent: i32,
    /// An operator opened it despite the source's exclusions (`--override-exclusion`).
    pub exclusion_override: bool,
    /// The selection rule that opened it; `None` when opened by hand.
    pub rule: Option<String>,
}

/// A transition to apply in a write-back, with the fence it was claimed under.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Retirement id.
    pub id: i64,
    /// State the store holds (as claimed, or as last written): the fence.
    pub from_state: String,
    /// Attempt the store holds: the fence.
    pub attempt: i32,
    /// The change; the row's new state.
    pub transition: Transition,
    /// Keep the lease until this time for the next state's stage (the driver goes on with
    /// the row at once instead of releasing it and claiming it again).
    pub relay: Option<DateTime<Utc>>,
    /// Relayed Done transitions made in memory before `transition` and written with it,
    /// oldest first (the driver carries a row into a quick stage without a write-back).
    pub carried: Vec<Step>,
}

/// A transition made in memory: the state and attempt it ran in, when, and the change.
#[derive(Debug, Clone)]
pub struct Step {
    /// State the stage ran in.
    pub from_state: String,
    /// Attempt it ran as.
    pub attempt: i32,
    /// When its outcome was planned.
    pub at: DateTime<Utc>,
    /// The change.
    pub transition: Transition,
}

/// One event a write-back records.
pub struct EventRow<'a> {
    /// State the stage ran in.
    pub from_state: &'a str,
    /// Attempt it ran as.
    pub attempt: i32,
    /// When.
    pub at: DateTime<Utc>,
    /// The change.
    pub transition: &'a Transition,
}

impl Applied {
    /// The events to record, oldest first: each carried step, then `transition` (which ran
    /// in the last carried step's new state, as attempt 1 of a relay).
    pub fn events(&self, now: DateTime<Utc>) -> Vec<EventRow<'_>> {
        let mut events: Vec<EventRow<'_>> = self
            .carried
            .iter()
            .map(|s| EventRow {
                from_state: &s.from_state,
                attempt: s.attempt,
                at: s.at,
                transition: &s.transition,
            })
            .collect();
        let (from_state, attempt) = match self.carried.last() {
            Some(last) => (last.transition.to_state.as_str(), 1),
            None => (self.from_state.as_str(), self.attempt),
        };
        events.push(EventRow {
            from_state,
            attempt,
            at: now,
            transition: &self.transition,
        });
        events
    }

    /// The warning time to write: the latest any of the transitions recorded.
    pub fn warned_at(&self) -> Option<DateTime<Utc>> {
        self.transition.warned_at.or_else(|| {
            self.carried
                .iter()
                .rev()
                .find_map(|s| s.transition.warned_at)
        })
    }

    /// The reminder count to write: the latest any of the transitions changed.
    pub fn reminders_sent(&self) -> Option<i32> {
        self.transition.reminders_sent.or_else(|| {
            self.carried
                .iter()
                .rev()
                .find_map(|s| s.transition.reminders_sent)
        })
    }
}

/// A retirement as operators see it. No email or username.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retirement {
    /// Id.
    pub id: i64,
    /// The stable random id the API shows (a UUID).
    pub public_id: String,
    /// Source primary key; `None` once erased.
    pub subject: Option<String>,
    /// HMAC of the subject id.
    pub subject_hash: String,
    /// Why it was opened.
    pub reason: crate::domain::Reason,
    /// Current state.
    pub state: String,
    /// When its handler is next due.
    pub due_at: Option<DateTime<Utc>>,
    /// Attempts in the current state.
    pub attempt: i32,
    /// Driver holding the lease.
    pub lease_owner: Option<String>,
    /// Lease expiry.
    pub lease_until: Option<DateTime<Utc>>,
    /// Last error.
    pub last_error: Option<String>,
    /// State that failed, while errored.
    pub failed_state: Option<String>,
    /// When the warning was accepted.
    pub warned_at: Option<DateTime<Utc>>,
    /// Opened at.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Ended at (complete or aborted).
    pub ended_at: Option<DateTime<Utc>>,
    /// An operator opened it despite the source's exclusions (`--override-exclusion`).
    pub exclusion_override: bool,
    /// The selection rule that opened it; `None` when opened by hand.
    pub rule: Option<String>,
}

impl Retirement {
    /// Where it stands, for an operator action to decide on.
    pub fn standing(&self) -> crate::domain::Standing<'_> {
        crate::domain::Standing {
            state: &self.state,
            failed_state: self.failed_state.as_deref(),
            ended: self.ended_at.is_some(),
        }
    }
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Event id (monotonic).
    pub id: i64,
    /// The retirement.
    pub retirement_id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who: `driver:OWNER`, `operator:NAME`, `cli`.
    pub actor: String,
    /// State before (none for the enqueue event).
    pub from_state: Option<String>,
    /// State after.
    pub to_state: String,
    /// enqueued, done, wait, retry, fail, cancel, resume, abort.
    pub outcome: String,
    /// Attempt the event belongs to.
    pub attempt: i32,
    /// JSON detail.
    pub detail: String,
}

/// An event with the retirement it belongs to, for auditors.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// Subject id, while not erased.
    pub subject: Option<String>,
    /// HMAC of the subject id.
    pub subject_hash: String,
    /// Why the retirement was opened.
    pub reason: crate::domain::Reason,
}

/// How to find a retirement: by id, or by subject id or email (hashed too, so ended
/// retirements are still found).
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Retirement id.
    Id(i64),
    /// The public UUID the API and the console show.
    PublicId(String),
    /// A subject id or email, with its hashes when a key is available.
    Subject {
        /// As typed.
        raw: String,
        /// HMAC of it as a subject id.
        subject_hash: Option<String>,
        /// HMAC of it as an email.
        email_hash: Option<String>,
    },
}

impl Lookup {
    /// Parses what an operator typed: a number is tried as a retirement id first by the
    /// caller; this builds the subject form with hashes from `key`.
    pub fn subject(raw: &str, key: Option<&crate::pii::HashKey>) -> Self {
        Lookup::Subject {
            raw: raw.to_string(),
            subject_hash: key.map(|k| k.subject(raw)),
            email_hash: key.filter(|_| raw.contains('@')).map(|k| k.email(raw)),
        }
    }

    /// Bind values: (id, raw subject, subject hash, email hash).
    pub(super) fn params(&self) -> (Option<i64>, Option<&str>, Option<&str>, Option<&str>) {
        match self {
            Lookup::Id(id) => (Some(*id), None, None, None),
            // Found by `find` on its own; as an audit filter it matches nothing else.
            Lookup::PublicId(_) => (None, None, None, None),
            Lookup::Subject {
                raw,
                subject_hash,
                email_hash,
            } => (
                None,
                Some(raw.as_str()),
                subject_hash.as_deref(),
                email_hash.as_deref(),
            ),
        }
    }
}

/// Which retirements `list` returns, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only in this state.
    pub state: Option<String>,
    /// Only opened for this reason.
    pub reason: Option<String>,
    /// Only opened at or after.
    pub since: Option<DateTime<Utc>>,
    /// Only ids below this one (the cursor: the last id of the previous page).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

/// Filter for `audit`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Events at or after.
    pub since: Option<DateTime<Utc>>,
    /// Events before.
    pub until: Option<DateTime<Utc>>,
    /// Only this subject's retirements.
    pub subject: Option<Lookup>,
    /// Only events after this one, by (time, id): the cursor of the previous page.
    pub after: Option<(DateTime<Utc>, i64)>,
    /// At most this many rows.
    pub limit: i64,
}

/// Result of an operator action.
#[derive(Debug)]
pub enum ActionResult {
    /// Applied; the retirement as it is now.
    Applied(Box<Retirement>),
    /// No such retirement.
    NotFound,
    /// Refused, with the reason.
    Refused(String),
}

/// The counts of one scan, kept in `scan_run`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ScanRecord {
    /// Started at.
    pub started_at: DateTime<Utc>,
    /// Finished at.
    pub finished_at: DateTime<Utc>,
    /// Users in the source.
    pub seen: i64,
    /// Inactive users found.
    pub inactive: i64,
    /// Inactive but excluded (predicate or allow-list).
    pub excluded: i64,
    /// Candidates that already had an open retirement.
    pub already_open: i64,
    /// Retirements opened.
    pub enqueued: i64,
    /// Why the blast-radius guard refused the scan.
    pub refused: Option<String>,
    /// The rule it ran.
    pub rule: Option<String>,
    /// Candidates an earlier rule of the same run had taken (first rule wins).
    pub overlap: i64,
}

/// Wake-ups from the store; dropping it stops the listener (and frees its connection).
pub struct Wakeup {
    signal: Arc<tokio::sync::Notify>,
    listener: tokio::task::JoinHandle<()>,
}

impl Wakeup {
    /// Wraps a signal fed by a listener task.
    pub fn new(signal: Arc<tokio::sync::Notify>, listener: tokio::task::JoinHandle<()>) -> Self {
        Self { signal, listener }
    }

    /// Resolves at the next wake-up (or at once if one arrived since the last call).
    pub async fn notified(&self) {
        self.signal.notified().await
    }
}

impl Drop for Wakeup {
    fn drop(&mut self) {
        self.listener.abort();
    }
}
