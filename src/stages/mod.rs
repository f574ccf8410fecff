//! Stage handlers: one file per handler kind. A handler receives a batch of claimed
//! retirements and returns one outcome per retirement; it must be idempotent.

mod noop;
mod sql_delete;

pub use noop::{NoopHandler, NoopSettings};
pub use sql_delete::SqlDeleteHandler;

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
            HandlerKind::SqlDelete => None,
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
    /// A sql_delete stage: the `[[target]]` it deletes from.
    SqlDelete {
        /// Target name.
        target: String,
    },
    /// Settings of a handler that has not landed yet, kept as written.
    NotYetImplemented(toml::Table),
}

impl StageSettings {
    /// Validates the keys left in a `[[stage]]` table for `kind`; errors are (key, problem).
    pub fn parse(kind: HandlerKind, table: toml::Table) -> Result<Self, (String, String)> {
        match kind {
            HandlerKind::Noop => NoopSettings::parse(table).map(StageSettings::Noop),
            HandlerKind::SqlDelete => {
                let mut table = table;
                let target = match table.remove("target") {
                    Some(toml::Value::String(name)) => name,
                    Some(other) => {
                        return Err((
                            "target".into(),
                            format!("expected a target name, found {}", other.type_str()),
                        ));
                    }
                    None => {
                        return Err((
                            "target".into(),
                            "missing: the [[target]] to delete from".into(),
                        ));
                    }
                };
                if let Some(key) = table.keys().next() {
                    return Err((
                        key.clone(),
                        "unknown setting for handler sql_delete (allowed: target)".into(),
                    ));
                }
                Ok(StageSettings::SqlDelete { target })
            }
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

/// Why the handlers of a pipeline cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Stages whose handler kind has not landed in this build.
    #[error("stages without an implementation in this build: {0}")]
    NotImplemented(String),
    /// A target could not be reached or does not fit the config.
    #[error(transparent)]
    Target(#[from] crate::sql::target::TargetError),
}

/// Builds the handlers of the configured stages, connecting their targets; fails naming
/// the stages whose handler kind has not landed yet, so nothing is silently skipped.
pub async fn build(pipeline: &crate::config::Pipeline) -> Result<Handlers, BuildError> {
    let missing: Vec<String> = pipeline
        .stages
        .iter()
        .filter(|s| matches!(s.settings, StageSettings::NotYetImplemented(_)))
        .map(|stage| {
            format!(
                "{} (handler {}: not implemented yet, lands with {})",
                stage.state,
                stage.kind,
                stage
                    .kind
                    .pending_implementation()
                    .unwrap_or("a later issue")
            )
        })
        .collect();
    if !missing.is_empty() {
        return Err(BuildError::NotImplemented(missing.join("; ")));
    }
    let mut targets: HashMap<String, Arc<crate::sql::target::Target>> = HashMap::new();
    let mut handlers: Handlers = HashMap::new();
    for stage in &pipeline.stages {
        let handler: Arc<dyn Handler> = match &stage.settings {
            StageSettings::Noop(settings) => Arc::new(NoopHandler::new(settings.clone())),
            StageSettings::SqlDelete { target } => {
                let connected = match targets.get(target) {
                    Some(t) => t.clone(),
                    None => {
                        let config = pipeline
                            .targets
                            .iter()
                            .find(|t| &t.name == target)
                            .ok_or_else(|| crate::sql::target::TargetError::Config {
                                target: target.clone(),
                                problem: "no [[target]] has this name".into(),
                            })?;
                        let t = Arc::new(crate::sql::target::Target::connect(config).await?);
                        targets.insert(target.clone(), t.clone());
                        t
                    }
                };
                Arc::new(SqlDeleteHandler::new(connected))
            }
            StageSettings::NotYetImplemented(_) => {
                return Err(BuildError::NotImplemented(stage.state.clone()));
            }
        };
        handlers.insert(stage.state.clone(), handler);
    }
    Ok(handlers)
}
