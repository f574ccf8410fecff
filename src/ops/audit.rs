//! The audit trail as rows of text: the CLI's table and CSV, and the API's CSV.

use crate::store::AuditRow;

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

#[cfg(test)]
mod tests {
    #[test]
    fn cells_that_need_it_are_quoted() {
        assert_eq!(super::csv_cell("a,b"), "\"a,b\"");
        assert_eq!(super::csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(super::csv_cell("plain"), "plain");
    }
}
