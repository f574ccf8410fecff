//! What each handler outcome and operator action does to a retirement.

use super::{RetrySchedule, StateGraph};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// What a handler says about one retirement of its batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The stage's work is done: move to the next state.
    Done,
    /// Not yet: stay, due again at `until` (grace periods, awaiting acks).
    Wait {
        /// When to look again.
        until: DateTime<Utc>,
        /// Why, for the event.
        why: String,
    },
    /// Transient failure: due again after backoff; errored once attempts are exhausted.
    Retry {
        /// What failed.
        error: String,
    },
    /// Permanent failure: errored now, for an operator.
    Fail {
        /// What failed.
        error: String,
    },
    /// The retirement must not go on (the user is active again): aborted.
    Cancel {
        /// Why, for the event.
        why: String,
    },
}

/// A handler's answer for one retirement: the outcome plus what to record.
#[derive(Debug, Clone, PartialEq)]
pub struct StageResult {
    /// The outcome.
    pub outcome: Outcome,
    /// Detail kept in the event (rows deleted, message id...). Never PII.
    pub detail: Option<Value>,
    /// Set by the warning stage: when the notice was accepted.
    pub warned_at: Option<DateTime<Utc>>,
    /// Set by the grace stage: how many reminders have been sent.
    pub reminders_sent: Option<i32>,
}

impl StageResult {
    /// A result with no detail.
    pub fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            detail: None,
            warned_at: None,
            reminders_sent: None,
        }
    }

    /// Attaches event detail.
    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

impl From<Outcome> for StageResult {
    fn from(outcome: Outcome) -> Self {
        Self::new(outcome)
    }
}

/// The label of the event a transition records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventOutcome {
    /// The stage finished; the retirement moves on.
    Done,
    /// The handler asks to wait until a time.
    Wait,
    /// A failure that will be retried.
    Retry,
    /// A failure that errored the retirement.
    Fail,
    /// Activity cancelled the retirement.
    Cancel,
    /// An operator resumed an errored retirement.
    Resume,
    /// An operator aborted the retirement.
    Abort,
    /// A downstream service acknowledged its deletion (no state change).
    Ack,
}

impl EventOutcome {
    /// The label as stored in events and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Done => "done",
            EventOutcome::Wait => "wait",
            EventOutcome::Retry => "retry",
            EventOutcome::Fail => "fail",
            EventOutcome::Cancel => "cancel",
            EventOutcome::Resume => "resume",
            EventOutcome::Abort => "abort",
            EventOutcome::Ack => "ack",
        }
    }
}

impl std::fmt::Display for EventOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The row change and event one outcome or action causes.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// New state.
    pub to_state: String,
    /// When the new state's handler is due; `None` when nothing is due (errored, ended).
    pub due_at: Option<DateTime<Utc>>,
    /// New attempt counter (0 after a successful run or a move).
    pub attempt: i32,
    /// Error kept for the operator.
    pub last_error: Option<String>,
    /// The state that failed, kept while errored so `resume` knows where to go back.
    pub failed_state: Option<String>,
    /// The retirement ends here: PII is erased.
    pub ends: bool,
    /// Event label.
    pub outcome: EventOutcome,
    /// Event detail.
    pub detail: Value,
    /// When the warning was accepted, if this run recorded it.
    pub warned_at: Option<DateTime<Utc>>,
    /// Reminders sent, if this run changed the count.
    pub reminders_sent: Option<i32>,
}

impl Transition {
    /// The row moves on to a stage due at once (`now`): the driver keeps its lease and
    /// runs that stage in the same batch instead of releasing it to be claimed again.
    pub fn goes_on_at(&self, now: DateTime<Utc>) -> bool {
        self.outcome == EventOutcome::Done && !self.ends && self.due_at == Some(now)
    }
}

