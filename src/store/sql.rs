//! SQL shared by both backends (`$N` parameters work in PostgreSQL and SQLite alike),
//! and the query helpers both implementations expand.

/// Applies one transition; fenced by (state, lease_owner, attempt) when `$10` is not NULL;
/// `$13`, when not NULL, keeps the lease until then for the next state (attempt 1).
/// A wait in the same state is due at once instead when a service acknowledged since the
/// claim (`updated_at` is the claim's time): that ack could not wake a claimed row. An ack
/// stamped after now (another host's clock ahead) waits for the recheck: no tight loop.
pub(crate) const APPLY_ONE: &str = "UPDATE retirement SET state = $1, \
     due_at = COALESCE($13, CASE WHEN $1 = state AND $2 > $7 AND EXISTS (SELECT 1 FROM service_ack a \
       WHERE a.retirement_id = retirement.id AND a.acked_at >= retirement.updated_at AND a.acked_at <= $7) THEN $7 ELSE $2 END), attempt = CASE WHEN $13 IS NULL THEN $3 ELSE 1 END, lost_leases = 0, \
     last_error = $4, failed_state = $5, warned_at = COALESCE($6, warned_at), \
     reminders_sent = COALESCE($14, reminders_sent), locale = CASE WHEN $8 THEN NULL ELSE locale END, \
     lease_owner = CASE WHEN $13 IS NULL THEN NULL ELSE $10 END, lease_until = $13, updated_at = $7, \
     ended_at = CASE WHEN $8 THEN $7 ELSE NULL END, \
     subject = CASE WHEN $8 THEN NULL ELSE subject END, \
     email = CASE WHEN $8 THEN NULL ELSE email END, \
     username = CASE WHEN $8 THEN NULL ELSE username END \
     WHERE id = $9 AND ($10 IS NULL OR (state = $11 AND lease_owner = $10 AND attempt = $12))";

/// Inserts one event.
pub(crate) const INSERT_EVENT: &str = "INSERT INTO retirement_event \
     (retirement_id, at, actor, from_state, to_state, outcome, attempt, detail) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Opens one retirement unless the subject has an open one.
pub(crate) const ENQUEUE_ONE: &str = "INSERT INTO retirement \
     (subject, email, username, subject_hash, email_hash, reason, state, due_at, attempt, created_at, updated_at, locale, exclusion_override, rule) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $8, $8, $9, $10, $11) \
     ON CONFLICT (subject) WHERE ended_at IS NULL DO NOTHING RETURNING id";

/// The open retirement of a subject.
pub(crate) const OPEN_ID: &str =
    "SELECT id FROM retirement WHERE subject = $1 AND ended_at IS NULL";

/// Open retirements in, or failed in, a state.
pub(crate) const OPEN_IN_STATE: &str =
    "SELECT COUNT(*) FROM retirement WHERE ended_at IS NULL AND (state = $1 OR failed_state = $1)";

/// Writes one state of states.toml.
pub(crate) const UPSERT_STATE: &str = "INSERT INTO state (name, position, role) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET position = excluded.position, role = excluded.role";

/// Ids of the retirements with this id, open for this subject, or under these hashes
/// (a union, so each part uses its index: the subject arm matches the partial index of
/// open retirements; ended ones have no subject anyway).
macro_rules! matching_ids {
    ($id:literal, $subject:literal, $subject_hash:literal, $email_hash:literal) => {
        concat!(
            "SELECT CAST(",
            $id,
            " AS BIGINT) UNION ALL SELECT id FROM retirement WHERE subject = ",
            $subject,
            " AND ended_at IS NULL UNION ALL SELECT retirement_id FROM retirement_key WHERE key_hash = ",
            $subject_hash,
            " OR key_hash = ",
            $email_hash
        )
    };
}

/// Finds retirements by id, subject or hashes; the open one first, then the newest.
pub(crate) const FIND: &str = concat!(
    "SELECT ",
    super::retirement_columns!(),
    " FROM retirement WHERE id IN (",
    matching_ids!("$1", "$2", "$3", "$4"),
    ") ORDER BY (ended_at IS NULL) DESC, id DESC LIMIT 1"
);

