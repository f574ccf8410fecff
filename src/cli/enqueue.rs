//! `enqueue`: open retirements by hand, from arguments or a file.

use super::ctx::{Ctx, connect_source};
use super::failure::{Failure, Outcome};
use super::output::out;
use chrono::Utc;
use std::path::PathBuf;

/// Reads `subject[,email[,username]]` lines, validating each (`FILE:LINE` in messages).
fn read_subject_file(path: &PathBuf) -> Result<Vec<crate::ops::Request>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::config(format!("{}: cannot read: {e}", path.display())))?;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || (n == 0 && line.starts_with("subject")) {
            continue;
        }
        let mut fields = line.split(',').map(|f| f.trim().to_string());
        let subject = fields.next().unwrap_or_default();
        let email = fields.next().filter(|f| !f.is_empty());
        let username = fields.next().filter(|f| !f.is_empty());
        let at = format!("{}:{}", path.display(), n + 1);
        rows.push(crate::ops::request(&at, &subject, email, username)?);
    }
    Ok(rows)
}

/// Above this many subjects, `enqueue` prints counts instead of a line per subject.
const ECHO_AT_MOST: usize = 20;

pub(crate) async fn enqueue(
    ctx: &Ctx,
    subjects: Vec<String>,
    reason: &str,
    from_file: Option<PathBuf>,
    exclusion_override: bool,
) -> Outcome {
    use crate::ops::{EnqueueError, Opened};
    let config = ctx.config()?;
    // A reason is known when it has a notice policy (inactive, requested, [notice.X]).
    let Some(reason) = config.pipeline.notices.reason(reason) else {
        return Err(Failure::config(format!(
            "--reason {}: unknown reason (allowed: {})",
            crate::ops::shown(reason),
            config.pipeline.notices.names()
        )));
    };
    let key = ctx.hash_key()?;
    let mut rows = subjects
        .iter()
        .enumerate()
        .map(|(n, s)| crate::ops::request(&format!("argument {}", n + 1), s, None, None))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(path) = &from_file {
        rows.extend(read_subject_file(path)?);
    }
    if rows.is_empty() {
        return Err(EnqueueError::Empty.into());
    }
    if exclusion_override && rows.len() > 1 {
        return Err(EnqueueError::OverrideOfMany(rows.len()).into());
    }
    let reader = match (&config.pipeline.source, exclusion_override) {
        (_, true) => None,
        (None, false) => {
            return Err(Failure::config(format!(
                "{}: {}",
                config.pipeline_path.display(),
                EnqueueError::NoSource
            )));
        }
        (Some(source), false) => Some(connect_source(source, &config.pipeline.rules).await?),
    };
    let store = ctx.store(Some(&config), 2).await?;
    let now = crate::domain::truncate_micros(Utc::now());
    let actor = ctx.actor();
    let input = crate::ops::Enqueue {
        start: None,
        requests: &rows,
        reason,
        exclusion_override,
        actor: &actor,
    };
    let opened = crate::ops::enqueue(
        store.as_ref(),
        &config.graph,
        reader.as_ref(),
        &key,
        input,
        now,
    )
    .await?;
    let count = |f: fn(&Opened) -> bool| opened.iter().filter(|(_, o)| f(o)).count();
    let created = count(|o| matches!(o, Opened::Created { .. }));
    let open = count(|o| matches!(o, Opened::AlreadyOpen { .. }));
    let refused: Vec<(i64, &str)> = opened
        .iter()
        .filter_map(|(s, o)| match o {
            Opened::Refused { why } => Some((*s, why.as_str())),
            _ => None,
        })
        .collect();
    if ctx.global.json {
        let rows: Vec<_> = opened
            .iter()
            .map(|(s, o)| serde_json::json!({ "subject": s.to_string(), "outcome": o }))
            .collect();
        out!("{}", serde_json::Value::Array(rows));
    } else {
        if opened.len() <= ECHO_AT_MOST {
            for (s, o) in &opened {
                match o {
                    Opened::Created { id } => out!("{s}: enqueued as #{id}"),
                    Opened::AlreadyOpen { id } => out!("{s}: already open as #{id}"),
                    Opened::Refused { why } => out!("{s}: refused, {why}"),
                }
            }
        }
        out!(
            "{created} enqueued, {open} already open, {} refused{}",
            refused.len(),
            if exclusion_override {
                " (exclusions overridden)"
            } else {
                ""
            }
        );
    }
    if refused.is_empty() {
        return Ok(());
    }
    for (subject, why) in refused.iter().take(ECHO_AT_MOST) {
        eprintln!("refused: subject {subject}: {why}");
    }
    if refused.len() > ECHO_AT_MOST {
        eprintln!(
            "refused: … and {} more (--json lists them all)",
            refused.len() - ECHO_AT_MOST
        );
    }
    Err(Failure::refused(format!(
        "{} of {} subject(s) are excluded and were not enqueued (the others were); to retire one anyway: `lethe enqueue ID --override-exclusion`",
        refused.len(),
        opened.len()
    )))
}