/// The crash guard: a retirement whose claims never came back `limit` times (its workers
/// crashed or were killed) fails instead of running again. No handler failed, so this is
/// not `policy.max_attempts`, which [`plan_outcome`] applies to failures only.
pub fn crash_guard(state: &str, lost_leases: i32, limit: u32) -> Option<StageResult> {
    if (lost_leases.max(0) as u32) < limit {
        return None;
    }
    let error = format!(
        "crash guard (driver.max_lost_leases = {limit}): {lost_leases} claims in state {state} never came back (the worker crashed or lost its lease)"
    );
    let detail = json!({ "guard": "driver.max_lost_leases", "lost_leases": lost_leases });
    Some(StageResult::new(Outcome::Fail { error }).with_detail(detail))
}

/// Why an operator action is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OperatorRefusal(pub String);

fn merge(detail: Option<&Value>, extra: Value) -> Value {
    match (detail, extra) {
        (Some(Value::Object(base)), Value::Object(more)) => {
            let mut merged = base.clone();
            merged.extend(more);
            Value::Object(merged)
        }
        (Some(other), Value::Object(mut more)) => {
            more.insert("handler".into(), other.clone());
            Value::Object(more)
        }
        (_, extra) => extra,
    }
}

/// Decides the transition for a handler result on a retirement in `from` at `attempt`.
#[allow(clippy::too_many_arguments)]
pub fn plan_outcome(
    graph: &StateGraph,
    schedule: &RetrySchedule,
    max_attempts: u32,
    from: &str,
    attempt: i32,
    result: &StageResult,
    now: DateTime<Utc>,
    entropy: u64,
) -> Transition {
    let stay = |outcome, due_at, attempt, last_error: Option<String>, detail| Transition {
        to_state: from.to_string(),
        due_at,
        attempt,
        last_error,
        failed_state: None,
        ends: false,
        outcome,
        detail,
        warned_at: result.warned_at,
        reminders_sent: result.reminders_sent,
    };
    let errored = |error: &str, detail: Value| Transition {
        to_state: graph.errored().to_string(),
        due_at: None,
        attempt,
        last_error: Some(error.to_string()),
        failed_state: Some(from.to_string()),
        ends: false,
        outcome: EventOutcome::Fail,
        detail,
        warned_at: result.warned_at,
        reminders_sent: result.reminders_sent,
    };
    let detail = result.detail.as_ref();
    match &result.outcome {
        Outcome::Done => match graph.next(from) {
            Some(next) => Transition {
                to_state: next.to_string(),
                due_at: (!graph.ends(next)).then_some(now),
                attempt: 0,
                last_error: None,
                failed_state: None,
                ends: graph.ends(next),
                outcome: EventOutcome::Done,
                detail: merge(detail, json!({})),
                warned_at: result.warned_at,
                reminders_sent: result.reminders_sent,
            },
            None => {
                let error = format!("state {from} has no stage, so it has no next state");
                errored(&error, json!({ "error": error }))
            }
        },
        Outcome::Wait { until, why } => stay(
            EventOutcome::Wait,
            // At least a second: a handler that keeps answering Wait with a past time
            // must not spin the driver.
            Some((*until).max(now + chrono::Duration::seconds(1))),
            0,
            None,
            merge(detail, json!({ "why": why, "until": until })),
        ),
        Outcome::Retry { error } if attempt.max(0) as u32 >= max_attempts => errored(
            error,
            merge(
                detail,
                json!({ "error": error, "attempts": attempt, "exhausted": true, "guard": "policy.max_attempts" }),
            ),
        ),
        Outcome::Retry { error } => {
            let delay = schedule.delay(attempt.max(1) as u32, entropy);
            let due = super::time::after(now, delay);
            stay(
                EventOutcome::Retry,
                Some(due),
                attempt,
                Some(error.clone()),
                merge(detail, json!({ "error": error, "retry_at": due })),
            )
        }
        Outcome::Fail { error } => errored(error, merge(detail, json!({ "error": error }))),
        Outcome::Cancel { why } => Transition {
            to_state: graph.aborted().to_string(),
            due_at: None,
            attempt,
            last_error: None,
            failed_state: None,
            ends: true,
            outcome: EventOutcome::Cancel,
            detail: merge(detail, json!({ "why": why })),
            warned_at: result.warned_at,
            reminders_sent: result.reminders_sent,
        },
    }
}

