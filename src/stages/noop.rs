//! The noop handler: every retirement is Done, optionally after a simulated delay.

use super::{BatchError, Handler};
use crate::config::NoopSettings;
use crate::domain::{Outcome, StageResult};
use crate::store::Claimed;
use async_trait::async_trait;
use std::collections::HashMap;

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
