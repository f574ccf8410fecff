//! Opening a store from its URL.

use super::{Backend, PgStore, SqliteStore, Store, StoreError, redact_url};
use std::sync::Arc;

/// Opens the store at `url` (creating a SQLite file if needed). `max_connections` bounds the pool.
pub async fn open(url: &str, max_connections: u32) -> Result<Arc<dyn Store>, StoreError> {
    let backend = Backend::from_url(url).map_err(|problem| StoreError::BadUrl {
        url: redact_url(url),
        problem,
    })?;
    Ok(match backend {
        Backend::Postgres => Arc::new(PgStore::connect(url, max_connections).await?),
        Backend::Sqlite => Arc::new(SqliteStore::connect(url, max_connections).await?),
    })
}

/// Opens an existing, migrated store, changing nothing: a SQLite file that does not exist
/// is [`StoreError::Missing`] (not created), a schema behind this release is
/// [`StoreError::NotMigrated`] or [`StoreError::Behind`]. For every command but `migrate`
/// and `run`.
pub async fn open_existing(url: &str, max_connections: u32) -> Result<Arc<dyn Store>, StoreError> {
    let backend = Backend::from_url(url).map_err(|problem| StoreError::BadUrl {
        url: redact_url(url),
        problem,
    })?;
    let store: Arc<dyn Store> = match backend {
        Backend::Postgres => Arc::new(PgStore::connect(url, max_connections).await?),
        Backend::Sqlite => Arc::new(SqliteStore::connect_existing(url, max_connections).await?),
    };
    store.check_migrated().await?;
    Ok(store)
}
