//! `lethe run`: the driver, the periodic scan of the source, and a graceful stop on
//! SIGINT/SIGTERM (no new claims; in-flight batches finish or are released).

use crate::config::Pipeline;
use crate::domain::StateGraph;
use crate::driver::scan::{ScanOptions, first_scan_delay, scan};
use crate::driver::{Driver, DriverError, RunReport};
use crate::pii::HashKey;
use crate::sql::source::SourceReader;
use crate::store::{Store, StoreError};
use chrono::Utc;
use std::sync::Arc;
use tokio::sync::watch;

/// What the periodic scan needs.
pub struct Scans {
    /// The store retirements are opened in.
    pub store: Arc<dyn Store>,
    /// The states.
    pub graph: StateGraph,
    /// The source, connected.
    pub reader: SourceReader,
    /// The pipeline: the source and its rules, each with its interval.
    pub pipeline: Pipeline,
    /// Hashes subjects and emails.
    pub key: HashKey,
}

/// Runs the driver until `shutdown` (or, with `once`, until nothing is due), scanning the
/// source meanwhile by each enabled rule on its own interval when `scans` is given.
pub async fn run(
    driver: Arc<Driver>,
    scans: Option<Scans>,
    once: bool,
    shutdown: watch::Receiver<bool>,
) -> Result<RunReport, DriverError> {
    if let Some(scans) = scans {
        spawn_scans(scans, shutdown.clone()).await?;
    }
    if once {
        driver.run_once(shutdown).await
    } else {
        driver.run(shutdown).await
    }
}

/// Starts one scan loop per enabled rule; each timer goes on from that rule's last
/// recorded scan, so a restart does not rescan.
async fn spawn_scans(scans: Scans, stop: watch::Receiver<bool>) -> Result<(), StoreError> {
    let scans = Arc::new(scans);
    for rule in scans.pipeline.rules.iter().filter(|r| r.enabled) {
        let last = scans.store.last_scan(&rule.name).await?;
        let interval = rule.interval;
        let delay = first_scan_delay(last, interval, Utc::now());
        match last {
            Some(at) => tracing::info!(
                rule = %rule.name,
                last_scan = %at.to_rfc3339(),
                next_in_secs = delay.as_secs(),
                "scan timer: continuing from the last recorded scan"
            ),
            None => {
                tracing::info!(rule = %rule.name, "scan timer: no scan recorded yet, scanning now")
            }
        }
        let (scans, name, mut stop) = (scans.clone(), rule.name.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return,
            }
            loop {
                scan_once(&scans, &name).await;
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.changed() => break,
                }
            }
        });
    }
    Ok(())
}

/// One scan of a rule's loop: failures are logged and retried at the next interval.
async fn scan_once(s: &Scans, rule: &str) {
    let now = crate::domain::truncate_micros(Utc::now());
    let options = ScanOptions {
        rule: Some(rule.to_string()),
        ..ScanOptions::default()
    };
    let result = scan(
        s.store.as_ref(),
        &s.graph,
        &s.reader,
        &s.pipeline,
        &s.key,
        now,
        options,
    )
    .await;
    match result {
        Ok(reports) => {
            for why in reports.into_iter().filter_map(|r| r.counts.refused) {
                tracing::warn!(rule, %why, "blast-radius guard refused the scan");
            }
        }
        Err(error) => {
            tracing::error!(rule, %error, "scan failed; next try at the next interval")
        }
    }
}

/// A stop signal: set on the first SIGINT or SIGTERM.
pub fn stop_on_signal() -> watch::Receiver<bool> {
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(
            "shutdown requested: no new claims; in-flight batches finish or are released"
        );
        let _ = stop.send(true);
    });
    shutdown
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
