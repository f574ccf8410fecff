//! The Mork-compatible surface: `GET /v1/users` (pull), `GET /v1/users/{id}`,
//! `GET|PATCH /v1/users/{id}/status/{service}` (acknowledge), with Mork's paths,
//! parameters, JSON shapes and `{"detail": …}` errors. The differences (README, "The REST
//! API"): a stable order, exact `email`/`username`, users listed to a service once handed
//! over, a 401 for a missing key, only `deleted` accepted by the PATCH.

mod model;

pub use model::{
    MorkUser, OwnStage, STATUSES, ServiceStatus, StatusPatch, UserStatus, own_stages, own_status,
};

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use crate::store::{UserFilter, UserQuery, UserRow};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use model::{mork_user, statuses};
use serde_json::{Value, json};
use std::sync::Arc;

/// The query parameters of the list, checked one by one (Mork's names and bounds).
struct ListParams {
    service: Option<String>,
    status: Option<String>,
    email: Option<String>,
    username: Option<String>,
    offset: i64,
    limit: i64,
}

fn integer(name: &str, value: &str, range: std::ops::RangeInclusive<i64>) -> Result<i64, ApiError> {
    ApiError::bounded(name, value, range).map_err(ApiError::mork)
}

impl ListParams {
    fn parse(pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let mut p = ListParams {
            service: None,
            status: None,
            email: None,
            username: None,
            offset: 0,
            limit: 100,
        };
        for (name, value) in pairs {
            match name.as_str() {
                // Checked once the key's scope allows it (a service key learns no names).
                "service" => p.service = Some(value.clone()),
                "deletion_status" => p.status = Some(check_status(value)?.to_string()),
                "email" => p.email = Some(value.clone()),
                "username" => p.username = Some(value.clone()),
                "offset" => p.offset = integer("offset", value, 0..=i64::MAX / 2)?,
                "limit" => p.limit = integer("limit", value, 1..=1000)?,
                _ => {} // as FastAPI: unknown parameters are ignored
            }
        }
        Ok(p)
    }
}

fn check_status(value: &str) -> Result<&'static str, ApiError> {
    STATUSES.into_iter().find(|s| *s == value).ok_or_else(|| {
        ApiError::invalid(
            &["query", "deletion_status"],
            json!(value),
            format!("Input should be {}", STATUSES.join(", ")),
        )
        .mork()
    })
}

impl ApiState {
    /// `name` if some service (own stage or `[[service]]`) has it; 422 otherwise.
    fn check_service(&self, name: &str) -> Result<String, ApiError> {
        let known: Vec<&str> = self
            .own
            .iter()
            .map(|s| s.name.as_str())
            .chain(self.pipeline.services.iter().map(|s| s.name.as_str()))
            .collect();
        match known.contains(&name) {
            true => Ok(name.to_string()),
            false => Err(ApiError::invalid(
                &["query", "service"],
                json!(name),
                format!("Input should be {}", known.join(", ")),
            )
            .mork()),
        }
    }

    fn own_stage(&self, name: &str) -> Option<&OwnStage> {
        self.own.iter().find(|s| s.name == name)
    }

    /// The working states (and complete) in which `stage` reads as `status`.
    fn states_for(&self, stage: &OwnStage, status: &str) -> Vec<String> {
        // Where a retirement stands: an errored one stands where it failed.
        let working = self.graph.working();
        let mut states: Vec<String> = match status {
            "to_delete" => working[..stage.index].to_vec(),
            "deleting" | "protected" => vec![working[stage.index].clone()],
            "deleted" => working[stage.index + 1..].to_vec(),
            _ => Vec::new(),
        };
        if status == "deleted" {
            states.push(self.graph.complete().to_string());
        }
        states
    }

    /// Whether `status` narrows to retirements stopped on a protected table, or not.
    fn protected(status: &str) -> Option<bool> {
        match status {
            "protected" => Some(true),
            "deleting" => Some(false),
            _ => None,
        }
    }

