//! What every command shares: the global flags, the config, the store, the actor.

use super::Global;
use super::failure::Failure;
use crate::config::{Config, Source};
use crate::pii::HashKey;
use crate::sql::source::SourceReader;
use crate::store::{self, DEFAULT_STORE_URL, Store};
use std::sync::Arc;

/// The global flags, and the ways commands open what they need from them.
pub(crate) struct Ctx {
    /// The flags.
    pub(crate) global: Global,
}

impl Ctx {
    /// The configuration, with the environment applied.
    pub(crate) fn config(&self) -> Result<Config, Failure> {
        Ok(Config::load(&self.global.states, &self.global.config)?
            .with_env(&crate::config::process_env)?)
    }

    /// `--store`, else pipeline.toml's store.url, else the default SQLite file. Commands
    /// that only read the store still honour pipeline.toml's store.url: a missing file
    /// means the default, one that cannot be read or is not TOML is an error naming it.
    pub(crate) fn store_url(&self, config: Option<&Config>) -> Result<String, Failure> {
        if let Some(url) = &self.global.store {
            return Ok(url.clone());
        }
        let from_file = match config {
            Some(c) => c.pipeline.store_url.clone(),
            None => match std::fs::read_to_string(&self.global.config) {
                Ok(text) => {
                    let file = self.global.config.display().to_string();
                    crate::config::store_url_in(&file, &text)?
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(Failure::config(format!(
                        "{}: cannot read: {e} (give another path with --config, or the store with --store)",
                        self.global.config.display()
                    )));
                }
            },
        };
        Ok(from_file.unwrap_or_else(|| DEFAULT_STORE_URL.to_string()))
    }

    /// Opens, migrates and syncs the store (`migrate` and `run` only: they may change the
    /// schema, and create a SQLite file).
    pub(crate) async fn store_migrating(
        &self,
        config: &Config,
        pool: u32,
    ) -> Result<Arc<dyn Store>, Failure> {
        let store = store::open(&self.store_url(Some(config))?, pool).await?;
        store.migrate().await?;
        store.sync_states(&config.graph).await?;
        Ok(store)
    }

    /// Opens an existing, migrated store without changing its schema (refusing one that is
    /// missing or behind: run `lethe migrate`); syncs states when a config is given.
    pub(crate) async fn store(
        &self,
        config: Option<&Config>,
        pool: u32,
    ) -> Result<Arc<dyn Store>, Failure> {
        let store = store::open_existing(&self.store_url(config)?, pool).await?;
        if let Some(config) = config {
            store.sync_states(&config.graph).await?;
        }
        Ok(store)
    }

    /// Who acts, for events: `operator:NAME`.
    pub(crate) fn actor(&self) -> String {
        crate::ops::operator(self.global.actor.as_deref())
    }

    /// The hash key, required.
    pub(crate) fn hash_key(&self) -> Result<HashKey, Failure> {
        Ok(HashKey::from_env()?)
    }
}

/// The `[source]` section, required.
pub(crate) fn source(config: &Config) -> Result<&Source, Failure> {
    config.pipeline.source.as_ref().ok_or_else(|| {
        Failure::config(format!(
            "{}: no [source] section: nothing to scan",
            config.pipeline_path.display()
        ))
    })
}

/// Connects to the source.
pub(crate) async fn connect_source(
    source: &Source,
    rules: &[crate::config::Rule],
) -> Result<SourceReader, Failure> {
    Ok(SourceReader::connect_for(source, rules).await?)
}
