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

/// The chart's counts of the days before yesterday, as read on `today`. Events are
/// append-only and stamped when written, so a day two days gone no longer changes: it is
/// read once a day instead of on every page (on a large store most of the chart's rows).
pub(super) struct ClosedDays {
    today: chrono::NaiveDate,
    counts: Vec<crate::store::DayCount>,
}

/// The chart's counts since the start of the day `CHART_DAYS - 1` days before `now`'s:
/// the closed days from the cache (read again when the day changes), yesterday and today
/// from the store.
async fn chart_counts(
    state: &ConsoleState,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<crate::store::DayCount>, crate::store::StoreError> {
    let today = now.date_naive();
    let start_of = |days_back: u32| {
        today
            .checked_sub_days(chrono::Days::new(days_back.into()))
            .unwrap_or(today)
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc()
    };
    let (first, yesterday) = (start_of(CHART_DAYS - 1), start_of(1));
    let cached = state.closed_days.lock().ok().and_then(|c| {
        c.as_ref()
            .filter(|c| c.today == today)
            .map(|c| c.counts.clone())
    });
    let mut counts = match cached {
        Some(counts) => counts,
        None => {
            let cut = yesterday.format("%Y-%m-%d").to_string();
            let closed: Vec<_> = state
                .store
                .transitions_by_day(first)
                .await?
                .into_iter()
                .filter(|c| c.day < cut)
                .collect();
            if let Ok(mut cache) = state.closed_days.lock() {
                *cache = Some(ClosedDays {
                    today,
                    counts: closed.clone(),
                });
            }
            closed
        }
    };
    counts.extend(state.store.transitions_by_day(yesterday).await?);
    Ok(counts)
}

/// `GET /ui`.
pub(super) async fn page(State(state): State<Arc<ConsoleState>>, headers: HeaderMap) -> Page {
    let session = match state.session(&headers) {
        Ok(session) => session,
        Err(page) => return page,
    };
    let now = state.clock.now();
    let store = state.store.as_ref();
    let read = futures_util::future::join4(
        crate::ops::stats(store, Some(&state.graph)),
        store.open_by_state(),
        chart_counts(&state, now),
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
