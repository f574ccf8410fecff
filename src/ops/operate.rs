//! Operator actions on one retirement (resume, abort, touch), and finding the retirement
//! an operator means by `#id`, subject id or email.

use super::input::{InputError, parse_subject, shown};
use crate::domain::OperatorAction;
use crate::domain::StateGraph;
use crate::error::{Classified, ErrorKind};
use crate::pii::HashKey;
use crate::store::{ActionResult, Lookup, Retirement, Store, StoreError};
use chrono::{DateTime, Utc};

/// Why an operator action could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum OperateError {
    /// `#…` or `id:…` without a number after it.
    #[error("{0}: a retirement id is #NUMBER or id:NUMBER")]
    BadId(String),
    /// Nothing given.
    #[error("empty subject")]
    Empty,
    /// No retirement matches (what was asked, emails never echoed).
    #[error("no retirement for {0}")]
    NoMatch(String),
    /// The retirement id does not exist.
    #[error("retirement #{0}")]
    NotFound(i64),
    /// The state to resume at is not declared.
    #[error("{state}: no such state (working states: {working})")]
    UnknownState {
        /// The state, quoted.
        state: String,
        /// The working states of the graph.
        working: String,
    },
    /// The action is refused in the retirement's state.
    #[error("retirement #{id}: {why}")]
    Refused {
        /// Retirement id.
        id: i64,
        /// Why.
        why: String,
    },
    /// An email where a subject id is needed (activity is recorded by key).
    #[error("an email is not a subject: give the subject id (the source's primary key)")]
    EmailNotSubject,
    /// Activity reported in the future.
    #[error("{0}: activity cannot be in the future")]
    FutureActivity(String),
    /// Bad input.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classified for OperateError {
    fn kind(&self) -> ErrorKind {
        match self {
            OperateError::NoMatch(_) | OperateError::NotFound(_) => ErrorKind::NotFound,
            OperateError::Refused { .. } => ErrorKind::Refused,
            OperateError::Store(e) => e.kind(),
            _ => ErrorKind::Config,
        }
    }
}

/// What an operator's `target` means: `#ID` or `id:ID` a retirement id, anything else a
/// subject id or an email (matched by hash when `key` is given).
pub fn parse_target(target: &str, key: Option<&HashKey>) -> Result<Lookup, OperateError> {
    let id = target
        .strip_prefix('#')
        .or_else(|| target.strip_prefix("id:"));
    match id {
        Some(digits) => digits
            .parse()
            .map(Lookup::Id)
            .map_err(|_| OperateError::BadId(shown(target))),
        None if target.trim().is_empty() => Err(OperateError::Empty),
        None => Ok(Lookup::subject(target.trim(), key)),
    }
}

/// `target` as a message may show it: an email is never echoed.
pub fn describe_target(target: &str) -> String {
    if target.contains('@') {
        "that email".into()
    } else {
        shown(target)
    }
}

/// Finds the retirement an operator means (see [`parse_target`]).
pub async fn find(
    store: &dyn Store,
    target: &str,
    key: Option<&HashKey>,
) -> Result<Retirement, OperateError> {
    let lookup = parse_target(target, key)?;
    store
        .find(&lookup)
        .await?
        .ok_or_else(|| OperateError::NoMatch(describe_target(target)))
}

/// Applies `action` to the retirement `target` names; an action the retirement's state
/// forbids is [`OperateError::Refused`].
pub async fn operate(
    store: &dyn Store,
    graph: &StateGraph,
    target: &str,
    key: Option<&HashKey>,
    action: &OperatorAction,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Retirement, OperateError> {
    if let OperatorAction::Resume { to: Some(to) } = action
        && !graph.contains(to)
    {
        return Err(OperateError::UnknownState {
            state: shown(to),
            working: graph.working().join(", "),
        });
    }
    let found = find(store, target, key).await?;
    applied(
        found.id,
        store.operate(graph, found.id, action, actor, now).await?,
    )
}

fn applied(id: i64, result: ActionResult) -> Result<Retirement, OperateError> {
    match result {
        ActionResult::Applied(r) => Ok(*r),
        ActionResult::NotFound => Err(OperateError::NotFound(id)),
        ActionResult::Refused(why) => Err(OperateError::Refused { id, why }),
    }
}

/// What recording a subject's activity did to its open retirement.
#[derive(Debug)]
pub enum Touched {
    /// The subject had no open retirement.
    NoneOpen,
    /// Its open retirement was cancelled; as it is now.
    Cancelled(Box<Retirement>),
}

/// Checks reported activity before anything is opened: `subject` a key (not an email),
/// `at` not in the future (`at_name` says where it was given, for the message).
pub fn check_activity(
    subject: &str,
    at: DateTime<Utc>,
    at_name: &str,
    now: DateTime<Utc>,
) -> Result<i64, OperateError> {
    if at > now {
        return Err(OperateError::FutureActivity(format!(
            "{at_name} {}",
            at.to_rfc3339()
        )));
    }
    if subject.contains('@') {
        return Err(OperateError::EmailNotSubject);
    }
    Ok(parse_subject("subject", subject)?)
}

/// Records that `subject` (see [`check_activity`]) was active at `at`, keeping the scan
/// from reopening a retirement within the inactivity period, and cancels its open
/// retirement if it is still in one of the `cancellable` states; refused once a deletion
/// has started.
#[allow(clippy::too_many_arguments)]
pub async fn touch(
    store: &dyn Store,
    graph: &StateGraph,
    cancellable: Vec<String>,
    key: &HashKey,
    subject: i64,
    at: DateTime<Utc>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Touched, OperateError> {
    let subject = subject.to_string();
    store.record_activity(&key.subject(&subject), at).await?;
    let open = store
        .find(&Lookup::subject(&subject, Some(key)))
        .await?
        .filter(|r| r.ended_at.is_none());
    let Some(open) = open else {
        return Ok(Touched::NoneOpen);
    };
    let action = OperatorAction::Touch { at, cancellable };
    let result = store.operate(graph, open.id, &action, actor, now).await?;
    applied(open.id, result).map(|r| Touched::Cancelled(Box::new(r)))
}

/// Retirements per state: every state of `graph` (zero when empty) in its order, then
/// states the store still holds that the graph no longer declares.
pub async fn stats(
    store: &dyn Store,
    graph: Option<&StateGraph>,
) -> Result<Vec<(String, i64)>, StoreError> {
    let mut counts = store.stats().await?;
    if let Some(graph) = graph {
        let names = graph.names();
        for name in &names {
            if !counts.iter().any(|(s, _)| s == name) {
                counts.push((name.to_string(), 0));
            }
        }
        counts.sort_by_key(|(s, _)| {
            names
                .iter()
                .position(|n| *n == s.as_str())
                .unwrap_or(usize::MAX)
        });
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_ids_subjects_or_emails() {
        assert!(matches!(parse_target("#12", None), Ok(Lookup::Id(12))));
        assert!(matches!(parse_target("id:7", None), Ok(Lookup::Id(7))));
        assert!(matches!(
            parse_target("#x", None),
            Err(OperateError::BadId(_))
        ));
        assert!(matches!(parse_target("  ", None), Err(OperateError::Empty)));
        assert!(matches!(
            parse_target(" 42 ", None),
            Ok(Lookup::Subject { raw, .. }) if raw == "42"
        ));
        assert_eq!(describe_target("a@b.org"), "that email");
    }
}