/// One retirement by id (operator actions).
pub(crate) const BY_ID: &str = concat!(
    "SELECT ",
    super::retirement_columns!(),
    " FROM retirement WHERE id = $1"
);

/// One retirement by its public UUID.
pub(crate) const BY_PUBLIC_ID: &str = concat!(
    "SELECT ",
    super::retirement_columns!(),
    " FROM retirement WHERE public_id = $1"
);

/// Events of a retirement.
pub(crate) const HISTORY: &str = concat!(
    "SELECT ",
    super::event_columns!(),
    " FROM retirement_event WHERE retirement_id = $1 ORDER BY id"
);

/// Retirements, newest first, filtered (`ListFilter`), before a cursor.
pub(crate) const LIST: &str = concat!(
    "SELECT ",
    super::retirement_columns!(),
    " FROM retirement WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR reason = $2) \
     AND ($3 IS NULL OR created_at >= $3) AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
);

/// Retirements per state.
pub(crate) const STATS: &str = "SELECT state, COUNT(*) AS n FROM retirement GROUP BY state";

/// Events joined with their retirement, filtered by time and subject.
pub(crate) const AUDIT: &str = concat!(
    "SELECT e.id, e.retirement_id, e.at, e.actor, e.from_state, e.to_state, \
     e.outcome, e.attempt, e.detail, r.subject, r.subject_hash, r.reason \
     FROM retirement_event e JOIN retirement r ON r.id = e.retirement_id \
     WHERE ($1 IS NULL OR e.at >= $1) AND ($2 IS NULL OR e.at < $2) \
     AND ($9 IS NULL OR e.at > $9 OR (e.at = $9 AND e.id > $10)) \
     AND ($7 = 0 OR r.id IN (",
    matching_ids!("$3", "$4", "$5", "$6"),
    ")) ORDER BY e.at, e.id LIMIT $8"
);

/// Earliest due time of an open retirement.
pub(crate) const NEXT_DUE: &str =
    "SELECT MIN(due_at) AS due FROM retirement WHERE ended_at IS NULL AND due_at IS NOT NULL";

/// Binds a transition to `APPLY_ONE`. `$fence` is `Option<(&str state, &str owner, i32 attempt)>`,
/// `$relay` an `Option<DateTime<Utc>>` lease expiry for the next state; `$warned` and
/// `$reminders` override the transition's own (a write-back with carried steps merges them).
macro_rules! bind_apply {
    ($id:expr, $fence:expr, $t:expr, $now:expr, $relay:expr) => {{
        let t: &$crate::domain::Transition = $t;
        $crate::store::sql::bind_apply!($id, $fence, t, $now, $relay, t.warned_at, t.reminders_sent)
    }};
    ($id:expr, $fence:expr, $t:expr, $now:expr, $relay:expr, $warned:expr, $reminders:expr) => {{
        let t: &$crate::domain::Transition = $t;
        let fence: Option<(&str, &str, i32)> = $fence;
        sqlx::query($crate::store::sql::APPLY_ONE)
            .bind(t.to_state.as_str())
            .bind(t.due_at)
            .bind(t.attempt)
            .bind(t.last_error.as_deref())
            .bind(t.failed_state.as_deref())
            .bind($warned)
            .bind($now)
            .bind(t.ends)
            .bind($id)
            .bind(fence.map(|f| f.1))
            .bind(fence.map(|f| f.0))
            .bind(fence.map(|f| f.2))
            .bind($relay)
            .bind($reminders)
    }};
}

/// Binds an event to `INSERT_EVENT`.
macro_rules! bind_event {
    ($id:expr, $now:expr, $actor:expr, $from:expr, $t:expr, $attempt:expr) => {{
        let t: &$crate::domain::Transition = $t;
        sqlx::query($crate::store::sql::INSERT_EVENT)
            .bind($id)
            .bind($now)
            .bind($actor)
            .bind($from)
            .bind(t.to_state.as_str())
            .bind(t.outcome.as_str())
            .bind($attempt)
            .bind(t.detail.to_string())
    }};
}

