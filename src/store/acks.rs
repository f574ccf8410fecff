//! `service_ack`: which downstream services each retirement awaits, which delivered
//! webhooks and which acknowledged. Kept apart from the retirement row and the handlers'
//! results: the notify stage and `lethe ack` (and the API) meet here.

use chrono::{DateTime, Utc};

/// One downstream service's acknowledgement of one retirement.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceAck {
    /// The retirement.
    pub retirement_id: i64,
    /// The service, by name.
    pub service: String,
    /// It deleted its copy and said so.
    pub acked: bool,
    /// When the retirement first awaited it (its ack deadline runs from here).
    pub created_at: Option<DateTime<Utc>>,
    /// When its webhook was delivered, if it has one and it was.
    pub notified_at: Option<DateTime<Utc>>,
    /// When it acknowledged.
    pub acked_at: Option<DateTime<Utc>>,
    /// Who recorded the acknowledgement (an operator, an API key).
    pub acked_by: Option<String>,
}

/// What recording an acknowledgement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckResult {
    /// Recorded now, with an event; the retirement is due at once.
    Recorded,
    /// Already acknowledged then (nothing changed).
    Already(DateTime<Utc>),
    /// The retirement does not await this service (its notify stage has not run for it).
    NotAwaited,
}

/// A retirement with the PII it still has: what the API's user list shows.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    /// The retirement.
    pub retirement: super::Retirement,
    /// Its email, until erased.
    pub email: Option<String>,
    /// Its username, until erased.
    pub username: Option<String>,
    /// Its services' acknowledgements, by service name.
    pub acks: Vec<ServiceAck>,
}

/// Which retirements a user list holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserFilter {
    /// Every one.
    All,
    /// Those awaiting (or acknowledged by) this downstream service; `acked` narrows to
    /// one side.
    Service {
        /// The service.
        service: String,
        /// Only acknowledged (`true`) or only awaited (`false`).
        acked: Option<bool>,
    },
    /// Those standing in one of these states (an errored one where it failed), and, when
    /// `protected` says, only those stopped (or not) on a protected table there.
    States {
        /// The states.
        states: Vec<String>,
        /// Errored on a protected table (`Some(true)`), or not (`Some(false)`).
        protected: Option<bool>,
    },
    /// Those any service has on this side (`acked`), or standing in one of these states.
    AnyService {
        /// Acknowledged or awaited.
        acked: bool,
        /// Or in one of these states.
        states: Vec<String>,
    },
}

/// A page of the user list, in a stable order so a page never moves under a consumer
/// walking the list: a service's list by when each user was handed to it, then id;
/// the others by when the retirement was opened, then id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserQuery {
    /// Which retirements.
    pub filter: UserFilter,
    /// Exactly this email.
    pub email: Option<String>,
    /// Exactly this username.
    pub username: Option<String>,
    /// Only the retirement with this public id.
    pub public_id: Option<String>,
    /// Never these states (aborted retirements).
    pub hidden_state: String,
    /// Rows skipped.
    pub offset: i64,
    /// Rows at most.
    pub limit: i64,
}

impl UserFilter {
    /// (mode, service, status, states, protected) as the user list's SQL binds them.
    pub(crate) fn params(&self) -> (i32, Option<&str>, Option<&str>, &[String], Option<bool>) {
        let status = |acked: bool| if acked { "deleted" } else { "to_delete" };
        match self {
            UserFilter::All => (0, None, None, &[], None),
            UserFilter::Service { service, acked } => {
                (1, Some(service.as_str()), acked.map(status), &[], None)
            }
            UserFilter::States { states, protected } => {
                (2, None, None, states.as_slice(), *protected)
            }
            UserFilter::AnyService { acked, states } => {
                (3, None, Some(status(*acked)), states.as_slice(), None)
            }
        }
    }
}

/// Decodes acknowledgement rows of either backend.
pub(crate) fn decode_acks<R: sqlx::Row>(rows: &[R]) -> Result<Vec<ServiceAck>, super::StoreError>
where
    for<'r> ServiceAck: sqlx::FromRow<'r, R>,
{
    use super::QueryContext;
    rows.iter()
        .map(|r| <ServiceAck as sqlx::FromRow<R>>::from_row(r))
        .collect::<Result<Vec<_>, _>>()
        .ctx("decode an ack")
}