/// Decides where `resume` sends an errored retirement: back to the failed state, or `to`.
pub fn plan_resume(
    graph: &StateGraph,
    current: &str,
    failed_state: Option<&str>,
    to: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Transition, OperatorRefusal> {
    if current != graph.errored() {
        return Err(OperatorRefusal(format!(
            "it is in state {current}, not {}: only errored retirements can be resumed",
            graph.errored()
        )));
    }
    let target = to.or(failed_state).ok_or_else(|| {
        OperatorRefusal("the failed state is unknown: give one with --to STATE".into())
    })?;
    if !graph.is_working(target) {
        return Err(OperatorRefusal(format!(
            "{target} is not a working state (allowed: {})",
            graph.working().join(", ")
        )));
    }
    Ok(Transition {
        to_state: target.to_string(),
        due_at: Some(now),
        attempt: 0,
        last_error: None,
        failed_state: None,
        ends: false,
        outcome: EventOutcome::Resume,
        detail: json!({ "from_failed_state": failed_state }),
        warned_at: None,
        reminders_sent: None,
    })
}

/// Decides what `abort` does: any open retirement goes to the aborted state and ends.
pub fn plan_abort(
    graph: &StateGraph,
    current: &str,
    ended: bool,
    reason: &str,
) -> Result<Transition, OperatorRefusal> {
    if ended {
        return Err(OperatorRefusal(format!(
            "it already ended in state {current}"
        )));
    }
    if reason.trim().is_empty() {
        return Err(OperatorRefusal(
            "an abort needs a non-empty --reason".into(),
        ));
    }
    Ok(ended_by_operator(
        graph,
        EventOutcome::Abort,
        json!({ "reason": reason }),
    ))
}

/// An open retirement ended in the aborted state by an operator action.
fn ended_by_operator(graph: &StateGraph, outcome: EventOutcome, detail: Value) -> Transition {
    Transition {
        to_state: graph.aborted().to_string(),
        due_at: None,
        attempt: 0,
        last_error: None,
        failed_state: None,
        ends: true,
        outcome,
        detail,
        warned_at: None,
        reminders_sent: None,
    }
}

/// Decides what reported activity does: an open retirement still in the notice phase
/// (`cancellable`, or errored there) is cancelled; one whose deletion started is not.
pub fn plan_touch(
    graph: &StateGraph,
    current: &str,
    failed_state: Option<&str>,
    ended: bool,
    at: DateTime<Utc>,
    cancellable: &[String],
) -> Result<Transition, OperatorRefusal> {
    if ended {
        return Err(OperatorRefusal(format!(
            "it already ended in state {current}"
        )));
    }
    let phase = match failed_state {
        Some(failed) if current == graph.errored() => failed,
        _ => current,
    };
    if !cancellable.iter().any(|c| c == phase) {
        return Err(OperatorRefusal(format!(
            "deletion has started (state {phase}): activity no longer cancels it; use abort if it must stop"
        )));
    }
    Ok(ended_by_operator(
        graph,
        EventOutcome::Cancel,
        json!({ "why": format!("active again at {}", at.to_rfc3339()), "reported": true }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crash_guard_trips_at_its_limit_and_names_itself() {
        assert_eq!(crash_guard("PENDING", 2, 3), None);
        let parked = crash_guard("PENDING", 3, 3).expect("tripped");
        assert!(
            matches!(&parked.outcome, Outcome::Fail { error } if error.contains("driver.max_lost_leases = 3"))
        );
        assert_eq!(
            parked.detail.as_ref().map(|d| d["guard"].clone()),
            Some(json!("driver.max_lost_leases"))
        );
    }
    use crate::domain::graph::edx_graph;
    use std::time::Duration;

    #[test]
    fn only_a_done_due_at_once_and_not_ending_goes_on() {
        let done = plan("PENDING", 1, Outcome::Done);
        assert!(done.goes_on_at(now()));
        assert!(!done.goes_on_at(now() + chrono::Duration::seconds(1)));
        assert!(!plan("PENDING", 1, Outcome::Retry { error: "x".into() }).goes_on_at(now()));
        assert!(!plan("NOTIFIED", 1, Outcome::Done).goes_on_at(now()));
    }

    const SCHEDULE: RetrySchedule = RetrySchedule {
        base: Duration::from_secs(60),
        cap: Duration::from_secs(3600),
    };

    fn now() -> DateTime<Utc> {
        "2026-11-22T10:00:00Z".parse().unwrap()
    }

    fn plan(from: &str, attempt: i32, outcome: Outcome) -> Transition {
        plan_outcome(
            &edx_graph(),
            &SCHEDULE,
            3,
            from,
            attempt,
            &outcome.into(),
            now(),
            7,
        )
    }

    #[test]
    fn done_moves_to_the_next_state_due_now_with_attempts_reset() {
        let t = plan("PENDING", 2, Outcome::Done);
        assert_eq!(t.to_state, "WARNED");
        assert_eq!(t.due_at, Some(now()));
        assert_eq!(t.attempt, 0);
        assert!(!t.ends);
        assert_eq!(t.outcome, EventOutcome::Done);
    }

    #[test]
    fn done_in_the_last_stage_completes_and_ends() {
        let t = plan("NOTIFIED", 1, Outcome::Done);
        assert_eq!(t.to_state, "COMPLETE");
        assert_eq!(t.due_at, None);
        assert!(t.ends);
    }

    #[test]
    fn wait_stays_until_the_given_time_and_never_in_the_past() {
        let until = now() + chrono::Duration::days(30);
        let t = plan(
            "WARNED",
            1,
            Outcome::Wait {
                until,
                why: "grace".into(),
            },
        );
        assert_eq!(
            (t.to_state.as_str(), t.due_at, t.attempt),
            ("WARNED", Some(until), 0)
        );
        let past = now() - chrono::Duration::days(1);
        let t = plan(
            "WARNED",
            1,
            Outcome::Wait {
                until: past,
                why: "x".into(),
            },
        );
        assert_eq!(t.due_at, Some(now() + chrono::Duration::seconds(1)));
    }

    #[test]
    fn retry_backs_off_and_keeps_the_error() {
        let t = plan(
            "RETIRING_EDX",
            2,
            Outcome::Retry {
                error: "timeout".into(),
            },
        );
        assert_eq!(t.to_state, "RETIRING_EDX");
        assert_eq!(t.attempt, 2);
        assert_eq!(t.last_error.as_deref(), Some("timeout"));
        let due = t.due_at.unwrap();
        assert!(due >= now() + chrono::Duration::seconds(60));
        assert!(due <= now() + chrono::Duration::seconds(120));
    }

    #[test]
    fn retry_after_max_attempts_parks_in_errored_with_the_last_error() {
        let t = plan(
            "RETIRING_EDX",
            3,
            Outcome::Retry {
                error: "timeout".into(),
            },
        );
        assert_eq!(t.to_state, "ERRORED");
        assert_eq!(t.due_at, None);
        assert_eq!(t.failed_state.as_deref(), Some("RETIRING_EDX"));
        assert_eq!(t.last_error.as_deref(), Some("timeout"));
        assert!(!t.ends, "errored keeps the retirement open");
        assert_eq!(t.detail["exhausted"], true);
    }

    #[test]
    fn fail_parks_at_once() {
        let t = plan(
            "RETIRING_EDX",
            1,
            Outcome::Fail {
                error: "protected: wiki_article.owner_id".into(),
            },
        );
        assert_eq!(t.to_state, "ERRORED");
        assert_eq!(t.failed_state.as_deref(), Some("RETIRING_EDX"));
        assert!(!t.ends);
    }

    #[test]
    fn cancel_aborts_and_ends() {
        let t = plan(
            "WARNED",
            1,
            Outcome::Cancel {
                why: "active again".into(),
            },
        );
        assert_eq!(t.to_state, "ABORTED");
        assert!(t.ends);
        assert_eq!(t.detail["why"], "active again");
    }

    #[test]
    fn handler_detail_is_kept_in_the_event() {
        let result = StageResult::new(Outcome::Done).with_detail(json!({"rows": {"a": 3}}));
        let t = plan_outcome(
            &edx_graph(),
            &SCHEDULE,
            3,
            "RETIRING_EDX",
            1,
            &result,
            now(),
            1,
        );
        assert_eq!(t.detail["rows"]["a"], 3);
    }

    #[test]
    fn resume_goes_back_to_the_failed_state_or_the_given_one() {
        let g = edx_graph();
        let t = plan_resume(&g, "ERRORED", Some("RETIRING_EDX"), None, now()).unwrap();
        assert_eq!(
            (t.to_state.as_str(), t.due_at),
            ("RETIRING_EDX", Some(now()))
        );
        let t = plan_resume(&g, "ERRORED", Some("RETIRING_EDX"), Some("PENDING"), now()).unwrap();
        assert_eq!(t.to_state, "PENDING");
    }

    #[test]
    fn resume_is_refused_unless_errored_and_to_a_working_state() {
        let g = edx_graph();
        let err = plan_resume(&g, "WARNED", None, None, now()).unwrap_err();
        assert!(err.0.contains("not ERRORED"), "{err}");
        let err = plan_resume(&g, "ERRORED", Some("X"), Some("COMPLETE"), now()).unwrap_err();
        assert!(err.0.contains("not a working state"), "{err}");
        let err = plan_resume(&g, "ERRORED", None, None, now()).unwrap_err();
        assert!(err.0.contains("--to"), "{err}");
    }

    #[test]
    fn abort_ends_any_open_retirement_and_refuses_ended_ones() {
        let g = edx_graph();
        let t = plan_abort(&g, "ERRORED", false, "user asked").unwrap();
        assert_eq!(t.to_state, "ABORTED");
        assert!(t.ends);
        let err = plan_abort(&g, "COMPLETE", true, "x").unwrap_err();
        assert!(err.0.contains("already ended"), "{err}");
        assert!(plan_abort(&g, "PENDING", false, "  ").is_err());
    }

    #[test]
    fn touch_cancels_only_before_deletion_starts() {
        let g = edx_graph();
        let notice = ["PENDING".to_string(), "WARNED".to_string()];
        let t = plan_touch(&g, "WARNED", None, false, now(), &notice).unwrap();
        assert_eq!(
            (t.to_state.as_str(), t.outcome.as_str(), t.ends),
            ("ABORTED", "cancel", true)
        );
        assert!(
            t.detail["why"]
                .as_str()
                .unwrap()
                .starts_with("active again at ")
        );
        // Errored during the notice phase: still cancellable.
        assert!(plan_touch(&g, "ERRORED", Some("PENDING"), false, now(), &notice).is_ok());
        let err = plan_touch(&g, "RETIRING_EDX", None, false, now(), &notice).unwrap_err();
        assert!(
            err.0.contains("deletion has started (state RETIRING_EDX)"),
            "{err}"
        );
        let err =
            plan_touch(&g, "ERRORED", Some("RETIRING_EDX"), false, now(), &notice).unwrap_err();
        assert!(err.0.contains("deletion has started"), "{err}");
        assert!(plan_touch(&g, "COMPLETE", None, true, now(), &notice).is_err());
    }
}
