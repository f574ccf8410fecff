//! lethe's own surface: `/v1/retirements` (bulk open with a result per row, a filtered
//! cursor list, one retirement with its history, resume, abort), `/v1/stats`, `/v1/audit`
//! (JSON, or CSV for `Accept: text/csv`). Operators act; auditors read; service keys
//! have no business here (403).

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use crate::config::Scope;
use crate::domain::{OperatorAction, Reason};
use crate::ops::{Enqueue, Opened, Request};
use crate::store::{ListFilter, Lookup};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// The most subjects one bulk request opens.
pub const MAX_BULK: usize = 10_000;

pub(super) fn reader(caller: &Caller) -> Result<(), ApiError> {
    match caller.reads_all() {
        true => Ok(()),
        false => Err(ApiError::forbidden(
            "a service key reads its own service's users (/v1/users), not retirements",
        )),
    }
}

fn operator(caller: &Caller) -> Result<(), ApiError> {
    match caller.scope {
        Scope::Operator => Ok(()),
        _ => Err(ApiError::forbidden(
            "only an operator key acts on retirements",
        )),
    }
}

/// Parses a JSON body into `T`, naming what is wrong (unknown fields are refused).
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::invalid(
            &["body"],
            Value::Null,
            format!("the body is not what this route takes: {e}"),
        )
    })
}

pub(super) fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub(super) fn limit(pairs: &[(String, String)], default: i64, max: i64) -> Result<i64, ApiError> {
    match param(pairs, "limit") {
        None => Ok(default),
        Some(text) => ApiError::bounded("limit", text, 1..=max),
    }
}

pub(super) fn time(
    pairs: &[(String, String)],
    name: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    param(pairs, name)
        .map(|text| {
            crate::ops::parse_time(name, text)
                .map_err(|e| ApiError::invalid(&["query", name], json!(text), e.to_string()))
        })
        .transpose()
}

/// What one input of a bulk request named.
#[derive(Clone, Copy)]
enum Found<'a> {
    User(&'a crate::sql::source::SourceUser),
    None,
    Ambiguous(usize),
    Invalid,
}

/// A bulk request: who to open retirements for.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bulk {
    /// Up to 10,000 subject ids or emails.
    subjects: Vec<String>,
    /// `requested` (default) or `inactive`.
    #[serde(default = "requested")]
    reason: String,
    /// The working state they start in (default: the first).
    #[serde(default)]
    state: Option<String>,
}

fn requested() -> String {
    Reason::REQUESTED.to_string()
}

/// `POST /v1/retirements`: opens a retirement per subject id or email (found in the
/// source), answering one result per row: `created`, `already_open`, `not_found`,
/// `excluded` (with the rule), `invalid`.
#[utoipa::path(post, path = "/v1/retirements", tag = "retirements", request_body = Bulk,
    responses((status = 202, description = "one result per row", body = Object), (status = 403), (status = 422), (status = 503)),
    security(("api_key" = [])))]