/// Columns of a `ServiceAck`.
macro_rules! ack_columns {
    () => {
        "retirement_id, service, (status = 'deleted') AS acked, created_at, notified_at, acked_at, acked_by"
    };
}

pub(crate) use ack_columns;

/// The acknowledgement methods of `Store`, the same SQL on both backends (see
/// `shared_methods!` for `begin`, `lock`, `in_list` and `pairs`).
macro_rules! ack_methods {
    (begin: $begin:expr, lock: $lock:expr, in_list: $in_list:ident, pairs: $pairs:ident $(,)?) => {
        fn await_acks<'a>(
            &'a self,
            ids: &'a [i64],
            services: &'a [String],
            at: chrono::DateTime<chrono::Utc>,
        ) -> $crate::store::BoxFuture<'a, Result<Vec<$crate::store::ServiceAck>, $crate::store::StoreError>>
        {
            Box::pin(async move {
                use $crate::store::QueryContext;
                let (mut pair_ids, mut pair_services) = (Vec::new(), Vec::new());
                for id in ids {
                    for service in services {
                        pair_ids.push(*id);
                        pair_services.push(service.clone());
                    }
                }
                let mut tx = self.pool.begin_with($begin).await.ctx("begin awaiting acks")?;
                sqlx::query(concat!(
                    "INSERT INTO service_ack (retirement_id, service, status, created_at) \
                     SELECT p.*, 'to_delete', $3 FROM (",
                    $pairs!("$1", "$2"),
                    ") AS p WHERE true ON CONFLICT (retirement_id, service) DO NOTHING"
                ))
                .bind(Self::list_param(&pair_ids))
                .bind(Self::list_param(&pair_services))
                .bind(at)
                .execute(&mut *tx)
                .await
                .ctx("record awaited acks")?;
                // A retirement aborted while its notify stage ran awaits nobody: an operator's
                // abort withdrew its rows, and this late insert must not bring them back.
                sqlx::query(concat!(
                    "DELETE FROM service_ack WHERE retirement_id ",
                    $in_list!("$1"),
                    " AND retirement_id IN (SELECT id FROM retirement WHERE ended_at IS NOT NULL)"
                ))
                .bind(Self::list_param(ids))
                .execute(&mut *tx)
                .await
                .ctx("withdraw acks of ended retirements")?;
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    $crate::store::acks::ack_columns!(),
                    " FROM service_ack WHERE retirement_id ",
                    $in_list!("$1"),
                    " ORDER BY retirement_id, service"
                ))
                .bind(Self::list_param(ids))
                .fetch_all(&mut *tx)
                .await
                .ctx("read acks")?;
                tx.commit().await.ctx("commit awaited acks")?;
                $crate::store::acks::decode_acks(&rows)
            })
        }

        fn mark_notified<'a>(
            &'a self,
            id: i64,
            service: &'a str,
            at: chrono::DateTime<chrono::Utc>,
        ) -> $crate::store::BoxFuture<'a, Result<(), $crate::store::StoreError>> {
            Box::pin(async move {
                use $crate::store::QueryContext;
                sqlx::query(
                    "UPDATE service_ack SET notified_at = $3 \
                     WHERE retirement_id = $1 AND service = $2 AND notified_at IS NULL",
                )
                .bind(id)
                .bind(service)
                .bind(at)
                .execute(&self.pool)
                .await
                .ctx("record a delivered webhook")?;
                Ok(())
            })
        }

        fn acknowledge<'a>(
            &'a self,
            id: i64,
            service: &'a str,
            actor: &'a str,
            at: chrono::DateTime<chrono::Utc>,
        ) -> $crate::store::BoxFuture<'a, Result<$crate::store::AckResult, $crate::store::StoreError>>
        {
            Box::pin(async move {
                use $crate::store::{AckResult, QueryContext};
                use sqlx::Row;
                let mut tx = self.pool.begin_with($begin).await.ctx("begin an ack")?;
                let ack = sqlx::query(concat!(
                    "SELECT status, acked_at FROM service_ack WHERE retirement_id = $1 AND service = $2",
                    $lock
                ))
                .bind(id)
                .bind(service)
                .fetch_optional(&mut *tx)
                .await
                .ctx("lock an ack")?;
                let Some(ack) = ack else {
                    return Ok(AckResult::NotAwaited);
                };
                let status: String = ack.try_get("status").ctx("decode an ack")?;
                if status == "deleted" {
                    let when: Option<chrono::DateTime<chrono::Utc>> =
                        ack.try_get("acked_at").ctx("decode an ack")?;
                    return Ok(AckResult::Already(when.unwrap_or(at)));
                }
                // Re-read under the ack's lock: a retirement that ended meanwhile awaits nothing.
                let row = sqlx::query(
                    "SELECT state, attempt FROM retirement WHERE id = $1 AND ended_at IS NULL",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .ctx("read the acknowledged retirement")?;
                let Some(row) = row else {
                    return Ok(AckResult::NotAwaited);
                };
                let state: String = row.try_get("state").ctx("decode a retirement")?;
                let attempt: i32 = row.try_get("attempt").ctx("decode a retirement")?;
                sqlx::query(
                    "UPDATE service_ack SET status = 'deleted', acked_at = $3, acked_by = $4 \
                     WHERE retirement_id = $1 AND service = $2",
                )
                .bind(id)
                .bind(service)
                .bind(at)
                .bind(actor)
                .execute(&mut *tx)
                .await
                .ctx("record an ack")?;
                sqlx::query($crate::store::sql::INSERT_EVENT)
                    .bind(id)
                    .bind(at)
                    .bind(actor)
                    .bind(Some(state.as_str()))
                    .bind(state.as_str())
                    .bind($crate::domain::EventOutcome::Ack.as_str())
                    .bind(attempt)
                    .bind(serde_json::json!({ "service": service }).to_string())
                    .execute(&mut *tx)
                    .await
                    .ctx("record the ack event")?;
                // A retirement waiting for its acks is due now, so the driver sees this one; a
                // claimed one is made due by its write-back (the ack is newer than the claim).
                sqlx::query(
                    "UPDATE retirement SET due_at = $2 WHERE id = $1 AND ended_at IS NULL \
                     AND lease_owner IS NULL AND due_at IS NOT NULL AND due_at > $2",
                )
                .bind(id)
                .bind(at)
                .execute(&mut *tx)
                .await
                .ctx("wake the acknowledged retirement")?;
                self.notify(&mut tx).await?;
                tx.commit().await.ctx("commit an ack")?;
                Ok(AckResult::Recorded)
            })
        }

        fn users<'a>(
            &'a self,
            query: &'a $crate::store::UserQuery,
        ) -> $crate::store::BoxFuture<'a, Result<Vec<$crate::store::UserRow>, $crate::store::StoreError>>
        {
            Box::pin(async move {
                use $crate::store::QueryContext;
                use sqlx::Row;
                let (mode, service, status, states, protected) = query.filter.params();
                let plain = query.email.is_none() && query.username.is_none() && query.public_id.is_none();
                let rows = match (mode, service, status) {
                    // The hot path: a consumer walking its to_delete (or deleted) list. The page
                    // is cut from the service's ack rows alone (an index-only scan), then joined:
                    // aborted retirements have no ack rows, so nothing is left to filter.
                    (1, Some(service), Some(status)) if plain => sqlx::query(concat!(
                        "SELECT ",
                        $crate::store::retirement_columns!(),
                        ", email, username FROM (SELECT retirement_id, created_at AS handed \
                         FROM service_ack WHERE service = $1 AND status = $2 \
                         ORDER BY created_at, retirement_id LIMIT $3 OFFSET $4) a \
                         JOIN retirement r ON r.id = a.retirement_id ORDER BY a.handed, a.retirement_id"
                    ))
                    .bind(service)
                    .bind(status)
                    .bind(query.limit)
                    .bind(query.offset)
                    .fetch_all(&self.pool)
                    .await
                    .ctx("list a service's users")?,
                    // A service's own list (the hot path: consumers walk it) runs from its
                    // acknowledgement rows, in the order they were handed over (a subquery, so the
                    // retirement's columns keep their names).
                    (1, Some(service), _) => sqlx::query(concat!(
                        "SELECT ",
                        $crate::store::retirement_columns!(),
                        ", email, username FROM retirement r JOIN (SELECT retirement_id, created_at AS handed \
                         FROM service_ack WHERE service = $1 AND ($2 IS NULL OR status = $2)) a ON a.retirement_id = r.id \
                         WHERE state <> $3 AND ($4 IS NULL OR email = $4) AND ($5 IS NULL OR username = $5) \
                         AND ($6 IS NULL OR public_id = $6) \
                         ORDER BY a.handed, a.retirement_id LIMIT $7 OFFSET $8"
                    ))
                    .bind(service)
                    .bind(status)
                    .bind(&query.hidden_state)
                    .bind(query.email.as_deref())
                    .bind(query.username.as_deref())
                    .bind(query.public_id.as_deref())
                    .bind(query.limit)
                    .bind(query.offset)
                    .fetch_all(&self.pool)
                    .await
                    .ctx("list a service's users")?,
                    _ => sqlx::query(concat!(
                    "SELECT ",
                    $crate::store::retirement_columns!(),
                    ", email, username FROM retirement r WHERE state <> $1 \
                     AND ($2 IS NULL OR email = $2) AND ($3 IS NULL OR username = $3) AND ( \
                     $4 = 0 \
                     OR ($4 = 1 AND EXISTS (SELECT 1 FROM service_ack a WHERE a.retirement_id = r.id \
                         AND a.service = $5 AND ($6 IS NULL OR a.status = $6))) \
                     OR ($4 = 2 AND COALESCE(failed_state, state) ",
                    $in_list!("$7"),
                    " AND ($11 IS NULL OR (failed_state IS NOT NULL AND COALESCE(last_error, '') LIKE 'protected%') = $11)) \
                     OR ($4 = 3 AND (EXISTS (SELECT 1 FROM service_ack a WHERE a.retirement_id = r.id \
                         AND a.status = $6) OR COALESCE(failed_state, state) ",
                    $in_list!("$7"),
                    "))) AND ($10 IS NULL OR public_id = $10) ORDER BY created_at, id LIMIT $8 OFFSET $9"
                ))
                .bind(&query.hidden_state)
                .bind(query.email.as_deref())
                .bind(query.username.as_deref())
                .bind(mode)
                .bind(service)
                .bind(status)
                .bind(Self::list_param(states))
                .bind(query.limit)
                .bind(query.offset)
                .bind(query.public_id.as_deref())
                .bind(protected)
                .fetch_all(&self.pool)
                .await
                .ctx("list users")?,
                };
                let mut users = rows
                    .iter()
                    .map(|r| {
                        Ok($crate::store::UserRow {
                            retirement: sqlx::FromRow::from_row(r)?,
                            email: r.try_get("email")?,
                            username: r.try_get("username")?,
                            acks: Vec::new(),
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .ctx("decode a user")?;
                // A second query, by id: joining the ack rows in the page query made
                // PostgreSQL hash the whole service_ack table for every page (api bench).
                let ids: Vec<i64> = users.iter().map(|u| u.retirement.id).collect();
                let mut by_id: std::collections::HashMap<i64, Vec<$crate::store::ServiceAck>> =
                    std::collections::HashMap::with_capacity(users.len());
                for ack in self.acks_of(&ids).await? {
                    by_id.entry(ack.retirement_id).or_default().push(ack);
                }
                for user in &mut users {
                    user.acks = by_id.remove(&user.retirement.id).unwrap_or_default();
                }
                Ok(users)
            })
        }

        fn acks_of<'a>(
            &'a self,
            ids: &'a [i64],
        ) -> $crate::store::BoxFuture<'a, Result<Vec<$crate::store::ServiceAck>, $crate::store::StoreError>>
        {
            Box::pin(async move {
                use $crate::store::QueryContext;
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    $crate::store::acks::ack_columns!(),
                    " FROM service_ack WHERE retirement_id ",
                    $in_list!("$1"),
                    " ORDER BY retirement_id, service"
                ))
                .bind(Self::list_param(ids))
                .fetch_all(&self.pool)
                .await
                .ctx("read acks")?;
                $crate::store::acks::decode_acks(&rows)
            })
        }

        fn acks(
            &self,
            id: i64,
        ) -> $crate::store::BoxFuture<'_, Result<Vec<$crate::store::ServiceAck>, $crate::store::StoreError>>
        {
            Box::pin(async move {
                let ids = [id];
                self.acks_of(&ids).await
            })
        }
    };
}

pub(crate) use ack_methods;
