//! The retirement store: a `Store` trait with a PostgreSQL and a SQLite implementation.
//!
//! Invariants kept here: at most one open retirement per subject (unique partial index);
//! claims are short committed transactions; write-backs are fenced by
//! (id, state, lease_owner, attempt) so a worker that lost its lease changes nothing; every
//! state change inserts its event in the same transaction; events are append-only
//! (database triggers); PII is erased in the transaction that ends a retirement.

pub(crate) mod acks;
mod error;
mod migrate;
mod open;
pub(crate) mod overview;
mod postgres;
mod rows;
pub(crate) mod sql;
mod sqlite;
pub(crate) mod tasks;
mod types;

/// Operator actions are domain rules; re-exported for the callers of [`Store::operate`].
pub use crate::domain::OperatorAction;
pub use acks::{AckResult, ServiceAck, UserFilter, UserQuery, UserRow};
pub(crate) use error::QueryContext;
pub use error::StoreError;
pub(crate) use migrate::{
    APPLIED_MIGRATIONS, applied_versions, embedded_migrator, migrator_of, require_migrations,
};
pub use open::{open, open_existing};
pub use overview::{DayCount, OpenState};
pub use postgres::PgStore;
pub(crate) use rows::{claimed_columns, event_columns, retirement_columns};
pub use sqlite::SqliteStore;
pub use tasks::TaskRow;
pub use types::{
    ActionResult, Applied, AuditFilter, AuditRow, Claimed, EnqueueOptions, EnqueueOutcome, Event,
    EventRow, ListFilter, Lookup, NewRetirement, Retirement, ScanRecord, Step, Wakeup,
};

use crate::domain::StateGraph;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The default store: an embedded SQLite file in the working directory.
pub const DEFAULT_STORE_URL: &str = "sqlite://lethe.db";

pub use crate::db::{Backend, redact_url};

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

    /// When the latest recorded scan of `rule` started, if any (the daemon's timer for that
    /// rule starts there).
    fn last_scan<'a>(
        &'a self,
        rule: &'a str,
    ) -> BoxFuture<'a, Result<Option<DateTime<Utc>>, StoreError>>;

    /// Claims up to `limit` due retirements for `owner` until `now + lease`.
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// Extends the lease of `ids` still held by `owner`; returns how many are still held.
    fn renew<'a>(
        &'a self,
        owner: &'a str,
        ids: &'a [i64],
        until: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Gives back claimed retirements untouched (shutdown): due now, attempt undone.
    fn release<'a>(
        &'a self,
        owner: &'a str,
        claimed: &'a [(i64, i32)],
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

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

    /// Retirements, newest first, as `filter` says.
    fn list<'a>(
        &'a self,
        filter: &'a ListFilter,
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
    fn open_among<'a>(
        &'a self,
        subjects: &'a [String],
    ) -> BoxFuture<'a, Result<std::collections::HashSet<String>, StoreError>>;

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

    /// Records that each retirement of `ids` awaits each of `services` (once: the first
    /// time starts its ack deadline) and returns every acknowledgement row of `ids`.
    fn await_acks<'a>(
        &'a self,
        ids: &'a [i64],
        services: &'a [String],
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<ServiceAck>, StoreError>>;

    /// Records that the webhook to `service` about retirement `id` was delivered.
    fn mark_notified<'a>(
        &'a self,
        id: i64,
        service: &'a str,
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Records `service`'s acknowledgement of retirement `id` by `actor`, with an event in
    /// the same transaction, and makes the retirement due now.
    fn acknowledge<'a>(
        &'a self,
        id: i64,
        service: &'a str,
        actor: &'a str,
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<AckResult, StoreError>>;

    /// The acknowledgement rows of retirement `id`.
    fn acks(&self, id: i64) -> BoxFuture<'_, Result<Vec<ServiceAck>, StoreError>>;

    /// A page of the API's user list, each user with its acknowledgements.
    fn users<'a>(&'a self, query: &'a UserQuery)
    -> BoxFuture<'a, Result<Vec<UserRow>, StoreError>>;

    /// Open retirements per state, each with the one least recently changed.
    fn open_by_state(&self) -> BoxFuture<'_, Result<Vec<OpenState>, StoreError>>;

    /// Events per day (UTC) and outcome since `since`, for done, cancel, abort and fail.
    fn transitions_by_day(
        &self,
        since: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<DayCount>, StoreError>>;

    /// The latest `limit` scan runs, newest first.
    fn recent_scans(&self, limit: i64) -> BoxFuture<'_, Result<Vec<ScanRecord>, StoreError>>;

    /// Records a Mork task's status (inserted, or updated by id), and forgets the tasks
    /// started before `forget_before`.
    fn save_task<'a>(
        &'a self,
        task: &'a TaskRow,
        forget_before: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// A Mork task by id.
    fn task<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<TaskRow>, StoreError>>;

    /// The acknowledgement rows of these retirements, by retirement then service.
    fn acks_of<'a>(&'a self, ids: &'a [i64]) -> BoxFuture<'a, Result<Vec<ServiceAck>, StoreError>>;
}
