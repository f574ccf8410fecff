//! `audit`: the audit trail, as a table, CSV or JSON.

use super::Format;
use super::ctx::Ctx;
use super::failure::Outcome;
use super::output::{json, out, print_table};
use crate::pii::HashKey;
use crate::store::{AuditFilter, AuditRow};

pub(crate) async fn audit(
    ctx: &Ctx,
    since: Option<String>,
    until: Option<String>,
    format: Format,
    subject: Option<String>,
    limit: i64,
) -> Outcome {
    let since = since
        .map(|s| crate::ops::parse_time("--since", &s))
        .transpose()?;
    let until = until
        .map(|s| crate::ops::parse_time("--until", &s))
        .transpose()?;
    let key = HashKey::from_env().ok();
    let subject = subject
        .map(|s| crate::ops::parse_target(&s, key.as_ref()))
        .transpose()?;
    let store = ctx.store(None, 1).await?;
    let rows = store
        .audit(&AuditFilter {
            since,
            until,
            subject,
            limit: limit.max(0),
        })
        .await?;
    let format = if ctx.global.json {
        Format::Json
    } else {
        format
    };
    match format {
        Format::Json => out!("{}", json(&rows)),
        Format::Csv => {
            out!(
                "event_id,at,retirement_id,subject,subject_hash,reason,from_state,to_state,outcome,attempt,actor,detail"
            );
            for r in &rows {
                let cells = audit_cells(r);
                out!(
                    "{}",
                    cells
                        .iter()
                        .map(|c| csv_cell(c))
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
        }
        Format::Table => {
            let table: Vec<Vec<String>> = rows.iter().map(audit_cells).collect();
            print_table(
                &[
                    "event",
                    "at",
                    "retirement",
                    "subject",
                    "subject_hash",
                    "reason",
                    "from",
                    "to",
                    "outcome",
                    "attempt",
                    "actor",
                    "detail",
                ],
                &table,
            );
        }
    }
    Ok(())
}

fn audit_cells(r: &AuditRow) -> Vec<String> {
    let e = &r.event;
    vec![
        e.id.to_string(),
        e.at.to_rfc3339(),
        e.retirement_id.to_string(),
        r.subject.clone().unwrap_or_default(),
        r.subject_hash.clone(),
        r.reason.to_string(),
        e.from_state.clone().unwrap_or_default(),
        e.to_state.clone(),
        e.outcome.clone(),
        e.attempt.to_string(),
        e.actor.clone(),
        e.detail.clone(),
    ]
}

fn csv_cell(cell: &str) -> String {
    if cell.contains([',', '"', '\n']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_string()
    }
}