pub async fn open(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    operator(&caller)?;
    let bulk: Bulk = body(&bytes)?;
    if bulk.subjects.is_empty() || bulk.subjects.len() > MAX_BULK {
        return Err(ApiError::invalid(
            &["body", "subjects"],
            json!(bulk.subjects.len()),
            format!("subjects: give from 1 to {MAX_BULK} subject ids or emails"),
        ));
    }
    let reason = state.pipeline.notices.reason(&bulk.reason).ok_or_else(|| {
        ApiError::invalid(
            &["body", "reason"],
            json!(bulk.reason),
            format!("known reasons: {}", state.pipeline.notices.names()),
        )
    })?;
    if let Some(start) = &bulk.state
        && !state.graph.is_working(start)
    {
        return Err(ApiError::invalid(
            &["body", "state"],
            json!(start),
            format!(
                "a retirement starts in a working state: {}",
                state.graph.working().join(", ")
            ),
        ));
    }
    let (Some(source), Some(key)) = (&state.source, &state.hash_key) else {
        return Err(ApiError::unavailable(
            "opening retirements needs the source (for the exclusions) and LETHE_HASH_KEY",
        ));
    };
    let ids: Vec<i64> = bulk
        .subjects
        .iter()
        .filter_map(|s| crate::ops::parse_subject("subject", s).ok())
        .collect();
    let emails: Vec<String> = bulk
        .subjects
        .iter()
        .filter(|s| s.contains('@'))
        .cloned()
        .collect();
    let users = source
        .find_users(&ids, &emails)
        .await
        .map_err(|e| ApiError::unavailable_because("reading the source", &e))?;
    let by_id: HashMap<i64, &crate::sql::source::SourceUser> =
        users.iter().map(|u| (u.id, u)).collect();
    // Emails matched as a case-insensitive collation would; two users under one email are
    // ambiguous, never one of them picked.
    let mut by_email: HashMap<String, Vec<&crate::sql::source::SourceUser>> = HashMap::new();
    for user in &users {
        if let Some(email) = &user.email {
            by_email
                .entry(email.to_ascii_lowercase())
                .or_default()
                .push(user);
        }
    }
    // Each input finds its user (or not); each user is opened once.
    let mut found: Vec<Found> = Vec::with_capacity(bulk.subjects.len());
    let mut requests: Vec<Request> = Vec::new();
    let mut requested: std::collections::HashSet<i64> = std::collections::HashSet::new();
    for input in &bulk.subjects {
        let user = match crate::ops::parse_subject("subject", input) {
            Ok(id) => by_id.get(&id).map_or(Found::None, |u| Found::User(u)),
            Err(_) if !input.contains('@') => Found::Invalid,
            Err(_) => match by_email.get(&input.to_ascii_lowercase()).map(Vec::as_slice) {
                Some([user]) => Found::User(user),
                Some(many) if many.len() > 1 => Found::Ambiguous(many.len()),
                _ => Found::None,
            },
        };
        if let Found::User(user) = user
            && requested.insert(user.id)
        {
            requests.push(Request {
                subject: user.id,
                email: user.email.clone(),
                username: user.username.clone(),
            });
        }
        found.push(user);
    }
    let opened: HashMap<i64, Opened> = match requests.is_empty() {
        true => HashMap::new(),
        false => crate::ops::enqueue(
            state.store.as_ref(),
            &state.graph,
            Some(source),
            key,
            Enqueue {
                requests: &requests,
                reason,
                exclusion_override: false,
                actor: &caller.actor(),
                start: bulk.state.as_deref(),
            },
            state.clock.now(),
        )
        .await
        .map_err(|e| ApiError::internal("opening retirements", &e))?
        .into_iter()
        .collect(),
    };
    let results: Vec<Value> = bulk
        .subjects
        .iter()
        .zip(found)
        .map(|(input, user)| {
            let opened = match user {
                Found::User(user) => opened.get(&user.id),
                _ => None,
            };
            let result = match (user, opened) {
                (Found::Invalid, _) => {
                    json!({"result": "invalid", "why": "neither a subject id nor an email"})
                }
                (Found::Ambiguous(n), _) => json!({
                    "result": "ambiguous",
                    "why": format!("{n} users have this email: name the one you mean by id"),
                }),
                (_, None) => json!({"result": "not_found"}),
                (_, Some(Opened::Created { id })) => {
                    json!({"result": "created", "retirement_id": id})
                }
                (_, Some(Opened::AlreadyOpen { id })) => {
                    json!({"result": "already_open", "retirement_id": id})
                }
                (_, Some(Opened::Refused { why })) => json!({"result": "excluded", "why": why}),
            };
            let mut row = json!({"input": input});
            if let (Some(row), Some(result)) = (row.as_object_mut(), result.as_object()) {
                row.extend(result.clone());
            }
            row
        })
        .collect();
    Ok((StatusCode::ACCEPTED, Json(json!({"results": results}))).into_response())
}

/// `GET /v1/retirements`: newest first; `state`, `reason`, `since`, `limit` (1..=1000),
/// `cursor` (the `next_cursor` of the previous page).
#[utoipa::path(get, path = "/v1/retirements", tag = "retirements",
    params(("state" = Option<String>, Query), ("reason" = Option<String>, Query),
        ("since" = Option<String>, Query), ("limit" = Option<i64>, Query), ("cursor" = Option<i64>, Query)),
    responses((status = 200, body = Object), (status = 403), (status = 422)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    reader(&caller)?;
    let filter_state = param(&pairs, "state").map(str::to_string);
    if let Some(name) = &filter_state
        && !state.graph.contains(name)
    {
        return Err(ApiError::invalid(
            &["query", "state"],
            json!(name),
            format!("known states: {}", state.graph.names().join(", ")),
        ));
    }
    let before = match param(&pairs, "cursor") {
        None => None,
        Some(text) => Some(text.parse::<i64>().map_err(|_| {
            ApiError::invalid(
                &["query", "cursor"],
                json!(text),
                "a cursor is the next_cursor of a page",
            )
        })?),
    };
    let filter = ListFilter {
        state: filter_state,
        reason: param(&pairs, "reason").map(str::to_string),
        since: time(&pairs, "since")?,
        before,
        limit: limit(&pairs, 100, 1000)?,
    };
    let page = state
        .store
        .list(&filter)
        .await
        .map_err(|e| ApiError::internal("listing retirements", &e))?;
    let next = match page.len() as i64 == filter.limit {
        true => page.last().map(|r| r.id),
        false => None,
    };
    Ok(Json(json!({"retirements": page, "next_cursor": next})))
}

