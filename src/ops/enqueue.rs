//! Opening retirements by hand, with the subjects checked against the source's exclusions.
//!
//! Invariant 3 holds however a retirement is opened: a subject matched by
//! `source.exclude` or an allow-list is refused unless an operator overrides it for that
//! one subject, and the override is stored on the retirement and in its event.

use super::input::{InputError, Request};
use crate::domain::{Reason, StateGraph};
use crate::pii::HashKey;
use crate::sql::source::{SourceError, SourceReader};
use crate::store::{EnqueueOptions, EnqueueOutcome, NewRetirement, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;

/// What enqueueing one subject did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Opened {
    /// A new retirement with this id.
    Created {
        /// Retirement id.
        id: i64,
    },
    /// The subject already has this open retirement.
    AlreadyOpen {
        /// Retirement id.
        id: i64,
    },
    /// Refused: the source's exclusions keep this subject out.
    Refused {
        /// Which rule: `excluded by source.exclude`, `excluded by source.allow_ids`…
        why: String,
    },
}

/// Why an enqueue could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// Bad input; nothing was written.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Nothing to enqueue.
    #[error("nothing to enqueue: give SUBJECT arguments or --from-file")]
    Empty,
    /// An override names more than one subject.
    #[error(
        "--override-exclusion applies to one subject at a time ({0} given): enqueue the others without it"
    )]
    OverrideOfMany(usize),
    /// No source to check the exclusions against.
    #[error(
        "no [source] is configured: the exclusions of enqueued subjects (source.exclude, allow-lists) cannot be checked; configure [source], or give one subject with --override-exclusion"
    )]
    NoSource,
    /// The source failed while checking.
    #[error("{0} (the exclusions of enqueued subjects cannot be checked; nothing was written)")]
    Source(#[from] SourceError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which of `requests` the source's exclusions keep out, and by which rule: one query
/// for the predicate (`source.exclude`), then the allow-lists on the id and on the email
/// the source holds as well as the one given.
pub async fn exclusions(
    reader: &SourceReader,
    requests: &[Request],
) -> Result<HashMap<i64, String>, SourceError> {
    let subjects: Vec<(i64, Option<&str>)> = requests
        .iter()
        .map(|r| (r.subject, r.email.as_deref()))
        .collect();
    let rules = reader.exclusion_rules(&subjects).await?;
    Ok(rules
        .into_iter()
        .map(|(id, rule)| (id, format!("excluded by source.{rule}")))
        .collect())
}

/// What one hand-opened enqueue is.
pub struct Enqueue<'a> {
    /// The subjects, validated.
    pub requests: &'a [Request],
    /// Why.
    pub reason: Reason,
    /// The operator overrides the exclusions (one subject only).
    pub exclusion_override: bool,
    /// Who, for the events.
    pub actor: &'a str,
    /// The state they start in (default: the first).
    pub start: Option<&'a str>,
}

/// Opens retirements by hand: refuses subjects the exclusions keep out (the others are
/// enqueued), unless `exclusion_override` (one subject only), which needs no source.
/// Without an override, `reader` is required: no check is ever skipped silently.
pub async fn enqueue(
    store: &dyn Store,
    graph: &StateGraph,
    reader: Option<&SourceReader>,
    key: &HashKey,
    input: Enqueue<'_>,
    now: DateTime<Utc>,
) -> Result<Vec<(i64, Opened)>, EnqueueError> {
    if input.requests.is_empty() {
        return Err(EnqueueError::Empty);
    }
    if input.exclusion_override && input.requests.len() > 1 {
        return Err(EnqueueError::OverrideOfMany(input.requests.len()));
    }
    let refused = if input.exclusion_override {
        HashMap::new()
    } else {
        exclusions(reader.ok_or(EnqueueError::NoSource)?, input.requests).await?
    };
    let new: Vec<NewRetirement> = input
        .requests
        .iter()
        .filter(|r| !refused.contains_key(&r.subject))
        .map(|r| {
            NewRetirement::hashed(
                key,
                r.subject,
                r.email.clone(),
                r.username.clone(),
                input.reason.clone(),
            )
        })
        .collect();
    let options = EnqueueOptions {
        exclusion_override: input.exclusion_override,
    };
    let outcomes = if new.is_empty() {
        Vec::new()
    } else {
        store
            .enqueue_with(
                input.start.unwrap_or(graph.initial()),
                &new,
                options,
                input.actor,
                now,
            )
            .await?
    };
    let mut outcomes = outcomes.into_iter();
    input
        .requests
        .iter()
        .map(|r| {
            let opened = match refused.get(&r.subject) {
                Some(why) => Opened::Refused { why: why.clone() },
                None => match outcomes.next() {
                    Some(EnqueueOutcome::Created(id)) => Opened::Created { id },
                    Some(EnqueueOutcome::AlreadyOpen(id)) => Opened::AlreadyOpen { id },
                    None => {
                        return Err(EnqueueError::Store(StoreError::Query {
                            context: "enqueue (the store reported fewer outcomes than subjects)",
                            source: sqlx::Error::RowNotFound,
                        }));
                    }
                },
            };
            Ok((r.subject, opened))
        })
        .collect()
}

impl crate::error::Classified for EnqueueError {
    fn kind(&self) -> crate::error::ErrorKind {
        match self {
            EnqueueError::Store(e) => e.kind(),
            // Whatever failed in the source, the check could not run: not the input's fault.
            EnqueueError::Source(_) => crate::error::ErrorKind::Unreachable,
            _ => crate::error::ErrorKind::Config,
        }
    }
}
