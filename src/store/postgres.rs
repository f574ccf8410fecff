//! PostgreSQL store: production; several daemons share it. Claims use
//! `FOR UPDATE SKIP LOCKED`; write-backs and enqueues are set-based (`UNNEST`), one
//! statement per batch; operator actions and new work wake drivers with NOTIFY.

use super::sql::shared_methods;
use super::{
    Applied, Backend, Claimed, EnqueueOptions, EnqueueOutcome, NewRetirement, QueryContext, Store,
    StoreError, Wakeup, redact_url,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{FromRow, PgPool, Postgres, Row, Transaction};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// NOTIFY channel for wake-ups.
const CHANNEL: &str = "lethe_wakeup";

/// Rows per statement for bulk enqueues.
const ENQUEUE_CHUNK: usize = 5_000;

/// After a column: matches any element of the array bound as `$p`.
macro_rules! in_array {
    ($p:literal) => {
        concat!("= ANY(", $p, ")")
    };
}

/// The pairs, element by element, of the arrays bound as `$a` and `$b`.
macro_rules! unnest_pairs {
    ($a:literal, $b:literal) => {
        concat!("SELECT * FROM UNNEST(", $a, ", ", $b, ")")
    };
}

/// A store on PostgreSQL.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects a pool of `max_connections`.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let connect_error = |source| StoreError::Connect {
            url: redact_url(url),
            source,
        };
        crate::db::probe(url).await.map_err(connect_error)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await
            .map_err(connect_error)?;
        Ok(Self { pool })
    }

    /// The underlying pool (tests, benchmarks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A list bound as one parameter: a PostgreSQL array.
    fn list_param<T>(items: &[T]) -> &[T] {
        items
    }

    async fn notify(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&mut **tx)
            .await
            .ctx("notify drivers")?;
        Ok(())
    }

    /// Daemons starting together sync the states one at a time.
    async fn serialize_state_sync(
        &self,
        tx: &mut Transaction<'_, Postgres>,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock(7431001)")
            .execute(&mut **tx)
            .await
            .ctx("lock the state sync")?;
        Ok(())
    }
}

#[async_trait]
impl Store for PgStore {
    shared_methods! {
        begin: "BEGIN",
        lock: " FOR UPDATE",
        in_list: in_array,
        pairs: unnest_pairs,
    }

    super::acks::ack_methods! {
        begin: "BEGIN",
        lock: " FOR UPDATE",
        in_list: in_array,
        pairs: unnest_pairs,
    }

