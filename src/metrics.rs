//! Process metrics, rendered in the Prometheus text format by the API's `/metrics`:
//! counters and latency histograms by label, in one process-wide registry (as a
//! recorder would be), so the driver, the stages and the API count without threading a
//! handle through. Labels are stage, outcome, template, route and status names: never
//! a subject, an email or a raw path.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

/// Every metric this process exports: (name, type, help).
pub const DESCRIBED: [(&str, &str, &str); 8] = [
    (
        "lethe_transitions_total",
        "counter",
        "Outcomes planned for retirements, by the stage that ran and its outcome.",
    ),
    (
        "lethe_handler_seconds",
        "histogram",
        "Time a stage handler took for one batch.",
    ),
    (
        "lethe_failures_total",
        "counter",
        "Handler failures by stage and kind (retry, fail, batch).",
    ),
    (
        "lethe_scan_runs_total",
        "counter",
        "Source scans, by whether the blast-radius guard refused them.",
    ),
    (
        "lethe_scan_candidates_total",
        "counter",
        "Inactive users scans found, and those they opened.",
    ),
    (
        "lethe_emails_total",
        "counter",
        "Emails by template and result.",
    ),
    (
        "lethe_api_requests_total",
        "counter",
        "API requests by route template and status.",
    ),
    (
        "lethe_api_seconds",
        "histogram",
        "API request latency by route template.",
    ),
];

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

type Key = (&'static str, Vec<(&'static str, String)>);

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Registry {
    counters: BTreeMap<Key, u64>,
    histograms: BTreeMap<Key, Histogram>,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    (
        name,
        labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
    )
}

/// Adds `by` to the counter `name` with `labels`.
pub fn count(name: &'static str, labels: &[(&'static str, &str)], by: u64) {
    if let Ok(mut r) = registry().lock() {
        *r.counters.entry(key(name, labels)).or_default() += by;
    }
}

/// Records `seconds` in the histogram `name` with `labels`.
pub fn observe(name: &'static str, labels: &[(&'static str, &str)], seconds: f64) {
    if let Ok(mut r) = registry().lock() {
        let h = r.histograms.entry(key(name, labels)).or_default();
        for (bucket, bound) in h.counts.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }
}

/// The value of a counter (tests).
pub fn counter(name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
    registry()
        .lock()
        .ok()
        .and_then(|r| r.counters.get(&key(name, labels)).copied())
        .unwrap_or(0)
}

fn labels(pairs: &[(&'static str, String)], extra: Option<(&str, String)>) -> String {
    let escape = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let mut all: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        all.push(format!("{k}=\"{}\"", escape(&v)));
    }
    match all.is_empty() {
        true => String::new(),
        false => format!("{{{}}}", all.join(",")),
    }
}

/// A gauge computed at scrape time: its name, help and labelled values.
pub type Gauge<'a> = (&'a str, &'a str, Vec<(Vec<(&'static str, String)>, i64)>);

/// Every metric in the Prometheus text format, after the `gauges` the caller computed.
pub fn render(gauges: &[Gauge<'_>]) -> String {
    let mut out = String::new();
    for (name, help, values) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (pairs, value) in values {
            let _ = writeln!(out, "{name}{} {value}", labels(pairs, None));
        }
    }
    let Ok(r) = registry().lock() else {
        return out;
    };
    for (name, kind, help) in DESCRIBED {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for ((_, pairs), value) in r
            .counters
            .range((name, Vec::new())..)
            .take_while(|((n, _), _)| *n == name)
        {
            let _ = writeln!(out, "{name}{} {value}", labels(pairs, None));
        }
        for ((_, pairs), h) in r
            .histograms
            .range((name, Vec::new())..)
            .take_while(|((n, _), _)| *n == name)
        {
            for (count, bound) in h.counts.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {count}",
                    labels(pairs, Some(("le", bound.to_string())))
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{} {}",
                labels(pairs, Some(("le", "+Inf".into()))),
                h.count
            );
            let _ = writeln!(out, "{name}_sum{} {}", labels(pairs, None), h.sum);
            let _ = writeln!(out, "{name}_count{} {}", labels(pairs, None), h.count);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_as_prometheus_reads_them() {
        count(
            "lethe_emails_total",
            &[("template", "unit\"test"), ("result", "accepted")],
            2,
        );
        observe("lethe_api_seconds", &[("route", "/unit/test")], 0.003);
        let text = render(&[(
            "lethe_retirements",
            "Retirements per state.",
            vec![(vec![("state", "PENDING".to_string())], 4)],
        )]);
        assert!(
            text.contains("# TYPE lethe_retirements gauge\nlethe_retirements{state=\"PENDING\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("lethe_emails_total{template=\"unit\\\"test\",result=\"accepted\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("lethe_api_seconds_bucket{route=\"/unit/test\",le=\"0.0025\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("lethe_api_seconds_bucket{route=\"/unit/test\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("lethe_api_seconds_count{route=\"/unit/test\"} 1"),
            "{text}"
        );
        assert_eq!(
            counter(
                "lethe_emails_total",
                &[("template", "unit\"test"), ("result", "accepted")]
            ),
            2
        );
    }
}
