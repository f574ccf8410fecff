//! The notify stage through the driver on a real store (both backends): signed webhooks a
//! receiver verifies with the `standardwebhooks` library, acknowledgements to COMPLETE
//! with the PII erased, an ack deadline that expires naming the missing services, and
//! acks refused for what is not awaited.

mod common;

use chrono::Duration as Span;
use common::{Kind, TestDb, config, key, subjects};
use lethe::clock::ManualClock;
use lethe::driver::Driver;
use lethe::ops::{AckError, Acked};
use lethe::store::{Lookup, Store};
use std::sync::Arc;
use tokio::sync::watch;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

per_backend!(
    services_are_notified_signed_and_acks_complete_the_retirement,
    a_missing_ack_past_its_deadline_fails_naming_the_services,
    a_failing_webhook_is_retried_and_never_shows_the_address,
);

fn never() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    std::mem::forget(tx);
    rx
}

/// Noop stages up to NOTIFIED, then notify: joanie (webhook to `hook`), ashley (pull only).
fn pipeline_text(hook: &str) -> String {
    let mut text = String::from(
        "[policy]\nmax_attempts = 3\nretry_base = \"1m\"\nretry_cap = \"1h\"\n[driver]\n",
    );
    for state in ["PENDING", "WARNED", "RETIRING_EDX", "RETIRING_SARBACANE"] {
        text.push_str(&format!(
            "[[stage]]\nstate = \"{state}\"\nhandler = \"noop\"\n"
        ));
    }
    text.push_str(&format!(
        "[[stage]]\nstate = \"NOTIFIED\"\nhandler = \"notify\"\nservices = [\"joanie\", \"ashley\"]\n\
         retry_delay = \"1ms\"\nack_url = \"https://lethe.example.org\"\n\
         [[service]]\nname = \"joanie\"\nwebhook_url = \"{hook}/hook\"\nack_deadline = \"30d\"\n\
         [[service]]\nname = \"ashley\"\nack_deadline = \"30d\"\n"
    ));
    text
}

struct Setup {
    _db: TestDb,
    store: Arc<dyn Store>,
    pipeline: lethe::config::Pipeline,
    graph: lethe::domain::StateGraph,
    clock: Arc<ManualClock>,
    driver: Arc<Driver>,
    ids: Vec<i64>,
}

async fn setup(kind: Kind, hook: &MockServer, users: u32) -> Setup {
    let db = TestDb::new(kind).await;
    let (graph, mut pipeline) = config(&pipeline_text(&hook.uri()));
    pipeline
        .apply_env(&|var| (var == "LETHE_SERVICE_JOANIE_SECRET").then(|| SECRET.to_string()))
        .unwrap();
    let store = db.store(&graph).await;
    // Webhook timestamps must be near the receiver's clock: start from now.
    let clock = Arc::new(ManualClock::new(lethe::domain::truncate_micros(
        chrono::Utc::now(),
    )));
    let handlers = lethe::stages::build_from(lethe::stages::BuildContext {
        pipeline: &pipeline,
        clock: clock.clone(),
        store: Some(store.clone()),
    })
    .await
    .unwrap();
    // Requested: no notice is owed, so the hold in front of notify lets them through.
    let requested: Vec<_> = subjects(1, users + 1)
        .into_iter()
        .map(|mut n| {
            n.reason = "requested".into();
            n
        })
        .collect();
    let ids = store
        .enqueue("PENDING", &requested, "test", clock.now())
        .await
        .unwrap()
        .into_iter()
        .map(|o| match o {
            lethe::store::EnqueueOutcome::Created(id) => id,
            other => panic!("{other:?}"),
        })
        .collect();
    let driver = Arc::new(Driver::new(
        store.clone(),
        graph.clone(),
        pipeline.policy.clone(),
        pipeline.driver.clone(),
        handlers,
        "test".into(),
        clock.clone(),
    ));
    Setup {
        _db: db,
        store,
        pipeline,
        graph,
        clock,
        driver,
        ids,
    }
}

use lethe::clock::Clock as _;

async fn state(store: &dyn Store, id: i64) -> lethe::store::Retirement {
    store.find(&Lookup::Id(id)).await.unwrap().unwrap()
}

