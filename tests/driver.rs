//! The driver against real stores: outcomes, retries, crash recovery, several daemons,
//! wake-ups and graceful shutdown.

mod common;

use async_trait::async_trait;
use chrono::Duration as Span;
use common::{Kind, TestDb, config, noop_pipeline, subjects, t0};
use lethe::clock::{Clock, ManualClock, SystemClock};
use lethe::config::NoopSettings;
use lethe::domain::{Outcome, StageResult};
use lethe::driver::Driver;
use lethe::stages::{BatchError, Handler, Handlers, NoopHandler};
use lethe::store::{Claimed, Lookup, Store};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Answers by subject id in PENDING; `Done` for anything not scripted or whose wait is over.
struct Scripted(HashMap<String, Outcome>, Arc<ManualClock>);

#[async_trait]
impl Handler for Scripted {
    async fn handle(&self, batch: &[Claimed]) -> Result<HashMap<i64, StageResult>, BatchError> {
        Ok(batch
            .iter()
            .map(|c| {
                let outcome = match self.0.get(&c.subject).cloned() {
                    Some(Outcome::Wait { until, .. }) if self.1.now() >= until => Outcome::Done,
                    Some(outcome) => outcome,
                    None => Outcome::Done,
                };
                (c.id, StageResult::new(outcome))
            })
            .collect())
    }
}

fn never() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    std::mem::forget(tx);
    rx
}

fn driver(
    store: Arc<dyn Store>,
    pipeline_text: &str,
    owner: &str,
    clock: Arc<dyn Clock>,
    replace: Vec<(&str, Arc<dyn Handler>)>,
) -> Arc<Driver> {
    let (graph, pipeline) = config(pipeline_text);
    let mut handlers: Handlers = pipeline
        .stages
        .iter()
        .map(|s| {
            let noop: Arc<dyn Handler> = Arc::new(NoopHandler::new(NoopSettings::default()));
            (s.state.clone(), noop)
        })
        .collect();
    for (state, handler) in replace {
        handlers.insert(state.to_string(), handler);
    }
    Arc::new(Driver::new(
        store,
        graph,
        pipeline.policy.clone(),
        pipeline.driver.clone(),
        handlers,
        owner.to_string(),
        clock,
    ))
}

/// A fresh store of `kind` for `text`, with subjects `from..to` enqueued in PENDING now.
async fn seeded(kind: Kind, text: &str, from: u32, to: u32) -> (TestDb, Arc<dyn Store>) {
    let db = TestDb::new(kind).await;
    let (graph, _) = config(text);
    let store = db.store(&graph).await;
    store
        .enqueue("PENDING", &subjects(from, to), "cli", chrono::Utc::now())
        .await
        .unwrap();
    (db, store)
}

async fn state_of(store: &dyn Store, subject: &str) -> lethe::store::Retirement {
    store
        .find(&Lookup::subject(subject, Some(&common::key())))
        .await
        .unwrap()
        .unwrap()
}

per_backend!(
    run_once_moves_everything_through_the_pipeline,
    every_outcome_is_applied_with_its_event,
    lost_leases_do_not_use_up_attempts,
    past_the_crash_guard_the_retirement_is_errored,
    failures_still_count_toward_max_attempts,
    paused_policy_claims_nothing,
);

async fn run_once_moves_everything_through_the_pipeline(kind: Kind) {
    let db = TestDb::new(kind).await;
    let text = noop_pipeline("", "batch_size = 50\nconcurrency = 3");
    let (graph, _) = config(&text);
    let store = db.store(&graph).await;
    store
        .enqueue("PENDING", &subjects(0, 300), "cli", t0())
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(t0()));
    let done = |state| {
        lethe::metrics::counter(
            "lethe_transitions_total",
            &[("stage", state), ("outcome", "done")],
        )
    };
    let before = done("NOTIFIED");
    let report = driver(store.clone(), &text, "d1", clock, vec![])
        .run_once(never())
        .await
        .unwrap();
    assert_eq!(report.applied, 1500);
    // The metrics move with the work (other tests of this binary may add to them too).
    assert!(done("NOTIFIED") >= before + 300, "every last stage counted");
    assert_eq!(report.lost, 0);
    assert_eq!(report.outcomes.get("done"), Some(&1500));
    assert_eq!(
        store.stats().await.unwrap(),
        vec![("COMPLETE".to_string(), 300)]
    );
}

