//! A downstream service's acknowledgement that it deleted its copy of a retired user
//! (`lethe ack`, and the API's status PATCH).

use super::operate::{OperateError, find};
use crate::config::{Pipeline, StageSettings};
use crate::error::{Classified, ErrorKind};
use crate::pii::HashKey;
use crate::store::{AckResult, Store, StoreError};
use chrono::{DateTime, Utc};

/// Why an acknowledgement was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    /// No `[[service]]` has this name.
    #[error("no [[service]] is named {service} (configured: {known})")]
    UnknownService {
        /// The name given.
        service: String,
        /// The configured names.
        known: String,
    },
    /// The retirement is not in a notify stage that awaits this service.
    #[error("retirement #{id} is in state {state}, which does not await {service}")]
    NotAwaiting {
        /// Retirement id.
        id: i64,
        /// Its state.
        state: String,
        /// The service.
        service: String,
    },
    /// The notify stage has not handed the retirement to the service yet.
    #[error("retirement #{id} has not been handed to {service} yet (its notify stage has not run)")]
    NotHandedOver {
        /// Retirement id.
        id: i64,
        /// The service.
        service: String,
    },
    /// Finding the retirement failed.
    #[error(transparent)]
    Find(#[from] OperateError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classified for AckError {
    fn kind(&self) -> ErrorKind {
        match self {
            AckError::Find(e) => e.kind(),
            AckError::Store(e) => e.kind(),
            _ => ErrorKind::Refused,
        }
    }
}

/// What an acknowledgement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acked {
    /// Recorded now for retirement `id`.
    Recorded(i64),
    /// Retirement `id` had been acknowledged by the service at that time already.
    Already(i64, DateTime<Utc>),
}

/// Records that `service` deleted its copy of the retirement `target` names (`#id`,
/// subject id or email), by `actor`.
pub async fn ack(
    store: &dyn Store,
    pipeline: &Pipeline,
    target: &str,
    key: Option<&HashKey>,
    service: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Acked, AckError> {
    if !pipeline.services.iter().any(|s| s.name == service) {
        return Err(AckError::UnknownService {
            service: super::shown(service),
            known: pipeline
                .services
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let retirement = find(store, target, key).await?;
    let notify_awaits = |state: &str| {
        pipeline.stage(state).is_some_and(|stage| {
            matches!(&stage.settings, StageSettings::Notify(n) if n.services.iter().any(|s| s == service))
        })
    };
    // Also while errored out of that stage (a deadline passed): a late ack still counts,
    // and a resume then finds it.
    let awaits = notify_awaits(&retirement.state)
        || retirement
            .failed_state
            .as_deref()
            .is_some_and(notify_awaits);
    if !awaits || retirement.ended_at.is_some() {
        return Err(AckError::NotAwaiting {
            id: retirement.id,
            state: retirement.state,
            service: service.to_string(),
        });
    }
    match store
        .acknowledge(retirement.id, service, actor, now)
        .await?
    {
        AckResult::Recorded => Ok(Acked::Recorded(retirement.id)),
        AckResult::Already(at) => Ok(Acked::Already(retirement.id, at)),
        AckResult::NotAwaited => Err(AckError::NotHandedOver {
            id: retirement.id,
            service: service.to_string(),
        }),
    }
}
