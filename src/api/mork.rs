//! The Mork-compatible surface: `GET /v1/users` (pull), `GET /v1/users/{id}`,
//! `GET|PATCH /v1/users/{id}/status/{service}` (acknowledge), with Mork's paths,
//! parameters, JSON shapes and `{"detail": …}` errors. The differences (README, "The REST
//! API"): a stable order, exact `email`/`username`, users listed to a service once handed
//! over, a 401 for a missing key, only `deleted` accepted by the PATCH.

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use crate::domain::StateGraph;
use crate::store::{Retirement, ServiceAck, UserFilter, UserQuery, UserRow};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

/// Mork's deletion statuses.
pub const STATUSES: [&str; 4] = ["to_delete", "deleting", "deleted", "protected"];

/// One of lethe's own deleting stages, listed among a user's services as Mork lists `edx`
/// and `sarbacane`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnStage {
    /// The name it is listed under (a sql_delete stage's target, `sarbacane`, an http
    /// stage's name).
    pub name: String,
    /// Its position among the working states.
    pub index: usize,
}

/// The deleting stages of `pipeline` other than notify (whose services list themselves).
pub fn own_stages(pipeline: &crate::config::Pipeline, graph: &StateGraph) -> Vec<OwnStage> {
    use crate::config::StageSettings;
    pipeline
        .stages
        .iter()
        .filter_map(|stage| {
            let name = match &stage.settings {
                StageSettings::SqlDelete(s) => s.target.clone(),
                StageSettings::Sarbacane(_) => "sarbacane".to_string(),
                StageSettings::Http(h) => h.name.clone(),
                _ => return None,
            };
            let index = graph.working().iter().position(|w| *w == stage.state)?;
            Some(OwnStage { name, index })
        })
        .collect()
}

/// Where a retirement stands for one of lethe's own stages: `to_delete` before it ran,
/// `deleting` while it runs (or failed in it), `deleted` after, `protected` when it
/// stopped there on a protected table.
pub fn own_status(stage: &OwnStage, r: &Retirement, graph: &StateGraph) -> &'static str {
    if r.state == graph.complete() {
        return "deleted";
    }
    let errored = r.state == graph.errored();
    let at = match errored {
        true => r.failed_state.as_deref().unwrap_or(""),
        false => r.state.as_str(),
    };
    let Some(position) = graph.working().iter().position(|w| w == at) else {
        return "to_delete";
    };
    let protected = r
        .last_error
        .as_deref()
        .is_some_and(|e| e.starts_with("protected"));
    match position.cmp(&stage.index) {
        std::cmp::Ordering::Less => "to_delete",
        std::cmp::Ordering::Equal if errored && protected => "protected",
        std::cmp::Ordering::Equal => "deleting",
        std::cmp::Ordering::Greater => "deleted",
    }
}

/// Every service status of a retirement: lethe's own stages, then the downstream
/// services that were handed it (by name).
fn statuses(state: &ApiState, r: &Retirement, acks: &[&ServiceAck]) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = state
        .own
        .iter()
        .map(|s| (s.name.clone(), own_status(s, r, &state.graph)))
        .chain(acks.iter().map(|a| {
            let status = if a.acked { "deleted" } else { "to_delete" };
            (a.service.clone(), status)
        }))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Mork's `reason`: `gdpr` for an inactive user, `user_requested` for a request.
fn mork_reason(reason: &crate::domain::Reason) -> &str {
    match reason.as_str() {
        "inactive" => "gdpr",
        "requested" => "user_requested",
        other => other,
    }
}

/// A time as Python's `isoformat()` of a naive UTC datetime writes it, as Mork does.
fn naive(at: chrono::DateTime<chrono::Utc>) -> String {
    let micros = at.timestamp_subsec_micros();
    let base = at.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string();
    match micros {
        0 => base,
        _ => format!("{base}.{micros:06}"),
    }
}

