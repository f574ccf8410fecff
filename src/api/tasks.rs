//! Mork's tasks: `POST /v1/tasks` with `email_inactive_users` / `delete_inactive_users`
//! (a scan: lethe warns then deletes, so both open retirements; a dry run only counts),
//! `email_user` (open one `inactive` retirement) and `delete_user` (one `requested`);
//! `dry_run` defaults to true as in Mork. `GET /v1/tasks/{id}/status` answers Celery's
//! states (an unknown id is `PENDING`, as Celery says). Task states live in memory.

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use crate::config::Scope;
use crate::domain::Reason;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Mork's task types.
pub const TASK_TYPES: [&str; 4] = [
    "email_inactive_users",
    "email_user",
    "delete_inactive_users",
    "delete_user",
];

/// The most task states kept (the oldest go first).
const KEPT: usize = 10_000;
/// Tasks running at once; more wait their turn (each may scan the whole source).
const RUNNING: usize = 2;

/// A task's Celery state, and why it failed.
type TaskState = (&'static str, Option<String>);

/// Task states by id.
pub struct Tasks {
    states: Mutex<(HashMap<String, TaskState>, VecDeque<String>)>,
    running: tokio::sync::Semaphore,
}

impl Default for Tasks {
    fn default() -> Self {
        Self {
            states: Mutex::default(),
            running: tokio::sync::Semaphore::new(RUNNING),
        }
    }
}

impl Tasks {
    fn set(&self, id: &str, status: &'static str, error: Option<String>) {
        if let Ok(mut guard) = self.states.lock() {
            let (states, order) = &mut *guard;
            if states.insert(id.to_string(), (status, error)).is_none() {
                order.push_back(id.to_string());
                while order.len() > KEPT {
                    if let Some(old) = order.pop_front() {
                        states.remove(&old);
                    }
                }
            }
        }
    }

    fn get(&self, id: &str) -> TaskState {
        self.states
            .lock()
            .ok()
            .and_then(|guard| guard.0.get(id).cloned())
            .unwrap_or(("PENDING", None))
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
    state.tasks.set(&id, "PENDING", None);
    let run_state = state.clone();
    let run_id = id.clone();
    let actor = caller.actor();
    tokio::spawn(async move {
        let Ok(_turn) = run_state.tasks.running.acquire().await else {
            return;
        };
        run_state.tasks.set(&run_id, "STARTED", None);
        match run(&run_state, &source, &key, task, &actor).await {
            Ok(()) => run_state.tasks.set(&run_id, "SUCCESS", None),
            Err(why) => {
                tracing::warn!(task = %run_id, error = %why, "task failed");
                run_state.tasks.set(&run_id, "FAILURE", Some(why));
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
    let (status, error) = state.tasks.get(&id);
    let mut body = json!({"id": id, "status": status});
    if let Some(error) = error {
        body["error"] = json!(error);
    }
    Ok(Json(body))
}
