//! `/ui/lookup`: an auditor finds what happened to a person by email or subject id (the
//! keyed hashes find it after the PII is erased), with the timeline; and exports the audit
//! trail of a date range as CSV. The search is a POST so no email sits in a URL.

use super::layout::{Page, shell};
use super::retirement::{short, summary, timeline};
use super::session::Session;
use super::{ConsoleState, Form};
use crate::store::{AuditFilter, Lookup};
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use std::sync::Arc;

/// The most rows one export holds.
const MAX_EXPORT: i64 = 1_000_000;

fn search_form(state: &ConsoleState, session: &Session, q: &str) -> Markup {
    html! {
        form.act method="post" action="/ui/lookup" role="search" {
            input type="hidden" name="csrf" value=(state.csrf(session));
            label for="q" { "Email, subject id or retirement id" }
            input id="q" type="search" name="q" value=(q) required autocomplete="off";
            button type="submit" { "Look up" }
        }
        @if state.hash_key.is_none() {
            p.muted { "LETHE_HASH_KEY is not set for this process: only open retirements are found, by subject id." }
        }
    }
}

fn export_form() -> Markup {
    html! {
        h2 { "Export the audit trail" }
        form.act method="get" action="/ui/audit.csv" {
            label for="since" { "From" }
            input id="since" type="date" name="since" required;
            label for="until" { "to (not included)" }
            input id="until" type="date" name="until" required;
            button type="submit" { "Download CSV" }
        }
    }
}

/// `GET /ui/lookup`.
pub(super) async fn page(State(state): State<Arc<ConsoleState>>, headers: HeaderMap) -> Page {
    let session = match state.session(&headers) {
        Ok(session) => session,
        Err(page) => return page,
    };
    let body = html! {
        h1 { "Lookup" }
        (search_form(&state, &session, ""))
        (export_form())
    };
    Page::html(200, shell(&state, Some(&session), "Lookup", body))
}

/// `POST /ui/lookup` with `q` and `csrf`.
pub(super) async fn search(
    State(state): State<Arc<ConsoleState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Page {
    let form = Form::parse(&body);
    let session = match state.posted(&headers, &form) {
        Ok(session) => session,
        Err(page) => return page,
    };
    let q = form.get("q").unwrap_or("").trim();
    if q.is_empty() || q.len() > crate::ops::MAX_EMAIL {
        return Page::error(
            Some(&session),
            &state,
            400,
            "Nothing to look up",
            "Give an email, a subject id or a retirement id.",
        );
    }
    let lookup = match uuid::Uuid::parse_str(q) {
        Ok(uuid) => Lookup::PublicId(uuid.hyphenated().to_string()),
        Err(_) => Lookup::subject(q, state.hash_key.as_ref()),
    };
    let found = match state.store.find(&lookup).await {
        Ok(found) => found,
        Err(e) => return Page::internal(Some(&session), &state, "looking up", &e),
    };
    let result = match found {
        None => html! { p.notice role="status" { "No retirement matches " q { (q) } "." } },
        Some(r) => {
            let read =
                futures_util::future::join(state.store.history(r.id), state.store.acks(r.id)).await;
            let (events, acks) = match read {
                (Ok(events), Ok(acks)) => (events, acks),
                (Err(e), _) | (_, Err(e)) => {
                    return Page::internal(Some(&session), &state, "reading a retirement", &e);
                }
            };
            html! {
                h2 { "Retirement " a.mono href={ "/ui/retirements/" (r.public_id) } { (short(&r.public_id)) } }
                (summary(&state, &r, &events, &acks))
                (timeline(&events))
            }
        }
    };
    let body = html! {
        h1 { "Lookup" }
        (search_form(&state, &session, q))
        section aria-live="polite" { (result) }
        (export_form())
    };
    Page::html(200, shell(&state, Some(&session), "Lookup", body))
}

/// `GET /ui/audit.csv?since=DATE&until=DATE`: the events of that range as CSV, streamed.
pub(super) async fn export(
    State(state): State<Arc<ConsoleState>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let session = match state.session(&headers) {
        Ok(session) => session,
        Err(page) => return page.into_response(),
    };
    let mut range = Vec::new();
    for name in ["since", "until"] {
        let text = pairs
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str());
        match crate::ops::parse_time(name, text) {
            Ok(at) => range.push((text, at)),
            Err(e) => {
                return Page::error(
                    Some(&session),
                    &state,
                    400,
                    "The export needs a date range",
                    &format!("{e} (a date, YYYY-MM-DD)."),
                )
                .into_response();
            }
        }
    }
    let [(since_text, since), (until_text, until)] = [range[0], range[1]];
    let filter = AuditFilter {
        since: Some(since),
        until: Some(until),
        ..AuditFilter::default()
    };
    let stream =
        match crate::ops::audit::stream(state.store.clone(), filter, MAX_EXPORT, true).await {
            Ok(stream) => stream,
            Err(e) => {
                return Page::internal(Some(&session), &state, "reading the audit trail", &e)
                    .into_response();
            }
        };
    tracing::info!(key = %session.name, since = %since_text, until = %until_text, "console: audit export");
    let file = format!(
        "attachment; filename=\"lethe-audit-{}-{}.csv\"",
        clean(since_text),
        clean(until_text)
    );
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, file),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(futures_util::StreamExt::map(stream, |chunk| {
            chunk.map(Bytes::from)
        })),
    )
        .into_response()
}

/// A date as it may appear in a file name.
fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect()
}
