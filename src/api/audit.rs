//! `GET /v1/audit`: the audit trail, JSON or CSV, streamed a page at a time so a long
//! period neither waits for nor holds every row.

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use super::retirements::{limit, param, reader, time};
use crate::store::{AuditFilter, AuditRow, Store};
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::Arc;

/// Rows read from the store per page of the stream.
const PAGE: i64 = 1000;

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
        limit: total.min(PAGE),
    };
    // The first page before the answer: a store that fails now is a 500, not a cut body.
    let first = state
        .store
        .audit(&filter)
        .await
        .map_err(|e| ApiError::internal("reading the audit trail", &e))?;
    let csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    let pages = Pages {
        store: state.store.clone(),
        filter,
        left: total,
        csv,
        started: false,
        any: false,
    };
    let body = Body::from_stream(futures_util::stream::unfold(
        (pages, Some(first)),
        |(mut pages, page)| async move {
            let chunk = pages.next(page).await?;
            Some((chunk, (pages, None)))
        },
    ));
    let content_type = match csv {
        true => "text/csv; charset=utf-8",
        false => "application/json",
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// Where the stream stands.
struct Pages {
    store: Arc<dyn Store>,
    filter: AuditFilter,
    left: i64,
    csv: bool,
    /// The opening (`[` or the CSV header) has gone.
    started: bool,
    /// A JSON row has gone (the next one needs a comma).
    any: bool,
}

impl Pages {
    /// The next chunk of the body (`page`, when already read, else the next from the
    /// store), or `None` once the closing bracket has gone.
    async fn next(&mut self, page: Option<Vec<AuditRow>>) -> Option<Result<Bytes, std::io::Error>> {
        if self.left <= 0 && self.started {
            return None;
        }
        let rows = match page {
            Some(rows) => rows,
            None => match self.store.audit(&self.filter).await {
                Ok(rows) => rows,
                Err(e) => {
                    // The status has gone: the client sees a cut body, the log says why.
                    tracing::error!(error = %e, "audit stream: the store failed mid-stream");
                    return Some(Err(std::io::Error::other("the store failed mid-stream")));
                }
            },
        };
        let mut text = String::new();
        if !self.started {
            text.push_str(match self.csv {
                true => crate::ops::audit::CSV_HEADER,
                false => "[",
            });
            if self.csv {
                text.push('\n');
            }
        }
        for row in &rows {
            if self.csv {
                text.push_str(&crate::ops::audit::csv_line(row));
                text.push('\n');
            } else {
                if self.any {
                    text.push(',');
                }
                text.push_str(&serde_json::to_string(row).unwrap_or_else(|_| "null".into()));
                self.any = true;
            }
        }
        self.started = true;
        self.left -= rows.len() as i64;
        let last = rows.last().map(|r| (r.event.at, r.event.id));
        let more = rows.len() as i64 == self.filter.limit && self.left > 0;
        match (more, last) {
            (true, Some(after)) => {
                self.filter.after = Some(after);
                self.filter.limit = self.left.min(PAGE);
            }
            _ => {
                self.left = 0;
                if !self.csv {
                    text.push(']');
                }
            }
        }
        Some(Ok(Bytes::from(text)))
    }
}
