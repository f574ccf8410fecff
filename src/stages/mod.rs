//! Stage handlers: one file per handler kind. A handler receives a batch of claimed
//! retirements and returns one outcome per retirement; it must be idempotent.

mod noop;

pub use noop::{NoopHandler, NoopSettings};

use crate::domain::StageResult;
use crate::store::Claimed;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use strum::{Display, EnumString, VariantNames};

/// The closed set of handler kinds a stage may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Display, EnumString, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum HandlerKind {
    /// Warning, reminder and deletion emails over SMTP.
    Email,
    /// Waits out the grace period and re-checks activity.
    Grace,
    /// Set-based deletion from a relational database.
    SqlDelete,
    /// Removes the contact from Sarbacane.
    Sarbacane,
    /// Calls an HTTP service (identity providers, search indexes...).
    Http,
    /// Publishes to downstream services and awaits their acks.
    Notify,
    /// Does nothing and moves on (placeholders, demos, benchmarks); `delay` simulates work.
    Noop,
}

impl HandlerKind {
    /// Whether this build has the handler; `None` when it has not landed yet, with the
    /// issue that brings it.
    pub fn pending_implementation(self) -> Option<&'static str> {
        match self {
            HandlerKind::Noop => None,
            HandlerKind::SqlDelete => Some("the SQL retirement issue (#3)"),
            HandlerKind::Email | HandlerKind::Grace => Some("the email and grace issue (#4)"),
            HandlerKind::Sarbacane | HandlerKind::Http | HandlerKind::Notify => {
                Some("a later issue")
            }
        }
    }
}

/// A stage's validated settings.
#[derive(Debug, Clone, PartialEq)]
pub enum StageSettings {
    /// Settings of the noop handler.
    Noop(NoopSettings),
    /// Settings of a handler that has not landed yet, kept as written.
    NotYetImplemented(toml::Table),
}

impl StageSettings {
    /// Validates the keys left in a `[[stage]]` table for `kind`; errors are (key, problem).
    pub fn parse(kind: HandlerKind, table: toml::Table) -> Result<Self, (String, String)> {
        match kind {
            HandlerKind::Noop => NoopSettings::parse(table).map(StageSettings::Noop),
            _ => Ok(StageSettings::NotYetImplemented(table)),
        }
    }
}

/// Handler failure for a whole batch (e.g. the target is unreachable): every retirement
/// of the batch is retried.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BatchError(pub String);

/// The code behind one stage.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Works on the batch and returns a result per retirement id; a missing id is retried.
    async fn handle(&self, batch: &[Claimed]) -> Result<HashMap<i64, StageResult>, BatchError>;
}

/// The handlers of a pipeline, by state.
pub type Handlers = HashMap<String, Arc<dyn Handler>>;

/// Builds the handlers of the configured stages; fails naming the stages whose handler
/// kind has not landed yet, so nothing is silently skipped.
pub fn build(pipeline: &crate::config::Pipeline) -> Result<Handlers, String> {
    let mut missing = Vec::new();
    let mut handlers: Handlers = HashMap::new();
    for stage in &pipeline.stages {
        match &stage.settings {
            StageSettings::Noop(settings) => {
                handlers.insert(
                    stage.state.clone(),
                    Arc::new(NoopHandler::new(settings.clone())),
                );
            }
            StageSettings::NotYetImplemented(_) => missing.push(format!(
                "{} (handler {}: not implemented yet, lands with {})",
                stage.state,
                stage.kind,
                stage
                    .kind
                    .pending_implementation()
                    .unwrap_or("a later issue")
            )),
        }
    }
    if missing.is_empty() {
        Ok(handlers)
    } else {
        Err(format!(
            "stages without an implementation in this build: {}",
            missing.join("; ")
        ))
    }
}
