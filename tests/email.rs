//! Warning, reminder and deletion emails against a real SMTP server over TCP, and the grace
//! period with time moved by a manual clock (no sleeping): what is received, transient and
//! permanent failures, timeouts, the rate limit, reminders once each, reactivation.

mod common;

use common::smtp::{Fault, SmtpServer};
use common::{Kind, STATES, TestDb, exec};
use lethe::clock::{Clock, ManualClock};
use lethe::config::Config;
use lethe::driver::Driver;
use lethe::store::{Lookup, NewRetirement, Retirement, Store};
use std::sync::Arc;
use std::time::Duration;

const DAY: i64 = 86_400;

/// A pipeline: PENDING sends the warning, WARNED waits out 30 days of grace, the deleting
/// stages are noops, NOTIFIED sends the deletion confirmation.
fn pipeline(port: u16, email_extra: &str, grace: &str, source: Option<&str>) -> String {
    let email_extra = if email_extra.contains("rate_per_minute") {
        email_extra.to_string()
    } else {
        format!("rate_per_minute = 60000\n{email_extra}")
    };
    let templates = common::repo_root().join("templates");
    let source = source
        .map(|url| format!("[source]\nurl = \"{url}\"\nexclude = \"is_staff = 1\"\n"))
        .unwrap_or_default();
    format!(
        r#"
[policy]
grace_period = "30d"
max_attempts = 5
retry_base = "1m"
retry_cap = "10m"

[driver]
batch_size = 500
concurrency = 1

[email]
host = "127.0.0.1"
port = {port}
tls = "none"
from = "Example Learning <noreply@example.org>"
timeout = "2s"
pool_size = 4
templates = "{templates}"
site_name = "Example Learning"
login_url = "https://learn.example.org/login"
support_email = "support@example.org"
{email_extra}

{source}

[[stage]]
state = "PENDING"
handler = "email"
template = "warning"

[[stage]]
state = "WARNED"
handler = "grace"
{grace}

[[stage]]
state = "RETIRING_EDX"
handler = "noop"

[[stage]]
state = "RETIRING_SARBACANE"
handler = "noop"

[[stage]]
state = "NOTIFIED"
handler = "email"
template = "deleted"
"#,
        templates = templates.display()
    )
}

/// A manual clock that also runs in real time, so that sends to a slow server take time.
struct Running {
    base: Arc<ManualClock>,
    start: std::time::Instant,
}

impl Running {
    /// The time this clock showed at `instant` (the base left as it was).
    fn at(&self, instant: std::time::Instant) -> chrono::DateTime<chrono::Utc> {
        let elapsed = instant.saturating_duration_since(self.start);
        lethe::domain::truncate_micros(
            self.base.now() + chrono::Duration::from_std(elapsed).unwrap(),
        )
    }
}

impl Clock for Running {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.at(std::time::Instant::now())
    }
}

/// A store, a driver on a manual clock at `t0`, and the SMTP server.
struct Setup {
    _db: TestDb,
    store: Arc<dyn Store>,
    driver: Arc<Driver>,
    clock: Arc<ManualClock>,
    smtp: SmtpServer,
}

impl Setup {
    async fn new(email_extra: &str, grace: &str, source: Option<&str>) -> Setup {
        let smtp = SmtpServer::start().await;
        let port = smtp.port();
        Self::on_port(smtp, port, email_extra, grace, source).await
    }

    async fn on_port(
        smtp: SmtpServer,
        port: u16,
        email_extra: &str,
        grace: &str,
        source: Option<&str>,
    ) -> Setup {
        let clock = Arc::new(ManualClock::new(common::t0()));
        Self::with_clock(smtp, port, email_extra, grace, source, clock.clone(), clock).await
    }

    /// A setup whose driver's clock also runs in real time from `t0` (set moves it on).
    async fn running(email_extra: &str, grace: &str) -> (Setup, Arc<Running>) {
        let smtp = SmtpServer::start().await;
        let port = smtp.port();
        let manual = Arc::new(ManualClock::new(common::t0()));
        let running = Arc::new(Running {
            base: manual.clone(),
            start: std::time::Instant::now(),
        });
        let s = Self::with_clock(
            smtp,
            port,
            email_extra,
            grace,
            None,
            manual,
            running.clone(),
        );
        (s.await, running)
    }

