//! Row decoding (`sqlx::FromRow` for the rows of both backends) and the column lists of
//! the SELECTs that feed it.

use super::{AuditRow, Claimed, Event, Retirement, ServiceAck};
use crate::domain::Reason;

/// Implements `sqlx::FromRow` for a row of either backend (same column names and types):
/// each field is read from the column of its name; `field: [Type => f]` reads the column as
/// `Type` and converts it with `f`; `field: [flatten]` decodes the field from the same row.
macro_rules! from_row {
    (@get $row:ident, $field:ident) => {
        sqlx::Row::try_get($row, stringify!($field))?
    };
    (@get $row:ident, $field:ident: flatten) => {
        sqlx::FromRow::from_row($row)?
    };
    (@get $row:ident, $field:ident: $as:ty => $convert:path) => {
        $convert(sqlx::Row::try_get::<$as, _>($row, stringify!($field))?)
    };
    ($ty:ty { $($field:ident $(: [$($how:tt)+])?),* $(,)? }) => {
        impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for $ty {
            fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
                Ok(Self { $($field: from_row!(@get row, $field $(: $($how)+)?)),* })
            }
        }

        impl<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> for $ty {
            fn from_row(row: &'r sqlx::sqlite::SqliteRow) -> Result<Self, sqlx::Error> {
                Ok(Self { $($field: from_row!(@get row, $field $(: $($how)+)?)),* })
            }
        }
    };
}

from_row!(ServiceAck {
    retirement_id,
    service,
    acked,
    created_at,
    notified_at,
    acked_at,
    acked_by,
});

from_row!(Retirement {
    id,
    public_id,
    subject,
    subject_hash,
    reason: [String => Reason::stored],
    state,
    due_at,
    attempt,
    lease_owner,
    lease_until,
    last_error,
    failed_state,
    warned_at,
    created_at,
    updated_at,
    ended_at,
    exclusion_override,
    rule,
});

from_row!(Claimed {
    id,
    subject,
    email,
    username,
    reason: [String => Reason::stored],
    state,
    attempt,
    lost_leases,
    warned_at,
    created_at,
    locale,
    reminders_sent,
    exclusion_override,
    rule,
});

from_row!(Event {
    id,
    retirement_id,
    at,
    actor,
    from_state,
    to_state,
    outcome,
    attempt,
    detail,
});

// An event's columns plus subject, subject_hash and reason.
from_row!(AuditRow {
    event: [flatten],
    subject,
    subject_hash,
    reason: [String => Reason::stored],
});

/// Columns of a `Retirement`, for SELECTs built with `concat!`.
macro_rules! retirement_columns {
    () => {
        "id, public_id, subject, subject_hash, reason, state, due_at, attempt, lease_owner, lease_until, last_error, failed_state, warned_at, created_at, updated_at, ended_at, exclusion_override, rule"
    };
}

/// Columns of a `Claimed`, for claim RETURNING clauses.
macro_rules! claimed_columns {
    () => {
        "id, subject, email, username, reason, state, attempt, lost_leases, warned_at, created_at, locale, reminders_sent, exclusion_override, rule"
    };
}

/// Columns of an `Event`.
macro_rules! event_columns {
    () => {
        "id, retirement_id, at, actor, from_state, to_state, outcome, attempt, detail"
    };
}

pub(crate) use {claimed_columns, event_columns, retirement_columns};
