//! Following the retirements through the working states while the driver runs them,
//! logging the returning user in and confirming the confirming user's email once warned.

use super::{Cast, DemoError, Progress, source};
use crate::pii::HashKey;
use crate::store::Store;
use std::time::{Duration, Instant};

/// What following the run needs.
pub(super) struct Watch<'a> {
    pub(super) store: &'a dyn Store,
    pub(super) graph: &'a crate::domain::StateGraph,
    pub(super) pipeline: &'a crate::config::Pipeline,
    pub(super) cast: &'a Cast,
    pub(super) key: &'a HashKey,
    pub(super) source_url: &'a str,
}

impl Watch<'_> {
    /// Follows the retirements through the working states, one progress phase per state,
    /// until each has ended or stopped in ERRORED; logs the returning user in once warned.
    pub(super) async fn phases(
        &self,
        opened: i64,
        progress: &dyn Progress,
    ) -> Result<Vec<(String, Duration)>, DemoError> {
        let Watch {
            store,
            graph,
            pipeline,
            cast,
            key,
            source_url,
        } = *self;
        let working = graph.working().to_vec();
        let lookup = |id: i64| crate::store::Lookup::Subject {
            raw: id.to_string(),
            subject_hash: Some(key.subject(&id.to_string())),
            email_hash: None,
        };
        let (returning, confirming) = (lookup(cast.returning), lookup(cast.confirming));
        let mut logged_in = false;
        // A demo too small to have an unverified user has nobody to confirm.
        let mut confirmed = cast.unverified.is_empty();
        let mut timings = Vec::new();
        let stall_limit = Duration::from_secs(60);
        for (index, state) in working.iter().enumerate() {
            let phase = Instant::now();
            let description = match pipeline.stage(state) {
                Some(stage) => format!("{state} ({})", stage.kind),
                None => state.clone(),
            };
            progress.start(&description, opened as u64);
            let (mut last, mut moved) = (-1i64, Instant::now());
            loop {
                let counts = store.stats().await?;
                // Past this state: in a later working state, ended, or parked in ERRORED.
                let past: i64 = counts
                    .iter()
                    .filter(|(s, _)| {
                        working
                            .iter()
                            .position(|w| w == s)
                            .is_none_or(|i| i > index)
                    })
                    .map(|(_, n)| *n)
                    .sum();
                progress.set(past as u64);
                if !logged_in
                    && let Some(r) = store.find(&returning).await?
                    && r.warned_at.is_some()
                {
                    // The source may be busy with a deletion: tried again at the next tick.
                    match source::log_in(source_url, cast.returning, chrono::Utc::now()).await {
                        Ok(()) => logged_in = true,
                        Err(e) => tracing::warn!(error = %e, "demo: logging the returning user in"),
                    }
                }
                if !confirmed
                    && let Some(r) = store.find(&confirming).await?
                    && r.warned_at.is_some()
                {
                    match source::confirm(source_url, cast.confirming).await {
                        Ok(()) => confirmed = true,
                        Err(e) => {
                            tracing::warn!(error = %e, "demo: confirming the confirming user")
                        }
                    }
                }
                if past >= opened {
                    break;
                }
                if past != last {
                    (last, moved) = (past, Instant::now());
                } else if moved.elapsed() > stall_limit {
                    let states: Vec<String> =
                        counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
                    return Err(DemoError::Stalled {
                        phase: description,
                        states: states.join(", "),
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            progress.finish();
            timings.push((state.to_lowercase(), phase.elapsed()));
        }
        Ok(timings)
    }
}