    async fn with_clock(
        smtp: SmtpServer,
        port: u16,
        email_extra: &str,
        grace: &str,
        source: Option<&str>,
        clock: Arc<ManualClock>,
        driver_clock: Arc<dyn Clock>,
    ) -> Setup {
        let text = pipeline(port, email_extra, grace, source);
        let (graph, pipeline) =
            Config::from_texts("states.toml", STATES, "pipeline.toml", &text).unwrap();
        let db = TestDb::new(Kind::Sqlite).await;
        let store = db.store(&graph).await;
        let handlers = lethe::stages::build_with(&pipeline, driver_clock.clone())
            .await
            .unwrap();
        let driver = Arc::new(Driver::new(
            store.clone(),
            graph,
            pipeline.policy.clone(),
            pipeline.driver.clone(),
            handlers,
            "d1".into(),
            driver_clock,
        ));
        Setup {
            _db: db,
            store,
            driver,
            clock,
            smtp,
        }
    }

    async fn enqueue(&self, subjects: &[(&str, Option<&str>, Option<&str>)]) {
        let key = common::key();
        let rows: Vec<NewRetirement> = subjects
            .iter()
            .map(|(id, email, locale)| NewRetirement {
                subject: id.to_string(),
                email: email.map(str::to_string),
                username: Some(format!("learner{id}")),
                reason: "inactive".into(),
                subject_hash: key.subject(id),
                email_hash: email.map(|e| key.email(e)),
                locale: locale.map(str::to_string),
                rule: None,
            })
            .collect();
        self.store
            .enqueue("PENDING", &rows, "cli", common::t0())
            .await
            .unwrap();
    }

    async fn run(&self) {
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        self.driver.run_once(shutdown).await.unwrap();
    }

    async fn run_at(&self, days: i64) {
        self.clock
            .set(common::t0() + chrono::Duration::seconds(days * DAY));
        self.run().await;
    }

    async fn find(&self, subject: &str) -> Retirement {
        self.store
            .find(&Lookup::subject(subject, Some(&common::key())))
            .await
            .unwrap()
            .unwrap()
    }