    /// The store filter for `service` and `status`.
    fn filter(&self, service: Option<&str>, status: Option<&str>) -> UserFilter {
        match (service, status) {
            (None, None) => UserFilter::All,
            (Some(name), status) => match self.own_stage(name) {
                Some(stage) => match status {
                    None => UserFilter::All,
                    Some(status) => UserFilter::States {
                        states: self.states_for(stage, status),
                        protected: Self::protected(status),
                    },
                },
                None => UserFilter::Service {
                    service: name.to_string(),
                    acked: status.map(|s| s == "deleted"),
                },
            },
            (None, Some(status)) => {
                let mut states: Vec<String> = self
                    .own
                    .iter()
                    .flat_map(|stage| self.states_for(stage, status))
                    .collect();
                states.sort();
                states.dedup();
                match status {
                    "to_delete" | "deleted" => UserFilter::AnyService {
                        acked: status == "deleted",
                        states,
                    },
                    _ => UserFilter::States {
                        states,
                        protected: Self::protected(status),
                    },
                }
            }
        }
    }

    /// One page of users with their acks.
    async fn page(&self, query: &UserQuery) -> Result<Vec<UserRow>, ApiError> {
        self.store
            .users(query)
            .await
            .map_err(|e| ApiError::internal("reading users", &e).mork())
    }

    /// A query of one user, aborted retirements hidden.
    pub(super) fn user_query(&self) -> UserQuery {
        UserQuery {
            filter: UserFilter::All,
            email: None,
            username: None,
            public_id: None,
            hidden_state: self.graph.aborted().to_string(),
            offset: 0,
            limit: 1,
        }
    }

    /// The user with public id `id` (a UUID, any of its spellings), with its acks.
    async fn user(&self, id: &str) -> Result<UserRow, ApiError> {
        let uuid = uuid::Uuid::parse_str(id).map_err(|_| {
            ApiError::invalid(
                &["path", "user_id"],
                json!(id),
                "Input should be a valid UUID",
            )
            .mork()
        })?;
        let query = UserQuery {
            public_id: Some(uuid.hyphenated().to_string()),
            ..self.user_query()
        };
        self.page(&query)
            .await?
            .pop()
            .ok_or_else(|| ApiError::not_found("User not found").mork())
    }
}

/// A service key speaks for its own service only: `service` absent means its own.
fn scoped(caller: &Caller, service: Option<String>) -> Result<Option<String>, ApiError> {
    match (caller.service(), service) {
        (None, service) => Ok(service),
        (Some(own), None) => Ok(Some(own.to_string())),
        (Some(own), Some(asked)) if own == asked => Ok(Some(asked)),
        (Some(own), Some(asked)) => {
            Err(ApiError::forbidden(format!("this key is {own}'s: it cannot read {asked}")).mork())
        }
    }
}

/// `GET /v1/users`: a bare array of users, oldest first.
#[utoipa::path(get, path = "/v1/users", tag = "mork",
    params(
        ("service" = Option<String>, Query, description = "a downstream service or one of lethe's deleting stages"),
        ("deletion_status" = Option<String>, Query, description = "to_delete, deleting, deleted or protected"),
        ("email" = Option<String>, Query, description = "exactly this email"),
        ("username" = Option<String>, Query, description = "exactly this username"),
        ("offset" = Option<i64>, Query, description = "rows skipped, from 0"),
        ("limit" = Option<i64>, Query, description = "1 to 1000, default 100"),
    ),
    responses((status = 200, body = Vec<MorkUser>), (status = 401), (status = 403), (status = 422)),
    security(("api_key" = [])))]
pub async fn list_users(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let p = ListParams::parse(&pairs)?;
    let service = scoped(&caller, p.service)?
        .map(|name| state.check_service(&name))
        .transpose()?;
    let query = UserQuery {
        filter: state.filter(service.as_deref(), p.status.as_deref()),
        email: p.email,
        username: p.username,
        offset: p.offset,
        limit: p.limit,
        ..state.user_query()
    };
    let page = state.page(&query).await?;
    let users: Vec<MorkUser<'_>> = page
        .iter()
        .map(|row| mork_user(&state, row))
        // The store narrows by state; the exact status (errored rows) is decided here.
        .filter(|user| p.status.is_none() || user.has(service.as_deref(), p.status.as_deref()))
        .collect();
    Ok(Json(users).into_response())
}

