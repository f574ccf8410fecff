//! `POST /v1/activity`: a subject was active (the rule of `lethe touch`: recorded, so a
//! scan does not reopen it; its open retirement is cancelled while no deletion started).
//! Authenticated by an API key (operator or service), or by a signature: Standard
//! Webhooks headers as lethe sends them (`LETHE_API_WEBHOOK_SECRET`), or WorkOS's
//! `WorkOS-Signature` (`LETHE_API_WORKOS_SECRET`, 3 minutes' tolerance) for its
//! `user.updated` and `session.created` events.

use super::ApiState;
use super::error::ApiError;
use crate::config::Scope;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use std::sync::Arc;

/// How far a Standard Webhooks timestamp may be from now, in seconds.
const WEBHOOK_TOLERANCE_S: i64 = 300;
/// How far a WorkOS signature's time may be from now, in milliseconds (WorkOS's own).
const WORKOS_TOLERANCE_MS: i64 = 180_000;
/// The WorkOS events that mean the user was active.
const WORKOS_EVENTS: [&str; 2] = ["user.updated", "session.created"];

/// Who reported the activity, or why nobody may.
fn reporter(state: &ApiState, headers: &HeaderMap, body: &[u8]) -> Result<String, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = state.clock.now();
    let bearer = header("authorization").is_some_and(|v| v.starts_with("Bearer "));
    if header("x-api-key").is_some() || bearer {
        let caller = super::auth::authenticate(headers, &state.pipeline.api.keys)?;
        return match caller.scope {
            Scope::Auditor => Err(ApiError::forbidden(
                "an auditor key reads; it cannot report activity",
            )),
            _ => Ok(caller.actor()),
        };
    }
    if let Some(signature) = header("workos-signature") {
        let secret = state.pipeline.api.workos_secret.as_ref().ok_or_else(|| {
            ApiError::unauthorized_because(
                "WorkOS signatures are not accepted: LETHE_API_WORKOS_SECRET is not set",
            )
        })?;
        crate::http::sign::verify_workos(
            secret.expose(),
            signature,
            body,
            now.timestamp_millis(),
            WORKOS_TOLERANCE_MS,
        )
        .map_err(ApiError::unauthorized_because)?;
        return Ok("webhook:workos".into());
    }
    if let (Some(id), Some(timestamp), Some(signatures)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) {
        let key = state.webhook_key.as_ref().ok_or_else(|| {
            ApiError::unauthorized_because(
                "signed webhooks are not accepted: LETHE_API_WEBHOOK_SECRET is not set",
            )
        })?;
        let timestamp: i64 = timestamp
            .parse()
            .map_err(|_| ApiError::unauthorized_because("webhook-timestamp is not a number"))?;
        return match key.verify(
            id,
            timestamp,
            body,
            signatures,
            now.timestamp(),
            WEBHOOK_TOLERANCE_S,
        ) {
            true => Ok("webhook:signed".into()),
            false => Err(ApiError::unauthorized_because(
                "the webhook signature does not match, or its timestamp is stale",
            )),
        };
    }
    Err(ApiError::unauthorized())
}

/// What a body reports.
enum Report {
    /// The subject was active at that time.
    Active(String, chrono::DateTime<chrono::Utc>),
    /// Nothing lethe acts on, and why (answered 200, so a webhook sender does not retry).
    Ignored(&'static str),
}

/// The subject and time a body reports: `{"subject", "at"?}`, or a WorkOS event whose
/// user carries lethe's subject as `external_id`.
fn reported(body: &Value, now: chrono::DateTime<chrono::Utc>) -> Result<Report, ApiError> {
    let time =
        |value: Option<&Value>, at: &str| -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
            match value.and_then(Value::as_str) {
                None => Ok(now),
                Some(text) => crate::ops::parse_time(at, text)
                    .map_err(|e| ApiError::invalid(&["body", at], json!(text), e.to_string())),
            }
        };
    if let Some(event) = body.get("event").and_then(Value::as_str) {
        if !WORKOS_EVENTS.contains(&event) {
            return Ok(Report::Ignored("not an activity event"));
        }
        let data = &body["data"];
        // Someone acting as the user is not the user being active.
        if event == "session.created" && !data["impersonator"].is_null() {
            return Ok(Report::Ignored("an impersonated session"));
        }
        let subject = data
            .get("external_id")
            .or_else(|| data.get("user").and_then(|u| u.get("external_id")))
            .and_then(Value::as_str);
        let Some(subject) = subject else {
            return Ok(Report::Ignored(
                "the event names no external_id: set the WorkOS user's external_id to its id in the source",
            ));
        };
        return Ok(Report::Active(
            subject.to_string(),
            time(body.get("created_at"), "created_at")?,
        ));
    }
    let subject = match body.get("subject") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(ApiError::invalid(
                &["body", "subject"],
                Value::Null,
                "give {\"subject\": \"<the source's id>\", \"at\"?: \"<RFC 3339>\"}",
            ));
        }
    };
    Ok(Report::Active(subject, time(body.get("at"), "at")?))
}

/// `POST /v1/activity`.
#[utoipa::path(post, path = "/v1/activity", tag = "retirements",
    request_body(content = Object, description = "{\"subject\", \"at\"?}, or a WorkOS event"),
    responses((status = 200, body = Object), (status = 401), (status = 403), (status = 409), (status = 422), (status = 503)),
    security(("api_key" = []), ()))]
pub async fn report(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let actor = reporter(&state, &headers, &bytes)?;
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::invalid(&["body"], Value::Null, format!("the body is not JSON: {e}"))
    })?;
    let now = state.clock.now();
    let signed = actor.starts_with("webhook:");
    let (subject, at) = match reported(&body, now)? {
        // A sender's clock may run ahead of ours within the signature's tolerance.
        Report::Active(subject, at) if signed => (subject, at.min(now)),
        Report::Active(subject, at) => (subject, at),
        Report::Ignored(why) => return Ok(Json(json!({"result": "ignored", "why": why}))),
    };
    let key = state
        .hash_key
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("recording activity needs LETHE_HASH_KEY"))?;
    let subject = crate::ops::check_activity(&subject, at, "at", now)
        .map_err(|e| ApiError::invalid(&["body", "subject"], Value::Null, e.to_string()))?;
    let touched = crate::ops::touch(
        state.store.as_ref(),
        &state.graph,
        state.pipeline.notice_states(),
        key,
        subject,
        at,
        &actor,
        now,
    )
    .await;
    let touched = match touched {
        Ok(touched) => touched,
        // A sender that retries whatever is not a 2xx is told once that it changes nothing.
        Err(e)
            if signed && crate::error::Classified::kind(&e) == crate::error::ErrorKind::Refused =>
        {
            return Ok(Json(json!({"result": "ignored", "why": e.to_string()})));
        }
        Err(e) => {
            return Err(match crate::error::Classified::kind(&e) {
                crate::error::ErrorKind::Refused => ApiError::conflict(e.to_string()),
                crate::error::ErrorKind::Config => {
                    ApiError::invalid(&["body"], Value::Null, e.to_string())
                }
                _ => ApiError::internal("recording activity", &e),
            });
        }
    };
    Ok(Json(match touched {
        crate::ops::Touched::NoneOpen => json!({"result": "recorded"}),
        crate::ops::Touched::Cancelled(r) => json!({"result": "cancelled", "retirement": r}),
    }))
}
