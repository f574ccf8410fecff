//! The store contract, run against PostgreSQL and SQLite alike.

mod common;

use chrono::Duration as Span;
use common::{Kind, TestDb, config, key, noop_pipeline, subjects, t0};
use lethe::domain::{Outcome, StageResult, plan_outcome};
use lethe::store::{
    ActionResult, Applied, AuditFilter, Claimed, EnqueueOutcome, Lookup, OperatorAction, Step,
    Store, StoreError,
};
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(60);

per_backend!(
    enqueue_reports_open_subjects_instead_of_duplicating,
    claim_leases_and_counts_attempts,
    leased_retirements_are_taken_over_after_the_lease,
    lost_leases_are_counted_apart_from_failures,
    stale_write_back_changes_nothing,
    done_walks_the_pipeline_and_erases_pii_at_the_end,
    retries_back_off_then_park_in_errored,
    resume_and_abort_follow_the_rules,
    events_are_append_only,
    removing_a_state_in_use_is_refused,
    release_gives_work_back_untouched,
    release_is_fenced_by_each_claims_own_attempt,
    renew_extends_only_held_leases,
    open_among_and_recently_active_find_only_their_members,
    audit_filters_by_time_and_subject,
    a_relayed_write_back_keeps_the_lease_for_the_next_state,
    carried_steps_are_written_with_the_outcome_in_order,
    an_exclusion_override_is_stored_claimed_and_recorded,
    the_last_scan_and_the_migration_check_are_read_back,
    an_ack_during_the_claim_makes_the_wait_due_at_once,
);

async fn setup(
    kind: Kind,
) -> (
    TestDb,
    std::sync::Arc<dyn Store>,
    lethe::domain::StateGraph,
    lethe::config::Pipeline,
) {
    let db = TestDb::new(kind).await;
    let (graph, pipeline) = config(&noop_pipeline("", ""));
    let store = db.store(&graph).await;
    (db, store, graph, pipeline)
}

