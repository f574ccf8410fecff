//! Selection rules and notice policies per reason on the MariaDB edX fixture, a real SMTP
//! server and the edX target, with time moved by a manual clock: unverified accounts get
//! their confirmation request and a reminder at the right time and are deleted after the
//! period unless they confirm (in the grace stage or in the deleting transaction); staff is
//! never selected; a disabled rule runs nothing; the first rule wins; requested deletions
//! with and without a cool-off; and no policy lets anything be deleted early.

mod common;

use common::smtp::SmtpServer;
use common::target::Fixture;
use common::{Kind, STATES, TestDb, exec, scalar};
use lethe::clock::{Clock, ManualClock};
use lethe::config::{Config, Pipeline};
use lethe::domain::StateGraph;
use lethe::driver::Driver;
use lethe::driver::scan::{ScanOptions, ScanReport, scan};
use lethe::sql::Dialect;
use lethe::sql::source::SourceReader;
use lethe::store::{Lookup, NewRetirement, Retirement, Store};
use std::sync::Arc;

const DAY: i64 = 86_400;

/// PENDING sends the reason's notice, WARNED waits its hold (re-checking unless
/// `recheck = false` is in `grace`), RETIRING_EDX deletes from the fixture, NOTIFIED sends
/// the reason's deletion confirmation.
fn pipeline(port: u16, url: &str, grace: &str, rules: &str) -> String {
    let templates = common::repo_root().join("templates");
    format!(
        r#"
[policy]
grace_period = "30d"
max_attempts = 3
retry_base = "1m"
retry_cap = "10m"

[email]
host = "127.0.0.1"
port = {port}
tls = "none"
from = "Example Learning <noreply@example.org>"
timeout = "5s"
rate_per_minute = 60000
templates = "{templates}"
site_name = "Example Learning"
login_url = "https://learn.example.org/login"
support_email = "support@example.org"

[source]
url = "{url}"
max_new_share = 1.0

{rules}

[notice.unverified]
template = "confirm_account"
grace_period = "7d"
reminders = ["48h"]
reminder_template = "confirm_account_reminder"
deleted_template = "deleted_unverified"

[[stage]]
state = "PENDING"
handler = "email"
template = "warning"

[[stage]]
state = "WARNED"
handler = "grace"
reminders = ["7d"]
{grace}

[[stage]]
state = "RETIRING_EDX"
handler = "sql_delete"
target = "edx"

[[stage]]
state = "RETIRING_SARBACANE"
handler = "noop"

[[stage]]
state = "NOTIFIED"
handler = "email"
template = "deleted"
{target}
"#,
        templates = templates.display(),
        target = common::edx::target_toml(url),
    )
}

const RULES: &str = r#"
[[rule]]
name = "unverified"
select = "unverified"
after = "1d"

[[rule]]
name = "inactive"
"#;

struct Setup {
    fixture: Fixture,
    _db: TestDb,
    graph: StateGraph,
    pipeline: Pipeline,
    store: Arc<dyn Store>,
    driver: Arc<Driver>,
    clock: Arc<ManualClock>,
    smtp: SmtpServer,
}

impl Setup {
    /// The fixture (users 1 to 6, inactive since 2019), with users 1, 2 and 5 signed up
    /// two days before t0 and never confirmed; 5 is staff.
    async fn new(grace: &str, rules: &str, notices: &str) -> Setup {
        let fixture = Fixture::new(Dialect::MySql).await;
        exec(
            &fixture.url,
            &[
                "UPDATE auth_user SET is_active = 0, last_login = NULL, \
               date_joined = '2026-11-20 10:00:00' WHERE id IN (1, 2, 5)",
                "UPDATE auth_user SET is_staff = 1 WHERE id = 5",
            ],
        )
        .await;
        let smtp = SmtpServer::start().await;
        let text = format!(
            "{}\n{notices}",
            pipeline(smtp.port(), &fixture.url, grace, rules)
        );
        let (graph, pipeline) =
            Config::from_texts("states.toml", STATES, "pipeline.toml", &text).unwrap();
        let db = TestDb::new(Kind::Sqlite).await;
        let store = db.store(&graph).await;
        let clock = Arc::new(ManualClock::new(common::t0()));
        let handlers = lethe::stages::build_with(&pipeline, clock.clone())
            .await
            .unwrap();
        let driver = Arc::new(Driver::new(
            store.clone(),
            graph.clone(),
            pipeline.policy.clone(),
            pipeline.driver.clone(),
            handlers,
            "d1".into(),
            clock.clone(),
        ));
        Setup {
            fixture,
            _db: db,
            graph,
            pipeline,
            store,
            driver,
            clock,
            smtp,
        }
    }

