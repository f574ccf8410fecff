//! Histories written straight into a store, as the driver would have left them.

use super::exec;
use chrono::{DateTime, Utc};
use lethe::store::Store;

/// Puts retirement `id` in ERRORED, failed in `failed` with `error`.
pub async fn errored(url: &str, id: i64, failed: &str, error: &str) {
    exec(
        url,
        &[format!(
            "UPDATE retirement SET state = 'ERRORED', failed_state = '{failed}', last_error = '{error}', due_at = NULL WHERE id = {id}"
        )],
    )
    .await;
}

/// A retirement (of subject 3 in the tests: user3@example.org) retired from edx and sarbacane, acknowledged by both services, then ended
/// with its PII erased: the events as the driver writes them.
pub async fn retired(store: &dyn Store, url: &str, id: i64, at: DateTime<Utc>) {
    let steps = [
        ("PENDING", "WARNED", "{}"),
        ("WARNED", "RETIRING_EDX", "{}"),
        (
            "RETIRING_EDX",
            "RETIRING_SARBACANE",
            r#"{"target":"edx","rows":{"auth_user":1,"student_courseenrollment":2}}"#,
        ),
        ("RETIRING_SARBACANE", "NOTIFIED", "{}"),
    ];
    let mut statements: Vec<String> = steps
        .iter()
        .map(|(from, to, detail)| format!(
            "INSERT INTO retirement_event (retirement_id, at, actor, from_state, to_state, outcome, attempt, detail) \
             VALUES ({id}, '{}', 'driver:test', '{from}', '{to}', 'done', 1, '{detail}')",
            at.to_rfc3339()
        ))
        .collect();
    statements.push(format!(
        "UPDATE retirement SET state = 'NOTIFIED' WHERE id = {id}"
    ));
    exec(url, &statements).await;
    let services = ["joanie".to_string(), "ashley".to_string()];
    store.await_acks(&[id], &services, at).await.unwrap();
    for service in &services {
        store
            .acknowledge(id, service, "api:test", at)
            .await
            .unwrap();
    }
    exec(
        url,
        &[
            format!(
                "INSERT INTO retirement_event (retirement_id, at, actor, from_state, to_state, outcome, attempt, detail) \
                 VALUES ({id}, '{}', 'driver:test', 'NOTIFIED', 'COMPLETE', 'done', 1, '{{}}')",
                at.to_rfc3339()
            ),
            format!(
                "UPDATE retirement SET state = 'COMPLETE', ended_at = updated_at, due_at = NULL, subject = NULL, email = NULL, username = NULL WHERE id = {id}"
            ),
        ],
    )
    .await;
}
