//! The console in a real browser: headless Chromium over WebDriver against the server on
//! a TCP port. Sign in, see the dashboard's counts match the store, resume an errored
//! retirement from the queue and see it move, look up a retired email and read its
//! timeline. Screenshots of each page go to target/console/ (for people to look at; the
//! test asserts on the pages themselves).

mod common;

use common::browser::Browser;
use common::{Kind, TestDb, config, subjects};
use lethe::clock::{Clock, SystemClock};
use lethe::store::{EnqueueOutcome, Lookup};
use std::path::PathBuf;
use std::sync::Arc;

const KEYS: [(&str, &str, &str); 2] = [
    ("dpo", "auditor", "key-dpo"),
    ("ops", "operator", "key-ops"),
];

fn shot(name: &str) -> PathBuf {
    common::repo_root()
        .join("target")
        .join("console")
        .join(format!("{name}.png"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_resumes_from_the_queue_and_looks_up_a_retired_email() {
    let db = TestDb::new(Kind::Postgres).await;
    let text = format!(
        "[api]\nlisten = \"127.0.0.1:0\"\n{}{}",
        common::api_keys(&KEYS),
        common::SERVICE_STAGES
    );
    let (graph, pipeline) = config(&text);
    let store = db.store(&graph).await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ids: Vec<i64> = store
        .enqueue("PENDING", &subjects(1, 13), "test", clock.now())
        .await
        .unwrap()
        .into_iter()
        .map(|o| match o {
            EnqueueOutcome::Created(id) => id,
            other => panic!("{other:?}"),
        })
        .collect();
    common::history::errored(
        &db.url,
        ids[0],
        "RETIRING_EDX",
        "target edx: lock wait timeout",
    )
    .await;
    common::history::errored(
        &db.url,
        ids[1],
        "RETIRING_SARBACANE",
        "sarbacane: 503 Service Unavailable",
    )
    .await;
    common::history::retired(store.as_ref(), &db.url, ids[2], clock.now()).await;
    // Three weeks of history behind today's, so the chart has something to show.
    let mut past = Vec::new();
    for back in 1..=21i64 {
        let at = (clock.now() - chrono::Duration::days(back)).to_rfc3339();
        let id = ids[3 + (back % 9) as usize];
        let mut outcomes = vec!["done"; ((back * 7) % 13 + 2) as usize];
        if back % 5 == 0 {
            outcomes.push("cancel");
        }
        if back % 7 == 0 {
            outcomes.push("fail");
        }
        for outcome in outcomes {
            past.push(format!(
                "INSERT INTO retirement_event (retirement_id, at, actor, from_state, to_state, outcome, attempt, detail) \
                 VALUES ({id}, '{at}', 'driver:test', 'PENDING', 'PENDING', '{outcome}', 1, '{{}}')"
            ));
        }
    }
    common::exec(&db.url, &past).await;
    for (back, refused) in [
        (2, None),
        (
            1,
            Some("2400 new retirements exceed max_new_per_scan = 1000"),
        ),
    ] {
        let at = clock.now() - chrono::Duration::days(back);
        let scan = lethe::store::ScanRecord {
            started_at: at,
            finished_at: at,
            seen: 120_000,
            inactive: if refused.is_some() { 2400 } else { 12 },
            enqueued: if refused.is_some() { 0 } else { 12 },
            refused: refused.map(str::to_string),
            rule: Some("inactive".into()),
            ..Default::default()
        };
        store.record_scan(&scan).await.unwrap();
    }
    let pipeline = Arc::new(pipeline);
    let api = Arc::new(
        lethe::api::ApiState::new(
            store.clone(),
            pipeline.clone(),
            graph.clone(),
            clock.clone(),
        )
        .with_hash_key(Some(common::key())),
    );
    let console = Arc::new(
        lethe::console::ConsoleState::new(store.clone(), pipeline, graph.clone(), clock)
            .with_hash_key(Some(common::key()))
            .with_driver(true),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(lethe::api::serve(
        listener,
        api,
        lethe::console::router(console),
        async {
            let _ = stopped.await;
        },
    ));

    let browser = Browser::start().await.unwrap();
    // Signed out, the console sends the browser to the sign-in page.
    browser.goto(&format!("{base}/ui")).await.unwrap();
    assert!(browser.current_url().await.unwrap().ends_with("/ui/signin"));
    browser.screenshot(&shot("signin")).await.unwrap();
    let key = browser.find("input#key").await.unwrap();
    browser.type_into(&key, "key-ops").await.unwrap();
    let submit = browser.find("form button[type=submit]").await.unwrap();
    browser.click(&submit).await.unwrap();
    if let Err(e) = browser.wait_for_url("/ui").await {
        panic!("{e}: {}", browser.source().await.unwrap());
    }
    let cookies = browser.cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|c| c["name"] == "lethe_session")
        .expect("a session cookie");
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Strict");

    // The dashboard's counts are the store's.
    for (state, n) in lethe::ops::stats(store.as_ref(), Some(&graph))
        .await
        .unwrap()
    {
        let card = browser
            .find(&format!("li[data-state=\"{state}\"] .n"))
            .await
            .unwrap();
        assert_eq!(browser.text(&card).await.unwrap(), n.to_string(), "{state}");
    }
    let who = browser.find("nav .who").await.unwrap();
    assert!(browser.text(&who).await.unwrap().contains("ops"));
    browser.set_window_size(1280, 1480).await.unwrap();
    browser.screenshot(&shot("dashboard")).await.unwrap();
    browser.set_window_size(390, 844).await.unwrap();
    browser.screenshot(&shot("dashboard-phone")).await.unwrap();
    browser.set_window_size(1280, 1000).await.unwrap();

    // The errored queue: resume the first, confirm, see it move.
    let first = store.find(&Lookup::Id(ids[0])).await.unwrap().unwrap();
    browser.goto(&format!("{base}/ui/errored")).await.unwrap();
    assert_eq!(browser.find_all("tbody tr").await.unwrap().len(), 2);
    browser.screenshot(&shot("errored")).await.unwrap();
    let resume = browser
        .find(&format!(
            "tr[data-id=\"{}\"] form[action$=\"/resume\"] button",
            first.public_id
        ))
        .await
        .unwrap();
    browser.click(&resume).await.unwrap();
    browser.wait_for_url("/resume").await.unwrap();
    let heading = browser.find("main h1").await.unwrap();
    assert_eq!(
        browser.text(&heading).await.unwrap(),
        "Resume this retirement?"
    );
    browser.screenshot(&shot("confirm")).await.unwrap();
    assert_eq!(
        store
            .find(&Lookup::Id(ids[0]))
            .await
            .unwrap()
            .unwrap()
            .state,
        "ERRORED",
        "nothing moves before the confirmation"
    );
    let yes = browser.find("main form button[type=submit]").await.unwrap();
    browser.click(&yes).await.unwrap();
    browser
        .wait_for_url(&format!("done=resume&id={}", first.public_id))
        .await
        .unwrap();
    let notice = browser.find(".notice").await.unwrap();
    assert!(
        browser
            .text(&notice)
            .await
            .unwrap()
            .contains("resumed: now RETIRING_EDX")
    );
    assert_eq!(browser.find_all("tbody tr").await.unwrap().len(), 1);
    let moved = store.find(&Lookup::Id(ids[0])).await.unwrap().unwrap();
    assert_eq!(moved.state, "RETIRING_EDX");
    let events = store.history(ids[0]).await.unwrap();
    assert_eq!(events.last().unwrap().actor, "console:ops");
    browser
        .screenshot(&shot("errored-after-resume"))
        .await
        .unwrap();

    // The lookup finds the retired email through its hash and shows where it went.
    browser.goto(&format!("{base}/ui/lookup")).await.unwrap();
    let q = browser.find("input#q").await.unwrap();
    browser.type_into(&q, "user3@example.org").await.unwrap();
    let search = browser.find("form[role=search] button").await.unwrap();
    browser.click(&search).await.unwrap();
    let summary = browser.find("p.status").await.unwrap();
    let said = browser.text(&summary).await.unwrap();
    assert!(said.starts_with("Retired on"), "{said}");
    assert!(
        said.contains("from edx, sarbacane, ashley, joanie"),
        "{said}"
    );
    assert_eq!(
        browser
            .find_all("table.timeline tbody tr")
            .await
            .unwrap()
            .len(),
        8
    );
    browser.screenshot(&shot("lookup")).await.unwrap();
    let link = browser.find("main h2 a").await.unwrap();
    browser.click(&link).await.unwrap();
    let retired = store.find(&Lookup::Id(ids[2])).await.unwrap().unwrap();
    browser
        .wait_for_url(&format!("/ui/retirements/{}", retired.public_id))
        .await
        .unwrap();
    assert!(
        browser
            .source()
            .await
            .unwrap()
            .contains("auth_user 1, student_courseenrollment 2")
    );
    browser.screenshot(&shot("retirement")).await.unwrap();

    browser.quit().await.unwrap();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
