//! Pure retirement logic: the state graph, handler outcomes, the retry schedule and the
//! transition each outcome or operator action causes. No I/O lives here.

mod blast;
mod delivery;
mod graph;
mod notice;
mod operator;
mod reason;
mod retry;
mod time;
mod transition;

pub use blast::check_blast_radius;
pub use delivery::{Delivery, OnRefused, delivery_outcome};
pub use graph::{Role, StateDef, StateGraph};
pub use notice::{NoticeRule, deletion_hold, grace_ends, reminders_due};
pub use operator::{OperatorAction, Standing};
pub use reason::Reason;
pub use retry::{RetrySchedule, mix, retry_entropy};
pub use time::{after, before, far_future, truncate_micros};
pub use transition::{
    EventOutcome, OperatorRefusal, Outcome, StageResult, Transition, crash_guard, plan_abort,
    plan_outcome, plan_resume, plan_touch,
};
