//! `/ui/errored`: every ERRORED retirement with its failed state, last error and age; for
//! an operator, Resume (optionally in another state) and Abort (with a reason), each
//! confirmed on a second page, the result shown on the page it came from.

use super::layout::{Page, age, shell, when};
use super::retirement::{found, short};
use super::session::Session;
use super::{ConsoleState, Form};
use crate::domain::OperatorAction;
use crate::error::{Classified, ErrorKind};
use crate::store::{ListFilter, Retirement};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use maud::{Markup, html};
use std::sync::Arc;

/// The most errored retirements one page lists.
const LISTED: i64 = 500;

/// `GET /ui/errored` (`done` and `id` after an action: its result).
pub(super) async fn page(
    State(state): State<Arc<ConsoleState>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Page {
    let session = match state.session(&headers) {
        Ok(session) => session,
        Err(page) => return page,
    };
    let filter = ListFilter {
        state: Some(state.graph.errored().to_string()),
        limit: LISTED,
        ..ListFilter::default()
    };
    let rows = match state.store.list(&filter).await {
        Ok(rows) => rows,
        Err(e) => return Page::internal(Some(&session), &state, "listing errored retirements", &e),
    };
    let result = match done(&state, &pairs).await {
        Ok(result) => result,
        Err(e) => return Page::internal(Some(&session), &state, "reading a retirement", &e),
    };
    let now = state.clock.now();
    let body = html! {
        h1 { "Errored retirements" }
        @if let Some(result) = result { (result) }
        @if rows.is_empty() {
            p.muted { "No retirement is errored." }
        } @else {
            p { (rows.len()) @if rows.len() as i64 == LISTED { " (the newest " (LISTED) ")" } " errored, newest first." }
            div.scroll { table {
                thead { tr {
                    th scope="col" { "Retirement" } th scope="col" { "Failed in" }
                    th scope="col" { "Last error" } th scope="col" { "Age" }
                    @if session.acts() { th scope="col" { "Act" } }
                } }
                tbody {
                    @for r in &rows {
                        tr data-id=(r.public_id) {
                            td { a.mono href={ "/ui/retirements/" (r.public_id) } { (short(&r.public_id)) } br; span.muted { (r.reason) } }
                            td { (r.failed_state.as_deref().unwrap_or("?")) }
                            td { (r.last_error.as_deref().unwrap_or("")) }
                            td title=(when(r.updated_at)) { (age(now, r.updated_at)) }
                            @if session.acts() { td { (actions(&state, &session, r, "queue")) } }
                        }
                    }
                }
            } }
        }
    };
    Page::html(200, shell(&state, Some(&session), "Errored", body))
}

/// What the action named by `done` and `id` did, read back from the store.
pub(super) async fn done(
    state: &ConsoleState,
    pairs: &[(String, String)],
) -> Result<Option<Markup>, crate::store::StoreError> {
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some(done), Some(id)) = (param("done"), param("id")) else {
        return Ok(None);
    };
    let verb = match done {
        "resume" => "resumed",
        "abort" => "aborted",
        _ => return Ok(None),
    };
    let Ok(uuid) = uuid::Uuid::parse_str(id) else {
        return Ok(None);
    };
    let lookup = crate::store::Lookup::PublicId(uuid.hyphenated().to_string());
    Ok(state.store.find(&lookup).await?.map(|r| {
        html! {
            p.notice role="status" {
                "Retirement " a.mono href={ "/ui/retirements/" (r.public_id) } { (short(&r.public_id)) }
                " " (verb) ": now " strong { (r.state) } "."
            }
        }
    }))
}

/// The Resume and Abort forms of an errored retirement; `from` is where the result shows.
pub(super) fn actions(
    state: &ConsoleState,
    session: &Session,
    r: &Retirement,
    from: &str,
) -> Markup {
    let csrf = state.csrf(session);
    let failed = r.failed_state.as_deref().unwrap_or("");
    html! {
        form.act method="post" action={ "/ui/retirements/" (r.public_id) "/resume" } {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="from" value=(from);
            label for={ "to-" (r.public_id) } { "Resume in" }
            select id={ "to-" (r.public_id) } name="to" {
                option value="" selected { (failed) " (where it failed)" }
                @for w in state.graph.working() {
                    @if w != failed { option value=(w) { (w) } }
                }
            }
            button type="submit" { "Resume…" }
        }
        form.act method="post" action={ "/ui/retirements/" (r.public_id) "/abort" } {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="from" value=(from);
            label for={ "why-" (r.public_id) } { "Reason" }
            input type="text" id={ "why-" (r.public_id) } name="reason" required placeholder="why it is aborted";
            button.danger type="submit" { "Abort…" }
        }
    }
}

