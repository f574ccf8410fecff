//! The retirement store: a `Store` trait with a PostgreSQL and a SQLite implementation.
//!
//! Invariants kept here: at most one open retirement per subject (unique partial index);
//! claims are short committed transactions; write-backs are fenced by
//! (id, state, lease_owner, attempt) so a worker that lost its lease changes nothing; every
//! state change inserts its event in the same transaction; events are append-only
//! (database triggers); PII is erased in the transaction that ends a retirement.

mod postgres;
pub(crate) mod sql;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::domain::{OperatorRefusal, StateGraph, Transition, plan_abort, plan_resume, plan_touch};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// The default store: an embedded SQLite file in the working directory.
pub const DEFAULT_STORE_URL: &str = "sqlite://lethe.db";

pub use crate::db::{Backend, redact_url};

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL is not one we support.
    #[error("store URL {url}: {problem}")]
    BadUrl {
        /// The URL, password redacted.
        url: String,
        /// What is allowed.
        problem: String,
    },
    /// The database could not be reached.
    #[error(
        "cannot open the store at {url}: {source} (is the database up? check --store / LETHE_STORE_URL)"
    )]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver error.
        source: sqlx::Error,
    },
    /// Applying migrations failed.
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A statement failed.
    #[error("store query failed while trying to {context}: {source}")]
    Query {
        /// What the store was doing.
        context: &'static str,
        /// The driver error.
        source: sqlx::Error,
    },
    /// states.toml dropped a state that open retirements still use.
    #[error(
        "states.toml no longer declares state {state}, but {count} open retirement(s) are in it or failed in it: finish, resume elsewhere or abort them first, or keep the state"
    )]
    StateInUse {
        /// The state.
        state: String,
        /// Open retirements in it.
        count: i64,
    },
    /// The store has not been migrated.
    #[error("the store has no lethe schema yet: run `lethe migrate` first")]
    NotMigrated,
    /// The store lacks migrations this release needs.
    #[error(
        "the store's schema is behind this lethe: migration(s) {missing} not applied: run `lethe migrate` first"
    )]
    Behind {
        /// The missing versions and descriptions, e.g. `8 (exclusion override)`.
        missing: String,
    },
    /// A SQLite store file that does not exist (only `migrate` and `run` create it).
    #[error(
        "the store {path} does not exist: run `lethe migrate` to create it (or check --store / LETHE_STORE_URL)"
    )]
    Missing {
        /// The file.
        path: String,
    },
}

impl crate::error::Classified for StoreError {
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            StoreError::BadUrl { .. }
            | StoreError::NotMigrated
            | StoreError::Behind { .. }
            | StoreError::Missing { .. } => ErrorKind::Config,
            StoreError::StateInUse { .. } => ErrorKind::Refused,
            StoreError::Connect { .. } | StoreError::Query { .. } => ErrorKind::Unreachable,
            StoreError::Migrate(_) => ErrorKind::Internal,
        }
    }
}

/// Fails with [`StoreError::Behind`] when a migration of `migrator` is not in `applied`.
pub(crate) fn require_migrations(
    migrator: &sqlx::migrate::Migrator,
    applied: &[i64],
) -> Result<(), StoreError> {
    let missing: Vec<String> = migrator
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| format!("{} ({})", m.version, m.description))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else if applied.is_empty() {
        Err(StoreError::NotMigrated)
    } else {
        Err(StoreError::Behind {
            missing: missing.join(", "),
        })
    }
}

/// Reads the applied migration versions; a store without the migrations table has none.
pub(crate) fn applied_versions(
    result: Result<Vec<i64>, sqlx::Error>,
) -> Result<Vec<i64>, StoreError> {
    match result {
        Ok(versions) => Ok(versions),
        // Only a missing table means "not migrated" (PostgreSQL 42P01, SQLite "no such
        // table"); a refused permission or anything else is reported as it is.
        Err(sqlx::Error::Database(db))
            if db.code().as_deref() == Some("42P01") || db.message().contains("no such table") =>
        {
            Ok(Vec::new())
        }
        Err(source) => Err(StoreError::Query {
            context: "read the applied migrations",
            source,
        }),
    }
}

/// Applied migrations, in both backends.
pub(crate) const APPLIED_MIGRATIONS: &str = "SELECT version FROM _sqlx_migrations WHERE success";

