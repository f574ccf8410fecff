//! Every deleting stage behind the deletion hold: a retirement its reason's policy does
//! not let be deleted yet, or one unfit to go on, never reaches the handler, whatever the
//! pipeline's order of stages says.

use super::{BatchError, Handler, Reasons, Reporter};
use crate::clock::Clock;
use crate::domain::StageResult;
use crate::store::Claimed;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;

/// A deleting handler behind the hold.
pub struct Held {
    inner: Arc<dyn Handler>,
    reasons: Arc<Reasons>,
    clock: Arc<dyn Clock>,
}

impl Held {
    /// `inner` behind the hold of `reasons`, read on `clock`.
    pub fn new(inner: Arc<dyn Handler>, reasons: Arc<Reasons>, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner,
            reasons,
            clock,
        }
    }
}

#[async_trait]
impl Handler for Held {
    async fn handle(&self, batch: &[Claimed]) -> Result<HashMap<i64, StageResult>, BatchError> {
        self.handle_reporting(batch, &Reporter::none()).await
    }

    async fn handle_reporting(
        &self,
        batch: &[Claimed],
        reporter: &Reporter,
    ) -> Result<HashMap<i64, StageResult>, BatchError> {
        let now = self.clock.now();
        let mut results = HashMap::new();
        let mut go = Vec::with_capacity(batch.len());
        for c in batch {
            match self.reasons.hold(c, now) {
                Some(held) => {
                    results.insert(c.id, held);
                }
                None => go.push(c.clone()),
            }
        }
        if !go.is_empty() {
            results.extend(self.inner.handle_reporting(&go, reporter).await?);
        }
        Ok(results)
    }

    fn quick(&self) -> bool {
        self.inner.quick()
    }
}