async fn every_outcome_is_applied_with_its_event(kind: Kind) {
    let db = TestDb::new(kind).await;
    let text = noop_pipeline("", "");
    let (graph, _) = config(&text);
    let store = db.store(&graph).await;
    store
        .enqueue("PENDING", &subjects(1, 6), "cli", t0())
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(t0()));
    let script = Scripted(
        HashMap::from([
            (
                "1".to_string(),
                Outcome::Retry {
                    error: "smtp 451".into(),
                },
            ),
            (
                "2".to_string(),
                Outcome::Fail {
                    error: "smtp 550 no such user".into(),
                },
            ),
            (
                "3".to_string(),
                Outcome::Cancel {
                    why: "active again".into(),
                },
            ),
            (
                "4".to_string(),
                Outcome::Wait {
                    until: t0() + Span::days(30),
                    why: "grace".into(),
                },
            ),
        ]),
        clock.clone(),
    );
    let d = driver(
        store.clone(),
        &text,
        "d1",
        clock.clone(),
        vec![("PENDING", Arc::new(script))],
    );
    d.run_once(never()).await.unwrap();
    assert_eq!(state_of(store.as_ref(), "1").await.state, "PENDING");
    assert_eq!(state_of(store.as_ref(), "2").await.state, "ERRORED");
    assert_eq!(state_of(store.as_ref(), "3").await.state, "ABORTED");
    assert_eq!(state_of(store.as_ref(), "4").await.state, "PENDING");
    assert_eq!(state_of(store.as_ref(), "5").await.state, "COMPLETE");

    // The retry comes back after its backoff, twice more, then parks.
    for _ in 0..2 {
        clock.advance(Span::hours(1));
        d.run_once(never()).await.unwrap();
    }
    let one = state_of(store.as_ref(), "1").await;
    assert_eq!(one.state, "ERRORED");
    assert_eq!(one.last_error.as_deref(), Some("smtp 451"));
    let outcomes: Vec<String> = store
        .history(one.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.outcome)
        .collect();
    assert_eq!(outcomes, ["enqueued", "retry", "retry", "fail"]);

    // The wait is not due before its time, then goes on.
    assert_eq!(state_of(store.as_ref(), "4").await.state, "PENDING");
    clock.advance(Span::days(30));
    d.run_once(never()).await.unwrap();
    assert_eq!(state_of(store.as_ref(), "4").await.state, "COMPLETE");
}