    async fn scan(&self, rule: Option<&str>) -> Vec<ScanReport> {
        let reader =
            SourceReader::connect_for(self.pipeline.source.as_ref().unwrap(), &self.pipeline.rules)
                .await
                .unwrap();
        scan(
            self.store.as_ref(),
            &self.graph,
            &reader,
            &self.pipeline,
            &common::key(),
            self.clock.now(),
            ScanOptions {
                rule: rule.map(str::to_string),
                ..ScanOptions::default()
            },
        )
        .await
        .unwrap()
    }

    /// Opens retirements by hand (no rule), in `state`.
    async fn enqueue(&self, ids: &[i64], reason: &'static str, state: &str) {
        let key = common::key();
        let rows: Vec<NewRetirement> = ids
            .iter()
            .map(|id| {
                NewRetirement::hashed(
                    &key,
                    *id,
                    Some(format!("user{id}@example.org")),
                    Some(format!("user{id}")),
                    reason.into(),
                )
            })
            .collect();
        self.store
            .enqueue(state, &rows, "cli", self.clock.now())
            .await
            .unwrap();
    }

    async fn run_at(&self, seconds: i64) {
        self.clock
            .set(common::t0() + chrono::Duration::seconds(seconds));
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        self.driver.run_once(shutdown).await.unwrap();
    }

    async fn find(&self, subject: i64) -> Retirement {
        self.store
            .find(&Lookup::subject(&subject.to_string(), Some(&common::key())))
            .await
            .unwrap()
            .unwrap()
    }

    async fn last_detail(&self, subject: i64) -> String {
        let r = self.find(subject).await;
        let events = self.store.history(r.id).await.unwrap();
        events.last().unwrap().detail.clone()
    }

    /// Subjects of the messages sent to `user<id>@example.org`, in order.
    fn mail_to(&self, id: i64) -> Vec<String> {
        let to = format!("user{id}@example.org");
        self.smtp
            .messages()
            .into_iter()
            .filter(|m| m.to == [to.clone()])
            .map(|m| m.header("Subject").unwrap_or_default())
            .collect()
    }

