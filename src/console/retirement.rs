//! `/ui/retirements/{id}`: a retirement's state, reason, rule, due time, the systems it
//! was deleted from, its services' acknowledgements, and its whole event timeline.

use super::ConsoleState;
use super::errored::{actions, done};
use super::layout::{Page, shell, when};
use super::session::Session;
use crate::store::{Event, Lookup, Retirement, ServiceAck};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use maud::{Markup, html};
use serde_json::Value;
use std::sync::Arc;

/// The first block of a UUID, enough to tell retirements apart in a list.
pub(super) fn short(public_id: &str) -> &str {
    public_id.split('-').next().unwrap_or(public_id)
}

/// The retirement `id` (its UUID or number) names, or the 404 page saying so.
pub(super) async fn found(
    state: &ConsoleState,
    session: Option<&Session>,
    id: &str,
) -> Result<Retirement, Page> {
    let lookup = match (uuid::Uuid::parse_str(id), id.parse::<i64>()) {
        (Ok(uuid), _) => Lookup::PublicId(uuid.hyphenated().to_string()),
        (_, Ok(number)) => Lookup::Id(number),
        _ => {
            return Err(Page::error(
                session,
                state,
                404,
                "No such retirement",
                "A retirement is named by its UUID (or its number).",
            ));
        }
    };
    match state.store.find(&lookup).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(Page::error(
            session,
            state,
            404,
            "No such retirement",
            &format!("No retirement is named {id}."),
        )),
        Err(e) => Err(Page::internal(session, state, "finding a retirement", &e)),
    }
}

/// `GET /ui/retirements/{id}`.
pub(super) async fn page(
    State(state): State<Arc<ConsoleState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Page {
    let session = match state.session(&headers) {
        Ok(session) => session,
        Err(page) => return page,
    };
    let r = match found(&state, Some(&session), &id).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let read = futures_util::future::join3(
        state.store.history(r.id),
        state.store.acks(r.id),
        done(&state, &pairs),
    )
    .await;
    let (events, acks, result) = match read {
        (Ok(events), Ok(acks), Ok(result)) => (events, acks, result),
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
            return Page::internal(Some(&session), &state, "reading a retirement", &e);
        }
    };
    let body = html! {
        h1 { "Retirement " span.mono { (short(&r.public_id)) } }
        @if let Some(result) = result { (result) }
        (summary(&state, &r, &events, &acks))
        (facts(&r))
        @if r.state == state.graph.errored() && session.acts() {
            h2 { "Act" }
            (actions(&state, &session, &r, "page"))
        }
        (services(&acks))
        h2 { "Timeline" }
        (timeline(&events))
    };
    Page::html(200, shell(&state, Some(&session), "Retirement", body))
}

/// One sentence: retired when and from where, aborted why, or where it stands.
pub(super) fn summary(
    state: &ConsoleState,
    r: &Retirement,
    events: &[Event],
    acks: &[ServiceAck],
) -> Markup {
    let systems = systems(state, events, acks);
    let graph = &state.graph;
    html! {
        p.status data-state=(r.state) {
            @if r.state == graph.complete() {
                "Retired on " strong { (r.ended_at.map(when).unwrap_or_default()) }
                @if systems.is_empty() { "." } @else { " from " strong { (systems.join(", ")) } "." }
            } @else if r.state == graph.aborted() {
                "Aborted on " (r.ended_at.map(when).unwrap_or_default()) ": "
                (events.iter().rev().find(|e| e.to_state == r.state).map(|e| why(&e.detail)).unwrap_or_default())
                @if !systems.is_empty() { " (already deleted from " (systems.join(", ")) ")" }
            } @else if r.state == graph.errored() {
                "Errored in " strong { (r.failed_state.as_deref().unwrap_or("?")) } ": " (r.last_error.as_deref().unwrap_or(""))
            } @else {
                "Open, in " strong { (r.state) }
                @if let Some(due) = r.due_at { ", due " (when(due)) }
                @if !systems.is_empty() { "; deleted so far from " (systems.join(", ")) }
                "."
            }
        }
    }
}

/// The systems a retirement was deleted from: lethe's own deleting stages that finished
/// (a `done` event out of their state), then the services that acknowledged.
fn systems(state: &ConsoleState, events: &[Event], acks: &[ServiceAck]) -> Vec<String> {
    let mut out: Vec<String> = state
        .pipeline
        .stages
        .iter()
        .filter_map(|stage| {
            let name = stage.listed_as()?;
            events
                .iter()
                .any(|e| e.outcome == "done" && e.from_state.as_deref() == Some(&stage.state))
                .then(|| name.to_string())
        })
        .collect();
    out.extend(acks.iter().filter(|a| a.acked).map(|a| a.service.clone()));
    out
}

