//! The ordered list of states from states.toml and the moves between them.

use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, VariantNames};

/// What a dead-end state means. Working states have no role.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Display, EnumString, VariantNames,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Role {
    /// The pipeline finished: the retirement ends.
    Complete,
    /// Parked for an operator: the retirement stays open with nothing due.
    Errored,
    /// Cancelled: the retirement ends without finishing.
    Aborted,
}

/// One state as declared in states.toml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateDef {
    /// Name, as stored in the database.
    pub name: String,
    /// Dead-end role, if any.
    pub role: Option<Role>,
}

/// The validated state list: working states in order, plus one state per role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateGraph {
    states: Vec<StateDef>,
    working: Vec<String>,
    complete: String,
    errored: String,
    aborted: String,
}

impl StateGraph {
    /// Builds the graph; the caller (config validation) has checked names and roles,
    /// so this only fails when a role is missing or no working state exists.
    pub fn new(states: Vec<StateDef>) -> Result<Self, String> {
        let role_state = |role: Role| {
            states
                .iter()
                .find(|s| s.role == Some(role))
                .map(|s| s.name.clone())
                .ok_or_else(|| format!("no state has role = \"{role}\""))
        };
        let complete = role_state(Role::Complete)?;
        let errored = role_state(Role::Errored)?;
        let aborted = role_state(Role::Aborted)?;
        let working: Vec<String> = states
            .iter()
            .filter(|s| s.role.is_none())
            .map(|s| s.name.clone())
            .collect();
        if working.is_empty() {
            return Err("no working state (a state without a role) is declared".into());
        }
        Ok(Self {
            states,
            working,
            complete,
            errored,
            aborted,
        })
    }

    /// Every state, in declaration order.
    pub fn states(&self) -> &[StateDef] {
        &self.states
    }

    /// The working states (those with a stage), in pipeline order.
    pub fn working(&self) -> &[String] {
        &self.working
    }

    /// Where a new retirement starts.
    pub fn initial(&self) -> &str {
        &self.working[0]
    }

    /// The state with the `complete` role.
    pub fn complete(&self) -> &str {
        &self.complete
    }

    /// The state with the `errored` role.
    pub fn errored(&self) -> &str {
        &self.errored
    }

    /// The state with the `aborted` role.
    pub fn aborted(&self) -> &str {
        &self.aborted
    }

    /// Whether `name` is declared.
    pub fn contains(&self, name: &str) -> bool {
        self.states.iter().any(|s| s.name == name)
    }

    /// Whether `name` is a working state (has a stage).
    pub fn is_working(&self, name: &str) -> bool {
        self.working.iter().any(|s| s == name)
    }

    /// Whether reaching `name` ends a retirement (complete or aborted).
    pub fn ends(&self, name: &str) -> bool {
        name == self.complete || name == self.aborted
    }

    /// The state a `Done` outcome in `state` leads to.
    pub fn next(&self, state: &str) -> Option<&str> {
        let at = self.working.iter().position(|s| s == state)?;
        Some(
            self.working
                .get(at + 1)
                .map(String::as_str)
                .unwrap_or(&self.complete),
        )
    }

    /// Names of all states, for error messages.
    pub fn names(&self) -> Vec<&str> {
        self.states.iter().map(|s| s.name.as_str()).collect()
    }
}

#[cfg(test)]
pub(crate) fn edx_graph() -> StateGraph {
    let working = [
        "PENDING",
        "WARNED",
        "RETIRING_EDX",
        "RETIRING_SARBACANE",
        "NOTIFIED",
    ];
    let mut states: Vec<StateDef> = working
        .iter()
        .map(|n| StateDef {
            name: n.to_string(),
            role: None,
        })
        .collect();
    for (name, role) in [
        ("COMPLETE", Role::Complete),
        ("ERRORED", Role::Errored),
        ("ABORTED", Role::Aborted),
    ] {
        states.push(StateDef {
            name: name.into(),
            role: Some(role),
        });
    }
    StateGraph::new(states).expect("valid fixture")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_walks_the_working_states_then_completes() {
        let g = edx_graph();
        assert_eq!(g.initial(), "PENDING");
        assert_eq!(g.next("PENDING"), Some("WARNED"));
        assert_eq!(g.next("RETIRING_SARBACANE"), Some("NOTIFIED"));
        assert_eq!(g.next("NOTIFIED"), Some("COMPLETE"));
        assert_eq!(g.next("COMPLETE"), None);
        assert_eq!(g.next("ERRORED"), None);
    }

    #[test]
    fn only_complete_and_aborted_end_a_retirement() {
        let g = edx_graph();
        assert!(g.ends("COMPLETE"));
        assert!(g.ends("ABORTED"));
        assert!(!g.ends("ERRORED"));
        assert!(!g.ends("PENDING"));
    }

    #[test]
    fn a_missing_role_is_refused() {
        let states = vec![
            StateDef {
                name: "A".into(),
                role: None,
            },
            StateDef {
                name: "DONE".into(),
                role: Some(Role::Complete),
            },
        ];
        let err = StateGraph::new(states).unwrap_err();
        assert!(err.contains("errored"), "{err}");
    }
}
