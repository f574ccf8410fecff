//! Operator actions on one retirement (resume, abort, touch) and the rule that decides
//! what each does to a retirement where it stands.

use super::graph::StateGraph;
use super::transition::{OperatorRefusal, Transition, plan_abort, plan_resume, plan_touch};
use chrono::{DateTime, Utc};

/// An operator action on one retirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorAction {
    /// Continue an errored retirement at its failed state, or at `to`.
    Resume {
        /// Target state.
        to: Option<String>,
    },
    /// End an open retirement.
    Abort {
        /// Why, recorded in the event.
        reason: String,
    },
    /// The subject was active at `at`: cancel the retirement if it is still in one of the
    /// `cancellable` states (before any deletion), else refuse.
    Touch {
        /// When the activity happened.
        at: DateTime<Utc>,
        /// States before the first deleting stage.
        cancellable: Vec<String>,
    },
}

/// Where a retirement stands: what an operator action decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing<'a> {
    /// Current state.
    pub state: &'a str,
    /// State that failed, while errored.
    pub failed_state: Option<&'a str>,
    /// It ended (complete or aborted).
    pub ended: bool,
}

impl OperatorAction {
    /// The transition this action causes on a retirement standing at `current`, or why it
    /// is refused.
    pub fn decide(
        &self,
        graph: &StateGraph,
        current: Standing<'_>,
        now: DateTime<Utc>,
    ) -> Result<Transition, OperatorRefusal> {
        match self {
            OperatorAction::Resume { to } => {
                if current.ended {
                    return Err(OperatorRefusal(format!(
                        "it already ended in state {}",
                        current.state
                    )));
                }
                plan_resume(
                    graph,
                    current.state,
                    current.failed_state,
                    to.as_deref(),
                    now,
                )
            }
            OperatorAction::Abort { reason } => {
                plan_abort(graph, current.state, current.ended, reason)
            }
            OperatorAction::Touch { at, cancellable } => plan_touch(
                graph,
                current.state,
                current.failed_state,
                current.ended,
                *at,
                cancellable,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventOutcome;
    use crate::domain::graph::edx_graph;

    fn now() -> DateTime<Utc> {
        "2026-11-22T10:00:00Z".parse().unwrap()
    }

    fn standing(
        state: &'static str,
        failed_state: Option<&'static str>,
        ended: bool,
    ) -> Standing<'static> {
        Standing {
            state,
            failed_state,
            ended,
        }
    }

    #[test]
    fn each_action_decides_on_where_the_retirement_stands() {
        let graph = edx_graph();
        let resume = OperatorAction::Resume { to: None };
        let back = resume
            .decide(&graph, standing("ERRORED", Some("WARNED"), false), now())
            .expect("an errored retirement resumes at its failed state");
        assert_eq!(back.to_state, "WARNED");
        assert_eq!(back.outcome, EventOutcome::Resume);
        let ended = resume
            .decide(&graph, standing("COMPLETE", None, true), now())
            .expect_err("an ended retirement is not resumed");
        assert_eq!(ended.0, "it already ended in state COMPLETE");

        let abort = OperatorAction::Abort {
            reason: "asked to".into(),
        };
        let aborted = abort
            .decide(&graph, standing("PENDING", None, false), now())
            .expect("an open retirement is aborted");
        assert_eq!((aborted.to_state.as_str(), aborted.ends), ("ABORTED", true));
        assert!(
            abort
                .decide(&graph, standing("ABORTED", None, true), now())
                .is_err()
        );

        let touch = OperatorAction::Touch {
            at: now(),
            cancellable: vec!["PENDING".into(), "WARNED".into()],
        };
        let cancelled = touch
            .decide(&graph, standing("ERRORED", Some("WARNED"), false), now())
            .expect("errored in the notice phase is cancelled");
        assert_eq!(cancelled.outcome, EventOutcome::Cancel);
        assert!(
            touch
                .decide(&graph, standing("RETIRING_EDX", None, false), now())
                .is_err(),
            "activity does not cancel a deletion that started"
        );
    }
}