fn facts(r: &Retirement) -> Markup {
    html! {
        dl.facts {
            dt { "Id" } dd.mono { (r.public_id) " (#" (r.id) ")" }
            dt { "State" } dd { (r.state) }
            dt { "Reason" } dd { (r.reason) }
            dt { "Rule" } dd { (r.rule.as_deref().unwrap_or("opened by hand")) }
            dt { "Opened" } dd { (when(r.created_at)) }
            dt { "Warned" } dd { (r.warned_at.map(when).unwrap_or_else(|| "not warned".into())) }
            dt { "Due" } dd { (r.due_at.map(when).unwrap_or_else(|| "nothing due".into())) }
            @if let Some(ended) = r.ended_at { dt { "Ended" } dd { (when(ended)) } }
            @if let Some(failed) = &r.failed_state { dt { "Failed in" } dd { (failed) } }
            @if let Some(error) = &r.last_error { dt { "Last error" } dd { (error) } }
            dt { "Subject" } dd {
                @match &r.subject { Some(s) => { (s) }, None => { span.muted { "erased" } } }
                " · hash " span.mono { (r.subject_hash.get(..16).unwrap_or(&r.subject_hash)) "…" }
            }
            @if r.exclusion_override { dt { "Exclusions" } dd { "overridden by an operator" } }
        }
    }
}

fn services(acks: &[ServiceAck]) -> Markup {
    html! {
        @if !acks.is_empty() {
            h2 { "Services" }
            div.scroll { table {
                thead { tr {
                    th scope="col" { "Service" } th scope="col" { "Status" } th scope="col" { "Handed over" }
                    th scope="col" { "Notified" } th scope="col" { "Acknowledged" }
                } }
                tbody {
                    @for a in acks {
                        tr {
                            td { (a.service) }
                            td { @if a.acked { "deleted" } @else { "to delete" } }
                            td { (a.created_at.map(when).unwrap_or_default()) }
                            td { (a.notified_at.map(when).unwrap_or_default()) }
                            td { (a.acked_at.map(when).unwrap_or_default()) @if let Some(by) = &a.acked_by { " by " (by) } }
                        }
                    }
                }
            } }
        }
    }
}

/// Every event: when, who, what, from and to, and its detail (rows per table).
pub(super) fn timeline(events: &[Event]) -> Markup {
    html! {
        div.scroll { table.timeline {
            thead { tr {
                th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "What" }
                th scope="col" { "State" } th scope="col" { "Detail" }
            } }
            tbody {
                @for e in events {
                    tr data-outcome=(e.outcome) {
                        td { (when(e.at)) }
                        td { (e.actor) }
                        td { (e.outcome) @if e.attempt > 1 { " (attempt " (e.attempt) ")" } }
                        td { @if let Some(from) = &e.from_state { (from) " → " } (e.to_state) }
                        td { (detail(&e.detail)) }
                    }
                }
            }
        } }
    }
}

/// An event's JSON detail as `key: value` lines; objects of counts (rows per table) as
/// `table n` pairs.
fn detail(text: &str) -> Markup {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
        return html! { (text) };
    };
    html! {
        @for (key, value) in &map {
            span.detail { strong { (key) } ": " (flat(value)) } br;
        }
    }
}

fn flat(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k} {}", flat(v)))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Array(items) => items.iter().map(flat).collect::<Vec<_>>().join("; "),
        other => other.to_string(),
    }
}

/// The `why` (or `reason`) of an event's detail.
fn why(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| {
            ["why", "reason", "error"]
                .iter()
                .find_map(|k| v.get(k).and_then(Value::as_str).map(str::to_string))
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn details_read_as_lines_and_counts_as_pairs() {
        let html =
            super::detail(r#"{"target":"edx","rows":{"auth_user":1,"student_x":3}}"#).into_string();
        assert!(
            html.contains("<strong>rows</strong>: auth_user 1, student_x 3"),
            "{html}"
        );
        assert!(html.contains("<strong>target</strong>: edx"));
        assert_eq!(super::detail("<b>").into_string(), "&lt;b&gt;");
        assert_eq!(
            super::why(r#"{"why":"account confirmed"}"#),
            "account confirmed"
        );
    }
}
