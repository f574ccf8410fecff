//! Mork's tasks: `POST /v1/tasks` with `email_inactive_users` / `delete_inactive_users`
//! (a scan: lethe warns then deletes, so both open retirements; a dry run only counts),
//! `email_user` (open one `inactive` retirement) and `delete_user` (one `requested`);
//! `dry_run` defaults to true as in Mork. `GET /v1/tasks/{id}/status` answers Celery's
//! states (an unknown id is `PENDING`, as Celery says). Task states are kept in the store
//! for [`KEPT_FOR`], so they outlive the process and any lethe on the store answers them; a
//! task the store still shows unfinished after [`LOST_AFTER`] is reported failed (the process
//! running it stopped).

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use crate::config::Scope;
use crate::domain::Reason;
use crate::store::TaskRow;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Mork's task types.
pub const TASK_TYPES: [&str; 4] = [
    "email_inactive_users",
    "email_user",
    "delete_inactive_users",
    "delete_user",
];

/// How long a task's status is kept.
pub const KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);
/// A task unfinished for this long was lost with the process that ran it.
pub const LOST_AFTER: std::time::Duration = std::time::Duration::from_secs(6 * 3600);
/// Tasks running at once; more wait their turn (each may scan the whole source).
const RUNNING: usize = 2;

/// The tasks this process runs: at most [`RUNNING`] at once.
pub struct Tasks {
    running: tokio::sync::Semaphore,
}

impl Default for Tasks {
    fn default() -> Self {
        Self {
            running: tokio::sync::Semaphore::new(RUNNING),
        }
    }
}

/// Records `task`'s status now; a store that fails is logged (the task still runs).
async fn record(state: &ApiState, task: &mut TaskRow, status: &str, error: Option<String>) {
    let now = state.clock.now();
    task.status = status.to_string();
    task.error = error;
    task.updated_at = now;
    let forget = crate::domain::before(now, KEPT_FOR);
    if let Err(e) = state.store.save_task(task, forget).await {
        tracing::warn!(task = %task.id, status, error = %e, "a task's status was not recorded");
    }
}

/// Celery's state of a task as the store holds it at `now`, and why it failed.
fn reported(task: Option<TaskRow>, now: chrono::DateTime<chrono::Utc>) -> (String, Option<String>) {
    match task {
        None => ("PENDING".into(), None),
        Some(t)
            if matches!(t.status.as_str(), "PENDING" | "STARTED")
                && t.updated_at < crate::domain::before(now, LOST_AFTER) =>
        {
            (
                "FAILURE".into(),
                Some("lost: the process running it stopped before it finished".into()),
            )
        }
        Some(t) => (t.status, t.error),
    }
}

/// A Mork task.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct TaskBody {
    /// email_inactive_users, email_user, delete_inactive_users or delete_user.
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default = "yes")]
    dry_run: bool,
}

fn yes() -> bool {
    true
}

fn field(name: &str, why: &str) -> ApiError {
    ApiError::invalid(&["body", name], Value::Null, why).mork()
}

/// `OPTIONS /v1/tasks`: the task types.
#[utoipa::path(options, path = "/v1/tasks", tag = "mork",
    responses((status = 200, body = Object)), security(("api_key" = [])))]
pub async fn options() -> Response {
    (
        [(header::ALLOW, "POST")],
        Json(json!({"task_types": TASK_TYPES})),
    )
        .into_response()
}