/// The retirement `id` names: its number, or its public UUID.
async fn find(state: &ApiState, id: &str) -> Result<crate::store::Retirement, ApiError> {
    let found = match (id.parse::<i64>(), uuid::Uuid::parse_str(id)) {
        (Ok(number), _) => state
            .store
            .find(&Lookup::Id(number))
            .await
            .map_err(|e| ApiError::internal("finding a retirement", &e))?,
        (_, Ok(uuid)) => {
            // Aborted ones too: the user list hides them, operators do not.
            let query = crate::store::UserQuery {
                public_id: Some(uuid.hyphenated().to_string()),
                hidden_state: String::new(),
                ..state.user_query()
            };
            state
                .store
                .users(&query)
                .await
                .map_err(|e| ApiError::internal("finding a retirement", &e))?
                .pop()
                .map(|row| row.retirement)
        }
        _ => {
            return Err(ApiError::invalid(
                &["path", "id"],
                json!(id),
                "a retirement is named by its number or its UUID",
            ));
        }
    };
    found.ok_or_else(|| ApiError::not_found(format!("no retirement {id}")))
}

/// `GET /v1/retirements/{id}`: the retirement, its whole history and its acks.
#[utoipa::path(get, path = "/v1/retirements/{id}", tag = "retirements",
    params(("id" = String, Path, description = "its number or UUID")),
    responses((status = 200, body = Object), (status = 404)),
    security(("api_key" = [])))]
pub async fn one(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    reader(&caller)?;
    let r = find(&state, &id).await?;
    let events = state
        .store
        .history(r.id)
        .await
        .map_err(|e| ApiError::internal("reading a history", &e))?;
    let acks = state
        .store
        .acks(r.id)
        .await
        .map_err(|e| ApiError::internal("reading acknowledgements", &e))?;
    Ok(Json(
        json!({"retirement": r, "events": events, "acks": acks}),
    ))
}

/// Where a resumed retirement continues.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    /// A state (default: the one that failed).
    #[serde(default)]
    to: Option<String>,
}

/// Why a retirement is aborted.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AbortBody {
    /// Recorded in its event.
    reason: String,
}

async fn act(
    state: &ApiState,
    caller: &Caller,
    id: &str,
    action: OperatorAction,
) -> Result<Json<Value>, ApiError> {
    operator(caller)?;
    let r = find(state, id).await?;
    let done = crate::ops::operate(
        state.store.as_ref(),
        &state.graph,
        &format!("#{}", r.id),
        None,
        &action,
        &caller.actor(),
        state.clock.now(),
    )
    .await
    .map_err(|e| match crate::error::Classified::kind(&e) {
        crate::error::ErrorKind::Refused => ApiError::conflict(e.to_string()),
        crate::error::ErrorKind::NotFound => ApiError::not_found(e.to_string()),
        crate::error::ErrorKind::Config => ApiError::invalid(&["body"], Value::Null, e.to_string()),
        _ => ApiError::internal("acting on a retirement", &e),
    })?;
    Ok(Json(json!({"retirement": done})))
}

/// `POST /v1/retirements/{id}/resume` with `{"to": STATE}` optional.
#[utoipa::path(post, path = "/v1/retirements/{id}/resume", tag = "retirements",
    params(("id" = String, Path)), request_body(content = Option<ResumeBody>),
    responses((status = 200, body = Object), (status = 404), (status = 409)),
    security(("api_key" = [])))]
pub async fn resume(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    let to = match bytes.is_empty() {
        true => None,
        false => body::<ResumeBody>(&bytes)?.to,
    };
    act(&state, &caller, &id, OperatorAction::Resume { to }).await
}

/// `POST /v1/retirements/{id}/abort` with `{"reason": "…"}` (required).
#[utoipa::path(post, path = "/v1/retirements/{id}/abort", tag = "retirements",
    params(("id" = String, Path)), request_body = AbortBody,
    responses((status = 200, body = Object), (status = 404), (status = 409), (status = 422)),
    security(("api_key" = [])))]
pub async fn abort(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    let reason = body::<AbortBody>(&bytes)?.reason;
    if reason.trim().is_empty() {
        return Err(ApiError::invalid(
            &["body", "reason"],
            json!(reason),
            "say why it is aborted",
        ));
    }
    act(&state, &caller, &id, OperatorAction::Abort { reason }).await
}

/// `GET /v1/stats`: retirements per state.
#[utoipa::path(get, path = "/v1/stats", tag = "retirements",
    responses((status = 200, description = "retirements per state", body = Object)),
    security(("api_key" = [])))]
pub async fn stats(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    reader(&caller)?;
    let counts = crate::ops::stats(state.store.as_ref(), Some(&state.graph))
        .await
        .map_err(|e| ApiError::internal("counting retirements", &e))?;
    let mut out = serde_json::Map::new();
    for (name, n) in counts {
        out.insert(name, json!(n));
    }
    Ok(Json(Value::Object(out)))
}