    async fn events(&self, subject: &str) -> Vec<lethe::store::Event> {
        let r = self.find(subject).await;
        self.store.history(r.id).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_carry_every_variable_in_the_subjects_locale() {
    let s = Setup::new("", "recheck = false", None).await;
    s.enqueue(&[
        ("1", Some("ann@example.org"), Some("fr-FR")),
        ("2", Some("bob@example.org"), None),
    ])
    .await;
    s.run().await;
    let messages = s.smtp.messages();
    assert_eq!(messages.len(), 2, "one warning each");
    let to_ann = messages
        .iter()
        .find(|m| m.to == ["ann@example.org"])
        .unwrap();
    let to_bob = messages
        .iter()
        .find(|m| m.to == ["bob@example.org"])
        .unwrap();
    assert_eq!(to_ann.from, "noreply@example.org");
    assert_eq!(
        to_ann.header("Subject").unwrap(),
        "Votre compte Example Learning sera supprimé le 2026-12-22"
    );
    assert_eq!(
        to_bob.header("Subject").unwrap(),
        "Your Example Learning account will be deleted on 2026-12-22"
    );
    assert!(to_bob.header("From").unwrap().contains("Example Learning"));
    for (m, username) in [(to_ann, "learner1"), (to_bob, "learner2")] {
        for part in [m.part("text/plain").unwrap(), m.part("text/html").unwrap()] {
            for value in [
                username,
                "2026-12-22",
                "30",
                "https://learn.example.org/login",
                "support@example.org",
                "Example Learning",
            ] {
                assert!(part.contains(value), "{value} missing in {part}");
            }
            assert!(!part.contains("{{") && !part.contains("}}"), "{part}");
        }
    }
    assert!(to_ann.part("text/plain").unwrap().contains("dans 30 jours"));
    // The notice is recorded: warned_at, and the Message-ID and reply in the event.
    let ann = s.find("1").await;
    assert_eq!(ann.state, "WARNED");
    assert_eq!(ann.warned_at, Some(common::t0()));
    let events = s.events("1").await;
    // The warning was carried into grace and written with its Wait, both recorded in order.
    assert_eq!(
        common::event_path(&events),
        [
            (None, "PENDING", "enqueued"),
            (Some("PENDING"), "WARNED", "done"),
            (Some("WARNED"), "WARNED", "wait"),
        ]
    );
    let sent = events
        .iter()
        .find(|e| e.from_state.as_deref() == Some("PENDING"))
        .unwrap();
    let message_id = to_ann.header("Message-ID").unwrap();
    assert!(sent.detail.contains(&message_id), "{}", sent.detail);
    assert!(
        sent.detail.contains("\"smtp_reply\":\"250"),
        "{}",
        sent.detail
    );
    assert!(sent.detail.contains("\"locale\":\"fr\""), "{}", sent.detail);
    assert!(
        !sent.detail.contains("ann@example.org"),
        "no address in events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_until_the_warning_is_accepted() {
    let s = Setup::new("", "recheck = false", None).await;
    s.smtp.script([
        Fault::AtRcpt(451, "4.3.0 try again later"),
        Fault::BusyGreeting,
        Fault::DropMidData,
    ]);
    s.enqueue(&[("1", Some("ann@example.org"), None)]).await;
    s.run().await;
    let r = s.find("1").await;
    assert_eq!(r.state, "PENDING");
    assert!(r.last_error.as_deref().unwrap().contains("451"), "{r:?}");
    assert_eq!(r.warned_at, None, "no notice without acceptance");
    // Each retry is due after the backoff (at most retry_cap = 10m).
    let mut minutes = 0;
    while s.find("1").await.state == "PENDING" {
        minutes += 11;
        assert!(minutes < 100, "never accepted: {:?}", s.find("1").await);
        s.clock
            .set(common::t0() + chrono::Duration::minutes(minutes));
        s.run().await;
    }
    assert_eq!(s.find("1").await.state, "WARNED");
    assert_eq!(s.smtp.count(), 1, "accepted once");
    let retries = s
        .events("1")
        .await
        .iter()
        .filter(|e| e.outcome == "retry")
        .count();
    assert_eq!(retries, 3, "451, 421 and the dropped connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_parks_the_retirement_by_default() {
    let s = Setup::new("", "recheck = false", None).await;
    s.smtp.script([Fault::AtRcpt(
        550,
        "5.1.1 <gone@example.org>: Recipient address rejected",
    )]);
    s.enqueue(&[
        ("1", Some("gone@example.org"), None),
        ("2", Some("not an address"), None),
        ("3", None, None),
    ])
    .await;
    s.run().await;
    for (subject, why) in [
        ("1", "550"),
        ("2", "invalid email address"),
        ("3", "no email address"),
    ] {
        let r = s.find(subject).await;
        assert_eq!(r.state, "ERRORED", "{subject}");
        let error = r.last_error.unwrap();
        assert!(
            error.starts_with("undeliverable:") && error.contains(why),
            "{error}"
        );
        assert_eq!(r.warned_at, None);
    }
    // The server echoed the address; events and errors outlive it, so it is cut out.
    let r = s.find("1").await;
    assert!(
        r.last_error
            .as_deref()
            .unwrap()
            .contains("<<recipient>>: Recipient address rejected"),
        "{r:?}"
    );
    for e in s.events("1").await {
        assert!(!e.detail.contains("gone@example.org"), "{}", e.detail);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proceed_goes_on_without_a_delivered_notice_and_says_so() {
    let s = Setup::new("on_undeliverable = \"proceed\"", "recheck = false", None).await;
    s.smtp.script([Fault::AtDataEnd(554, "5.7.1 rejected")]);
    s.enqueue(&[("1", Some("ann@example.org"), None)]).await;
    s.run().await;
    let r = s.find("1").await;
    assert_eq!(r.state, "WARNED");
    let events = s.events("1").await;
    let done = events
        .iter()
        .find(|e| e.from_state.as_deref() == Some("PENDING"))
        .unwrap();
    assert!(
        done.detail.contains("\"on_undeliverable\":\"proceed\"") && done.detail.contains("554"),
        "{}",
        done.detail
    );
    // Invariant 2 still holds: the grace period runs from the attempt.
    assert_eq!(r.warned_at, Some(common::t0()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_times_out_and_is_retried() {
    let s = Setup::new("", "recheck = false", None).await;
    s.smtp.script([Fault::Stall]);
    s.enqueue(&[("1", Some("ann@example.org"), None)]).await;
    let started = std::time::Instant::now();
    s.run().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let r = s.find("1").await;
    assert_eq!(r.state, "PENDING");
    let error = r.last_error.unwrap();
    assert!(error.contains("no answer within 2s"), "{error}");
    s.run_at(1).await;
    let r = s.find("1").await;
    assert_eq!(r.state, "WARNED", "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_spaces_messages() {
    let s = Setup::new("rate_per_minute = 1200", "recheck = false", None).await;
    let emails: Vec<String> = (1..=21).map(|i| format!("u{i}@example.org")).collect();
    let ids: Vec<String> = (1..=21).map(|i| i.to_string()).collect();
    let subjects: Vec<(&str, Option<&str>, Option<&str>)> = ids
        .iter()
        .zip(&emails)
        .map(|(id, e)| (id.as_str(), Some(e.as_str()), None))
        .collect();
    s.enqueue(&subjects).await;
    s.run().await;
    let messages = s.smtp.messages();
    assert_eq!(messages.len(), 21);
    // 1,200 per minute is one every 50 ms: 20 gaps take about a second.
    let span = messages.last().unwrap().at - messages[0].at;
    assert!(
        span >= Duration::from_millis(900) && span < Duration::from_secs(5),
        "{span:?}"
    );
}

/// A SQLite source with users 1 and 2, inactive for years.
async fn source_db() -> TestDb {
    let db = TestDb::new(Kind::Sqlite).await;
    exec(
        &format!("{}?mode=rwc", db.url),
        &[
            "CREATE TABLE auth_user (id INTEGER PRIMARY KEY, email TEXT, username TEXT, \
             last_login TEXT, date_joined TEXT NOT NULL, is_staff INTEGER NOT NULL DEFAULT 0)"
                .to_string(),
            "INSERT INTO auth_user (id, email, username, last_login, date_joined) VALUES \
             (1, 'ann@example.org', 'ann', '2019-01-01 00:00:00', '2018-01-01 00:00:00'), \
             (2, 'bob@example.org', 'bob', '2019-01-01 00:00:00', '2018-01-01 00:00:00')"
                .to_string(),
        ],
    )
    .await;
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_after_the_warning_is_cancelled_and_nothing_is_deleted() {
    let source = source_db().await;
    let s = Setup::new("", "", Some(&source.url)).await;
    s.enqueue(&[
        ("1", Some("ann@example.org"), None),
        ("2", Some("bob@example.org"), None),
    ])
    .await;
    s.run().await;
    assert_eq!(s.find("1").await.state, "WARNED");
    // Ann logs in ten days after the warning.
    exec(
        &source.url,
        &["UPDATE auth_user SET last_login = '2026-12-02 09:00:00' WHERE id = 1".to_string()],
    )
    .await;
    s.run_at(31).await;
    let ann = s.find("1").await;
    assert_eq!(ann.state, "ABORTED");
    let events = s.events("1").await;
    assert!(
        events
            .last()
            .unwrap()
            .detail
            .contains("active again at 2026-12-02T09:00:00"),
        "{}",
        events.last().unwrap().detail
    );
    assert!(
        !events
            .iter()
            .any(|e| e.from_state.as_deref() == Some("RETIRING_EDX")),
        "no deleting stage ran"
    );
    // Bob stayed inactive: he went through, and got the deletion confirmation.
    assert_eq!(s.find("2").await.state, "COMPLETE");
    let to_bob: Vec<_> = s
        .smtp
        .messages()
        .into_iter()
        .filter(|m| m.to == ["bob@example.org"])
        .collect();
    assert_eq!(to_bob.len(), 2, "warning and confirmation");
    assert!(
        to_bob[1]
            .header("Subject")
            .unwrap()
            .contains("has been deleted"),
        "{:?}",
        to_bob[1].header("Subject")
    );
    // The confirmation gives the day of the deletion (day 31), not the end of grace.
    assert!(
        to_bob[1].part("text/plain").unwrap().contains("2026-12-23"),
        "{:?}",
        to_bob[1].part("text/plain")
    );
    // The address was kept until the end, and erased then.
    let erased = s.find("2").await;
    assert_eq!(erased.subject, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_stage_comes_only_after_the_grace_period_and_reminders_go_once_each() {
    let s = Setup::new("", "reminders = [\"7d\", \"14d\"]\nrecheck = false", None).await;
    s.enqueue(&[("1", Some("ann@example.org"), None)]).await;
    s.run().await;
    assert_eq!(s.smtp.count(), 1);
    let subjects = |s: &Setup| -> Vec<String> {
        s.smtp
            .messages()
            .iter()
            .map(|m| m.header("Subject").unwrap_or_default())
            .collect()
    };
    // Runs before, at and after each reminder time; extra runs send nothing more.
    for day in [1, 15, 16, 16, 20, 23, 23, 29] {
        s.run_at(day).await;
        assert_eq!(s.find("1").await.state, "WARNED", "day {day}");
    }
    let sent = subjects(&s);
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(
        sent[1].contains("in 14 days") && sent[2].contains("in 7 days"),
        "{sent:?}"
    );
    // Made due early by hand (as a resume would): no reminder is sent twice.
    exec(
        &s._db.url,
        &["UPDATE retirement SET due_at = created_at".to_string()],
    )
    .await;
    s.run_at(29).await;
    assert_eq!(subjects(&s).len(), 3);
    // One second before the end, still waiting; at the end, it moves on.
    s.clock
        .set(common::t0() + chrono::Duration::seconds(30 * DAY - 1));
    s.run().await;
    assert_eq!(s.find("1").await.state, "WARNED");
    s.run_at(30).await;
    assert_eq!(s.find("1").await.state, "COMPLETE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_retried_with_backoff() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Setup::on_port(
        SmtpServer::start().await,
        closed,
        "",
        "recheck = false",
        None,
    )
    .await;
    s.enqueue(&[("1", Some("ann@example.org"), None)]).await;
    s.run().await;
    let r = s.find("1").await;
    assert_eq!((r.state.as_str(), r.attempt), ("PENDING", 1));
    assert!(
        r.last_error.as_deref().unwrap().starts_with("smtp:"),
        "{r:?}"
    );
    let retry_at = r.due_at.unwrap();
    assert!(
        retry_at >= common::t0() + chrono::Duration::seconds(30),
        "backoff: {retry_at}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_notice_runs_from_its_own_acceptance() {
    // A slow server: 12 warnings over 4 connections take three rounds of 80 ms, while the
    // clock runs. Each warned_at is when that message was accepted, not when the batch began.
    let (s, clock) = Setup::running("", "recheck = false").await;
    s.smtp.delay_acceptance(Duration::from_millis(80));
    let emails: Vec<String> = (1..=12).map(|i| format!("u{i}@example.org")).collect();
    let ids: Vec<String> = (1..=12).map(|i| i.to_string()).collect();
    let rows: Vec<_> = ids
        .iter()
        .zip(&emails)
        .map(|(id, e)| (id.as_str(), Some(e.as_str()), None))
        .collect();
    s.enqueue(&rows).await;
    s.run().await;
    let grace = chrono::Duration::days(30);
    let mut accepted = Vec::new();
    for (id, email) in ids.iter().zip(&emails) {
        let m = s
            .smtp
            .messages()
            .into_iter()
            .find(|m| m.to == [email.as_str()])
            .unwrap();
        let r = s.find(id).await;
        assert_eq!(r.state, "WARNED");
        let warned = r.warned_at.unwrap();
        assert!(
            warned >= clock.at(m.at),
            "subject {id}: warned_at {warned} is before the server accepted the warning at {}",
            clock.at(m.at)
        );
        accepted.push((id, clock.at(m.at)));
    }
    let first = accepted.iter().map(|a| a.1).min().unwrap();
    let last = accepted.iter().map(|a| a.1).max().unwrap();
    assert!(
        last - first >= chrono::Duration::milliseconds(150),
        "the sends took time"
    );
    // The grace period of the first acceptance is over: only the subjects whose own grace
    // is over go on to the deleting stages, and none before acceptance + grace.
    s.clock
        .set(first + grace - chrono::Duration::from_std(clock.start.elapsed()).unwrap());
    s.run().await;
    let mut waiting = 0;
    for (id, at) in &accepted {
        let events = s.events(id).await;
        match events
            .iter()
            .find(|e| e.from_state.as_deref() == Some("RETIRING_EDX"))
        {
            Some(deleted) => assert!(
                deleted.at >= *at + grace,
                "subject {id} deleted at {} before its acceptance + grace {}",
                deleted.at,
                *at + grace
            ),
            None => waiting += 1,
        }
    }
    assert!(
        waiting > 0,
        "the later warnings are still in their grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_resends_only_what_was_not_recorded_with_the_same_message_id() {
    // One batch of 400 warnings to a slow server (4 connections, 10 ms per message); the
    // daemon is killed once 360 were accepted.
    let s = Setup::new("", "recheck = false", None).await;
    s.smtp.delay_acceptance(Duration::from_millis(10));
    let emails: Vec<String> = (1..=400).map(|i| format!("u{i}@example.org")).collect();
    let ids: Vec<String> = (1..=400).map(|i| i.to_string()).collect();
    let rows: Vec<_> = ids
        .iter()
        .zip(&emails)
        .map(|(id, e)| (id.as_str(), Some(e.as_str()), None))
        .collect();
    s.enqueue(&rows).await;
    let daemon = tokio::spawn({
        let (driver, (_stop, shutdown)) = (s.driver.clone(), tokio::sync::watch::channel(false));
        async move { driver.run_once(shutdown).await }
    });
    assert!(s.smtp.wait_for(360, Duration::from_secs(30)).await);
    daemon.abort();
    let _ = daemon.await;
    // The bound the README states: the messages in flight plus two flush windows.
    let bound = 4 + 2 * lethe::driver::FLUSH_OUTCOMES;
    let recorded = s
        .store
        .stats()
        .await
        .unwrap()
        .into_iter()
        .find(|(state, _)| state == "WARNED")
        .map_or(0, |(_, n)| n as usize);
    assert!(
        recorded + bound >= 360,
        "only {recorded} of 360 acceptances recorded at the kill"
    );
    // After the leases expire, a rerun sends only what was not recorded.
    s.clock.set(common::t0() + chrono::Duration::minutes(10));
    s.run().await;
    for id in &ids {
        assert_eq!(s.find(id).await.state, "WARNED");
    }
    let messages = s.smtp.messages();
    let resent = messages.len() - 400;
    assert!(resent <= bound, "{resent} warnings resent (bound {bound})");
    assert!(resent > 0, "the kill came after the last flush");
    // Every copy of a warning carries its first copy's Message-ID.
    for (id, email) in ids.iter().zip(&emails) {
        let retirement = s.find(id).await;
        let expected = format!(
            "<lethe.{}.warning.{}@example.org>",
            retirement.id,
            retirement.created_at.timestamp_micros()
        );
        for m in messages.iter().filter(|m| m.to == [email.as_str()]) {
            assert_eq!(m.header("Message-ID").as_deref(), Some(expected.as_str()));
        }
    }
}

/// The mailer of the test pipeline, talking to `smtp`.
fn mailer(smtp: &SmtpServer, email_extra: &str) -> lethe::mail::Mailer {
    let text = pipeline(smtp.port(), email_extra, "recheck = false", None);
    let (_, pipeline) = Config::from_texts("states.toml", STATES, "pipeline.toml", &text).unwrap();
    lethe::mail::Mailer::new(pipeline.email.as_ref().unwrap()).unwrap()
}

fn message(n: usize) -> lethe::mail::Rendered {
    lethe::mail::Rendered {
        subject: format!("Message {n}"),
        text: "Hello".into(),
        html: "<p>Hello</p>".into(),
    }
}

/// Sends test message `n` to ann and asserts the server accepted it.
async fn accepted(mailer: &lethe::mail::Mailer, n: usize) {
    let delivery = mailer
        .send(Some("ann@example.org"), &message(n), &n.to_string())
        .await;
    assert!(
        matches!(delivery, lethe::mail::Delivery::Accepted { .. }),
        "message {n}: {delivery:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_go_straight_to_the_next_message() {
    let smtp = SmtpServer::start().await;
    let mailer = mailer(&smtp, "");
    for n in 0..20 {
        accepted(&mailer, n).await;
    }
    assert_eq!(smtp.count(), 20);
    assert_eq!(smtp.connections(), 1, "one after another: one connection");
    assert_eq!(
        smtp.noops(),
        0,
        "no NOOP before a message on a busy connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_server_closed_is_replaced_without_a_retry() {
    let smtp = SmtpServer::start().await;
    let mailer = mailer(&smtp, "");
    smtp.script([Fault::HangUpAfterAccepting]);
    for n in 0..2 {
        accepted(&mailer, n).await;
    }
    let subjects: Vec<String> = smtp
        .messages()
        .iter()
        .map(|m| m.header("Subject").unwrap())
        .collect();
    assert_eq!(subjects, ["Message 0", "Message 1"], "each once, in order");
    assert_eq!(smtp.connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_opens_a_session_and_says_noop() {
    let smtp = SmtpServer::start().await;
    mailer(&smtp, "").test_connection().await.unwrap();
    assert_eq!((smtp.connections(), smtp.noops()), (1, 1));
    smtp.script([Fault::BusyGreeting]);
    let error = mailer(&smtp, "").test_connection().await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains(&format!("127.0.0.1:{}", smtp.port())),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_exactly_as_rendered() {
    let smtp = SmtpServer::start().await;
    let rendered = lethe::mail::Rendered {
        subject: "Votre compte « Example Learning » sera supprimé le 2026-12-22, dans trente jours, sauf si vous revenez".into(),
        text: format!(
            ".starts with a dot\nFrom the team\n{}\n\nfin = end\n",
            "une ligne très longue, ".repeat(8)
        ),
        html: "<p>Été</p>\n<p>.point</p>\n".into(),
    };
    let delivery = mailer(&smtp, "")
        .send(Some("ann@example.org"), &rendered, "1.1")
        .await;
    assert!(
        matches!(delivery, lethe::mail::Delivery::Accepted { .. }),
        "{delivery:?}"
    );
    let m = &smtp.messages()[0];
    assert_eq!(
        (m.from.as_str(), m.to.as_slice()),
        ("noreply@example.org", &["ann@example.org".to_string()][..])
    );
    assert_eq!(m.header("Subject").unwrap(), rendered.subject);
    assert_eq!(m.part("text/plain").unwrap(), rendered.text);
    assert_eq!(m.part("text/html").unwrap(), rendered.html);
    assert_eq!(m.header("To").unwrap(), "ann@example.org");
    assert_eq!(m.header("MIME-Version").unwrap(), "1.0");
    assert!(
        m.header("Date").is_some()
            && m.header("Message-ID").as_deref() == Some("<lethe.1.1@example.org>")
    );
    for line in m.raw.split_inclusive('\n') {
        assert!(line.ends_with("\r\n") && line.len() <= 1000, "{line:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_probed_then_closed() {
    let send_three = |mailer: lethe::mail::Mailer| async move {
        for n in 0..3 {
            accepted(&mailer, n).await;
        }
    };
    // Every reuse counts as idle past the probe: NOOP before the second and third message.
    let smtp = SmtpServer::start().await;
    send_three(mailer(&smtp, "").with_idle_rules(Duration::ZERO, Duration::from_secs(60))).await;
    assert_eq!((smtp.connections(), smtp.noops()), (1, 2));
    // Past the idle limit: a new connection for each message, no probe.
    let smtp = SmtpServer::start().await;
    send_three(mailer(&smtp, "").with_idle_rules(Duration::ZERO, Duration::ZERO)).await;
    assert_eq!((smtp.connections(), smtp.noops()), (3, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_do_not_wait_on_delayed_acks() {
    let smtp = SmtpServer::start().await;
    smtp.delayed_acks();
    let mailer = mailer(&smtp, "");
    let started = std::time::Instant::now();
    for n in 0..20 {
        accepted(&mailer, n).await;
    }
    // The end of DATA is a second small write: without TCP_NODELAY it waits for the ACK
    // of the message, which the server delays by up to 40 ms.
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "20 messages took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_later_on_a_pooled_connection_is_left_to_the_retry_schedule() {
    let smtp = SmtpServer::start().await;
    let mailer = mailer(&smtp, "");
    accepted(&mailer, 0).await;
    smtp.script([Fault::AtRcpt(451, "4.3.0 try again later")]);
    let second = mailer.send(Some("ann@example.org"), &message(1), "1").await;
    // Not a connection the server closed: no second try at once, on a new connection.
    assert!(
        matches!(&second, lethe::mail::Delivery::Transient(e) if e.contains("451")),
        "{second:?}"
    );
    assert_eq!((smtp.count(), smtp.connections()), (1, 1));
}