/// `GET /v1/users/{id}` (optionally `?service=`: 404 unless the user has that service).
#[utoipa::path(get, path = "/v1/users/{id}", tag = "mork",
    params(("id" = String, Path, description = "the user's UUID"),
        ("service" = Option<String>, Query, description = "404 unless the user has this service")),
    responses((status = 200, body = MorkUser), (status = 404), (status = 422)),
    security(("api_key" = [])))]
pub async fn get_user(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let asked = pairs
        .iter()
        .find(|(k, _)| k == "service")
        .map(|(_, name)| name.clone());
    let service = scoped(&caller, asked)?
        .map(|name| state.check_service(&name))
        .transpose()?;
    let row = state.user(&id).await?;
    let user = mork_user(&state, &row);
    if let Some(name) = &service
        && !user.has(Some(name), None)
    {
        return Err(ApiError::not_found("User not found").mork());
    }
    Ok(Json(user).into_response())
}

/// The status of `service` for the user `id`: `{"id", "service_name", "status"}`.
async fn status_of(
    state: &ApiState,
    caller: &Caller,
    id: &str,
    service: &str,
) -> Result<(UserRow, Value), ApiError> {
    scoped(caller, Some(service.to_string()))?;
    let service = state.check_service(service).map_err(|mut e| {
        e.at =
            e.at.map(|(_, input)| (vec!["path".into(), "service_name".into()], input));
        e
    })?;
    let row = state.user(id).await?;
    let status = statuses(state, &row.retirement, &row.acks)
        .into_iter()
        .find(|(name, _)| *name == service)
        .map(|(_, status)| status)
        .ok_or_else(|| ApiError::not_found("User status not found").mork())?;
    let body = json!({"id": row.retirement.public_id, "service_name": service, "status": status});
    Ok((row, body))
}

/// `GET /v1/users/{id}/status/{service}`.
#[utoipa::path(get, path = "/v1/users/{id}/status/{service}", tag = "mork",
    params(("id" = String, Path), ("service" = String, Path)),
    responses((status = 200, body = UserStatus), (status = 404), (status = 422)),
    security(("api_key" = [])))]
pub async fn get_status(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((id, service)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(status_of(&state, &caller, &id, &service).await?.1))
}

/// `PATCH /v1/users/{id}/status/{service}` with `{"deletion_status": "deleted"}`: the
/// service's acknowledgement, recorded as `lethe ack` records it (the key is the actor).
#[utoipa::path(patch, path = "/v1/users/{id}/status/{service}", tag = "mork",
    params(("id" = String, Path), ("service" = String, Path)),
    request_body = StatusPatch,
    responses((status = 200, body = UserStatus), (status = 403), (status = 404), (status = 422)),
    security(("api_key" = [])))]
pub async fn patch_status(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((id, service)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    if caller.scope == crate::config::Scope::Auditor {
        return Err(ApiError::forbidden("an auditor key reads; it cannot acknowledge").mork());
    }
    let patch: StatusPatch = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
            &["body", "deletion_status"],
            Value::Null,
            format!("the body must be {{\"deletion_status\": \"deleted\"}} ({e})"),
        )
        .mork()
    })?;
    let (row, current) = status_of(&state, &caller, &id, &service).await?;
    if state.own_stage(&service).is_some() {
        return Err(ApiError::invalid(
            &["path", "service_name"],
            json!(service),
            format!("lethe sets the status of its own stage {service} itself"),
        )
        .mork());
    }
    if patch.deletion_status != "deleted" {
        return Err(ApiError::invalid(
            &["body", "deletion_status"],
            json!(patch.deletion_status),
            "a service acknowledges with deleted; lethe sets the other statuses",
        )
        .mork());
    }
    if current["status"] == "deleted" {
        return Ok(Json(current));
    }
    let target = format!("#{}", row.retirement.id);
    let now = state.clock.now();
    crate::ops::ack(
        state.store.as_ref(),
        &state.pipeline,
        &target,
        None,
        &service,
        &caller.actor(),
        now,
    )
    .await
    .map_err(|e| match crate::error::Classified::kind(&e) {
        crate::error::ErrorKind::Internal | crate::error::ErrorKind::Unreachable => {
            ApiError::internal("recording an acknowledgement", &e).mork()
        }
        _ => ApiError::not_found("User status not found").mork(),
    })?;
    Ok(Json(
        json!({"id": row.retirement.public_id, "service_name": service, "status": "deleted"}),
    ))
}
