//! What the demo did, read back from the store (not from the demo's own counters): final
//! states, who did not complete and why, emails per template, rows per table, and the
//! stand-ins' own counts.

use super::source::Cast;
use crate::pii::HashKey;
use crate::store::{AuditFilter, ListFilter, Store, StoreError};
use std::collections::BTreeMap;
use std::time::Duration;

/// One retirement that did not end COMPLETE.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Notable {
    /// The user's id in the source.
    pub subject: String,
    /// Its final state.
    pub state: String,
    /// Why it stopped there.
    pub why: String,
}

/// The demo's outcome.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Users in the source.
    pub users: i64,
    /// Retirements the scan opened.
    pub opened: i64,
    /// Inactive users the exclusions kept out (staff).
    pub excluded: i64,
    /// Retirements per final state (states with none left out).
    pub states: Vec<(String, i64)>,
    /// Per final state, the retirements of each reason (reasons with none left out).
    pub reasons: BTreeMap<String, Vec<(String, i64)>>,
    /// The retirements that did not complete, by subject.
    pub notable: Vec<Notable>,
    /// Emails accepted per template, from the store's events.
    pub emails: BTreeMap<String, u64>,
    /// `.eml` files in the mail directory.
    pub mail_files: u64,
    /// Recipients the SMTP server refused.
    pub mail_refused: u64,
    /// The external SMTP server the mail went to (`--smtp`), instead of the built-in one
    /// (whose counts are then nobody's).
    pub smtp: Option<String>,
    /// Rows changed per `table (action)` in the source, from the store's events.
    pub rows: BTreeMap<String, u64>,
    /// Contacts removed from the Sarbacane stand-in.
    pub sarbacane_removed: u64,
    /// Acknowledgements each downstream service sent through the API.
    pub acks: BTreeMap<String, u64>,
    /// Each phase and how long it took.
    pub phases: Vec<(String, Duration)>,
    /// The whole run.
    pub elapsed: Duration,
}

/// The why of a retirement that stopped: its error, else its last event's reason.
async fn why(store: &dyn Store, r: &crate::store::Retirement) -> Result<String, StoreError> {
    if let Some(error) = &r.last_error {
        return Ok(error.clone());
    }
    let history = store.history(r.id).await?;
    let detail = history
        .last()
        .and_then(|e| serde_json::from_str::<serde_json::Value>(&e.detail).ok());
    Ok(detail
        .and_then(|d| d["why"].as_str().map(str::to_string))
        .unwrap_or_default())
}

/// Fills the report's store-side parts.
pub(super) async fn read(
    store: &dyn Store,
    graph: &crate::domain::StateGraph,
    cast: &Cast,
    key: &HashKey,
    reasons: &[String],
    report: &mut Report,
) -> Result<(), StoreError> {
    report.states = crate::ops::stats(store, Some(graph))
        .await?
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    for (state, n) in &report.states {
        let mut by_reason = Vec::new();
        for reason in reasons {
            let filter = ListFilter {
                state: Some(state.clone()),
                reason: Some(reason.clone()),
                since: None,
                before: None,
                limit: *n,
            };
            let count = store.list(&filter).await?.len() as i64;
            if count > 0 {
                by_reason.push((reason.clone(), count));
            }
        }
        report.reasons.insert(state.clone(), by_reason);
    }
    let subjects: BTreeMap<String, i64> = cast
        .inactive
        .iter()
        .chain(&cast.unverified)
        .map(|id| (key.subject(&id.to_string()), *id))
        .collect();
    for state in graph.names() {
        if state == graph.complete() {
            continue;
        }
        let filter = ListFilter {
            state: Some(state.to_string()),
            reason: None,
            since: None,
            before: None,
            limit: 10_000,
        };
        for r in store.list(&filter).await? {
            let subject = subjects
                .get(&r.subject_hash)
                .map(|id| id.to_string())
                .or(r.subject.clone())
                .unwrap_or_else(|| format!("#{}", r.id));
            report.notable.push(Notable {
                subject,
                state: r.state.clone(),
                why: why(store, &r).await?,
            });
        }
    }
    report
        .notable
        .sort_by_key(|n| (n.state.clone(), n.subject.parse::<i64>().unwrap_or(0)));
    let events = store
        .audit(&AuditFilter {
            after: None,
            since: None,
            until: None,
            subject: None,
            limit: i64::MAX,
        })
        .await?;
    for row in events {
        let Ok(detail) = serde_json::from_str::<serde_json::Value>(&row.event.detail) else {
            continue;
        };
        if let (Some(template), Some(_)) = (detail["template"].as_str(), detail.get("message_id")) {
            *report.emails.entry(template.to_string()).or_default() += 1;
        }
        if let Some(rows) = detail["rows"].as_object() {
            for (table, n) in rows {
                *report.rows.entry(table.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        }
    }
    Ok(())
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl Report {
    /// The report as the terminal shows it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        line(format!(
            "{} users; the scan opened {} retirements ({} staff excluded)",
            self.users, self.opened, self.excluded
        ));
        line(String::new());
        line("Retirements by final state".into());
        for (state, n) in &self.states {
            let reasons: Vec<String> = self
                .reasons
                .get(state)
                .into_iter()
                .flatten()
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect();
            line(format!("  {state:<12} {n:>7}   {}", reasons.join(", ")));
        }
        for n in &self.notable {
            line(format!("  user {:<8} {:<10} {}", n.subject, n.state, n.why));
        }
        line(String::new());
        line(match &self.smtp {
            None => format!(
                "Emails ({} written under mail/, {} recipient refused)",
                self.mail_files, self.mail_refused
            ),
            Some(smtp) => format!("Emails accepted by {smtp} (from the store's events)"),
        });
        for (template, n) in &self.emails {
            line(format!("  {template:<26} {n:>7}"));
        }
        line(String::new());
        line("Rows changed in the edX source".into());
        for (table, n) in &self.rows {
            line(format!("  {table:<60} {n:>7}"));
        }
        line(String::new());
        line(format!(
            "Sarbacane contacts removed: {}",
            self.sarbacane_removed
        ));
        for (service, n) in &self.acks {
            line(format!("Acknowledged by {service} through the API: {n}"));
        }
        line(String::new());
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(name, d)| format!("{name} {}", seconds(*d)))
            .collect();
        line(format!(
            "Took {} ({})",
            seconds(self.elapsed),
            phases.join(", ")
        ));
        out
    }
}
