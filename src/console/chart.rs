//! The dashboard's chart, drawn on the server as SVG: transitions per day over the last
//! days, stacked by outcome (done, cancelled, errored). Pure.

use crate::store::DayCount;
use chrono::NaiveDate;
use maud::{Markup, html};

/// One day's bar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Day {
    /// Stage transitions done.
    pub done: i64,
    /// Cancelled (activity, a rule no longer selecting) or aborted by an operator.
    pub cancelled: i64,
    /// Errored.
    pub errored: i64,
}

impl Day {
    fn total(&self) -> i64 {
        self.done + self.cancelled + self.errored
    }
}

/// The `span` days up to `today`, oldest first, each with its counts.
pub fn days(counts: &[DayCount], today: NaiveDate, span: u32) -> Vec<(NaiveDate, Day)> {
    let mut out: Vec<(NaiveDate, Day)> = (0..span)
        .rev()
        .filter_map(|back| today.checked_sub_days(chrono::Days::new(back.into())))
        .map(|d| (d, Day::default()))
        .collect();
    for count in counts {
        let Ok(day) = NaiveDate::parse_from_str(&count.day, "%Y-%m-%d") else {
            continue;
        };
        let Some((_, bar)) = out.iter_mut().find(|(d, _)| *d == day) else {
            continue;
        };
        match count.outcome.as_str() {
            "done" => bar.done += count.count,
            "cancel" | "abort" => bar.cancelled += count.count,
            "fail" => bar.errored += count.count,
            _ => {}
        }
    }
    out
}

const WIDTH: i64 = 600;
const HEIGHT: i64 = 200;
const LEFT: i64 = 48;
const BOTTOM: i64 = 24;

/// The chart of `days` (from [`days`]), with a title for screen readers and a table of
/// the same numbers beside it.
pub fn chart(days: &[(NaiveDate, Day)]) -> Markup {
    let top = days
        .iter()
        .map(|(_, d)| d.total())
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_h = HEIGHT - BOTTOM - 8;
    let slot = (WIDTH - LEFT) as f64 / days.len().max(1) as f64;
    let bar_w = (slot * 0.7).max(1.0);
    let y = |n: i64| -> f64 { (n as f64 / top as f64) * plot_h as f64 };
    let total: i64 = days.iter().map(|(_, d)| d.total()).sum();
    let label = format!(
        "Transitions per day over the last {} days: {total} in all, at most {top} in a day",
        days.len()
    );
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(label) {
                title { (label) }
                line.axis x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH) y2=(HEIGHT - BOTTOM) {}
                text.tick x=(LEFT - 6) y=(HEIGHT - BOTTOM) text-anchor="end" { "0" }
                text.tick x=(LEFT - 6) y=(HEIGHT - BOTTOM - plot_h + 10) text-anchor="end" { (top) }
                @for (i, (day, d)) in days.iter().enumerate() {
                    @let x = LEFT as f64 + i as f64 * slot + (slot - bar_w) / 2.0;
                    @let base = (HEIGHT - BOTTOM) as f64;
                    @let (h_done, h_cancel, h_err) = (y(d.done), y(d.cancelled), y(d.errored));
                    g {
                        title { (day) ": " (d.done) " done, " (d.cancelled) " cancelled, " (d.errored) " errored" }
                        @if d.done > 0 {
                            rect.done x=(fmt(x)) y=(fmt(base - h_done)) width=(fmt(bar_w)) height=(fmt(h_done)) {}
                        }
                        @if d.cancelled > 0 {
                            rect.cancelled x=(fmt(x)) y=(fmt(base - h_done - h_cancel)) width=(fmt(bar_w)) height=(fmt(h_cancel)) {}
                        }
                        @if d.errored > 0 {
                            rect.errored x=(fmt(x)) y=(fmt(base - h_done - h_cancel - h_err)) width=(fmt(bar_w)) height=(fmt(h_err)) {}
                        }
                    }
                    @if i % 7 == days.len().saturating_sub(1) % 7 {
                        text.tick x=(fmt(x + bar_w / 2.0)) y=(HEIGHT - 6) text-anchor="middle" { (day.format("%m-%d")) }
                    }
                }
            }
            figcaption {
                span.key.done { "done" } " "
                span.key.cancelled { "cancelled" } " "
                span.key.errored { "errored" }
            }
            details {
                summary { "The numbers" }
                table {
                    thead { tr { th scope="col" { "Day" } th scope="col" { "Done" } th scope="col" { "Cancelled" } th scope="col" { "Errored" } } }
                    tbody {
                        @for (day, d) in days.iter().rev().filter(|(_, d)| d.total() > 0) {
                            tr { td { (day) } td { (d.done) } td { (d.cancelled) } td { (d.errored) } }
                        }
                    }
                }
            }
        }
    }
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(day: &str, outcome: &str, n: i64) -> DayCount {
        DayCount {
            day: day.into(),
            outcome: outcome.into(),
            count: n,
        }
    }

    #[test]
    fn counts_fall_on_their_day_by_outcome() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
        let counts = [
            count("2026-12-04", "done", 5),
            count("2026-12-04", "abort", 1),
            count("2026-12-04", "cancel", 2),
            count("2026-12-02", "fail", 3),
            count("2026-10-01", "done", 99),
            count("garbage", "done", 1),
        ];
        let days = days(&counts, today, 30);
        assert_eq!(days.len(), 30);
        assert_eq!(days[0].0, NaiveDate::from_ymd_opt(2026, 11, 5).unwrap());
        assert_eq!(
            days[29].1,
            Day {
                done: 5,
                cancelled: 3,
                errored: 0
            }
        );
        assert_eq!(days[27].1.errored, 3);
        assert_eq!(days.iter().map(|(_, d)| d.total()).sum::<i64>(), 11);
    }

    #[test]
    fn the_chart_draws_a_bar_per_outcome_and_scales_to_the_top_day() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
        let days = days(
            &[
                count("2026-12-04", "done", 10),
                count("2026-12-03", "fail", 5),
            ],
            today,
            30,
        );
        let svg = chart(&days).into_string();
        assert_eq!(svg.matches("<rect class=\"done\"").count(), 1);
        assert_eq!(svg.matches("<rect class=\"errored\"").count(), 1);
        // The top day fills the plot; half of it, half the height.
        assert!(svg.contains("height=\"168.0\""), "{svg}");
        assert!(svg.contains("height=\"84.0\""), "{svg}");
        assert!(svg.contains("15 in all, at most 10 in a day"));
        let empty = chart(&super::days(&[], today, 30)).into_string();
        assert!(!empty.contains("<rect"));
    }
}
