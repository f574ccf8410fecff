//! Use cases the CLI and the REST API share: opening retirements by hand, operator
//! actions, finding a retirement, and validating what an operator typed. Callers only
//! parse their own syntax (flags, query strings) and present the result.

pub mod ack;
pub mod actor;
pub mod audit;
pub mod enqueue;
pub mod input;
pub mod operate;

pub use ack::{AckError, Acked, ack};
pub use actor::{operator, os_account_name};
pub use enqueue::{Enqueue, EnqueueError, Opened, enqueue, exclusions};
pub use input::{
    InputError, MAX_EMAIL, MAX_USERNAME, Request, parse_subject, parse_time, request, shown,
};
pub use operate::{
    OperateError, Touched, check_activity, describe_target, find, operate, parse_target, stats,
    touch,
};
