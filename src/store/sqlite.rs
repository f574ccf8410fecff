//! SQLite store: the embedded single-daemon default. Writers serialise on `BEGIN IMMEDIATE`.

use super::sql::{self, bind_apply, bind_event, shared_methods};
use super::{
    Applied, Backend, Claimed, EnqueueOptions, EnqueueOutcome, NewRetirement, QueryContext, Store,
    StoreError, claimed_columns, redact_url,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, Row, Sqlite, SqlitePool, Transaction};
use std::str::FromStr;
use std::time::Duration;

/// A store on a SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

const BEGIN_IMMEDIATE: &str = "BEGIN IMMEDIATE";

/// After a column: matches any element of the JSON array bound as `$p`.
macro_rules! in_json {
    ($p:literal) => {
        concat!("IN (SELECT value FROM json_each(", $p, "))")
    };
}

/// The pairs, element by element, of the JSON arrays bound as `$a` and `$b`.
macro_rules! json_pairs {
    ($a:literal, $b:literal) => {
        concat!(
            "SELECT a.value, b.value FROM json_each(",
            $a,
            ") AS a JOIN json_each(",
            $b,
            ") AS b ON b.key = a.key"
        )
    };
}

impl SqliteStore {
    /// Opens (and creates) the database file in WAL mode.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        Self::open(url, max_connections, true).await
    }

    /// Opens the database file, which must exist ([`StoreError::Missing`] otherwise).
    pub async fn connect_existing(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        Self::open(url, max_connections, false).await
    }

    async fn open(url: &str, max_connections: u32, create: bool) -> Result<Self, StoreError> {
        let connect_error = |source| StoreError::Connect {
            url: redact_url(url),
            source,
        };
        let options = SqliteConnectOptions::from_str(url).map_err(connect_error)?;
        let file = options.get_filename();
        // In-memory databases have no file (`:memory:` or a `mode=memory` URL).
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if !create && !in_memory && !file.exists() {
            return Err(StoreError::Missing {
                path: file.display().to_string(),
            });
        }
        let options = options.create_if_missing(create);
        // WAL is persistent: set by the opening that may create (`migrate`, `run`); a
        // read-only command's opening writes nothing to the file.
        let options = if create {
            options.journal_mode(SqliteJournalMode::Wal)
        } else {
            options
        };
        let options = options
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        Ok(Self { pool })
    }

    /// The underlying pool (tests, benchmarks).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A list bound as one parameter: a JSON array (SQLite looks each `$N` up by name, so
    /// hundreds of them cost quadratic time).
    fn list_param<T: serde::Serialize>(items: &[T]) -> String {
        serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
    }

    async fn notify(&self, _tx: &mut Transaction<'_, Sqlite>) -> Result<(), StoreError> {
        Ok(())
    }

    /// One writer at a time already (`BEGIN IMMEDIATE`): nothing more to serialise.
    async fn serialize_state_sync(
        &self,
        _tx: &mut Transaction<'_, Sqlite>,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    shared_methods! {
        begin: BEGIN_IMMEDIATE,
        lock: "",
        in_list: in_json,
        pairs: json_pairs,
    }

    super::acks::ack_methods! {
        begin: BEGIN_IMMEDIATE,
        lock: "",
        in_list: in_json,
        pairs: json_pairs,
    }

    super::overview::overview_methods! {
        day: "substr(at, 1, 10)",
    }

    super::tasks::task_methods! {}

    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        super::embedded_migrator!("sqlite").run(&self.pool).await?;
        Ok(())
    }

    async fn check_migrated(&self) -> Result<(), StoreError> {
        let applied = super::applied_versions(
            sqlx::query_scalar::<_, i64>(super::APPLIED_MIGRATIONS)
                .fetch_all(&self.pool)
                .await,
        )?;
        super::require_migrations(&super::embedded_migrator!("sqlite"), &applied)
    }

    async fn enqueue_with(
        &self,
        initial_state: &str,
        new: &[NewRetirement],
        options: EnqueueOptions,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let mut tx = self
            .pool
            .begin_with(BEGIN_IMMEDIATE)
            .await
            .ctx("begin an enqueue")?;
        let mut outcomes = Vec::with_capacity(new.len());
        for n in new {
            let created = sqlx::query(sql::ENQUEUE_ONE)
                .bind(&n.subject)
                .bind(&n.email)
                .bind(&n.username)
                .bind(&n.subject_hash)
                .bind(&n.email_hash)
                .bind(n.reason.as_str())
                .bind(initial_state)
                .bind(now)
                .bind(&n.locale)
                .bind(options.exclusion_override)
                .bind(&n.rule)
                .fetch_optional(&mut *tx)
                .await
                .ctx("insert a retirement")?;
            let outcome = match created {
                Some(row) => {
                    let id: i64 = row.try_get("id").ctx("decode an id")?;
                    sqlx::query(sql::INSERT_EVENT)
                        .bind(id)
                        .bind(now)
                        .bind(actor)
                        .bind(None::<&str>)
                        .bind(initial_state)
                        .bind("enqueued")
                        .bind(0i32)
                        .bind(options.event_detail(n.reason.as_str(), n.rule.as_deref()))
                        .execute(&mut *tx)
                        .await
                        .ctx("record an enqueue")?;
                    EnqueueOutcome::Created(id)
                }
                None => EnqueueOutcome::AlreadyOpen(
                    sqlx::query(sql::OPEN_ID)
                        .bind(&n.subject)
                        .fetch_one(&mut *tx)
                        .await
                        .ctx("find the open retirement")?
                        .try_get("id")
                        .ctx("decode an id")?,
                ),
            };
            outcomes.push(outcome);
        }
        tx.commit().await.ctx("commit an enqueue")?;
        Ok(outcomes)
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let until = crate::domain::after(now, lease);
        let mut tx = self
            .pool
            .begin_with(BEGIN_IMMEDIATE)
            .await
            .ctx("begin a claim")?;
        let rows = sqlx::query(concat!(
            "UPDATE retirement SET lease_owner = $1, lease_until = $2, due_at = $2, \
             attempt = attempt + 1, updated_at = $3, \
             lost_leases = lost_leases + CASE WHEN lease_owner IS NULL THEN 0 ELSE 1 END \
             WHERE id IN (SELECT id FROM retirement WHERE ended_at IS NULL AND due_at IS NOT NULL \
             AND due_at <= $3 ORDER BY due_at, id LIMIT $4) RETURNING ",
            claimed_columns!()
        ))
        .bind(owner)
        .bind(until)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await
        .ctx("claim due retirements")?;
        tx.commit().await.ctx("commit a claim")?;
        let mut claimed = rows
            .iter()
            .map(Claimed::from_row)
            .collect::<Result<Vec<_>, _>>()
            .ctx("decode a claimed retirement")?;
        claimed.sort_by_key(|c| c.id);
        Ok(claimed)
    }

    async fn write_back(
        &self,
        owner: &str,
        applied: &[Applied],
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, StoreError> {
        let actor = format!("driver:{owner}");
        let mut tx = self
            .pool
            .begin_with(BEGIN_IMMEDIATE)
            .await
            .ctx("begin a write-back")?;
        let mut done = Vec::with_capacity(applied.len());
        for a in applied {
            let fence = Some((a.from_state.as_str(), owner, a.attempt));
            let (warned, reminders) = (a.warned_at(), a.reminders_sent());
            let changed = bind_apply!(a.id, fence, &a.transition, now, a.relay, warned, reminders)
                .execute(&mut *tx)
                .await
                .ctx("apply an outcome")?
                .rows_affected();
            if changed == 1 {
                for e in a.events(now) {
                    bind_event!(
                        a.id,
                        e.at,
                        &actor,
                        Some(e.from_state),
                        e.transition,
                        e.attempt
                    )
                    .execute(&mut *tx)
                    .await
                    .ctx("record an outcome")?;
                }
                done.push(a.id);
            }
        }
        tx.commit().await.ctx("commit a write-back")?;
        Ok(done)
    }

    async fn subscribe(&self) -> Result<Option<super::Wakeup>, StoreError> {
        Ok(None)
    }
}