/// Attaches what the store was doing to a driver error.
pub(crate) trait QueryContext<T> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> QueryContext<T> for Result<T, sqlx::Error> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Query { context, source })
    }
}

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
    pub fn event_detail(&self, reason: &str) -> String {
        if self.exclusion_override {
            serde_json::json!({ "reason": reason, "exclusion_override": true }).to_string()
        } else {
            serde_json::json!({ "reason": reason }).to_string()
        }
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
    fn params(&self) -> (Option<i64>, Option<&str>, Option<&str>, Option<&str>) {
        match self {
            Lookup::Id(id) => (Some(*id), None, None, None),
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

/// Filter for `audit`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Events at or after.
    pub since: Option<DateTime<Utc>>,
    /// Events before.
    pub until: Option<DateTime<Utc>>,
    /// Only this subject's retirements.
    pub subject: Option<Lookup>,
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

/// A boxed future, for trait methods both backends share through one macro
/// (`sql::shared_methods!`), which `async_trait` cannot see into.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Persistence for retirements, events and states.
#[async_trait]
pub trait Store: Send + Sync {
    /// Which database this is.
    fn backend(&self) -> Backend;

    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Writes the states of states.toml into the `state` table; refuses to drop a state
    /// that open retirements still use.
    fn sync_states<'a>(&'a self, graph: &'a StateGraph) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Opens retirements in the initial state, due now; an open one is reported, not duplicated.
    async fn enqueue(
        &self,
        initial_state: &str,
        new: &[NewRetirement],
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        self.enqueue_with(initial_state, new, EnqueueOptions::default(), actor, now)
            .await
    }

    /// [`Store::enqueue`] with options: an exclusion override is stored on each new
    /// retirement and recorded in its `enqueued` event.
    async fn enqueue_with(
        &self,
        initial_state: &str,
        new: &[NewRetirement],
        options: EnqueueOptions,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<EnqueueOutcome>, StoreError>;

    /// Fails with [`StoreError::NotMigrated`] unless every embedded migration is applied
    /// (commands other than `migrate` and `run` never change the schema).
    async fn check_migrated(&self) -> Result<(), StoreError>;

    /// When the latest recorded scan started, if any (the daemon's scan timer starts there).
    fn last_scan(&self) -> BoxFuture<'_, Result<Option<DateTime<Utc>>, StoreError>>;

    /// Claims up to `limit` due retirements for `owner` until `now + lease`.
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// Extends the lease of `ids` still held by `owner`; returns how many are still held.
    async fn renew(
        &self,
        owner: &str,
        ids: &[i64],
        until: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// Gives back claimed retirements untouched (shutdown): due now, attempt undone.
    async fn release(
        &self,
        owner: &str,
        claimed: &[(i64, i32)],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// Applies transitions and inserts their events in one transaction, fenced by
    /// (id, state, owner, attempt). Returns the ids that were applied.
    async fn write_back(
        &self,
        owner: &str,
        applied: &[Applied],
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, StoreError>;

    /// The retirement for a lookup: by subject, the open one, else the latest.
    fn find<'a>(
        &'a self,
        lookup: &'a Lookup,
    ) -> BoxFuture<'a, Result<Option<Retirement>, StoreError>>;

    /// Every event of a retirement, oldest first.
    fn history(&self, id: i64) -> BoxFuture<'_, Result<Vec<Event>, StoreError>>;

    /// Retirements, newest first, optionally in one state.
    fn list<'a>(
        &'a self,
        state: Option<&'a str>,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<Retirement>, StoreError>>;

    /// Number of retirements per state.
    fn stats(&self) -> BoxFuture<'_, Result<Vec<(String, i64)>, StoreError>>;

    /// Applies an operator action to retirement `id` under a row lock, or says why not.
    fn operate<'a>(
        &'a self,
        graph: &'a StateGraph,
        id: i64,
        action: &'a OperatorAction,
        actor: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<ActionResult, StoreError>>;

    /// Events with their retirement, oldest first.
    fn audit<'a>(
        &'a self,
        filter: &'a AuditFilter,
    ) -> BoxFuture<'a, Result<Vec<AuditRow>, StoreError>>;

    /// Which of `subjects` have an open retirement.
    async fn open_among(
        &self,
        subjects: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError>;

    /// Records that a subject (by keyed hash) was active at `at` (`lethe touch`).
    fn record_activity<'a>(
        &'a self,
        subject_hash: &'a str,
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Whether any subject has recorded activity after `since` (a scan hashes its
    /// candidates only then).
    fn any_activity_since(&self, since: DateTime<Utc>) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Which of `subject_hashes` have recorded activity after `since`.
    fn recently_active<'a>(
        &'a self,
        subject_hashes: &'a [String],
        since: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<std::collections::HashSet<String>, StoreError>>;

    /// Records a scan's counts (and why it was refused, if it was).
    fn record_scan<'a>(&'a self, scan: &'a ScanRecord) -> BoxFuture<'a, Result<(), StoreError>>;

    /// When the next open retirement is due, if any.
    fn next_due(&self) -> BoxFuture<'_, Result<Option<DateTime<Utc>>, StoreError>>;

    /// A wake-up signal fired when work is added (Postgres LISTEN/NOTIFY); `None` when the
    /// backend has none, so the driver only polls.
    async fn subscribe(&self) -> Result<Option<Wakeup>, StoreError>;
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

/// An operator action on one retirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorAction {
    /// Continue an errored retirement at its failed state, or at `to`.
    Resume {
        /// Target state.
        to: Option<String>,
    },
    /// End an open retirement.
    Abort {
        /// Why, recorded in the event.
        reason: String,
    },
    /// The subject was active at `at`: cancel the retirement if it is still in one of the
    /// `cancellable` states (before any deletion), else refuse.
    Touch {
        /// When the activity happened.
        at: DateTime<Utc>,
        /// States before the first deleting stage.
        cancellable: Vec<String>,
    },
}

impl OperatorAction {
    /// The transition this action causes on `current`, or why it is refused.
    pub fn decide(
        &self,
        graph: &StateGraph,
        current: &Retirement,
        now: DateTime<Utc>,
    ) -> Result<Transition, OperatorRefusal> {
        match self {
            OperatorAction::Resume { to } => {
                if current.ended_at.is_some() {
                    return Err(OperatorRefusal(format!(
                        "it already ended in state {}",
                        current.state
                    )));
                }
                plan_resume(
                    graph,
                    &current.state,
                    current.failed_state.as_deref(),
                    to.as_deref(),
                    now,
                )
            }
            OperatorAction::Abort { reason } => {
                plan_abort(graph, &current.state, current.ended_at.is_some(), reason)
            }
            OperatorAction::Touch { at, cancellable } => plan_touch(
                graph,
                &current.state,
                current.failed_state.as_deref(),
                current.ended_at.is_some(),
                *at,
                cancellable,
            ),
        }
    }
}

/// Opens the store at `url` (creating a SQLite file if needed). `max_connections` bounds the pool.
pub async fn open(url: &str, max_connections: u32) -> Result<Arc<dyn Store>, StoreError> {
    let backend = Backend::from_url(url).map_err(|problem| StoreError::BadUrl {
        url: redact_url(url),
        problem,
    })?;
    Ok(match backend {
        Backend::Postgres => Arc::new(PgStore::connect(url, max_connections).await?),
        Backend::Sqlite => Arc::new(SqliteStore::connect(url, max_connections).await?),
    })
}

/// Opens an existing, migrated store, changing nothing: a SQLite file that does not exist
/// is [`StoreError::Missing`] (not created), a schema behind this release is
/// [`StoreError::NotMigrated`] or [`StoreError::Behind`]. For every command but `migrate`
/// and `run`.
pub async fn open_existing(url: &str, max_connections: u32) -> Result<Arc<dyn Store>, StoreError> {
    let backend = Backend::from_url(url).map_err(|problem| StoreError::BadUrl {
        url: redact_url(url),
        problem,
    })?;
    let store: Arc<dyn Store> = match backend {
        Backend::Postgres => Arc::new(PgStore::connect(url, max_connections).await?),
        Backend::Sqlite => Arc::new(SqliteStore::connect_existing(url, max_connections).await?),
    };
    store.check_migrated().await?;
    Ok(store)
}

/// Decodes a `Retirement` from a row of either backend (same column names and types).
macro_rules! decode_retirement {
    ($row:expr) => {{
        use sqlx::Row;
        let row = $row;
        (|| -> Result<$crate::store::Retirement, sqlx::Error> {
            Ok($crate::store::Retirement {
                id: row.try_get("id")?,
                subject: row.try_get("subject")?,
                subject_hash: row.try_get("subject_hash")?,
                reason: crate::domain::Reason::stored(row.try_get("reason")?),
                state: row.try_get("state")?,
                due_at: row.try_get("due_at")?,
                attempt: row.try_get("attempt")?,
                lease_owner: row.try_get("lease_owner")?,
                lease_until: row.try_get("lease_until")?,
                last_error: row.try_get("last_error")?,
                failed_state: row.try_get("failed_state")?,
                warned_at: row.try_get("warned_at")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
                ended_at: row.try_get("ended_at")?,
                exclusion_override: row.try_get("exclusion_override")?,
            })
        })()
    }};
}

/// Decodes a `Claimed` from a claim's RETURNING row.
macro_rules! decode_claimed {
    ($row:expr) => {{
        use sqlx::Row;
        let row = $row;
        (|| -> Result<$crate::store::Claimed, sqlx::Error> {
            Ok($crate::store::Claimed {
                id: row.try_get("id")?,
                subject: row.try_get("subject")?,
                email: row.try_get("email")?,
                username: row.try_get("username")?,
                reason: crate::domain::Reason::stored(row.try_get("reason")?),
                state: row.try_get("state")?,
                attempt: row.try_get("attempt")?,
                lost_leases: row.try_get("lost_leases")?,
                warned_at: row.try_get("warned_at")?,
                created_at: row.try_get("created_at")?,
                locale: row.try_get("locale")?,
                reminders_sent: row.try_get("reminders_sent")?,
                exclusion_override: row.try_get("exclusion_override")?,
            })
        })()
    }};
}

/// Decodes an `Event`.
macro_rules! decode_event {
    ($row:expr) => {{
        use sqlx::Row;
        let row = $row;
        (|| -> Result<$crate::store::Event, sqlx::Error> {
            Ok($crate::store::Event {
                id: row.try_get("id")?,
                retirement_id: row.try_get("retirement_id")?,
                at: row.try_get("at")?,
                actor: row.try_get("actor")?,
                from_state: row.try_get("from_state")?,
                to_state: row.try_get("to_state")?,
                outcome: row.try_get("outcome")?,
                attempt: row.try_get("attempt")?,
                detail: row.try_get("detail")?,
            })
        })()
    }};
}

/// Decodes an `AuditRow` (event columns plus subject, subject_hash, reason).
macro_rules! decode_audit {
    ($row:expr) => {{
        use sqlx::Row;
        let row = $row;
        $crate::store::decode_event!(row).and_then(|event| {
            Ok($crate::store::AuditRow {
                event,
                subject: row.try_get("subject")?,
                subject_hash: row.try_get("subject_hash")?,
                reason: crate::domain::Reason::stored(row.try_get("reason")?),
            })
        })
    }};
}

/// Columns of a `Retirement`, for SELECTs built with `concat!`.
macro_rules! retirement_columns {
    () => {
        "id, subject, subject_hash, reason, state, due_at, attempt, lease_owner, lease_until, last_error, failed_state, warned_at, created_at, updated_at, ended_at, exclusion_override"
    };
}

/// Columns of a `Claimed`, for claim RETURNING clauses.
macro_rules! claimed_columns {
    () => {
        "id, subject, email, username, reason, state, attempt, lost_leases, warned_at, created_at, locale, reminders_sent, exclusion_override"
    };
}

/// Columns of an `Event`.
macro_rules! event_columns {
    () => {
        "id, retirement_id, at, actor, from_state, to_state, outcome, attempt, detail"
    };
}

pub(crate) use {
    claimed_columns, decode_audit, decode_claimed, decode_event, decode_retirement, event_columns,
    retirement_columns,
};

/// The embedded migrations of one backend (`migrations/<dir>/`), in version order.
macro_rules! embedded_migrator {
    ($dir:literal) => {
        $crate::store::migrator_of(&[
            (
                1,
                "init",
                include_str!(concat!("../../migrations/", $dir, "/0001_init.sql")),
            ),
            (
                2,
                "claim index",
                include_str!(concat!("../../migrations/", $dir, "/0002_claim_index.sql")),
            ),
            (
                3,
                "notice",
                include_str!(concat!("../../migrations/", $dir, "/0003_notice.sql")),
            ),
            (
                4,
                "drop state index",
                include_str!(concat!(
                    "../../migrations/",
                    $dir,
                    "/0004_drop_state_index.sql"
                )),
            ),
            (
                5,
                "retirement key",
                include_str!(concat!(
                    "../../migrations/",
                    $dir,
                    "/0005_retirement_key.sql"
                )),
            ),
            (
                6,
                "event keys",
                include_str!(concat!("../../migrations/", $dir, "/0006_event_keys.sql")),
            ),
            (
                7,
                "claims",
                include_str!(concat!("../../migrations/", $dir, "/0007_claims.sql")),
            ),
            (
                8,
                "exclusion override",
                include_str!(concat!(
                    "../../migrations/",
                    $dir,
                    "/0008_exclusion_override.sql"
                )),
            ),
        ])
    };
}

pub(crate) use embedded_migrator;

/// Builds a migrator from embedded (version, description, SQL) triples.
pub(crate) fn migrator_of(
    migrations: &[(i64, &'static str, &'static str)],
) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    (*description).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}
