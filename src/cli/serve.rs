//! `serve` (the API without the driver), the API beside `run`, and `key new`.

use super::ctx::Ctx;
use super::failure::{Failure, Outcome};
use super::output::out;
use crate::api::{ApiState, auth};
use crate::config::{Config, Scope};
use crate::store::Store;
use std::sync::Arc;
use tokio::sync::watch;

pub(crate) async fn serve(ctx: &Ctx, listen: Option<String>) -> Outcome {
    let config = ctx.config()?;
    let store = ctx.store(Some(&config), 8).await?;
    let shutdown = crate::daemon::stop_on_signal();
    let api = start(&config, store, listen, false, shutdown).await?;
    api.await
        .map_err(|e| Failure::internal(format!("the API stopped: {e}")))?
        .map_err(|e| Failure::internal(format!("the API stopped: {e}")))
}

/// Binds the API's address and serves it until `shutdown`; the task ends once the
/// requests in flight are answered.
pub(crate) async fn start(
    config: &Config,
    store: Arc<dyn Store>,
    listen: Option<String>,
    runs_driver: bool,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, Failure> {
    let listen = listen.unwrap_or_else(|| config.pipeline.api.listen.clone());
    let listener = tokio::net::TcpListener::bind(&listen).await.map_err(|e| {
        Failure::config(format!(
            "cannot listen on {listen}: {e} (set --listen or [api] listen)"
        ))
    })?;
    if let Some(secret) = &config.pipeline.api.webhook_secret
        && crate::http::sign::SigningKey::parse(secret.expose()).is_err()
    {
        return Err(Failure::config(format!(
            "{}: a webhook secret is whsec_ followed by base64",
            crate::config::API_WEBHOOK_SECRET_ENV
        )));
    }
    if config.pipeline.api.keys.is_empty() {
        tracing::warn!(
            "no [[api_key]] is configured: every /v1 request is refused (lethe key new)"
        );
    }
    // Without the source the API still serves pulls and acks; opening retirements waits.
    let source = match &config.pipeline.source {
        Some(source) => {
            match crate::sql::source::SourceReader::connect_for(source, &config.pipeline.rules)
                .await
            {
                Ok(reader) => Some(Arc::new(reader)),
                Err(e) => {
                    tracing::warn!(error = %crate::db::chain(&e), "the API cannot reach the source: POST /v1/retirements answers 503");
                    None
                }
            }
        }
        None => None,
    };
    let pipeline = Arc::new(config.pipeline.clone());
    let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::SystemClock);
    let hash_key = crate::pii::HashKey::from_env().ok();
    let console = Arc::new(
        crate::console::ConsoleState::new(
            store.clone(),
            pipeline.clone(),
            config.graph.clone(),
            clock.clone(),
        )
        .with_hash_key(hash_key.clone())
        .with_driver(runs_driver),
    );
    if config.pipeline.api.console_secret.is_none() {
        tracing::info!(
            "{} is not set: console sessions are signed with a key of this process and end when it stops",
            crate::config::CONSOLE_SECRET_ENV
        );
    }
    let state = Arc::new(
        ApiState::new(store, pipeline, config.graph.clone(), clock)
            .with_source(source)
            .with_targets(&config.pipeline.targets)
            .with_hash_key(hash_key),
    );
    tracing::info!(listen = %listen, "API listening");
    out!("API listening on http://{listen} (console: http://{listen}/ui)");
    Ok(tokio::spawn(crate::api::serve(
        listener,
        state,
        crate::console::router(console),
        stopped(shutdown),
    )))
}

/// Resolves once `shutdown` says stop.
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

pub(crate) fn key_new(name: &str, scope: &str) -> Outcome {
    let scope = Scope::parse(scope).ok_or_else(|| {
        Failure::config(format!(
            "--scope {scope:?}: expected operator, auditor or service:NAME"
        ))
    })?;
    let (key, sha256) = auth::new_key();
    out!("key (shown once; give it to {name}): {key}");
    out!("");
    out!("add to pipeline.toml:");
    out!("[[api_key]]");
    out!("name = {name:?}");
    out!("scope = \"{scope}\"");
    out!("sha256 = \"{sha256}\"");
    Ok(())
}
