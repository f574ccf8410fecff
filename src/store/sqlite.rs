//! SQLite store: the embedded single-daemon default. Writers serialise on `BEGIN IMMEDIATE`.

use super::sql::{self, bind_apply, bind_event, shared_methods};
use super::{
    Applied, Backend, Claimed, EnqueueOptions, EnqueueOutcome, NewRetirement, QueryContext, Store,
    StoreError, claimed_columns, decode_claimed, redact_url,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use std::str::FromStr;
use std::time::Duration;

/// A store on a SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

const BEGIN_IMMEDIATE: &str = "BEGIN IMMEDIATE";

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
    shared_methods!(BEGIN_IMMEDIATE, "", "SELECT value FROM json_each($2)");

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
                        .bind(options.event_detail(n.reason.as_str()))
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
            .map(|r| decode_claimed!(r))
            .collect::<Result<Vec<_>, _>>()
            .ctx("decode a claimed retirement")?;
        claimed.sort_by_key(|c| c.id);
        Ok(claimed)
    }

    async fn renew(
        &self,
        owner: &str,
        ids: &[i64],
        until: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let ids_json = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
        let done = sqlx::query(
            "UPDATE retirement SET lease_until = $1, due_at = $1 \
             WHERE lease_owner = $2 AND id IN (SELECT value FROM json_each($3))",
        )
        .bind(until)
        .bind(owner)
        .bind(ids_json)
        .execute(&self.pool)
        .await
        .ctx("renew leases")?;
        Ok(done.rows_affected())
    }

    async fn open_among(
        &self,
        subjects: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut open = std::collections::HashSet::new();
        for chunk in subjects.chunks(10_000) {
            let chunk = chunk.to_vec();
            let rows = sqlx::query("SELECT subject FROM retirement WHERE ended_at IS NULL AND subject IN (SELECT value FROM json_each($1))")
                .bind(serde_json::to_string(&chunk).unwrap_or_else(|_| "[]".into()))
                .fetch_all(&self.pool)
                .await
                .ctx("find open retirements")?;
            for row in rows {
                open.insert(row.try_get("subject").ctx("decode a subject")?);
            }
        }
        Ok(open)
    }

    async fn release(
        &self,
        owner: &str,
        claimed: &[(i64, i32)],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self
            .pool
            .begin_with(BEGIN_IMMEDIATE)
            .await
            .ctx("begin a release")?;
        let mut released = 0;
        for (id, attempt) in claimed {
            released += sqlx::query(sql::RELEASE_ONE)
                .bind(now)
                .bind(id)
                .bind(owner)
                .bind(attempt)
                .execute(&mut *tx)
                .await
                .ctx("release a lease")?
                .rows_affected();
        }
        tx.commit().await.ctx("commit a release")?;
        Ok(released)
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
