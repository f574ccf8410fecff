//! `/ui`: retirements per state now, the oldest open one per state, transitions per day
//! over the last 30 days, the latest scans (with any blast-radius refusal), the driver.

use super::layout::{Page, age, shell, when};
use super::{ConsoleState, chart};
use axum::extract::State;
use axum::http::HeaderMap;
use maud::html;
use std::sync::Arc;

/// Days the chart covers.
const CHART_DAYS: u32 = 30;
/// Scan runs listed.
const SCANS: i64 = 10;

/// `GET /ui`.
pub(super) async fn page(State(state): State<Arc<ConsoleState>>, headers: HeaderMap) -> Page {
    let session = match state.session(&headers) {
        Ok(session) => session,
        Err(page) => return page,
    };
    let now = state.clock.now();
    let since = crate::domain::before(
        now,
        std::time::Duration::from_secs(u64::from(CHART_DAYS) * 86_400),
    );
    let store = state.store.as_ref();
    let read = futures_util::future::join4(
        crate::ops::stats(store, Some(&state.graph)),
        store.open_by_state(),
        store.transitions_by_day(since),
        store.recent_scans(SCANS),
    )
    .await;
    let (counts, open, days, scans) = match read {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
            return Page::internal(Some(&session), &state, "reading the dashboard", &e);
        }
    };
    let days = chart::days(&days, now.date_naive(), CHART_DAYS);
    let paused = state.pipeline.policy.paused;
    let errored = state.graph.errored();
    let body = html! {
        h1 { "Dashboard" }
        p.status.paused[paused] {
            @if !state.runs_driver {
                "Driver: not run by this process (lethe serve); retirements move only where lethe run runs."
            } @else if paused {
                "Driver: paused (policy.paused = true in pipeline.toml): nothing is claimed."
            } @else {
                "Driver: running."
            }
        }
        h2 { "Retirements per state" }
        ul.cards aria-label="Retirements per state" {
            @for (name, n) in &counts {
                li.errored[name == errored && *n > 0] data-state=(name) {
                    span.n { (n) }
                    @if name == errored {
                        a href="/ui/errored" { (name) }
                    } @else {
                        (name)
                    }
                }
            }
        }
        h2 { "Oldest open retirement per state" }
        @if open.is_empty() {
            p.muted { "No retirement is open." }
        } @else {
            div.scroll { table {
                thead { tr {
                    th scope="col" { "State" } th.num scope="col" { "Open" }
                    th scope="col" { "Unchanged for" } th scope="col" { "Oldest" }
                } }
                tbody {
                    @for o in &open {
                        tr {
                            td { (o.state) }
                            td.num { (o.open) }
                            td title=(when(o.oldest_at)) { (age(now, o.oldest_at)) }
                            td { a.mono href={ "/ui/retirements/" (o.oldest_id) } { (o.oldest_id) } }
                        }
                    }
                }
            } }
        }
        h2 { "Transitions per day, last " (CHART_DAYS) " days" }
        (chart::chart(&days))
        h2 { "Latest scans" }
        @if scans.is_empty() {
            p.muted { "No scan has run yet." }
        } @else {
            div.scroll { table {
                thead { tr {
                    th scope="col" { "Started" } th scope="col" { "Rule" }
                    th.num.hide-narrow scope="col" { "Users" } th.num scope="col" { "Selected" }
                    th.num.hide-narrow scope="col" { "Excluded" } th.num.hide-narrow scope="col" { "Already open" }
                    th.num scope="col" { "Opened" } th scope="col" { "Refused" }
                } }
                tbody {
                    @for s in &scans {
                        tr {
                            td { (when(s.started_at)) }
                            td { (s.rule.as_deref().unwrap_or("inactive")) }
                            td.num.hide-narrow { (s.seen) }
                            td.num { (s.inactive) }
                            td.num.hide-narrow { (s.excluded) }
                            td.num.hide-narrow { (s.already_open) }
                            td.num { (s.enqueued) }
                            td.refused[s.refused.is_some()] { (s.refused.as_deref().unwrap_or("")) }
                        }
                    }
                }
            } }
        }
    };
    Page::html(200, shell(&state, Some(&session), "Dashboard", body))
}