/// Applies `outcome` to every claimed retirement as `owner` would.
async fn apply(
    store: &dyn Store,
    graph: &lethe::domain::StateGraph,
    pipeline: &lethe::config::Pipeline,
    owner: &str,
    claimed: &[Claimed],
    outcome: Outcome,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<i64> {
    let applied: Vec<Applied> = claimed
        .iter()
        .map(|c| Applied {
            relay: None,
            carried: Vec::new(),
            id: c.id,
            from_state: c.state.clone(),
            attempt: c.attempt,
            transition: plan_outcome(
                graph,
                &pipeline.policy.retry,
                pipeline.policy.max_attempts,
                &c.state,
                c.attempt - c.lost_leases,
                &StageResult::new(outcome.clone()),
                now,
                42,
            ),
        })
        .collect();
    store
        .write_back(owner, &applied, now)
        .await
        .expect("write back")
}

async fn enqueue_reports_open_subjects_instead_of_duplicating(kind: Kind) {
    let (_db, store, graph, pipeline) = setup(kind).await;
    let first = store
        .enqueue("PENDING", &subjects(1, 4), "cli", t0())
        .await
        .unwrap();
    assert!(
        first
            .iter()
            .all(|o| matches!(o, EnqueueOutcome::Created(_)))
    );
    let mut again = subjects(3, 5);
    again.push(subjects(4, 5).remove(0)); // the same subject twice in one call
    let second = store.enqueue("PENDING", &again, "cli", t0()).await.unwrap();
    let EnqueueOutcome::Created(id3) = first[2] else {
        panic!()
    };
    assert_eq!(second[0], EnqueueOutcome::AlreadyOpen(id3));
    assert!(matches!(second[1], EnqueueOutcome::Created(_)));
    assert_eq!(
        second[2],
        EnqueueOutcome::AlreadyOpen(match second[1] {
            EnqueueOutcome::Created(id) => id,
            other => panic!("{other:?}"),
        })
    );
    let stats = store.stats().await.unwrap();
    assert_eq!(stats, vec![("PENDING".to_string(), 4)]);

    // Once a retirement ends, the subject may be enqueued again.
    let r = store
        .find(&Lookup::subject("1", Some(&key())))
        .await
        .unwrap()
        .unwrap();
    let ended = store
        .operate(
            &graph,
            r.id,
            &OperatorAction::Abort {
                reason: "test".into(),
            },
            "operator:t",
            t0(),
        )
        .await
        .unwrap();
    assert!(matches!(ended, ActionResult::Applied(_)));
    let third = store
        .enqueue("PENDING", &subjects(1, 2), "cli", t0())
        .await
        .unwrap();
    assert!(matches!(third[0], EnqueueOutcome::Created(id) if id != r.id));
    let _ = pipeline;
}

async fn claim_leases_and_counts_attempts(kind: Kind) {
    let (_db, store, _graph, _p) = setup(kind).await;
    store
        .enqueue("PENDING", &subjects(1, 11), "cli", t0())
        .await
        .unwrap();
    // Not due before it was enqueued.
    assert!(
        store
            .claim("a", t0() - Span::seconds(1), LEASE, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let batch = store.claim("a", t0(), LEASE, 4).await.unwrap();
    assert_eq!(batch.len(), 4);
    assert!(batch.iter().all(|c| c.attempt == 1 && c.state == "PENDING"));
    assert_eq!(batch[0].email.as_deref(), Some("user1@example.org"));
    // Leased rows are not claimed again; the others are.
    let rest = store.claim("b", t0(), LEASE, 100).await.unwrap();
    assert_eq!(rest.len(), 6);
    let ids: std::collections::HashSet<i64> = batch.iter().chain(&rest).map(|c| c.id).collect();
    assert_eq!(ids.len(), 10);
    assert!(
        store
            .claim("c", t0() + Span::seconds(30), LEASE, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let r = store.find(&Lookup::Id(batch[0].id)).await.unwrap().unwrap();
    assert_eq!(r.lease_owner.as_deref(), Some("a"));
    assert_eq!(r.lease_until, Some(t0() + Span::seconds(60)));
}

async fn leased_retirements_are_taken_over_after_the_lease(kind: Kind) {
    let (_db, store, _graph, _p) = setup(kind).await;
    store
        .enqueue("PENDING", &subjects(1, 3), "cli", t0())
        .await
        .unwrap();
    let a = store.claim("a", t0(), LEASE, 10).await.unwrap();
    assert_eq!(a.len(), 2);
    let b = store
        .claim("b", t0() + Span::seconds(61), LEASE, 10)
        .await
        .unwrap();
    assert_eq!(b.len(), 2, "expired leases are taken over");
    assert!(b.iter().all(|c| c.attempt == 2));
    assert!(
        b.iter().all(|c| c.lost_leases == 1),
        "a's claims never came back: counted apart from failures"
    );
    assert!(a.iter().all(|c| c.lost_leases == 0));
}

async fn lost_leases_are_counted_apart_from_failures(kind: Kind) {
    let (_db, store, graph, p) = setup(kind).await;
    store
        .enqueue("PENDING", &subjects(1, 2), "cli", t0())
        .await
        .unwrap();
    // Three claims die; the fourth finds three lost leases and fails once.
    let mut now = t0();
    for (n, owner) in ["a", "b", "c"].into_iter().enumerate() {
        let batch = store.claim(owner, now, LEASE, 10).await.unwrap();
        assert_eq!(
            (batch[0].attempt, batch[0].lost_leases),
            (n as i32 + 1, n as i32)
        );
        now += Span::seconds(61);
    }
    let d = store.claim("d", now, LEASE, 10).await.unwrap();
    assert_eq!((d[0].attempt, d[0].lost_leases), (4, 3));
    let error = Outcome::Retry {
        error: "smtp 451".into(),
    };
    assert_eq!(
        apply(store.as_ref(), &graph, &p, "d", &d, error, now)
            .await
            .len(),
        1
    );
    let r = store.find(&Lookup::Id(d[0].id)).await.unwrap().unwrap();
    assert_eq!(
        r.attempt, 1,
        "one failure; the lost claims are not attempts"
    );
    // The written outcome came back: the next claim starts the count again.
    let e = store
        .claim("e", now + Span::hours(1), LEASE, 10)
        .await
        .unwrap();
    assert_eq!((e[0].attempt, e[0].lost_leases), (2, 0));
    // A release is not a lost lease either.
    let fences: Vec<(i64, i32)> = e.iter().map(|c| (c.id, c.attempt)).collect();
    store
        .release("e", &fences, now + Span::hours(1))
        .await
        .unwrap();
    let f = store
        .claim("f", now + Span::hours(1), LEASE, 10)
        .await
        .unwrap();
    assert_eq!((f[0].attempt, f[0].lost_leases), (2, 0));
}

async fn stale_write_back_changes_nothing(kind: Kind) {
    let (_db, store, graph, pipeline) = setup(kind).await;
    store
        .enqueue("PENDING", &subjects(1, 3), "cli", t0())
        .await
        .unwrap();
    let a = store.claim("a", t0(), LEASE, 10).await.unwrap();
    let later = t0() + Span::seconds(61);
    let b = store.claim("b", later, LEASE, 10).await.unwrap();
    // The stale worker finishes first: nothing it writes lands.
    let stale = apply(
        store.as_ref(),
        &graph,
        &pipeline,
        "a",
        &a,
        Outcome::Done,
        later,
    )
    .await;
    assert!(stale.is_empty());
    let fresh = apply(
        store.as_ref(),
        &graph,
        &pipeline,
        "b",
        &b,
        Outcome::Done,
        later,
    )
    .await;
    assert_eq!(fresh.len(), 2);
    // And after the fresh one has moved on, the stale one still changes nothing.
    let stale = apply(
        store.as_ref(),
        &graph,
        &pipeline,
        "a",
        &a,
        Outcome::Cancel { why: "x".into() },
        later,
    )
    .await;
    assert!(stale.is_empty());
    for c in &b {
        let events = store.history(c.id).await.unwrap();
        assert_eq!(events.len(), 2, "enqueue + one transition: {events:?}");
        assert_eq!(events[1].actor, "driver:b");
        let r = store.find(&Lookup::Id(c.id)).await.unwrap().unwrap();
        assert_eq!(r.state, "WARNED");
        assert_eq!(r.attempt, 0);
        assert_eq!(r.lease_owner, None);
    }
    // Same owner, same attempt number, but another state: still fenced.
    let again = store.claim("a", later, LEASE, 10).await.unwrap();
    assert!(again.iter().all(|c| c.attempt == 1 && c.state == "WARNED"));
    let stale = apply(
        store.as_ref(),
        &graph,
        &pipeline,
        "a",
        &a,
        Outcome::Done,
        later,
    )
    .await;
    assert!(
        stale.is_empty(),
        "a PENDING fence never applies to a WARNED row"
    );
}

async fn done_walks_the_pipeline_and_erases_pii_at_the_end(kind: Kind) {
    let (_db, store, graph, pipeline) = setup(kind).await;
    store
        .enqueue("PENDING", &subjects(7, 8), "cli", t0())
        .await
        .unwrap();
    let mut now = t0();
    let mut states = vec![];
    loop {
        let batch = store.claim("a", now, LEASE, 10).await.unwrap();
        if batch.is_empty() {
            break;
        }
        states.push(batch[0].state.clone());
        assert_eq!(
            batch[0].email.as_deref(),
            Some("user7@example.org"),
            "PII kept while open"
        );
        apply(
            store.as_ref(),
            &graph,
            &pipeline,
            "a",
            &batch,
            Outcome::Done,
            now,
        )
        .await;
        now += Span::seconds(1);
    }
    assert_eq!(
        states,
        [
            "PENDING",
            "WARNED",
            "RETIRING_EDX",
            "RETIRING_SARBACANE",
            "NOTIFIED"
        ]
    );
    let by_hash = store
        .find(&Lookup::subject("7", Some(&key())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_hash.state, "COMPLETE");
    assert_eq!(by_hash.subject, None, "subject id erased");
    assert!(by_hash.ended_at.is_some());
    assert_eq!(by_hash.due_at, None);
    let by_email = store
        .find(&Lookup::subject("USER7@example.org", Some(&key())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_email.id, by_hash.id);
    // Without the key an ended retirement is only found by id.
    assert!(
        store
            .find(&Lookup::subject("7", None))
            .await
            .unwrap()
            .is_none()
    );
    let events = store.history(by_hash.id).await.unwrap();
    assert_eq!(
        common::event_path(&events),
        [
            (None, "PENDING", "enqueued"),
            (Some("PENDING"), "WARNED", "done"),
            (Some("WARNED"), "RETIRING_EDX", "done"),
            (Some("RETIRING_EDX"), "RETIRING_SARBACANE", "done"),
            (Some("RETIRING_SARBACANE"), "NOTIFIED", "done"),
            (Some("NOTIFIED"), "COMPLETE", "done"),
        ]
    );
    for e in &events {
        assert!(
            !e.detail.contains("example.org"),
            "no email in events: {}",
            e.detail
        );
    }
    assert_pii_erased(&_db, by_hash.id).await;
}

/// Reads the raw row: email, username and subject must be NULL.
async fn assert_pii_erased(db: &TestDb, id: i64) {
    use sqlx::Row;
    let sql = "SELECT email, username, subject FROM retirement WHERE id = $1";
    let (email, username, subject): (Option<String>, Option<String>, Option<String>) =
        if db.url.starts_with("sqlite") {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            let row = sqlx::query(sql).bind(id).fetch_one(&pool).await.unwrap();
            (row.get(0), row.get(1), row.get(2))
        } else {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            let row = sqlx::query(sql).bind(id).fetch_one(&pool).await.unwrap();
            (row.get(0), row.get(1), row.get(2))
        };
    assert_eq!((email, username, subject), (None, None, None));
}

async fn retries_back_off_then_park_in_errored(kind: Kind) {
    let (_db, store, graph, pipeline) = setup(kind).await;
    store
        .enqueue("PENDING", &subjects(1, 2), "cli", t0())
        .await
        .unwrap();
    let mut now = t0();
    for attempt in 1..=3 {
        let batch = store.claim("a", now, LEASE, 10).await.unwrap();
        assert_eq!(batch.len(), 1, "attempt {attempt}");
        assert_eq!(batch[0].attempt, attempt);
        apply(
            store.as_ref(),
            &graph,
            &pipeline,
            "a",
            &batch,
            Outcome::Retry {
                error: format!("smtp 451 #{attempt}"),
            },
            now,
        )
        .await;
        let r = store.find(&Lookup::Id(batch[0].id)).await.unwrap().unwrap();
        if attempt < 3 {
            assert_eq!(r.state, "PENDING");
            let due = r.due_at.unwrap();
            let base = 60 * (1 << (attempt - 1));
            assert!(
                due >= now + Span::seconds(base / 2) && due <= now + Span::seconds(base),
                "{due} after {now}"
            );
            // Not due before the backoff.
            assert!(
                store
                    .claim("a", due - Span::milliseconds(1), LEASE, 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
            now = due;
        } else {
            assert_eq!(r.state, "ERRORED");
            assert_eq!(r.failed_state.as_deref(), Some("PENDING"));
            assert_eq!(r.last_error.as_deref(), Some("smtp 451 #3"));
            assert_eq!(r.due_at, None);
            assert!(r.ended_at.is_none(), "errored stays open");
        }
    }
    assert!(
        store
            .claim("a", now + Span::days(365), LEASE, 10)
            .await
            .unwrap()
            .is_empty(),
        "errored is never due"
    );
    let fail = store
        .enqueue("PENDING", &subjects(1, 2), "cli", now)
        .await
        .unwrap();
    assert!(
        matches!(fail[0], EnqueueOutcome::AlreadyOpen(_)),
        "no second retirement while errored"
    );
}

async fn resume_and_abort_follow_the_rules(kind: Kind) {
    let (_db, store, graph, pipeline) = setup(kind).await;
    store
        .enqueue("PENDING", &subjects(1, 3), "cli", t0())
        .await
        .unwrap();
    let batch = store.claim("a", t0(), LEASE, 10).await.unwrap();
    let (one, two) = (batch[0].id, batch[1].id);
    apply(
        store.as_ref(),
        &graph,
        &pipeline,
        "a",
        &batch[..1],
        Outcome::Fail {
            error: "protected: wiki_article.owner_id".into(),
        },
        t0(),
    )
    .await;
    apply(
        store.as_ref(),
        &graph,
        &pipeline,
        "a",
        &batch[1..],
        Outcome::Done,
        t0(),
    )
    .await;

    let resume = |to: Option<&str>| OperatorAction::Resume {
        to: to.map(str::to_string),
    };
    // Resume of a retirement that is not errored: refused.
    match store
        .operate(&graph, two, &resume(None), "operator:t", t0())
        .await
        .unwrap()
    {
        ActionResult::Refused(why) => assert!(why.contains("not ERRORED"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Resume to a state that is not a working state: refused.
    match store
        .operate(&graph, one, &resume(Some("COMPLETE")), "operator:t", t0())
        .await
        .unwrap()
    {
        ActionResult::Refused(why) => assert!(why.contains("not a working state"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Resume goes back to the failed state, due now, attempts reset.
    match store
        .operate(&graph, one, &resume(None), "operator:t", t0())
        .await
        .unwrap()
    {
        ActionResult::Applied(r) => {
            assert_eq!(
                (r.state.as_str(), r.due_at, r.attempt),
                ("PENDING", Some(t0()), 0)
            );
            assert_eq!(r.last_error, None);
        }
        other => panic!("{other:?}"),
    }
    // Abort ends it and erases PII; a second abort is refused.
    match store
        .operate(
            &graph,
            one,
            &OperatorAction::Abort {
                reason: "user asked".into(),
            },
            "operator:t",
            t0(),
        )
        .await
        .unwrap()
    {
        ActionResult::Applied(r) => {
            assert_eq!(r.state, "ABORTED");
            assert!(r.ended_at.is_some());
            assert_eq!(r.subject, None);
        }
        other => panic!("{other:?}"),
    }
    match store
        .operate(
            &graph,
            one,
            &OperatorAction::Abort {
                reason: "again".into(),
            },
            "operator:t",
            t0(),
        )
        .await
        .unwrap()
    {
        ActionResult::Refused(why) => assert!(why.contains("already ended"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store
            .operate(&graph, 999_999, &resume(None), "operator:t", t0())
            .await
            .unwrap(),
        ActionResult::NotFound
    ));
    let events = store.history(one).await.unwrap();
    let outcomes: Vec<&str> = events.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["enqueued", "fail", "resume", "abort"]);
    assert_eq!(events[3].actor, "operator:t");
    assert!(events[3].detail.contains("user asked"));
}

async fn events_are_append_only(kind: Kind) {
    let (db, store, _graph, _p) = setup(kind).await;
    store
        .enqueue("PENDING", &subjects(1, 2), "cli", t0())
        .await
        .unwrap();
    let forgeries = [
        "UPDATE retirement_event SET actor = 'forged'",
        "DELETE FROM retirement_event",
        // An event must name a retirement, and a retirement with events is never deleted.
        "INSERT INTO retirement_event (retirement_id, at, actor, to_state, outcome, attempt, detail) \
         VALUES (999999, '2026-01-01T00:00:00Z', 'forged', 'PENDING', 'enqueued', 0, '{}')",
        "DELETE FROM retirement",
    ];
    let mut refusals = Vec::new();
    for sql in forgeries {
        let result = if db.url.starts_with("sqlite") {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.map(|_| ())
        } else {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.map(|_| ())
        };
        refusals.push(result.expect_err(sql).to_string());
    }
    assert!(refusals[0].contains("append-only"), "{}", refusals[0]);
    assert!(refusals[1].contains("append-only"), "{}", refusals[1]);
    assert!(
        refusals[2].contains("FOREIGN KEY") || refusals[2].contains("does not exist"),
        "{}",
        refusals[2]
    );
    assert!(refusals[3].contains("never deleted"), "{}", refusals[3]);
    let r = store
        .find(&Lookup::subject("1", None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.history(r.id).await.unwrap()[0].actor, "cli");
}

async fn removing_a_state_in_use_is_refused(kind: Kind) {
    let (_db, store, _graph, _p) = setup(kind).await;
    store
        .enqueue("PENDING", &subjects(1, 3), "cli", t0())
        .await
        .unwrap();
    let renamed = common::STATES.replace("\"PENDING\"", "\"NEW_PENDING\"");
    let (graph2, _) = lethe::config::Config::from_texts(
        "states.toml",
        &renamed,
        "pipeline.toml",
        &noop_pipeline("", "").replace("\"PENDING\"", "\"NEW_PENDING\""),
    )
    .unwrap();
    match store.sync_states(&graph2).await {
        Err(StoreError::StateInUse { state, count }) => {
            assert_eq!((state.as_str(), count), ("PENDING", 2))
        }
        other => panic!("{other:?}"),
    }
    // Removing an empty state is fine.
    let without_notified = common::STATES.replace("[[state]]\nname = \"NOTIFIED\"\n", "");
    let pipeline =
        noop_pipeline("", "").replace("[[stage]]\nstate = \"NOTIFIED\"\nhandler = \"noop\"\n", "");
    let (graph3, _) = lethe::config::Config::from_texts(
        "states.toml",
        &without_notified,
        "pipeline.toml",
        &pipeline,
    )
    .unwrap();
    store.sync_states(&graph3).await.unwrap();
}

async fn release_gives_work_back_untouched(kind: Kind) {
    let (_db, store, _graph, _p) = setup(kind).await;
    store
        .enqueue("PENDING", &subjects(1, 3), "cli", t0())
        .await
        .unwrap();
    let batch = store.claim("a", t0(), LEASE, 10).await.unwrap();
    let claimed: Vec<(i64, i32)> = batch.iter().map(|c| (c.id, c.attempt)).collect();
    assert_eq!(
        store.release("someone-else", &claimed, t0()).await.unwrap(),
        0
    );
    assert_eq!(store.release("a", &claimed, t0()).await.unwrap(), 2);
    let again = store.claim("b", t0(), LEASE, 10).await.unwrap();
    assert!(
        again.iter().all(|c| c.attempt == 1),
        "a release does not count as an attempt"
    );
}

async fn release_is_fenced_by_each_claims_own_attempt(kind: Kind) {
    let (_db, store, _graph, _p) = setup(kind).await;
    store
        .enqueue("PENDING", &subjects(1, 3), "cli", t0())
        .await
        .unwrap();
    // The first retirement's lease is lost once: it is claimed again at attempt 2, the
    // second at attempt 1.
    let first = store.claim("a", t0(), LEASE, 1).await.unwrap();
    let later = t0() + Span::seconds(61);
    let batch = store.claim("a", later, LEASE, 10).await.unwrap();
    let attempts: Vec<(i64, i32)> = batch.iter().map(|c| (c.id, c.attempt)).collect();
    assert_eq!(attempts, vec![(first[0].id, 2), (batch[1].id, 1)]);
    let swapped = vec![(batch[0].id, 1), (batch[1].id, 2)];
    assert_eq!(
        store.release("a", &swapped, later).await.unwrap(),
        0,
        "each id is fenced by its own attempt, not by any of the list"
    );
    assert_eq!(store.release("a", &attempts, later).await.unwrap(), 2);
}

async fn open_among_and_recently_active_find_only_their_members(kind: Kind) {
    let (_db, store, _graph, _p) = setup(kind).await;
    store
        .enqueue("PENDING", &subjects(1, 3), "cli", t0())
        .await
        .unwrap();
    let asked: Vec<String> = ["1", "2", "9"].map(String::from).to_vec();
    let open = store.open_among(&asked).await.unwrap();
    assert_eq!(open, ["1", "2"].map(String::from).into());
    assert!(store.open_among(&[]).await.unwrap().is_empty());

    store.record_activity("h1", t0()).await.unwrap();
    store
        .record_activity("h2", t0() - Span::days(10))
        .await
        .unwrap();
    let hashes: Vec<String> = ["h1", "h2", "h3"].map(String::from).to_vec();
    let since = t0() - Span::days(1);
    let active = store.recently_active(&hashes, since).await.unwrap();
    assert_eq!(active, ["h1"].map(String::from).into());
    assert!(
        store
            .recently_active(&hashes, t0())
            .await
            .unwrap()
            .is_empty(),
        "activity at `since` is not after it"
    );
}

async fn renew_extends_only_held_leases(kind: Kind) {
    let (_db, store, _graph, _p) = setup(kind).await;
    store
        .enqueue("PENDING", &subjects(1, 3), "cli", t0())
        .await
        .unwrap();
    let batch = store.claim("a", t0(), LEASE, 10).await.unwrap();
    let ids: Vec<i64> = batch.iter().map(|c| c.id).collect();
    let until = t0() + Span::seconds(600);
    assert_eq!(store.renew("a", &ids, until).await.unwrap(), 2);
    assert_eq!(store.renew("b", &ids, until).await.unwrap(), 0);
    assert!(
        store
            .claim("b", t0() + Span::seconds(120), LEASE, 10)
            .await
            .unwrap()
            .is_empty(),
        "renewed leases hold"
    );
    assert_eq!(
        store
            .claim("b", until + Span::seconds(1), LEASE, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn audit_filters_by_time_and_subject(kind: Kind) {
    let (_db, store, graph, pipeline) = setup(kind).await;
    store
        .enqueue("PENDING", &subjects(1, 3), "cli", t0())
        .await
        .unwrap();
    let later = t0() + Span::hours(1);
    let batch = store.claim("a", later, LEASE, 10).await.unwrap();
    apply(
        store.as_ref(),
        &graph,
        &pipeline,
        "a",
        &batch,
        Outcome::Cancel {
            why: "active again".into(),
        },
        later,
    )
    .await;
    let all = store
        .audit(&AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    let since = store
        .audit(&AuditFilter {
            after: None,
            since: Some(later),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(since.len(), 2);
    assert!(since.iter().all(|r| r.event.outcome == "cancel"));
    let until = store
        .audit(&AuditFilter {
            until: Some(later),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(until.len(), 2);
    // After the end (PII erased), the subject is still found through its hashes.
    let by_email = store
        .audit(&AuditFilter {
            subject: Some(Lookup::subject("user2@example.org", Some(&key()))),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_email.len(), 2);
    assert!(
        by_email
            .iter()
            .all(|r| r.subject.is_none() && r.subject_hash == key().subject("2"))
    );
    let by_id = store
        .audit(&AuditFilter {
            subject: Some(Lookup::subject("1", Some(&key()))),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_id.len(), 2);
    assert!(
        by_id
            .iter()
            .all(|r| r.event.retirement_id != by_email[0].event.retirement_id)
    );
}

async fn a_relayed_write_back_keeps_the_lease_for_the_next_state(kind: Kind) {
    let (_db, store, graph, pipeline) = setup(kind).await;
    store
        .enqueue("PENDING", &subjects(1, 3), "cli", t0())
        .await
        .unwrap();
    let batch = store.claim("a", t0(), LEASE, 10).await.unwrap();
    let relay_until = t0() + Span::seconds(60);
    let applied: Vec<Applied> = batch
        .iter()
        .map(|c| Applied {
            id: c.id,
            from_state: c.state.clone(),
            attempt: c.attempt,
            transition: plan_outcome(
                &graph,
                &pipeline.policy.retry,
                3,
                &c.state,
                c.attempt,
                &StageResult::new(Outcome::Done),
                t0(),
                1,
            ),
            relay: Some(relay_until),
            carried: Vec::new(),
        })
        .collect();
    assert_eq!(
        store.write_back("a", &applied, t0()).await.unwrap().len(),
        2
    );
    let r = store.find(&Lookup::Id(batch[0].id)).await.unwrap().unwrap();
    assert_eq!(
        (r.state.as_str(), r.attempt, r.lease_owner.as_deref()),
        ("WARNED", 1, Some("a"))
    );
    assert_eq!(
        (r.lease_until, r.due_at),
        (Some(relay_until), Some(relay_until))
    );
    // Nobody else can claim it while relayed...
    assert!(
        store
            .claim("b", t0() + Span::seconds(30), LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // ...and the relaying driver's next write-back is fenced at attempt 1 in the new state.
    let next: Vec<Claimed> = batch
        .iter()
        .map(|c| Claimed {
            state: "WARNED".into(),
            attempt: 1,
            ..c.clone()
        })
        .collect();
    let done = apply(
        store.as_ref(),
        &graph,
        &pipeline,
        "a",
        &next,
        Outcome::Done,
        t0(),
    )
    .await;
    assert_eq!(done.len(), 2);
    let r = store.find(&Lookup::Id(batch[0].id)).await.unwrap().unwrap();
    assert_eq!((r.state.as_str(), r.lease_owner), ("RETIRING_EDX", None));
    let events = store.history(r.id).await.unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(
        (events[2].from_state.as_deref(), events[2].attempt),
        (Some("WARNED"), 1)
    );
}

/// A Done carried in memory into a quick stage is written with that stage's outcome: one
/// fenced update (the fence is the claim), both events oldest first, the carried warning time.
async fn carried_steps_are_written_with_the_outcome_in_order(kind: Kind) {
    let (_db, store, graph, pipeline) = setup(kind).await;
    store
        .enqueue("PENDING", &subjects(1, 2), "cli", t0())
        .await
        .unwrap();
    let batch = store.claim("a", t0(), LEASE, 10).await.unwrap();
    let c = &batch[0];
    let plan = |state: &str, attempt: i32, outcome: Outcome, at| {
        plan_outcome(
            &graph,
            &pipeline.policy.retry,
            3,
            state,
            attempt,
            &StageResult::new(outcome),
            at,
            1,
        )
    };
    let warned = t0() + Span::seconds(1);
    let mut warning = plan("PENDING", c.attempt, Outcome::Done, warned);
    warning.warned_at = Some(warned);
    let until = t0() + Span::days(30);
    let wait = plan(
        "WARNED",
        1,
        Outcome::Wait {
            until,
            why: "grace".into(),
        },
        t0() + Span::seconds(2),
    );
    let applied = Applied {
        id: c.id,
        from_state: c.state.clone(),
        attempt: c.attempt,
        transition: wait,
        relay: None,
        carried: vec![Step {
            from_state: "PENDING".into(),
            attempt: c.attempt,
            at: warned,
            transition: warning,
        }],
    };
    // Fenced by the claim: another owner's write-back changes nothing.
    assert!(
        store
            .write_back("b", std::slice::from_ref(&applied), t0() + Span::seconds(2))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .write_back("a", &[applied], t0() + Span::seconds(2))
            .await
            .unwrap(),
        vec![c.id]
    );
    let r = store.find(&Lookup::Id(c.id)).await.unwrap().unwrap();
    assert_eq!(
        (r.state.as_str(), r.due_at, r.warned_at, r.lease_owner),
        ("WARNED", Some(until), Some(warned), None)
    );
    let events = store.history(c.id).await.unwrap();
    assert_eq!(
        common::event_path(&events),
        [
            (None, "PENDING", "enqueued"),
            (Some("PENDING"), "WARNED", "done"),
            (Some("WARNED"), "WARNED", "wait"),
        ]
    );
    let when: Vec<_> = events.iter().skip(1).map(|e| (e.attempt, e.at)).collect();
    assert_eq!(
        when,
        [(c.attempt, warned), (1, t0() + Span::seconds(2))],
        "each event keeps the attempt it ran as and when it was decided"
    );
}

async fn an_exclusion_override_is_stored_claimed_and_recorded(kind: Kind) {
    let (_db, store, graph, _) = setup(kind).await;
    let overridden = lethe::store::EnqueueOptions {
        exclusion_override: true,
    };
    store
        .enqueue_with(
            graph.initial(),
            &subjects(1, 2),
            overridden,
            "operator:a",
            t0(),
        )
        .await
        .unwrap();
    store
        .enqueue(graph.initial(), &subjects(2, 3), "operator:a", t0())
        .await
        .unwrap();
    let claimed = store.claim("d", t0(), LEASE, 10).await.unwrap();
    let flags: Vec<(String, bool)> = claimed
        .iter()
        .map(|c| (c.subject.clone(), c.exclusion_override))
        .collect();
    assert_eq!(flags, [("1".into(), true), ("2".into(), false)]);
    let one = store
        .find(&Lookup::subject("1", Some(&key())))
        .await
        .unwrap()
        .unwrap();
    assert!(one.exclusion_override);
    let history = store.history(one.id).await.unwrap();
    let detail: serde_json::Value = serde_json::from_str(&history[0].detail).unwrap();
    assert_eq!(detail["exclusion_override"], true, "{detail}");
    let two = store
        .find(&Lookup::subject("2", Some(&key())))
        .await
        .unwrap()
        .unwrap();
    assert!(!two.exclusion_override);
    let history = store.history(two.id).await.unwrap();
    assert!(!history[0].detail.contains("exclusion_override"));
}

async fn the_last_scan_and_the_migration_check_are_read_back(kind: Kind) {
    let (_db, store, _, _) = setup(kind).await;
    store
        .check_migrated()
        .await
        .expect("a migrated store passes");
    assert_eq!(store.last_scan("inactive").await.unwrap(), None);
    // Each rule's timer reads its own runs; a run from before rules counts for all.
    for (minutes, rule) in [
        (0, None),
        (30, Some("inactive")),
        (10, Some("unverified")),
        (5, Some("inactive")),
    ] {
        let at = t0() + Span::minutes(minutes);
        store
            .record_scan(&lethe::store::ScanRecord {
                started_at: at,
                finished_at: at,
                rule: rule.map(str::to_string),
                overlap: 2,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert_eq!(
        store.last_scan("inactive").await.unwrap(),
        Some(t0() + Span::minutes(30))
    );
    assert_eq!(
        store.last_scan("unverified").await.unwrap(),
        Some(t0() + Span::minutes(10))
    );
    assert_eq!(store.last_scan("other").await.unwrap(), Some(t0()));
    // A fresh database has no schema: the check says so and creates nothing.
    let fresh = TestDb::new(kind).await;
    let unmigrated = lethe::store::open(&fresh.url, 1).await.unwrap();
    let err = unmigrated.check_migrated().await.unwrap_err();
    assert!(matches!(err, StoreError::NotMigrated), "{err}");
}

/// An acknowledgement recorded while the driver holds the retirement cannot wake it (its
/// due time is the lease); the write-back of the stage's wait does, so the retirement is
/// not left until the next recheck.
async fn an_ack_during_the_claim_makes_the_wait_due_at_once(kind: Kind) {
    let (_db, store, graph, p) = setup(kind).await;
    store
        .enqueue("PENDING", &subjects(1, 3), "cli", t0())
        .await
        .unwrap();
    let claimed = store.claim("a", t0(), LEASE, 10).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
    let services = vec!["joanie".to_string()];
    store.await_acks(&ids, &services, t0()).await.unwrap();
    let acked_at = t0() + Span::seconds(1);
    let recorded = store
        .acknowledge(ids[0], "joanie", "api:joanie", acked_at)
        .await
        .unwrap();
    assert_eq!(recorded, lethe::store::AckResult::Recorded);
    let now = t0() + Span::seconds(2);
    let wait = Outcome::Wait {
        until: t0() + Span::hours(1),
        why: "awaiting joanie".into(),
    };
    let written = apply(store.as_ref(), &graph, &p, "a", &claimed, wait, now).await;
    assert_eq!(written.len(), 2);
    let woken = store.find(&Lookup::Id(ids[0])).await.unwrap().unwrap();
    assert_eq!(woken.due_at, Some(now), "acknowledged during the claim");
    let waiting = store.find(&Lookup::Id(ids[1])).await.unwrap().unwrap();
    assert_eq!(waiting.due_at, Some(t0() + Span::hours(1)), "nothing new");
}