/// `owners` claim subject 1 one after the other and die, each lease expiring; returns
/// the time after the last expiry.
async fn crash(
    store: &dyn Store,
    owners: usize,
    mut now: chrono::DateTime<chrono::Utc>,
) -> chrono::DateTime<chrono::Utc> {
    for n in 0..owners {
        let claimed = store
            .claim(&format!("dead{n}"), now, Duration::from_secs(60), 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        now += Span::minutes(2);
    }
    now
}

async fn lost_leases_do_not_use_up_attempts(kind: Kind) {
    // max_attempts = 3; the crash guard defaults to 3 x 3.
    let text = noop_pipeline("", "lease = \"1m\"");
    let (_db, store) = seeded(kind, &text, 1, 2).await;
    let now = crash(store.as_ref(), 8, chrono::Utc::now()).await;
    let clock = Arc::new(ManualClock::new(now));
    driver(store.clone(), &text, "d1", clock, vec![])
        .run_once(never())
        .await
        .unwrap();
    assert_eq!(state_of(store.as_ref(), "1").await.state, "COMPLETE");
}

async fn past_the_crash_guard_the_retirement_is_errored(kind: Kind) {
    let text = noop_pipeline("", "lease = \"1m\"\nmax_lost_leases = 4");
    let (_db, store) = seeded(kind, &text, 1, 2).await;
    let now = crash(store.as_ref(), 4, chrono::Utc::now()).await;
    let clock = Arc::new(ManualClock::new(now));
    driver(store.clone(), &text, "d1", clock, vec![])
        .run_once(never())
        .await
        .unwrap();
    let r = state_of(store.as_ref(), "1").await;
    assert_eq!(r.state, "ERRORED");
    let error = r.last_error.unwrap();
    assert!(
        error.contains("crash guard (driver.max_lost_leases = 4)"),
        "{error}"
    );
    let events = store.history(r.id).await.unwrap();
    let fail = events.last().unwrap();
    assert_eq!(fail.outcome, "fail");
    assert!(
        fail.detail.contains(r#""guard":"driver.max_lost_leases""#),
        "{}",
        fail.detail
    );
}

async fn failures_still_count_toward_max_attempts(kind: Kind) {
    let text = noop_pipeline("", "lease = \"1m\"");
    let (_db, store) = seeded(kind, &text, 1, 2).await;
    let clock = Arc::new(ManualClock::new(
        crash(store.as_ref(), 2, chrono::Utc::now()).await,
    ));
    let failing = Scripted(
        HashMap::from([(
            "1".to_string(),
            Outcome::Retry {
                error: "smtp 451".into(),
            },
        )]),
        clock.clone(),
    );
    let d = driver(
        store.clone(),
        &text,
        "d1",
        clock.clone(),
        vec![("PENDING", Arc::new(failing))],
    );
    // Two lost claims, then a crash between each failure: errored at the third failure.
    for round in 1..=3 {
        d.run_once(never()).await.unwrap();
        let r = state_of(store.as_ref(), "1").await;
        match round {
            3 => assert_eq!(r.state, "ERRORED", "{r:?}"),
            _ => assert_eq!((r.state.as_str(), r.attempt), ("PENDING", round), "{r:?}"),
        }
        if round < 3 {
            clock.set(crash(store.as_ref(), 1, clock.now() + Span::hours(2)).await);
        }
    }
    let r = state_of(store.as_ref(), "1").await;
    let events = store.history(r.id).await.unwrap();
    let outcomes: Vec<&str> = events.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["enqueued", "retry", "retry", "fail"]);
    assert!(
        events[3]
            .detail
            .contains(r#""guard":"policy.max_attempts""#),
        "{}",
        events[3].detail
    );
}

async fn paused_policy_claims_nothing(kind: Kind) {
    let db = TestDb::new(kind).await;
    let text = noop_pipeline("paused = true", "");
    let (graph, _) = config(&text);
    let store = db.store(&graph).await;
    store
        .enqueue("PENDING", &subjects(1, 3), "cli", t0())
        .await
        .unwrap();
    let report = driver(
        store.clone(),
        &text,
        "d1",
        Arc::new(ManualClock::new(t0())),
        vec![],
    )
    .run_once(never())
    .await
    .unwrap();
    assert_eq!(report.claimed, 0);
    assert_eq!(
        store.stats().await.unwrap(),
        vec![("PENDING".to_string(), 2)]
    );
}

/// Sleeps a little per batch so that two drivers interleave.
struct Jittery;

#[async_trait]
impl Handler for Jittery {
    async fn handle(&self, batch: &[Claimed]) -> Result<HashMap<i64, StageResult>, BatchError> {
        tokio::time::sleep(Duration::from_micros((batch[0].id % 7) as u64 * 300)).await;
        Ok(batch.iter().map(|c| (c.id, Outcome::Done.into())).collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_drivers_on_one_postgres_store_apply_each_transition_exactly_once() {
    let text = noop_pipeline("", "batch_size = 200\nconcurrency = 2");
    let (db, store) = seeded(Kind::Postgres, &text, 0, 10_000).await;
    let a = driver(
        store.clone(),
        &text,
        "driver-a",
        Arc::new(SystemClock),
        vec![("WARNED", Arc::new(Jittery))],
    );
    let b = driver(
        store.clone(),
        &text,
        "driver-b",
        Arc::new(SystemClock),
        vec![("WARNED", Arc::new(Jittery))],
    );
    let (ra, rb) = tokio::join!(a.run_once(never()), b.run_once(never()));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.applied + rb.applied, 50_000);
    assert!(
        ra.applied > 0 && rb.applied > 0,
        "both drivers worked: {ra:?} {rb:?}"
    );

    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let duplicates: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT retirement_id, from_state FROM retirement_event \
         WHERE outcome = 'done' GROUP BY 1, 2 HAVING COUNT(*) <> 1) d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(duplicates, 0);
    let done: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM retirement_event WHERE outcome = 'done'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(done, 50_000);
    let per_retirement: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT retirement_id FROM retirement_event WHERE outcome = 'done' \
         GROUP BY 1 HAVING COUNT(DISTINCT from_state) = 5) r",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(per_retirement, 10_000);
    assert_eq!(
        store.stats().await.unwrap(),
        vec![("COMPLETE".to_string(), 10_000)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_an_idle_postgres_driver() {
    let db = TestDb::new(Kind::Postgres).await;
    // Polling alone would take a minute: only the NOTIFY can make this quick.
    let text = noop_pipeline("", "poll_interval = \"60s\"");
    let (graph, _) = config(&text);
    let store = db.store(&graph).await;
    let d = driver(store.clone(), &text, "d1", Arc::new(SystemClock), vec![]);
    let (stop, shutdown) = watch::channel(false);
    let running = tokio::spawn({
        let d = d.clone();
        async move { d.run(shutdown).await }
    });
    // Let the driver reach its idle wait: the listener is subscribed before the first claim.
    tokio::time::sleep(Duration::from_millis(300)).await;
    store
        .enqueue("PENDING", &subjects(1, 2), "cli", chrono::Utc::now())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if state_of(store.as_ref(), "1").await.state == "COMPLETE" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the wake-up never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    let report = running.await.unwrap().unwrap();
    assert_eq!(report.applied, 5);
}

/// Works longer than the lease.
struct Slow(Duration);

#[async_trait]
impl Handler for Slow {
    async fn handle(&self, batch: &[Claimed]) -> Result<HashMap<i64, StageResult>, BatchError> {
        tokio::time::sleep(self.0).await;
        Ok(batch.iter().map(|c| (c.id, Outcome::Done.into())).collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_handlers_keep_their_lease() {
    let text = noop_pipeline("", "lease = \"2s\"");
    let (_db, store) = seeded(Kind::Sqlite, &text, 1, 4).await;
    // The handler's work takes 2.5 leases; renewals every third of a lease keep it
    // (a lease of 2s leaves room for a loaded CI machine).
    let slow = driver(
        store.clone(),
        &text,
        "slow",
        Arc::new(SystemClock),
        vec![("PENDING", Arc::new(Slow(Duration::from_millis(5000))))],
    );
    let running = tokio::spawn({
        let slow = slow.clone();
        async move { slow.run_once(never()).await }
    });
    while state_of(store.as_ref(), "1").await.lease_owner.is_none() {
        tokio::task::yield_now().await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut stolen = 0;
    while tokio::time::Instant::now() < deadline {
        stolen += store
            .claim("thief", chrono::Utc::now(), Duration::from_secs(60), 10)
            .await
            .unwrap()
            .len();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = running.await.unwrap().unwrap();
    assert_eq!(stolen, 0, "no other driver could claim a renewed lease");
    assert_eq!(report.lost, 0);
    assert_eq!(report.applied, 15);
}

/// A quick stage that never finishes, and says when it was entered.
struct Stuck(Arc<tokio::sync::Notify>);

#[async_trait]
impl Handler for Stuck {
    async fn handle(&self, _: &[Claimed]) -> Result<HashMap<i64, StageResult>, BatchError> {
        self.0.notify_one();
        std::future::pending().await
    }

    fn quick(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_writes_carried_outcomes_before_releasing_the_batch() {
    let text = noop_pipeline("", "shutdown_grace = \"200ms\"");
    let (_db, store) = seeded(Kind::Sqlite, &text, 1, 4).await;
    // PENDING is Done at once and carried into WARNED, whose quick stage never returns.
    let entered = Arc::new(tokio::sync::Notify::new());
    let d = driver(
        store.clone(),
        &text,
        "d",
        Arc::new(SystemClock),
        vec![("WARNED", Arc::new(Stuck(entered.clone())))],
    );
    let (stop, shutdown) = watch::channel(false);
    let running = tokio::spawn({
        let d = d.clone();
        async move { d.run(shutdown).await }
    });
    entered.notified().await;
    stop.send(true).unwrap();
    let report = running.await.unwrap().unwrap();
    assert_eq!((report.applied, report.released), (3, 3), "{report:?}");
    for subject in ["1", "2", "3"] {
        let r = state_of(store.as_ref(), subject).await;
        assert_eq!(
            (r.state.as_str(), r.attempt, r.lease_owner),
            ("WARNED", 0, None),
            "the PENDING outcome is recorded and WARNED is free to claim again"
        );
        let events = store.history(r.id).await.unwrap();
        assert_eq!(
            common::event_path(&events),
            [
                (None, "PENDING", "enqueued"),
                (Some("PENDING"), "WARNED", "done")
            ]
        );
    }
}

/// Says, on its first run, whether subject 1's PENDING outcome was already written.
struct Probe(Arc<dyn Store>, Arc<std::sync::Mutex<Option<bool>>>);

#[async_trait]
impl Handler for Probe {
    async fn handle(&self, batch: &[Claimed]) -> Result<HashMap<i64, StageResult>, BatchError> {
        let one = state_of(self.0.as_ref(), "1").await;
        let events = self.0.history(one.id).await.unwrap();
        let written = events
            .iter()
            .any(|e| e.from_state.as_deref() == Some("PENDING"));
        self.1.lock().unwrap().get_or_insert(written);
        Ok(batch.iter().map(|c| (c.id, Outcome::Done.into())).collect())
    }
}

/// A quick stage that is Done at once.
struct QuickDone;

#[async_trait]
impl Handler for QuickDone {
    async fn handle(&self, batch: &[Claimed]) -> Result<HashMap<i64, StageResult>, BatchError> {
        Ok(batch.iter().map(|c| (c.id, Outcome::Done.into())).collect())
    }

    fn quick(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_with_a_slow_stage_writes_outcomes_before_it_runs() {
    // Subject 1 goes PENDING -> WARNED (quick) while subject 2, in the same batch, goes
    // WARNED -> RETIRING_EDX (slow): nothing may wait unwritten behind the slow stage.
    let text = noop_pipeline("", "");
    let (_db, store) = seeded(Kind::Sqlite, &text, 1, 2).await;
    store
        .enqueue("WARNED", &subjects(2, 3), "cli", chrono::Utc::now())
        .await
        .unwrap();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let d = driver(
        store.clone(),
        &text,
        "d",
        Arc::new(SystemClock),
        vec![
            ("WARNED", Arc::new(QuickDone)),
            ("RETIRING_EDX", Arc::new(Probe(store.clone(), seen.clone()))),
        ],
    );
    let report = d.run_once(never()).await.unwrap();
    assert_eq!(report.claimed, 2, "one batch: {report:?}");
    assert_eq!(*seen.lock().unwrap(), Some(true));
    assert_eq!(state_of(store.as_ref(), "1").await.state, "COMPLETE");
}

/// Hands the first half of its batch over as Done at once, then never finishes.
struct HalfThenStuck;

#[async_trait]
impl Handler for HalfThenStuck {
    async fn handle(&self, _: &[Claimed]) -> Result<HashMap<i64, StageResult>, BatchError> {
        std::future::pending().await
    }

    async fn handle_reporting(
        &self,
        batch: &[Claimed],
        reporter: &lethe::stages::Reporter,
    ) -> Result<HashMap<i64, StageResult>, BatchError> {
        for c in &batch[..batch.len() / 2] {
            reporter.report(c.id, Outcome::Done.into()).ok();
        }
        std::future::pending().await
    }
}

/// A quick stage that waits a day.
struct QuickWait;

#[async_trait]
impl Handler for QuickWait {
    async fn handle(&self, batch: &[Claimed]) -> Result<HashMap<i64, StageResult>, BatchError> {
        let until = chrono::Utc::now() + Span::days(1);
        let wait = Outcome::Wait {
            until,
            why: "grace".into(),
        };
        Ok(batch.iter().map(|c| (c.id, wait.clone().into())).collect())
    }

    fn quick(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_handed_over_early_are_written_while_the_batch_runs() {
    let text = noop_pipeline("", "shutdown_grace = \"200ms\"");
    let (_db, store) = seeded(Kind::Sqlite, &text, 1, 5).await;
    let d = driver(
        store.clone(),
        &text,
        "d",
        Arc::new(SystemClock),
        vec![
            ("PENDING", Arc::new(HalfThenStuck)),
            ("WARNED", Arc::new(QuickWait)),
        ],
    );
    let (stop, shutdown) = watch::channel(false);
    let running = tokio::spawn({
        let d = d.clone();
        async move { d.run(shutdown).await }
    });
    // Within a flush window, while the handler still runs, subjects 1 and 2 are recorded,
    // carried into the quick stage and written with its outcome, their lease let go.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while state_of(store.as_ref(), "2").await.state != "WARNED" {
        assert!(tokio::time::Instant::now() < deadline, "never written");
        tokio::task::yield_now().await;
    }
    for subject in ["1", "2"] {
        let r = state_of(store.as_ref(), subject).await;
        assert_eq!((r.state.as_str(), r.lease_owner), ("WARNED", None));
    }
    let r = state_of(store.as_ref(), "3").await;
    assert_eq!(
        (r.state.as_str(), r.lease_owner.as_deref()),
        ("PENDING", Some("d"))
    );
    // A shutdown releases the rest; what was written early is not written again.
    stop.send(true).unwrap();
    let report = running.await.unwrap().unwrap();
    assert_eq!((report.applied, report.released), (4, 2), "{report:?}");
    for subject in ["1", "2"] {
        let r = state_of(store.as_ref(), subject).await;
        let events = store.history(r.id).await.unwrap();
        assert_eq!(
            common::event_path(&events),
            [
                (None, "PENDING", "enqueued"),
                (Some("PENDING"), "WARNED", "done"),
                (Some("WARNED"), "WARNED", "wait")
            ]
        );
    }
    for subject in ["3", "4"] {
        let r = state_of(store.as_ref(), subject).await;
        assert_eq!(
            (r.state.as_str(), r.attempt, r.lease_owner),
            ("PENDING", 0, None)
        );
    }
}
