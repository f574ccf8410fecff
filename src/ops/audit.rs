//! The audit trail as rows of text: the CLI's table and CSV, the API's and the console's
//! streamed JSON and CSV.

use crate::store::{AuditFilter, AuditRow, Store, StoreError};
use std::sync::Arc;

/// Rows read from the store per page of a stream.
pub const PAGE: i64 = 1000;

/// The audit trail `filter` selects, at most `total` rows, as chunks of a JSON array or
/// of CSV (with its header), read a page at a time. The first page is read before this
/// returns, so a store that fails at once is an error, not a cut stream.
pub async fn stream(
    store: Arc<dyn Store>,
    mut filter: AuditFilter,
    total: i64,
    csv: bool,
) -> Result<impl futures_util::Stream<Item = Result<String, std::io::Error>> + Send, StoreError> {
    filter.limit = total.clamp(0, PAGE);
    let first = store.audit(&filter).await?;
    let pages = Pages {
        store,
        filter,
        left: total,
        csv,
        started: false,
        any: false,
    };
    Ok(futures_util::stream::unfold(
        (pages, Some(first)),
        |(mut pages, page)| async move {
            let chunk = pages.next(page).await?;
            Some((chunk, (pages, None)))
        },
    ))
}

/// The CSV header line.
pub const CSV_HEADER: &str = "event_id,at,retirement_id,subject,subject_hash,reason,from_state,to_state,outcome,attempt,actor,detail";

/// The cells of one row, in [`CSV_HEADER`]'s order.
pub fn audit_cells(r: &AuditRow) -> Vec<String> {
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

/// One CSV line (no newline), quoted where a cell needs it.
pub fn csv_line(r: &AuditRow) -> String {
    audit_cells(r)
        .iter()
        .map(|c| csv_cell(c))
        .collect::<Vec<_>>()
        .join(",")
}

fn csv_cell(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_string()
    }
}

/// Where the stream stands.
struct Pages {
    store: Arc<dyn Store>,
    filter: AuditFilter,
    left: i64,
    csv: bool,
    /// The opening (`[` or the CSV header) has gone.
    started: bool,
    /// A JSON row has gone (the next one needs a comma).
    any: bool,
}

impl Pages {
    /// The next chunk of the body (`page`, when already read, else the next from the
    /// store), or `None` once the closing bracket has gone.
    async fn next(
        &mut self,
        page: Option<Vec<AuditRow>>,
    ) -> Option<Result<String, std::io::Error>> {
        if self.left <= 0 && self.started {
            return None;
        }
        let rows = match page {
            Some(rows) => rows,
            None => match self.store.audit(&self.filter).await {
                Ok(rows) => rows,
                Err(e) => {
                    // The status has gone: the client sees a cut body, the log says why.
                    tracing::error!(error = %e, "audit stream: the store failed mid-stream");
                    return Some(Err(std::io::Error::other("the store failed mid-stream")));
                }
            },
        };
        let mut text = String::new();
        if !self.started {
            text.push_str(match self.csv {
                true => CSV_HEADER,
                false => "[",
            });
            if self.csv {
                text.push('\n');
            }
        }
        for row in &rows {
            if self.csv {
                text.push_str(&csv_line(row));
                text.push('\n');
            } else {
                if self.any {
                    text.push(',');
                }
                text.push_str(&serde_json::to_string(row).unwrap_or_else(|_| "null".into()));
                self.any = true;
            }
        }
        self.started = true;
        self.left -= rows.len() as i64;
        let last = rows.last().map(|r| (r.event.at, r.event.id));
        let more = rows.len() as i64 == self.filter.limit && self.left > 0;
        match (more, last) {
            (true, Some(after)) => {
                self.filter.after = Some(after);
                self.filter.limit = self.left.min(PAGE);
            }
            _ => {
                self.left = 0;
                if !self.csv {
                    text.push(']');
                }
            }
        }
        Some(Ok(text))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cells_that_need_it_are_quoted() {
        assert_eq!(super::csv_cell("a,b"), "\"a,b\"");
        assert_eq!(super::csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(super::csv_cell("plain"), "plain");
    }
}
