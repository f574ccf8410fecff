//! A claimed row on its way through a batch, and the fence it is written under.

use crate::domain::Transition;
use crate::store::{Applied, Claimed, Step};

/// A claimed row on its way through a batch: what the next handler sees, the fence the
/// store holds, and the outcomes made in memory since that fence.
pub(super) struct InFlight {
    pub(super) row: Claimed,
    fence_state: String,
    pub(super) fence_attempt: i32,
    pub(super) carried: Vec<Step>,
}

impl InFlight {
    pub(super) fn claimed(row: Claimed) -> Self {
        Self {
            fence_state: row.state.clone(),
            fence_attempt: row.attempt,
            row,
            carried: Vec::new(),
        }
    }

    /// The row as attempt 1 of its next state, after a written relay.
    pub(super) fn relayed(row: Claimed, transition: &Transition) -> Self {
        Self::claimed(moved_on(row, transition))
    }

    /// The row moved on in memory, the transition kept for the next write-back.
    pub(super) fn carry(self, transition: Transition, at: chrono::DateTime<chrono::Utc>) -> Self {
        let step = Step {
            from_state: self.row.state.clone(),
            attempt: self.row.attempt,
            at,
            transition,
        };
        let row = moved_on(self.row, &step.transition);
        let mut carried = self.carried;
        carried.push(step);
        Self {
            row,
            fence_state: self.fence_state,
            fence_attempt: self.fence_attempt,
            carried,
        }
    }

    /// What a write-back applies for this row: `transition` fenced as the store holds it.
    pub(super) fn into_applied(
        self,
        transition: Transition,
        relay: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Applied {
        Applied {
            id: self.row.id,
            from_state: self.fence_state,
            attempt: self.fence_attempt,
            transition,
            relay,
            carried: self.carried,
        }
    }
}

/// The row as attempt 1 of the state `transition` moved it to.
fn moved_on(row: Claimed, transition: &Transition) -> Claimed {
    Claimed {
        state: transition.to_state.clone(),
        attempt: 1,
        lost_leases: 0,
        warned_at: transition.warned_at.or(row.warned_at),
        reminders_sent: transition.reminders_sent.unwrap_or(row.reminders_sent),
        ..row
    }
}