/// A user as Mork's JSON has it, in Mork's field order.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = User)]
pub struct MorkUser<'a> {
    /// The retirement's public id (a UUID).
    #[schema(value_type = String)]
    id: &'a str,
    /// Erased (null) once the retirement is complete.
    #[schema(value_type = Option<String>)]
    username: Option<&'a str>,
    /// The source's id of the user.
    edx_user_id: Option<i64>,
    /// Erased (null) once the retirement is complete.
    #[schema(value_type = Option<String>)]
    email: Option<&'a str>,
    /// `gdpr` (inactive) or `user_requested`.
    #[schema(value_type = String)]
    reason: &'a str,
    /// lethe's own deleting stages and the downstream services, by name.
    service_statuses: Vec<ServiceStatus>,
    /// When the retirement was opened (naive UTC, as Mork writes it).
    created_at: String,
    /// Its last change.
    updated_at: String,
}

/// One entry of `service_statuses`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ServiceStatus {
    /// The service or stage.
    service_name: String,
    /// `to_delete`, `deleting`, `deleted` or `protected`.
    #[schema(value_type = String)]
    status: &'static str,
}

/// The status of one service for one user.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct UserStatus {
    /// The user's public id.
    pub id: String,
    /// The service.
    pub service_name: String,
    /// Its status.
    pub status: String,
}

/// The body of a status PATCH.
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct StatusPatch {
    /// `deleted`: the service deleted its copy.
    pub deletion_status: String,
}

impl MorkUser<'_> {
    /// Whether `service` (any, when `None`) has `status` for this user.
    fn has(&self, service: Option<&str>, status: Option<&str>) -> bool {
        self.service_statuses.iter().any(|s| {
            service.is_none_or(|name| s.service_name == name)
                && status.is_none_or(|status| s.status == status)
        })
    }
}

