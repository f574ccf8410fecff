//! The console's pages and actions in-process on both store backends: sign-in and its
//! scopes, the session cookie (forged, expired), CSRF, the dashboard's numbers against the
//! store, resume and abort with their confirmation, the retirement page, the lookup after
//! the PII is erased (escaped), the CSV export.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{Kind, TestDb, config, subjects};
use lethe::clock::{Clock, ManualClock};
use lethe::console::{ConsoleState, router};
use lethe::store::{EnqueueOutcome, Lookup, Store};
use std::sync::Arc;
use tower::ServiceExt;

/// Keys by who holds them: (name, scope, key).
pub const KEYS: [(&str, &str, &str); 3] = [
    ("joanie", "service:joanie", "key-joanie"),
    ("dpo", "auditor", "key-dpo"),
    ("ops", "operator", "key-ops"),
];

fn pipeline() -> String {
    format!(
        "[api]\nlisten = \"127.0.0.1:0\"\nsession_ttl = \"8h\"\n{}{}",
        common::api_keys(&KEYS),
        common::SERVICE_STAGES
    )
}

/// An answer: status, headers, body.
struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Answer {
    /// The `Set-Cookie` value of cookie `name`.
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_string)
    }

    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The value of the first hidden `csrf` field.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a csrf field")
            + 19;
        self.body[at..].split('"').next().unwrap_or("").to_string()
    }
}

struct Console {
    _db: TestDb,
    store: Arc<dyn Store>,
    app: axum::Router,
    clock: Arc<ManualClock>,
    url: String,
}

impl Console {
    async fn new(kind: Kind) -> Console {
        let db = TestDb::new(kind).await;
        let (graph, pipeline) = config(&pipeline());
        let store = db.store(&graph).await;
        let clock = Arc::new(ManualClock::new(common::t0()));
        let state = ConsoleState::new(store.clone(), Arc::new(pipeline), graph, clock.clone())
            .with_hash_key(Some(common::key()))
            .with_driver(true);
        Console {
            url: db.url.clone(),
            _db: db,
            store,
            app: router(Arc::new(state)),
            clock,
        }
    }

