//! Row decoding and the column lists of the SELECTs that feed it.

/// Decodes a `Retirement` from a row of either backend (same column names and types).
macro_rules! decode_retirement {
    ($row:expr) => {{
        use sqlx::Row;
        let row = $row;
        (|| -> Result<$crate::store::Retirement, sqlx::Error> {
            Ok($crate::store::Retirement {
                id: row.try_get("id")?,
                subject: row.try_get("subject")?,
                subject_hash: row.try_get("subject_hash")?,
                reason: crate::domain::Reason::stored(row.try_get("reason")?),
                state: row.try_get("state")?,
                due_at: row.try_get("due_at")?,
                attempt: row.try_get("attempt")?,
                lease_owner: row.try_get("lease_owner")?,
                lease_until: row.try_get("lease_until")?,
                last_error: row.try_get("last_error")?,
                failed_state: row.try_get("failed_state")?,
                warned_at: row.try_get("warned_at")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
                ended_at: row.try_get("ended_at")?,
                exclusion_override: row.try_get("exclusion_override")?,
            })
        })()
    }};
}

/// Decodes a `Claimed` from a claim's RETURNING row.
macro_rules! decode_claimed {
    ($row:expr) => {{
        use sqlx::Row;
        let row = $row;
        (|| -> Result<$crate::store::Claimed, sqlx::Error> {
            Ok($crate::store::Claimed {
                id: row.try_get("id")?,
                subject: row.try_get("subject")?,
                email: row.try_get("email")?,
                username: row.try_get("username")?,
                reason: crate::domain::Reason::stored(row.try_get("reason")?),
                state: row.try_get("state")?,
                attempt: row.try_get("attempt")?,
                lost_leases: row.try_get("lost_leases")?,
                warned_at: row.try_get("warned_at")?,
                created_at: row.try_get("created_at")?,
                locale: row.try_get("locale")?,
                reminders_sent: row.try_get("reminders_sent")?,
                exclusion_override: row.try_get("exclusion_override")?,
            })
        })()
    }};
}

/// Decodes an `Event`.
macro_rules! decode_event {
    ($row:expr) => {{
        use sqlx::Row;
        let row = $row;
        (|| -> Result<$crate::store::Event, sqlx::Error> {
            Ok($crate::store::Event {
                id: row.try_get("id")?,
                retirement_id: row.try_get("retirement_id")?,
                at: row.try_get("at")?,
                actor: row.try_get("actor")?,
                from_state: row.try_get("from_state")?,
                to_state: row.try_get("to_state")?,
                outcome: row.try_get("outcome")?,
                attempt: row.try_get("attempt")?,
                detail: row.try_get("detail")?,
            })
        })()
    }};
}

/// Decodes an `AuditRow` (event columns plus subject, subject_hash, reason).
macro_rules! decode_audit {
    ($row:expr) => {{
        use sqlx::Row;
        let row = $row;
        $crate::store::decode_event!(row).and_then(|event| {
            Ok($crate::store::AuditRow {
                event,
                subject: row.try_get("subject")?,
                subject_hash: row.try_get("subject_hash")?,
                reason: crate::domain::Reason::stored(row.try_get("reason")?),
            })
        })
    }};
}

/// Columns of a `Retirement`, for SELECTs built with `concat!`.
macro_rules! retirement_columns {
    () => {
        "id, subject, subject_hash, reason, state, due_at, attempt, lease_owner, lease_until, last_error, failed_state, warned_at, created_at, updated_at, ended_at, exclusion_override"
    };
}

/// Columns of a `Claimed`, for claim RETURNING clauses.
macro_rules! claimed_columns {
    () => {
        "id, subject, email, username, reason, state, attempt, lost_leases, warned_at, created_at, locale, reminders_sent, exclusion_override"
    };
}

/// Columns of an `Event`.
macro_rules! event_columns {
    () => {
        "id, retirement_id, at, actor, from_state, to_state, outcome, attempt, detail"
    };
}

pub(crate) use {
    claimed_columns, decode_audit, decode_claimed, decode_event, decode_retirement, event_columns,
    retirement_columns,
};
