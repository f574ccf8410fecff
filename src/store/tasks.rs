//! Mork's tasks as the store keeps them (`api_task`): the status of each task started
//! through `POST /v1/tasks`, the same SQL on both backends.

use chrono::{DateTime, Utc};

/// One task's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    /// The task's UUID.
    pub id: String,
    /// Its Mork type (`email_inactive_users`…).
    pub kind: String,
    /// Celery's state: PENDING, STARTED, SUCCESS, FAILURE.
    pub status: String,
    /// Why it failed (no PII).
    pub error: Option<String>,
    /// Who started it (`api:NAME`).
    pub actor: String,
    /// Started at.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The task methods of `Store`.
macro_rules! task_methods {
    () => {
        fn save_task<'a>(
            &'a self,
            task: &'a $crate::store::TaskRow,
            forget_before: chrono::DateTime<chrono::Utc>,
        ) -> $crate::store::BoxFuture<'a, Result<(), $crate::store::StoreError>> {
            Box::pin(async move {
                use $crate::store::QueryContext;
                sqlx::query(
                    "INSERT INTO api_task (id, kind, status, error, actor, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET \
                     status = excluded.status, error = excluded.error, updated_at = excluded.updated_at",
                )
                .bind(&task.id)
                .bind(&task.kind)
                .bind(&task.status)
                .bind(task.error.as_deref())
                .bind(&task.actor)
                .bind(task.created_at)
                .bind(task.updated_at)
                .execute(&self.pool)
                .await
                .ctx("record a task")?;
                sqlx::query("DELETE FROM api_task WHERE created_at < $1")
                    .bind(forget_before)
                    .execute(&self.pool)
                    .await
                    .ctx("forget old tasks")?;
                Ok(())
            })
        }

        fn task<'a>(
            &'a self,
            id: &'a str,
        ) -> $crate::store::BoxFuture<'a, Result<Option<$crate::store::TaskRow>, $crate::store::StoreError>>
        {
            Box::pin(async move {
                use $crate::store::QueryContext;
                use sqlx::Row;
                let row = sqlx::query(
                    "SELECT id, kind, status, error, actor, created_at, updated_at FROM api_task WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .ctx("read a task")?;
                row.map(|row| -> Result<_, sqlx::Error> {
                    Ok($crate::store::TaskRow {
                        id: row.try_get("id")?,
                        kind: row.try_get("kind")?,
                        status: row.try_get("status")?,
                        error: row.try_get("error")?,
                        actor: row.try_get("actor")?,
                        created_at: row.try_get("created_at")?,
                        updated_at: row.try_get("updated_at")?,
                    })
                })
                .transpose()
                .ctx("decode a task")
            })
        }
    };
}

pub(crate) use task_methods;