    async fn call(&self, method: Method, uri: &str, cookie: &str, form: &[(&str, &str)]) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        if !cookie.is_empty() {
            request = request.header("cookie", cookie);
        }
        let body = match form.is_empty() {
            true => Body::empty(),
            false => {
                request = request.header("content-type", "application/x-www-form-urlencoded");
                Body::from(
                    url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(form)
                        .finish(),
                )
            }
        };
        let response = self
            .app
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, uri: &str, cookie: &str) -> Answer {
        self.call(Method::GET, uri, cookie, &[]).await
    }

    async fn post(&self, uri: &str, cookie: &str, form: &[(&str, &str)]) -> Answer {
        self.call(Method::POST, uri, cookie, form).await
    }

    /// Signs in with `key` and returns the `Cookie` header of the session.
    async fn sign_in(&self, key: &str) -> String {
        let form = self.get("/ui/signin", "").await;
        let nonce = form.cookie("lethe_signin").unwrap();
        let nonce = nonce.split(';').next().unwrap();
        let answer = self
            .post("/ui/signin", nonce, &[("csrf", &form.csrf()), ("key", key)])
            .await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        let session = answer.cookie("lethe_session").unwrap();
        session.split(';').next().unwrap().to_string()
    }

    /// Opens retirements for subjects `from..to` and returns their ids.
    async fn open(&self, from: u32, to: u32) -> Vec<i64> {
        self.store
            .enqueue("PENDING", &subjects(from, to), "test", self.clock.now())
            .await
            .unwrap()
            .into_iter()
            .map(|o| match o {
                EnqueueOutcome::Created(id) => id,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    async fn retirement(&self, id: i64) -> lethe::store::Retirement {
        self.store.find(&Lookup::Id(id)).await.unwrap().unwrap()
    }
}

async fn signing_in_takes_an_operator_or_auditor_key(kind: Kind) {
    let console = Console::new(kind).await;
    let css = console.get("/ui/style.css", "").await;
    assert_eq!(css.headers["content-type"], "text/css; charset=utf-8");
    assert!(css.body.contains("prefers") || css.body.contains("@media"));
    let none = console.get("/ui", "").await;
    assert_eq!(none.status, StatusCode::SEE_OTHER);
    assert_eq!(none.location(), "/ui/signin");
    let form = console.get("/ui/signin", "").await;
    assert_eq!(form.status, StatusCode::OK);
    let nonce_cookie = form.cookie("lethe_signin").unwrap();
    assert!(nonce_cookie.contains("HttpOnly") && nonce_cookie.contains("SameSite=Strict"));
    let nonce = nonce_cookie.split(';').next().unwrap();
    let csrf = form.csrf();
    // Without the form's token: refused before the key is even looked at.
    let forged = console
        .post("/ui/signin", nonce, &[("csrf", "x"), ("key", "key-ops")])
        .await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);
    assert!(forged.cookie("lethe_session").is_none());
    let unknown = console
        .post("/ui/signin", nonce, &[("csrf", &csrf), ("key", "nope")])
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(unknown.body.contains("No configured API key matches"));
    let service = console
        .post(
            "/ui/signin",
            nonce,
            &[("csrf", &csrf), ("key", "key-joanie")],
        )
        .await;
    assert_eq!(service.status, StatusCode::FORBIDDEN);
    assert!(
        service.body.contains("joanie is a service key"),
        "{}",
        service.body
    );
    assert!(service.cookie("lethe_session").is_none());
    let good = console
        .post("/ui/signin", nonce, &[("csrf", &csrf), ("key", "key-dpo")])
        .await;
    assert_eq!(good.status, StatusCode::SEE_OTHER);
    let session = good.cookie("lethe_session").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=28800"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(!session.contains("key-dpo"));
    let cookie = session.split(';').next().unwrap().to_string();
    let page = console.get("/ui", &cookie).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("Signed in as <strong>dpo</strong> (auditor)")
    );
    assert_eq!(page.headers["cache-control"], "no-store");
    assert!(
        page.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    // A cookie changed by one character is not this console's.
    let mut tampered = cookie.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let forged = console.get("/ui", &tampered).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert!(forged.body.contains("not one this console signed"));
    assert!(
        forged
            .cookie("lethe_session")
            .unwrap()
            .contains("Max-Age=0")
    );
    // Sign-out needs the page's token, then clears the cookie.
    let refused = console.post("/ui/signout", &cookie, &[("csrf", "x")]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let out = console
        .post("/ui/signout", &cookie, &[("csrf", &page.csrf())])
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out.cookie("lethe_session").unwrap().contains("Max-Age=0"));
    // Past its expiry the same cookie opens nothing.
    console.clock.advance(chrono::Duration::hours(8));
    let expired = console.get("/ui/errored", &cookie).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert!(expired.body.contains("The session expired"));
}

async fn the_dashboard_shows_what_the_store_holds(kind: Kind) {
    let console = Console::new(kind).await;
    let ids = console.open(1, 6).await;
    common::history::errored(&console.url, ids[0], "RETIRING_EDX", "timeout").await;
    let graph = config(&pipeline()).0;
    let now = console.clock.now();
    console
        .store
        .operate(
            &graph,
            ids[1],
            &lethe::store::OperatorAction::Abort {
                reason: "asked".into(),
            },
            "test",
            now,
        )
        .await
        .unwrap();
    console
        .store
        .record_scan(&lethe::store::ScanRecord {
            started_at: now,
            finished_at: now,
            seen: 1000,
            inactive: 900,
            refused: Some("900 new retirements exceed max_new_per_scan = 100".into()),
            rule: Some("inactive".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let cookie = console.sign_in("key-ops").await;
    let page = console.get("/ui", &cookie).await;
    assert_eq!(page.status, StatusCode::OK);
    let count_of = |state: &str| -> i64 {
        let at = page.body.find(&format!("data-state=\"{state}\"")).unwrap();
        let rest = &page.body[at..];
        let n = rest.find("<span class=\"n\">").unwrap() + 16;
        rest[n..].split('<').next().unwrap().parse().unwrap()
    };
    for (state, n) in lethe::ops::stats(console.store.as_ref(), Some(&graph))
        .await
        .unwrap()
    {
        assert_eq!(count_of(&state), n, "{state}");
    }
    assert_eq!(count_of("PENDING"), 3);
    assert_eq!(count_of("ERRORED"), 1);
    assert_eq!(count_of("ABORTED"), 1);
    // The abort is the one charted transition; the refused scan is shown as refused.
    assert!(
        page.body.contains("1 in all, at most 1 in a day"),
        "{}",
        page.body
    );
    assert!(page.body.contains("<rect class=\"cancelled\""));
    assert!(page.body.contains("exceed max_new_per_scan = 100"));
    assert!(page.body.contains("Driver: running."));
    // Days later the abort has left the days read live for the cached closed days: still
    // counted once, on its own day.
    for days in [1, 2, 3] {
        console.clock.advance(chrono::Duration::days(1));
        let cookie = console.sign_in("key-ops").await;
        let later = console.get("/ui", &cookie).await;
        assert!(
            later.body.contains("1 in all, at most 1 in a day"),
            "{days} days later: {}",
            later.body
        );
    }
    // The oldest open retirement of each state links to its page.
    let oldest = console.retirement(ids[2]).await.public_id;
    assert!(page.body.contains(&format!("/ui/retirements/{oldest}")));
}

async fn operators_resume_and_abort_errored_retirements_after_confirming(kind: Kind) {
    let console = Console::new(kind).await;
    let ids = console.open(1, 4).await;
    common::history::errored(
        &console.url,
        ids[0],
        "RETIRING_EDX",
        "protected: wiki_article.owner_id (1 row)",
    )
    .await;
    common::history::errored(
        &console.url,
        ids[1],
        "RETIRING_SARBACANE",
        "timeout <b>bold</b>",
    )
    .await;
    let (first, second) = (
        console.retirement(ids[0]).await.public_id,
        console.retirement(ids[1]).await.public_id,
    );
    let resume = format!("/ui/retirements/{first}/resume");
    // An auditor sees the queue, without the forms, and cannot act.
    let dpo = console.sign_in("key-dpo").await;
    let queue = console.get("/ui/errored", &dpo).await;
    assert!(queue.body.contains("protected: wiki_article.owner_id"));
    assert!(queue.body.contains("timeout &lt;b&gt;bold&lt;/b&gt;"));
    assert!(!queue.body.contains("Resume…"));
    let refused = console
        .post(
            &resume,
            &dpo,
            &[("csrf", &queue.csrf()), ("confirm", "yes")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    // An operator: no token, nothing; no confirmation, a question; then the action.
    let ops = console.sign_in("key-ops").await;
    let queue = console.get("/ui/errored", &ops).await;
    assert!(queue.body.contains("Resume…") && queue.body.contains("Abort…"));
    let csrf = queue.csrf();
    let no_token = console.post(&resume, &ops, &[("confirm", "yes")]).await;
    assert_eq!(no_token.status, StatusCode::BAD_REQUEST);
    let other_token = console
        .post(
            &resume,
            &ops,
            &[
                ("csrf", &console.get("/ui/errored", &dpo).await.csrf()),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(other_token.status, StatusCode::BAD_REQUEST);
    let question = console
        .post(&resume, &ops, &[("csrf", &csrf), ("to", "")])
        .await;
    assert_eq!(question.status, StatusCode::OK);
    assert!(question.body.contains("Yes, resume"));
    assert!(question.body.contains("name=\"confirm\" value=\"yes\""));
    assert_eq!(console.retirement(ids[0]).await.state, "ERRORED");
    let bad_state = console
        .post(
            &resume,
            &ops,
            &[("csrf", &csrf), ("to", "NOWHERE"), ("confirm", "yes")],
        )
        .await;
    assert_eq!(bad_state.status, StatusCode::BAD_REQUEST);
    let done = console
        .post(&resume, &ops, &[("csrf", &csrf), ("confirm", "yes")])
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(
        done.location(),
        format!("/ui/errored?done=resume&id={first}")
    );
    assert_eq!(console.retirement(ids[0]).await.state, "RETIRING_EDX");
    let shown = console.get(done.location(), &ops).await;
    assert!(
        shown
            .body
            .contains("resumed: now <strong>RETIRING_EDX</strong>"),
        "{}",
        shown.body
    );
    let events = console.store.history(ids[0]).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (last.outcome.as_str(), last.actor.as_str()),
        ("resume", "console:ops")
    );
    // Once resumed, a second resume is refused (409), nothing written.
    let again = console
        .post(&resume, &ops, &[("csrf", &csrf), ("confirm", "yes")])
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(
        console.store.history(ids[0]).await.unwrap().len(),
        events.len()
    );
    // Abort: a reason is required; from the retirement page, the result shows there.
    let abort = format!("/ui/retirements/{second}/abort");
    let no_reason = console
        .post(
            &abort,
            &ops,
            &[("csrf", &csrf), ("reason", " "), ("confirm", "yes")],
        )
        .await;
    assert_eq!(no_reason.status, StatusCode::BAD_REQUEST);
    let aborted = console
        .post(
            &abort,
            &ops,
            &[
                ("csrf", &csrf),
                ("reason", "duplicate account"),
                ("from", "page"),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(aborted.status, StatusCode::SEE_OTHER);
    assert!(
        aborted
            .location()
            .starts_with(&format!("/ui/retirements/{second}?done=abort"))
    );
    let r = console.retirement(ids[1]).await;
    assert_eq!(r.state, "ABORTED");
    assert!(r.subject.is_none());
    let page = console.get(aborted.location(), &ops).await;
    assert!(page.body.contains("aborted: now <strong>ABORTED</strong>"));
    assert!(page.body.contains("duplicate account"));
    // Unknown and malformed ids: 404 pages.
    let unknown = console
        .get(&format!("/ui/retirements/{}", uuid::Uuid::new_v4()), &ops)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let malformed = console
        .post(
            "/ui/retirements/%3Cx%3E/abort",
            &ops,
            &[("csrf", &csrf), ("reason", "r"), ("confirm", "yes")],
        )
        .await;
    assert_eq!(malformed.status, StatusCode::NOT_FOUND);
    assert!(!malformed.body.contains("<x>"));
}

async fn auditors_look_up_a_retired_email_and_export_the_trail(kind: Kind) {
    let console = Console::new(kind).await;
    let ids = console.open(1, 5).await;
    common::history::retired(
        console.store.as_ref(),
        &console.url,
        ids[2],
        console.clock.now(),
    )
    .await;
    let dpo = console.sign_in("key-dpo").await;
    let form = console.get("/ui/lookup", &dpo).await;
    let csrf = form.csrf();
    for q in [
        "user3@example.org",
        "3",
        &console.retirement(ids[2]).await.public_id,
    ] {
        let found = console
            .post("/ui/lookup", &dpo, &[("csrf", &csrf), ("q", q)])
            .await;
        assert_eq!(found.status, StatusCode::OK);
        assert!(found.body.contains("Retired on"), "{q}: {}", found.body);
        assert!(
            found
                .body
                .contains("from <strong>edx, sarbacane, ashley, joanie</strong>"),
            "{}",
            found.body
        );
        assert!(
            found
                .body
                .contains("auth_user 1, student_courseenrollment 2")
        );
        assert!(found.body.contains("api:test"));
    }
    let open = console
        .post(
            "/ui/lookup",
            &dpo,
            &[("csrf", &csrf), ("q", "user1@example.org")],
        )
        .await;
    assert!(
        open.body.contains("Open, in <strong>PENDING</strong>"),
        "{}",
        open.body
    );
    let script = "<script>alert(1)</script>";
    let escaped = console
        .post("/ui/lookup", &dpo, &[("csrf", &csrf), ("q", script)])
        .await;
    assert_eq!(escaped.status, StatusCode::OK);
    assert!(!escaped.body.contains(script));
    assert!(
        escaped
            .body
            .contains("&lt;script&gt;alert(1)&lt;/script&gt;")
    );
    assert!(escaped.body.contains("No retirement matches"));
    let no_token = console.post("/ui/lookup", &dpo, &[("q", "3")]).await;
    assert_eq!(no_token.status, StatusCode::BAD_REQUEST);
    // The retirement page: facts, services, the timeline.
    let public = console.retirement(ids[2]).await.public_id;
    let page = console
        .get(&format!("/ui/retirements/{public}"), &dpo)
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("erased"));
    assert_eq!(page.body.matches("data-outcome=\"ack\"").count(), 2);
    assert!(page.body.contains("<td>joanie</td><td>deleted</td>"));
    // The CSV export of a range: every event of it, with the header.
    let day = console.clock.now().date_naive();
    let since = day.to_string();
    let until = day.succ_opt().unwrap().to_string();
    let csv = console
        .get(&format!("/ui/audit.csv?since={since}&until={until}"), &dpo)
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        csv.headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains(&format!("lethe-audit-{since}-{until}.csv"))
    );
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines[0], lethe::ops::audit::CSV_HEADER);
    let events = common::scalar(&console.url, "SELECT COUNT(*) FROM retirement_event".into()).await;
    assert_eq!(lines.len() as i64 - 1, events);
    let missing = console
        .get(&format!("/ui/audit.csv?since={since}"), &dpo)
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(missing.body.contains("until"));
    let signed_out = console
        .get(&format!("/ui/audit.csv?since={since}&until={until}"), "")
        .await;
    assert_eq!(signed_out.status, StatusCode::SEE_OTHER);
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod postgres { $( #[tokio::test] async fn $name() { super::$name(super::Kind::Postgres).await } )* }
        mod sqlite { $( #[tokio::test] async fn $name() { super::$name(super::Kind::Sqlite).await } )* }
    };
}

on_both_stores!(
    signing_in_takes_an_operator_or_auditor_key,
    the_dashboard_shows_what_the_store_holds,
    operators_resume_and_abort_errored_retirements_after_confirming,
    auditors_look_up_a_retired_email_and_export_the_trail,
);