fn mork_user<'a>(state: &ApiState, row: &'a UserRow, acks: &[&ServiceAck]) -> MorkUser<'a> {
    let r = &row.retirement;
    MorkUser {
        id: &r.public_id,
        username: row.username.as_deref(),
        edx_user_id: r.subject.as_deref().and_then(|s| s.parse::<i64>().ok()),
        email: row.email.as_deref(),
        reason: mork_reason(&r.reason),
        service_statuses: statuses(state, r, acks)
            .into_iter()
            .map(|(service_name, status)| ServiceStatus {
                service_name,
                status,
            })
            .collect(),
        created_at: naive(r.created_at),
        updated_at: naive(r.updated_at),
    }
}

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
    value
        .parse::<i64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            ApiError::invalid(
                &["query", name],
                json!(value),
                format!(
                    "{name} must be an integer from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
            .mork()
        })
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
        let working = self.graph.working();
        let mut states: Vec<String> = match status {
            "to_delete" => working[..stage.index].to_vec(),
            "deleting" => vec![working[stage.index].clone()],
            "deleted" => working[stage.index + 1..].to_vec(),
            _ => Vec::new(),
        };
        if status == "deleted" {
            states.push(self.graph.complete().to_string());
        }
        if matches!(status, "deleting" | "protected") {
            states.push(self.graph.errored().to_string());
        }
        states
    }

    /// The store filter for `service` and `status`.
    fn filter(&self, service: Option<&str>, status: Option<&str>) -> UserFilter {
        match (service, status) {
            (None, None) => UserFilter::All,
            (Some(name), status) => match self.own_stage(name) {
                Some(stage) => match status {
                    None => UserFilter::All,
                    Some(status) => UserFilter::States(self.states_for(stage, status)),
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
                    _ => UserFilter::States(states),
                }
            }
        }
    }

    /// One page of users with their acks, as Mork's JSON.
    async fn page(&self, query: &UserQuery) -> Result<Vec<(UserRow, Vec<ServiceAck>)>, ApiError> {
        let rows = self
            .store
            .users(query)
            .await
            .map_err(|e| ApiError::internal("reading users", &e).mork())?;
        let ids: Vec<i64> = rows.iter().map(|r| r.retirement.id).collect();
        let mut acks = self
            .store
            .acks_of(&ids)
            .await
            .map_err(|e| ApiError::internal("reading acknowledgements", &e).mork())?;
        let mut by_id: std::collections::HashMap<i64, Vec<ServiceAck>> =
            std::collections::HashMap::with_capacity(rows.len());
        for ack in acks.drain(..) {
            by_id.entry(ack.retirement_id).or_default().push(ack);
        }
        Ok(rows
            .into_iter()
            .map(|row| {
                let mine = by_id.remove(&row.retirement.id).unwrap_or_default();
                (row, mine)
            })
            .collect())
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
    async fn user(&self, id: &str) -> Result<(UserRow, Vec<ServiceAck>), ApiError> {
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
        .map(|(row, acks)| {
            let acks: Vec<&ServiceAck> = acks.iter().collect();
            mork_user(&state, row, &acks)
        })
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
    let (row, acks) = state.user(&id).await?;
    let acks: Vec<&ServiceAck> = acks.iter().collect();
    let user = mork_user(&state, &row, &acks);
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
    let (row, acks) = state.user(id).await?;
    let acks: Vec<&ServiceAck> = acks.iter().collect();
    let status = statuses(state, &row.retirement, &acks)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> StateGraph {
        use crate::domain::{Role, StateDef};
        let def = |name: &str, role| StateDef {
            name: name.into(),
            role,
        };
        StateGraph::new(vec![
            def("PENDING", None),
            def("RETIRING_EDX", None),
            def("NOTIFIED", None),
            def("COMPLETE", Some(Role::Complete)),
            def("ERRORED", Some(Role::Errored)),
            def("ABORTED", Some(Role::Aborted)),
        ])
        .unwrap()
    }

    fn retirement(state: &str, failed: Option<&str>, error: Option<&str>) -> Retirement {
        let t = chrono::DateTime::<chrono::Utc>::from_timestamp(0, 0).unwrap();
        Retirement {
            id: 1,
            public_id: "x".into(),
            subject: Some("1".into()),
            subject_hash: "h".into(),
            reason: crate::domain::Reason::INACTIVE,
            state: state.into(),
            due_at: None,
            attempt: 0,
            lease_owner: None,
            lease_until: None,
            last_error: error.map(str::to_string),
            failed_state: failed.map(str::to_string),
            warned_at: None,
            created_at: t,
            updated_at: t,
            ended_at: None,
            exclusion_override: false,
        }
    }

    #[test]
    fn an_own_stage_reads_as_mork_reads_edx() {
        let g = graph();
        let edx = OwnStage {
            name: "edx".into(),
            index: 1,
        };
        let status = |state, failed, error| own_status(&edx, &retirement(state, failed, error), &g);
        assert_eq!(status("PENDING", None, None), "to_delete");
        assert_eq!(status("RETIRING_EDX", None, None), "deleting");
        assert_eq!(status("NOTIFIED", None, None), "deleted");
        assert_eq!(status("COMPLETE", None, None), "deleted");
        assert_eq!(
            status(
                "ERRORED",
                Some("RETIRING_EDX"),
                Some("protected: wiki_article.owner_id (1 row)")
            ),
            "protected"
        );
        assert_eq!(
            status("ERRORED", Some("RETIRING_EDX"), Some("timeout")),
            "deleting"
        );
        assert_eq!(
            status("ERRORED", Some("PENDING"), Some("smtp")),
            "to_delete"
        );
    }

    #[test]
    fn times_are_written_as_python_writes_naive_ones() {
        let t = chrono::DateTime::<chrono::Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(naive(t), "2023-11-14T22:13:20");
        let t = chrono::DateTime::<chrono::Utc>::from_timestamp(1_700_000_000, 26_490_000).unwrap();
        assert_eq!(naive(t), "2023-11-14T22:13:20.026490");
        assert_eq!(
            mork_reason(&crate::domain::Reason::REQUESTED),
            "user_requested"
        );
    }
}
