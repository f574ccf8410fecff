//! `scan`: one scan of the source, blast-radius guarded.

use super::ctx::{Ctx, connect_source, source};
use super::failure::{Failure, Outcome};
use super::output::{json, out};
use chrono::Utc;

/// `lethe scan`: one scan of the source.
pub(crate) async fn scan(ctx: &Ctx, dry_run: bool, limit: Option<usize>) -> Outcome {
    let config = ctx.config()?;
    let source = source(&config)?;
    let key = ctx.hash_key()?;
    let reader = connect_source(source).await?;
    let store = ctx.store((!dry_run).then_some(&config), 2).await?;
    let now = crate::domain::truncate_micros(Utc::now());
    let options = crate::driver::scan::ScanOptions { dry_run, limit };
    let report = crate::driver::scan::scan(
        store.as_ref(),
        &config.graph,
        &reader,
        source,
        &config.pipeline.policy,
        &key,
        now,
        options,
    )
    .await?;
    let c = &report.counts;
    if ctx.global.json {
        out!("{}", json(&report));
    } else {
        out!(
            "seen {} inactive {} excluded {} already open {} enqueued {}{}",
            c.seen,
            c.inactive,
            c.excluded,
            c.already_open,
            c.enqueued,
            if dry_run {
                " (dry run: nothing written)"
            } else {
                ""
            }
        );
        if dry_run {
            let new = report.candidates.len();
            out!("would enqueue {new}; first ids: {:?}", report.first);
            if new > report.first.len() {
                out!(
                    "{} more not shown: `lethe scan --dry-run --json` lists every candidate and why",
                    new - report.first.len()
                );
            }
        }
    }
    match &c.refused {
        Some(why) => Err(Failure::refused(format!("blast-radius guard: {why}"))),
        None => Ok(()),
    }
}
