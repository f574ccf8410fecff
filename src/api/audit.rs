//! `GET /v1/audit`: the audit trail, JSON or CSV, streamed a page at a time so a long
//! period neither waits for nor holds every row.

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use super::retirements::{limit, param, reader, time};
use crate::store::AuditFilter;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::Arc;

/// The largest `limit` one request may ask for.
const MAX_ROWS: i64 = 1_000_000;

/// `GET /v1/audit`: `since`, `until`, `subject` (id, email or `#id`), `limit` (default
/// 10,000, at most 1,000,000); JSON, or CSV when the client accepts `text/csv`; streamed.
#[utoipa::path(get, path = "/v1/audit", tag = "retirements",
    params(("since" = Option<String>, Query), ("until" = Option<String>, Query),
        ("subject" = Option<String>, Query), ("limit" = Option<i64>, Query)),
    responses((status = 200, description = "JSON, or CSV for Accept: text/csv", body = Object)),
    security(("api_key" = [])))]
pub async fn audit(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    reader(&caller)?;
    let subject = param(&pairs, "subject")
        .map(|s| {
            crate::ops::parse_target(s, state.hash_key.as_ref())
                .map_err(|e| ApiError::invalid(&["query", "subject"], Value::Null, e.to_string()))
        })
        .transpose()?;
    let total = limit(&pairs, 10_000, MAX_ROWS)?;
    let filter = AuditFilter {
        after: None,
        since: time(&pairs, "since")?,
        until: time(&pairs, "until")?,
        subject,
        limit: total.min(crate::ops::audit::PAGE),
    };
    let csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    // The first page before the answer: a store that fails now is a 500, not a cut body.
    let stream = crate::ops::audit::stream(state.store.clone(), filter, total, csv)
        .await
        .map_err(|e| ApiError::internal("reading the audit trail", &e))?;
    let body = Body::from_stream(futures_util::StreamExt::map(stream, |chunk| {
        chunk.map(Bytes::from)
    }));
    let content_type = match csv {
        true => "text/csv; charset=utf-8",
        false => "application/json",
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}