/// The strings of `$list` that `$sql` selects in column `$column`, asked 10,000 at a time
/// (inside `shared_methods!`): `$sql` takes the values of `$before`, then the chunk as one
/// list; `$contexts` are those of the query and of decoding its rows.
macro_rules! strings_among {
    ($self:ident, $list:expr, $sql:expr, [$($before:expr),*], $column:literal, ($query_context:literal, $decode_context:literal)) => {{
        use sqlx::Row;
        use $crate::store::QueryContext;
        let mut found = std::collections::HashSet::new();
        for chunk in $list.chunks(10_000) {
            let rows = sqlx::query($sql)
                $(.bind($before))*
                .bind(Self::list_param(chunk))
                .fetch_all(&$self.pool)
                .await
                .ctx($query_context)?;
            for row in rows {
                found.insert(row.try_get($column).ctx($decode_context)?);
            }
        }
        Ok(found)
    }};
}

/// Store methods identical for both backends (reads, lease renewal and release, operator
/// actions, state sync), expanded inside each `impl Store`. `begin` starts a writing
/// transaction, `lock` is appended to the SELECT that locks a row for an operator action.
/// The backend binds a list of values its own way, as one parameter (SQLite looks each `$N`
/// up by name, so hundreds of them cost quadratic time): `Self::list_param(&[T])` is the
/// value to bind, `in_list!("$N")` the SQL after a column that matches any element of the
/// list bound as `$N`, `pairs!("$N", "$M")` a SELECT of the pairs, element by element, of
/// the lists bound as `$N` and `$M`.
macro_rules! shared_methods {
    (
        begin: $begin:expr,
        lock: $lock:expr,
        in_list: $in_list:ident,
        pairs: $pairs:ident $(,)?
    ) => {
        fn sync_states<'a>(
            &'a self,
            graph: &'a $crate::domain::StateGraph,
        ) -> $crate::store::BoxFuture<'a, Result<(), $crate::store::StoreError>> {
            Box::pin(async move {
                use sqlx::Row;
                use $crate::store::{QueryContext, StoreError};
                let mut tx = self
                    .pool
                    .begin_with($begin)
                    .await
                    .ctx("begin the state sync")?;
                self.serialize_state_sync(&mut tx).await?;
                let known: Vec<String> = sqlx::query("SELECT name FROM state")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|_| StoreError::NotMigrated)?
                    .iter()
                    .map(|r| r.try_get("name"))
                    .collect::<Result<_, _>>()
                    .ctx("read the states")?;
                for name in known.iter().filter(|n| !graph.contains(n)) {
                    let count: i64 = sqlx::query($crate::store::sql::OPEN_IN_STATE)
                        .bind(name)
                        .fetch_one(&mut *tx)
                        .await
                        .ctx("count retirements in a removed state")?
                        .try_get(0)
                        .ctx("decode a count")?;
                    if count > 0 {
                        return Err(StoreError::StateInUse {
                            state: name.clone(),
                            count,
                        });
                    }
                    sqlx::query("DELETE FROM state WHERE name = $1")
                        .bind(name)
                        .execute(&mut *tx)
                        .await
                        .ctx("remove a state")?;
                }
                for (position, def) in graph.states().iter().enumerate() {
                    sqlx::query($crate::store::sql::UPSERT_STATE)
                        .bind(&def.name)
                        .bind(position as i32)
                        .bind(def.role.map(|r| r.to_string()))
                        .execute(&mut *tx)
                        .await
                        .ctx("write a state")?;
                }
                tx.commit().await.ctx("commit the state sync")
            })
        }

        fn record_activity<'a>(
            &'a self,
            subject_hash: &'a str,
            at: chrono::DateTime<chrono::Utc>,
        ) -> $crate::store::BoxFuture<'a, Result<(), $crate::store::StoreError>> {
            Box::pin(async move {
                use $crate::store::QueryContext;
                sqlx::query(
                    "INSERT INTO subject_activity (subject_hash, active_at) VALUES ($1, $2) \
                     ON CONFLICT (subject_hash) DO UPDATE SET active_at = \
                     CASE WHEN excluded.active_at > subject_activity.active_at \
                     THEN excluded.active_at ELSE subject_activity.active_at END",
                )
                .bind(subject_hash)
                .bind(at)
                .execute(&self.pool)
                .await
                .ctx("record activity")?;
                Ok(())
            })
        }

        fn any_activity_since(
            &self,
            since: chrono::DateTime<chrono::Utc>,
        ) -> $crate::store::BoxFuture<'_, Result<bool, $crate::store::StoreError>> {
            Box::pin(async move {
                use $crate::store::QueryContext;
                let found = sqlx::query("SELECT 1 FROM subject_activity WHERE active_at > $1 LIMIT 1")
                    .bind(since)
                    .fetch_optional(&self.pool)
                    .await
                    .ctx("read recorded activity")?;
                Ok(found.is_some())
            })
        }

        fn recently_active<'a>(
            &'a self,
            subject_hashes: &'a [String],
            since: chrono::DateTime<chrono::Utc>,
        ) -> $crate::store::BoxFuture<
            'a,
            Result<std::collections::HashSet<String>, $crate::store::StoreError>,
        > {
            Box::pin(async move {
                $crate::store::sql::strings_among!(
                    self,
                    subject_hashes,
                    concat!(
                        "SELECT subject_hash FROM subject_activity WHERE active_at > $1 AND subject_hash ",
                        $in_list!("$2")
                    ),
                    [since],
                    "subject_hash",
                    ("read recorded activity", "decode a subject hash")
                )
            })
        }

        fn record_scan<'a>(
            &'a self,
            scan: &'a $crate::store::ScanRecord,
        ) -> $crate::store::BoxFuture<'a, Result<(), $crate::store::StoreError>> {
            Box::pin(async move {
                use $crate::store::QueryContext;
                sqlx::query(
                    "INSERT INTO scan_run (started_at, finished_at, seen, inactive, excluded, already_open, enqueued, refused, rule, overlap) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(scan.started_at)
                .bind(scan.finished_at)
                .bind(scan.seen)
                .bind(scan.inactive)
                .bind(scan.excluded)
                .bind(scan.already_open)
                .bind(scan.enqueued)
                .bind(scan.refused.as_deref())
                .bind(scan.rule.as_deref())
                .bind(scan.overlap)
                .execute(&self.pool)
                .await
                .ctx("record a scan")?;
                Ok(())
            })
        }

        fn last_scan<'a>(
            &'a self,
            rule: &'a str,
        ) -> $crate::store::BoxFuture<
            'a,
            Result<Option<chrono::DateTime<chrono::Utc>>, $crate::store::StoreError>,
        > {
            Box::pin(async move {
                use $crate::store::QueryContext;
                // Runs from before rules were recorded count for every rule.
                sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
                    "SELECT started_at FROM scan_run WHERE rule = $1 OR rule IS NULL ORDER BY started_at DESC LIMIT 1",
                )
                .bind(rule)
                .fetch_optional(&self.pool)
                .await
                .ctx("read the last scan")
            })
        }

        fn find<'a>(
            &'a self,
            lookup: &'a $crate::store::Lookup,
        ) -> $crate::store::BoxFuture<
            'a,
            Result<Option<$crate::store::Retirement>, $crate::store::StoreError>,
        > {
            Box::pin(async move {
                use $crate::store::QueryContext;
                if let $crate::store::Lookup::PublicId(public_id) = lookup {
                    let row = sqlx::query($crate::store::sql::BY_PUBLIC_ID)
                        .bind(public_id)
                        .fetch_optional(&self.pool)
                        .await
                        .ctx("find a retirement")?;
                    return row
                        .map(|r| <$crate::store::Retirement as sqlx::FromRow<_>>::from_row(&r))
                        .transpose()
                        .ctx("decode a retirement");
                }
                let (id, raw, subject_hash, email_hash) = lookup.params();
                let row = sqlx::query($crate::store::sql::FIND)
                    .bind(id)
                    .bind(raw)
                    .bind(subject_hash)
                    .bind(email_hash)
                    .fetch_optional(&self.pool)
                    .await
                    .ctx("find a retirement")?;
                row.map(|r| <$crate::store::Retirement as sqlx::FromRow<_>>::from_row(&r))
                    .transpose()
                    .ctx("decode a retirement")
            })
        }

        fn history(
            &self,
            id: i64,
        ) -> $crate::store::BoxFuture<
            '_,
            Result<Vec<$crate::store::Event>, $crate::store::StoreError>,
        > {
            Box::pin(async move {
                use $crate::store::QueryContext;
                let rows = sqlx::query($crate::store::sql::HISTORY)
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await
                    .ctx("read the history")?;
                rows.iter()
                    .map(<$crate::store::Event as sqlx::FromRow<_>>::from_row)
                    .collect::<Result<_, _>>()
                    .ctx("decode an event")
            })
        }

        fn list<'a>(
            &'a self,
            filter: &'a $crate::store::ListFilter,
        ) -> $crate::store::BoxFuture<
            'a,
            Result<Vec<$crate::store::Retirement>, $crate::store::StoreError>,
        > {
            Box::pin(async move {
                use $crate::store::QueryContext;
                let rows = sqlx::query($crate::store::sql::LIST)
                    .bind(filter.state.as_deref())
                    .bind(filter.reason.as_deref())
                    .bind(filter.since)
                    .bind(filter.before)
                    .bind(filter.limit)
                    .fetch_all(&self.pool)
                    .await
                    .ctx("list retirements")?;
                rows.iter()
                    .map(<$crate::store::Retirement as sqlx::FromRow<_>>::from_row)
                    .collect::<Result<_, _>>()
                    .ctx("decode a retirement")
            })
        }

        fn stats(
            &self,
        ) -> $crate::store::BoxFuture<'_, Result<Vec<(String, i64)>, $crate::store::StoreError>> {
            Box::pin(async move {
                use sqlx::Row;
                use $crate::store::QueryContext;
                let rows = sqlx::query($crate::store::sql::STATS)
                    .fetch_all(&self.pool)
                    .await
                    .ctx("count retirements per state")?;
                rows.iter()
                    .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
                    .collect::<Result<_, sqlx::Error>>()
                    .ctx("decode counts")
            })
        }

        fn audit<'a>(
            &'a self,
            filter: &'a $crate::store::AuditFilter,
        ) -> $crate::store::BoxFuture<
            'a,
            Result<Vec<$crate::store::AuditRow>, $crate::store::StoreError>,
        > {
            Box::pin(async move {
                use $crate::store::QueryContext;
                let (id, raw, subject_hash, email_hash) = filter
                    .subject
                    .as_ref()
                    .map(|l| l.params())
                    .unwrap_or((None, None, None, None));
                let rows = sqlx::query($crate::store::sql::AUDIT)
                    .bind(filter.since)
                    .bind(filter.until)
                    .bind(id)
                    .bind(raw)
                    .bind(subject_hash)
                    .bind(email_hash)
                    .bind(i32::from(filter.subject.is_some()))
                    .bind(filter.limit)
                    .bind(filter.after.map(|(at, _)| at))
                    .bind(filter.after.map(|(_, id)| id))
                    .fetch_all(&self.pool)
                    .await
                    .ctx("read the audit trail")?;
                rows.iter()
                    .map(<$crate::store::AuditRow as sqlx::FromRow<_>>::from_row)
                    .collect::<Result<_, _>>()
                    .ctx("decode an audit row")
            })
        }

        fn next_due(
            &self,
        ) -> $crate::store::BoxFuture<
            '_,
            Result<Option<chrono::DateTime<chrono::Utc>>, $crate::store::StoreError>,
        > {
            Box::pin(async move {
                use sqlx::Row;
                use $crate::store::QueryContext;
                let row = sqlx::query($crate::store::sql::NEXT_DUE)
                    .fetch_one(&self.pool)
                    .await
                    .ctx("find the next due time")?;
                row.try_get("due").ctx("decode the next due time")
            })
        }

        fn renew<'a>(
            &'a self,
            owner: &'a str,
            ids: &'a [i64],
            until: chrono::DateTime<chrono::Utc>,
        ) -> $crate::store::BoxFuture<'a, Result<u64, $crate::store::StoreError>> {
            Box::pin(async move {
                use $crate::store::QueryContext;
                let done = sqlx::query(concat!(
                    "UPDATE retirement SET lease_until = $1, due_at = $1 \
                     WHERE lease_owner = $2 AND id ",
                    $in_list!("$3")
                ))
                .bind(until)
                .bind(owner)
                .bind(Self::list_param(ids))
                .execute(&self.pool)
                .await
                .ctx("renew leases")?;
                Ok(done.rows_affected())
            })
        }

        fn release<'a>(
            &'a self,
            owner: &'a str,
            claimed: &'a [(i64, i32)],
            now: chrono::DateTime<chrono::Utc>,
        ) -> $crate::store::BoxFuture<'a, Result<u64, $crate::store::StoreError>> {
            Box::pin(async move {
                use $crate::store::QueryContext;
                let ids: Vec<i64> = claimed.iter().map(|c| c.0).collect();
                let attempts: Vec<i32> = claimed.iter().map(|c| c.1).collect();
                // Fenced like a write-back: still held by `owner`, at the claimed attempt.
                let done = sqlx::query(concat!(
                    "UPDATE retirement SET lease_owner = NULL, lease_until = NULL, due_at = $1, \
                     attempt = attempt - 1 WHERE lease_owner = $2 AND (id, attempt) IN (",
                    $pairs!("$3", "$4"),
                    ")"
                ))
                .bind(now)
                .bind(owner)
                .bind(Self::list_param(&ids))
                .bind(Self::list_param(&attempts))
                .execute(&self.pool)
                .await
                .ctx("release leases")?;
                Ok(done.rows_affected())
            })
        }

        fn open_among<'a>(
            &'a self,
            subjects: &'a [String],
        ) -> $crate::store::BoxFuture<
            'a,
            Result<std::collections::HashSet<String>, $crate::store::StoreError>,
        > {
            Box::pin(async move {
                $crate::store::sql::strings_among!(
                    self,
                    subjects,
                    concat!(
                        "SELECT subject FROM retirement WHERE ended_at IS NULL AND subject ",
                        $in_list!("$1")
                    ),
                    [],
                    "subject",
                    ("find open retirements", "decode a subject")
                )
            })
        }

        fn operate<'a>(
            &'a self,
            graph: &'a $crate::domain::StateGraph,
            id: i64,
            action: &'a $crate::domain::OperatorAction,
            actor: &'a str,
            now: chrono::DateTime<chrono::Utc>,
        ) -> $crate::store::BoxFuture<
            'a,
            Result<$crate::store::ActionResult, $crate::store::StoreError>,
        > {
            Box::pin(async move {
                use $crate::store::{ActionResult, QueryContext};
                let mut tx = self
                    .pool
                    .begin_with($begin)
                    .await
                    .ctx("begin an operator action")?;
                let row = sqlx::query(concat!(
                    "SELECT ",
                    $crate::store::retirement_columns!(),
                    " FROM retirement WHERE id = $1",
                    $lock
                ))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .ctx("lock the retirement")?;
                let Some(row) = row else {
                    return Ok(ActionResult::NotFound);
                };
                let current = <$crate::store::Retirement as sqlx::FromRow<_>>::from_row(&row).ctx("decode a retirement")?;
                let transition = match action.decide(graph, current.standing(), now) {
                    Ok(t) => t,
                    Err(refusal) => return Ok(ActionResult::Refused(refusal.0)),
                };
                $crate::store::sql::bind_apply!(
                    id,
                    None,
                    &transition,
                    now,
                    None::<chrono::DateTime<chrono::Utc>>
                )
                .execute(&mut *tx)
                .await
                .ctx("apply an operator action")?;
                $crate::store::sql::bind_event!(
                    id,
                    now,
                    actor,
                    Some(current.state.as_str()),
                    &transition,
                    current.attempt
                )
                .execute(&mut *tx)
                .await
                .ctx("record an operator action")?;
                // An aborted retirement leaves the services' lists (its events keep the
                // handover and any acknowledgement).
                if transition.to_state == graph.aborted() {
                    sqlx::query("DELETE FROM service_ack WHERE retirement_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .ctx("withdraw an aborted retirement from the services")?;
                }
                self.notify(&mut tx).await?;
                let row = sqlx::query($crate::store::sql::BY_ID)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await
                    .ctx("read the retirement back")?;
                let updated = <$crate::store::Retirement as sqlx::FromRow<_>>::from_row(&row).ctx("decode a retirement")?;
                tx.commit().await.ctx("commit an operator action")?;
                Ok(ActionResult::Applied(Box::new(updated)))
            })
        }
    };
}

pub(crate) use {bind_apply, bind_event, shared_methods, strings_among};
