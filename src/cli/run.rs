//! `run`: the daemon.

use super::ctx::{Ctx, connect_source};
use super::failure::Outcome;
use super::output::{json, out};
use crate::driver::{Driver, unique_owner};
use std::sync::Arc;

pub(crate) async fn run(ctx: &Ctx, once: bool, listen: Option<String>) -> Outcome {
    let config = ctx.config()?;
    let key = ctx.hash_key()?;
    let tuning = config.pipeline.driver.clone();
    let store = ctx
        .store_migrating(&config, tuning.concurrency as u32 * 2 + 2)
        .await?;
    let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::SystemClock);
    let handlers = crate::stages::build_from(crate::stages::BuildContext {
        pipeline: &config.pipeline,
        clock: clock.clone(),
        store: Some(store.clone()),
    })
    .await?;
    let api_store = store.clone();
    let driver = Arc::new(Driver::new(
        store,
        config.graph.clone(),
        config.pipeline.policy.clone(),
        tuning,
        handlers,
        unique_owner(),
        clock,
    ));
    let scans = match (once, &config.pipeline.source) {
        (false, Some(source)) => Some(crate::daemon::Scans {
            reader: connect_source(source, &config.pipeline.rules).await?,
            store: ctx.store(None, 2).await?,
            graph: config.graph.clone(),
            pipeline: config.pipeline.clone(),
            key,
        }),
        _ => None,
    };
    let shutdown = crate::daemon::stop_on_signal();
    let serves = !once && (listen.is_some() || config.pipeline.api.configured);
    let api = match serves {
        true => {
            Some(super::serve::start(&config, api_store, listen, true, shutdown.clone()).await?)
        }
        false => None,
    };
    let report = crate::daemon::run(driver, scans, once, shutdown).await?;
    if let Some(api) = api {
        // The driver has stopped; the API finishes its requests in flight.
        let _ = api.await;
    }
    if ctx.global.json {
        out!("{}", json(&report));
    } else {
        out!(
            "claimed {} applied {} lost {} released {} {:?}",
            report.claimed,
            report.applied,
            report.lost,
            report.released,
            report.outcomes
        );
    }
    Ok(())
}
