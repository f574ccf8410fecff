//! `audit`: the audit trail, as a table, CSV or JSON.

use super::Format;
use super::ctx::Ctx;
use super::failure::Outcome;
use super::output::{json, out, print_table};
use crate::pii::HashKey;
use crate::store::AuditFilter;

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
            after: None,
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
            out!("{}", crate::ops::audit::CSV_HEADER);
            for r in &rows {
                out!("{}", crate::ops::audit::csv_line(r));
            }
        }
        Format::Table => {
            let table: Vec<Vec<String>> = rows.iter().map(crate::ops::audit::audit_cells).collect();
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