async fn services_are_notified_signed_and_acks_complete_the_retirement(kind: Kind) {
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&hook)
        .await;
    let s = setup(kind, &hook, 2).await;
    s.driver.run_once(never()).await.unwrap();
    for id in &s.ids {
        let r = state(s.store.as_ref(), *id).await;
        assert_eq!(r.state, "NOTIFIED", "{r:?}");
        let acks = s.store.acks(*id).await.unwrap();
        let names: Vec<(&str, bool, bool)> = acks
            .iter()
            .map(|a| (a.service.as_str(), a.acked, a.notified_at.is_some()))
            .collect();
        assert_eq!(names, [("ashley", false, false), ("joanie", false, true)]);
    }
    // Each webhook verifies as a receiver checks it, and not once tampered with.
    let received = hook.received_requests().await.unwrap();
    assert_eq!(received.len(), 2);
    let webhook = standardwebhooks::Webhook::new(SECRET).unwrap();
    for request in &received {
        webhook.verify(&request.body, &request.headers).unwrap();
        let mut tampered = request.body.clone();
        tampered[10] ^= 1;
        assert!(webhook.verify(&tampered, &request.headers).is_err());
        let mut old = request.headers.clone();
        let ts: i64 = old["webhook-timestamp"].to_str().unwrap().parse().unwrap();
        old.insert(
            "webhook-timestamp",
            (ts - 3600).to_string().parse().unwrap(),
        );
        assert!(webhook.verify(&request.body, &old).is_err());
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let data = &body["data"];
        assert_eq!(data["service"], "joanie");
        assert!(data["email"].as_str().unwrap().ends_with("@example.org"));
        let id = data["retirement_id"].as_i64().unwrap();
        assert_eq!(
            data["ack_url"],
            format!("https://lethe.example.org/v1/users/{id}/status/joanie")
        );
    }
    // Looked at again later: the delivered webhook is not sent again.
    s.clock.advance(Span::hours(2));
    s.driver.run_once(never()).await.unwrap();
    assert_eq!(hook.received_requests().await.unwrap().len(), 2);

    let now = s.clock.now();
    let first = format!("#{}", s.ids[0]);
    let ack = |service: &'static str, target: String| {
        let (store, pipeline) = (s.store.clone(), s.pipeline.clone());
        async move {
            lethe::ops::ack(
                store.as_ref(),
                &pipeline,
                &target,
                Some(&key()),
                service,
                "alice",
                now,
            )
            .await
        }
    };
    assert_eq!(
        ack("joanie", first.clone()).await.unwrap(),
        Acked::Recorded(s.ids[0])
    );
    assert_eq!(
        ack("joanie", first.clone()).await.unwrap(),
        Acked::Already(s.ids[0], now)
    );
    // By email, as an operator would type it.
    assert_eq!(
        ack("ashley", "user1@example.org".into()).await.unwrap(),
        Acked::Recorded(s.ids[0])
    );
    assert!(matches!(
        ack("crm", first.clone()).await,
        Err(AckError::UnknownService { .. })
    ));
    s.driver.run_once(never()).await.unwrap();
    let done = state(s.store.as_ref(), s.ids[0]).await;
    assert_eq!(done.state, "COMPLETE");
    assert_eq!(done.subject, None, "PII erased at the end");
    let events = s.store.history(s.ids[0]).await.unwrap();
    let acks: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.outcome == "ack")
        .map(|e| (e.actor.as_str(), e.detail.as_str()))
        .collect();
    assert_eq!(
        acks,
        [
            ("alice", r#"{"service":"joanie"}"#),
            ("alice", r#"{"service":"ashley"}"#)
        ]
    );
    // The other one still waits for both; an ack after the end is refused.
    assert_eq!(state(s.store.as_ref(), s.ids[1]).await.state, "NOTIFIED");
    assert!(matches!(
        ack("joanie", first).await,
        Err(AckError::NotAwaiting { .. })
    ));
}

async fn a_missing_ack_past_its_deadline_fails_naming_the_services(kind: Kind) {
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hook)
        .await;
    let s = setup(kind, &hook, 1).await;
    s.driver.run_once(never()).await.unwrap();
    let now = s.clock.now();
    lethe::ops::ack(
        s.store.as_ref(),
        &s.pipeline,
        &format!("#{}", s.ids[0]),
        None,
        "ashley",
        "bob",
        now,
    )
    .await
    .unwrap();
    s.clock.advance(Span::days(29));
    s.driver.run_once(never()).await.unwrap();
    assert_eq!(state(s.store.as_ref(), s.ids[0]).await.state, "NOTIFIED");
    s.clock.advance(Span::days(1));
    s.driver.run_once(never()).await.unwrap();
    let r = state(s.store.as_ref(), s.ids[0]).await;
    assert_eq!(r.state, "ERRORED");
    assert_eq!(
        r.last_error.as_deref(),
        Some("joanie did not acknowledge within 30d (still missing: joanie)")
    );
    // A late ack still counts while errored; the operator resumes and it completes.
    let target = format!("#{}", s.ids[0]);
    let now = s.clock.now();
    lethe::ops::ack(
        s.store.as_ref(),
        &s.pipeline,
        &target,
        None,
        "joanie",
        "bob",
        now,
    )
    .await
    .unwrap();
    lethe::ops::operate(
        s.store.as_ref(),
        &s.graph,
        &target,
        None,
        &lethe::domain::OperatorAction::Resume { to: None },
        "bob",
        now,
    )
    .await
    .unwrap();
    s.driver.run_once(never()).await.unwrap();
    assert_eq!(state(s.store.as_ref(), s.ids[0]).await.state, "COMPLETE");
}

async fn a_failing_webhook_is_retried_and_never_shows_the_address(kind: Kind) {
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(serde_json::json!({"message": "cannot find user1@example.org"})),
        )
        .mount(&hook)
        .await;
    let s = setup(kind, &hook, 1).await;
    s.driver.run_once(never()).await.unwrap();
    let r = state(s.store.as_ref(), s.ids[0]).await;
    assert_eq!(r.state, "NOTIFIED");
    assert_eq!(
        r.last_error.as_deref(),
        Some("webhook to joanie: HTTP 500: cannot find <redacted>")
    );
    assert!(
        s.store.acks(s.ids[0]).await.unwrap()[1]
            .notified_at
            .is_none()
    );
}
