//! What goes wrong in the store, and how it is classified.

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL is not one we support.
    #[error("store URL {url}: {problem}")]
    BadUrl {
        /// The URL, password redacted.
        url: String,
        /// What is allowed.
        problem: String,
    },
    /// The database could not be reached.
    #[error(
        "cannot open the store at {url}: {source} (is the database up? check --store / LETHE_STORE_URL)"
    )]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver error.
        source: sqlx::Error,
    },
    /// Applying migrations failed.
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A statement failed.
    #[error("store query failed while trying to {context}: {source}")]
    Query {
        /// What the store was doing.
        context: &'static str,
        /// The driver error.
        source: sqlx::Error,
    },
    /// states.toml dropped a state that open retirements still use.
    #[error(
        "states.toml no longer declares state {state}, but {count} open retirement(s) are in it or failed in it: finish, resume elsewhere or abort them first, or keep the state"
    )]
    StateInUse {
        /// The state.
        state: String,
        /// Open retirements in it.
        count: i64,
    },
    /// The store has not been migrated.
    #[error("the store has no lethe schema yet: run `lethe migrate` first")]
    NotMigrated,
    /// The store lacks migrations this release needs.
    #[error(
        "the store's schema is behind this lethe: migration(s) {missing} not applied: run `lethe migrate` first"
    )]
    Behind {
        /// The missing versions and descriptions, e.g. `8 (exclusion override)`.
        missing: String,
    },
    /// A SQLite store file that does not exist (only `migrate` and `run` create it).
    #[error(
        "the store {path} does not exist: run `lethe migrate` to create it (or check --store / LETHE_STORE_URL)"
    )]
    Missing {
        /// The file.
        path: String,
    },
}

impl crate::error::Classified for StoreError {
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            StoreError::BadUrl { .. }
            | StoreError::NotMigrated
            | StoreError::Behind { .. }
            | StoreError::Missing { .. } => ErrorKind::Config,
            StoreError::StateInUse { .. } => ErrorKind::Refused,
            StoreError::Connect { .. } | StoreError::Query { .. } => ErrorKind::Unreachable,
            StoreError::Migrate(_) => ErrorKind::Internal,
        }
    }
}

/// Attaches what the store was doing to a driver error.
pub(crate) trait QueryContext<T> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> QueryContext<T> for Result<T, sqlx::Error> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Query { context, source })
    }
}
