//! `scan`: one scan of the source by each rule (or one), blast-radius guarded.

use super::ctx::{Ctx, connect_source, source};
use super::failure::{Failure, Outcome};
use super::output::{json, out};
use chrono::Utc;

/// `lethe scan`: one scan of the source by every enabled rule, or by `rule`.
pub(crate) async fn scan(
    ctx: &Ctx,
    dry_run: bool,
    limit: Option<usize>,
    rule: Option<String>,
) -> Outcome {
    let config = ctx.config()?;
    let source = source(&config)?;
    // An unknown or disabled rule is refused before anything connects.
    crate::driver::scan::rules_to_run(&config.pipeline, rule.as_deref())
        .map_err(Failure::config)?;
    let key = ctx.hash_key()?;
    let reader = connect_source(source, &config.pipeline.rules).await?;
    let store = ctx.store((!dry_run).then_some(&config), 2).await?;
    let now = crate::domain::truncate_micros(Utc::now());
    let options = crate::driver::scan::ScanOptions {
        dry_run,
        limit,
        rule,
    };
    let reports = crate::driver::scan::scan(
        store.as_ref(),
        &config.graph,
        &reader,
        &config.pipeline,
        &key,
        now,
        options,
    )
    .await?;
    if ctx.global.json {
        out!("{}", json(&serde_json::json!({ "rules": reports })));
    } else {
        if reports.is_empty() {
            out!("no rule is enabled (enabled = false on every [[rule]]): nothing scanned");
        }
        for report in &reports {
            let c = &report.counts;
            out!(
                "rule {}: seen {} selected {} excluded {} already open {} taken by an earlier rule {} enqueued {}{}",
                c.rule.as_deref().unwrap_or("-"),
                c.seen,
                c.inactive,
                c.excluded,
                c.already_open,
                c.overlap,
                c.enqueued,
                if dry_run {
                    " (dry run: nothing written)"
                } else {
                    ""
                }
            );
            if dry_run {
                let new = report.candidates.len();
                out!("  would enqueue {new}; first ids: {:?}", report.first);
                if new > report.first.len() {
                    out!(
                        "  {} more not shown: `lethe scan --dry-run --json` lists every candidate and why",
                        new - report.first.len()
                    );
                }
            }
        }
    }
    let refused: Vec<String> = reports
        .iter()
        .filter_map(|r| {
            let rule = r.counts.rule.as_deref().unwrap_or("-");
            r.counts
                .refused
                .as_ref()
                .map(|why| format!("rule {rule}: {why}"))
        })
        .collect();
    match refused.is_empty() {
        true => Ok(()),
        false => Err(Failure::refused(format!(
            "blast-radius guard: {}",
            refused.join("; ")
        ))),
    }
}