/// `POST /ui/retirements/{id}/resume` (`to` optional, `confirm=yes` to act).
pub(super) async fn resume(
    State(state): State<Arc<ConsoleState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Page {
    let form = Form::parse(&body);
    let to = form.get("to").filter(|t| !t.is_empty()).map(str::to_string);
    act(&state, &headers, &id, &form, OperatorAction::Resume { to }).await
}

/// `POST /ui/retirements/{id}/abort` (`reason` required, `confirm=yes` to act).
pub(super) async fn abort(
    State(state): State<Arc<ConsoleState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Page {
    let form = Form::parse(&body);
    let reason = form.get("reason").unwrap_or("").trim().to_string();
    act(
        &state,
        &headers,
        &id,
        &form,
        OperatorAction::Abort { reason },
    )
    .await
}

async fn act(
    state: &ConsoleState,
    headers: &HeaderMap,
    id: &str,
    form: &Form,
    action: OperatorAction,
) -> Page {
    let session = match state.acting(headers, form) {
        Ok(session) => session,
        Err(page) => return page,
    };
    let r = match found(state, Some(&session), id).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let (verb, kind) = match &action {
        OperatorAction::Abort { reason } if reason.is_empty() => {
            return Page::error(
                Some(&session),
                state,
                400,
                "An abort needs a reason",
                "Say why it is aborted: the reason is recorded in its event. Nothing was changed.",
            );
        }
        OperatorAction::Resume { to: Some(to) } if !state.graph.is_working(to) => {
            return Page::error(
                Some(&session),
                state,
                400,
                "No such working state",
                &format!(
                    "A retirement resumes in a working state: {}. Nothing was changed.",
                    state.graph.working().join(", ")
                ),
            );
        }
        OperatorAction::Resume { .. } => ("Resume", "resume"),
        OperatorAction::Abort { .. } => ("Abort", "abort"),
        _ => ("Act", "act"),
    };
    let from = match form.get("from") {
        Some("page") => "page",
        _ => "queue",
    };
    if form.get("confirm") != Some("yes") {
        return confirm(state, &session, &r, &action, verb, kind, from);
    }
    let target = format!("#{}", r.id);
    let now = state.clock.now();
    match crate::ops::operate(
        state.store.as_ref(),
        &state.graph,
        &target,
        None,
        &action,
        &session.actor(),
        now,
    )
    .await
    {
        Ok(done) => {
            tracing::info!(retirement = done.id, key = %session.name, action = kind, state = %done.state, "console: operator action");
            match from {
                "page" => Page::redirect(&format!(
                    "/ui/retirements/{}?done={kind}&id={}",
                    done.public_id, done.public_id
                )),
                _ => Page::redirect(&format!("/ui/errored?done={kind}&id={}", done.public_id)),
            }
        }
        Err(e) => match e.kind() {
            ErrorKind::Refused => Page::error(
                Some(&session),
                state,
                409,
                "The action was refused",
                &format!("{e}. Nothing was changed."),
            ),
            ErrorKind::NotFound => Page::error(
                Some(&session),
                state,
                404,
                "No such retirement",
                &format!("{e}. Nothing was changed."),
            ),
            ErrorKind::Config => Page::error(
                Some(&session),
                state,
                400,
                "The action is not valid",
                &format!("{e}. Nothing was changed."),
            ),
            _ => Page::internal(Some(&session), state, "acting on a retirement", &e),
        },
    }
}

/// The confirmation page: what will happen, and the same form with `confirm=yes`.
fn confirm(
    state: &ConsoleState,
    session: &Session,
    r: &Retirement,
    action: &OperatorAction,
    verb: &str,
    kind: &str,
    from: &str,
) -> Page {
    let back = match from {
        "page" => format!("/ui/retirements/{}", r.public_id),
        _ => "/ui/errored".to_string(),
    };
    let failed = r.failed_state.as_deref().unwrap_or("?");
    let body = html! {
        h1 { (verb) " this retirement?" }
        dl.facts {
            dt { "Retirement" } dd.mono { (r.public_id) }
            dt { "Reason" } dd { (r.reason) }
            dt { "State" } dd { (r.state) " (failed in " (failed) ")" }
            dt { "Last error" } dd { (r.last_error.as_deref().unwrap_or("")) }
        }
        p {
            @match action {
                OperatorAction::Resume { to } => {
                    "It goes back to " strong { (to.as_deref().unwrap_or(failed)) } " and is due now; the driver runs that stage again."
                }
                OperatorAction::Abort { reason } => {
                    "It ends as " strong { (state.graph.aborted()) } " with the reason " q { (reason) } "; its PII is erased and nothing more is deleted. This cannot be undone."
                }
                _ => {}
            }
            " The event names your key, " strong { (session.name) } "."
        }
        form.act method="post" action={ "/ui/retirements/" (r.public_id) "/" (kind) } {
            input type="hidden" name="csrf" value=(state.csrf(session));
            input type="hidden" name="from" value=(from);
            input type="hidden" name="confirm" value="yes";
            @match action {
                OperatorAction::Resume { to: Some(to) } => { input type="hidden" name="to" value=(to); }
                OperatorAction::Abort { reason } => { input type="hidden" name="reason" value=(reason); }
                _ => {}
            }
            button.danger[kind == "abort"] type="submit" { "Yes, " (verb.to_lowercase()) }
            a href=(back) { "Cancel" }
        }
    };
    Page::html(200, shell(state, Some(session), "Confirm", body))
}
