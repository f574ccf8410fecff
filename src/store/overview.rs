//! What the console's dashboard reads: open retirements per state with the one least
//! recently moved, transitions per day by outcome, the latest scan runs. The same SQL on
//! both backends except the day of a timestamp (`day:`).

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Open retirements in one state, and the one that has waited longest since it last moved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenState {
    /// The state.
    pub state: String,
    /// Open retirements in it.
    pub open: i64,
    /// The public id of the one least recently changed.
    pub oldest_id: String,
    /// When that one last changed.
    pub oldest_at: DateTime<Utc>,
}

/// Events of one outcome on one day (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayCount {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// `done`, `cancel`, `abort` or `fail`.
    pub outcome: String,
    /// How many.
    pub count: i64,
}

/// The overview methods of `Store`; `day` turns the column `at` into `YYYY-MM-DD` (UTC).
macro_rules! overview_methods {
    (day: $day:literal $(,)?) => {
        fn open_by_state(
            &self,
        ) -> $crate::store::BoxFuture<'_, Result<Vec<$crate::store::OpenState>, $crate::store::StoreError>>
        {
            Box::pin(async move {
                use $crate::store::QueryContext;
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT r.state, o.open, r.public_id, r.updated_at FROM retirement r \
                     JOIN (SELECT state, COUNT(*) AS open, MIN(updated_at) AS oldest FROM retirement \
                       WHERE ended_at IS NULL GROUP BY state) o \
                     ON r.state = o.state AND r.updated_at = o.oldest \
                     WHERE r.ended_at IS NULL ORDER BY r.state, r.id",
                )
                .fetch_all(&self.pool)
                .await
                .ctx("count open retirements per state")?;
                let mut out: Vec<$crate::store::OpenState> = Vec::new();
                for row in &rows {
                    let state: String = row.try_get("state").ctx("decode a state")?;
                    // Ties on the oldest time: the first id stands for them.
                    if out.last().is_some_and(|o| o.state == state) {
                        continue;
                    }
                    out.push($crate::store::OpenState {
                        state,
                        open: row.try_get("open").ctx("decode a count")?,
                        oldest_id: row.try_get("public_id").ctx("decode a public id")?,
                        oldest_at: row.try_get("updated_at").ctx("decode a time")?,
                    });
                }
                Ok(out)
            })
        }

        fn transitions_by_day(
            &self,
            since: chrono::DateTime<chrono::Utc>,
        ) -> $crate::store::BoxFuture<'_, Result<Vec<$crate::store::DayCount>, $crate::store::StoreError>>
        {
            Box::pin(async move {
                use $crate::store::QueryContext;
                use sqlx::Row;
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    $day,
                    " AS day, outcome, COUNT(*) AS n FROM retirement_event \
                     WHERE at >= $1 AND outcome IN ('done', 'cancel', 'abort', 'fail') \
                     GROUP BY 1, 2 ORDER BY 1, 2"
                ))
                .bind(since)
                .fetch_all(&self.pool)
                .await
                .ctx("count transitions per day")?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::store::DayCount {
                            day: row.try_get("day")?,
                            outcome: row.try_get("outcome")?,
                            count: row.try_get("n")?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .ctx("decode transitions per day")
            })
        }

        fn recent_scans(
            &self,
            limit: i64,
        ) -> $crate::store::BoxFuture<'_, Result<Vec<$crate::store::ScanRecord>, $crate::store::StoreError>>
        {
            Box::pin(async move {
                use $crate::store::QueryContext;
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT started_at, COALESCE(finished_at, started_at) AS finished_at, seen, inactive, \
                     excluded, already_open, enqueued, refused, rule, overlap FROM scan_run \
                     ORDER BY started_at DESC, id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .ctx("read the latest scans")?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::store::ScanRecord {
                            started_at: row.try_get("started_at")?,
                            finished_at: row.try_get("finished_at")?,
                            seen: row.try_get("seen")?,
                            inactive: row.try_get("inactive")?,
                            excluded: row.try_get("excluded")?,
                            already_open: row.try_get("already_open")?,
                            enqueued: row.try_get("enqueued")?,
                            refused: row.try_get("refused")?,
                            rule: row.try_get("rule")?,
                            overlap: row.try_get("overlap")?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .ctx("decode a scan")
            })
        }
    };
}

pub(crate) use overview_methods;
