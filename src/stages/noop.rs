//! The noop handler: every retirement is Done, optionally after a simulated delay.

use super::{BatchError, Handler};
use crate::config::parse_duration;
use crate::domain::{Outcome, StageResult};
use crate::store::Claimed;
use async_trait::async_trait;
use std::collections::HashMap;
use std::time::Duration;

/// Settings of a noop stage.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NoopSettings {
    /// Simulated work per batch.
    pub delay: Duration,
}

impl NoopSettings {
    /// Accepts only `delay`.
    pub fn parse(mut table: toml::Table) -> Result<Self, (String, String)> {
        let delay = match table.remove("delay") {
            None => Duration::ZERO,
            Some(toml::Value::String(text)) => parse_duration(&text)
                .map_err(|p| ("delay".to_string(), format!("{text:?}: {p}")))?,
            Some(other) => {
                return Err((
                    "delay".into(),
                    format!("expected a duration string, found {}", other.type_str()),
                ));
            }
        };
        if let Some(key) = table.keys().next() {
            return Err((
                key.clone(),
                "unknown setting for handler noop (allowed: delay)".into(),
            ));
        }
        Ok(Self { delay })
    }
}

/// Moves every retirement on.
pub struct NoopHandler {
    settings: NoopSettings,
}

impl NoopHandler {
    /// A noop handler with these settings.
    pub fn new(settings: NoopSettings) -> Self {
        Self { settings }
    }
}

#[async_trait]
impl Handler for NoopHandler {
    async fn handle(&self, batch: &[Claimed]) -> Result<HashMap<i64, StageResult>, BatchError> {
        if !self.settings.delay.is_zero() {
            tokio::time::sleep(self.settings.delay).await;
        }
        Ok(batch.iter().map(|c| (c.id, Outcome::Done.into())).collect())
    }
}