    super::overview::overview_methods! {
        day: "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    }

    super::tasks::task_methods! {}

    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        super::embedded_migrator!("postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn check_migrated(&self) -> Result<(), StoreError> {
        let applied = super::applied_versions(
            sqlx::query_scalar::<_, i64>(super::APPLIED_MIGRATIONS)
                .fetch_all(&self.pool)
                .await,
        )?;
        super::require_migrations(&super::embedded_migrator!("postgres"), &applied)
    }

    async fn enqueue_with(
        &self,
        initial_state: &str,
        new: &[NewRetirement],
        options: EnqueueOptions,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let mut by_subject: HashMap<String, EnqueueOutcome> = HashMap::with_capacity(new.len());
        let mut tx = self.pool.begin().await.ctx("begin an enqueue")?;
        for chunk in new.chunks(ENQUEUE_CHUNK) {
            let mut seen = HashSet::with_capacity(chunk.len());
            let chunk: Vec<&NewRetirement> = chunk
                .iter()
                .filter(|n| !by_subject.contains_key(&n.subject) && seen.insert(n.subject.as_str()))
                .collect();
            let column = |f: fn(&NewRetirement) -> Option<String>| -> Vec<Option<String>> {
                chunk.iter().map(|n| f(n)).collect()
            };
            let rows = sqlx::query(
                "WITH input AS ( \
                   SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $10::text[], $12::text[]) \
                   AS u(subject, email, username, subject_hash, email_hash, reason, locale, rule)), \
                 created AS ( \
                   INSERT INTO retirement (subject, email, username, subject_hash, email_hash, reason, locale, rule, \
                     state, due_at, attempt, created_at, updated_at, exclusion_override) \
                   SELECT subject, email, username, subject_hash, email_hash, reason, locale, rule, $7, $8, 0, $8, $8, CAST($11 AS BOOLEAN) FROM input \
                   ON CONFLICT (subject) WHERE ended_at IS NULL DO NOTHING \
                   RETURNING id, subject, reason, rule), \
                 events AS ( \
                   INSERT INTO retirement_event (retirement_id, at, actor, from_state, to_state, outcome, attempt, detail) \
                   SELECT id, $8, $9, NULL, $7, 'enqueued', 0, \
                     (jsonb_build_object('reason', reason) \
                       || CASE WHEN rule IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('rule', rule) END \
                       || CASE WHEN CAST($11 AS BOOLEAN) THEN jsonb_build_object('exclusion_override', true) ELSE '{}'::jsonb END)::text FROM created) \
                 SELECT id, subject FROM created",
            )
            .bind(column(|n| Some(n.subject.clone())))
            .bind(column(|n| n.email.clone()))
            .bind(column(|n| n.username.clone()))
            .bind(column(|n| Some(n.subject_hash.clone())))
            .bind(column(|n| n.email_hash.clone()))
            .bind(column(|n| Some(n.reason.to_string())))
            .bind(initial_state)
            .bind(now)
            .bind(actor)
            .bind(column(|n| n.locale.clone()))
            .bind(options.exclusion_override)
            .bind(column(|n| n.rule.clone()))
            .fetch_all(&mut *tx)
            .await
            .ctx("insert retirements")?;
            for row in rows {
                let id: i64 = row.try_get("id").ctx("decode an id")?;
                let subject: String = row.try_get("subject").ctx("decode a subject")?;
                by_subject.insert(subject, EnqueueOutcome::Created(id));
            }
            let missing: Vec<String> = chunk
                .iter()
                .filter(|n| !by_subject.contains_key(&n.subject))
                .map(|n| n.subject.clone())
                .collect();
            if !missing.is_empty() {
                let rows = sqlx::query(
                    "SELECT id, subject FROM retirement WHERE subject = ANY($1) AND ended_at IS NULL",
                )
                .bind(&missing)
                .fetch_all(&mut *tx)
                .await
                .ctx("find open retirements")?;
                for row in rows {
                    let id: i64 = row.try_get("id").ctx("decode an id")?;
                    let subject: String = row.try_get("subject").ctx("decode a subject")?;
                    by_subject.insert(subject, EnqueueOutcome::AlreadyOpen(id));
                }
            }
        }
        self.notify(&mut tx).await?;
        tx.commit().await.ctx("commit an enqueue")?;
        // A subject listed twice is created once, then reported as already open.
        let mut reported = HashSet::with_capacity(new.len());
        new.iter()
            .map(|n| {
                let outcome = by_subject
                    .get(&n.subject)
                    .copied()
                    .ok_or(StoreError::Query {
                        context: "enqueue (a concurrent enqueue raced this one: retry)",
                        source: sqlx::Error::RowNotFound,
                    })?;
                Ok(match outcome {
                    EnqueueOutcome::Created(id) if !reported.insert(n.subject.as_str()) => {
                        EnqueueOutcome::AlreadyOpen(id)
                    }
                    other => other,
                })
            })
            .collect()
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let until = crate::domain::after(now, lease);
        // One statement, committed at once: the claim is its own short transaction.
        let rows = sqlx::query(concat!(
            "UPDATE retirement r SET lease_owner = $1, lease_until = $2, due_at = $2, \
             attempt = r.attempt + 1, updated_at = $3, \
             lost_leases = r.lost_leases + CASE WHEN r.lease_owner IS NULL THEN 0 ELSE 1 END \
             WHERE r.id = ANY(ARRAY(SELECT id FROM retirement WHERE ended_at IS NULL AND due_at IS NOT NULL \
             AND due_at <= $3 ORDER BY due_at, id LIMIT $4 FOR UPDATE SKIP LOCKED)) RETURNING ",
            "r.id, r.subject, r.email, r.username, r.reason, r.state, r.attempt, r.lost_leases, r.warned_at, r.created_at, r.locale, r.reminders_sent, r.exclusion_override, r.rule"
        ))
        .bind(owner)
        .bind(until)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .ctx("claim due retirements")?;
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
        if applied.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = applied.iter().map(|a| a.id).collect();
        let from: Vec<&str> = applied.iter().map(|a| a.from_state.as_str()).collect();
        let fence_attempts: Vec<i32> = applied.iter().map(|a| a.attempt).collect();
        let to: Vec<&str> = applied
            .iter()
            .map(|a| a.transition.to_state.as_str())
            .collect();
        let due: Vec<Option<DateTime<Utc>>> = applied.iter().map(|a| a.transition.due_at).collect();
        let attempts: Vec<i32> = applied.iter().map(|a| a.transition.attempt).collect();
        let errors: Vec<Option<&str>> = applied
            .iter()
            .map(|a| a.transition.last_error.as_deref())
            .collect();
        let failed: Vec<Option<&str>> = applied
            .iter()
            .map(|a| a.transition.failed_state.as_deref())
            .collect();
        let ends: Vec<bool> = applied.iter().map(|a| a.transition.ends).collect();
        let warned: Vec<Option<DateTime<Utc>>> = applied.iter().map(Applied::warned_at).collect();
        let relays: Vec<Option<DateTime<Utc>>> = applied.iter().map(|a| a.relay).collect();
        let reminders: Vec<Option<i32>> = applied.iter().map(Applied::reminders_sent).collect();
        // Events, oldest first per retirement (carried steps, then the outcome).
        let events: Vec<(i64, super::EventRow<'_>)> = applied
            .iter()
            .flat_map(|a| a.events(now).into_iter().map(move |e| (a.id, e)))
            .collect();
        let event_ids: Vec<i64> = events.iter().map(|(id, _)| *id).collect();
        let event_at: Vec<DateTime<Utc>> = events.iter().map(|(_, e)| e.at).collect();
        let event_from: Vec<&str> = events.iter().map(|(_, e)| e.from_state).collect();
        let event_to: Vec<&str> = events
            .iter()
            .map(|(_, e)| e.transition.to_state.as_str())
            .collect();
        let event_outcomes: Vec<&str> = events
            .iter()
            .map(|(_, e)| e.transition.outcome.as_str())
            .collect();
        let event_attempts: Vec<i32> = events.iter().map(|(_, e)| e.attempt).collect();
        let event_details: Vec<String> = events
            .iter()
            .map(|(_, e)| e.transition.detail.to_string())
            .collect();
        // One statement: the fenced UPDATE and the events of the rows it changed.
        // A same-state wait is due at once if a service acknowledged during the claim
        // (as APPLY_ONE).
        let rows = sqlx::query(
            "WITH input AS ( \
               SELECT * FROM UNNEST($3::bigint[], $4::text[], $5::int[], $6::text[], $7::timestamptz[], \
                 $8::int[], $9::text[], $10::text[], $11::bool[], $12::timestamptz[], \
                 $13::timestamptz[], $14::int[]) \
               AS u(id, from_state, fence_attempt, to_state, due_at, attempt, last_error, failed_state, \
                 ends, warned_at, relay_until, reminders_sent)), \
             changed AS ( \
               UPDATE retirement r SET state = i.to_state, due_at = COALESCE(i.relay_until, \
                 CASE WHEN i.to_state = r.state AND i.due_at > $1 AND EXISTS (SELECT 1 FROM service_ack a \
                   WHERE a.retirement_id = r.id AND a.acked_at >= r.updated_at AND a.acked_at <= $1) THEN $1 ELSE i.due_at END), \
                 attempt = CASE WHEN i.relay_until IS NULL THEN i.attempt ELSE 1 END, lost_leases = 0, \
                 last_error = i.last_error, failed_state = i.failed_state, \
                 warned_at = COALESCE(i.warned_at, r.warned_at), \
                 reminders_sent = COALESCE(i.reminders_sent, r.reminders_sent), \
                 locale = CASE WHEN i.ends THEN NULL ELSE r.locale END, \
                 lease_owner = CASE WHEN i.relay_until IS NULL THEN NULL ELSE $2 END, lease_until = i.relay_until, \
                 updated_at = $1, ended_at = CASE WHEN i.ends THEN $1 ELSE NULL END, \
                 subject = CASE WHEN i.ends THEN NULL ELSE r.subject END, \
                 email = CASE WHEN i.ends THEN NULL ELSE r.email END, \
                 username = CASE WHEN i.ends THEN NULL ELSE r.username END \
               FROM input i \
               WHERE r.id = i.id AND r.state = i.from_state AND r.lease_owner = $2 AND r.attempt = i.fence_attempt \
               RETURNING r.id), \
             events AS ( \
               INSERT INTO retirement_event (retirement_id, at, actor, from_state, to_state, outcome, attempt, detail) \
               SELECT e.id, e.at, 'driver:' || $2, e.from_state, e.to_state, e.outcome, e.attempt, e.detail \
               FROM UNNEST($15::bigint[], $16::timestamptz[], $17::text[], $18::text[], $19::text[], $20::int[], $21::text[]) \
                 WITH ORDINALITY AS e(id, at, from_state, to_state, outcome, attempt, detail, n) \
               JOIN changed c ON c.id = e.id ORDER BY e.n) \
             SELECT id FROM changed",
        )
        .bind(now)
        .bind(owner)
        .bind(&ids)
        .bind(&from)
        .bind(&fence_attempts)
        .bind(&to)
        .bind(&due)
        .bind(&attempts)
        .bind(&errors)
        .bind(&failed)
        .bind(&ends)
        .bind(&warned)
        .bind(&relays)
        .bind(&reminders)
        .bind(&event_ids)
        .bind(&event_at)
        .bind(&event_from)
        .bind(&event_to)
        .bind(&event_outcomes)
        .bind(&event_attempts)
        .bind(&event_details)
        .fetch_all(&self.pool)
        .await
        .ctx("apply outcomes")?;
        rows.iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()
            .ctx("decode an id")
    }

    async fn subscribe(&self) -> Result<Option<Wakeup>, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .ctx("connect the wake-up listener")?;
        listener.listen(CHANNEL).await.ctx("listen for wake-ups")?;
        let wake = Arc::new(tokio::sync::Notify::new());
        let signal = wake.clone();
        let listener = tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(_) => signal.notify_one(),
                    Err(error) => {
                        // PgListener reconnects on the next recv; polling covers the gap.
                        tracing::warn!(%error, "wake-up listener lost its connection");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Some(Wakeup::new(wake, listener)))
    }
}