    async fn user_exists(&self, id: i64) -> bool {
        scalar(
            &self.fixture.url,
            format!("SELECT COUNT(*) FROM auth_user WHERE id = {id}"),
        )
        .await
            == 1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_accounts_are_reminded_then_deleted_unless_they_confirm() {
    let s = Setup::new("", RULES, "").await;
    let reports = s.scan(None).await;
    let (unverified, inactive) = (&reports[0].counts, &reports[1].counts);
    assert_eq!(unverified.rule.as_deref(), Some("unverified"));
    // 1, 2 and staff 5 never confirmed; 5 is excluded.
    assert_eq!((unverified.inactive, unverified.excluded), (3, 1));
    assert_eq!(unverified.enqueued, 2);
    // The inactive rule selects 3, 4 and 6 (inactive since 2019): 1 and 2 signed up two
    // days ago and are not inactive, so nothing overlaps here.
    assert_eq!((inactive.enqueued, inactive.overlap), (3, 0));
    assert_eq!(s.find(1).await.reason, "unverified");
    assert_eq!(s.find(1).await.rule.as_deref(), Some("unverified"));
    assert_eq!(s.find(3).await.reason, "inactive");

    s.run_at(0).await;
    let to_1 = s.mail_to(1);
    assert_eq!(to_1.len(), 1, "{to_1:?}");
    assert!(to_1[0].starts_with("Confirm your Example Learning account before 2026-11-29"));
    assert!(s.mail_to(3)[0].contains("will be deleted on 2026-12-22"));
    assert!(s.mail_to(5).is_empty(), "staff is never written to");

    // The reminder is due 48 h before the end of the 7 days: day 5, not before.
    s.run_at(5 * DAY - 1).await;
    assert_eq!(s.mail_to(1).len(), 1);
    s.run_at(5 * DAY).await;
    let to_1 = s.mail_to(1);
    assert_eq!(to_1.len(), 2, "{to_1:?}");
    assert!(to_1[1].contains("unconfirmed Example Learning account will be deleted in 2 days"));
    assert_eq!(s.mail_to(2).len(), 2);

    // User 2 confirms on day 6.
    exec(
        &s.fixture.url,
        &["UPDATE auth_user SET is_active = 1 WHERE id = 2"],
    )
    .await;
    s.run_at(7 * DAY - 1).await;
    assert_eq!(s.find(1).await.state, "WARNED", "not a second early");
    assert!(s.user_exists(1).await);
    s.run_at(7 * DAY).await;
    assert_eq!(s.find(1).await.state, "COMPLETE");
    assert!(!s.user_exists(1).await);
    let to_1 = s.mail_to(1);
    assert_eq!(to_1.len(), 3, "{to_1:?}");
    assert_eq!(
        to_1[2],
        "Your unconfirmed Example Learning account has been deleted"
    );
    let two = s.find(2).await;
    assert_eq!(two.state, "ABORTED");
    let why = s.last_detail(2).await;
    assert!(
        why.contains("account confirmed at 2026-11-29T10:00:00"),
        "{why}"
    );
    assert!(s.user_exists(2).await);
    // Inactive users still wait out their own 30 days.
    assert_eq!(s.find(3).await.state, "WARNED");
    assert!(s.user_exists(5).await, "staff untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_after_the_grace_stage_is_caught_in_the_deleting_transaction() {
    // The grace stage does not re-read the source: only the deletion's own check can.
    let s = Setup::new("recheck = false", RULES, "").await;
    s.scan(Some("unverified")).await;
    s.run_at(0).await;
    exec(
        &s.fixture.url,
        &["UPDATE auth_user SET is_active = 1 WHERE id = 2"],
    )
    .await;
    s.run_at(7 * DAY).await;
    assert_eq!(s.find(1).await.state, "COMPLETE");
    assert_eq!(s.find(2).await.state, "ABORTED");
    let why = s.last_detail(2).await;
    assert!(why.contains("account confirmed at"), "{why}");
    assert!(s.user_exists(2).await);
    let rows = scalar(
        &s.fixture.url,
        "SELECT COUNT(*) FROM auth_userprofile WHERE user_id = 2".into(),
    )
    .await;
    assert!(rows > 0, "user 2 keeps its rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_rule_runs_nothing_and_the_first_rule_wins() {
    let disabled = RULES.replace("after = \"1d\"", "after = \"1d\"\nenabled = false");
    let s = Setup::new("", &disabled, "").await;
    let reports = s.scan(None).await;
    assert_eq!(reports.len(), 1, "only the inactive rule ran");
    assert_eq!(reports[0].counts.rule.as_deref(), Some("inactive"));
    let err = lethe::driver::scan::rules_to_run(&s.pipeline, Some("unverified")).unwrap_err();
    assert!(err.contains("disabled"), "{err}");
    assert!(
        s.store
            .find(&Lookup::subject("1", Some(&common::key())))
            .await
            .unwrap()
            .is_none()
    );

    // An unverified account that is also long inactive: both rules select it, the first
    // one opens its retirement and the second counts the overlap. User 3 was deactivated
    // by an admin (is_active = 0 too on edX) after logging in: not "unverified".
    let both = Setup::new("", RULES, "").await;
    exec(
        &both.fixture.url,
        &[
            "UPDATE auth_user SET date_joined = '2018-01-01 00:00:00' WHERE id = 1",
            "UPDATE auth_user SET is_active = 0 WHERE id = 3",
        ],
    )
    .await;
    // On its own timer the later rule leaves it too, whichever runs first.
    let alone = both.scan(Some("inactive")).await;
    assert_eq!((alone[0].counts.overlap, alone[0].counts.enqueued), (1, 3));
    assert!(
        both.store
            .find(&Lookup::subject("1", Some(&common::key())))
            .await
            .unwrap()
            .is_none()
    );
    let reports = both.scan(None).await;
    assert_eq!(reports[0].counts.enqueued, 2);
    assert_eq!(reports[1].counts.overlap, 1);
    assert_eq!(
        reports[1].counts.enqueued, 0,
        "3, 4 and 6 were opened alone"
    );
    assert_eq!(both.find(1).await.reason, "unverified");
    assert_eq!(both.find(3).await.reason, "inactive", "the deactivated one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_deletions_need_no_notice_and_wait_only_their_cool_off() {
    // Without a cool-off: no message before, deleted at once, confirmed after.
    let s = Setup::new("", RULES, "").await;
    s.enqueue(&[4], "requested", "PENDING").await;
    s.run_at(0).await;
    assert_eq!(s.find(4).await.state, "COMPLETE");
    assert!(!s.user_exists(4).await);
    assert_eq!(
        s.mail_to(4),
        vec!["Your Example Learning account has been deleted".to_string()]
    );

    // With a 7-day cool-off and a confirmation of the request.
    let cool = Setup::new(
        "",
        RULES,
        "[notice.requested]\nrequired = false\ncool_off = \"7d\"\ntemplate = \"deletion_requested\"\n",
    )
    .await;
    cool.enqueue(&[4], "requested", "PENDING").await;
    cool.run_at(0).await;
    let to_4 = cool.mail_to(4);
    assert_eq!(to_4.len(), 1);
    assert!(
        to_4[0].starts_with("We have received your request"),
        "{to_4:?}"
    );
    // Activity does not hold a requested deletion; the cool-off does.
    exec(
        &cool.fixture.url,
        &["UPDATE auth_user SET last_login = '2026-11-25 10:00:00' WHERE id = 4"],
    )
    .await;
    cool.run_at(7 * DAY - 1).await;
    assert_eq!(cool.find(4).await.state, "WARNED");
    assert!(cool.user_exists(4).await);
    cool.run_at(7 * DAY).await;
    assert_eq!(cool.find(4).await.state, "COMPLETE");
    assert!(!cool.user_exists(4).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_policy_lets_a_deletion_run_early() {
    let s = Setup::new(
        "",
        RULES,
        "[notice.requested]\nrequired = false\ncool_off = \"7d\"\n",
    )
    .await;
    // Straight into the deleting state, as a mistaken resume or a bad pipeline would put them.
    s.enqueue(&[1], "unverified", "RETIRING_EDX").await;
    s.enqueue(&[6], "inactive", "RETIRING_EDX").await;
    s.enqueue(&[4], "requested", "RETIRING_EDX").await;
    s.run_at(0).await;
    for id in [1, 6] {
        let r = s.find(id).await;
        assert_eq!(r.state, "ERRORED", "{id}");
        assert!(r.last_error.unwrap().contains("no warning was recorded"));
        assert!(s.user_exists(id).await);
    }
    assert_eq!(s.find(4).await.state, "RETIRING_EDX", "waits its cool-off");
    assert!(s.user_exists(4).await);
    // Warned just now: each waits its own reason's whole period.
    exec(
        &s._db.url,
        &[
            "UPDATE retirement SET state = 'RETIRING_EDX', failed_state = NULL, last_error = NULL, \
           warned_at = created_at, due_at = created_at WHERE subject IN ('1', '6')",
        ],
    )
    .await;
    s.run_at(7 * DAY - 1).await;
    for id in [1, 6, 4] {
        assert_eq!(
            s.find(id).await.state,
            "RETIRING_EDX",
            "{id} on day 7 - 1 s"
        );
        assert!(s.user_exists(id).await);
    }
    s.run_at(7 * DAY).await;
    assert!(!s.user_exists(1).await, "unverified: 7 days");
    assert!(!s.user_exists(4).await, "requested: its 7-day cool-off");
    s.run_at(30 * DAY - 1).await;
    assert!(s.user_exists(6).await, "inactive: not before 30 days");
    s.run_at(30 * DAY).await;
    assert!(!s.user_exists(6).await);

    // A reason without a policy is never deleted.
    s.enqueue(&[2], "bored", "RETIRING_EDX").await;
    s.run_at(31 * DAY).await;
    let r = s.find(2).await;
    assert_eq!(r.state, "ERRORED");
    assert!(r.last_error.unwrap().contains("[notice.bored]"));
    assert!(s.user_exists(2).await);
}

/// Every deleting stage is behind the hold, not only sql_delete: an http stage first in
/// line calls nobody for a retirement its policy does not let be deleted, nor for one
/// whose rule is no longer configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_stage_first_in_line_is_held_like_a_deletion() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let text = common::noop_pipeline("", "").replace(
        "[[stage]]\nstate = \"RETIRING_EDX\"\nhandler = \"noop\"\n",
        &format!(
            "[[stage]]\nstate = \"RETIRING_EDX\"\nhandler = \"http\"\nname = \"idp\"\n\
             method = \"DELETE\"\nurl = \"{}/users/{{{{ subject }}}}\"\n",
            server.uri()
        ),
    );
    assert!(text.contains("handler = \"http\""), "{text}");
    let (graph, pipeline) = common::config(&text);
    let db = TestDb::new(Kind::Sqlite).await;
    let store = db.store(&graph).await;
    let clock = Arc::new(ManualClock::new(common::t0()));
    let handlers = lethe::stages::build_with(&pipeline, clock.clone())
        .await
        .unwrap();
    let driver = Arc::new(Driver::new(
        store.clone(),
        graph,
        pipeline.policy.clone(),
        pipeline.driver.clone(),
        handlers,
        "d1".into(),
        clock.clone(),
    ));
    let key = common::key();
    let open = |id: i64, reason: &'static str, rule: Option<&str>| NewRetirement {
        rule: rule.map(str::to_string),
        ..NewRetirement::hashed(&key, id, None, None, reason.into())
    };
    store
        .enqueue(
            "RETIRING_EDX",
            &[
                open(1, "inactive", None),
                open(2, "inactive", Some("gone")),
                open(3, "requested", None),
            ],
            "cli",
            common::t0(),
        )
        .await
        .unwrap();
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    driver.run_once(shutdown).await.unwrap();
    let find = |id: i64| {
        let store = store.clone();
        let key = key.clone();
        async move {
            store
                .find(&Lookup::subject(&id.to_string(), Some(&key)))
                .await
                .unwrap()
                .unwrap()
        }
    };
    let one = find(1).await;
    assert_eq!(one.state, "ERRORED");
    assert!(one.last_error.unwrap().contains("no warning was recorded"));
    let two = find(2).await;
    assert_eq!(two.state, "ERRORED");
    assert!(
        two.last_error
            .unwrap()
            .contains("rule gone that opened it is no longer in pipeline.toml")
    );
    assert_eq!(find(3).await.state, "COMPLETE");
    let calls: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_string())
        .collect();
    assert_eq!(calls, ["/users/3"], "only the requested one was called for");
}