/// `POST /v1/tasks`: 202 `{"id", "status": "PENDING"}` with `Location`.
#[utoipa::path(post, path = "/v1/tasks", tag = "mork", request_body = TaskBody,
    responses((status = 202, body = Object), (status = 403), (status = 422), (status = 503)),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    if caller.scope != Scope::Operator {
        return Err(ApiError::forbidden("only an operator key starts tasks").mork());
    }
    let task: TaskBody = serde_json::from_slice(&bytes)
        .map_err(|e| field("type", &format!("Field required or invalid: {e}")))?;
    if !TASK_TYPES.contains(&task.kind.as_str()) {
        return Err(ApiError::invalid(
            &["body", "type"],
            json!(task.kind),
            format!("Input should be {}", TASK_TYPES.join(", ")),
        )
        .mork());
    }
    if task.limit.is_some_and(|l| l < 1) {
        return Err(field("limit", "Input should be greater than 0"));
    }
    let needs_email = matches!(task.kind.as_str(), "email_user" | "delete_user");
    if needs_email && task.email.as_deref().is_none_or(|e| !e.contains('@')) {
        return Err(field("email", "Field required: an email address"));
    }
    if task.kind == "email_user" && task.username.as_deref().is_none_or(str::is_empty) {
        return Err(field("username", "Field required"));
    }
    let (Some(source), Some(key)) = (state.source.clone(), state.hash_key.clone()) else {
        return Err(ApiError::unavailable(
            "tasks need the source and LETHE_HASH_KEY; neither is available to this process",
        )
        .mork());
    };
    let id = uuid::Uuid::new_v4().to_string();
    let now = state.clock.now();
    let mut row = TaskRow {
        id: id.clone(),
        kind: task.kind.clone(),
        status: "PENDING".into(),
        error: None,
        actor: caller.actor(),
        created_at: now,
        updated_at: now,
    };
    // Recorded before the answer, so its status is known as soon as its id is.
    state
        .store
        .save_task(&row, crate::domain::before(now, KEPT_FOR))
        .await
        .map_err(|e| ApiError::internal("recording a task", &e).mork())?;
    let run_state = state.clone();
    tokio::spawn(async move {
        let Ok(_turn) = run_state.tasks.running.acquire().await else {
            return;
        };
        record(&run_state, &mut row, "STARTED", None).await;
        let actor = row.actor.clone();
        match run(&run_state, &source, &key, task, &actor).await {
            Ok(()) => record(&run_state, &mut row, "SUCCESS", None).await,
            Err(why) => {
                tracing::warn!(task = %row.id, error = %why, "task failed");
                record(&run_state, &mut row, "FAILURE", Some(why)).await;
            }
        }
    });
    let location = format!("/v1/tasks/{id}/status");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(json!({"id": id, "status": "PENDING"})),
    )
        .into_response())
}

async fn run(
    state: &ApiState,
    source: &crate::sql::source::SourceReader,
    key: &crate::pii::HashKey,
    task: TaskBody,
    actor: &str,
) -> Result<(), String> {
    let now = state.clock.now();
    match task.kind.as_str() {
        "email_inactive_users" | "delete_inactive_users" => {
            // Mork's inactive users: the enabled rules that open `inactive` retirements.
            for rule in state
                .pipeline
                .rules
                .iter()
                .filter(|r| r.enabled && r.reason == Reason::INACTIVE)
            {
                crate::driver::scan::scan(
                    state.store.as_ref(),
                    &state.graph,
                    source,
                    &state.pipeline,
                    key,
                    now,
                    crate::driver::scan::ScanOptions {
                        dry_run: task.dry_run,
                        limit: task.limit.map(|l| l as usize),
                        rule: Some(rule.name.clone()),
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        kind => {
            let email = task.email.unwrap_or_default();
            let users = source
                .find_users(&[], std::slice::from_ref(&email))
                .await
                .map_err(|e| e.to_string())?;
            let user = match users.as_slice() {
                [] => return Err("no user in the source has this email".into()),
                [user] => user,
                _ => {
                    return Err(format!(
                        "{} users in the source have this email: open the retirement by id",
                        users.len()
                    ));
                }
            };
            // The source's username, never the caller's: it reaches the services' requests.
            if let Some(given) = task.username.as_deref()
                && user.username.as_deref() != Some(given)
            {
                return Err("the username given is not the source's for this email".into());
            }
            if task.dry_run {
                return Ok(());
            }
            let reason = match kind {
                "delete_user" => Reason::REQUESTED,
                _ => Reason::INACTIVE,
            };
            let request = crate::ops::Request {
                subject: user.id,
                email: user.email.clone(),
                username: user.username.clone(),
            };
            crate::ops::enqueue(
                state.store.as_ref(),
                &state.graph,
                Some(source),
                key,
                crate::ops::Enqueue {
                    requests: std::slice::from_ref(&request),
                    reason,
                    exclusion_override: false,
                    actor,
                    start: None,
                },
                now,
            )
            .await
            .map_err(|e| e.to_string())
            .and_then(|opened| match opened.first() {
                Some((_, crate::ops::Opened::Refused { why })) => Err(why.clone()),
                _ => Ok(()),
            })
        }
    }
}

/// `GET /v1/tasks/{id}/status`: `{"id", "status"}`, and `error` when it failed.
#[utoipa::path(get, path = "/v1/tasks/{id}/status", tag = "mork",
    params(("id" = String, Path)), responses((status = 200, body = Object)),
    security(("api_key" = [])))]
pub async fn status(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !caller.reads_all() {
        return Err(ApiError::forbidden("a service key has no tasks").mork());
    }
    let task = state
        .store
        .task(&id)
        .await
        .map_err(|e| ApiError::internal("reading a task", &e).mork())?;
    let (status, error) = reported(task, state.clock.now());
    let mut body = json!({"id": id, "status": status});
    if let Some(error) = error {
        body["error"] = json!(error);
    }
    Ok(Json(body))
}
